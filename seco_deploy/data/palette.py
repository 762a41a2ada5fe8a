"""The PASCAL VOC colour map used for palette masks and overlays.

Index ``i`` gets the colour whose red, green and blue bits are the bits of ``i`` taken three at
a time and written from the most significant bit down:
``r = sum_j bit(i, 3j) << (7 - j)``, ``g = sum_j bit(i, 3j + 1) << (7 - j)``,
``b = sum_j bit(i, 3j + 2) << (7 - j)`` for ``j = 0..7``. So 0 is black, 1 is (128, 0, 0),
15 ("person" in VOC) is (192, 128, 128) and 255 ("ignore") is (224, 224, 192).
"""

from __future__ import annotations

import numpy as np


def voc_palette(n: int = 256) -> np.ndarray:
    """Return the first ``n`` VOC colours as a ``(n, 3)`` uint8 array."""
    index = np.arange(n, dtype=np.int64)
    palette = np.zeros((n, 3), dtype=np.int64)
    for j in range(8):
        shift = 7 - j
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * j + channel)) & 1) << shift
    return palette.astype(np.uint8)


VOC_PALETTE: np.ndarray = voc_palette(256)
VOC_PALETTE.setflags(write=False)


def colorize(mask: np.ndarray, palette: np.ndarray = VOC_PALETTE) -> np.ndarray:
    """Map an index mask ``(H, W)`` to RGB ``(H, W, 3)`` uint8 with ``palette``."""
    return np.asarray(palette, dtype=np.uint8)[np.asarray(mask, dtype=np.intp)]
