"""The studio in Debian's chromium: runs, a ring-8 run trained, stopped and resumed from the page, the toy
lab playing, a finished mnist-dcgan run's timeline, sampling by seed, interpolation and evaluation.

Screenshots are checked for non-emptiness and kept as artefacts (see tests/web/browser.py).
"""

from __future__ import annotations

import re

import pytest

from tests.web.browser import ARGS, CHROMIUM, LiveStudio, require_browser, screenshot
from tests.web.conftest import stop_trainings

require_browser()

from playwright.sync_api import expect, sync_playwright  # noqa: E402

expect.set_options(timeout=30_000)  # a model loads in a worker first; a busy 2-core CI is slow

LAB_RATE = {}  # the toy lab's measured update rate, printed at the end


@pytest.fixture(scope="module")
def studio(trained_runs, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("browser") / "runs"
    shutil.copytree(trained_runs, root, symlinks=True)
    with LiveStudio(root) as live:
        live.root = root
        yield live
    stop_trainings(root)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, studio):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    errors = []
    opened.on("pageerror", lambda e: errors.append(str(e)))
    opened.set_default_timeout(30_000)
    yield opened
    context.close()
    assert not errors, errors


def test_the_runs_page_lists_every_run(page, studio):
    page.goto(studio.url + "/")
    for run_id in ("dcgan", "vae", "toys/ring"):
        expect(page.locator(f'tr[data-run="{run_id}"]')).to_be_visible()
    expect(page.locator('tr[data-run="dcgan"] .badge')).to_have_text("finished")
    expect(page.locator('tr[data-run="dcgan"] img.thumb')).to_be_visible()
    screenshot(page, "runs")


def test_curves_leave_out_the_final_metrics_row_which_the_table_shows(page, studio):
    page.goto(studio.url + "/#/run?id=toys/ring")
    expect(page.locator("canvas.chart").first).to_be_visible()
    rows = [{"step": 100, "eval/modes": 3}, {"step": 200, "eval/modes": 5},
            {"step": 200, "stage": "final", "eval/modes": 8, "eval/only_final": 1}]
    points = page.evaluate("(rows) => GF.seriesOf(rows, 'eval/modes').points", rows)
    assert points == [[100, 3], [200, 5]]  # one point a step: the checkpoint's, not the final row's
    keys = page.evaluate("(rows) => GF.metricGroups(rows).flatMap(([, ks]) => ks)", rows)
    assert keys == ["eval/modes"]  # a figure only the final row holds gets no empty chart


def test_the_toy_lab_plays_ring_8_and_its_picture_changes(page, studio):
    page.goto(studio.url + "/#/lab")
    canvas = page.locator("#lab-canvas")
    expect(page.locator("#lab-step-count")).to_contain_text("step 0")
    before = canvas.screenshot()
    page.click("#lab-play")
    expect(page.locator("#lab-step-count")).to_contain_text(re.compile(r"step [1-9]\d{2,}"), timeout=60_000)
    page.wait_for_function("document.querySelector('#lab-rate').dataset.rate !== undefined")
    page.wait_for_timeout(1500)  # a steady rate over the last two seconds
    LAB_RATE["ring-8"] = float(page.locator("#lab-rate").get_attribute("data-rate"))
    page.click("#lab-play")  # pause
    assert canvas.screenshot() != before  # points, heatmap and arrows moved
    screenshot(page, "lab")
    steps = page.locator("#lab-step-count").inner_text()
    page.click("#lab-step-d")
    expect(page.locator("#lab-step-count")).not_to_have_text(steps)
    page.select_option("#lab-loss", "wgan-gp")
    page.click("#lab-apply")
    expect(page.locator(".notice.ok")).to_have_text("changed")
    per_update = page.locator("#lab-per-update").input_value()
    print(f"\ntoy lab: {LAB_RATE['ring-8']:.1f} updates/s on ring-8 ({per_update} steps per update by now, "
          "32x32 heatmap, 80 arrows)")
    assert LAB_RATE["ring-8"] > 0


