"""Image-folder datasets (genforge.data.folder, load_data): decoding, bad files, the on-disk cache.

Every image here is drawn with Pillow in tmp_path; only the last tests read the Pokemon
artwork, from the shared datasets folder (skipped when it is absent).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, features

from genforge.config import DataConfig
from genforge.data import datasets, folder
from genforge.data.datasets import dataset_status, image_folder, load_data, load_images
from genforge.data.folder import DecodeSettings, decode_image, load_folder
from genforge.errors import GenforgeError

from ..conftest import SHARED_DATASETS

pytestmark = pytest.mark.usefixtures("private_cache")

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
ARTWORK = SHARED_DATASETS / "pokemon" / "artwork"


def save(path: Path, image: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png(seed: int = 0, side: int = 16) -> bytes:
    """An RGB PNG of random pixels: deflate cannot shrink it, so every byte of it matters."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return png_bytes(Image.fromarray(pixels, "RGB"))


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares ``width`` x ``height`` grey pixels: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + chunk(b"IEND", b""))


def decode(path: Path, size: int, **kwargs) -> np.ndarray:
    return decode_image(path, DecodeSettings(size, **kwargs))


def lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


# --- one image: compositing, aspect ratio, channels, formats -----------------------------

@pytest.mark.parametrize("background, shade", [("black", 0), ("white", 255)])
def test_rgba_is_composited_on_the_background(tmp_path, background, shade):
    image = Image.new("RGBA", (20, 20), (*GREEN, 0))  # transparent, but green underneath: must not show
    image.paste((*RED, 255), (0, 0, 10, 20))  # left half opaque red
    image.paste((*BLUE, 128), (10, 0, 20, 10))  # top right: half-transparent blue
    out = decode(save(tmp_path / "a.png", image), 20, background=background)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert (out[:, :10] == RED).all()
    assert (out[10:, 10:] == shade).all()
    half = out[:10, 10:].reshape(-1, 3)
    expected = np.array([shade * 127 / 255, shade * 127 / 255, 128 + shade * 127 / 255])
    assert np.abs(half - expected).max() <= 1


@pytest.mark.parametrize("suffix", [".png", ".gif"])
@pytest.mark.parametrize("background, shade", [("black", 0), ("white", 255)])
def test_palette_transparency_is_composited(tmp_path, suffix, background, shade):
    image = Image.new("P", (16, 16), 0)
    image.putpalette([*GREEN, *RED] + [0] * (256 - 2) * 3)  # index 0 green (transparent), 1 red
    image.paste(1, (0, 0, 8, 16))
    path = save(tmp_path / f"p{suffix}", image, transparency=0)
    assert "transparency" in Image.open(path).info
    out = decode(path, 16, background=background)
    assert (out[:, :8] == RED).all()
    assert (out[:, 8:] == shade).all()


def test_wide_image_keeps_its_aspect_ratio_and_is_centred(tmp_path):
    path = save(tmp_path / "wide.png", Image.new("RGB", (40, 20), RED))
    out = decode(path, 20, background="white")  # 40x20 -> 20x10, rows 5..14
    assert (out[5:15] == RED).all()
    assert (out[:5] == 255).all() and (out[15:] == 255).all()
    tall = decode(save(tmp_path / "tall.png", Image.new("RGB", (9, 36), BLUE)), 16)  # -> 4x16, columns 6..9
    assert (tall[:, 6:10] == BLUE).all()
    assert (tall[:, :6] == 0).all() and (tall[:, 10:] == 0).all()


def test_large_image_is_reduced_to_the_model_size(tmp_path):
    stripes = np.zeros((1200, 1600, 3), dtype=np.uint8)
    stripes[:, :800] = RED  # left half red, right half blue
    stripes[:, 800:] = BLUE
    out = decode(save(tmp_path / "big.jpg", Image.fromarray(stripes), quality=95), 32)  # 1600x1200 -> 32x24
    assert out.shape == (32, 32, 3)
    assert (out[:4] == 0).all() and (out[28:] == 0).all()  # letterbox rows
    assert out[4:28, :12, 0].min() > 200 and out[4:28, :12, 2].max() < 60  # red side
    assert out[4:28, 20:, 2].min() > 200 and out[4:28, 20:, 0].max() < 60  # blue side


