"""The studio's endpoints over real tiny runs: runs, streams, run pages, training, explore, lab, eval."""

from __future__ import annotations

import base64
import io
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from genforge.web.server import STATIC
from tests.web.conftest import make_client


def events(client, url, **params) -> list[dict]:
    """The data of each event of a stream that ends (the tests pass limit=)."""
    with client.stream("GET", url, params=params) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        text = stream.read().decode()
    return [json.loads(line[len("data: "):]) for line in text.splitlines() if line.startswith("data: ")]


def events_within(seconds: float, client, url, **params) -> list[dict]:
    """:func:`events` read in a thread with a deadline: a stream that missed what it waits for sends
    nothing more, for good, and the test would hang instead of failing."""
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(events(client, url, **params)), daemon=True)
    reader.start()
    reader.join(timeout=seconds)
    assert not reader.is_alive(), f"the stream sent no more events within {seconds} s"
    return got


def picture(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def png_upload(size=(28, 28), value=128) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="PNG")
    return buffer.getvalue()


# --- the page ----------------------------------------------------------------------------------

def test_the_page_and_its_scripts_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "genforge studio" in page.text
    for name in ("app.js", "chart.js", "run.js", "train.js", "lab.js", "lab_page.js", "explore.js", "style.css"):
        assert f"/static/{name}" in page.text
        assert client.get(f"/static/{name}").status_code == 200


def test_the_page_fetches_nothing_from_elsewhere():
    for path in STATIC.iterdir():
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path.name


# --- runs ----------------------------------------------------------------------------------------

def test_runs_list_every_run_with_status_step_and_newest_sample(client):
    listed = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
    assert set(listed) == {"dcgan", "vae", "toys/ring", "cgan"}
    dcgan = listed["dcgan"]
    assert dcgan["status"] == "finished" and dcgan["step"] == 6 and dcgan["recipe"] == "mnist-dcgan"
    assert dcgan["newest_sample"] == "samples/final.png" and "path" not in dcgan
    shown = client.get("/api/run/file", params={"run": "dcgan", "name": dcgan["newest_sample"]})
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"


def test_the_runs_stream_sends_the_list_and_again_when_a_run_appears(client, runs):
    first = events(client, "/api/events/runs", limit=1)
    assert {r["id"] for r in first[0]["runs"]} == {"dcgan", "vae", "toys/ring", "cgan"}

    def add_run():
        time.sleep(0.3)
        (runs / "new").mkdir()
        (runs / "new" / "config.json").write_text((runs / "dcgan" / "config.json").read_text())

    threading.Thread(target=add_run).start()
    two = events(client, "/api/events/runs", limit=2, interval=0.1)
    assert "new" not in {r["id"] for r in two[0]["runs"]} and "new" in {r["id"] for r in two[1]["runs"]}


def test_a_run_page_has_summary_config_timeline_and_plots(client):
    page = client.get("/api/run", params={"run": "dcgan"}).json()
    assert page["summary"]["id"] == "dcgan" and page["summary"]["status"] == "finished"
    assert page["config"]["recipe"] == "mnist-dcgan"
    steps = [frame["step"] for frame in page["timeline"]]
    assert steps[:3] == [2, 4, 6] and page["timeline"][-1]["name"] == "samples/final.png"
    for frame in page["timeline"] + [{"name": p} for p in page["plots"]]:
        assert client.get("/api/run/file", params={"run": "dcgan", "name": frame["name"]}).status_code == 200


def test_metrics_since_a_step_give_only_the_newer_rows(client):
    rows = client.get("/api/run/metrics", params={"run": "dcgan"}).json()["rows"]
    assert [r["step"] for r in rows] == [2, 4, 6] and "g/loss" in rows[0]
    newer = client.get("/api/run/metrics", params={"run": "dcgan", "since": 4}).json()["rows"]
    assert [r["step"] for r in newer] == [6]


