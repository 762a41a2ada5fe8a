"""Drawing primitives of a synthetic scene: the canvas, object sprites, smooth noise and colours.

Conventions: images are RGB on the 0-255 scale; the scene image is float32 ``(S, S, 3)`` while it
is drawn (quantised once, in :func:`.scenes.render_scene`), sprites are uint8. The class mask and
the context mask are uint8 ``(S, S)``: class indices of :data:`.profiles.CLASSES`, context
indices of :data:`.profiles.CONTEXTS`. Coordinates are (x, y) pixels from the top-left corner
and are rounded to the nearest integer where OpenCV needs integers. Every random draw comes from
the generator passed in (``Canvas.rng``), so a scene is a pure function of its generator.

- :data:`PALETTE`: the colours that objects and background clutter share, so that colour alone
  does not tell classes apart.
- :func:`cv_colour`: an RGB triple clipped to 0-255 as the integer tuple OpenCV draws with.
- :func:`smooth_noise`: low-frequency noise in about [-1, 1], for textures and blotches.
- :class:`Sprite`: one object on its own small canvas, RGB plus coverage.
- :class:`Canvas`: the scene; :meth:`Canvas.stamp` pastes a sprite, sets the class of the pixels
  it covers and clears their context (an object hides the water or rails behind it).
"""

from __future__ import annotations

import cv2
import numpy as np

from seco_deploy.data.synth.profiles import SynthProfile

# Shared object palette (RGB). With ``class_colours`` each class keeps one entry.
PALETTE = np.array(
    [
        (200, 40, 40), (40, 70, 180), (40, 140, 60), (230, 200, 50), (235, 235, 230), (35, 35, 40),
        (130, 130, 135), (230, 120, 30), (120, 75, 40), (30, 40, 90), (30, 140, 140), (120, 50, 140),
    ],
    dtype=np.float32,
)  # fmt: skip


def cv_colour(values: np.ndarray | tuple[float, ...]) -> tuple[int, int, int]:
    """``values[:3]`` clipped to [0, 255] and truncated to ints: a colour for OpenCV's drawing calls."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0, 255)
    return (int(v[0]), int(v[1]), int(v[2]))


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth noise in about [-1, 1], (h, w) float32, features about ``cell`` pixels wide."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) * 0.6


class Sprite:
    """A local RGB canvas plus coverage for one object, pasted into the scene in one go."""

    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = max(1, int(w)), max(1, int(h))
        self.rgb = np.zeros((self.h, self.w, 3), dtype=np.uint8)
        self.alpha = np.zeros((self.h, self.w), dtype=np.uint8)

    def poly(self, pts: list[tuple[float, float]], colour: tuple[int, int, int]) -> None:
        arr = np.round(np.asarray(pts, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(self.rgb, [arr], colour)
        cv2.fillPoly(self.alpha, [arr], 255)

    def ellipse(self, cx: float, cy: float, ax: float, ay: float, angle: float, colour: tuple[int, int, int]) -> None:
        center, axes = (int(round(cx)), int(round(cy))), (max(1, int(round(ax))), max(1, int(round(ay))))
        cv2.ellipse(self.rgb, center, axes, angle, 0, 360, colour, -1)
        cv2.ellipse(self.alpha, center, axes, angle, 0, 360, 255, -1)

    def line(self, x0: float, y0: float, x1: float, y1: float, colour: tuple[int, int, int], width: float) -> None:
        p0, p1, t = (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1))), max(1, int(round(width)))
        cv2.line(self.rgb, p0, p1, colour, t)
        cv2.line(self.alpha, p0, p1, 255, t)

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: tuple[int, int, int]) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour)

    def recolour(self, x0: float, y0: float, x1: float, y1: float, colour: tuple[int, int, int]) -> None:
        """Paint a rectangle only where the sprite already has coverage (windows, stripes)."""
        ys, ye = max(0, int(round(y0))), min(self.h, int(round(y1)))
        xs, xe = max(0, int(round(x0))), min(self.w, int(round(x1)))
        if ye <= ys or xe <= xs:
            return
        region = self.alpha[ys:ye, xs:xe] > 0
        self.rgb[ys:ye, xs:xe][region] = colour


class Canvas:
    """The scene being drawn: image (float32), class mask and context mask."""

    def __init__(self, size: int, rng: np.random.Generator, profile: SynthProfile) -> None:
        self.size = size
        self.rng = rng
        self.profile = profile
        self.image = np.zeros((size, size, 3), dtype=np.float32)
        self.mask = np.zeros((size, size), dtype=np.uint8)
        self.context = np.zeros((size, size), dtype=np.uint8)

    def stamp(self, sprite: Sprite, x: int, y: int, cls: int, texture: np.ndarray | None) -> None:
        """Paste ``sprite`` with its top-left corner at (x, y); covered pixels get class ``cls``.

        ``texture`` (the sprite's (h, w), float) is added to all three channels of the covered
        pixels; parts outside the canvas are cut off.
        """
        s = self.size
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(s, x + sprite.w), min(s, y + sprite.h)
        if x1 <= x0 or y1 <= y0:
            return
        sx0, sy0 = x0 - x, y0 - y
        local = (slice(sy0, sy0 + (y1 - y0)), slice(sx0, sx0 + (x1 - x0)))
        covered = sprite.alpha[local] > 0
        pixels = sprite.rgb[local].astype(np.float32)
        if texture is not None:
            pixels += texture[local][..., None]
        region = (slice(y0, y1), slice(x0, x1))
        self.image[region][covered] = pixels[covered]
        self.mask[region][covered] = cls
        self.context[region][covered] = 0
