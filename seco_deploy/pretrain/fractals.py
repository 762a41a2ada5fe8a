"""Formula-driven pretraining images: scenes of rendered IFS fractals (FractalDB-style, method-agnostic).

Conventions: images are ``uint8 (S, S, 3)`` RGB; labels are category indices ``0..K-1``;
``patch_labels`` is ``int64 (S/p, S/p)`` with ``0`` for background and ``k + 1`` for category k.
Everything is a pure function of integers: the category bank of ``(seed, K)`` and image ``i`` of
``(seed, i)``, so a run is reproducible and resumable from its iteration alone, and two
processes draw the same image for the same index.

Categories (Kataoka et al., ACCV 2020). A category is an iterated function system of ``m``
affine maps ``x -> A_j x + b_j`` (``m`` in 2..4, entries uniform in [-1, 1]), chosen with
probability proportional to ``|det A_j|``. A drawn system is kept when its attractor fills at
least ``MIN_FILL`` of its bounding box on a 32 x 32 raster (FractalDB's filling-rate rule
rejects point-like and line-like attractors).

The attractor of a category is sampled once, when the bank is drawn (chaos game, vectorised:
``POINTS`` points start uniform in [-1, 1]^2, each step applies one map drawn per point; after
``BURN_IN`` steps the points lie on the attractor; the next ``STEPS`` steps are kept), and
normalised to its bounding box (centred, longest side 1). Rendering one instance draws
``INSTANCE_POINTS`` of those points, transforms them by a random similarity (scale, rotation,
mirror) and splats them onto the canvas in one random colour (colour carries no category, as in
FractalDB; the shape does).

Scenes: ``1..max_objects`` instances of distinct categories on a procedural background
(smooth noise in random colours plus a gradient: no sky, water, rails or any other scene of
the benchmark sets), painted back to front, with per-pixel noise. The image-level target is
the set of categories whose visible pixels cover at least ``MIN_VISIBLE`` of the image; a
patch's label is the category covering most of its pixels when that covers at least
``PATCH_COVER`` of the patch, else background (fractals are lacy: at one half, most patches that
hold a fractal would be called background).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

POINTS = 3000
BURN_IN = 10
STEPS = 8
MIN_FILL = 0.12
MIN_VISIBLE = 0.01
INSTANCE_POINTS = 12000
PATCH_COVER = 0.25


@dataclass(frozen=True)
class Category:
    maps: np.ndarray  # (m, 2, 3): x -> maps[j, :, :2] @ x + maps[j, :, 2]
    probs: np.ndarray  # (m,)
    points: np.ndarray  # (POINTS * STEPS, 2) on the attractor, centred, longest side 1


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # uint8 (S, S, 3)
    labels: np.ndarray  # float32 (K,) multi-hot
    patch_labels: np.ndarray  # int64 (S/p, S/p), 0 = background, k + 1 = category k


def scene_rng(*key: int) -> np.random.Generator:
    """The generator of one key (``seed, index, ...``): the same key always draws the same numbers."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


def _chaos_game(maps: np.ndarray, probs: np.ndarray, rng: np.random.Generator, points: int = POINTS) -> np.ndarray:
    """Points on the attractor of ``maps`` (m, 2, 3): float (points * STEPS, 2)."""
    x = rng.uniform(-1, 1, size=(points, 2))
    cumulative = np.cumsum(probs)
    out = []
    m = len(maps)
    linear = maps[:, :, :2].transpose(2, 0, 1).reshape(2, 2 * m)  # x @ linear = every map's A_j x
    shift = maps[:, :, 2].reshape(2 * m)
    rows = np.arange(points)
    for step in range(BURN_IN + STEPS):
        j = np.minimum(np.searchsorted(cumulative, rng.random(points)), m - 1)
        y = (x @ linear + shift).reshape(points, m, 2)
        x = y[rows, j]
        x = np.clip(x, -1e3, 1e3)
        if step >= BURN_IN:
            out.append(x.copy())
    return np.concatenate(out)


def _fill_rate(pts: np.ndarray, grid: int = 32) -> float:
    lo, hi = pts.min(0), pts.max(0)
    span = np.maximum(hi - lo, 1e-9)
    if not np.all(np.isfinite(span)) or span.min() < 1e-6:
        return 0.0
    ij = np.clip(((pts - lo) / span * (grid - 1)).astype(int), 0, grid - 1)
    occupied = np.zeros((grid, grid), bool)
    occupied[ij[:, 1], ij[:, 0]] = True
    return float(occupied.mean())