def test_the_metrics_stream_sends_rows_as_they_are_written(client, runs):
    metrics = runs / "dcgan" / "metrics.jsonl"

    def write_row():
        time.sleep(0.3)
        with metrics.open("a") as out:
            out.write(json.dumps({"step": 8, "g/loss": 0.5}) + "\n")

    first = events(client, "/api/events/metrics", run="dcgan", after=3, limit=1)
    assert first[0]["rows"] == [] and first[0]["status"] == "finished"  # the status, no rows yet
    assert first[0]["reset"] is False
    threading.Thread(target=write_row).start()
    later = events_within(20, client, "/api/events/metrics", run="dcgan", after=3, limit=2, interval=0.1)
    assert later[1]["rows"] == [{"step": 8, "g/loss": 0.5}] and later[1]["step"] == 8


def test_the_metrics_stream_sends_a_second_row_of_the_same_step(client, runs):
    # a training-time eval row follows the loss row of its step: filtering by step lost it when a poll
    # fell between the two writes
    metrics = runs / "dcgan" / "metrics.jsonl"
    with metrics.open("a") as out:
        out.write(json.dumps({"step": 6, "eval/fid": 30.0}) + "\n")
    streamed = events(client, "/api/events/metrics", run="dcgan", after=3, limit=1)
    assert streamed[0]["rows"] == [{"step": 6, "eval/fid": 30.0}] and not streamed[0]["reset"]


def test_a_log_rewritten_by_a_resume_is_sent_again_whole(client, runs):
    # the page has rows 2, 4, 6; a resume from step 4's checkpoint rewrites the log while the stream is
    # open: 2, 4, then a new step 6 (as many rows as before, the last one different)
    metrics = runs / "dcgan" / "metrics.jsonl"
    kept = metrics.read_text().splitlines()[:2]

    def rewrite():
        time.sleep(0.3)
        metrics.write_text("\n".join([*kept, json.dumps({"step": 6, "g/loss": 9.0})]) + "\n")

    threading.Thread(target=rewrite).start()
    streamed = events_within(20, client, "/api/events/metrics", run="dcgan", after=3, limit=2, interval=0.1)
    assert streamed[0]["rows"] == [] and streamed[0]["reset"] is False
    assert streamed[1]["reset"] is True and [r["step"] for r in streamed[1]["rows"]] == [2, 4, 6]
    assert streamed[1]["rows"][-1]["g/loss"] == 9.0
    # a log shorter than the rows the page has (cut back to an earlier checkpoint) is sent whole too
    metrics.write_text("\n".join(kept) + "\n")
    cut = events(client, "/api/events/metrics", run="dcgan", after=3, limit=1)
    assert cut[0]["reset"] is True and [r["step"] for r in cut[0]["rows"]] == [2, 4]


def test_compare_overlays_runs_and_diffs_their_configs(client):
    answer = client.get("/api/compare", params=[("runs", "dcgan"), ("runs", "vae")]).json()
    assert [r["id"] for r in answer["runs"]] == ["dcgan", "vae"]
    assert all(r["metrics"] and r["timeline"] for r in answer["runs"])
    diff = {row["key"]: row["values"] for row in answer["diff"]}
    assert diff["recipe"] == ["mnist-dcgan", "mnist-vae"] and "train.batch_size" not in diff


def test_compare_needs_two_runs(client):
    assert client.get("/api/compare", params={"runs": "dcgan"}).status_code == 422


# --- training from the browser ---------------------------------------------------------------------

def test_recipes_and_a_schema_with_types_choices_and_help(client):
    names = {r["name"] for r in client.get("/api/recipes").json()["recipes"]}
    assert {"ring-8", "mnist-dcgan", "mnist-vae"} <= names
    fields = {f["key"]: f for f in client.get("/api/recipes/mnist-dcgan").json()["fields"]}
    assert fields["optim.lr"]["type"] == "float" and "wgan-gp" in fields["model.loss"]["choices"]
    assert fields["model.loss"]["help"]
    assert client.get("/api/recipes/no-such-recipe").status_code == 400