def test_exif_orientation_is_applied(tmp_path):
    wide = Image.new("RGB", (40, 20), RED)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees to display": the photo is really 20 wide and 40 tall
    out = decode(save(tmp_path / "photo.jpg", wide, exif=exif, quality=95), 20)
    assert (out[:, :5] == 0).all() and (out[:, 15:] == 0).all()  # letterboxed left and right
    assert out[2:18, 6:14, 0].min() > 200


def test_grey_output(tmp_path):
    path = save(tmp_path / "red.png", Image.new("RGB", (8, 8), RED))
    out = decode(path, 8, channels=1)
    assert out.shape == (8, 8, 1)
    assert abs(int(out[0, 0, 0]) - round(0.299 * 255)) <= 1  # ITU-R 601 luma
    loaded = load_folder(tmp_path, DecodeSettings(8, channels=1))
    assert loaded.images.shape == (1, 1, 8, 8)


def test_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (12, 12), RED), Image.new("RGB", (12, 12), BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    out = decode(path, 12)
    assert (np.abs(out.astype(int) - RED).max(axis=-1) <= 2).all()


def test_sixteen_bit_grey_is_scaled_to_eight_bits(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((6, 6), 40000, dtype=np.uint16)).save(path)
    assert decode(path, 6, channels=1)[0, 0, 0] == round(40000 / 257)


def test_every_format_is_found_recursively_in_natural_order(tmp_path):
    root = tmp_path / "images"
    save(root / "10.png", Image.new("RGB", (8, 8), RED))
    save(root / "2.PNG", Image.new("RGB", (8, 8), RED))
    save(root / "sub" / "a.jpg", Image.new("RGB", (8, 8), RED))
    save(root / "sub" / "deeper" / "b.bmp", Image.new("RGB", (8, 8), RED))
    save(root / "sub" / "c.gif", Image.new("RGB", (8, 8), RED))
    expected = ["2.PNG", "10.png", "sub/a.jpg", "sub/c.gif", "sub/deeper/b.bmp"]
    if features.check("webp"):
        save(root / "sub" / "d.webp", Image.new("RGB", (8, 8), RED), lossless=True)
        expected.insert(4, "sub/d.webp")
    (root / "notes.txt").write_text("not a picture, and not named like one: ignored")
    save(root / ".hidden" / "e.png", Image.new("RGB", (8, 8), RED))
    loaded = load_folder(root, DecodeSettings(8))
    assert list(loaded.files) == expected
    assert loaded.other_files == 1
    assert loaded.images.shape == (len(expected), 3, 8, 8) and loaded.images.dtype == torch.uint8
    assert (loaded.images[:, 0] > 240).all() and (loaded.images[:, 1:] < 15).all()  # all red (JPEG: nearly)


# --- bad files ----------------------------------------------------------------------------

BAD_FILES = {
    "empty.png": (lambda: b"", "empty file"),
    "text.png": (lambda: b"<html>404 Not Found</html>\n", "not an image"),
    "truncated.png": (lambda: noise_png()[:300], "corrupt or truncated"),
    "corrupt.png": (lambda: (lambda b: b[:100] + bytes(x ^ 0x5A for x in b[100:400]) + b[400:])(noise_png()),
                    "corrupt or truncated"),
    "bomb.png": (lambda: png_header_only(100_000, 100_000), "decompression bomb"),
    "big.png": (lambda: png_header_only(8_000, 8_000), "a decompression bomb?"),
}


def test_each_bad_file_is_skipped_with_one_warning_and_a_summary(tmp_path, capsys):
    root = tmp_path / "mixed"
    for name, (make, _) in BAD_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(make())
    save(root / "good.png", Image.new("RGB", (8, 8), RED))
    loaded = load_folder(root, DecodeSettings(8))
    assert loaded.files == ("good.png",)
    assert loaded.images.shape == (1, 3, 8, 8)
    err = lines(capsys.readouterr().err)
    assert len(err) == len(BAD_FILES) + 1, err
    for name, (_, problem) in BAD_FILES.items():
        line = next(line for line in err if f"{root / name}:" in line)
        assert line.startswith("genforge: warning: ") and problem in line, line
    assert f"skipped {len(BAD_FILES)} of {len(BAD_FILES) + 1} image files; 1 usable" in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_pixel_limit_is_a_setting(tmp_path):
    path = save(tmp_path / "a.png", Image.new("RGB", (20, 20), RED))
    with pytest.raises(folder.BadImage, match="20x20 pixels, over the limit of 100"):
        decode_image(path, DecodeSettings(8, max_pixels=100))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(max_size=600))
