"""Explore a trained model: samples by seed (per class, with rejection), interpolation, arithmetic,
a VAE's latent map and reconstructions, DiscoGAN round trips, nearest training images, evaluation.

Each route loads the model through the studio's cache and calls ``genforge.api`` in a worker thread
(``Workers``), so a slow model never stalls the event loop; pictures come back as PNG data URLs.
A sample is named by (seed, n, index): ``api.noise(loaded, n, seed)[index]`` is its noise again.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Query, Request
from pydantic import Field

from genforge import api
from genforge.web.common import Body, data_url, run_dir, studio
from genforge.web.safety import Refused, read_capped

router = APIRouter(prefix="/api/explore")
MAX_SAMPLES = 256


class SampleRequest(Body):
    run: str
    seed: int = Field(0, ge=api.SEED_RANGE[0], le=api.SEED_RANGE[1])
    n: int = Field(16, ge=1, le=MAX_SAMPLES)
    label: int | None = Field(None, ge=0)
    reject: float | None = Field(None, ge=0, lt=1)
    by_class: bool = False


class SampleRef(Body):
    seed: int = Field(..., ge=api.SEED_RANGE[0], le=api.SEED_RANGE[1])
    n: int = Field(..., ge=1, le=MAX_SAMPLES)
    index: int = Field(..., ge=0)
    label: int | None = Field(None, ge=0)  # a conditional run's class of that grid


class InterpolateRequest(Body):
    run: str
    a: SampleRef
    b: SampleRef
    steps: int = Field(10, ge=2, le=32)
    spherical: bool = False


class ArithmeticRequest(Body):
    run: str
    a: list[SampleRef] = Field(..., min_length=1, max_length=16)
    b: list[SampleRef] = Field(..., min_length=1, max_length=16)
    c: list[SampleRef] = Field(..., min_length=1, max_length=16)


class LatentRequest(Body):
    run: str
    z: list[list[float]] = Field(..., min_length=1, max_length=MAX_SAMPLES)


def pictures(images) -> list[str]:
    """Each image of an (N, C, H, W) batch as its own PNG data URL."""
    return [data_url(api.png_bytes(images[i:i + 1], nrow=1)) for i in range(len(images))]


def _output(loaded, result, data_root: str | None = None) -> dict:
    """Images as one data URL each; points as one scatter picture over the training data."""
    if loaded.capabilities.data == "points":
        scatter = api.png_bytes(api.picture(loaded, result, data_root=data_root), scale=1)
        return {"kind": "points", "images": [data_url(scatter)]}
    return {"kind": "images", "images": pictures(result)}


def _noise_of(loaded, ref: SampleRef):
    if ref.index >= ref.n:
        raise Refused(400, f"sample index {ref.index} is past the {ref.n} samples of that grid")
    return api.noise(loaded, ref.n, seed=ref.seed, label=ref.label)[ref.index]


async def _with_model(request: Request, run_id: str, work):
    """Runs ``work(loaded)`` in a sampling worker, the model loaded (or cached) there too."""
    s = studio(request)
    path = run_dir(request, run_id)
    return await s.model_workers.run(lambda: work(s.models.get(path)))


def _require(loaded, capability: str, what: str) -> None:
    if not getattr(loaded.capabilities, capability):
        raise Refused(400, f"this run's family ({loaded.cfg.family}) cannot {what}")


@router.get("/info")
async def info(request: Request, run: str):
    """What the run's model can do (which explore tools apply), its step and latent size."""
    def work(loaded):
        latent = int(api.noise(loaded, 1).shape[1]) if loaded.capabilities.latent else 0
        return {"capabilities": loaded.capabilities.to_dict(), "step": loaded.step, "latent_dim": latent,
                "family": loaded.cfg.family, "recipe": loaded.cfg.recipe}

    return await _with_model(request, run, work)


