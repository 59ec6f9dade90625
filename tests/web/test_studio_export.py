"""The run page's downloads: the same exports as `genforge export`, zipped, written outside the run."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest


def _hashes(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("format, expected", [("onnx", ".onnx"), ("torchscript", ".pt"), ("folder", "README.md")])
def test_a_run_exports_as_a_zip_without_touching_the_run(client, runs, format, expected):
    before = _hashes(runs / "dcgan")
    answer = client.get("/api/explore/export", params={"run": "dcgan", "format": format})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    assert f'dcgan-{format}.zip' in answer.headers["content-disposition"]
    names = zipfile.ZipFile(io.BytesIO(answer.content)).namelist()
    assert any(name.endswith(expected) for name in names), names
    assert "config.json" in names
    assert _hashes(runs / "dcgan") == before


def test_an_unknown_export_format_or_run_is_refused(client):
    assert client.get("/api/explore/export", params={"run": "dcgan", "format": "pickle"}).status_code == 422
    assert client.get("/api/explore/export", params={"run": "../dcgan", "format": "onnx"}).status_code in (400, 404)