def test_arbitrary_bytes_never_escape_as_an_exception(tmp_path, junk):
    path = tmp_path / "junk.png"
    path.write_bytes(junk)
    try:
        out = decode(path, 8)
    except folder.BadImage as e:
        assert "\n" not in str(e) and str(e)
    else:
        assert out.shape == (8, 8, 3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_cut_before_the_last_pixels_is_refused(tmp_path, data):
    whole = noise_png(seed=1)
    idat = whole.index(b"IDAT")
    end_of_pixels = idat + 4 + struct.unpack(">I", whole[idat - 4:idat])[0] - 16  # well before zlib's checksum
    at = data.draw(st.integers(0, end_of_pixels))
    path = tmp_path / "cut.png"
    path.write_bytes(whole[:at])
    with pytest.raises(folder.BadImage):
        decode(path, 8)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(0, 10_000), value=st.integers(1, 255))
def test_a_flipped_byte_is_decoded_or_reported(tmp_path, position, value):
    whole = bytearray(noise_png(seed=2))
    whole[position % len(whole)] ^= value
    path = tmp_path / "flipped.png"
    path.write_bytes(bytes(whole))
    try:
        decode(path, 8)
    except folder.BadImage as e:
        assert str(e)


def test_missing_folder_file_and_folder_without_images(tmp_path, capsys):
    with pytest.raises(GenforgeError, match=f"image folder {tmp_path / 'nope'} does not exist") as info:
        load_folder(tmp_path / "nope", DecodeSettings(8))
    assert "\n" not in str(info.value)
    save(tmp_path / "one.png", Image.new("RGB", (4, 4)))
    with pytest.raises(GenforgeError, match="is a file, not a folder"):
        load_folder(tmp_path / "one.png", DecodeSettings(8))

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GenforgeError, match=f"no usable image in {empty} \\(no image files\\)"):
        load_folder(empty, DecodeSettings(8))

    useless = tmp_path / "useless"
    useless.mkdir()
    (useless / "readme.txt").write_text("hello")
    (useless / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(GenforgeError) as info:
        load_folder(useless, DecodeSettings(8))
    message = str(info.value)
    assert f"no usable image in {useless}" in message and "1 image file(s), none usable, 1 other file(s)" in message
    assert "\n" not in message
    assert f"{useless / 'broken.png'}:" in capsys.readouterr().err


@pytest.mark.parametrize("settings_, problem", [(DecodeSettings(8, channels=2), "data.channels must be 1"),
                                                (DecodeSettings(8, background="pink"), "data.background must be"),
                                                (DecodeSettings(0), "data.image_size must be positive")])
def test_bad_decode_settings(tmp_path, settings_, problem):
    with pytest.raises(GenforgeError, match=problem):
        load_folder(tmp_path, settings_)


# --- the on-disk cache ------------------------------------------------------------------

def _count_decodes(monkeypatch) -> list[str]:
    decoded: list[str] = []
    real = folder.decode_image

    def counting(path, settings):
        decoded.append(Path(path).name)
        return real(path, settings)

    monkeypatch.setattr(folder, "decode_image", counting)
    return decoded


def test_second_load_comes_from_the_cache_without_decoding(tmp_path, private_cache, monkeypatch, capsys):
    root = tmp_path / "imgs"
    for index, colour in enumerate((RED, GREEN, BLUE)):
        save(root / f"{index}.png", Image.new("RGB", (10, 6), colour))
    (root / "bad.png").write_bytes(b"")
    first = load_folder(root, DecodeSettings(8))
    warned = capsys.readouterr().err
    assert not first.from_cache and "bad.png" in warned
    cached = list((private_cache / "folders").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".safetensors"  # and no temporary file left behind

    def no_decoding(path, settings):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(folder, "decode_image", no_decoding)
    second = load_folder(root, DecodeSettings(8))
    assert second.from_cache
    assert torch.equal(second.images, first.images) and second.files == first.files
    assert capsys.readouterr().err == warned  # the skipped file is still reported


def test_cache_is_invalidated_by_mtime_size_and_settings(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    a = save(root / "a.png", Image.new("RGB", (8, 8), RED))
    save(root / "b.png", Image.new("RGB", (8, 8), GREEN))
    load_folder(root, DecodeSettings(8))
    decoded = _count_decodes(monkeypatch)
    load_folder(root, DecodeSettings(8))
    assert decoded == []

    stat = a.stat()
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched
    load_folder(root, DecodeSettings(8))
    assert sorted(decoded) == ["a.png", "b.png"]

    decoded.clear()
    stat = a.stat()
    a.write_bytes(png_bytes(Image.new("RGB", (9, 9), BLUE)))  # new size, same mtime
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    out = load_folder(root, DecodeSettings(8))
    assert sorted(decoded) == ["a.png", "b.png"]
    assert out.images[0, 2].min() == 255  # the new blue picture

    decoded.clear()
    load_folder(root, DecodeSettings(8, background="white"))  # other settings: their own entry
    assert len(decoded) == 2
    decoded.clear()
    save(root / "c.png", Image.new("RGB", (8, 8), RED))  # a new file
    assert len(load_folder(root, DecodeSettings(8)).files) == 3 and len(decoded) == 3


@pytest.mark.parametrize("damage", [lambda b: b"", lambda b: b[: len(b) // 2], lambda b: b"\x00" * len(b),
                                    lambda b: b"garbage" + b[7:]], ids=["empty", "torn", "zeros", "header"])
def test_corrupt_cache_file_is_rebuilt_silently(tmp_path, private_cache, damage, capsys):
    root = tmp_path / "imgs"
    save(root / "a.png", Image.new("RGB", (8, 8), RED))
    first = load_folder(root, DecodeSettings(8))
    (cache_file,) = (private_cache / "folders").iterdir()
    cache_file.write_bytes(damage(cache_file.read_bytes()))
    capsys.readouterr()
    again = load_folder(root, DecodeSettings(8))
    assert not again.from_cache and torch.equal(again.images, first.images)
    assert capsys.readouterr().err == ""
    assert load_folder(root, DecodeSettings(8)).from_cache  # rewritten whole


def test_unwritable_cache_warns_and_still_loads(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("GENFORGE_CACHE", str(blocker))
    save(tmp_path / "imgs" / "a.png", Image.new("RGB", (8, 8), RED))
    loaded = load_folder(tmp_path / "imgs", DecodeSettings(8))
    assert loaded.images.shape == (1, 3, 8, 8)
    (line,) = lines(capsys.readouterr().err)
    assert "cannot write the image cache" in line


# --- data configs: folder:PATH, data.path, pokemon ------------------------------------------

def test_folder_dataset_by_name_or_path(tmp_path):
    root = tmp_path / "imgs"
    save(root / "a.png", Image.new("RGBA", (12, 6), (*RED, 255)))
    by_name = load_data(DataConfig(dataset=f"folder:{root}", image_size=8))
    by_path = load_data(DataConfig(dataset="folder", path=str(root), image_size=8, background="white"))
    assert by_name.images.shape == by_path.images.shape == (1, 3, 8, 8)
    assert by_name.images[0, :, 0, 0].tolist() == [0, 0, 0] and by_path.images[0, :, 0, 0].tolist() == [255] * 3
    assert by_name.files == ("a.png",) and by_name.classes == () and by_name.labels.tolist() == [0]
    test = load_data(DataConfig(dataset=f"folder:{root}", image_size=8), "test")
    assert test.split == "test" and torch.equal(test.images, by_name.images)  # no held-out split


@pytest.mark.parametrize("config, problem", [
    (DataConfig(dataset="folder:"), "folder: needs a path"),
    (DataConfig(dataset="folder"), "data.dataset=folder needs data.path"),
    (DataConfig(dataset="folder:/a", path="/b"), "name different folders"),
    (DataConfig(dataset="mnist-10k", path="/b"), "data.path is for image folders"),
])
def test_data_config_mistakes(config, problem):
    with pytest.raises(GenforgeError, match=problem):
        load_data(config)


def test_missing_pokemon_says_how_to_get_it(isolated_data):
    with pytest.raises(GenforgeError) as info:
        load_data(DataConfig(dataset="pokemon", image_size=64))
    message = str(info.value)
    assert "genforge data fetch pokemon" in message and "data.path" in message
    assert str(isolated_data / "pokemon" / "artwork") in message
    rows = {row["name"]: row["where"] for row in dataset_status()}
    assert rows["pokemon"] == "missing: genforge data fetch pokemon" and "folder:PATH" in rows


def test_pokemon_path_override_and_data_root(isolated_data):
    synthetic = isolated_data / "pokemon" / "artwork"
    save(synthetic / "1.png", Image.new("RGBA", (10, 10), (*BLUE, 255)))
    assert image_folder(DataConfig(dataset="pokemon")) == synthetic
    assert load_data(DataConfig(dataset="pokemon", image_size=8)).images.shape == (1, 3, 8, 8)
    elsewhere = isolated_data.parent / "mine"
    save(elsewhere / "x.png", Image.new("RGB", (10, 10)))
    save(elsewhere / "y.png", Image.new("RGB", (10, 10)))
    assert len(load_data(DataConfig(dataset="pokemon", path=str(elsewhere), image_size=8))) == 2


def test_load_images_points_folders_to_load_data():
    with pytest.raises(GenforgeError, match="image folder.*load_data"):
        load_images("pokemon")
    with pytest.raises(GenforgeError, match="unknown dataset 'cifar'.*pokemon.*folder:PATH"):
        load_images("cifar")


def test_named_datasets_come_resized_through_load_data():
    data = load_data(DataConfig(dataset="mnist-10k", image_size=32), "test")
    assert data.images.shape == (1000, 1, 32, 32)


# --- the Pokemon artwork of the shared datasets -------------------------------------------

@pytest.mark.skipif(not ARTWORK.is_dir(), reason="../shared/datasets/pokemon not present")
def test_pokemon_artwork_decodes_and_then_loads_from_the_cache(monkeypatch):
    monkeypatch.setenv("GENFORGE_DATA", str(SHARED_DATASETS))
    monkeypatch.setattr(datasets, "search_roots", lambda root=None: [SHARED_DATASETS])
    config = DataConfig(dataset="pokemon", image_size=64)
    first = load_data(config)
    count = sum(1 for p in ARTWORK.iterdir() if p.suffix == ".png")
    assert first.images.shape == (count, 3, 64, 64) and first.images.dtype == torch.uint8
    assert first.files[:3] == ("1.png", "2.png", "3.png")
    corners = first.images[:, :, 0, 0]
    assert (corners == 0).float().mean() > 0.9  # transparent corners on black
    monkeypatch.setattr(folder, "decode_image", lambda path, settings: pytest.fail("decoded again"))
    assert torch.equal(load_data(config).images, first.images)