def test_train_ring_8_from_the_form_then_stop_and_resume(page, studio):
    page.goto(studio.url + "/#/train?recipe=ring-8")
    expect(page.locator("#train-form")).to_be_visible()
    page.fill('[name="optim.lr"]', "-1")
    expect(page.locator('[data-error-for="optim.lr"]')).to_contain_text("optim.lr")
    page.fill('[name="optim.lr"]', "0.001")
    expect(page.locator('[data-error-for="optim.lr"]')).to_be_empty()
    page.locator("details", has=page.locator("summary", has_text="model")).locator("summary").click()  # folded
    for key, value in (("model.hidden", "16"), ("model.layers", "1"), ("train.log_every", "20"),
                       ("train.threads", "1"), ("train.sample_every", "200")):
        page.fill(f'[name="{key}"]', value)
    page.fill("#budget", "1000000")
    page.fill("#run-name", "browser-ring")
    screenshot(page, "train")
    page.click("#start")
    page.wait_for_url(re.compile(r"#/run\?id=browser-ring"))
    expect(page.locator("#run-status .badge")).to_have_text("training", timeout=60_000)
    expect(page.locator('canvas[data-title="losses"]')).to_be_visible(timeout=60_000)
    screenshot(page, "run-live")
    page.click("#stop")
    expect(page.locator("#run-status .badge")).to_have_text("interrupted", timeout=60_000)
    page.click("#resume")
    expect(page.locator("#run-status .badge")).to_have_text("training", timeout=60_000)
    page.click("#stop")
    expect(page.locator("#run-status .badge")).to_have_text("interrupted", timeout=60_000)


def test_a_finished_dcgan_run_s_timeline_slider_moves_through_the_steps(page, studio):
    page.goto(studio.url + "/#/run?id=dcgan")
    expect(page.locator("#timeline-step")).to_contain_text("step 6")
    last = page.locator(".timeline-img").get_attribute("src")
    page.locator("#timeline").fill("0")
    expect(page.locator("#timeline-step")).to_contain_text("step 2")
    assert page.locator(".timeline-img").get_attribute("src") != last
    expect(page.locator('canvas[data-title="GAN value"]')).to_be_visible()
    page.check("#logscale")
    screenshot(page, "run")


def test_sample_by_seed_in_the_url_then_interpolate_two_clicked_samples(page, studio):
    page.goto(studio.url + "/#/explore?id=dcgan&seed=7&n=16")
    expect(page.locator("#sample-grid img.sample")).to_have_count(16)
    assert page.locator("#seed").input_value() == "7"
    first = page.locator("#sample-grid img.sample").first.get_attribute("src")
    page.fill("#seed", "8")
    page.click("#sample")
    expect(page).to_have_url(re.compile(r"seed=8"))
    expect(page.locator("#sample-grid img.sample").first).not_to_have_attribute("src", first)
    page.locator("#sample-grid img.sample").nth(0).click()
    page.locator("#sample-grid img.sample").nth(5).click()
    page.click("#interpolate")
    expect(page.locator("#explore-out .strip img")).to_have_count(10)
    screenshot(page, "explore")
    expect(page.locator("#sample-grid img.picked")).to_have_count(2)
    page.locator("#sample-grid img.sample").nth(9).click()  # a third end starts a new pair: one outlined
    expect(page.locator("#sample-grid img.picked")).to_have_count(1)
    page.click("#clear-picks")  # the counter went to 0 while the pictures stayed outlined
    expect(page.locator("#sample-grid img.picked")).to_have_count(0)
    expect(page.locator("#picks")).to_contain_text("A/B: 0/2")