@router.post("/sample")
async def sample(request: Request, body: SampleRequest):
    data_root = studio(request).data_root

    def work(loaded):
        if body.by_class:
            if not loaded.capabilities.classes:
                raise Refused(400, "samples per class need a conditional run")
            per_class = max(1, min(body.n, MAX_SAMPLES // loaded.capabilities.classes))
            return {**_output(loaded, api.class_grid(loaded, per_class, seed=body.seed)), "per_class": per_class,
                    "classes": loaded.capabilities.classes}
        if body.reject:
            _require(loaded, "rejection", "do rejection sampling")
        images = api.sample(loaded, body.n, seed=body.seed, label=body.label, reject=body.reject or None)
        return {**_output(loaded, images, data_root), "step": loaded.step}

    return await _with_model(request, body.run, work)


@router.post("/interpolate")
async def interpolate(request: Request, body: InterpolateRequest):
    def work(loaded):
        ends = (_noise_of(loaded, body.a), _noise_of(loaded, body.b))
        return _output(loaded, api.interpolate(loaded, steps=body.steps, spherical=body.spherical, ends=ends))

    return await _with_model(request, body.run, work)


@router.post("/arithmetic")
async def arithmetic(request: Request, body: ArithmeticRequest):
    import torch

    def work(loaded):
        a, b, c = ([_noise_of(loaded, ref) for ref in refs] for refs in (body.a, body.b, body.c))
        return _output(loaded, api.arithmetic(loaded, torch.stack(a), torch.stack(b), torch.stack(c)))

    return await _with_model(request, body.run, work)


@router.post("/decode")
async def decode(request: Request, body: LatentRequest):
    """Latent codes typed or clicked (a VAE's 2-D map) -> pictures; codes shorter than the latent are padded."""
    import torch

    def work(loaded):
        width = int(api.noise(loaded, 1).shape[1])
        if any(len(z) > width for z in body.z):
            raise Refused(400, f"latent codes have {width} numbers in this run")
        codes = torch.zeros(len(body.z), width)
        for row, z in enumerate(body.z):
            codes[row, :len(z)] = torch.tensor(z)
        return _output(loaded, api.generate(loaded, codes))

    return await _with_model(request, body.run, work)


@router.post("/reconstruct")
async def reconstruct(request: Request, run: str):
    """An uploaded picture and the VAE's reconstruction of it."""
    data = await read_capped(request)

    def work(loaded):
        _require(loaded, "encoder", "reconstruct an upload (a VAE can)")
        image = api.decode_image_bytes(data, loaded, name="upload")
        return {"images": pictures(image) + pictures(api.reconstruct(loaded, image))}

    return await _with_model(request, run, work)


@router.post("/translate")
async def translate(request: Request, run: str, direction: str = Query("a2b", pattern="^(a2b|b2a)$")):
    """An uploaded picture, its translation to the other domain and back (A -> B -> A)."""
    data = await read_capped(request)

    def work(loaded):
        _require(loaded, "translator", "translate between domains (a DiscoGAN run can)")
        image = api.decode_image_bytes(data, loaded, name="upload")
        translated, back = api.translate(loaded, image, direction=direction)
        return {"images": pictures(image) + pictures(translated) + pictures(back)}

    return await _with_model(request, run, work)


@router.post("/nearest")
async def nearest(request: Request, body: SampleRequest):
    """The grid of (seed, n) and, beside each sample, its nearest training image (the copy check)."""
    data_root = studio(request).data_root

    def work(loaded):
        images = api.sample(loaded, body.n, seed=body.seed, label=body.label)
        found = api.nearest(loaded, images, data_root=data_root)
        return {"images": pictures(images), "nearest": pictures(found.images),
                "distances": [float(d) for d in found.distances], "names": list(found.names), "space": found.space}

    return await _with_model(request, body.run, work)


EXPORT_FORMATS = ("onnx", "torchscript", "folder")


@router.get("/export")
async def export(request: Request, run: str, format: str = Query(..., pattern="^(onnx|torchscript|folder)$")):
    """The run's sampling networks as ``genforge export`` writes them (ONNX, TorchScript or a model
    folder with its card), zipped for download; written to a temporary folder, never into the run."""
    import io
    import tempfile
    import zipfile

    from fastapi.responses import Response

    path = run_dir(request, run)

    def work() -> bytes:
        with tempfile.TemporaryDirectory(prefix="genforge-export-") as tmp:
            out = Path(tmp) / "export"
            api.export(path, format, out)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for file in sorted(out.rglob("*")):
                    if file.is_file():
                        archive.write(file, file.relative_to(out).as_posix())
            return buffer.getvalue()

    data = await studio(request).model_workers.run(work)
    name = f"{path.name}-{format}.zip"
    return Response(data, media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{name}"'})