def test_check_names_the_bad_key_for_the_form(client):
    bad = client.post("/api/check", json={"recipe": "ring-8", "overrides": {"optim.lr": "-1", "train.batch_size": "8"}})
    assert bad.status_code == 400 and bad.json()["key"] == "optim.lr" and "optim.lr" in bad.json()["error"]
    wrong_type = client.post("/api/check", json={"recipe": "ring-8", "overrides": {"train.steps": "many"}})
    assert wrong_type.status_code == 400 and wrong_type.json()["key"] == "train.steps"
    assert client.post("/api/check", json={"recipe": "ring-8", "overrides": {"optim.lr": "0.01"}}).json() == {"ok": True}


def test_a_refused_config_starts_nothing(client, runs):
    answer = client.post("/api/train", json={"recipe": "ring-8", "overrides": {"model.loss": "nope"}, "name": "bad"})
    assert answer.status_code == 400 and answer.json()["key"] == "model.loss"
    assert not (runs / "bad").exists()


def wait_for(predicate, seconds=60.0):
    """Polls ``predicate`` five times a second until it is true (a child process starts in seconds)."""
    for _ in range(int(seconds * 5)):
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"still not true after {seconds} s")


def run_status(client, run_id):
    answer = client.get("/api/run", params={"run": run_id})
    return answer.json()["summary"]["status"] if answer.status_code == 200 else None  # 404 until config.json


def test_train_stop_and_resume_a_child_process(client, runs):
    """The studio's training is `genforge train` in its own process: stop checkpoints, resume continues."""
    overrides = {"model.hidden": "16", "model.layers": "1", "train.batch_size": "32", "train.threads": "1",
                 "train.log_every": "50", "train.checkpoint_every": "100000", "train.sample_every": "100000"}
    started = client.post("/api/train", json={"recipe": "ring-8", "overrides": overrides, "steps": 1_000_000,
                                              "name": "live"})
    assert started.status_code == 200, started.text
    assert started.json()["run"] == "live"
    wait_for(lambda: run_status(client, "live") == "training" and client.get(
        "/api/run/metrics", params={"run": "live"}).json()["rows"])  # past step 0: there is a step to resume from
    assert client.post("/api/resume", json={"run": "live"}).status_code == 409  # it trains already
    with make_client(runs) as restarted:  # a studio started afresh finds the training by its folder alone
        assert run_status(restarted, "live") == "training"
        assert restarted.post("/api/stop", json={"run": "live"}).json() == {"stopped": True}
    wait_for(lambda: run_status(client, "live") == "interrupted")
    stopped_at = client.get("/api/run", params={"run": "live"}).json()["summary"]["step"]
    resumed = client.post("/api/resume", json={"run": "live", "steps": stopped_at + 60})
    assert resumed.status_code == 200, resumed.text
    # at once, while the child still starts (before it holds the run's lock): the run is training, a second
    # resume is refused (both were accepted, and the loser's pid was left in process.json)
    assert run_status(client, "live") == "training"
    again = client.post("/api/resume", json={"run": "live", "steps": stopped_at + 90})
    assert again.status_code == 409, again.text
    wait_for(lambda: run_status(client, "live") == "finished")
    assert client.get("/api/run", params={"run": "live"}).json()["summary"]["step"] == stopped_at + 60
    assert client.post("/api/stop", json={"run": "live"}).json() == {"stopped": False}


