"""Safe image reading and atomic file writing, used by every module that touches files.

Reading (:func:`read_image`, :func:`read_mask`):
  - the pixel count is checked against ``max_pixels`` before any pixel is decoded (a guard
    against decompression bombs);
  - EXIF orientation is applied, so the array is the picture as a viewer shows it;
  - grayscale, bilevel, palette, CMYK, 16-bit and float inputs become 8-bit RGB; an alpha
    channel is composited over white;
  - anything that cannot be read (missing, zero bytes, truncated, not an image) raises
    :class:`ImageReadError`, a ``ValueError`` whose message names the file and the reason.

Writing (:func:`atomic_path`, :func:`atomic_write_bytes`, :func:`atomic_write_text`,
:func:`write_mask_png`): the data goes to a temporary file in the destination's folder, is
flushed to disk (``fsync``, then the folder's entry table after the rename) and renamed over
the destination with ``os.replace``, so a reader sees either the old file or the complete new
one, never a partial file. On any error the temporary file is removed and the destination is
left untouched. ``durable=False`` skips the two fsyncs: the rename is still atomic (a killed
process leaves the old file or the new one), but after a power loss or kernel crash a file
renamed shortly before may be empty or absent. Use it only where a reader checks what it finds,
as ``seco predict``'s completeness check does (a mask counts as done only if it decodes).

Hashing (:func:`file_sha256`): the SHA-256 of a file's bytes, streamed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from seco_deploy.data.palette import VOC_PALETTE

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "VOC_PALETTE",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "encode_mask_png",
    "file_sha256",
    "read_image",
    "read_mask",
    "write_mask_png",
]

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's default decompression-bomb limit
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


class ImageReadError(ValueError):
    """An image or mask file cannot be read; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