def category_bank(seed: int, categories: int) -> list[Category]:
    """``categories`` IFS systems drawn from ``seed``, each passing ``MIN_FILL``, with their attractors."""
    bank: list[Category] = []
    rng = scene_rng(seed, 0x1F5)
    while len(bank) < categories:
        m = int(rng.integers(2, 5))
        maps = rng.uniform(-1, 1, size=(m, 2, 3))
        det = np.abs(np.linalg.det(maps[:, :, :2]))
        if det.sum() < 1e-3 or np.any(np.linalg.norm(maps[:, :, :2], ord=2, axis=(1, 2)) >= 1.0):
            continue  # not contractive: the chaos game diverges
        probs = det / det.sum()
        pts = _chaos_game(maps, probs, rng, points=1500)
        if _fill_rate(pts) >= MIN_FILL:
            pts = _chaos_game(maps, probs, rng)
            lo, hi = pts.min(0), pts.max(0)
            pts = (pts - (lo + hi) / 2) / max(float((hi - lo).max()), 1e-9)
            bank.append(Category(maps, probs, pts.astype(np.float32)))
    return bank


def noise_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """float32 (S, S, 3): smooth noise of 2-6 cells blended with a linear ramp between two random colours."""
    cells = int(rng.integers(2, 7))
    noise = rng.uniform(0, 1, size=(cells, cells, 3)).astype(np.float32)
    noise = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    base, other = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    ramp = ramp[:, None] if rng.random() < 0.5 else ramp[None, :]
    img = base + (other - base) * (0.5 * noise + 0.5 * ramp[..., None])
    return np.clip(img, 0, 255)


def _instance_mask(category: Category, rng: np.random.Generator, size: int) -> np.ndarray:
    pts = category.points[rng.integers(0, len(category.points), INSTANCE_POINTS)].astype(np.float64)
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    if rng.random() < 0.5:
        rot[:, 0] *= -1
    side = rng.uniform(0.3, 0.7) * size
    centre = rng.uniform(0.3, 0.7, size=2) * size
    xy = pts @ rot.T * side + centre
    ij = np.round(xy).astype(int)
    keep = (ij[:, 0] >= 0) & (ij[:, 0] < size) & (ij[:, 1] >= 0) & (ij[:, 1] < size)
    mask = np.zeros((size, size), np.uint8)
    mask[ij[keep, 1], ij[keep, 0]] = 1
    return cv2.dilate(mask, np.ones((3, 3), np.uint8)).astype(bool)


def paint_objects(bank: list[Category], cats: np.ndarray, rng: np.random.Generator, img: np.ndarray,
                  owner: np.ndarray) -> np.ndarray:
    """Paint one instance of each category in ``cats`` on ``img`` (float (S, S, 3)), back to front, each in one
    random colour with a random shade; ``owner`` (int (S, S)) takes the category of every painted pixel."""
    size = img.shape[0]
    for c in cats:
        mask = _instance_mask(bank[int(c)], rng, size)
        colour = rng.uniform(0, 255, size=3).astype(np.float32)
        shade = rng.uniform(0.7, 1.0, size=(size, size, 1)).astype(np.float32)
        img = np.where(mask[..., None], colour * shade, img)
        owner[mask] = int(c)
    return img


def render_scene(bank: list[Category], seed: int, index: int, size: int, patch: int,
                 max_objects: int = 3) -> Scene:
    """Image ``index`` of the stream ``seed``: a pure function of its arguments (see the module doc)."""
    if size % patch:
        raise ValueError(f"image size {size} is not a multiple of the patch size {patch}")
    rng = scene_rng(seed, index)
    k = len(bank)
    count = int(rng.integers(1, max_objects + 1))
    cats = rng.choice(k, size=min(count, k), replace=False)
    img = noise_background(rng, size)
    owner = np.full((size, size), -1, np.int64)
    img = paint_objects(bank, cats, rng, img, owner)
    img = img + rng.normal(0, 6.0, size=img.shape).astype(np.float32)
    labels = np.zeros(k, np.float32)
    for c in cats:
        if (owner == int(c)).mean() >= MIN_VISIBLE:
            labels[int(c)] = 1.0
    return Scene(np.clip(img, 0, 255).astype(np.uint8), labels, object_patch_labels(owner, k, patch))


def object_patch_labels(owner: np.ndarray, categories: int, patch: int) -> np.ndarray:
    """int64 (S/p, S/p) from ``owner`` (int (S, S), -1 background, else a category in ``0..K-1``): per patch
    ``k + 1`` for the category covering most of its pixels when that covers at least ``PATCH_COVER`` of them,
    else 0."""
    size, k = owner.shape[0], categories
    g = size // patch
    cell = (np.arange(size) // patch)[:, None] * g + (np.arange(size) // patch)[None, :]
    counts = np.bincount((cell * (k + 1) + owner + 1).ravel(), minlength=g * g * (k + 1)).reshape(g, g, k + 1)
    best = counts[..., 1:].argmax(-1)
    return np.where(counts[..., 1:].max(-1) >= PATCH_COVER * patch * patch, best + 1, 0).astype(np.int64)