def test_a_run_still_starting_has_a_page_before_its_config_json(client, runs):
    """A training the studio started is listed at once (its process.json); its page and /api/run answered
    404 for the seconds until the child wrote config.json, so the page had no Stop button then."""
    import os
    import socket
    import subprocess

    folder = runs / "starting"
    folder.mkdir()
    child = subprocess.Popen(["sleep", "60"])  # stands in for the child that is still importing
    try:
        (folder / "process.json").write_text(json.dumps({
            "pid": child.pid, "host": socket.gethostname(), "started": time.time(), "recipe": "ring-8",
            "family": "gan", "budget": {"steps": 500, "minutes": 0}}))
        page = client.get("/api/run", params={"run": "starting"})
        assert page.status_code == 200, page.text
        details = page.json()
        assert (details["summary"]["status"], details["summary"]["total_steps"]) == ("training", 500)
        assert details["config"]["recipe"] == "ring-8" and details["timeline"] == []
        assert details["config_written"] is False  # the page offers no Explore, export or Resume yet
        assert client.get("/api/run/metrics", params={"run": "starting"}).json() == {"rows": []}
    finally:
        child.kill()
        child.wait()
    assert run_status(client, "starting") == "failed"  # it died before writing its config
    (folder / "process.json").unlink()
    os.symlink(runs / "dcgan" / "config.json", folder / "process.json")
    assert client.get("/api/run", params={"run": "starting"}).status_code == 404  # neither a run nor starting


def test_a_refused_field_is_one_line_naming_it(client, runs):
    """FastAPI's refusals were pydantic's error list, which the page showed as JSON."""
    cases = [(("post", "/api/train"), {"json": {"recipe": "ring-8", "steps": -5}}, "steps: must be at least 1 (got -5)"),
             (("post", "/api/train"), {"json": {"recipe": "ring-8", "steps": 2.7}}, "steps: must be a whole number (got 2.7)"),
             (("post", "/api/train"), {"json": {"steps": 3}}, "recipe: is required"),
             (("post", "/api/resume"), {"json": {"run": "dcgan", "minutes": 0}}, "minutes: must be more than 0 (got 0)"),
             (("get", "/api/compare"), {"params": {"runs": "dcgan"}}, "runs: needs at least 2 (got 1)"),
             (("post", "/api/train"), {"content": b"{cut", "headers": {"content-type": "application/json"}},
              "the request body: is not valid JSON")]
    for (method, url), options, line in cases:
        answer = getattr(client, method)(url, **options)
        assert answer.status_code == 422 and answer.json() == {"error": line}, answer.text


def test_the_run_list_shows_a_run_whose_config_is_damaged_with_the_reason(client, runs):
    (runs / "cut").mkdir()
    (runs / "cut" / "config.json").write_text('{"recipe": "mnist-va')
    time.sleep(0.6)  # the list is read at most twice a second
    listed = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
    assert listed["cut"]["status"] == "failed" and "the run's config is damaged" in listed["cut"]["problem"]
    assert listed["dcgan"]["problem"] == ""
    assert client.get("/api/run", params={"run": "dcgan"}).json()["config_written"] is True


# --- explore ---------------------------------------------------------------------------------------

def test_explore_info_says_what_a_model_can_do(client):
    gan = client.get("/api/explore/info", params={"run": "dcgan"}).json()
    assert gan["capabilities"]["latent"] and gan["latent_dim"] == 16 and gan["step"] == 6
    vae = client.get("/api/explore/info", params={"run": "vae"}).json()
    assert vae["capabilities"]["encoder"] and vae["latent_dim"] == 2


def test_samples_by_seed_are_reproducible(client):
    one = client.post("/api/explore/sample", json={"run": "dcgan", "seed": 3, "n": 4}).json()
    again = client.post("/api/explore/sample", json={"run": "dcgan", "seed": 3, "n": 4}).json()
    other = client.post("/api/explore/sample", json={"run": "dcgan", "seed": 4, "n": 4}).json()
    assert one["kind"] == "images" and len(one["images"]) == 4 and one["images"] == again["images"]
    assert one["images"] != other["images"]
    assert picture(one["images"][0]).size[0] >= 28


@pytest.mark.parametrize("url, body", [
    ("/api/explore/sample", {"run": "dcgan", "n": 4, "seed": 10**23}),
    ("/api/explore/sample", {"run": "dcgan", "n": 4, "seed": -10**23}),
    ("/api/explore/interpolate", {"run": "dcgan", "a": {"seed": 2**64, "n": 4, "index": 1},
                                  "b": {"seed": 1, "n": 4, "index": 2}}),
    ("/api/eval", {"run": "dcgan", "n": 10, "seed": 10**23}),
])
def test_a_seed_beyond_what_a_generator_takes_is_a_4xx_before_any_work(client, url, body):
    answer = client.post(url, json=body)
    assert answer.status_code == 422 and "seed" in answer.text


