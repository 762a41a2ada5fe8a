"""A synthetic dataset that has the co-occurrence problem SeCo targets, in VOC layout.

Scenes: a sky above a horizon and textured ground below, with background clutter (bushes,
rocks, houses, posts, clouds). Six foreground classes with distinct shapes and textures:

============  ==================================================  ==========================
class         shape / texture                                     coupling
============  ==================================================  ==========================
boat          hull with a bow, cabin, mast and sail; hull planks  on ``water`` (context)
train         long body with car joints, window row, wheels       on ``rails`` (context)
person        head, torso, arms, legs; flat cloth                 rides a horse (partner)
horse         body, neck, head, four legs, tail; mottled coat     carries a person (partner)
bird          small body with two wings, in the sky; speckled     none
car           body, cabin with windows, two wheels; glossy        none
============  ==================================================  ==========================

``water`` (a rippled band at the bottom) and ``rails`` (gravel, sleepers and two rails across
the image) are background in the ground-truth masks. In the ``cooccur`` profile a boat is on
water and a train on rails 97 % of the time, and a context shows up without its class in only
about 7 % of the images, so a classifier trained from image tags can score "boat" by looking at
the water, and its CAM lights the water up. Objects take their colours from one shared palette,
so colour alone does not tell classes apart.

Profiles (``--difficulty``): ``easy`` (loose coupling, large objects with a colour per class),
``cooccur`` (the trap above), ``hard`` (default: contexts never absent from their class and
almost never alone, smaller objects, more clutter and noise). ``hard`` is the default because it
is the profile on which a plain-CAM classifier trained from scratch on this CPU measurably falls
into the trap (docs/benchmarks.md); on ``cooccur`` it did not.

Output (``synthesize``)::

    OUT/JPEGImages/NAME.jpg              RGB, JPEG quality 92 (deterministic encoder)
    OUT/SegmentationClass/NAME.png       8-bit palette masks, exact (0 background)
    OUT/ContextMasks/NAME.png            per pixel context id (1 water, 2 rails, 0 none);
                                         visible context pixels only (objects excluded)
    OUT/ImageSets/Segmentation/{train,val,trainval}.txt
    OUT/tags.csv                         image,tags,split (tags = classes present in the mask)
    OUT/classes.txt                      background first
    OUT/synth.json                       parameters, classes, contexts, couplings, statistics

Every image is drawn from its own generator seeded by ``(seed, index)``, so the same seed
gives the same bytes, and image ``i`` does not depend on how many images are made. The set is
written to a temporary folder beside ``OUT`` and renamed into place at the end.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from seco_deploy.data.io import atomic_write_bytes, encode_mask_png
from seco_deploy.data.palette import VOC_PALETTE

__all__ = [
    "CLASSES",
    "CONTEXTS",
    "CONTEXT_OF",
    "PAIRS",
    "PROFILES",
    "Scene",
    "SynthProfile",
    "SynthSummary",
    "contact_sheet",
    "load_synth_info",
    "read_context_mask",
    "render_scene",
    "synthesize",
]

CLASSES: tuple[str, ...] = ("background", "boat", "train", "person", "horse", "bird", "car")
CONTEXTS: tuple[str, ...] = ("none", "water", "rails")  # index = value in ContextMasks
CONTEXT_OF: dict[str, str] = {"boat": "water", "train": "rails"}
PAIRS: tuple[tuple[str, str], ...] = (("horse", "person"),)

_CLS = {name: i for i, name in enumerate(CLASSES)}
_CTX = {name: i for i, name in enumerate(CONTEXTS)}
SYNTH_VERSION = 1


@dataclass(frozen=True)
class SynthProfile:
    """How a synthetic set is sampled. Rates are probabilities per image."""

    name: str
    description: str
    p_boat: float = 0.3
    p_train: float = 0.3
    p_horse: float = 0.25
    p_person_alone: float = 0.15  # a person without a horse
    p_bird: float = 0.2
    p_car: float = 0.25
    context_given_class: float = 0.97  # P(water | boat) = P(rails | train)
    context_alone: float = 0.05  # per context: fraction of all images showing it without its class
    pair_rate: float = 0.8  # P(a person rides | horse)
    object_scale: tuple[float, float] = (0.24, 0.4)  # object height / image side (before perspective)
    class_colours: bool = False  # True: one colour family per class (trivially distinctive)
    clutter: tuple[int, int] = (2, 5)
    noise: float = 7.0  # std of per-pixel sensor noise (0-255 scale)
    texture: float = 14.0  # amplitude of object textures


PROFILES: dict[str, SynthProfile] = {
    "easy": SynthProfile(
        name="easy",
        description="loose coupling (each context alone in ~25% of images), big objects, one colour per class",
        context_given_class=0.7,
        context_alone=0.25,
        pair_rate=0.4,
        object_scale=(0.32, 0.5),
        class_colours=True,
        clutter=(0, 2),
        noise=4.0,
        texture=18.0,
    ),
    "cooccur": SynthProfile(
        name="cooccur",
        description="the co-occurrence trap: boats on water and trains on rails 97% of the time, "
        "each context alone in ~5% of images, shared colours",
    ),
    "hard": SynthProfile(
        name="hard",
        description="contexts always with their class and alone in ~1.5% of images, small objects, heavy clutter",
        context_given_class=1.0,
        context_alone=0.015,
        pair_rate=0.92,
        object_scale=(0.18, 0.3),
        clutter=(4, 8),
        noise=11.0,
        texture=10.0,
    ),
}

# Shared object palette (RGB). With ``class_colours`` each class keeps one entry.
_PALETTE = np.array(
    [
        (200, 40, 40), (40, 70, 180), (40, 140, 60), (230, 200, 50), (235, 235, 230), (35, 35, 40),
        (130, 130, 135), (230, 120, 30), (120, 75, 40), (30, 40, 90), (30, 140, 140), (120, 50, 140),
    ],
    dtype=np.float32,
)  # fmt: skip
_CLASS_COLOUR = {"boat": 0, "train": 3, "person": 1, "horse": 8, "bird": 5, "car": 11}
_SKIN = np.array([(230, 190, 160), (200, 150, 110), (150, 100, 70), (100, 70, 50)], dtype=np.float32)
_COAT = np.array([(110, 70, 40), (60, 40, 30), (30, 25, 25), (200, 190, 175), (150, 110, 70)], dtype=np.float32)


@dataclass
class Scene:
    """One rendered image: ``image`` uint8 (S, S, 3), ``mask`` and ``context`` uint8 (S, S)."""

    image: np.ndarray
    mask: np.ndarray
    context: np.ndarray

    @property
    def tags(self) -> np.ndarray:
        """Multi-hot ``float32 (C,)`` of the classes visible in the mask."""
        counts = np.bincount(self.mask.ravel(), minlength=len(CLASSES))[: len(CLASSES)]
        return (counts[1:] > 0).astype(np.float32)


# ---------------------------------------------------------------------------- drawing helpers
def _col(values: np.ndarray | tuple[float, ...]) -> tuple[int, int, int]:
    v = np.clip(np.asarray(values, dtype=np.float32), 0, 255)
    return (int(v[0]), int(v[1]), int(v[2]))


def _lowfreq(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth noise in about [-1, 1], (h, w) float32, features about ``cell`` pixels wide."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) * 0.6


class _Sprite:
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


class _Canvas:
    """The scene being drawn: image (float32), class mask and context mask."""

    def __init__(self, size: int, rng: np.random.Generator, profile: SynthProfile) -> None:
        self.size = size
        self.rng = rng
        self.profile = profile
        self.image = np.zeros((size, size, 3), dtype=np.float32)
        self.mask = np.zeros((size, size), dtype=np.uint8)
        self.context = np.zeros((size, size), dtype=np.uint8)

    def stamp(self, sprite: _Sprite, x: int, y: int, cls: int, texture: np.ndarray | None) -> None:
        """Paste ``sprite`` with its top-left corner at (x, y); covered pixels get class ``cls``."""
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


# ---------------------------------------------------------------------------- backgrounds
def _draw_sky_and_ground(c: _Canvas, horizon: int) -> None:
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
    blotch = _lowfreq(rng, h, s, max(4, s // 10))[..., None] * 22
    c.image[horizon:] = base * shade + blotch


def _draw_water(c: _Canvas, top: int) -> None:
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
    light = 26 * wave + 40 * np.clip(wave - 0.75, 0, None) * 4 + _lowfreq(rng, h, s, max(4, s // 8)) * 12
    band = base[None, None, :] * (0.8 + 0.3 * depth[..., None]) + light[..., None]
    c.image[top:] = band
    c.mask[top:] = 0
    c.context[top:] = _CTX["water"]


def _draw_rails(c: _Canvas, center: int, height: int) -> None:
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
    c.context[y0:y1] = _CTX["rails"]


def _draw_clutter(c: _Canvas, horizon: int, ground_end: int, count: int) -> None:
    """Background things: bushes, rocks, houses, posts on the ground; clouds in the sky."""
    rng, s = c.rng, c.size
    for _ in range(count):
        kind = int(rng.integers(5))
        if kind == 4 or ground_end - horizon < 6:  # cloud
            w, h = int(s * rng.uniform(0.12, 0.3)), int(s * rng.uniform(0.05, 0.1))
            sp = _Sprite(w, h)
            grey = rng.uniform(225, 252)
            for _ in range(3):
                cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.4, 0.6) * h
                sp.ellipse(cx, cy, w * 0.28, h * 0.45, 0, _col((grey,) * 3))
            c.stamp(sp, int(rng.uniform(-0.1, 0.9) * s), int(rng.uniform(0.02, 0.7) * max(1, horizon - h)), 0, None)
            continue
        base_y = int(rng.uniform(horizon, ground_end))
        scale = 0.4 + 0.6 * (base_y - horizon) / max(1, s - horizon)
        colour = _PALETTE[rng.integers(len(_PALETTE))] + rng.uniform(-20, 20, 3).astype(np.float32)
        tex = None
        if kind == 0:  # bush
            w, h = int(s * rng.uniform(0.1, 0.2) * scale) + 4, int(s * rng.uniform(0.07, 0.14) * scale) + 4
            sp = _Sprite(w, h)
            green = _col((rng.uniform(30, 80), rng.uniform(80, 140), rng.uniform(20, 60)))
            for _ in range(4):
                sp.ellipse(rng.uniform(0.25, 0.75) * w, rng.uniform(0.45, 0.7) * h, w * 0.3, h * 0.4, 0, green)
            tex = _lowfreq(rng, h, w, 3) * 30
        elif kind == 1:  # rock
            w, h = int(s * rng.uniform(0.06, 0.14) * scale) + 4, int(s * rng.uniform(0.04, 0.09) * scale) + 4
            sp = _Sprite(w, h)
            grey = rng.uniform(90, 170)
            n = 7
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = rng.uniform(0.7, 1.0, n)
            pts = [(w / 2 * (1 + np.cos(a) * r), h / 2 * (1 + np.sin(a) * r)) for a, r in zip(ang, rad, strict=True)]
            sp.poly(pts, _col((grey, grey * 0.97, grey * 0.92)))
            tex = _lowfreq(rng, h, w, 2) * 20
        elif kind == 2:  # house: a box with a roof, same palette as vehicles
            w, h = int(s * rng.uniform(0.12, 0.22) * scale) + 6, int(s * rng.uniform(0.12, 0.2) * scale) + 6
            sp = _Sprite(w, h)
            sp.rect(0, h * 0.4, w - 1, h - 1, _col(colour))
            sp.poly([(-1, h * 0.42), (w / 2, 0), (w, h * 0.42)], _col((rng.uniform(90, 160), 50, 40)))
            sp.recolour(w * 0.2, h * 0.55, w * 0.4, h * 0.75, _col((200, 220, 235)))
            sp.recolour(w * 0.6, h * 0.55, w * 0.8, h * 0.75, _col((200, 220, 235)))
        else:  # post / pole (looks like a mast)
            w, h = max(3, int(s * 0.02)), int(s * rng.uniform(0.15, 0.3) * scale) + 4
            sp = _Sprite(w, h)
            sp.rect(0, 0, w - 1, h - 1, _col(colour * 0.6))
        c.stamp(sp, int(rng.uniform(-0.05, 0.95) * s), base_y - sp.h, 0, tex)


# ---------------------------------------------------------------------------- objects
def _object_colour(c: _Canvas, cls: str) -> np.ndarray:
    rng = c.rng
    if c.profile.class_colours:
        base = _PALETTE[_CLASS_COLOUR[cls]]
    else:
        base = _PALETTE[rng.integers(len(_PALETTE))]
    return base + rng.uniform(-18, 18, 3).astype(np.float32)


def _stripes(h: int, w: int, period: float, amplitude: float, vertical: bool) -> np.ndarray:
    axis = np.arange(w if vertical else h, dtype=np.float32)
    wave = amplitude * np.sign(np.sin(2 * np.pi * axis / max(2.0, period)))
    return np.broadcast_to(wave[None, :] if vertical else wave[:, None], (h, w)).astype(np.float32)


def _boat(c: _Canvas, height: float) -> tuple[_Sprite, np.ndarray]:
    rng = c.rng
    h = max(8, int(height))
    w = max(10, int(h * rng.uniform(1.1, 1.6)))
    sp = _Sprite(w, h)
    hull = _object_colour(c, "boat")
    right = rng.random() < 0.5
    hull_top = h * rng.uniform(0.6, 0.68)
    bow, stern = (w - 1, 0) if right else (0, w - 1)
    keel_bow, keel_stern = w * (0.78 if right else 0.22), w * (0.1 if right else 0.9)
    pts = [(stern, hull_top), (bow, hull_top - h * 0.06), (keel_bow, h - 1), (keel_stern, h - 1)]
    sp.poly(pts, _col(hull))
    sp.recolour(0, hull_top, w, hull_top + max(1, h * 0.07), _col(hull * 0.5 + 110))
    mast_x = w * rng.uniform(0.4, 0.55)
    if rng.random() < 0.6:
        cab0 = w * (0.2 if right else 0.45)
        sp.rect(cab0, hull_top - h * 0.16, cab0 + w * 0.3, hull_top, _col(_PALETTE[rng.integers(len(_PALETTE))]))
    sail = _col((rng.uniform(215, 250), rng.uniform(210, 245), rng.uniform(195, 235)))
    tip = w * (0.92 if right else 0.08)
    sp.poly([(mast_x, h * 0.02), (mast_x, hull_top - h * 0.05), (tip, hull_top - h * 0.07)], sail)
    sp.line(mast_x, 0, mast_x, hull_top, _col((70, 55, 40)), max(1, w * 0.03))
    planks = _stripes(h, w, max(3, h * 0.08), c.profile.texture * 0.6, vertical=False)
    return sp, planks + _lowfreq(rng, h, w, 4) * c.profile.texture * 0.5


def _train(c: _Canvas, height: float) -> tuple[_Sprite, np.ndarray]:
    rng = c.rng
    h = max(8, int(height))
    cars = int(rng.integers(1, 3))
    car_w = h * rng.uniform(1.3, 1.7)
    w = int(car_w * cars + h * 0.5)
    sp = _Sprite(w, h)
    body = _object_colour(c, "train")
    left = rng.random() < 0.5
    nose = h * 0.5
    if left:
        pts = [(nose, 0), (w - 1, 0), (w - 1, h * 0.85), (0, h * 0.85), (0, h * 0.45)]
    else:
        pts = [(0, 0), (w - 1 - nose, 0), (w - 1, h * 0.45), (w - 1, h * 0.85), (0, h * 0.85)]
    sp.poly(pts, _col(body))
    stripe = _col(body * 0.4 + 140)
    sp.recolour(0, h * 0.6, w, h * 0.68, stripe)
    win = _col((rng.uniform(150, 200), rng.uniform(190, 220), rng.uniform(215, 240)))
    n_win = max(2, int(car_w / (h * 0.32)))
    start = nose if left else 0.0
    for k in range(cars):
        x0 = start + k * car_w
        for j in range(n_win):
            wx = x0 + car_w * (0.08 + 0.86 * j / n_win)
            sp.recolour(wx, h * 0.15, wx + car_w * 0.86 / n_win * 0.65, h * 0.42, win)
        sp.recolour(x0 + car_w - max(1, h * 0.04), 0, x0 + car_w + max(1, h * 0.04), h * 0.85, _col(body * 0.3))
    r = h * 0.1
    for k in range(cars):
        x0 = start + k * car_w
        for f in (0.2, 0.8):
            sp.ellipse(x0 + car_w * f, h - 1 - r, r, r, 0, _col((30, 30, 32)))
    panels = _stripes(h, w, max(3, h * 0.25), c.profile.texture * 0.4, vertical=True)
    return sp, panels + _lowfreq(rng, h, w, 6) * c.profile.texture * 0.4


def _person(c: _Canvas, height: float) -> tuple[_Sprite, np.ndarray]:
    rng = c.rng
    h = max(10, int(height))
    w = max(5, int(h * 0.5))
    sp = _Sprite(w, h)
    shirt = _object_colour(c, "person")
    trousers = _PALETTE[rng.integers(len(_PALETTE))] * 0.6
    skin = _SKIN[rng.integers(len(_SKIN))]
    cx = w / 2
    limb = max(1, h * 0.08)
    sp.line(cx - w * 0.1, h * 0.6, cx - w * 0.16, h - 1, _col(trousers), limb * 1.2)
    sp.line(cx + w * 0.1, h * 0.6, cx + w * 0.16, h - 1, _col(trousers), limb * 1.2)
    torso = [(cx - w * 0.22, h * 0.2), (cx + w * 0.22, h * 0.2), (cx + w * 0.18, h * 0.62), (cx - w * 0.18, h * 0.62)]
    sp.poly(torso, _col(shirt))
    swing = rng.uniform(-0.15, 0.15)
    sp.line(cx - w * 0.22, h * 0.23, cx - w * (0.4 + swing), h * 0.5, _col(shirt), limb)
    sp.line(cx + w * 0.22, h * 0.23, cx + w * (0.4 - swing), h * 0.5, _col(shirt), limb)
    sp.ellipse(cx, h * 0.1, h * 0.075, h * 0.09, 0, _col(skin))
    return sp, _lowfreq(rng, h, w, 3) * c.profile.texture * 0.3


def _horse(c: _Canvas, height: float) -> tuple[_Sprite, np.ndarray]:
    rng = c.rng
    h = max(10, int(height))
    w = max(12, int(h * rng.uniform(1.2, 1.45)))
    sp = _Sprite(w, h)
    coat = _COAT[rng.integers(len(_COAT))] if not c.profile.class_colours else _PALETTE[_CLASS_COLOUR["horse"]]
    coat = coat + rng.uniform(-15, 15, 3).astype(np.float32)
    col = _col(coat)
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
    sp.line(tail_x, body_y - h * 0.05, tail_x - sgn * w * 0.08, body_y + h * 0.22, _col(coat * 0.5), leg)
    return sp, _lowfreq(rng, h, w, 3) * c.profile.texture


def _bird(c: _Canvas, height: float) -> tuple[_Sprite, np.ndarray]:
    rng = c.rng
    h = max(5, int(height))
    w = max(8, int(h * rng.uniform(1.6, 2.2)))
    sp = _Sprite(w, h)
    col = _col(_object_colour(c, "bird") * 0.7)
    up = rng.uniform(0.0, 0.3) * h
    sp.poly([(w * 0.5, h * 0.55), (0, up), (w * 0.2, up + h * 0.1), (w * 0.5, h * 0.45)], col)
    sp.poly([(w * 0.5, h * 0.55), (w - 1, up), (w * 0.8, up + h * 0.1), (w * 0.5, h * 0.45)], col)
    sp.ellipse(w * 0.5, h * 0.6, w * 0.16, h * 0.17, 0, col)
    speckle = rng.standard_normal((h, w)).astype(np.float32) * c.profile.texture * 0.6
    return sp, speckle


def _car(c: _Canvas, height: float) -> tuple[_Sprite, np.ndarray]:
    rng = c.rng
    h = max(8, int(height))
    w = max(12, int(h * rng.uniform(1.8, 2.3)))
    sp = _Sprite(w, h)
    body = _object_colour(c, "car")
    sp.poly([(0, h * 0.45), (w - 1, h * 0.45), (w - 1, h * 0.85), (0, h * 0.85)], _col(body))
    sp.poly([(w * 0.2, h * 0.45), (w * 0.32, h * 0.08), (w * 0.68, h * 0.08), (w * 0.82, h * 0.45)], _col(body))
    glass = _col((rng.uniform(140, 190), rng.uniform(170, 210), rng.uniform(200, 230)))
    sp.recolour(w * 0.3, h * 0.15, w * 0.48, h * 0.42, glass)
    sp.recolour(w * 0.52, h * 0.15, w * 0.72, h * 0.42, glass)
    r = h * 0.17
    for f in (0.22, 0.78):
        sp.ellipse(w * f, h - 1 - r, r, r, 0, _col((25, 25, 28)))
        sp.ellipse(w * f, h - 1 - r, r * 0.45, r * 0.45, 0, _col((160, 160, 165)))
    gloss = np.linspace(c.profile.texture, -c.profile.texture, h, dtype=np.float32)[:, None]
    return sp, np.broadcast_to(gloss, (h, w)) + _lowfreq(rng, h, w, 5) * c.profile.texture * 0.3


_DRAW = {"boat": _boat, "train": _train, "person": _person, "horse": _horse, "bird": _bird, "car": _car}


# ---------------------------------------------------------------------------- scenes
@dataclass
class _Plan:
    boats: int = 0
    trains: int = 0
    horses: int = 0
    riders: int = 0
    persons: int = 0  # standing persons
    birds: int = 0
    cars: int = 0
    water: bool = False
    rails: bool = False


def _plan(rng: np.random.Generator, p: SynthProfile) -> _Plan:
    """Draw what the image holds; every draw is made in a fixed order."""
    plan = _Plan()
    draws = rng.random(12)
    plan.boats = int(draws[0] < p.p_boat) * (1 + int(draws[6] < 0.25))
    plan.trains = int(draws[1] < p.p_train)
    plan.horses = int(draws[2] < p.p_horse) * (1 + int(draws[7] < 0.2))
    plan.riders = int(plan.horses > 0 and draws[8] < p.pair_rate)
    plan.persons = int(draws[3] < p.p_person_alone) * (1 + int(draws[9] < 0.3))
    plan.birds = int(draws[4] < p.p_bird) * (1 + int(draws[10] * 3))
    plan.cars = int(draws[5] < p.p_car)
    # P(context | class) and a share of context-only images; q keeps the overall alone rate.
    coupled = rng.random(4)
    q_water = min(1.0, p.context_alone / max(1e-6, 1 - p.p_boat))
    q_rails = min(1.0, p.context_alone / max(1e-6, 1 - p.p_train))
    plan.water = bool(coupled[0] < p.context_given_class) if plan.boats else bool(coupled[1] < q_water)
    plan.rails = bool(coupled[2] < p.context_given_class) if plan.trains else bool(coupled[3] < q_rails)
    return plan


def render_scene(rng: np.random.Generator, size: int, profile: SynthProfile) -> Scene:
    """Draw one scene of ``size`` x ``size`` pixels with ``rng`` under ``profile``."""
    s = int(size)
    c = _Canvas(s, rng, profile)
    plan = _plan(rng, profile)
    land = plan.horses + plan.persons + plan.cars + plan.trains * (1 - int(plan.rails)) + plan.boats * (
        1 - int(plan.water)
    )
    horizon = int(s * rng.uniform(0.28, 0.45))
    if plan.water:
        need = (0.2 if land else 0.0) + (0.14 if plan.rails else 0.0)
        low = horizon + need * s
        water_top = int(rng.uniform(low, max(low + 1, s * 0.72 if need else horizon + 0.15 * s)))
        water_top = min(water_top, int(s * 0.8))
    else:
        water_top = s
    _draw_sky_and_ground(c, horizon)
    rail_h = max(6, int(s * rng.uniform(0.16, 0.24)))
    rails_center = 0
    if plan.rails:
        lo, hi = horizon + rail_h, max(horizon + rail_h + 1, water_top - rail_h // 2)
        rails_center = int(rng.uniform(lo + 0.3 * (hi - lo), hi))
        _draw_rails(c, rails_center, rail_h)
    if plan.water:
        _draw_water(c, water_top)
    ground_end = water_top if plan.water else s
    if plan.rails:
        ground_end_free = rails_center - rail_h // 2
    else:
        ground_end_free = ground_end
    n_clutter = int(rng.integers(profile.clutter[0], profile.clutter[1] + 1))
    _draw_clutter(c, horizon, max(horizon + 1, ground_end_free), n_clutter)

    # (baseline row, class, height, x centre) of every object; drawn far to near.
    items: list[tuple[float, str, float, float]] = []
    lo_scale, hi_scale = profile.object_scale

    def size_at(row: float, factor: float) -> float:
        depth = (row - horizon) / max(1.0, s - horizon)
        return s * rng.uniform(lo_scale, hi_scale) * factor * (0.65 + 0.5 * depth)

    for _ in range(plan.boats):
        if plan.water:
            row = rng.uniform(water_top + 0.25 * (s - water_top), s * 0.97)
        else:
            row = rng.uniform(horizon + 0.3 * (ground_end - horizon), ground_end)
        items.append((row, "boat", size_at(row, 1.2), rng.uniform(0.12, 0.88) * s))
    for _ in range(plan.trains):
        if plan.rails:
            row = rails_center - rail_h * 0.08
            height = max(rail_h * 1.3, size_at(row, 0.7))
        else:
            row = rng.uniform(horizon + 0.3 * (ground_end - horizon), ground_end)
            height = size_at(row, 0.75)
        items.append((row, "train", height, rng.uniform(0.1, 0.9) * s))
    ground_lo = horizon + 0.15 * (ground_end_free - horizon)
    ground_hi = max(ground_lo + 1, ground_end_free if not plan.rails else ground_end)
    for _ in range(plan.horses):
        row = rng.uniform(ground_lo, ground_hi)
        items.append((row, "horse", size_at(row, 1.0), rng.uniform(0.15, 0.85) * s))
    for _ in range(plan.cars):
        row = rng.uniform(ground_lo, ground_hi)
        items.append((row, "car", size_at(row, 0.7), rng.uniform(0.12, 0.88) * s))
    for _ in range(plan.persons):
        row = rng.uniform(ground_lo, ground_hi)
        items.append((row, "person", size_at(row, 1.0), rng.uniform(0.1, 0.9) * s))
    for _ in range(plan.birds):
        row = rng.uniform(0.08, 0.9) * horizon
        height = s * rng.uniform(0.09, 0.15) * (1.3 if lo_scale > 0.3 else 1.0)
        items.append((row, "bird", height, rng.uniform(0.1, 0.9) * s))
    items.sort(key=lambda item: item[0])

    riders_left = plan.riders
    for row, cls, height, xc in items:
        sprite, texture = _DRAW[cls](c, height)
        x = int(round(xc - sprite.w / 2))
        y = int(round(row - sprite.h))
        c.stamp(sprite, x, y, _CLS[cls], texture)
        if cls == "horse" and riders_left > 0:
            riders_left -= 1
            rider, rider_tex = _person(c, sprite.h * 0.9)
            rx = x + int(sprite.w * rng.uniform(0.35, 0.55)) - rider.w // 2
            ry = y + int(sprite.h * 0.5) - rider.h
            c.stamp(rider, rx, ry, _CLS["person"], rider_tex)

    noise = rng.standard_normal((s, s, 3), dtype=np.float32) * profile.noise
    image = cv2.GaussianBlur(c.image + noise, (0, 0), 0.6)
    return Scene(image=np.clip(image + 0.5, 0, 255).astype(np.uint8), mask=c.mask, context=c.context)


# ---------------------------------------------------------------------------- the dataset
@dataclass
class SynthSummary:
    """What ``synthesize`` wrote, with the figures the CLI prints."""

    out_dir: Path
    images: int
    train: int
    val: int
    profile: str
    images_per_class: dict[str, int]
    context_given_class: dict[str, float]  # P(context visible | class visible)
    context_alone: dict[str, float]  # fraction of images with the context but not its class
    pair_rate: dict[str, float]  # "person|horse": P(person visible | horse visible), and the reverse
    mean_area: dict[str, float]  # mean fraction of the image covered, over images holding it
    context_area: dict[str, float] = field(default_factory=dict)  # same, for each context
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["out_dir"] = str(self.out_dir)
        return out


def _encode_jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG image")
    return buf.tobytes()


def _prepare_out(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{out_dir} is not empty; choose a new folder (or overwrite a synthetic set)")
            if not (out_dir / "synth.json").is_file():
                raise FileExistsError(
                    f"{out_dir} is not empty and is not a synthetic set (no synth.json); refusing to replace it"
                )


def synthesize(
    out_dir: str | os.PathLike[str],
    images: int = 1000,
    size: int = 224,
    seed: int = 0,
    val_fraction: float = 0.2,
    difficulty: str = "hard",
    overwrite: bool = False,
    preview: str | os.PathLike[str] | None = None,
) -> SynthSummary:
    """Write a synthetic co-occurrence dataset to ``out_dir`` (see the module docstring).

    ``difficulty`` names a profile in :data:`PROFILES`. Raises ``ValueError`` for bad
    arguments and ``FileExistsError`` when ``out_dir`` holds other files (``overwrite``
    replaces an earlier synthetic set only).
    """
    import time

    if difficulty not in PROFILES:
        raise ValueError(f"unknown difficulty {difficulty!r}; choose one of {', '.join(PROFILES)}")
    if images < 1:
        raise ValueError(f"--images must be at least 1, got {images}")
    if size < 32:
        raise ValueError(f"--size must be at least 32 pixels, got {size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must lie in [0, 1), got {val_fraction}")
    profile = PROFILES[difficulty]
    out = Path(out_dir)
    _prepare_out(out, overwrite)
    start = time.perf_counter()

    n_val = int(round(images * val_fraction))
    if val_fraction > 0 and images >= 2:
        n_val = min(max(n_val, 1), images - 1)
    order = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, 2**31 - 1])).permutation(images)
    is_val = np.zeros(images, dtype=bool)
    is_val[order[:n_val]] = True
    digits = max(5, len(str(images - 1)))
    names = [f"synth_{i:0{digits}d}" for i in range(images)]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
    tags_all = np.zeros((images, len(CLASSES) - 1), dtype=bool)
    ctx_area = np.zeros((images, len(CONTEXTS)), dtype=np.float64)
    area = np.zeros((images, len(CLASSES)), dtype=np.float64)
    sheet: list[Scene] = []
    try:
        for sub in ("JPEGImages", "SegmentationClass", "ContextMasks", "ImageSets/Segmentation"):
            (tmp / sub).mkdir(parents=True)
        for i, name in enumerate(names):
            rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, i]))
            scene = render_scene(rng, size, profile)
            (tmp / "JPEGImages" / f"{name}.jpg").write_bytes(_encode_jpeg(scene.image))
            (tmp / "SegmentationClass" / f"{name}.png").write_bytes(encode_mask_png(scene.mask))
            (tmp / "ContextMasks" / f"{name}.png").write_bytes(encode_mask_png(scene.context))
            counts = np.bincount(scene.mask.ravel(), minlength=len(CLASSES))
            tags_all[i] = counts[1 : len(CLASSES)] > 0
            area[i] = counts[: len(CLASSES)] / scene.mask.size
            ctx_area[i] = np.bincount(scene.context.ravel(), minlength=len(CONTEXTS))[: len(CONTEXTS)] / scene.mask.size
            if preview is not None and len(sheet) < 16:
                sheet.append(scene)
        _write_lists(tmp, names, is_val, tags_all)
        summary = _summarise(out, names, is_val, tags_all, ctx_area, area, profile)
        meta = _metadata(images, size, seed, val_fraction, profile, summary)
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            trash = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if preview is not None:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(contact_sheet(sheet), cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("OpenCV could not encode the preview PNG")
        atomic_write_bytes(preview, buf.tobytes())
    summary.seconds = time.perf_counter() - start
    return summary


def _write_lists(tmp: Path, names: list[str], is_val: np.ndarray, tags: np.ndarray) -> None:
    train = [n for n, v in zip(names, is_val, strict=True) if not v]
    val = [n for n, v in zip(names, is_val, strict=True) if v]
    lists = tmp / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("".join(f"{n}\n" for n in train), encoding="utf-8")
    (lists / "val.txt").write_text("".join(f"{n}\n" for n in val), encoding="utf-8")
    (lists / "trainval.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    rows = ["image,tags,split"]
    for name, row, v in zip(names, tags, is_val, strict=True):
        present = ";".join(CLASSES[c + 1] for c in np.flatnonzero(row))
        rows.append(f"JPEGImages/{name}.jpg,{present},{'val' if v else 'train'}")
    (tmp / "tags.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES), encoding="utf-8")


def _rate(numerator: np.ndarray, denominator: np.ndarray) -> float:
    d = int(denominator.sum())
    return round(float((numerator & denominator).sum()) / d, 4) if d else 0.0


def _summarise(
    out: Path,
    names: list[str],
    is_val: np.ndarray,
    tags: np.ndarray,
    ctx_area: np.ndarray,
    area: np.ndarray,
    profile: SynthProfile,
) -> SynthSummary:
    n = len(names)
    ctx = ctx_area > 0
    col = {name: tags[:, i - 1] for i, name in enumerate(CLASSES) if i}
    per_class = {name: int(col[name].sum()) for name in CLASSES[1:]}
    given, alone = {}, {}
    for cls, context in CONTEXT_OF.items():
        has_ctx = ctx[:, _CTX[context]]
        given[f"{context}|{cls}"] = _rate(has_ctx, col[cls])
        alone[context] = round(float((has_ctx & ~col[cls]).sum()) / n, 4)
    pairs = {}
    for a, b in PAIRS:
        pairs[f"{b}|{a}"] = _rate(col[b], col[a])
        pairs[f"{a}|{b}"] = _rate(col[a], col[b])
    mean_area = {}
    for i, name in enumerate(CLASSES[1:], start=1):
        held = col[name]
        mean_area[name] = round(float(area[held, i].mean()), 4) if held.any() else 0.0
    context_area = {}
    for k, name in enumerate(CONTEXTS[1:], start=1):
        held = ctx[:, k]
        context_area[name] = round(float(ctx_area[held, k].mean()), 4) if held.any() else 0.0
    return SynthSummary(
        out_dir=out,
        images=n,
        train=int((~is_val).sum()),
        val=int(is_val.sum()),
        profile=profile.name,
        images_per_class=per_class,
        context_given_class=given,
        context_alone=alone,
        pair_rate=pairs,
        mean_area=mean_area,
        context_area=context_area,
        extra={"background_only": round(float((~tags.any(axis=1)).mean()), 4)},
    )


def _metadata(images: int, size: int, seed: int, val_fraction: float, p: SynthProfile, s: SynthSummary) -> dict:
    return {
        "generator": "seco_deploy.data.synth",
        "version": SYNTH_VERSION,
        "images": images,
        "size": size,
        "seed": seed,
        "val_fraction": val_fraction,
        "difficulty": p.name,
        "profile": asdict(p),
        "classes": list(CLASSES),
        "contexts": list(CONTEXTS),
        "context_masks": "ContextMasks",
        "context_of": dict(CONTEXT_OF),
        "context_index": {name: i for i, name in enumerate(CONTEXTS) if i},
        "pairs": [list(pair) for pair in PAIRS],
        "stats": {
            "train": s.train,
            "val": s.val,
            "images_per_class": s.images_per_class,
            "context_given_class": s.context_given_class,
            "context_alone": s.context_alone,
            "pair_rate": s.pair_rate,
            "mean_area": s.mean_area,
            "context_area": s.context_area,
            **s.extra,
        },
    }


# ---------------------------------------------------------------------------- reading back
def load_synth_info(root: str | os.PathLike[str]) -> dict:
    """Parse ``root/synth.json``; raises ``FileNotFoundError`` when ``root`` is not a synthetic set.

    Useful keys: ``classes``, ``contexts``, ``context_of`` (class -> context name),
    ``context_index`` (context name -> value in the context masks), ``pairs``, ``stats``.
    """
    path = Path(root) / "synth.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; {root} is not a set written by `seco data synth`")
    return json.loads(path.read_text(encoding="utf-8"))


def read_context_mask(root: str | os.PathLike[str], name: str) -> np.ndarray:
    """The context mask of image ``name``: uint8 (H, W), 0 none, else an index of ``CONTEXTS``."""
    from seco_deploy.data.io import read_mask

    return read_mask(Path(root) / "ContextMasks" / f"{name}.png")


# ---------------------------------------------------------------------------- preview
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
