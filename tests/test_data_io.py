"""Safe image reading and atomic writing (seco_deploy.data.io)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from _data_helpers import noise_image, save_rgb
from PIL import Image

from seco_deploy.data.io import (
    ImageReadError,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    encode_mask_png,
    read_image,
    read_mask,
    write_mask_png,
)
from seco_deploy.data.palette import VOC_PALETTE, colorize


# ---------------------------------------------------------------------------- good inputs
def test_rgb_png_round_trip(tmp_path: Path) -> None:
    image = noise_image(5, 7)
    out = read_image(save_rgb(tmp_path / "a.png", image))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, image)


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    path = tmp_path / "g.png"
    Image.fromarray(gray).save(path)
    out = read_image(path)
    assert out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: kept
    rgba[0, 1] = (10, 20, 30, 0)  # transparent: white
    rgba[1, 0] = (0, 0, 0, 128)  # half black over white: 255 * 127 / 255 = 127
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = read_image(path)
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert out[1, 0].tolist() == [127, 127, 127]


def test_16bit_grayscale_is_scaled_to_8bit(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)  # -> 0, 1, 128, 255
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    out = read_image(path)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)


def test_palette_image_gives_palette_colours(tmp_path: Path) -> None:
    indices = np.array([[0, 1], [2, 15]], dtype=np.uint8)
    image = Image.frombytes("P", (2, 2), indices.tobytes())
    image.putpalette(VOC_PALETTE.reshape(-1).tolist())
    path = tmp_path / "p.png"
    image.save(path)
    np.testing.assert_array_equal(read_image(path), VOC_PALETTE[indices])


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((16, 32, 3), dtype=np.uint8)
    stored[:, :16] = (255, 0, 0)  # left half red
    stored[:, 16:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    out = read_image(path)
    assert out.shape == (32, 16, 3)  # upright: taller than wide
    assert out[4, 8, 0] > 200 and out[4, 8, 2] < 60  # the stored left side is now on top
    assert out[28, 8, 2] > 200 and out[28, 8, 0] < 60


# ---------------------------------------------------------------------------- bad inputs
def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.jpg.*empty \(0 bytes\)"):
        read_image(path)


def test_truncated_jpeg(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(noise_image(64, 64)).save(buffer, format="JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.jpg.*truncated"):
        read_image(path)


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n", encoding="utf-8")
    with pytest.raises(ImageReadError, match=r"notes\.jpg.*not an image"):
        read_image(path)


def test_too_many_pixels_for_the_limit(tmp_path: Path) -> None:
    path = save_rgb(tmp_path / "big.png", noise_image(20, 20))
    with pytest.raises(ImageReadError, match=r"big\.png.*400 pixels exceeds the limit of 100"):
        read_image(path, max_pixels=100)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    # Headers that claim 15000 x 15000 (above our default limit) and 100000 x 100000 (above
    # Pillow's hard limit); neither holds pixel data, so only a header check can answer.
    for side in (15000, 100000):
        path = tmp_path / f"bomb{side}.png"
        path.write_bytes(_png_header_only(side, side))
        with pytest.raises(ImageReadError, match=rf"bomb{side}\.png.*(pixels|too many)"):
            read_image(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)
    assert issubclass(ImageReadError, ValueError)


# ---------------------------------------------------------------------------- masks
def test_mask_png_round_trip_is_palette(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 2], [15, 20, 255]], dtype=np.int64)
    path = tmp_path / "sub" / "m.png"
    write_mask_png(path, mask)
    with Image.open(path) as image:
        assert image.mode == "P"
        palette = np.array(image.getpalette()[:768], dtype=np.uint8).reshape(256, 3)
    np.testing.assert_array_equal(palette, VOC_PALETTE)
    out = read_mask(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, mask)


def test_mask_png_compress_level_changes_the_bytes_not_the_mask() -> None:
    rng = np.random.default_rng(0)
    mask = np.kron(rng.integers(0, 5, (12, 12)), np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
    fast, small = encode_mask_png(mask, compress_level=1), encode_mask_png(mask, compress_level=9)
    assert len(small) < len(fast)
    for data in (fast, small):
        with Image.open(io.BytesIO(data)) as image:
            assert image.mode == "P"
            np.testing.assert_array_equal(np.asarray(image), mask)


def test_mask_index_above_255_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    with pytest.raises(ValueError, match="index 300.*at most 255"):
        write_mask_png(path, np.array([[0, 300]]))
    with pytest.raises(ValueError, match="negative"):
        write_mask_png(path, np.array([[0, -1]]))
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_rgb_mask_is_mapped_through_the_palette(tmp_path: Path) -> None:
    mask = np.array([[0, 15], [4, 255]], dtype=np.uint8)
    path = save_rgb(tmp_path / "rgb.png", colorize(mask))
    np.testing.assert_array_equal(read_mask(path), mask)
    bad = colorize(mask)
    bad[0, 0] = (1, 2, 3)
    path = save_rgb(tmp_path / "bad.png", bad)
    with pytest.raises(ImageReadError, match=r"bad\.png.*\(1, 2, 3\)"):
        read_mask(path)


def test_grayscale_mask_keeps_values(tmp_path: Path) -> None:
    mask = np.array([[0, 3, 255]], dtype=np.uint8)
    path = tmp_path / "g.png"
    Image.fromarray(mask).save(path)
    np.testing.assert_array_equal(read_mask(path), mask)


# ---------------------------------------------------------------------------- atomic writes
def test_atomic_write_bytes_and_text(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "out.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "out.bin", "t.txt"]


def test_durable_writes_fsync_the_file_and_its_folder_and_others_do_not(tmp_path: Path, monkeypatch) -> None:
    import seco_deploy.data.io as io_module

    synced: list[int] = []
    real = io_module.os.fsync
    monkeypatch.setattr(io_module.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    atomic_write_bytes(tmp_path / "a.bin", b"durable")
    assert len(synced) == 2  # the temporary file before the rename, the folder after it
    atomic_write_bytes(tmp_path / "b.bin", b"fast", durable=False)
    assert len(synced) == 2
    assert (tmp_path / "b.bin").read_bytes() == b"fast"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]


def test_atomic_path_keeps_old_content_on_error(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.suffix == ".onnx" and tmp != path
        tmp.write_bytes(b"half-written")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_atomic_path_replaces_on_success(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    with atomic_path(path) as tmp:
        Image.fromarray(noise_image(4, 4)).save(tmp)  # the suffix tells Pillow the format
        assert not path.exists()
    assert read_image(path).shape == (4, 4, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]


def test_atomic_path_body_that_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(path):
        pass
    assert list(tmp_path.iterdir()) == []
