"""`genforge eval RUN --json` on a short run of every built-in recipe: each kind of data gets its
family's metrics, eval.json says why the others did not run, and small data is flagged."""

from __future__ import annotations

import json

import pytest

from genforge.bench import final_figures
from genforge.cli import main
from genforge.config import build_config, recipe_names

from ..conftest import SHARED_DATASETS, synthetic_folder

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

COMMON = ["train.steps=2", "train.batch_size=8", "train.threads=1", "train.device=cpu", "train.log_every=1",
          "train.sample_every=100", "train.checkpoint_every=100", "train.eval_samples=2"]
TOY = ["model.hidden=16"]
DCGAN = ["model.width=4", "model.latent_dim=8"]
FOLDER = "<folder>"  # replaced by a synthetic image folder
FOLDERS = "<folders>"  # replaced by two synthetic image folders (data.path=A data.path_b=B)
# recipe -> (tiny overrides, figures its eval must hold, data kind)
CASES = {
    "ring-8": (TOY, {"modes", "hq", "reverse_kl"}, "points"),
    "grid-25": (TOY, {"modes", "hq", "reverse_kl"}, "points"),
    "duck-cow-1d": (TOY, {"modes", "hq", "reverse_kl"}, "points"),
    "duck-cow-2d": (TOY, {"modes", "hq", "reverse_kl"}, "points"),
    "pokemon-art2sprite": (["model.width=4", FOLDERS], {"a2b_pixel_fid", "b2a_pixel_fid", "a2b_pixel_fid_untranslated",
                                                        "recon_a", "recon_b", "a2b_diversity", "b2a_diversity"},
                           "two-domain-images"),
    "mnist-dcgan-livestream": (["model.latent_dim=8"], {"fid", "kid", "precision", "recall"}, "named-images"),
    "gmm-discogan": (TOY, {"a2b_modes_covered", "b2a_distinct_modes", "recon_a", "recon_b"}, "two-domain-points"),
    "gmm-discogan-ring": (TOY, {"a2b_mapping_purity", "b2a_high_quality", "recon_b"}, "two-domain-points"),
    "fashion-discogan": (["model.width=4"], {"a2b_domain_acc", "a2b_fashion_classifier_acc", "b2a_feature_fid",
                                            "recon_a"}, "two-domain-images"),
    "mnist-dcgan": (DCGAN, {"fid", "kid", "kid_std", "precision", "recall", "classes_covered"}, "named-images"),
    "mnist-cgan": (DCGAN, {"fid", "kid", "class_accuracy"}, "named-images"),
    "fashion-cgan": (DCGAN, {"fid", "kid", "class_accuracy"}, "named-images"),
    "mnist-vae": (["model.hidden=16", "model.latent_dim=2"], {"fid", "kid", "test_neg_elbo", "test_nll"},
                  "named-images"),
    "pokemon-dcgan": ([*DCGAN, FOLDER], {"pixel_fid", "pixel_kid", "pixel_kid_std", "near_copies"}, "image-folder"),
    "pokemon-wgan": ([*DCGAN, FOLDER], {"pixel_fid", "pixel_kid", "colour_mean_diff"}, "image-folder"),
    "pokemon-wgan-gp": ([*DCGAN, FOLDER], {"pixel_fid", "pixel_kid", "nn_ratio"}, "image-folder"),
    "pokemon-vae": (["model.width=4", "model.latent_dim=8", FOLDER], {"test_bits_per_dim", "test_nll_bits_per_dim",
                                                                       "pixel_fid", "pixel_kid"}, "image-folder"),
}


def test_every_listed_recipe_has_a_case():
    assert set(recipe_names()) == set(CASES)


@pytest.fixture(scope="module")
def eval_env(tmp_path_factory):
    """A private feature cache for the module (the Fashion-MNIST references are computed once) and
    the shared datasets as the data root."""
    patch = pytest.MonkeyPatch()
    patch.setenv("GENFORGE_CACHE", str(tmp_path_factory.mktemp("eval-cache")))
    patch.setattr("genforge.metrics.evaluate.KID_SUBSETS", 5)
    if (SHARED_DATASETS / "fashion-mnist").is_dir():
        patch.setenv("GENFORGE_DATA", str(SHARED_DATASETS))
    yield
    patch.undo()


@pytest.mark.parametrize("recipe", sorted(CASES))
def test_eval_runs_on_a_short_run_of_the_recipe(recipe, tmp_path, eval_env, capsys):
    overrides, figures, kind = CASES[recipe]
    if "fashion" in recipe and not (SHARED_DATASETS / "fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST is not in ../shared/datasets")
    folder = f"data.path={synthetic_folder(tmp_path / 'images', count=20)}"
    overrides = [folder if item == FOLDER else item for item in overrides]
    if FOLDERS in overrides:  # two folders of different pictures: the domains of a translator
        overrides = [item for item in overrides if item != FOLDERS] + [
            f"data.path={synthetic_folder(tmp_path / 'a', count=12)}",
            f"data.path_b={synthetic_folder(tmp_path / 'b', count=10, seed=1)}"]
    size = ["data.image_size=32"] if {FOLDER, FOLDERS} & set(CASES[recipe][0]) else []
    run = tmp_path / "run"
    assert main(["train", recipe, "--run-dir", str(run), *COMMON, *size, *overrides]) == 0
    capsys.readouterr()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    given = {key.removeprefix("eval/") for key in rows[-1] if key.startswith("eval/")}  # training's end
    promised = final_figures(build_config(json.loads((run / "config.json").read_text())))
    assert given <= set(promised), sorted(given - set(promised))  # what --seeds --metric checks up front
    assert main(["eval", str(run), "--json", "--n", "40", "--nll-samples", "2", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads((run / "eval.json").read_text())
    assert figures <= set(result), sorted(figures - set(result))
    assert result["data_kind"] == kind and result["step"] == 2 and result["metrics_available"]
    assert all(isinstance(why, str) and why for why in result["metrics_unavailable"].values())
    assert all(figure in result["units"] for figure in figures if not figure.startswith(("a2b_", "b2a_", "recon_")))
    if kind == "image-folder":  # 20 training images: FID is biased at that size, and eval.json says so
        assert result["trust"] == "pixel_kid" and "biased" in result["notes"][0]
