"""Studio fixtures: a runs folder holding tiny finished runs, and test clients of the studio app.

The runs train in-process in a second or two (tests.conftest's tiny configs); a client speaks to the
app as a browser on the studio's own loopback address would (Host 127.0.0.1:8765).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the studio tests need the web extra: pip install -e '.[web]'")
pytest.importorskip("httpx", reason="the studio tests need the web extra: pip install -e '.[web]'")

from fastapi.testclient import TestClient  # noqa: E402

from tests.conftest import SHARED_DATASETS, tiny_overrides  # noqa: E402

BASE = "http://127.0.0.1:8765"
TOY = ["train.threads=1", "train.device=cpu", "train.log_every=5", "train.sample_every=10",
       "train.checkpoint_every=1000", "model.hidden=16", "model.layers=1", "train.batch_size=32"]


def train_tiny(run_dir: Path, recipe: str, overrides: list[str], steps: int, data_root: Path | None = None) -> Path:
    import genforge.models  # noqa: F401  (registers the families for check_config)
    from genforge import api

    api.train_run(api.check_config(recipe, [*overrides, f"train.steps={steps}"]), run_dir, progress=False,
                  data_root=str(data_root) if data_root else None)
    return run_dir


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> Path:
    """A runs folder with finished tiny runs: dcgan (samples every 2 steps), vae (2-D latent), ring (toy points),
    cgan (a conditional DCGAN)."""
    root = tmp_path_factory.mktemp("studio-runs")
    train_tiny(root / "dcgan", "mnist-dcgan", tiny_overrides("mnist-dcgan", "train.sample_every=2"), steps=6)
    train_tiny(root / "vae", "mnist-vae", tiny_overrides("mnist-vae", "model.latent_dim=2"), steps=4)
    train_tiny(root / "toys" / "ring", "ring-8", TOY, steps=20)
    cgan = [*tiny_overrides("mnist-dcgan"), "model.conditional=projection"]
    train_tiny(root / "cgan", "mnist-cgan", cgan, steps=2)
    return root


@pytest.fixture
def runs(trained_runs, tmp_path):
    """A private copy of the trained runs folder (tests may add, break or link runs in it)."""
    root = tmp_path / "runs"
    shutil.copytree(trained_runs, root, symlinks=True)
    yield root
    stop_trainings(root)


def stop_trainings(root: Path) -> None:
    """Stops every training still running under ``root`` (a test that failed midway leaves none behind)."""
    import time

    from genforge import api

    for summary in api.list_runs(root):
        if summary.status == "training" and api.stop_training(summary.path):
            for _ in range(300):
                if api.open_run(summary.path).status() != "training":
                    break
                time.sleep(0.1)


def make_client(root: Path, **options) -> TestClient:
    from genforge.web.server import create_app

    return TestClient(create_app(root, **options), base_url=BASE)


@pytest.fixture
def client(runs) -> TestClient:
    with make_client(runs) as c:
        yield c


@pytest.fixture(scope="session")
def discogan_run(tmp_path_factory) -> Path:
    """A 2-step tiny DiscoGAN (Fashion-MNIST bags <-> shoes), from the shared datasets."""
    if not (SHARED_DATASETS / "fashion-mnist").is_dir():
        pytest.skip(f"needs Fashion-MNIST under {SHARED_DATASETS}")
    root = tmp_path_factory.mktemp("studio-disco")
    overrides = ["model.width=4", "train.batch_size=8", "train.threads=1", "train.device=cpu", "train.log_every=2",
                 "train.sample_every=1000", "train.checkpoint_every=1000"]
    return train_tiny(root / "disco", "fashion-discogan", overrides, steps=2, data_root=SHARED_DATASETS)