def test_the_cli_seed_range_is_one_line_too():
    from genforge import api
    from genforge.errors import GenforgeError

    with pytest.raises(GenforgeError, match="the seed must be a whole number from -9223372036854775808 to "):
        api._generator(2**64)
    assert api._generator(2**64 - 1).initial_seed() == 2**64 - 1


def test_a_conditional_run_samples_one_class_or_a_row_per_class(client):
    assert client.get("/api/explore/info", params={"run": "cgan"}).json()["capabilities"]["classes"] == 10
    sevens = client.post("/api/explore/sample", json={"run": "cgan", "n": 3, "label": 7}).json()["images"]
    threes = client.post("/api/explore/sample", json={"run": "cgan", "n": 3, "label": 3}).json()["images"]
    assert len(sevens) == 3 and sevens != threes
    grid = client.post("/api/explore/sample", json={"run": "cgan", "n": 2, "by_class": True}).json()
    assert grid["classes"] == 10 and grid["per_class"] == 2 and len(grid["images"]) == 20
    ends = {"a": {"seed": 0, "n": 3, "index": 0, "label": 7}, "b": {"seed": 0, "n": 3, "index": 2, "label": 7}}
    strip = client.post("/api/explore/interpolate", json={"run": "cgan", "steps": 4, **ends}).json()["images"]
    assert strip[0] == sevens[0] and strip[-1] == sevens[2]
    assert client.post("/api/explore/sample", json={"run": "cgan", "n": 3, "label": 10}).status_code == 400


def test_rejection_sampling_and_its_refusal_where_it_does_not_apply(client):
    kept = client.post("/api/explore/sample", json={"run": "dcgan", "seed": 0, "n": 4, "reject": 0.5})
    assert kept.status_code == 200 and len(kept.json()["images"]) == 4
    assert client.post("/api/explore/sample", json={"run": "vae", "n": 4, "reject": 0.5}).status_code == 400
    assert client.post("/api/explore/sample", json={"run": "dcgan", "n": 4, "by_class": True}).status_code == 400


def test_interpolation_between_two_clicked_samples_starts_and_ends_at_them(client):
    grid = client.post("/api/explore/sample", json={"run": "dcgan", "seed": 5, "n": 4}).json()["images"]
    body = {"run": "dcgan", "a": {"seed": 5, "n": 4, "index": 1}, "b": {"seed": 5, "n": 4, "index": 3}, "steps": 5}
    for spherical in (False, True):
        strip = client.post("/api/explore/interpolate", json={**body, "spherical": spherical}).json()["images"]
        assert len(strip) == 5 and strip[0] == grid[1] and strip[-1] == grid[3]
    past = {**body, "b": {"seed": 5, "n": 4, "index": 4}}
    assert client.post("/api/explore/interpolate", json=past).status_code == 400


def test_arithmetic_of_clicked_samples(client):
    ref = lambda i: {"seed": 1, "n": 6, "index": i}  # noqa: E731
    strip = client.post("/api/explore/arithmetic", json={"run": "dcgan", "a": [ref(0), ref(1)], "b": [ref(2)],
                                                         "c": [ref(3)]}).json()["images"]
    assert len(strip) == 4


def test_a_vae_decodes_clicked_latent_points_and_reconstructs_uploads(client):
    decoded = client.post("/api/explore/decode", json={"run": "vae", "z": [[0.0, 0.0], [1.5, -1.0]]}).json()
    assert len(decoded["images"]) == 2 and decoded["images"][0] != decoded["images"][1]
    assert client.post("/api/explore/decode", json={"run": "vae", "z": [[0, 0, 0]]}).status_code == 400
    pair = client.post("/api/explore/reconstruct", params={"run": "vae"}, content=png_upload()).json()["images"]
    assert len(pair) == 2 and picture(pair[1]).size == picture(pair[0]).size


