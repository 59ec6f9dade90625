"""Image-folder datasets: every picture under a folder, decoded once into a uint8 tensor.

``data.dataset=folder:PATH`` (or ``data.path=PATH``) reads the PNG, JPEG, GIF (first
frame), WebP and BMP files under PATH and its sub-folders. Each image is flattened onto
the background colour (black or white) where it is transparent, scaled so that its
longer side is the model's size (Lanczos, after Pillow's cheap integer reduction of huge
images; JPEGs are decoded at a reduced scale), centred on a square of the background
colour, and held as RGB or grey: (N, C, size, size) uint8.

Files that cannot be used (empty, corrupt, truncated, not images, decompression bombs)
are skipped with one warning line each on stderr and a summary line. The decoded tensor
is cached on disk (``cache_dir("folders")``) under a key made of the folder's file list
(names, sizes, modification times) and the decode settings, so the next run starts at
once and any change to a file decodes the folder again. The cache is written atomically;
a cache file that cannot be read is rebuilt without a word.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import PIL
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from genforge.atomic import write_atomic
from genforge.errors import GenforgeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
BACKGROUNDS = {"black": 0, "white": 255}
# Larger images are refused as decompression bombs: a few KB of PNG can declare
# 100,000 x 100,000 pixels. Pillow's own alarm starts at 89 MP; genforge's is lower.
MAX_PIXELS = 50_000_000
CACHE_VERSION = 1  # bump when decoding changes, so old cache files are not reused


class BadImage(Exception):
    """A file that cannot serve as a training image; the message says why."""


@dataclass(frozen=True)
class DecodeSettings:
    """How images are turned into tensors: side ``size``, ``channels`` 3 (RGB) or 1 (grey),
    ``background`` black or white, and the pixel limit above which a file is refused."""

    size: int
    channels: int = 3
    background: str = "black"
    max_pixels: int = MAX_PIXELS

    def check(self) -> None:
        if self.size < 1:
            raise GenforgeError(f"data.image_size must be positive, not {self.size}")
        if self.channels not in (1, 3):
            raise GenforgeError(f"data.channels must be 1 (grey) or 3 (RGB), not {self.channels}")
        if self.background not in BACKGROUNDS:
            raise GenforgeError(f"data.background must be one of {', '.join(BACKGROUNDS)}, not {self.background!r}")


@dataclass(frozen=True)
class FolderImages:
    """A decoded folder: ``images`` (N, C, size, size) uint8, the ``files`` they came from
    (relative paths, in order), the ``skipped`` files with their problem, and the number
    of ``other_files`` ignored for not having an image suffix."""

    folder: Path
    images: torch.Tensor
    files: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    other_files: int
    from_cache: bool


def warn_stderr(line: str) -> None:
    print(f"genforge: warning: {line}", file=sys.stderr)


# --- one file ------------------------------------------------------------------------

def read_image(path: Path, max_pixels: int = MAX_PIXELS, draft: int | None = None) -> Image.Image:
    """Open and fully decode one image file (the first frame of an animation).

    ``draft`` lets JPEGs decode at a reduced scale that still covers ``draft`` pixels a side.
    Raises BadImage naming the problem: empty, not an image, over ``max_pixels`` pixels,
    corrupt or truncated.
    """
    try:
        if path.stat().st_size == 0:
            raise BadImage("empty file (0 bytes)")
    except OSError as e:
        raise BadImage(f"cannot read it ({_one_line(e.strerror or e)})") from None
    try:
        # genforge's own pixel limit (checked from the header, before any decoding) is below
        # Pillow's warning threshold, so its warning would only repeat what is reported here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as handle:
                width, height = handle.size
                if width * height > max_pixels:
                    raise BadImage(f"{width}x{height} pixels, over the limit of {max_pixels:,} "
                                   "(a decompression bomb?)")
                if draft:
                    handle.draft(None, (draft, draft))
                handle.load()
                return handle.copy()  # closing the file releases the decoded pixels of ``handle`` itself
    except BadImage:
        raise
    except Image.DecompressionBombError as e:
        raise BadImage(f"decompression bomb ({_one_line(e)})") from None
    except UnidentifiedImageError:
        raise BadImage("not an image Pillow can read") from None
    except Exception as e:  # format plugins raise many types on malformed data (OSError, SyntaxError, ...)
        raise BadImage(f"corrupt or truncated image ({_describe(e)})") from None


def fit_image(image: Image.Image, settings: DecodeSettings) -> np.ndarray:
    """A decoded image -> (size, size, C) uint8: turned upright (EXIF orientation, as cameras
    write it), flattened onto the background, scaled so its longer side is ``size`` (aspect
    ratio kept), centred on a square of the background colour."""
    shade = BACKGROUNDS[settings.background]
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):  # 16-bit or float grey
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) > 255:
            values = values / 257.0
        image = Image.fromarray(np.clip(values, 0, 255).round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (shade, shade, shade, 255)), rgba)
    mode = "L" if settings.channels == 1 else "RGB"
    image = image.convert(mode)
    size = settings.size
    scale = size / max(image.size)
    shape = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if shape != image.size:
        # reducing_gap: huge images are first shrunk by an integer factor (fast, box filter),
        # then Lanczos does the last step at most 3x, which looks the same and costs far less.
        image = image.resize(shape, Image.LANCZOS, reducing_gap=3.0)
    canvas = Image.new(mode, (size, size), shade if mode == "L" else (shade,) * 3)
    canvas.paste(image, ((size - shape[0]) // 2, (size - shape[1]) // 2))
    array = np.asarray(canvas, dtype=np.uint8)
    return array[:, :, None] if mode == "L" else array


def decode_image(path: Path, settings: DecodeSettings) -> np.ndarray:
    """One file -> (size, size, C) uint8; raises BadImage with the reason it cannot be used."""
    image = read_image(path, settings.max_pixels, draft=settings.size)
    try:
        return fit_image(image, settings)
    except Exception as e:  # a decodable file can still hold a broken EXIF block or an odd mode
        raise BadImage(f"cannot convert it ({_describe(e)})") from None


# --- a folder --------------------------------------------------------------------------

def natural_key(text: str) -> list:
    """Sort key putting 2.png before 10.png."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def scan_folder(folder: Path, warn: Callable[[str], None] = warn_stderr) -> tuple[list[tuple[str, int, int]], int]:
    """The image files under ``folder`` as (relative path, bytes, mtime in ns), naturally sorted,
    and the count of other files. Hidden files and folders are left out; links are not followed."""
    entries: list[tuple[str, int, int]] = []
    others = 0

    def unreadable(error: OSError) -> None:
        warn(f"{error.filename}: cannot list this folder ({_one_line(error.strerror or error)}); skipped")

    for top, dirs, names in os.walk(folder, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            path = Path(top) / name
            if not name.lower().endswith(IMAGE_SUFFIXES):
                others += 1
                continue
            try:
                stat = path.stat()
            except OSError:
                stat = None  # a dangling link: reported when it is read
            relative = path.relative_to(folder).as_posix()
            entries.append((relative, stat.st_size if stat else -1, stat.st_mtime_ns if stat else -1))
    entries.sort(key=lambda entry: natural_key(entry[0]))
    return entries, others


def cache_key(folder: Path, entries: list[tuple[str, int, int]], settings: DecodeSettings) -> str:
    """SHA-256 of everything the decoded tensor depends on."""
    payload = {"version": CACHE_VERSION, "pillow": PIL.__version__, "folder": str(folder.resolve()),
               "files": entries, "size": settings.size, "channels": settings.channels,
               "background": settings.background, "max_pixels": settings.max_pixels}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def folder_cache_dir() -> Path:
    from genforge.data.root import cache_dir

    return cache_dir("folders")


def load_folder(folder: str | Path, settings: DecodeSettings, *, warn: Callable[[str], None] = warn_stderr,
                use_cache: bool = True) -> FolderImages:
    """Decode every image under ``folder`` (or read them from the cache); see the module doc.

    ``warn`` receives one line per skipped file and a summary line. Raises GenforgeError when
    the folder does not exist or holds no usable image.
    """
    settings.check()
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise GenforgeError(f"image folder {folder} does not exist; set data.path or data.dataset=folder:PATH "
                            "to a folder of images (a run trained on it reads it from there on resume, eval and "
                            f"sample --nearest: move the images back, or link them there: ln -s NEW_PLACE {folder})")
    if not folder.is_dir():
        raise GenforgeError(f"{folder} is a file, not a folder; data.path / folder:PATH names a folder of images")
    entries, others = scan_folder(folder, warn)
    key = cache_key(folder, entries, settings)
    cache_file = folder_cache_dir() / f"{key[:40]}.safetensors"
    loaded = _read_cache(cache_file, key, folder, settings, others) if use_cache else None
    if loaded is None:
        loaded = _decode_all(folder, entries, others, settings)
        if use_cache and loaded.files:
            _write_cache(cache_file, key, loaded, warn)
    for relative, problem in loaded.skipped:
        warn(f"{folder / relative}: {problem}; skipped")
    if loaded.skipped:
        warn(f"{folder}: skipped {len(loaded.skipped)} of {len(entries)} image files; "
             f"{len(loaded.files)} usable")
    if not loaded.files:
        found = f"{len(entries)} image file(s), none usable" if entries else "no image files"
        other = f", {others} other file(s)" if others else ""
        raise GenforgeError(f"no usable image in {folder} ({found}{other}); genforge reads "
                            f"{', '.join(IMAGE_SUFFIXES)} files in the folder and its sub-folders")
    return loaded


def _decode_all(folder: Path, entries: list[tuple[str, int, int]], others: int,
                settings: DecodeSettings) -> FolderImages:
    arrays: list[np.ndarray] = []
    files: list[str] = []
    skipped: list[tuple[str, str]] = []
    for relative, _, _ in entries:
        try:
            arrays.append(decode_image(folder / relative, settings))
        except BadImage as e:
            skipped.append((relative, str(e)))
            continue
        files.append(relative)
    if arrays:
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    else:
        images = torch.empty(0, settings.channels, settings.size, settings.size, dtype=torch.uint8)
    return FolderImages(folder, images, tuple(files), tuple(skipped), others, from_cache=False)


def _read_cache(path: Path, key: str, folder: Path, settings: DecodeSettings, others: int) -> FolderImages | None:
    """The cached decode under ``path`` if it is whole and made for ``key``, else None."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("key") != key:
                return None
            images = handle.get_tensor("images")
        files = tuple(json.loads(meta["files"]))
        skipped = tuple((str(a), str(b)) for a, b in json.loads(meta["skipped"]))
    except Exception:  # torn, truncated or foreign file: decode again and overwrite it
        return None
    expected = (len(files), settings.channels, settings.size, settings.size)
    if images.dtype != torch.uint8 or tuple(images.shape) != expected:
        return None
    return FolderImages(folder, images, files, skipped, others, from_cache=True)


def _write_cache(path: Path, key: str, loaded: FolderImages, warn: Callable[[str], None]) -> None:
    """Write the cache file atomically (temporary name, fsync, rename); a failure only warns."""
    from safetensors.torch import save

    meta = {"key": key, "folder": str(loaded.folder), "files": json.dumps(loaded.files),
            "skipped": json.dumps(loaded.skipped)}
    try:  # genforge.atomic: whole or not at all, and never through a link planted in the cache
        write_atomic(path, save({"images": loaded.images}, metadata=meta))
    except OSError as e:
        warn(f"cannot write the image cache {path} ({_one_line(e.strerror or e)}); the folder will be decoded "
             "again next time")


def _describe(e: BaseException) -> str:
    text = _one_line(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _one_line(obj: object) -> str:
    return " ".join(str(obj).split())