def test_refusals_read_as_one_line_and_a_missing_run_says_so_at_once(page, studio):
    import shutil

    page.goto(studio.url + "/#/run?id=nope")  # it said "waiting for the run to start…" for two minutes
    expect(page.locator(".notice.error")).to_contain_text("no run 'nope'", timeout=5_000)
    for control in ("#stop", "#resume", "#export-onnx"):
        expect(page.locator(control)).to_be_hidden()
    page.goto(studio.url + "/#/explore?id=dcgan&n=100000000")  # pydantic's error list was shown as JSON
    expect(page.locator(".notice.error")).to_contain_text("n: must be at most")
    assert "[{" not in page.locator(".notice.error").inner_text()
    bare = studio.root / "no-checkpoint"
    shutil.copytree(studio.root / "toys" / "ring", bare)
    shutil.rmtree(bare / "checkpoints")
    page.goto(studio.url + "/#/run?id=no-checkpoint")
    # nothing to resume, explore or export: the buttons that could only fail are gone, and the page says why
    expect(page.locator("#no-checkpoint")).to_contain_text("no checkpoint: nothing to resume, explore or export")
    for control in ("#resume", "#export-onnx", "a.button[href^='#/explore']"):
        expect(page.locator(control)).to_be_hidden()
    # asked anyway (an old link), the export route still refuses in one line
    answer = page.evaluate("() => fetch('/api/explore/export?run=no-checkpoint&format=onnx').then((r) => r.json())")
    assert "no complete checkpoint" in answer["error"]


def test_evaluate_from_the_run_page_with_a_progress_bar(page, studio):
    page.goto(studio.url + "/#/run?id=vae")
    page.fill("#eval-n", "20")
    page.click("#evaluate")
    expect(page.locator("#eval-progress")).to_be_visible()
    expect(page.locator("#eval-table")).to_be_visible(timeout=120_000)
    expect(page.locator("#eval-table")).to_contain_text("real-data floor")
    expect(page.locator("#eval-table")).to_contain_text("fid")
    screenshot(page, "eval")


def test_a_vae_s_latent_map_decodes_a_click(page, studio):
    page.goto(studio.url + "/#/explore?id=vae")
    page.locator("#latent-map").click(position={"x": 100, "y": 300})
    expect(page.locator("#explore-out h3")).to_contain_text("decoded z")
    screenshot(page, "latent-map")


def compare_ticked(page, studio, *run_ids: str, shown: str) -> None:
    """Tick ``run_ids`` on the runs page and compare them: ``shown`` is in the config diff, a grid each."""
    page.goto(studio.url + "/")
    for run_id in run_ids:
        page.locator(f'tr[data-run="{run_id}"] input.pick').check()
    page.click("text=Compare ticked runs")
    expect(page.locator("#config-diff")).to_contain_text(shown)
    expect(page.locator(".grids img")).to_have_count(len(run_ids))


def test_compare_two_runs(page, studio):
    compare_ticked(page, studio, "dcgan", "vae", shown="mnist-vae")
    screenshot(page, "compare")


def test_draw_points_and_train_on_them(page, studio):
    page.goto(studio.url + "/#/lab")
    expect(page.locator("#lab-step-count")).to_contain_text("step 0")
    page.check("#lab-draw")
    canvas = page.locator("#lab-canvas")
    for i in range(12):
        canvas.click(position={"x": 100 + 25 * i, "y": 150 + (i % 3) * 60})
    expect(page.locator("#draw-count")).to_have_text("12 points drawn")
    page.click("#lab-train-drawn")
    expect(page.locator("#draw-count")).to_have_text("")
    page.click("#lab-step")
    expect(page.locator("#lab-step-count")).to_contain_text("step 1")
    expect(page.locator("#lab-metrics")).not_to_contain_text("modes")  # a user's points have no modes to count


def test_a_token_studio_works_from_its_printed_url(browser, trained_runs):
    with LiveStudio(trained_runs, token="t0ken") as live:
        context = browser.new_context()
        page = context.new_page()
        assert page.goto(live.url + "/").status == 401
        page.goto(live.url + "/?token=t0ken")  # the cookie carries it from here: fetches, images, event streams
        expect(page.locator('tr[data-run="dcgan"] img.thumb')).to_be_visible()
        page.goto(live.url + "/#/run?id=dcgan")
        expect(page.locator("#timeline-step")).to_contain_text("step 6")
        context.close()


# --- found by an audit of the studio (2026-12-03) ------------------------------------------------------

