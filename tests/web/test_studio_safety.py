"""Every refusal of the studio (issue 18, "Safety and load"): each test fails if its refusal is removed."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from starlette.requests import Request

from genforge.web.safety import Refused, read_capped, resolve_run
from tests.web.conftest import BASE, make_client


# --- token ---------------------------------------------------------------------------------

def test_a_token_studio_refuses_requests_without_the_token(runs):
    with make_client(runs, token="s3cret") as c:
        refused = c.get("/api/runs")
        assert refused.status_code == 401 and "token" in refused.json()["error"]
        assert c.get("/", headers={"X-Genforge-Token": "wrong"}).status_code == 401
        assert c.get("/api/runs", headers={"X-Genforge-Token": "s3cret"}).status_code == 200
        assert c.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_the_printed_url_s_token_sets_a_cookie_that_later_requests_carry(runs):
    with make_client(runs, token="s3cret") as c:
        first = c.get("/?token=s3cret")
        assert first.status_code == 200 and "genforge_token=s3cret" in first.headers["set-cookie"]
        assert "HttpOnly" in first.headers["set-cookie"] and "SameSite=Strict" in first.headers["set-cookie"]
        assert c.get("/api/runs").status_code == 200  # the cookie, no token in the URL


def test_serving_on_a_non_loopback_host_generates_a_token_and_prints_it(runs, monkeypatch, capsys):
    import uvicorn

    from genforge.web import server

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    server.serve(runs, host="0.0.0.0", port=9999)
    printed = capsys.readouterr().err
    assert "http://0.0.0.0:9999/?token=" in printed
    token = printed.split("?token=")[1].split()[0]
    assert len(token) >= 16 and seen["host"] == "0.0.0.0"
    server.serve(runs, host="127.0.0.1", port=9999)
    assert "?token=" not in capsys.readouterr().err


def test_without_a_token_the_studio_answers_only_to_loopback_host_names(runs):
    with make_client(runs) as c:
        rebound = c.get("/api/runs", headers={"Host": "evil.example:8765"})
        assert rebound.status_code == 403 and "host" in rebound.json()["error"]
        assert c.get("/api/runs", headers={"Host": "localhost:8765"}).status_code == 200


# --- origin ----------------------------------------------------------------------------------

def test_posts_from_another_origin_are_refused(client):
    body = {"recipe": "ring-8", "overrides": {}}
    other = client.post("/api/check", json=body, headers={"Origin": "http://evil.example"})
    assert other.status_code == 403 and "origin" in other.json()["error"]
    other_port = client.post("/api/check", json=body, headers={"Origin": "http://127.0.0.1:9000"})
    assert other_port.status_code == 403
    cross = client.post("/api/check", json=body, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    assert client.post("/api/check", json=body, headers={"Origin": BASE}).status_code == 200


# --- run ids and files -----------------------------------------------------------------------

@pytest.mark.parametrize("run_id", ["../runs/dcgan", "dcgan/../../x", "/etc", "C:/runs", "dcgan\\..", ".", "", "a//b"])
def test_run_ids_that_leave_the_runs_folder_are_refused(client, run_id):
    answer = client.get("/api/run", params={"run": run_id})
    assert answer.status_code in (400, 403, 422) and answer.status_code != 404


def test_a_symlink_out_of_the_runs_folder_is_refused(client, runs, tmp_path):
    outside = tmp_path / "elsewhere"
    (runs / "dcgan").rename(outside)
    (runs / "linked").symlink_to(outside, target_is_directory=True)
    answer = client.get("/api/run", params={"run": "linked"})
    assert answer.status_code == 403 and "outside the runs folder" in answer.json()["error"]
    assert client.get("/api/run/metrics", params={"run": "linked"}).status_code == 403


def test_a_symlink_inside_the_runs_folder_is_followed(runs):
    (runs / "alias").symlink_to(runs / "dcgan", target_is_directory=True)
    assert resolve_run(runs, "alias") == (runs / "dcgan").resolve()
    with pytest.raises(Refused) as missing:
        resolve_run(runs, "nothing-here")
    assert missing.value.status == 404


@pytest.mark.parametrize("name", ["config.json", "../config.json", "samples/../../dcgan/config.json",
                                  "checkpoints/latest/state.json", "samples/.hidden.png", "/etc/passwd"])
def test_only_pictures_of_a_run_are_served(client, name):
    answer = client.get("/api/run/file", params={"run": "dcgan", "name": name})
    assert answer.status_code in (400, 403)


def test_a_picture_linked_out_of_the_run_is_refused(client, runs, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not yours")
    (runs / "dcgan" / "samples" / "leak.png").symlink_to(secret)
    answer = client.get("/api/run/file", params={"run": "dcgan", "name": "samples/leak.png"})
    assert answer.status_code == 403


def test_a_new_run_s_name_must_be_one_plain_folder(client):
    for name in ("../escape", "a/b", ".hidden", "x" * 65):
        answer = client.post("/api/train", json={"recipe": "ring-8", "name": name, "steps": 1})
        assert answer.status_code == 400 and "run name" in answer.json()["error"]


# --- body size ---------------------------------------------------------------------------------

def test_uploads_over_the_cap_are_refused_before_they_are_read(runs):
    with make_client(runs, upload_limit=1000) as c:
        big = c.post("/api/explore/reconstruct", params={"run": "vae"}, content=b"x" * 1001)
        assert big.status_code == 413 and "capped" in big.json()["error"]
        csv = c.post("/api/lab/csv", content=b"0,0\n" * 300)
        assert csv.status_code == 413


def test_the_default_cap_is_ten_megabytes(client):
    answer = client.post("/api/lab/csv", content=b"0" * (10 * 2**20 + 1))
    assert answer.status_code == 413


def test_a_body_without_a_length_is_refused(client):
    def chunks():
        yield b"0,0\n"

    answer = client.post("/api/lab/csv", content=chunks())
    assert answer.status_code == 411


def test_read_capped_stops_a_body_longer_than_its_content_length_said():
    async def receive_factory():
        parts = [b"a" * 600, b"b" * 600]

        async def receive():
            body = parts.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(parts)}

        request = Request({"type": "http", "method": "POST", "headers": []}, receive)
        return await read_capped(request, limit=1000)

    with pytest.raises(Refused) as refused:
        asyncio.run(receive_factory())
    assert refused.value.status == 413


# --- trainings, workers and evaluations ----------------------------------------------------------

def test_past_one_training_per_core_a_new_one_is_refused(runs, monkeypatch):
    from genforge import api

    real = api.list_runs

    def two_training(root):
        found = real(root)
        for summary in found[:2]:
            summary.status = "training"
        return found

    monkeypatch.setattr(api, "list_runs", two_training)
    monkeypatch.setattr(api, "start_training", lambda *a, **k: pytest.fail("started past the limit"))
    monkeypatch.setattr(api, "resume_training", lambda *a, **k: pytest.fail("resumed past the limit"))
    with make_client(runs, max_trainings=2) as c:
        answer = c.post("/api/train", json={"recipe": "ring-8", "steps": 5})
        assert answer.status_code == 429 and "one per CPU core" in answer.json()["error"]
        assert c.post("/api/resume", json={"run": "vae"}).status_code == 429


def test_the_default_limit_is_the_core_count(client):
    assert client.get("/api/runs").json()["max_trainings"] == (os.cpu_count() or 1)


def test_a_busy_sampling_worker_refuses_more_than_it_holds(runs, monkeypatch):
    from genforge import api

    release, entered = threading.Event(), threading.Event()
    real_sample = api.sample

    def slow_sample(*args, **kwargs):
        entered.set()
        release.wait(30)
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(api, "sample", slow_sample)
    with make_client(runs, model_waiting=1) as c:
        first = {}
        worker = threading.Thread(target=lambda: first.update(r=c.post("/api/explore/sample",
                                                                      json={"run": "dcgan", "n": 2})))
        worker.start()
        assert entered.wait(30)
        busy = c.post("/api/explore/sample", json={"run": "dcgan", "n": 2})
        assert busy.status_code == 503 and "busy" in busy.json()["error"]
        assert c.get("/api/runs").status_code == 200  # the server still answers while the worker works
        release.set()
        worker.join(30)
        assert first["r"].status_code == 200


def test_one_evaluation_per_run_at_a_time(runs, monkeypatch):
    from genforge.web import server

    release = threading.Event()

    def slow_evaluate(run_dir, progress=None, **options):
        progress("samples", 1, 4)
        release.wait(30)
        return {"fid": 1.0}

    monkeypatch.setattr(server, "_evaluate", slow_evaluate)
    with make_client(runs) as c:
        job = c.post("/api/eval", json={"run": "dcgan", "n": 10}).json()
        again = c.post("/api/eval", json={"run": "dcgan", "n": 10})
        assert again.status_code == 409 and "already being evaluated" in again.json()["error"]
        release.set()
        for _ in range(100):
            state = c.get("/api/eval/job", params={"id": job["id"]}).json()
            if state["state"] == "done":
                break
            time.sleep(0.05)
        assert state["result"] == {"fid": 1.0}


def test_a_recipe_name_cannot_name_a_folder_elsewhere(client, runs, monkeypatch):
    from genforge import api

    monkeypatch.setattr(api, "start_training", lambda *a, **k: pytest.fail("started with a path for a recipe"))
    answer = client.post("/api/train", json={"recipe": "../../escape", "steps": 1})
    assert answer.status_code == 400 and "run name" in answer.json()["error"]


def test_the_page_may_load_nothing_from_elsewhere_nor_be_framed(client):
    policy = client.get("/").headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "http" not in policy  # no other origin is allowed


@pytest.mark.parametrize("host", ["127.0.0.1.attacker.example:8765", "127.evil.example", "127.0.0.1.nip.io:8765",
                                  "localhost.evil.example:8765", "0x7f000001.example"])
def test_a_rebinding_name_that_merely_starts_like_loopback_is_refused(runs, host):
    # a page served from such a name, resolving to 127.0.0.1, would be same-origin with itself
    with make_client(runs) as c:
        answer = c.get("/api/runs", headers={"Host": host})
        assert answer.status_code == 403 and "host" in answer.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "127.0.0.2:8765", "[::1]:8765", "localhost:8765", "LOCALHOST"])
def test_loopback_addresses_and_localhost_are_served(runs, host):
    with make_client(runs) as c:
        assert c.get("/api/runs", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("run_id", ["a" * 300, "a" * 600, "dcgan/" + "b" * 300])
def test_run_ids_too_long_for_the_file_system_are_refused_in_one_line(client, run_id):
    answer = client.get("/api/run", params={"run": run_id})
    assert answer.status_code == 400 and "refused" in answer.json()["error"]
    assert len(answer.json()["error"]) < 200  # the id is shortened, not echoed whole


def test_a_picture_name_too_long_for_the_file_system_is_refused(client):
    answer = client.get("/api/run/file", params={"run": "dcgan", "name": "samples/" + "a" * 300 + ".png"})
    assert answer.status_code == 400 and "refused" in answer.json()["error"]


@pytest.mark.parametrize("recipe", ["/tmp/evil", "../../../../tmp/evil", "ring-8/../ring-8", "recipes/ring-8"])
def test_a_recipe_is_a_built_in_name_never_a_path(client, tmp_path, recipe):
    (tmp_path / "evil.toml").write_text('family = "gan"\n')
    for route in ("/api/check", "/api/train"):
        answer = client.post(route, json={"recipe": recipe, "name": "evil-run", "steps": 1})
        assert answer.status_code == 400 and "unknown recipe" in answer.json()["error"], route
    assert client.get(f"/api/recipes/{recipe.replace('/', '%2F')}").status_code in (400, 404)
