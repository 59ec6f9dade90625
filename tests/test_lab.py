"""The toy lab (genforge.lab): what its state shows is the family's own D, G and losses, its steps
are the loop's, set() changes the game and refuses bad values, users' points train."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from genforge import losses
from genforge.errors import GenforgeError
from genforge.lab import (FAKE_SHOWN, LAB_RECIPES, MAX_POINTS, MIN_POINTS, PLANE_SIDE, ToyLab, grid_points,
                          parse_points_csv)


def params(lab: ToyLab, group: str) -> list[torch.Tensor]:
    return [p.detach().clone() for p in lab.model.optimizer_groups()[group]]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def ring() -> ToyLab:
    """A ring-8 lab a few steps in (tests that only look share it)."""
    lab = ToyLab("ring-8", seed=0)
    lab.step(n=3)
    return lab


# --- state --------------------------------------------------------------------------------

def test_state_has_the_contracts_shapes_and_is_strict_json(ring):
    state = ring.state(grid=12, arrows=30)
    assert json.loads(json.dumps(state, allow_nan=False)) == state  # JSON-safe, no NaN/inf
    assert state["kind"] == "gan2d" and state["step"] == ring.steps == 3
    x0, x1, y0, y1 = state["bounds"]
    assert x0 < -1 < 1 < x1 and y0 < -1 < 1 < y1  # the unit ring inside the view
    assert len(state["real"]) == 1000 and all(len(p) == 2 for p in state["real"])
    assert len(state["fake"]) == FAKE_SHOWN and all(len(p) == 2 for p in state["fake"])
    heat = state["heatmap"]
    assert heat["n"] == 12 and len(heat["values"]) == 144 and all(0 <= v <= 1 for v in heat["values"])
    assert len(state["arrows"]) == 30 and all(len(a) == 4 for a in state["arrows"])
    assert len(state["manifold"]) == PLANE_SIDE ** 2 and state["manifold_shape"] == [PLANE_SIDE, PLANE_SIDE]
    metrics = state["metrics"]
    assert {"modes", "hq", "d_loss", "g_loss", "modes_total"} <= set(metrics) and metrics["modes_total"] == 8
    assert 0 <= metrics["modes"] <= 8 and 0 <= metrics["hq"] <= 100 and math.isfinite(metrics["d_loss"])
    assert state["config"] | {"losses": None} == {"loss": "nonsaturating", "lr_d": 1e-3, "lr_g": 1e-3, "d_steps": 1,
                                                  "losses": None, "recipe": "ring-8", "seed": 0, "batch_size": 256}


def test_heatmap_is_ds_probability_on_the_grid(ring):
    state = ring.state(grid=9, arrows=0)
    ring.model.eval()
    with torch.no_grad():
        expected = torch.sigmoid(ring.model.discriminator(grid_points(state["bounds"], 9))).double()
    ring.model.train()
    assert state["heatmap"]["scale"] == "probability"
    assert torch.allclose(torch.tensor(state["heatmap"]["values"]).double(), expected, atol=1e-4)
    # row-major from y0: the second value is one cell to the right of the first, the 10th one cell up
    cells = grid_points(state["bounds"], 9)
    assert cells[1, 0] > cells[0, 0] and cells[1, 1] == cells[0, 1] and cells[9, 1] > cells[0, 1]


def test_arrows_point_along_minus_the_gradient_of_gs_loss(ring):
    state = ring.state(grid=4, arrows=20)
    arrows = torch.tensor(state["arrows"], dtype=torch.float64)
    tails = torch.tensor(state["fake"][:20])
    assert torch.allclose(arrows[:, :2], tails.double(), atol=1e-4)  # on G's shown samples
    x = tails.clone().requires_grad_(True)
    ring.model.eval()
    per_point = losses.g_nonsaturating(ring.model.discriminator(x)) * len(x)  # the sum of each sample's term
    (grad,) = torch.autograd.grad(per_point, x)
    ring.model.train()
    assert torch.allclose(arrows[:, 2:], -grad.double(), rtol=1e-3, atol=1e-5)
    assert (arrows[:, 2:].abs() > 0).any()


def test_a_diverged_game_still_gives_strict_json():
    lab = ToyLab("ring-8")
    lab.step()
    with torch.no_grad():
        lab.model.generator.main[-1].bias.fill_(float("nan"))  # G's every sample is NaN
    state = lab.state(grid=5, arrows=10)
    json.dumps(state, allow_nan=False)
    assert state["fake"] == [] and state["arrows"] == [] and state["manifold"] == []


def test_a_two_dimensional_noise_grid_is_gs_manifold():
    lab = ToyLab("ring-8", overrides=["model.latent_dim=2"])
    lab.step()
    state = lab.state(grid=3, arrows=0)
    corners = torch.tensor([[-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0], [2.0, 2.0]])  # the noise's reach
    with torch.no_grad():
        expected = lab.model.generate(corners)
    side = PLANE_SIDE
    manifold = torch.tensor(state["manifold"])
    assert torch.allclose(manifold[[0, side - 1, side * (side - 1), side * side - 1]], expected, atol=1e-4)


def test_state_refuses_bad_sizes(ring):
    for bad in ({"grid": 1}, {"grid": 10_000}, {"arrows": -1}, {"arrows": FAKE_SHOWN + 1}, {"grid": 2.5},
                {"grid": True}):
        with pytest.raises(GenforgeError):
            ring.state(**bad)


def test_one_d_toy_state():
    lab = ToyLab("duck-cow-1d")
    lab.step(n=2)
    state = lab.state(grid=25, arrows=10)
    json.dumps(state, allow_nan=False)
    assert state["kind"] == "gan1d"
    assert all(isinstance(v, float) for v in state["real"][:50] + state["fake"][:50])
    assert 0.1 < sum(state["real"]) / len(state["real"]) < 0.9  # values on the 0..1 weight axis
    assert state["heatmap"]["n"] == 25 and len(state["heatmap"]["values"]) == 25
    assert len(state["arrows"]) == 10 and all(len(a) == 2 for a in state["arrows"])  # [x, dx]
    assert len(state["manifold"]) == state["manifold_shape"][0] and len(state["manifold_shape"]) == 1
    assert state["metrics"]["modes_total"] == 2 and state["config"]["loss"] == "minimax"
    assert state["bounds"][2:] == [0.0, 1.0]


@pytest.mark.parametrize("recipe", ["gmm-discogan", "gmm-discogan-ring"])
def test_discogan_mixture_state(recipe):
    lab = ToyLab(recipe)
    d_before, g_before = params(lab, "discriminator"), params(lab, "generator")
    lab.step("d")
    assert not same(d_before, params(lab, "discriminator")) and same(g_before, params(lab, "generator"))
    state = lab.state(grid=8, arrows=16)
    json.dumps(state, allow_nan=False)
    assert state["kind"] == "discogan2d"
    assert len(state["real"]) == len(state["fake"]) == len(state["source"]) == len(state["source_labels"]) == 512
    assert len(state["heatmap"]["values"]) == 64 and len(state["arrows"]) == 16
    metrics = state["metrics"]
    assert metrics["modes_total"] == (2 if recipe == "gmm-discogan" else 10)
    assert {"modes", "hq", "b2a_modes", "b2a_hq", "distinct_modes", "mapping_purity"} <= set(metrics)
    assert state["config"]["losses"] == ["nonsaturating", "least_squares", "softplus_difference"]


def test_discogan_arrows_are_minus_the_gradient_of_gs_whole_loss():
    lab = ToyLab("gmm-discogan")
    lab.step(n=2)
    state = lab.state(grid=4, arrows=8)
    model, view = lab.model, lab.view
    a = view.a[:8]
    fake = model.G_AB(a).detach().requires_grad_(True)
    model.eval()
    # the family's g_terms with G_AB's output replaced by the leaf `fake`
    handle = model.G_AB.register_forward_hook(lambda m, i, o: fake if i[0] is a else o)
    from genforge.models.base import Batch
    loss = model.g_terms(Batch(a, view.labels_a[:8], view.b[:8], view.labels_b[:8]))["loss"]
    handle.remove()
    (grad,) = torch.autograd.grad(loss, fake)
    model.train()
    arrows = torch.tensor(state["arrows"], dtype=torch.float64)
    assert torch.allclose(arrows[:, 2:], -8 * grad.double(), rtol=1e-3, atol=1e-6)


# --- stepping -------------------------------------------------------------------------------

def test_a_d_step_moves_d_only_and_a_g_step_g_only():
    lab = ToyLab("ring-8", seed=1)
    d0, g0 = params(lab, "discriminator"), params(lab, "generator")
    out = lab.step("d")
    d1, g1 = params(lab, "discriminator"), params(lab, "generator")
    assert not same(d0, d1) and same(g0, g1)
    assert "d/loss" in out and not any(k.startswith("g/") for k in out)
    out = lab.step("g")
    assert same(d1, params(lab, "discriminator")) and not same(g1, params(lab, "generator"))
    assert set(out) == {"g/loss"} and all(isinstance(v, float) for v in out.values())
    assert lab.steps == 2 and lab.state(arrows=0)["metrics"]["d_loss"] is not None  # D's loss kept from before


def test_step_refuses_bad_arguments(ring):
    for bad in ({"which": "x"}, {"n": 0}, {"n": -3}, {"n": 10**9}, {"n": "two"}):
        with pytest.raises(GenforgeError):
            ring.step(**bad)


def test_a_seeded_lab_repeats_itself_and_leaves_the_global_rng_alone():
    def play(seed: int) -> dict:
        lab = ToyLab("ring-8", seed=seed)
        torch.manual_seed(1234)  # whatever the server does with the global RNG in between
        lab.step(n=2)
        torch.rand(7)
        lab.step("g")
        lab.set(loss="hinge")
        lab.step()
        return lab.state(grid=6, arrows=5)

    outside = torch.get_rng_state()
    first = play(5)
    assert play(5) == first and play(6) != first
    torch.set_rng_state(outside)
    ToyLab("ring-8").step(n=2)
    assert torch.equal(torch.get_rng_state(), outside)


def test_the_lab_computes_on_its_own_thread_count_and_gives_the_processs_back():
    lab = ToyLab("ring-8")
    outside = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        lab.step()
        lab.state(grid=4, arrows=4)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(outside)


# --- set -----------------------------------------------------------------------------------

def test_set_changes_loss_and_rates_keeping_weights_and_moments():
    lab = ToyLab("ring-8", seed=2)
    lab.step(n=2)
    weights = {k: v.clone() for k, v in lab.model.state_dict().items()}
    moments = {n: lab.optimizers["discriminator"].state[p]["exp_avg"].clone()
               for n, p in lab.model.named_parameters() if n.startswith("discriminator")}
    config = lab.set(loss="least_squares", lr_d=3e-4, lr_g=2e-3)
    assert config["loss"] == lab.model.cfg.loss == "least_squares"
    assert all(torch.equal(weights[k], v) for k, v in lab.model.state_dict().items())
    named = dict(lab.model.named_parameters())
    assert all(torch.equal(lab.optimizers["discriminator"].state[named[n]]["exp_avg"], m) for n, m in moments.items())
    assert [g["lr"] for g in lab.optimizers["discriminator"].param_groups] == [3e-4]
    assert [g["lr"] for g in lab.optimizers["generator"].param_groups] == [2e-3]
    assert lab.state(arrows=0)["heatmap"]["scale"] == "critic"
    lab.set(loss="wgan-gp")  # a rebuilt model keeps the rates set before
    assert [g["lr"] for g in lab.optimizers["discriminator"].param_groups] == [3e-4]
    lab.step()
    assert lab.config["loss"] == "wgan-gp" and math.isfinite(lab.state(arrows=0)["metrics"]["d_loss"])


def test_set_carries_linear_weights_into_a_bigger_critic():
    lab = ToyLab("ring-8", seed=2)
    lab.step()
    before = {k: v.clone() for k, v in lab.model.state_dict().items()}
    lab.set(loss="wgan-gp")
    after = lab.model.state_dict()
    assert set(before) < set(after)  # the new layer norms
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_d_steps_repeat_ds_phase():
    lab = ToyLab("ring-8")
    lab.set(d_steps=3)
    assert lab.model.cfg.d_steps == 3 and [p.repeats for p in lab.phases if p.name == "d"] == [3]
    disco = ToyLab("gmm-discogan")  # its config has no d_steps: the lab repeats D's phase itself
    disco.set(d_steps=2)
    assert [p.repeats for p in disco.phases if p.optimizer == "discriminator"] == [2]
    assert disco.config["d_steps"] == 2
    count = int(disco.model.iteration)
    disco.step("d")
    assert int(disco.model.iteration) == count + 2  # D's phase ran twice


@pytest.mark.parametrize("bad", [{"loss": "bogus"}, {"lr_d": 0}, {"lr_g": -1e-3}, {"lr_d": float("nan")},
                                 {"lr_g": "fast"}, {"lr_d": True}, {"lr_g": 2.0}, {"d_steps": 0}, {"d_steps": 2.5},
                                 {"d_steps": True}, {"d_steps": 10_000}])
def test_set_refuses_bad_values_and_changes_nothing(ring, bad):
    config = ring.config
    with pytest.raises(GenforgeError) as error:
        ring.set(loss="hinge", **bad) if "loss" not in bad else ring.set(lr_d=5e-4, **bad)
    assert "\n" not in str(error.value)
    assert ring.config == config


def test_discogan_loss_changes_among_its_own():
    lab = ToyLab("gmm-discogan")
    lab.set(loss="least_squares")
    assert lab.model.cfg.gan_loss == "least_squares"
    with pytest.raises(GenforgeError):
        lab.set(loss="hinge")


# --- recipes and users' points -------------------------------------------------------------

def test_only_the_toy_recipes():
    assert set(LAB_RECIPES) == {"ring-8", "grid-25", "duck-cow-1d", "gmm-discogan", "gmm-discogan-ring"}
    with pytest.raises(GenforgeError):
        ToyLab("mnist-dcgan")
    with pytest.raises(GenforgeError):
        ToyLab("ring-8", overrides=["model.bogus=1"])


def test_users_points_train():
    angles = torch.linspace(0, 2 * math.pi, 40)
    points = torch.stack([5 + 0.5 * angles.cos(), 5 + 0.5 * angles.sin()], 1)  # far from where G starts
    lab = ToyLab("ring-8", points=points.tolist(), seed=0)
    state = lab.state(arrows=0)
    assert len(state["real"]) == 40 and state["metrics"]["modes"] is None

    def distance() -> float:
        fake = torch.tensor(lab.state(grid=2, arrows=0)["fake"])
        return float(torch.cdist(fake, points).min(1).values.mean())

    start = distance()
    lab.step(n=150)
    assert distance() < start / 4
    assert state["bounds"][0] < 4.5 < 5.5 < state["bounds"][1]


@pytest.mark.parametrize("recipe", ["duck-cow-1d", "gmm-discogan"])
def test_users_points_only_for_the_2d_gan_toys(recipe):
    with pytest.raises(GenforgeError):
        ToyLab(recipe, points=[[0.0, 0.0]] * 10)


@pytest.mark.parametrize("points", [[[0.0, 0.0]] * (MIN_POINTS - 1), [[0.0, 0.0, 0.0]] * 10,
                                    [[0.0, float("nan")]] * 10, [[float("inf"), 0.0]] * 10, [["a", "b"]] * 10,
                                    [[1e9, 0.0]] * 10, [[0.0, 0.0]] * (MAX_POINTS + 1)])
def test_bad_points_are_refused(points):
    with pytest.raises(GenforgeError):
        ToyLab("ring-8", points=points)


# --- CSV ------------------------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=MIN_POINTS, max_size=60), st.sampled_from([",", ";", "\t", " , "]),
       st.booleans())
def test_csv_round_trips(pairs, separator, header):
    text = ("x,y\n" if header else "") + "\n".join(f"{x!r}{separator}{y!r}" for x, y in pairs) + "\n"
    assert torch.equal(parse_points_csv(text.encode()), torch.tensor(pairs, dtype=torch.float32))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=MIN_POINTS, max_size=30), st.data(),
       st.sampled_from(["abc", "1,2,3", "nan,1", "1,inf", "1", "2e7,0", "--1,0"]))
def test_a_bad_line_is_named(pairs, data, bad):
    lines = [f"{x!r},{y!r}" for x, y in pairs]
    where = data.draw(st.integers(1, len(lines)))  # replaces line `where` (1-based)
    lines[where - 1] = bad if where > 1 or bad != "abc" else "abc,1"  # a lone first "abc" line is a header
    with pytest.raises(GenforgeError) as error:
        parse_points_csv("\n".join(lines), source="pts.csv")
    message = str(error.value)
    assert message.startswith(f"pts.csv line {where}:") and "\n" not in message


def test_csv_comments_blank_lines_and_refusals():
    good = "# my points\n\n" + "\n".join(f"{k},{k * 2}" for k in range(MIN_POINTS)) + "\n\n"
    assert parse_points_csv(good).shape == (MIN_POINTS, 2)
    assert parse_points_csv("\ufeff" + good).shape == (MIN_POINTS, 2)
    for text, words in ((b"\xff\xfe1,2", "UTF-8"), ("", "no points"), ("1,2\n" * 3, "points"),
                        ("1,2\n" * (MAX_POINTS + 1), f"{MAX_POINTS:,}"), (b"1,2\x00", "binary")):
        with pytest.raises(GenforgeError, match=words):
            parse_points_csv(text)