def test_an_address_with_no_run_or_an_unknown_recipe_says_so(page, studio):
    for view, title in (("run", "Run"), ("explore", "Explore")):
        page.goto(studio.url + f"/#/{view}")
        expect(page.locator(".notice.error")).to_have_text("no run named in the address: open one from the Runs page")
        expect(page.locator("h1")).to_have_text(title)
    page.goto(studio.url + "/#/train?recipe=nope")  # "schema.fields is not iterable" before
    expect(page.locator(".notice.error")).to_contain_text("no recipe 'nope'")
    expect(page.locator("#train-form")).to_be_visible()  # the list's first recipe, ready to use


def test_start_s_refusal_is_not_wiped_by_a_slower_check(page, studio):
    page.goto(studio.url + "/#/train?recipe=ring-8")
    expect(page.locator("#train-form")).to_be_visible()
    # every /api/check answers 1.5 s late (a busy studio), after Start's refusal has been shown
    page.evaluate("""() => { const plain = window.fetch;
      window.fetch = (url, init) => String(url).includes('/api/check')
        ? plain(url, init).then((r) => new Promise((ok) => setTimeout(() => ok(r), 1500))) : plain(url, init); }""")
    page.fill("#run-name", "taken-later")
    page.wait_for_timeout(600)  # the form's check is sent (and passes, late)
    (studio.root / "taken-later").mkdir()  # then the folder appears, so Start is refused
    try:
        page.click("#start")
        expect(page.locator("#train-note .notice.error")).to_contain_text("exists already")
        page.wait_for_timeout(2500)  # the check's late "ok" has come and gone
        expect(page.locator("#train-note .notice.error")).to_contain_text("exists already")
    finally:
        (studio.root / "taken-later").rmdir()


def test_a_number_the_form_cannot_read_is_refused_not_sent_as_no_change(page, studio):
    page.goto(studio.url + "/#/train?recipe=ring-8")
    expect(page.locator("#train-form")).to_be_visible()
    page.locator("#budget").press_sequentially("1e400")  # Infinity: the browser's value is ""
    page.click("#start")
    expect(page.locator("#train-note .notice.error")).to_contain_text("budget: not a number this form can read")
    assert not (studio.root / "ring-8").exists() and not list(studio.root.glob("ring-8-*"))


def test_a_toy_run_s_samples_show_as_one_scatter_at_its_size(page, studio):
    page.goto(studio.url + "/#/explore?id=toys/ring")
    scatter = page.locator("#sample-grid img.scatter")
    expect(scatter).to_be_visible()
    expect(page.locator("#sample-grid img.sample")).to_have_count(0)  # not squeezed into a 72 px tile
    assert scatter.evaluate("(img) => img.complete && img.getBoundingClientRect().width") > 200


def test_a_toy_discogan_explains_where_to_look_instead_of_a_blank_page(page, studio):
    from tests.web.conftest import TOY, train_tiny

    train_tiny(studio.root / "gmm-toy", "gmm-discogan", [o for o in TOY if not o.startswith("model.layers")], steps=2)
    page.goto(studio.url + "/#/explore?id=gmm-toy")
    expect(page.locator("#nothing-to-explore")).to_contain_text("a toy DiscoGAN translates points")


def test_per_class_samples_come_in_one_labelled_row_a_class(page, studio):
    page.goto(studio.url + "/#/explore?id=cgan&n=4&byclass=1")
    rows = page.locator("#sample-grid .class-row")
    expect(rows).to_have_count(10)
    expect(rows.nth(3).locator(".class-label")).to_have_text("class 3")
    expect(rows.nth(3).locator("img.sample")).to_have_count(4)
    tops = rows.nth(0).locator("img.sample").evaluate_all("(imgs) => imgs.map((i) => i.getBoundingClientRect().top)")
    assert len(set(tops)) == 1  # a class's samples on one line
    lefts = rows.evaluate_all("(rs) => rs.map((r) => r.getBoundingClientRect().left)")
    assert len(set(lefts)) == 1  # and each class on a line of its own, not two classes side by side


