"""Image tiles for the report: colourised masks, PNG encoding, side-by-side rows.

All functions take and return uint8 RGB arrays (H, W, 3) unless stated; nothing here needs
matplotlib.
"""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np

from seco_deploy.data.palette import VOC_PALETTE

__all__ = ["CONTEXT_TINT", "colourise", "data_uri", "fit", "png_bytes", "read_rgb"]

# Background context pixels are tinted in ground-truth tiles so the reader sees water and rails.
CONTEXT_TINT = {1: (40, 60, 120), 2: (110, 90, 60)}


def colourise(mask: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
    """Palette colours of a class-index mask; background context pixels tinted (``CONTEXT_TINT``)."""
    rgb = VOC_PALETTE[np.asarray(mask, dtype=np.uint8)].copy()
    if context is not None and context.shape == mask.shape:
        for value, colour in CONTEXT_TINT.items():
            rgb[(context == value) & (mask == 0)] = colour
    return rgb


def read_rgb(path: str | Path) -> np.ndarray | None:
    """An image file as RGB, or None when it is missing or unreadable."""
    data = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if data is None else cv2.cvtColor(data, cv2.COLOR_BGR2RGB)


def fit(image: np.ndarray | None, side: int) -> np.ndarray:
    """``image`` resized so its long side is ``side`` (nearest for masks is the caller's job:
    colourised masks resize fine with INTER_NEAREST, photos with INTER_AREA); a grey tile if None."""
    if image is None:
        return np.full((side, side, 3), 200, dtype=np.uint8)
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of an RGB (or gray) uint8 array."""
    arr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return buf.tobytes()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