# ---------------------------------------------------------------------------- reading
def _open_checked(path: Path, max_pixels: int) -> Image.Image:
    """Open ``path`` with Pillow, check its size and decode it fully; raise ImageReadError."""
    if not path.exists():
        raise ImageReadError(path, "the file does not exist")
    if path.is_dir():
        raise ImageReadError(path, "it is a folder, not a file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(path, f"cannot stat the file ({exc.strerror or exc})") from exc
    if size == 0:
        raise ImageReadError(path, "the file is empty (0 bytes)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(path, f"cannot open the file ({exc.strerror or exc})") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "not an image, or an image format Pillow cannot read") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"too many pixels ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"corrupt image header ({exc})") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageReadError(
            path,
            f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "(decompression-bomb guard; raise data.max_pixels if you trust this file)",
        )
    if width == 0 or height == 0:
        raise ImageReadError(path, f"the image has no pixels ({width}x{height})")
    try:
        image.load()
    except OSError as exc:
        message = str(exc)
        if "truncated" in message or "broken data stream" in message or "unrecognized data stream" in message:
            raise ImageReadError(path, f"the file is truncated or corrupt ({message})") from exc
        raise ImageReadError(path, f"cannot decode the pixels ({message})") from exc
    except (SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise ImageReadError(path, f"cannot decode the pixels ({exc})") from exc
    return image


def _exif_upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a malformed EXIF block is ignored, not fatal."""
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - broken EXIF must not make a readable image unreadable
        return image
    return upright if upright is not None else image


def _high_depth_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float single-channel array to uint8.

    ``I;16*``: v * 255 / 65535 rounded. ``I``: the 16-bit rule when the maximum exceeds 255,
    else clipped to [0, 255]. ``F``: times 255 when every value lies in [0, 1], else clipped.
    """
    values = array.astype(np.float64)
    if mode.startswith("I;16"):
        scaled = values * (255.0 / 65535.0)
    elif mode == "F":
        finite = values[np.isfinite(values)]
        in_unit = finite.size > 0 and finite.min() >= 0.0 and finite.max() <= 1.0
        scaled = values * 255.0 if in_unit else values
        scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    else:  # "I" (32-bit integer)
        scaled = values * (255.0 / 65535.0) if values.size and values.max() > 255 else values
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Blend an RGBA uint8 array over white: rgb * a + 255 * (1 - a)."""
    rgb = rgba[..., :3].astype(np.uint16)
    alpha = rgba[..., 3:4].astype(np.uint16)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)  # np.array copies twice (6x slower); read_image copies once
    if mode in ("L", "1"):
        gray = np.asarray(image.convert("L"), dtype=np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode.startswith("I") or mode == "F":
        gray = _high_depth_to_uint8(np.asarray(image), mode if mode != "I;16N" else "I;16")
        return np.repeat(gray[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        return _composite_on_white(np.asarray(image.convert("RGBA"), dtype=np.uint8))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as an upright RGB ``uint8`` array of shape ``(H, W, 3)``.

    Raises :class:`ImageReadError` (naming the file and the reason) for a missing, empty,
    truncated or non-image file, and for an image with more than ``max_pixels`` pixels.
    """
    p = Path(path)
    image = _open_checked(p, max_pixels)
    try:
        image = _exif_upright(image)
        array = _to_rgb_array(image)
    except (OSError, ValueError) as exc:
        raise ImageReadError(p, f"cannot convert mode {image.mode!r} to RGB ({exc})") from exc
    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()


def read_mask(
    path: str | os.PathLike[str],
    palette: np.ndarray = VOC_PALETTE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read a label mask as a ``uint8`` array ``(H, W)`` of class indices (255 = ignore).

    Palette (``P``) and grayscale PNGs give their stored indices. An RGB mask is mapped back to
    indices through ``palette``; a colour not in the palette raises :class:`ImageReadError`.
    16-bit masks must hold values <= 255.
    """
    p = Path(path)
    image = _open_checked(p, max_pixels)
    mode = image.mode
    if mode in ("P", "L"):
        return np.array(image, dtype=np.uint8)
    if mode == "1":
        return np.array(image, dtype=np.uint8)
    if mode.startswith("I"):
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ImageReadError(p, f"mask values must lie in 0..255, found {values.min()}..{values.max()}")
        return values.astype(np.uint8)
    if mode in ("RGB", "RGBA"):
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return _rgb_to_index(p, rgb, palette)
    raise ImageReadError(p, f"unsupported mask mode {mode!r}; save masks as 8-bit palette or grayscale PNG")


def _rgb_to_index(path: Path, rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    pal = np.asarray(palette, dtype=np.int64)
    keys = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    lut: dict[int, int] = {}
    for index, key in enumerate(keys.tolist()):
        lut.setdefault(key, index)
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    uniques, inverse = np.unique(codes, return_inverse=True)
    mapped = np.empty(len(uniques), dtype=np.uint8)
    for i, code in enumerate(uniques.tolist()):
        if code not in lut:
            colour = ((code >> 16) & 255, (code >> 8) & 255, code & 255)
            raise ImageReadError(path, f"RGB mask colour {colour} is not in the class palette")
        mapped[i] = lut[code]
    return mapped[inverse.reshape(codes.shape)]


# ---------------------------------------------------------------------------- writing
def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entry table so a completed rename survives a crash (POSIX only)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` atomically.

    The temporary name keeps the destination's suffix (``.x.<random>.tmp.png`` for ``x.png``)
    so libraries that pick a format from the extension work. The body must create the file.
    On normal exit the file is fsync'ed (``durable``) and ``os.replace``'d onto ``path``, then the
    folder is fsync'ed (``durable``); if the body raises, or creates nothing, the temporary file is
    removed and ``path`` keeps its old content.
    Parent folders are created when missing.
    """
    dest = Path(path)
    folder = dest.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{dest.stem}.{secrets.token_hex(6)}.tmp{dest.suffix}"
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written for {dest} (expected the temporary file {tmp})")
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        _fsync_dir(folder)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync when ``durable``, ``os.replace``)."""
    with atomic_path(path, durable) as tmp, open(tmp, "xb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically; see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode(encoding))


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (memory stays flat for any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def encode_mask_png(mask: np.ndarray, palette: np.ndarray = VOC_PALETTE, compress_level: int = 6) -> bytes:
    """Encode an index mask ``(H, W)`` as the bytes of an 8-bit palette PNG (zlib ``compress_level``).

    Raises ``ValueError`` when the mask is not 2-D, holds a negative index or one above 255
    (an 8-bit palette PNG cannot store it), or the palette is not ``(n <= 256, 3)``.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"a mask must hold integer class indices, got dtype {arr.dtype}")
    if arr.size:
        low, high = int(arr.min()), int(arr.max())
        if low < 0:
            raise ValueError(f"mask holds the negative index {low}; class indices must lie in 0..255")
        if high > 255:
            raise ValueError(
                f"mask holds the index {high} but an 8-bit palette PNG stores at most 255 "
                "(255 is 'ignore'); datasets with more than 255 classes need another mask format"
            )
    pal = np.asarray(palette, dtype=np.uint8)
    if pal.ndim != 2 or pal.shape[1] != 3 or not 1 <= pal.shape[0] <= 256:
        raise ValueError(f"palette must have shape (n <= 256, 3), got {pal.shape}")
    full = np.zeros((256, 3), dtype=np.uint8)
    full[: pal.shape[0]] = pal
    height, width = arr.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(arr.astype(np.uint8)).tobytes())
    image.putpalette(full.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def write_mask_png(path: str | os.PathLike[str], mask: np.ndarray, palette: np.ndarray = VOC_PALETTE,
                   compress_level: int = 6, durable: bool = True) -> None:
    """Write an index mask as an 8-bit palette PNG, atomically (:func:`atomic_write_bytes`); see
    :func:`encode_mask_png`."""
    atomic_write_bytes(path, encode_mask_png(mask, palette, compress_level), durable)
