"""Writing prediction outputs, each atomically (temporary file in the same folder, then rename).

Per image NAME (a safe relative name, see :mod:`seco_deploy.infer.sources`), under OUT:

- ``masks/NAME.png``: 8-bit palette PNG, one class index per pixel, the input's original size;
- ``overlays/NAME.jpg``: the mask blended on the image (``alpha`` 0.5) with a legend panel on
  the right listing the classes present, their colours and pixel percentages;
- ``probs/NAME.npz``: ``probs`` float16 (K, h, w), downscaled by ``probs_scale`` (area
  averaging), plus ``classes`` and ``size`` (original H, W) and ``kind`` (``softmax`` for mask
  mode: K = C + 1; ``cam`` for pseudo mode: K = C normalised CAMs);
- ``cams/NAME.jpg``: a jet heatmap of the CAM (max over the image's classes) blended on the image.

A reader sees either no file or a complete one; a killed run leaves at most hidden temporary
files (``.NAME.<hex>.tmp.<ext>``), which :func:`remove_stale_temporaries` deletes. ``durable``
(``seco predict --fsync``) also flushes every file to disk before its rename, so that what was
written survives a power loss; without it (the default) a power loss may leave recently written
files empty or absent, which the next run's completeness check
(:func:`seco_deploy.infer.decode.complete_fractions`) finds and redoes.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from seco_deploy.data.io import atomic_path, atomic_write_bytes, write_mask_png
from seco_deploy.infer.sources import output_path

__all__ = [
    "MASK_PNG_LEVEL",
    "OUTPUT_KINDS",
    "OutputPaths",
    "cam_heatmap",
    "class_fractions",
    "remove_stale_temporaries",
    "render_overlay",
    "write_cam",
    "write_mask",
    "write_overlay",
    "write_probs",
]

OUTPUT_KINDS = {"mask": ("masks", ".png"), "overlay": ("overlays", ".jpg"), "probs": ("probs", ".npz"),
                "cam": ("cams", ".jpg")}
# zlib level of predicted masks: half the encoding time of PIL's default (6) for files 25-60 %
# larger (a 500 x 375 mask: 0.48 against 0.90 ms, 2.3 against 1.5 KB); levels 1-3 differ little.
MASK_PNG_LEVEL = 3
_TEMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp(\.[A-Za-z0-9]+)?$")


@dataclass(frozen=True)
class OutputPaths:
    """The files one image produces, given which outputs were asked for."""

    mask: Path
    overlay: Path | None = None
    probs: Path | None = None
    cam: Path | None = None

    @classmethod
    def for_name(cls, out_dir: str | os.PathLike[str], name: str, overlay: bool = False, probs: bool = False,
                 cam: bool = False) -> OutputPaths:
        def path(kind: str) -> Path:
            folder, suffix = OUTPUT_KINDS[kind]
            return output_path(out_dir, folder, name, suffix)

        return cls(
            mask=path("mask"),
            overlay=path("overlay") if overlay else None,
            probs=path("probs") if probs else None,
            cam=path("cam") if cam else None,
        )

    def all(self) -> list[Path]:
        return [p for p in (self.mask, self.overlay, self.probs, self.cam) if p is not None]

    def relative(self, out_dir: str | os.PathLike[str]) -> dict[str, str]:
        base = Path(out_dir)
        pairs = (("mask", self.mask), ("overlay", self.overlay), ("probs", self.probs), ("cam", self.cam))
        return {k: p.relative_to(base).as_posix() for k, p in pairs if p is not None}


def class_fractions(mask: np.ndarray, classes: list[str]) -> dict[str, float]:
    """``{class name: fraction of pixels}`` for the classes present in ``mask``, by class index."""
    counts = np.bincount(np.asarray(mask, dtype=np.uint8).reshape(-1), minlength=256)
    total = max(int(mask.size), 1)
    out: dict[str, float] = {}
    for index in np.flatnonzero(counts):
        name = classes[index] if index < len(classes) else str(int(index))
        out[name] = round(float(counts[index]) / total, 6)
    return out


def write_mask(path: Path, mask: np.ndarray, palette: np.ndarray, durable: bool = True) -> None:
    """Palette PNG of ``mask`` (H, W) uint8 (atomic), zlib level :data:`MASK_PNG_LEVEL`."""
    write_mask_png(path, mask, palette, MASK_PNG_LEVEL, durable)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a fixed-size bitmap font only
        return ImageFont.load_default()


def render_overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, classes: list[str],
                   alpha: float = 0.5) -> np.ndarray:
    """``image`` (H, W, 3) uint8 blended with the mask colours, plus a legend panel on the right.

    Background pixels (index 0) keep the image; other pixels are ``(1 - alpha) image + alpha
    colour``. The legend lists every class present (swatch, name, percentage of pixels).
    """
    h, w = mask.shape
    colours = np.asarray(palette, dtype=np.uint8)[mask]
    blend = image.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha
    keep = (mask == 0)[..., None]
    mixed = np.where(keep, image, np.clip(blend + 0.5, 0, 255).astype(np.uint8))
    fractions = class_fractions(mask, classes)
    size = int(np.clip(round(h / 28), 11, 28))
    font = _font(size)
    lines = [(classes.index(n) if n in classes else int(n), n, f) for n, f in fractions.items()]
    line_h = size + size // 2
    texts = [f"{name} {100 * frac:.1f}%" for _, name, frac in lines]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((probe.textlength(t, font=font) for t in texts), default=0)
    panel_w = int(size * 2 + text_w + size)
    panel_h = max(h, line_h * len(lines) + size)
    canvas = Image.new("RGB", (w + panel_w, panel_h), (24, 24, 24))
    canvas.paste(Image.fromarray(mixed), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, ((index, _, _), text) in enumerate(zip(lines, texts, strict=True)):
        y = size // 2 + row * line_h
        colour = tuple(int(v) for v in np.asarray(palette)[index])
        draw.rectangle([w + size // 2, y, w + size // 2 + size, y + size], fill=colour, outline=(200, 200, 200))
        draw.text((w + size * 2, y), text, fill=(235, 235, 235), font=font)
    return np.asarray(canvas)


def _jpeg_bytes(array: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_overlay(path: Path, image: np.ndarray, mask: np.ndarray, palette: np.ndarray, classes: list[str],
                  durable: bool = True) -> None:
    atomic_write_bytes(path, _jpeg_bytes(render_overlay(image, mask, palette, classes)), durable)


def write_probs(path: Path, probs: np.ndarray, classes: list[str], size: tuple[int, int], kind: str,
                durable: bool = True) -> None:
    """``probs`` (K, h, w) stored float16 in a compressed npz with ``classes``, ``size``, ``kind``."""
    with atomic_path(path, durable) as tmp, open(tmp, "xb") as handle:
        np.savez_compressed(
            handle,
            probs=np.asarray(probs, dtype=np.float16),
            classes=np.asarray(classes),
            size=np.asarray(size, dtype=np.int64),
            kind=np.asarray(kind),
        )


def cam_heatmap(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Jet colour map of ``cam`` (H, W) in [0, 1] blended with ``image``: ``alpha`` heat + rest image."""
    import cv2

    heat = cv2.applyColorMap(np.clip(cam * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = heat[..., ::-1].astype(np.float32)  # BGR -> RGB
    return np.clip(alpha * heat + (1 - alpha) * image.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)


def write_cam(path: Path, image: np.ndarray, cam: np.ndarray, durable: bool = True) -> None:
    atomic_write_bytes(path, _jpeg_bytes(cam_heatmap(image, cam)), durable)


def remove_stale_temporaries(out_dir: str | os.PathLike[str], names: set[str]) -> int:
    """Delete temporary files left by a killed run for outputs of ``names``; returns how many.

    Only hidden files named like :func:`seco_deploy.data.io.atomic_path`'s temporaries
    (``.STEM.<12 hex>.tmp.<ext>``) whose output name is one of ``names`` are touched, so another
    shard's live temporaries (other names) are never removed.
    """
    removed = 0
    base = Path(out_dir)
    for folder, _ in OUTPUT_KINDS.values():
        root = base / folder
        if not root.is_dir():
            continue
        for dirpath, _, files in os.walk(root):
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            for file in files:
                if not _TEMP.match(file):
                    continue
                stem = file[1:].rsplit(".", 3)[0] if file.count(".") >= 3 else ""
                name = stem if rel_dir == "." else f"{rel_dir}/{stem}"
                if name in names:
                    try:
                        os.unlink(os.path.join(dirpath, file))
                        removed += 1
                    except OSError:
                        pass
    return removed
