"""The toy lab's endpoints over genforge.lab: new games, steps of D / G / both, changing the game, own points."""

from __future__ import annotations

import pytest


def new_lab(client, **body) -> dict:
    answer = client.post("/api/lab", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_lab_lists_its_toys(client):
    assert {"ring-8", "grid-25", "duck-cow-1d", "gmm-discogan"} <= set(client.get("/api/lab/recipes").json()["recipes"])


def test_a_ring_8_game_shows_points_heatmap_arrows_and_manifold(client):
    lab = new_lab(client, recipe="ring-8")
    state = lab["state"]
    assert state["kind"] == "gan2d" and state["step"] == 0 and len(state["bounds"]) == 4
    assert len(state["real"]) > 8 and len(state["fake"]) > 8
    assert len(state["heatmap"]["values"]) == 40 * 40 and len(state["arrows"]) == 100
    assert state["manifold"] and state["config"]["loss"] == "nonsaturating"


def test_steps_of_d_g_and_both_move_the_game(client):
    lab = new_lab(client)
    url = f"/api/lab/{lab['id']}/step"
    d_only = client.post(url, json={"which": "d"}).json()
    assert d_only["state"]["step"] == 1 and d_only["state"]["fake"] == lab["state"]["fake"]  # G did not move
    g_only = client.post(url, json={"which": "g"}).json()
    assert g_only["state"]["fake"] != d_only["state"]["fake"]
    both = client.post(url, json={"which": "both", "n": 5, "grid": 10, "arrows": 3}).json()
    assert both["state"]["step"] == 7 and len(both["state"]["heatmap"]["values"]) == 100
    assert len(both["state"]["arrows"]) == 3 and set(both["losses"]) >= {"d/loss", "g/loss"}
    assert client.post(url, json={"which": "x"}).status_code == 422
    assert client.post(url, json={"n": 100_000}).status_code == 422


def test_the_game_changes_between_steps(client):
    lab = new_lab(client)
    changed = client.post(f"/api/lab/{lab['id']}/set", json={"loss": "wgan-gp", "lr_d": 5e-4, "lr_g": 2e-4,
                                                              "d_steps": 3}).json()["state"]["config"]
    assert changed["loss"] == "wgan-gp" and changed["lr_d"] == 5e-4 and changed["lr_g"] == 2e-4
    assert changed["d_steps"] == 3
    assert client.post(f"/api/lab/{lab['id']}/set", json={"loss": "nope"}).status_code == 400
    assert client.post(f"/api/lab/{lab['id']}/set", json={"lr_d": -1}).status_code == 422


def test_a_game_on_drawn_points(client):
    drawn = [[0.1 * i, (-1) ** i * 0.5] for i in range(20)]
    lab = new_lab(client, recipe="ring-8", points=drawn)
    assert len(lab["state"]["real"]) == 20 and lab["state"]["metrics"]["modes"] is None
    assert client.post("/api/lab", json={"points": [[0, 0, 0]] * 10}).status_code == 400
    assert client.post("/api/lab", json={"points": [[0, 0]] * 3}).status_code == 422


def test_a_game_on_an_uploaded_csv(client):
    csv = "x,y\n" + "\n".join(f"{i * 0.1},{i * -0.2}" for i in range(30))
    answer = client.post("/api/lab/csv", params={"recipe": "ring-8"}, content=csv.encode())
    assert answer.status_code == 200 and len(answer.json()["state"]["real"]) == 30
    bad = client.post("/api/lab/csv", content=b"1,2\n3,oops\n")
    assert bad.status_code == 400 and "line" in bad.json()["error"]


@pytest.mark.parametrize("recipe,kind", [("duck-cow-1d", "gan1d"), ("gmm-discogan", "discogan2d")])
def test_the_other_toys(client, recipe, kind):
    lab = new_lab(client, recipe=recipe)
    stepped = client.post(f"/api/lab/{lab['id']}/step", json={"n": 2}).json()["state"]
    assert stepped["kind"] == kind and stepped["step"] == 2


def test_unknown_toys_and_labs_are_refused(client):
    assert client.post("/api/lab", json={"recipe": "mnist-dcgan"}).status_code == 400
    assert client.post("/api/lab/999/step", json={}).status_code == 404
    assert client.get("/api/lab/999/state").status_code == 404


def test_a_labs_seed_takes_train_seeds_range_and_a_refusal_says_it(client):
    from genforge.config import TRAIN_SEED_MAX
    from genforge.errors import GenforgeError
    from genforge.lab import ToyLab

    csv = "\n".join(f"{i * 0.1},{i * -0.2}" for i in range(30)).encode()
    for seed in (-1, TRAIN_SEED_MAX + 1):
        answer = client.post("/api/lab", json={"seed": seed})
        assert answer.status_code == 422 and "seed" in answer.json()["error"], answer.json()
        answer = client.post("/api/lab/csv", params={"seed": seed}, content=csv)
        assert answer.status_code == 422 and "seed" in answer.json()["error"], answer.json()
    with pytest.raises(GenforgeError, match=f"seed must be a whole number from 0 to {TRAIN_SEED_MAX}, not -1"):
        ToyLab("ring-8", seed=-1)
    answer = client.post("/api/lab", json={"seed": TRAIN_SEED_MAX})
    assert answer.status_code == 200 and answer.json()["state"]["config"]["seed"] == TRAIN_SEED_MAX


def test_old_labs_are_dropped_past_the_limit(client):
    from genforge.web.routes_lab import MAX_LABS

    first = new_lab(client)["id"]
    for _ in range(MAX_LABS):
        new_lab(client)
    assert client.get(f"/api/lab/{first}/state").status_code == 404
