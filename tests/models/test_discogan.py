"""DiscoGAN: shapes, shared weights, updates, the variants, and 2-step runs (their metrics: tests/metrics)."""

from __future__ import annotations

import json

import pytest
import torch

from genforge.config import load_recipe
from genforge.data.datasets import load_images
from genforge.models import build_model
from genforge.models.base import Batch
from genforge.train import make_optimizer, train

from ..conftest import SHARED_DATASETS, activation_grad_layouts, step_phases

FAST = ["train.threads=1", "train.device=cpu", "train.batch_size=16", "train.log_every=1",
        "train.sample_every=1000", "train.checkpoint_every=1000", "train.steps=2"]
TINY = {"gmm-discogan": ["model.hidden=16", *FAST], "gmm-discogan-ring": ["model.hidden=16", *FAST],
        "fashion-discogan": ["model.width=4", *FAST]}
HAS_FASHION = (SHARED_DATASETS / "fashion-mnist").is_dir()


def _model(recipe="gmm-discogan", *extra, shape=(2,)):
    cfg = load_recipe(recipe, [*TINY[recipe], *extra])
    torch.manual_seed(0)
    model = build_model(cfg, shape, 5)
    optimizers = {name: make_optimizer(cfg.optim, params) for name, params in model.optimizer_groups().items()}
    return model, optimizers


def _toy_batch(n=16) -> Batch:
    data = load_images("gmm-discogan", "train")
    return Batch(data.images[:n], data.labels[:n], data.images_b[:n], data.labels_b[:n])


def test_shapes_points_and_images():
    model, _ = _model()
    a = torch.randn(8, 2)
    fake, recon = model.translate(a, "a2b")
    assert fake.shape == recon.shape == (8, 2)
    conv, _ = _model("fashion-discogan", shape=(1, 32, 32))
    images = torch.rand(4, 1, 32, 32) * 2 - 1
    fake, recon = conv.translate(images, "b2a")
    assert fake.shape == recon.shape == (4, 1, 32, 32) and fake.abs().max() <= 1
    logit, feats = conv.D_A.features(images)
    assert logit.shape == (4,) and len(feats) == 3


def test_channels_last_translator_step_keeps_activation_gradients_in_their_layout():
    model, _ = _model("fashion-discogan", shape=(1, 32, 32))  # feature matching 0.9, as the official code
    model = model.to(memory_format=torch.channels_last)
    images = (torch.rand(4, 1, 32, 32) * 2 - 1).contiguous(memory_format=torch.channels_last)
    labels = torch.zeros(4, dtype=torch.long)
    g_phase = [phase for phase in model.phases() if phase.optimizer == "generator"][0]
    matched = activation_grad_layouts(g_phase.step(Batch(images, labels, images.clone(), labels))["loss"])
    assert len(matched.get("LeakyReluBackward1", [])) == 24  # 2 directions x (encoder of G, critic, encoder of the G back)
    # the feature-matching terms' gradients meet the critic's own in one layout
    assert all(all(flags) for flags in matched.values()), matched


def test_conv_needs_size_divisible_by_16():
    with pytest.raises(Exception, match="divisible by 16"):
        _model("fashion-discogan", shape=(1, 28, 28))


def test_reconstruction_reuses_the_same_modules():
    model, _ = _model()
    forward, backward = model.translators("a2b")
    assert forward is model.G_AB and backward is model.G_BA
    assert model.translators("b2a") == (model.G_BA, model.G_AB)
    a = torch.randn(8, 2)
    fake, recon = model.translate(a, "a2b")
    with torch.no_grad():
        model.G_AB.out.bias += 1.0  # a change in G_AB alone moves A -> B and A -> B -> A
    fake2, recon2 = model.translate(a, "a2b")
    assert not torch.allclose(fake, fake2) and not torch.allclose(recon, recon2)
    assert len(model.state_dict()) == len({k for k in model.state_dict()})  # no duplicated "reconstruction" nets
    names = {k.split(".")[0] for k in model.state_dict()}
    assert names == {"G_AB", "G_BA", "D_A", "D_B", "iteration"}


def test_train_step_changes_every_weight_and_counts_iterations():
    model, optimizers = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step_phases(model, optimizers, _toy_batch())
    after = model.state_dict()
    assert {k for k in before if not torch.equal(before[k], after[k])} == set(before)
    assert int(model.iteration) == 1


def test_recongan_leaves_d_a_alone_and_gan_has_no_reconstruction():
    model, optimizers = _model("gmm-discogan", "model.variant=recongan")
    d_a = {k: v.clone() for k, v in model.D_A.state_dict().items()}
    step_phases(model, optimizers, _toy_batch())
    assert all(torch.equal(v, model.D_A.state_dict()[k]) for k, v in d_a.items())
    assert set(model.g_terms(_toy_batch())) == {"loss", "gan_a2b", "recon_a"}
    gan, _ = _model("gmm-discogan", "model.variant=gan")
    assert set(gan.g_terms(_toy_batch())) == {"loss", "gan_a2b", "gan_b2a"}


