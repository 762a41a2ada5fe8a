"""The background of a synthetic scene: sky and ground, the two contexts, and clutter.

Each function draws into a :class:`.canvas.Canvas` in place, from the canvas's generator; rows
are pixel rows from the top (``horizon`` is the first ground row). The scene planner
(:mod:`.scenes`) calls them in a fixed order: sky and ground, rails, water, clutter.

- :func:`draw_sky_and_ground`: a vertical sky gradient (a quarter of the skies overcast grey)
  above ``horizon``, a shaded, blotched ground colour below it.
- :func:`draw_rails` / :func:`draw_water`: the contexts. Their rows become class 0 (background)
  in the mask and take their index of :data:`.profiles.CONTEXTS` in the context mask.
- :func:`draw_clutter`: bushes, rocks, houses and posts standing on the ground between
  ``horizon`` and ``ground_end``, and clouds in the sky. Clutter is background (class 0); houses
  and posts take the object :data:`.canvas.PALETTE`, so they look like vehicles and masts.
"""

from __future__ import annotations

import numpy as np

from seco_deploy.data.synth.canvas import PALETTE, Canvas, Sprite, cv_colour, smooth_noise
from seco_deploy.data.synth.profiles import CONTEXT_INDEX


def draw_sky_and_ground(c: Canvas, horizon: int) -> None:
    """Sky in rows ``[0, horizon)``, ground in rows ``[horizon, size)``; both background."""
    rng, s = c.rng, c.size
    top = np.array([rng.uniform(60, 140), rng.uniform(120, 180), rng.uniform(190, 250)], dtype=np.float32)
    low = np.array([rng.uniform(170, 230), rng.uniform(190, 235), rng.uniform(215, 250)], dtype=np.float32)
    if rng.random() < 0.25:  # overcast
        grey = rng.uniform(150, 210)
        top, low = np.full(3, grey - 25, np.float32), np.full(3, grey + 15, np.float32)
    t = (np.arange(horizon, dtype=np.float32) / max(1, horizon))[:, None, None]
    c.image[:horizon] = top * (1 - t) + low * t
    grounds = np.array([(90, 140, 60), (120, 150, 70), (170, 150, 110), (130, 110, 80), (150, 150, 140)], np.float32)
    base = grounds[rng.integers(len(grounds))] + rng.uniform(-15, 15, 3).astype(np.float32)
    h = s - horizon
    shade = np.linspace(0.85, 1.1, h, dtype=np.float32)[:, None, None]
    blotch = smooth_noise(rng, h, s, max(4, s // 10))[..., None] * 22
    c.image[horizon:] = base * shade + blotch


def draw_water(c: Canvas, top: int) -> None:
    """A rippled band from ``top`` to the bottom: context ``water``."""
    rng, s = c.rng, c.size
    h = s - top
    if h <= 0:
        return
    base = np.array([rng.uniform(20, 70), rng.uniform(70, 130), rng.uniform(130, 190)], dtype=np.float32)
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(s, dtype=np.float32)[None, :]
    depth = y / max(1.0, h)
    period = s * (0.018 + 0.05 * depth)  # ripples widen towards the viewer
    phase = rng.uniform(0, 2 * np.pi)
    wobble = 0.9 * np.sin(x / (s * rng.uniform(0.05, 0.09)) + rng.uniform(0, 2 * np.pi) + y * 0.15)
    wave = np.sin(2 * np.pi * y / period + wobble + phase)
    light = 26 * wave + 40 * np.clip(wave - 0.75, 0, None) * 4 + smooth_noise(rng, h, s, max(4, s // 8)) * 12
    band = base[None, None, :] * (0.8 + 0.3 * depth[..., None]) + light[..., None]
    c.image[top:] = band
    c.mask[top:] = 0
    c.context[top:] = CONTEXT_INDEX["water"]


def draw_rails(c: Canvas, center: int, height: int) -> None:
    """Gravel, sleepers and two rails across the image around row ``center``: context ``rails``."""
    rng, s = c.rng, c.size
    y0, y1 = max(0, center - height // 2), min(s, center + (height + 1) // 2)
    h = y1 - y0
    if h <= 2:
        return
    gravel = np.array([rng.uniform(110, 150)] * 3, dtype=np.float32) + rng.uniform(-10, 10, 3).astype(np.float32)
    grain = rng.standard_normal((h, s)).astype(np.float32) * 18
    band = np.broadcast_to(gravel, (h, s, 3)) + grain[..., None]
    spacing = max(4.0, h * rng.uniform(0.55, 0.75))
    offset = rng.uniform(0, spacing)
    x = np.arange(s, dtype=np.float32)
    sleeper = ((x - offset) % spacing) < spacing * 0.32
    wood = np.array([rng.uniform(70, 100), rng.uniform(50, 70), rng.uniform(30, 45)], dtype=np.float32)
    rows = slice(int(h * 0.12), max(int(h * 0.12) + 1, int(round(h * 0.88))))
    band[rows, sleeper] = wood + grain[rows][:, sleeper][..., None] * 0.4
    metal = np.array([rng.uniform(170, 200)] * 3, dtype=np.float32)
    thick = max(1, int(round(h * 0.09)))
    for frac in (0.2, 0.42):
        r = int(round(h * frac))
        band[r : r + thick] = metal
        band[r + thick : r + 2 * thick] = metal * 0.45
    c.image[y0:y1] = band
    c.mask[y0:y1] = 0
    c.context[y0:y1] = CONTEXT_INDEX["rails"]


def draw_clutter(c: Canvas, horizon: int, ground_end: int, count: int) -> None:
    """Background things: bushes, rocks, houses, posts on the ground; clouds in the sky."""
    rng, s = c.rng, c.size
    for _ in range(count):
        kind = int(rng.integers(5))
        if kind == 4 or ground_end - horizon < 6:  # cloud
            w, h = int(s * rng.uniform(0.12, 0.3)), int(s * rng.uniform(0.05, 0.1))
            sp = Sprite(w, h)
            grey = rng.uniform(225, 252)
            for _ in range(3):
                cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.4, 0.6) * h
                sp.ellipse(cx, cy, w * 0.28, h * 0.45, 0, cv_colour((grey,) * 3))
            c.stamp(sp, int(rng.uniform(-0.1, 0.9) * s), int(rng.uniform(0.02, 0.7) * max(1, horizon - h)), 0, None)
            continue
        base_y = int(rng.uniform(horizon, ground_end))
        scale = 0.4 + 0.6 * (base_y - horizon) / max(1, s - horizon)
        colour = PALETTE[rng.integers(len(PALETTE))] + rng.uniform(-20, 20, 3).astype(np.float32)
        tex = None
        if kind == 0:  # bush
            w, h = int(s * rng.uniform(0.1, 0.2) * scale) + 4, int(s * rng.uniform(0.07, 0.14) * scale) + 4
            sp = Sprite(w, h)
            green = cv_colour((rng.uniform(30, 80), rng.uniform(80, 140), rng.uniform(20, 60)))
            for _ in range(4):
                sp.ellipse(rng.uniform(0.25, 0.75) * w, rng.uniform(0.45, 0.7) * h, w * 0.3, h * 0.4, 0, green)
            tex = smooth_noise(rng, h, w, 3) * 30
        elif kind == 1:  # rock
            w, h = int(s * rng.uniform(0.06, 0.14) * scale) + 4, int(s * rng.uniform(0.04, 0.09) * scale) + 4
            sp = Sprite(w, h)
            grey = rng.uniform(90, 170)
            n = 7
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = rng.uniform(0.7, 1.0, n)
            pts = [(w / 2 * (1 + np.cos(a) * r), h / 2 * (1 + np.sin(a) * r)) for a, r in zip(ang, rad, strict=True)]
            sp.poly(pts, cv_colour((grey, grey * 0.97, grey * 0.92)))
            tex = smooth_noise(rng, h, w, 2) * 20
        elif kind == 2:  # house: a box with a roof, same palette as vehicles
            w, h = int(s * rng.uniform(0.12, 0.22) * scale) + 6, int(s * rng.uniform(0.12, 0.2) * scale) + 6
            sp = Sprite(w, h)
            sp.rect(0, h * 0.4, w - 1, h - 1, cv_colour(colour))
            sp.poly([(-1, h * 0.42), (w / 2, 0), (w, h * 0.42)], cv_colour((rng.uniform(90, 160), 50, 40)))
            sp.recolour(w * 0.2, h * 0.55, w * 0.4, h * 0.75, cv_colour((200, 220, 235)))
            sp.recolour(w * 0.6, h * 0.55, w * 0.8, h * 0.75, cv_colour((200, 220, 235)))
        else:  # post / pole (looks like a mast)
            w, h = max(3, int(s * 0.02)), int(s * rng.uniform(0.15, 0.3) * scale) + 4
            sp = Sprite(w, h)
            sp.rect(0, 0, w - 1, h - 1, cv_colour(colour * 0.6))
        c.stamp(sp, int(rng.uniform(-0.05, 0.95) * s), base_y - sp.h, 0, tex)
