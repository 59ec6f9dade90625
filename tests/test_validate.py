"""One validate(): every range and cross-field check of a run's config, one line naming the key,
the value and what is allowed, before anything is written."""

from __future__ import annotations

import dataclasses

import pytest

from genforge.config import RANGES, allows, load_recipe, recipe_names, validate
from genforge.errors import GenforgeError
from genforge.models import FAMILIES


def _outside(rule: str, kind: type) -> list:
    """Values just outside ``rule`` (an interval "[0, 1)" or a bound ">= 1") of a field of type ``kind``."""
    step = 1 if kind is int else 0.5
    if rule[0] in "[(":
        low, high = (kind(float(part)) for part in rule[1:-1].split(","))
        return [low - step if rule[0] == "[" else low, high + step if rule[-1] == "]" else high]
    bound = kind(float(rule.lstrip("<>=")))
    return [bound - step if rule.startswith(">=") else bound]


def _field_kind(section, name: str) -> type:
    return type(getattr(section, name))


def _range_cases():
    for key, rule in RANGES.items():
        yield "mnist-dcgan", key, rule
    for recipe in ("mnist-dcgan", "mnist-vae", "gmm-discogan"):
        family = FAMILIES[load_recipe(recipe).family]
        for name, rule in family.RANGES.items():
            yield recipe, f"model.{name}", rule


@pytest.mark.parametrize("recipe, key, rule", list(_range_cases()))
def test_every_range_refuses_the_values_just_outside_it(recipe, key, rule):
    section, name = key.split(".")
    kind = _field_kind(getattr(load_recipe(recipe), section), name)
    for value in _outside(rule, kind):
        cfg = load_recipe(recipe, [f"{key}={value}"])
        with pytest.raises(GenforgeError) as refused:
            validate(cfg)
        message = str(refused.value)
        assert message.startswith(f"{key}={getattr(cfg, section).__dict__[name]}") and rule in message, message


@pytest.mark.parametrize("override, key", [
    ("optim.lr=-1", "optim.lr"), ("optim.beta1=2", "optim.beta1"), ("data.image_size=7", "data.image_size"),
    ("data.image_size=0", "data.image_size"), ("data.image_size=100000", "data.image_size"),
    ("model.latent_dim=-1", "model.latent_dim"), ("model.latent_dim=0", "model.latent_dim"),
    ("train.checkpoint_every=0", "train.checkpoint_every"), ("train.log_every=0", "train.log_every"),
    ("train.sample_every=0", "train.sample_every"), ("train.batch_size=0", "train.batch_size"),
    ("train.batch_size=-1", "train.batch_size"), ("train.steps=-5", "train.steps"),
    ("train.threads=-3", "train.threads"), ("model.d_steps=0", "model.d_steps"),
    ("train.ema_decay=1.5", "train.ema_decay"), ("model.top_k=5", "model.top_k"),
    ("train.device=gpu", "train.device"), ("data.channels=2", "data.channels")])
def test_the_hardening_issues_accepted_nonsense_is_refused_in_one_line(override, key):
    with pytest.raises(GenforgeError, match=key.replace(".", r"\.")) as refused:
        validate(load_recipe("mnist-dcgan", [override]))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_shipped_recipe_is_valid(recipe):
    assert validate(load_recipe(recipe)).recipe == recipe


@pytest.mark.parametrize("recipe", ["mnist-dcgan", "mnist-vae"])
@pytest.mark.parametrize("overrides,key", [(["data.dataset=folder:/data/a", "data.path_b=/data/b"], "data.path_b"),
                                           (["data.dataset=folders", "data.path=/a", "data.path_b=/b"], "data.path_b"),
                                           (["data.dataset=folders", "data.path=/a"], "data.dataset=folders")])
def test_a_second_domain_is_refused_where_the_family_would_ignore_it(recipe, overrides, key):
    with pytest.raises(GenforgeError, match=f"^{key} is a second domain, for a translator") as refused:
        validate(load_recipe(recipe, overrides))
    assert "\n" not in str(refused.value)
    validate(load_recipe("fashion-discogan", ["data.dataset=folders", "data.path=/a", "data.path_b=/b"]))