def test_an_upload_that_works_clears_the_last_one_s_refusal(page, studio):
    import io

    from PIL import Image

    page.goto(studio.url + "/#/explore?id=vae")
    upload = page.locator("#upload-reconstruct")
    upload.set_input_files(files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture"}])
    expect(page.locator(".notice.error")).to_be_visible()
    png = io.BytesIO()
    Image.new("L", (28, 28), 128).save(png, format="PNG")
    upload.set_input_files(files=[{"name": "digit.png", "mimeType": "image/png", "buffer": png.getvalue()}])
    expect(page.locator("#explore-out .strip img")).to_have_count(2)
    expect(page.locator(".notice.error")).to_have_count(0)


def test_compare_takes_run_names_that_hold_a_comma(page, studio):
    import shutil

    shutil.copytree(studio.root / "vae", studio.root / "a,b")
    try:
        compare_ticked(page, studio, "a,b", "dcgan", shown="a,b")
        old_link = page.evaluate("() => GF.compareIds(new URLSearchParams('ids=dcgan,vae'))")
        assert old_link == ["dcgan", "vae"]  # links written before keep working
    finally:
        shutil.rmtree(studio.root / "a,b")


def test_a_hidden_tab_closes_its_event_streams_and_opens_them_when_shown(page, studio):
    page.goto(studio.url + "/#/run?id=dcgan")
    expect(page.locator("canvas.chart").first).to_be_visible()
    open_streams = "() => GF.streams.filter((s) => s.source && s.source.readyState !== 2).length"
    page.wait_for_function(f"({open_streams})() === 1")
    hide = """(hidden) => { Object.defineProperty(document, 'hidden', { configurable: true, get: () => hidden });
                           document.dispatchEvent(new Event('visibilitychange')); }"""
    page.evaluate(hide, True)
    assert page.evaluate(open_streams) == 0  # a background tab holds none of the browser's six connections
    page.evaluate(hide, False)
    page.wait_for_function(f"({open_streams})() === 1")
    assert "after=" in page.evaluate("() => GF.streams[0].source.url")  # resumes past the rows the page has


def test_log_axis_ticks_are_round_values(page, studio):
    page.goto(studio.url + "/")
    labels = page.evaluate("""() => [[0.3, 1.6], [-0.5, 4.5], [-12, 12]].map(([lo, hi]) =>
      GF.logTicks(lo, hi, 4).map((t) => GF.fmt(+Math.pow(10, t).toPrecision(6))))""")
    assert labels[0] == ["2", "5", "10", "20"] and labels[1] == ["1", "10", "100", "1000", "10000"]
    assert labels[2][0] == "1.00e-12" and len(labels[2]) <= 8


def test_a_diverged_run_says_which_figures_went_non_finite_and_from_when(page, studio):
    page.goto(studio.url + "/#/run?id=toys/ring")
    expect(page.locator("canvas.chart").first).to_be_visible()
    rows = [{"step": 5, "g/loss": 0.7}, {"step": 10, "g/loss": None, "d/loss": 0.5}, {"step": 15, "g/loss": None}]
    assert page.evaluate("(rows) => GF.nonFinite(rows)", rows) == {"g/loss": 10}
    expect(page.locator("#non-finite")).to_have_count(0)  # the ring run trained fine
    import shutil

    shutil.copytree(studio.root / "toys" / "ring", studio.root / "diverged")
    with (studio.root / "diverged" / "metrics.jsonl").open("a") as out:
        out.write('{"step": 99, "g/loss": NaN, "d/loss": Infinity}\n')
    try:
        page.goto(studio.url + "/#/run?id=diverged")
        expect(page.locator("#non-finite")).to_contain_text("g/loss from step 99")
        expect(page.locator("#non-finite")).to_contain_text("d/loss from step 99")
    finally:
        shutil.rmtree(studio.root / "diverged")


def test_the_lab_refuses_a_number_it_cannot_read_instead_of_saying_changed(page, studio):
    page.goto(studio.url + "/#/lab")
    expect(page.locator("#lab-step-count")).to_contain_text("step 0")
    page.locator("#lab-lr-d").fill("")
    page.locator("#lab-lr-d").press_sequentially("1e400")  # the browser's value is "": it said "changed" before
    page.click("#lab-apply")
    expect(page.locator(".notice.error")).to_contain_text("lab-lr-d: not a number this form can read")
    expect(page.locator(".notice.ok")).to_have_count(0)
