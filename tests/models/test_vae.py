"""The VAE: shapes, the two loss terms against hand computations, noise per example, NLL."""

from __future__ import annotations

import math

import pytest
import torch

from genforge.data.datasets import load_images
from genforge.metrics.evaluate import final_metrics, write_report
from genforge.models.base import Context
from genforge.models.vae import VAE, VAEConfig, bernoulli_nll, gaussian_kl


def _vae(latent_dim: int = 4, hidden: int = 32, **kwargs) -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(latent_dim=latent_dim, hidden=hidden, **kwargs), (1, 28, 28), 10)


def _digits(n: int = 16, split: str = "test") -> torch.Tensor:
    return load_images("mnist-10k", split).images[:n]


def test_shapes():
    model = _vae()
    x = model.prepare(_digits(8))
    assert x.shape == (8, 1, 28, 28) and set(x.unique().tolist()) <= {0.0, 1.0}
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (8, 4)
    assert model.decode_logits(mu).shape == (8, 1, 28, 28)
    images = model.generate(model.sample_noise(5))
    assert images.shape == (5, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert model.sample(3, torch.Generator().manual_seed(0)).shape == (3, 1, 28, 28)


def test_sampling_with_the_same_seed_repeats():
    model = _vae()
    a = model.sample(4, torch.Generator().manual_seed(7))
    b = model.sample(4, torch.Generator().manual_seed(7))
    c = model.sample(4, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_loss_terms_are_finite_and_add_up():
    model = _vae()
    terms = model.loss_terms(model.prepare(_digits()))
    assert set(terms) == {"loss", "recon", "kl"}
    assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    assert terms["recon"] > 0 and terms["kl"] >= 0
    assert torch.allclose(terms["loss"], terms["recon"] + terms["kl"])


def test_loss_stays_finite_for_extreme_logits():
    logits = torch.tensor([[[[200.0, -200.0]]]])
    target = torch.tensor([[[[0.0, 1.0]]]])
    assert torch.allclose(bernoulli_nll(logits, target), torch.tensor([400.0]))


def test_gaussian_kl_is_zero_for_the_prior_and_matches_closed_form():
    assert torch.equal(gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)), torch.zeros(3))
    mu, logvar = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, -1.0]])
    expected = sum(0.5 * (math.exp(lv) + m * m - 1 - lv) for m, lv in ((1.0, 0.5), (-2.0, -1.0)))
    assert gaussian_kl(mu, logvar).item() == pytest.approx(expected, rel=1e-6)
    assert (gaussian_kl(torch.randn(100, 4), torch.randn(100, 4)) >= 0).all()


def test_bernoulli_nll_equals_a_hand_computation():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]], [[[1.5, -0.5], [0.25, -4.0]]]])  # (2, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]], [[[0.0, 0.0], [1.0, 0.0]]]])
    expected = []
    for lo, ta in zip(logits.flatten(1).tolist(), target.flatten(1).tolist()):
        total = 0.0
        for logit, t in zip(lo, ta):
            p = 1 / (1 + math.exp(-logit))
            total -= t * math.log(p) + (1 - t) * math.log(1 - p)
        expected.append(total)
    result = bernoulli_nll(logits, target)
    assert result.shape == (2,)
    assert result.tolist() == pytest.approx(expected, rel=1e-6)


def test_noise_is_drawn_per_example(monkeypatch):
    """Two identical images in one batch get the same mu but different z."""
    model = _vae()
    seen = {}
    decode = model.decode_logits

    def spy(z):
        seen["z"] = z.detach().clone()
        return decode(z)

    monkeypatch.setattr(model, "decode_logits", spy)
    x = model.prepare(_digits(1)).repeat(2, 1, 1, 1)
    model.loss_terms(x)
    mu, _ = model.encode(x)
    assert torch.equal(mu[0], mu[1])
    assert not torch.allclose(seen["z"][0], seen["z"][1])


def test_prepare_binarizes_round_or_dynamic():
    images = torch.tensor([[[[0, 100, 128, 255]]]], dtype=torch.uint8)
    assert _prepare("round", images).tolist() == [[[[0.0, 0.0, 1.0, 1.0]]]]
    torch.manual_seed(0)
    dynamic = _vae(binarize="dynamic")
    draws = torch.stack([dynamic.prepare(images.repeat(500, 1, 1, 1)) for _ in range(2)]).flatten(0, 1)
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    means = draws.mean(0).flatten().tolist()
    assert means[0] == 0.0 and means[3] == 1.0 and 0.3 < means[1] < 0.5  # 100/255 ~ 0.39
    dynamic.eval()  # evaluation is deterministic
    assert dynamic.prepare(images).tolist() == [[[[0.0, 0.0, 1.0, 1.0]]]]


def _prepare(binarize, images):
    return _vae(binarize=binarize).prepare(images)


def test_trunc_normal_init():
    model = _vae(hidden=64, init="trunc_normal")
    weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.Linear)])
    assert weights.abs().max() <= 0.2 and 0.07 < weights.std() < 0.1
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in model.modules() if isinstance(m, torch.nn.Linear))


def _off_prior_vae() -> VAE:
    """A VAE whose posterior is far from the prior (mu ~ 2, logvar ~ -1): a KL of ~9 nats."""
    model = _vae().eval()
    with torch.no_grad():
        model.encoder[-1].bias.copy_(torch.tensor([2.0] * 4 + [-1.0] * 4))
    return model


def test_importance_nll_with_k_1_is_the_elbo_in_expectation():
    model = _off_prior_vae()
    x = model.prepare(_digits(100))
    torch.manual_seed(1)
    nll_1 = sum(model.importance_nll(x, k=1) for _ in range(20)) / 20
    elbo = sum(model.test_elbo(x)["loss"] for _ in range(20)) / 20
    assert model.test_elbo(x)["kl"] > 5
    assert nll_1 == pytest.approx(elbo, abs=1.0)


def test_importance_nll_with_more_samples_is_at_most_the_elbo():
    model = _off_prior_vae()
    x = model.prepare(_digits(50))
    torch.manual_seed(2)
    elbo = sum(model.test_elbo(x)["loss"] for _ in range(10)) / 10
    nll_50 = model.importance_nll(x, k=50)
    nll_500 = model.importance_nll(x, k=500, chunk=3000)  # several chunks per image
    assert 0 < nll_500 < nll_50 < elbo - 2  # tighter with more samples (Burda et al.)


def test_evaluate_returns_the_named_metrics(tmp_path):
    model = _vae().eval()
    test = load_images("mnist-10k", "test")
    ctx = Context(tmp_path, load_images("mnist-10k", "train"), test, torch.device("cpu"), 3, progress=False)
    metrics = final_metrics(model, ctx)
    assert set(metrics) == {"test_neg_elbo", "test_recon", "test_kl", "test_nll", "nll_importance_samples"}
    assert metrics["nll_importance_samples"] == 3.0
    assert metrics["test_neg_elbo"] == pytest.approx(metrics["test_recon"] + metrics["test_kl"], rel=1e-4)
    assert all(math.isfinite(v) for v in metrics.values())


def test_report_with_2d_latent_draws_the_manifold(tmp_path):
    model = _vae(latent_dim=2).eval()
    ctx = Context(tmp_path, None, load_images("mnist-10k", "test"), torch.device("cpu"), 1, progress=False)
    paths = write_report(model, ctx)
    names = {p.name for p in paths}
    assert {"reconstructions.png", "prior_samples.png", "latent_scatter.png", "manifold.png"} <= names
    assert all(p.is_file() for p in paths)