def test_a_named_two_domain_set_is_refused_where_the_family_would_ignore_domain_b():
    cfg = load_recipe("mnist-dcgan", ["data.dataset=fashion-bags-shoes"])
    validate(cfg)  # the name alone: whether the set has a domain B is known once it is loaded
    with pytest.raises(GenforgeError, match="^data.dataset=fashion-bags-shoes has two domains") as refused:
        validate(cfg, (1, 28, 28), 1, two_domain_data=True)
    assert "\n" not in str(refused.value) and "gan family" in str(refused.value)
    validate(cfg, (1, 28, 28), 10)  # one domain: fine
    validate(load_recipe("fashion-discogan"), (1, 64, 64), 1, two_domain_data=True)  # a translator wants it


def test_the_budget_and_schedule_rules():
    with pytest.raises(GenforgeError, match="no budget"):
        validate(load_recipe("mnist-vae", ["train.steps=0", "train.minutes=0"]))
    validate(load_recipe("mnist-vae", ["train.steps=0", "train.minutes=1"]))  # the clock alone is a budget
    with pytest.raises(GenforgeError, match="optim.schedule=cosine decays the learning rate by train.steps"):
        validate(load_recipe("mnist-vae", ["train.steps=0", "train.minutes=1", "optim.schedule=cosine"]))


def test_checks_that_need_the_data_run_once_its_shape_is_known():
    cfg = load_recipe("mnist-dcgan", ["data.image_size=30"])
    validate(cfg)  # the size alone is in range; whether the networks reach it depends on the data
    with pytest.raises(GenforgeError, match="data.image_size=30: the dcgan networks"):
        validate(cfg, (1, 30, 30), 10)
    with pytest.raises(GenforgeError, match="arch=mlp is for toy points"):
        validate(load_recipe("ring-8"), (1, 28, 28), 0)
    with pytest.raises(GenforgeError, match="conditional GAN needs labelled data"):
        validate(load_recipe("mnist-cgan"), (1, 28, 28), 1)
    with pytest.raises(GenforgeError, match="conv DiscoGAN needs an image size divisible by 16"):
        validate(load_recipe("fashion-discogan", ["data.image_size=28"]), (1, 28, 28), 2)


def test_cross_section_family_checks():
    with pytest.raises(GenforgeError, match="batch_size to a multiple of 4"):
        validate(load_recipe("grid-25", ["model.pack=4", "train.batch_size=30"]))
    with pytest.raises(GenforgeError, match="model.reject reads D's logit"):
        validate(load_recipe("mnist-dcgan", ["model.loss=wgan-gp", "model.reject=0.9"]))
    with pytest.raises(GenforgeError, match="schedule=threshold gates on BCE losses"):
        validate(load_recipe("mnist-dcgan", ["model.schedule=threshold", "model.loss=hinge"]))


def test_validate_leaves_the_config_as_it_was():
    cfg = load_recipe("grid-25")
    before = dataclasses.asdict(cfg)
    assert validate(cfg, (2,), 25) is cfg and dataclasses.asdict(cfg) == before


@pytest.mark.parametrize("rule, inside, outside", [("[0, 1)", [0, 0.5], [1, -0.1]), ("(0, 1]", [1, 0.1], [0, 2]),
                                                   (">= 1", [1, 9], [0.5]), ("> 0", [1e-9], [0, -1])])
def test_range_rules(rule, inside, outside):
    assert all(allows(rule, v) for v in inside) and not any(allows(rule, v) for v in outside)


def test_recipes_load_in_a_fresh_process_that_never_imported_the_models():
    import subprocess
    import sys

    code = ("import sys; from genforge.config import load_recipe, validate; "
            "validate(load_recipe('mnist-dcgan')); print('genforge.models' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr  # the registry loaded them
