"""The documentation's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_the_api_example_runs(capsys):
    blocks = python_blocks(DOCS / "api.md")
    assert blocks, "docs/api.md has no example"
    for block in blocks:
        exec(compile(block, str(DOCS / "api.md"), "exec"), {"__name__": "docs_example"})
    printed = capsys.readouterr().out
    assert "final metrics:" in printed and "finished" in printed