def test_bad_uploads_get_one_line(client):
    broken = client.post("/api/explore/reconstruct", params={"run": "vae"}, content=b"not an image")
    assert broken.status_code == 400 and "\n" not in broken.json()["error"]
    assert client.post("/api/explore/reconstruct", params={"run": "dcgan"}, content=png_upload()).status_code == 400
    assert client.post("/api/explore/translate", params={"run": "vae"}, content=png_upload()).status_code == 400


def test_nearest_training_image_beside_each_sample(client):
    found = client.post("/api/explore/nearest", json={"run": "dcgan", "seed": 0, "n": 3}).json()
    assert len(found["images"]) == len(found["nearest"]) == len(found["distances"]) == 3
    assert all(d >= 0 for d in found["distances"])


def test_a_toy_run_samples_as_a_scatter_picture(client):
    answer = client.post("/api/explore/sample", json={"run": "toys/ring", "n": 64}).json()
    assert answer["kind"] == "points" and len(answer["images"]) == 1
    assert picture(answer["images"][0]).size[0] > 100


# --- evaluation ------------------------------------------------------------------------------------

def test_evaluate_reports_progress_and_writes_eval_json(client, runs):
    job = client.post("/api/eval", json={"run": "vae", "n": 20}).json()
    assert job["state"] in ("queued", "running")
    state, deadline = job, time.monotonic() + 120
    while state["state"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
        state = client.get("/api/eval/job", params={"id": job["id"]}).json()
    assert state["state"] == "done", state["error"]
    assert state["total"] > 0 and state["done"] == state["total"]
    assert (runs / "vae" / "eval.json").is_file()
    assert client.get("/api/run", params={"run": "vae"}).json()["eval"] == state["result"]
    assert client.get("/api/eval/job", params={"id": "999"}).status_code == 404


def test_a_discogan_takes_an_upload_a_to_b_and_back(discogan_run):
    with make_client(discogan_run.parent) as c:
        assert c.get("/api/explore/info", params={"run": "disco"}).json()["capabilities"]["translator"]
        images = c.post("/api/explore/translate", params={"run": "disco"}, content=png_upload((40, 30))).json()
        assert len(images["images"]) == 3  # A, A -> B, A -> B -> A
        assert len({picture(url).size for url in images["images"]}) == 1
        assert c.post("/api/explore/translate", params={"run": "disco", "direction": "sideways"},
                      content=png_upload()).status_code == 422
        assert c.post("/api/explore/sample", json={"run": "disco"}).status_code == 400  # no noise to sample


def test_many_pages_asking_at_once_share_one_read_of_the_runs(runs, monkeypatch):
    from genforge import api
    from genforge.web.routes_runs import RunsSnapshot

    reads = []
    real = api.list_runs
    monkeypatch.setattr(api, "list_runs", lambda root: reads.append(root) or real(root))
    shared = RunsSnapshot(runs, max_age=60)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(shared.get())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reads) == 1 and len(answers) == 8 and all(a == answers[0] for a in answers)
    fresh = RunsSnapshot(runs, max_age=0)
    fresh.get(), fresh.get()
    assert len(reads) == 3  # past max_age every ask reads again


def test_a_diverged_run_s_nan_losses_reach_the_page_as_null(client, runs):
    with (runs / "dcgan" / "metrics.jsonl").open("a") as out:
        out.write('{"step": 8, "g/loss": NaN, "d/loss": Infinity}\n')
    rows = client.get("/api/run/metrics", params={"run": "dcgan", "since": 6}).json()["rows"]
    assert rows == [{"step": 8, "g/loss": None, "d/loss": None}]
    streamed = events(client, "/api/events/metrics", run="dcgan", after=3, limit=1)
    assert streamed[0]["rows"] == rows


