"""Formula-driven pretraining images: fractal objects lying on textured regions that are labels of their own.

Conventions as in :mod:`.fractals`: images ``uint8 (S, S, 3)`` RGB; the label vector has
``K_f + K_t`` entries, the fractal (object) categories first, then the texture (region)
categories; ``patch_labels`` is ``int64 (S/p, S/p)``, ``0`` for background, ``k + 1`` for
category ``k`` of that joint numbering. Every image is a pure function of ``(seed, index)``.

Why: in :mod:`.fractals` scenes the background is unlabelled noise, so the encoder learns "a
thing on noise". Photographs are objects on surfaces that are classes of their own (ImageNet
labels lakeside, seashore, pier, alp), and an encoder that has learnt to name a surface apart
from what lies on it is what a CAM needs to keep an object's activation off its context. These
scenes teach exactly that, and nothing else: objects are placed independently of the region
under them (no category is ever coupled to another), and no scene shows a sky, ground, water
band or rails. (The gratings and wavy lines are sine patterns, as the synthetic sets' water
ripples are, in random colours and orientations.)

Texture categories (``texture_bank``): category ``t`` has the family ``FAMILIES[t % 5]`` and a
fixed orientation ``theta`` in [0, pi) and period ``P`` (``PERIOD`` pixels at 112 px, scaled with
the image side), drawn from ``(seed, t)``. With ``u = x cos theta + y sin theta`` and
``w = -x sin theta + y cos theta`` (pixels, a random offset per instance) the pattern ``v`` in
{-1..1} is

- ``grating``: ``sin(2 pi u / P)``;
- ``wave``: ``sin(2 pi (u + P sin(2 pi w / (3 P))) / P)``: wavy lines;
- ``checker``: ``sign(sin(pi u / P) sin(pi w / P))``;
- ``dots``: ``+1`` within ``P / 4`` of a lattice point of spacing ``P``, else ``-1``;
- ``blobs``: smooth noise of correlation length ``P``, thresholded at its median.

An instance jitters ``theta`` by up to ``THETA_JITTER`` and ``P`` by up to ``PERIOD_JITTER``
(relative) and paints ``v`` between two random colours: colour carries no category, the pattern
does.

Scenes: the canvas is split into ``1..max_regions`` regions (the Voronoi cells of random points);
each region is a texture category (distinct ones) with probability ``TEXTURED``, else the
unlabelled smooth-noise background of :mod:`.fractals`. Then ``1..max_objects`` fractal
instances of distinct categories are painted on top, anywhere. Image labels: the categories
(object or texture) whose visible pixels cover at least ``MIN_VISIBLE`` of the image. Patch
label: the object category covering most of the patch when it covers at least ``PATCH_COVER``
of it (fractals are lacy), else the region (texture or background) covering most of the patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from seco_deploy.pretrain.fractals import (
    MIN_VISIBLE,
    PATCH_COVER,
    Category,
    Scene,
    noise_background,
    paint_objects,
    scene_rng,
)

FAMILIES = ("grating", "wave", "checker", "dots", "blobs")
PERIOD = (5.0, 14.0)  # pixels at 112 px
THETA_JITTER = np.deg2rad(10.0)
PERIOD_JITTER = 0.1
TEXTURED = 0.8


@dataclass(frozen=True)
class Texture:
    family: str
    theta: float
    period: float  # pixels at 112 px


def texture_bank(seed: int, textures: int) -> list[Texture]:
    """``textures`` texture categories of ``seed`` (family cycles through :data:`FAMILIES`)."""
    bank = []
    for t in range(textures):
        rng = scene_rng(seed, 0x7E5, t)
        bank.append(Texture(FAMILIES[t % len(FAMILIES)], float(rng.uniform(0, np.pi)), float(rng.uniform(*PERIOD))))
    return bank


def texture_pattern(texture: Texture, rng: np.random.Generator, size: int) -> np.ndarray:
    """One instance of ``texture`` on an ``size x size`` canvas: float32 in [-1, 1] (module doc)."""
    theta = texture.theta + rng.uniform(-THETA_JITTER, THETA_JITTER)
    period = texture.period * size / 112 * (1 + rng.uniform(-PERIOD_JITTER, PERIOD_JITTER))
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    x += rng.uniform(0, 4 * period)
    y += rng.uniform(0, 4 * period)
    u = x * np.cos(theta) + y * np.sin(theta)
    w = -x * np.sin(theta) + y * np.cos(theta)
    if texture.family == "grating":
        v = np.sin(2 * np.pi * u / period)
    elif texture.family == "wave":
        v = np.sin(2 * np.pi * (u + period * np.sin(2 * np.pi * w / (3 * period))) / period)
    elif texture.family == "checker":
        v = np.sign(np.sin(np.pi * u / period) * np.sin(np.pi * w / period))
    elif texture.family == "dots":
        du = (u % period) - period / 2
        dw = (w % period) - period / 2
        v = np.where(du * du + dw * dw <= (period / 4) ** 2, 1.0, -1.0)
    elif texture.family == "blobs":
        cells = max(2, int(round(size / period)))
        noise = cv2.resize(rng.uniform(0, 1, size=(cells, cells)).astype(np.float32), (size, size),
                           interpolation=cv2.INTER_CUBIC)
        v = np.where(noise > np.median(noise), 1.0, -1.0)
    else:
        raise ValueError(f"unknown texture family {texture.family!r}; known: {', '.join(FAMILIES)}")
    return v.astype(np.float32)


def _regions(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """int (S, S): the Voronoi cell (0..count-1) of each pixel among ``count`` random points."""
    points = rng.uniform(0, size, size=(count, 2)).astype(np.float32)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    d = (x[None] - points[:, 0, None, None]) ** 2 + (y[None] - points[:, 1, None, None]) ** 2
    return d.argmin(0)


def render_region_scene(objects: list[Category], textures: list[Texture], seed: int, index: int, size: int,
                        patch: int, max_objects: int = 3, max_regions: int = 3) -> Scene:
    """Image ``index`` of the stream ``seed``: a pure function of its arguments (module doc)."""
    if size % patch:
        raise ValueError(f"image size {size} is not a multiple of the patch size {patch}")
    rng = scene_rng(seed, index, 0x5E6)
    kf, kt = len(objects), len(textures)
    k = kf + kt
    owner = np.full((size, size), -1, np.int64)  # -1 background, 0..kf-1 objects, kf.. textures
    img = noise_background(rng, size)
    cells = _regions(rng, size, int(rng.integers(1, max_regions + 1)))
    picks = rng.choice(kt, size=min(int(cells.max()) + 1, kt), replace=False) if kt else np.zeros(0, int)
    for r, t in enumerate(picks):
        if rng.random() >= TEXTURED:
            continue
        inside = cells == r
        v = texture_pattern(textures[int(t)], rng, size)
        a, b = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
        painted = a + (b - a) * ((v + 1) / 2)[..., None]
        img = np.where(inside[..., None], painted, img)
        owner[inside] = kf + int(t)
    region_owner = owner.copy()
    count = int(rng.integers(1, max_objects + 1))
    img = paint_objects(objects, rng.choice(kf, size=min(count, kf), replace=False), rng, img, owner)
    img = img + rng.normal(0, 6.0, size=img.shape).astype(np.float32)
    visible = np.bincount(owner.ravel() + 1, minlength=k + 1)[1:] / owner.size
    labels = (visible >= MIN_VISIBLE).astype(np.float32)
    g = size // patch
    cell = (np.arange(size) // patch)[:, None] * g + (np.arange(size) // patch)[None, :]

    def counts(o: np.ndarray) -> np.ndarray:
        return np.bincount((cell * (k + 1) + o + 1).ravel(), minlength=g * g * (k + 1)).reshape(g, g, k + 1)

    objs = counts(owner)[..., 1:kf + 1]
    region = counts(region_owner).argmax(-1)  # 0 background, kf + t + 1 texture t
    patch_labels = np.where(objs.max(-1) >= PATCH_COVER * patch * patch, objs.argmax(-1) + 1, region)
    return Scene(np.clip(img, 0, 255).astype(np.uint8), labels, patch_labels.astype(np.int64))
