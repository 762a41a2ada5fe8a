"""The preview of a synthetic set: a contact sheet of scenes beside their masks.

:func:`contact_sheet` lays out up to ``columns`` (image | mask) pairs a row, 4 px apart on
white, and a legend row under them. Masks are shown in :data:`seco_deploy.data.palette.VOC_PALETTE`
colours; context pixels that are background in the mask are tinted (water blue, rails brown),
so the co-occurrence trap is visible at a glance. :func:`write_contact_sheet` writes the sheet as
a PNG, atomically. ``seco data synth --preview`` shows the set's first 16 scenes.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np

from seco_deploy.data.io import atomic_write_bytes
from seco_deploy.data.palette import VOC_PALETTE
from seco_deploy.data.synth.profiles import CLASSES, CONTEXTS
from seco_deploy.data.synth.scenes import Scene

_CONTEXT_TINT = {1: (40, 60, 120), 2: (110, 90, 60)}


def _mask_panel(scene: Scene) -> np.ndarray:
    panel = VOC_PALETTE[scene.mask].copy()
    for index, colour in _CONTEXT_TINT.items():
        panel[(scene.context == index) & (scene.mask == 0)] = colour
    return panel


def contact_sheet(scenes: list[Scene], columns: int = 4) -> np.ndarray:
    """A grid of (image | mask) pairs with a legend row; context pixels are tinted in the mask."""
    if not scenes:
        return np.zeros((32, 32, 3), dtype=np.uint8)
    s = scenes[0].image.shape[0]
    gap = 4
    cols = min(columns, len(scenes))
    rows = math.ceil(len(scenes) / cols)
    legend_h = 28
    height, width = rows * (s + gap) + gap + legend_h, cols * (2 * s + 3 * gap)
    sheet = np.full((height, width, 3), 255, dtype=np.uint8)
    for k, scene in enumerate(scenes):
        r, q = divmod(k, cols)
        y, x = gap + r * (s + gap), q * (2 * s + 3 * gap) + gap
        sheet[y : y + s, x : x + s] = scene.image
        sheet[y : y + s, x + s + gap // 2 : x + 2 * s + gap // 2] = _mask_panel(scene)
    entries = [(CLASSES[i], tuple(int(v) for v in VOC_PALETTE[i])) for i in range(1, len(CLASSES))]
    entries += [(CONTEXTS[i] + " (bg)", _CONTEXT_TINT[i]) for i in (1, 2)]
    x = gap
    y = height - legend_h + 6
    bgr = cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)
    for label, colour in entries:
        cv2.rectangle(bgr, (x, y), (x + 14, y + 14), colour[::-1], -1)
        cv2.putText(bgr, label, (x + 18, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        x += 24 + 8 * len(label)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_contact_sheet(path: str | os.PathLike[str], scenes: list[Scene]) -> None:
    """Write :func:`contact_sheet` of ``scenes`` to ``path`` as a PNG (atomically)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(contact_sheet(scenes), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("OpenCV could not encode the preview PNG")
    atomic_write_bytes(path, buf.tobytes())
