"""A live studio on loopback and a headless Debian chromium driven by Playwright, for the browser tests.

Chromium comes from apt (/usr/bin/chromium), never a browser build downloaded by Playwright; it runs
headless, without sandbox (root in CI) and without background networking.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("GENFORGE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-default-apps", "--disable-extensions", "--metrics-recording-only"]
MISSING = ("browser tests skipped: they need Debian's chromium and Playwright for Python "
           "(apt-get install chromium; pip install -e '.[web]')")
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def require_browser() -> None:
    """Skip (one line) where chromium or playwright is missing; in CI, where set-up installs them, fail."""
    try:
        import playwright.sync_api  # noqa: F401
        found = Path(CHROMIUM).is_file()
    except ImportError:
        found = False
    if not found:
        if os.environ.get("CI"):
            pytest.fail(MISSING.replace("skipped", "cannot run in CI"))
        pytest.skip(MISSING)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveStudio:
    """The studio app served by uvicorn in a thread of this process, on 127.0.0.1."""

    def __init__(self, root: Path, **options):
        import uvicorn

        from genforge.web.server import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(root, **options), host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveStudio:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "the studio did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def artefact_dir() -> Path:
    """Where screenshots go as test artefacts ($GENFORGE_ARTEFACTS, default a temporary folder)."""
    folder = Path(os.environ.get("GENFORGE_ARTEFACTS", "/tmp/genforge-artefacts")) / "studio"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page, name: str, docs: bool = False) -> Path:
    """Saves the page as an artefact (and, with ``docs``, as docs/images/studio-NAME.png for the README);
    asserts it is not empty: a blank or one-colour page has very few distinct colours."""
    from PIL import Image

    path = artefact_dir() / f"studio-{name}.png"
    page.screenshot(path=str(path), full_page=False)
    with Image.open(path) as image:
        colours = image.convert("RGB").resize((320, 200)).getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20, f"{path} looks empty ({len(colours)} colours)"
    if docs:
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_IMAGES / path.name)
    return path
