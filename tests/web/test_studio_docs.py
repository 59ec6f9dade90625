"""The README's studio screenshots (docs/images/studio-*.png), taken of runs trained long enough to show
something: run with GENFORGE_STUDIO_DEMO_RUNS=FOLDER holding `mnist-dcgan` (a few minutes of
`genforge train mnist-dcgan`) and `mnist-vae-2d` (`genforge train mnist-vae model.latent_dim=2`).

    GENFORGE_STUDIO_DEMO_RUNS=/tmp/demo-runs python3 -m pytest tests/web/test_studio_docs.py
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.web.browser import ARGS, CHROMIUM, LiveStudio, require_browser, screenshot

DEMO = os.environ.get("GENFORGE_STUDIO_DEMO_RUNS")
if not DEMO:
    pytest.skip("docs screenshots: set GENFORGE_STUDIO_DEMO_RUNS to a folder of trained runs", allow_module_level=True)
require_browser()

from playwright.sync_api import expect, sync_playwright  # noqa: E402

expect.set_options(timeout=60_000)  # a model loads in a worker first; a busy 2-core CI is slow


def test_docs_screenshots(tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(Path(DEMO), root, symlinks=True)
    with LiveStudio(root) as studio, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(60_000)
        page.goto(studio.url + "/")
        expect(page.locator('tr[data-run="mnist-dcgan"] img.thumb')).to_be_visible()
        screenshot(page, "runs", docs=True)
        page.goto(studio.url + "/#/run?id=mnist-dcgan")
        expect(page.locator('canvas[data-title="GAN value"]')).to_be_visible()
        screenshot(page, "run", docs=True)
        page.goto(studio.url + "/#/explore?id=mnist-dcgan&seed=3&n=32")
        expect(page.locator("#sample-grid img.sample")).to_have_count(32)
        page.locator("#sample-grid img.sample").nth(2).click()
        page.locator("#sample-grid img.sample").nth(9).click()
        page.check("#slerp")
        page.click("#interpolate")
        expect(page.locator("#explore-out .strip img")).to_have_count(10)
        screenshot(page, "explore", docs=True)
        page.goto(studio.url + "/#/explore?id=mnist-vae-2d")
        page.wait_for_timeout(1500)  # the latent map's tiles
        page.locator("#latent-map").click(position={"x": 120, "y": 260})
        expect(page.locator("#explore-out h3")).to_contain_text("decoded z")
        screenshot(page, "latent-map", docs=True)
        page.goto(studio.url + "/#/lab")
        expect(page.locator("#lab-step-count")).to_contain_text("step 0")
        page.click("#lab-play")
        expect(page.locator("#lab-step-count")).to_contain_text(re.compile(r"step \d{4,}"), timeout=120_000)
        page.click("#lab-play")
        screenshot(page, "lab", docs=True)
        page.goto(studio.url + "/#/train?recipe=mnist-dcgan")
        page.fill('[name="optim.lr"]', "0")
        expect(page.locator('[data-error-for="optim.lr"]')).not_to_be_empty()
        page.evaluate("window.scrollTo(0, 0)")
        screenshot(page, "train", docs=True)
        browser.close()