def test_curriculum_and_cyclegan_losses():
    model, _ = _model("gmm-discogan", "model.curriculum_steps=3", "model.recon_weight_start=0.01",
                      "model.recon_weight=0.5")
    assert float(model.recon_weight()) == pytest.approx(0.01)
    model.iteration.fill_(3)
    assert float(model.recon_weight()) == pytest.approx(0.5)
    cycle, optimizers = _model("gmm-discogan", "model.cyclegan=true", "model.feature_matching=0.5")
    terms = cycle.g_terms(_toy_batch())
    assert {"fm_a2b", "fm_b2a", "recon_a", "recon_b"} <= set(terms)
    step_phases(cycle, optimizers, _toy_batch())


@pytest.mark.parametrize("recipe", ["gmm-discogan", "gmm-discogan-ring"])
def test_two_step_toy_run_writes_plots_and_metrics(recipe, tmp_path):
    result = train(load_recipe(recipe, TINY[recipe]), tmp_path, progress=False)
    assert result.step == 2
    for key in ("eval/a2b_distinct_modes", "eval/a2b_high_quality", "eval/a2b_modes_covered", "eval/recon_a"):
        assert key in result.metrics
    assert (tmp_path / "plots" / "translations.png").is_file() and (tmp_path / "plots" / "curves.png").is_file()
    assert json.loads((tmp_path / "translation_metrics.json").read_text())["a2b_target_modes"] in (2, 10)
    assert (tmp_path / "samples" / "final.png").is_file()


def test_two_domain_resume_is_bit_identical(tmp_path):
    straight = train(load_recipe("gmm-discogan", [*TINY["gmm-discogan"], "train.steps=4"]), tmp_path / "a",
                     progress=False)
    train(load_recipe("gmm-discogan", [*TINY["gmm-discogan"], "train.steps=2"]), tmp_path / "b", progress=False)
    from genforge.api import resume_config

    resumed = train(resume_config(tmp_path / "b", steps=4), tmp_path / "b", resume=True, progress=False)
    assert straight.step == resumed.step == 4
    state = json.loads((tmp_path / "b" / "checkpoints" / "latest" / "state.json").read_text())
    assert state["data_order_b"]["position"] > 0
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "checkpoints" / "latest" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "latest" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST not in ../shared/datasets")
def test_two_step_fashion_run(tmp_path):
    cfg = load_recipe("fashion-discogan", [*TINY["fashion-discogan"], f"data.root={SHARED_DATASETS}"])
    result = train(cfg, tmp_path, progress=False)
    for key in ("eval/a2b_domain_acc", "eval/b2a_domain_acc", "eval/a2b_diversity_ratio", "eval/recon_a",
                "eval/a2b_fashion_classifier_acc", "eval/b2a_feature_fid", "eval/a2b_feature_diversity_ratio"):
        assert key in result.metrics
    assert result.metrics["eval/classifier_real_acc"] > 0.95
    assert (tmp_path / "plots" / "translations_a2b.png").is_file()


# --- the livestream's softplus-difference D loss; DiscoGAN on two folders -------------------

def test_softplus_difference_trains_d_and_is_refused_beside_cyclegan():
    from genforge import losses
    from genforge.config import validate
    from genforge.errors import GenforgeError

    model, optimizers = _model("gmm-discogan", "model.gan_loss=softplus_difference")
    batch = _toy_batch()
    before = [p.clone() for p in model.D_B.parameters()]
    with torch.no_grad():
        expected = (torch.nn.functional.softplus(model.D_B(model.G_AB(batch.images))).mean()
                    - torch.nn.functional.softplus(model.D_B(batch.images_b)).mean())
        assert model.d_terms(batch)["d_a2b"].item() == pytest.approx(expected.item(), rel=1e-5)
    step_phases(model, optimizers, batch)
    assert any(not torch.equal(b, a) for b, a in zip(before, model.D_B.parameters()))
    # no lower bound: confident real logits push it down without end (BCE stays above 0)
    real, fake = torch.full((4,), 50.0), torch.zeros(4)
    assert losses.d_softplus_difference(real, fake).item() < -49 < 0 < losses.d_bce(real, fake).item()
    cfg = load_recipe("gmm-discogan", ["model.gan_loss=softplus_difference", "model.cyclegan=true"])
    with pytest.raises(GenforgeError, match="model.gan_loss=softplus_difference does not combine") as caught:
        validate(cfg)
    assert "\n" not in str(caught.value)


def test_pokemon_art2sprite_trains_two_steps_on_two_folders_and_translates(tmp_path, private_cache):
    from genforge import api
    from genforge.translate import translate_test

    from ..conftest import synthetic_folder

    a, b = synthetic_folder(tmp_path / "art", count=10), synthetic_folder(tmp_path / "sprites", count=6, seed=3)
    cfg = load_recipe("pokemon-art2sprite", [f"data.path={a}", f"data.path_b={b}", "data.image_size=32",
                                             "model.width=4", *FAST, "train.batch_size=4"])
    assert cfg.data.background == "white" and cfg.model.feature_matching == 0.9
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.step == 2
    metrics = json.loads((tmp_path / "run" / "translation_metrics.json").read_text())
    assert {"a2b_pixel_fid", "b2a_pixel_fid_untranslated", "recon_a", "recon_b", "a2b_diversity"} <= set(metrics)
    translated = translate_test(api.load(tmp_path / "run"), 3, "b2a", tmp_path / "out")
    assert len(list((tmp_path / "out").glob("test-*_b2a.png"))) == 3 and translated is not None
