"""The six foreground objects of a synthetic scene, one drawer per class.

A drawer is ``draw(canvas, height) -> (sprite, texture)``: ``height`` is the object's height in
pixels (the planner in :mod:`.scenes` picks it from the profile's ``object_scale`` and the
object's depth); ``sprite`` is a :class:`.canvas.Sprite` about ``height`` pixels high whose
width follows from the class's proportions, and ``texture`` is a float32 ``(sprite.h,
sprite.w)`` map added to every channel when the sprite is stamped. The drawer does not place
the sprite. :data:`DRAWERS` maps each foreground class of :data:`.profiles.CLASSES` to its
drawer.

Colours: an object's main colour is drawn from the shared :data:`.canvas.PALETTE` (plus a small
jitter), or, under a profile with ``class_colours``, from the one palette entry of its class.
Textures scale with the profile's ``texture`` amplitude: hull planks (boat), panel stripes
(train), flat cloth (person), a mottled coat (horse), speckles (bird) and a vertical gloss (car).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from seco_deploy.data.synth.canvas import PALETTE, Canvas, Sprite, cv_colour, smooth_noise

_CLASS_COLOUR = {"boat": 0, "train": 3, "person": 1, "horse": 8, "bird": 5, "car": 11}  # PALETTE rows
_SKIN = np.array([(230, 190, 160), (200, 150, 110), (150, 100, 70), (100, 70, 50)], dtype=np.float32)
_COAT = np.array([(110, 70, 40), (60, 40, 30), (30, 25, 25), (200, 190, 175), (150, 110, 70)], dtype=np.float32)


def _object_colour(c: Canvas, cls: str) -> np.ndarray:
    rng = c.rng
    if c.profile.class_colours:
        base = PALETTE[_CLASS_COLOUR[cls]]
    else:
        base = PALETTE[rng.integers(len(PALETTE))]
    return base + rng.uniform(-18, 18, 3).astype(np.float32)


def _stripes(h: int, w: int, period: float, amplitude: float, vertical: bool) -> np.ndarray:
    axis = np.arange(w if vertical else h, dtype=np.float32)
    wave = amplitude * np.sign(np.sin(2 * np.pi * axis / max(2.0, period)))
    return np.broadcast_to(wave[None, :] if vertical else wave[:, None], (h, w)).astype(np.float32)


def _boat(c: Canvas, height: float) -> tuple[Sprite, np.ndarray]:
    rng = c.rng
    h = max(8, int(height))
    w = max(10, int(h * rng.uniform(1.1, 1.6)))
    sp = Sprite(w, h)
    hull = _object_colour(c, "boat")
    right = rng.random() < 0.5
    hull_top = h * rng.uniform(0.6, 0.68)
    bow, stern = (w - 1, 0) if right else (0, w - 1)
    keel_bow, keel_stern = w * (0.78 if right else 0.22), w * (0.1 if right else 0.9)
    pts = [(stern, hull_top), (bow, hull_top - h * 0.06), (keel_bow, h - 1), (keel_stern, h - 1)]
    sp.poly(pts, cv_colour(hull))
    sp.recolour(0, hull_top, w, hull_top + max(1, h * 0.07), cv_colour(hull * 0.5 + 110))
    mast_x = w * rng.uniform(0.4, 0.55)
    if rng.random() < 0.6:
        cab0 = w * (0.2 if right else 0.45)
        sp.rect(cab0, hull_top - h * 0.16, cab0 + w * 0.3, hull_top, cv_colour(PALETTE[rng.integers(len(PALETTE))]))
    sail = cv_colour((rng.uniform(215, 250), rng.uniform(210, 245), rng.uniform(195, 235)))
    tip = w * (0.92 if right else 0.08)
    sp.poly([(mast_x, h * 0.02), (mast_x, hull_top - h * 0.05), (tip, hull_top - h * 0.07)], sail)
    sp.line(mast_x, 0, mast_x, hull_top, cv_colour((70, 55, 40)), max(1, w * 0.03))
    planks = _stripes(h, w, max(3, h * 0.08), c.profile.texture * 0.6, vertical=False)
    return sp, planks + smooth_noise(rng, h, w, 4) * c.profile.texture * 0.5


def _train(c: Canvas, height: float) -> tuple[Sprite, np.ndarray]:
    rng = c.rng
    h = max(8, int(height))
    cars = int(rng.integers(1, 3))
    car_w = h * rng.uniform(1.3, 1.7)
    w = int(car_w * cars + h * 0.5)
    sp = Sprite(w, h)
    body = _object_colour(c, "train")
    left = rng.random() < 0.5
    nose = h * 0.5
    if left:
        pts = [(nose, 0), (w - 1, 0), (w - 1, h * 0.85), (0, h * 0.85), (0, h * 0.45)]
    else:
        pts = [(0, 0), (w - 1 - nose, 0), (w - 1, h * 0.45), (w - 1, h * 0.85), (0, h * 0.85)]
    sp.poly(pts, cv_colour(body))
    stripe = cv_colour(body * 0.4 + 140)
    sp.recolour(0, h * 0.6, w, h * 0.68, stripe)
    win = cv_colour((rng.uniform(150, 200), rng.uniform(190, 220), rng.uniform(215, 240)))
    n_win = max(2, int(car_w / (h * 0.32)))
    start = nose if left else 0.0
    for k in range(cars):
        x0 = start + k * car_w
        for j in range(n_win):
            wx = x0 + car_w * (0.08 + 0.86 * j / n_win)
            sp.recolour(wx, h * 0.15, wx + car_w * 0.86 / n_win * 0.65, h * 0.42, win)
        sp.recolour(x0 + car_w - max(1, h * 0.04), 0, x0 + car_w + max(1, h * 0.04), h * 0.85, cv_colour(body * 0.3))
    r = h * 0.1
    for k in range(cars):
        x0 = start + k * car_w
        for f in (0.2, 0.8):
            sp.ellipse(x0 + car_w * f, h - 1 - r, r, r, 0, cv_colour((30, 30, 32)))
    panels = _stripes(h, w, max(3, h * 0.25), c.profile.texture * 0.4, vertical=True)
    return sp, panels + smooth_noise(rng, h, w, 6) * c.profile.texture * 0.4


def _person(c: Canvas, height: float) -> tuple[Sprite, np.ndarray]:
    rng = c.rng
    h = max(10, int(height))
    w = max(5, int(h * 0.5))
    sp = Sprite(w, h)
    shirt = _object_colour(c, "person")
    trousers = PALETTE[rng.integers(len(PALETTE))] * 0.6
    skin = _SKIN[rng.integers(len(_SKIN))]
    cx = w / 2
    limb = max(1, h * 0.08)
    sp.line(cx - w * 0.1, h * 0.6, cx - w * 0.16, h - 1, cv_colour(trousers), limb * 1.2)
    sp.line(cx + w * 0.1, h * 0.6, cx + w * 0.16, h - 1, cv_colour(trousers), limb * 1.2)
    torso = [(cx - w * 0.22, h * 0.2), (cx + w * 0.22, h * 0.2), (cx + w * 0.18, h * 0.62), (cx - w * 0.18, h * 0.62)]
    sp.poly(torso, cv_colour(shirt))
    swing = rng.uniform(-0.15, 0.15)
    sp.line(cx - w * 0.22, h * 0.23, cx - w * (0.4 + swing), h * 0.5, cv_colour(shirt), limb)
    sp.line(cx + w * 0.22, h * 0.23, cx + w * (0.4 - swing), h * 0.5, cv_colour(shirt), limb)
    sp.ellipse(cx, h * 0.1, h * 0.075, h * 0.09, 0, cv_colour(skin))
    return sp, smooth_noise(rng, h, w, 3) * c.profile.texture * 0.3


def _horse(c: Canvas, height: float) -> tuple[Sprite, np.ndarray]:
    rng = c.rng
    h = max(10, int(height))
    w = max(12, int(h * rng.uniform(1.2, 1.45)))
    sp = Sprite(w, h)
    coat = _COAT[rng.integers(len(_COAT))] if not c.profile.class_colours else PALETTE[_CLASS_COLOUR["horse"]]
    coat = coat + rng.uniform(-15, 15, 3).astype(np.float32)
    col = cv_colour(coat)
    face_right = rng.random() < 0.5
    sgn = 1 if face_right else -1
    cx = w * 0.47
    body_y, body_ax, body_ay = h * 0.45, w * 0.3, h * 0.15
    leg = max(1, w * 0.045)
    for dx in (-0.22, -0.14, 0.14, 0.22):
        lx = cx + dx * w
        sp.line(lx, body_y, lx + rng.uniform(-0.03, 0.03) * w, h - 1, col, leg)
    sp.ellipse(cx, body_y, body_ax, body_ay, 0, col)
    nx = cx + sgn * body_ax * 0.8
    sp.poly([(nx - sgn * w * 0.06, body_y), (nx + sgn * w * 0.08, body_y - h * 0.05),
             (nx + sgn * w * 0.18, h * 0.1), (nx + sgn * w * 0.08, h * 0.06)], col)  # fmt: skip
    sp.ellipse(nx + sgn * w * 0.2, h * 0.12, w * 0.09, h * 0.05, -sgn * 25, col)
    tail_x = cx - sgn * body_ax
    sp.line(tail_x, body_y - h * 0.05, tail_x - sgn * w * 0.08, body_y + h * 0.22, cv_colour(coat * 0.5), leg)
    return sp, smooth_noise(rng, h, w, 3) * c.profile.texture


def _bird(c: Canvas, height: float) -> tuple[Sprite, np.ndarray]:
    rng = c.rng
    h = max(5, int(height))
    w = max(8, int(h * rng.uniform(1.6, 2.2)))
    sp = Sprite(w, h)
    col = cv_colour(_object_colour(c, "bird") * 0.7)
    up = rng.uniform(0.0, 0.3) * h
    sp.poly([(w * 0.5, h * 0.55), (0, up), (w * 0.2, up + h * 0.1), (w * 0.5, h * 0.45)], col)
    sp.poly([(w * 0.5, h * 0.55), (w - 1, up), (w * 0.8, up + h * 0.1), (w * 0.5, h * 0.45)], col)
    sp.ellipse(w * 0.5, h * 0.6, w * 0.16, h * 0.17, 0, col)
    speckle = rng.standard_normal((h, w)).astype(np.float32) * c.profile.texture * 0.6
    return sp, speckle


def _car(c: Canvas, height: float) -> tuple[Sprite, np.ndarray]:
    rng = c.rng
    h = max(8, int(height))
    w = max(12, int(h * rng.uniform(1.8, 2.3)))
    sp = Sprite(w, h)
    body = _object_colour(c, "car")
    sp.poly([(0, h * 0.45), (w - 1, h * 0.45), (w - 1, h * 0.85), (0, h * 0.85)], cv_colour(body))
    sp.poly([(w * 0.2, h * 0.45), (w * 0.32, h * 0.08), (w * 0.68, h * 0.08), (w * 0.82, h * 0.45)], cv_colour(body))
    glass = cv_colour((rng.uniform(140, 190), rng.uniform(170, 210), rng.uniform(200, 230)))
    sp.recolour(w * 0.3, h * 0.15, w * 0.48, h * 0.42, glass)
    sp.recolour(w * 0.52, h * 0.15, w * 0.72, h * 0.42, glass)
    r = h * 0.17
    for f in (0.22, 0.78):
        sp.ellipse(w * f, h - 1 - r, r, r, 0, cv_colour((25, 25, 28)))
        sp.ellipse(w * f, h - 1 - r, r * 0.45, r * 0.45, 0, cv_colour((160, 160, 165)))
    gloss = np.linspace(c.profile.texture, -c.profile.texture, h, dtype=np.float32)[:, None]
    return sp, np.broadcast_to(gloss, (h, w)) + smooth_noise(rng, h, w, 5) * c.profile.texture * 0.3


DRAWERS: dict[str, Callable[[Canvas, float], tuple[Sprite, np.ndarray]]] = {
    "boat": _boat,
    "train": _train,
    "person": _person,
    "horse": _horse,
    "bird": _bird,
    "car": _car,
}