@pytest.mark.parametrize("interval", ["inf", "1e308", "61"])
def test_an_event_stream_interval_beyond_a_minute_is_refused(client, interval):
    # limit=1: were the interval accepted, the stream would end after its first event instead of hanging the test
    assert client.get("/api/events/runs", params={"interval": interval, "limit": 1}).status_code == 422


# --- found by an audit of the studio (2026-12-03) ------------------------------------------------------

@pytest.mark.parametrize("body", ['{"run": "vae", "z": [[NaN, 0]]}', '{"run": "vae", "z": [[Infinity, 0]]}',
                                  '{"run": "vae", "z": [[0, -Infinity]]}'])
def test_non_finite_latent_codes_are_refused(client, body):
    answer = client.post("/api/explore/decode", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422 and "finite" in answer.json()["error"]


@pytest.mark.parametrize("budget", ['"minutes": Infinity', '"minutes": NaN', '"steps": 1, "minutes": Infinity'])
def test_a_non_finite_budget_is_refused(client, budget):
    body = '{"recipe": "ring-8", ' + budget + "}"
    answer = client.post("/api/check", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422 and "finite" in answer.json()["error"]


def test_check_refuses_the_run_names_start_would(client, runs):
    bad = client.post("/api/check", json={"recipe": "ring-8", "name": "../evil"})
    assert bad.status_code == 400 and "run name" in bad.json()["error"]
    taken = client.post("/api/check", json={"recipe": "ring-8", "name": "dcgan"})
    assert taken.status_code == 409 and "exists already" in taken.json()["error"]
    assert client.post("/api/check", json={"recipe": "ring-8", "name": "fresh-name"}).json() == {"ok": True}
    assert not (runs / "fresh-name").exists()  # a check writes nothing


def test_an_unknown_route_answers_the_studio_s_one_line(client):
    answer = client.get("/api/no-such-thing")
    assert answer.status_code == 404 and answer.json() == {
        "error": "no such page or API route: /api/no-such-thing (the studio's pages are under /)"}


def test_the_run_page_says_whether_a_checkpoint_exists(client, runs):
    details = client.get("/api/run", params={"run": "dcgan"}).json()
    assert details["checkpoint_step"] == 6 and details["checkpoint_every"] > 0
    shutil.rmtree(runs / "dcgan" / "checkpoints")
    details = client.get("/api/run", params={"run": "dcgan"}).json()
    assert details["checkpoint_step"] is None


def test_a_failed_run_says_why_in_the_list(client, runs):
    import genforge.runs as runs_module

    runs_module.write_status(runs / "dcgan", "failed", 6, error="genforge: error: train.device=cuda:7: no such GPU")
    listed = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
    assert listed["dcgan"]["status"] == "failed" and "cuda:7" in listed["dcgan"]["problem"]
    assert listed["vae"]["problem"] == ""  # a finished run has none


@pytest.mark.parametrize("route, body", [
    ("/api/check", {"recipe": "ring-8", "overrides": {"train.steps": "60"}, "steps": 50}),
    ("/api/check", {"recipe": "ring-8", "overrides": {"train.steps": "0", "train.minutes": "0"}}),
    ("/api/check", {"recipe": "ring-8", "overrides": {"optim.schedule": "cosine"}, "minutes": 1}),
    ("/api/resume", {"run": "vae", "steps": 1}),
    ("/api/explore/sample", {"run": "cgan", "n": 4, "label": 99}),
    ("/api/explore/sample", {"run": "dcgan", "n": 4, "label": 1}),
    ("/api/explore/sample", {"run": "vae", "n": 4, "reject": 0.5}),
    ("/api/explore/sample", {"run": "dcgan", "n": 4, "by_class": True}),
])
def test_refusals_in_the_studio_name_no_command_line_flags(client, route, body):
    # the page has a budget box and fields, not --steps, --class or --reject
    answer = client.post(route, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] and "--" not in answer.json()["error"], answer.json()["error"]
