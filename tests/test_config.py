"""Recipes, dotted overrides, value parsing and the config.json round trip."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genforge.config import (RunConfig, build_config, config_from_json, iter_fields, load_recipe, parse_overrides,
                             parse_value, recipe_names)
from genforge.errors import GenforgeError
from genforge.models.gan import GANConfig
from genforge.models.vae import VAEConfig


# --- recipes -------------------------------------------------------------------------

def test_shipped_recipes_are_listed():
    assert {"mnist-vae", "mnist-dcgan"} <= set(recipe_names())


def test_vae_recipe_loads_its_family_and_values():
    cfg = load_recipe("mnist-vae")
    assert (cfg.recipe, cfg.family) == ("mnist-vae", "vae")
    assert isinstance(cfg.model, VAEConfig)
    assert (cfg.model.latent_dim, cfg.model.hidden) == (20, 500)
    assert (cfg.optim.lr, cfg.optim.beta1) == (1e-3, 0.9)
    assert (cfg.train.batch_size, cfg.data.dataset) == (200, "mnist-10k")
    assert cfg.description


def test_dcgan_recipe_loads_its_family_and_values():
    cfg = load_recipe("mnist-dcgan")
    assert cfg.family == "gan" and isinstance(cfg.model, GANConfig)
    assert (cfg.model.arch, cfg.model.width, cfg.optim.lr, cfg.optim.beta1) == ("dcgan", 32, 1e-3, 0.5)


def test_unknown_recipe_lists_known_ones():
    with pytest.raises(GenforgeError, match="unknown recipe 'nope'.*mnist-dcgan.*mnist-vae"):
        load_recipe("nope")


@pytest.mark.parametrize("name", ["../recipes/ring-8", "/tmp/evil", "recipes/ring-8", "ring-8/../ring-8", "", "." * 300])
def test_a_recipe_name_is_never_a_path(tmp_path, name):
    # the studio passes names from the browser: no TOML outside the shipped recipes may load
    (tmp_path / "evil.toml").write_text('family = "gan"\n')
    with pytest.raises(GenforgeError, match="unknown recipe") as refused:
        load_recipe(name)
    assert len(str(refused.value).split(";")[0]) < 110  # a long name is shortened in the message


def test_every_leaf_field_has_a_help_line():
    for recipe in recipe_names():
        fields = list(iter_fields(load_recipe(recipe)))
        keys = [key for key, _, _ in fields]
        assert "train.steps" in keys and "optim.lr" in keys and any(k.startswith("model.") for k in keys)
        assert all(help_line.strip() for _, _, help_line in fields)


# --- overrides -----------------------------------------------------------------------

def test_dotted_overrides_are_applied_and_typed():
    cfg = load_recipe("mnist-vae", ["optim.lr=1e-4", "train.batch_size=32", "model.latent_dim=2",
                                    "model.binarize=dynamic", "train.minutes=0.5", "data.image_size = 32"])
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.train.batch_size == 32 and isinstance(cfg.train.batch_size, int)
    assert (cfg.model.latent_dim, cfg.model.binarize, cfg.train.minutes, cfg.data.image_size) == (2, "dynamic", 0.5, 32)


def test_later_override_wins():
    assert load_recipe("mnist-vae", ["train.steps=5", "train.steps=7"]).train.steps == 7


def test_parse_overrides_nests_by_dots():
    assert parse_overrides(["a.b=1", "a.c= x ", "d=2"]) == {"a": {"b": "1", "c": "x"}, "d": "2"}


@pytest.mark.parametrize("item", ["noequals", "=3", "a..b=1", ".a=1", "a.=1"])
def test_malformed_override_is_an_error(item):
    with pytest.raises(GenforgeError, match="key=value"):
        parse_overrides([item])


def test_conflicting_overrides_are_an_error():
    with pytest.raises(GenforgeError, match="conflicts"):
        parse_overrides(["train=1", "train.steps=2"])
    with pytest.raises(GenforgeError, match="conflicts"):
        parse_overrides(["train.steps=2", "train=1"])


def test_unknown_key_lists_valid_keys():
    with pytest.raises(GenforgeError) as info:
        load_recipe("mnist-vae", ["train.stepz=3"])
    message = str(info.value)
    assert "train.stepz" in message
    assert "valid keys" in message and "train.steps" in message and "train.batch_size" in message


def test_unknown_section_lists_valid_keys():
    with pytest.raises(GenforgeError, match=r"unknown config key 'trian'.*valid keys: .*optim\.lr"):
        load_recipe("mnist-vae", ["trian.steps=3"])


def test_key_of_the_other_family_is_unknown():
    with pytest.raises(GenforgeError, match=r"model\.d_steps.*valid keys: .*model\.hidden"):
        load_recipe("mnist-vae", ["model.d_steps=8"])  # a GAN's key (model.width is the conv VAE's too)


def test_section_set_as_value_is_an_error():
    with pytest.raises(GenforgeError, match="is a section"):
        load_recipe("mnist-vae", ["train=3"])


@pytest.mark.parametrize("item, key", [("train.steps=abc", "train.steps"), ("train.steps=1.5", "train.steps"),
                                       ("optim.lr=fast", "optim.lr"), ("optim.lr=nan", "optim.lr"),
                                       ("optim.lr=inf", "optim.lr"), ("train.batch_size=true", "train.batch_size")])
def test_bad_value_names_the_key(item, key):
    with pytest.raises(GenforgeError) as info:
        load_recipe("mnist-vae", [item])
    assert f"'{key}'" in str(info.value)


@pytest.mark.parametrize("item", ["optim.name=adamm", "model.binarize=yes", "model.init=xavier"])
def test_choices_are_enforced(item):
    key, value = item.split("=")
    with pytest.raises(GenforgeError) as info:
        load_recipe("mnist-vae", [item])
    assert key in str(info.value) and "not one of" in str(info.value)


def test_gan_choices_are_enforced_and_accepted():
    with pytest.raises(GenforgeError, match="model.loss.*nonsaturating, minimax"):
        load_recipe("mnist-dcgan", ["model.loss=wgan"])
    assert load_recipe("mnist-dcgan", ["model.loss=wgan-gp"]).model.loss == "wgan-gp"
    cfg = load_recipe("mnist-dcgan", ["model.loss=minimax", "model.arch=livestream", "model.schedule=threshold"])
    assert (cfg.model.loss, cfg.model.arch, cfg.model.schedule) == ("minimax", "livestream", "threshold")


def test_recipe_without_family_is_an_error():
    with pytest.raises(GenforgeError, match="names no model family"):
        build_config({"recipe": "x"})


def test_unknown_family_is_an_error():
    with pytest.raises(GenforgeError, match="unknown model family 'flow'"):
        build_config({"recipe": "x", "family": "flow"})


# --- parse_value -----------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [("true", True), ("Yes", True), ("1", True), ("on", True),
                                         ("false", False), ("NO", False), ("0", False), ("off", False)])
def test_bool_spellings(text, value):
    assert parse_value("k", text, bool) is value


def test_int_accepts_integral_float_text_only():
    assert parse_value("k", "1e3", int) == 1000
    assert parse_value("k", " 42 ", int) == 42
    with pytest.raises(GenforgeError, match="'k'"):
        parse_value("k", "2.5", int)
    with pytest.raises(GenforgeError, match="'k'"):
        parse_value("k", True, int)


@settings(max_examples=300)
@given(st.integers())
def test_ints_round_trip(n):
    assert parse_value("k", str(n), int) == n
    assert parse_value("k", n, int) == n


@settings(max_examples=300)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_finite_floats_round_trip(x):
    assert parse_value("k", repr(x), float) == x
    assert parse_value("k", x, float) == x


@given(st.booleans())
def test_bools_round_trip(b):
    assert parse_value("k", str(b), bool) is b
    assert parse_value("k", str(b).upper(), bool) is b


@settings(max_examples=300)
@given(st.text(), st.sampled_from([int, float, bool, str]))
def test_random_text_parses_or_raises_genforge_error(text, kind):
    try:
        value = parse_value("some.key", text, kind)
    except GenforgeError as e:
        assert "'some.key'" in str(e)
    else:
        assert isinstance(value, kind)
        if kind is float:
            assert math.isfinite(value)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=4))
def test_random_overrides_never_raise_anything_else(items):
    try:
        load_recipe("mnist-vae", items)
    except GenforgeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["train.steps", "optim.lr", "model.binarize", "train", "model.x",
                                           "optim.name", "data.image_size", "train.steps.deep", "zz"]),
                          st.text(max_size=12)), max_size=4))
def test_random_values_for_real_keys_never_raise_anything_else(pairs):
    try:
        load_recipe("mnist-vae", [f"{key}={value}" for key, value in pairs])
    except GenforgeError:
        pass


# --- config.json round trip -----------------------------------------------------------

@pytest.mark.parametrize("recipe, overrides", [("mnist-vae", ["model.latent_dim=2", "optim.lr=3e-4"]),
                                               ("mnist-dcgan", ["model.loss=minimax", "train.ema_decay=0.999"])])
def test_config_json_round_trip(tmp_path, recipe, overrides):
    cfg = load_recipe(recipe, overrides)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    again = config_from_json(path)
    assert isinstance(again, RunConfig)
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()


def test_config_from_json_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(GenforgeError, match="missing.json: no such file"):
        config_from_json(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GenforgeError, match="bad.json: not valid JSON"):
        config_from_json(bad)
    listy = tmp_path / "list.json"
    listy.write_text("[1, 2]")
    with pytest.raises(GenforgeError, match="list.json: expected a JSON object"):
        config_from_json(listy)
