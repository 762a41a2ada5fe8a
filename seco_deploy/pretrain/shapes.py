"""Formula-driven pretraining images: objects made of parts, on textured surfaces (``source = shapes``).

Conventions as in :mod:`.fractals`: images ``uint8 (S, S, 3)`` RGB; labels are category indices
``0..K-1``; ``patch_labels`` is ``int64 (S/p, S/p)``, ``0`` for background and ``k + 1`` for
category k. Every image is a pure function of ``(seed, index)`` and every category of ``(seed, k)``.

Why: Kataoka et al. (CVPR 2022, "Replacing labeled real-image datasets with auto-generated
contours") found that what a ViT learns from formula-driven images is object contours, and the
fractal point clouds of :mod:`.fractals` are lacy, slow to learn (8 categories at most within a
CPU budget) and lie on plain noise. Here a category is a rigid arrangement of solid parts, so
telling categories apart means grouping parts into a whole by their outlines and layout, and the
surfaces under the objects are textured but never a label: the encoder learns "a thing of this
shape on any surface", the object-centred prior that ImageNet gives photographs' CAMs.

Categories (:func:`shape_bank`). Category k is ``m`` parts, ``m`` in 2..5. A part is a primitive
of :data:`PRIMITIVES` (an ellipse, a rectangle, a triangle, or a regular polygon of 5 to 8 sides)
with a width and a height in [0.15, 0.6], an angle, and a centre: the first part's at the origin,
each later part's on the outline of a part drawn before it (so the parts touch). The arrangement
is normalised to its bounding box (centred, height 1). Each part also has a surface pattern
(:data:`PATTERNS`: flat, stripes of a fixed angle and period relative to the object, or a
gradient), so categories differ in their inner structure too.

Instance. Height ``S * exp(U(log 0.18, log 0.7))`` (small objects are as common as large ones on a
log scale), width from the arrangement's aspect times ``U(0.85, 1.15)``, a rotation in +-20
degrees (upright things, as photographed), a mirror with probability 0.5, every part's centre
jittered by 0.03 and its size by +-10 %; each part in a random colour (colour carries no
category, as in FractalDB) with its pattern at a random contrast.

Scene. A surface of 1-3 bands split by straight lines at a random tilt, each band one of
:data:`SURFACES` in random colours (smooth noise with a ramp, grain, stripes of a random angle and
period, or thresholded blobs): surfaces are background, whatever their texture. Then 0-3 clutter
primitives (single parts, unlabelled), then ``1..max_objects`` objects of distinct categories,
back to front; per-pixel noise of a random strength. Image label: the categories whose visible
pixels cover at least ``MIN_VISIBLE`` of the image; patch labels as in
:func:`.fractals.object_patch_labels`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from seco_deploy.pretrain.fractals import MIN_VISIBLE, Scene, noise_background, object_patch_labels, scene_rng

PRIMITIVES = ("ellipse", "rectangle", "triangle", "polygon")
PATTERNS = ("flat", "stripes", "gradient")
SURFACES = ("smooth", "grain", "stripes", "blobs")
PART_SIZE = (0.15, 0.6)
HEIGHT = (0.18, 0.7)  # object height / image side, log-uniform
TILT = np.deg2rad(20.0)
PART_JITTER = 0.03
CLUTTER = 3


@dataclass(frozen=True)
class Part:
    kind: str
    sides: int  # polygon only
    centre: tuple[float, float]  # (x, y) in the normalised arrangement (height 1)
    size: tuple[float, float]  # (width, height), same units
    angle: float
    pattern: str
    pattern_angle: float  # radians, relative to the object
    pattern_period: float  # fraction of the object's height


@dataclass(frozen=True)
class ShapeCategory:
    parts: tuple[Part, ...]
    aspect: float  # width / height of the normalised arrangement


def _outline(kind: str, sides: int) -> np.ndarray:
    """Unit outline (n, 2), centred, spanning [-0.5, 0.5] on both axes."""
    if kind == "ellipse":
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        return 0.5 * np.stack([np.cos(t), np.sin(t)], 1)
    if kind == "rectangle":
        return np.array([(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)])
    if kind == "triangle":
        return np.array([(0.0, -0.5), (0.5, 0.5), (-0.5, 0.5)])
    t = np.linspace(0, 2 * np.pi, sides, endpoint=False) - np.pi / 2
    return 0.5 * np.stack([np.cos(t), np.sin(t)], 1)


def _place(outline: np.ndarray, centre: np.ndarray, size: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return (outline * size) @ rot.T + centre


def _part_points(part: Part) -> np.ndarray:
    return _place(_outline(part.kind, part.sides), np.asarray(part.centre), np.asarray(part.size), part.angle)


def shape_bank(seed: int, categories: int) -> list[ShapeCategory]:
    """``categories`` part arrangements of ``seed`` (module doc), each normalised to height 1."""
    bank = []
    for k in range(categories):
        rng = scene_rng(seed, 0x5A9, k)
        drafts: list[dict] = []
        for j in range(int(rng.integers(2, 6))):
            kind = PRIMITIVES[int(rng.integers(len(PRIMITIVES)))]
            sides = int(rng.integers(5, 9))
            size = rng.uniform(*PART_SIZE, size=2)
            angle = float(rng.uniform(0, np.pi))
            if j == 0:
                centre = np.zeros(2)
            else:
                host = drafts[int(rng.integers(len(drafts)))]
                pts = _place(_outline(host["kind"], host["sides"]), host["centre"], host["size"], host["angle"])
                centre = pts[int(rng.integers(len(pts)))]
            drafts.append(dict(kind=kind, sides=sides, centre=centre, size=size, angle=angle))
        pts = np.concatenate([_place(_outline(d["kind"], d["sides"]), d["centre"], d["size"], d["angle"])
                              for d in drafts])
        lo, hi = pts.min(0), pts.max(0)
        mid, height = (lo + hi) / 2, max(float(hi[1] - lo[1]), 1e-6)
        parts = tuple(
            Part(d["kind"], d["sides"], tuple((d["centre"] - mid) / height), tuple(d["size"] / height), d["angle"],
                 PATTERNS[int(rng.integers(len(PATTERNS)))], float(rng.uniform(0, np.pi)),
                 float(rng.uniform(0.08, 0.25)))
            for d in drafts
        )
        bank.append(ShapeCategory(parts, float((hi[0] - lo[0]) / height)))
    return bank


def _pattern(part: Part, angle: float, period: float, xy: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """float32 in [-1, 1] over the canvas: ``part``'s pattern at the object's angle, ``period`` pixels."""
    if part.pattern == "flat":
        return np.zeros_like(xy[0])
    theta = part.pattern_angle + angle
    u = xy[0] * np.cos(theta) + xy[1] * np.sin(theta)
    if part.pattern == "stripes":
        return np.sign(np.sin(2 * np.pi * u / max(period, 2.0))).astype(np.float32)
    return np.clip(u / max(period * 4, 1.0), -1, 1).astype(np.float32)  # gradient


def _fill(points: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def paint_shape(category: ShapeCategory, rng: np.random.Generator, img: np.ndarray, owner: np.ndarray,
                label: int) -> np.ndarray:
    """Paint one instance of ``category`` (module doc) on ``img`` (float (S, S, 3)); ``owner`` takes ``label``."""
    size = img.shape[0]
    height = size * float(np.exp(rng.uniform(np.log(HEIGHT[0]), np.log(HEIGHT[1]))))
    stretch = rng.uniform(0.85, 1.15)
    width = height * category.aspect * stretch
    angle = float(rng.uniform(-TILT, TILT))
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    margin = np.array([width, height]) * 0.3
    centre = rng.uniform(margin, np.maximum(margin + 1, size - margin))
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for part in category.parts:
        pts = _part_points(Part(part.kind, part.sides,
                                tuple(np.asarray(part.centre) + rng.normal(0, PART_JITTER, 2)),
                                tuple(np.asarray(part.size) * rng.uniform(0.9, 1.1, 2)), part.angle, part.pattern,
                                part.pattern_angle, part.pattern_period))
        pts = pts * np.array([mirror * stretch, 1.0]) * height
        mask = _fill(pts @ rot.T + centre, size)
        if not mask.any():
            continue
        colour = rng.uniform(0, 255, size=3).astype(np.float32)
        v = _pattern(part, angle, part.pattern_period * height, (xx, yy))
        paint = colour + rng.uniform(20, 60) * v[..., None]
        img = np.where(mask[..., None], paint, img)
        owner[mask] = label
    return img


def _surface(rng: np.random.Generator, size: int, xy: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """float32 (S, S, 3): one surface of :data:`SURFACES` in random colours."""
    kind = SURFACES[int(rng.integers(len(SURFACES)))]
    if kind == "smooth":
        return noise_background(rng, size)
    a, b = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    if kind == "grain":
        v = cv2.GaussianBlur(rng.uniform(0, 1, (size, size)).astype(np.float32), (0, 0), rng.uniform(0.5, 1.5))
        v = np.clip((v - 0.5) * 3 + 0.5, 0, 1)
    elif kind == "stripes":
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(3, 14) * size / 112
        u = xy[0] * np.cos(theta) + xy[1] * np.sin(theta) + rng.uniform(0, period)
        v = 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
    else:  # blobs
        cells = int(rng.integers(3, 9))
        noise = cv2.resize(rng.uniform(0, 1, (cells, cells)).astype(np.float32), (size, size),
                           interpolation=cv2.INTER_CUBIC)
        v = (noise > np.median(noise)).astype(np.float32)
    return a + (b - a) * v[..., None]


def _surfaces(rng: np.random.Generator, size: int, xy: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """1-3 bands split by straight lines at a common random tilt, each its own surface."""
    bands = int(rng.integers(1, 4))
    img = _surface(rng, size, xy)
    if bands == 1:
        return img
    tilt = rng.uniform(-0.35, 0.35)
    across = xy[1] + np.tan(tilt) * (xy[0] - size / 2)
    for cut in np.sort(rng.uniform(0.15, 0.85, bands - 1)) * size:
        img = np.where((across >= cut)[..., None], _surface(rng, size, xy), img)
    return img


def render_shape_scene(bank: list[ShapeCategory], seed: int, index: int, size: int, patch: int,
                       max_objects: int = 3) -> Scene:
    """Image ``index`` of the stream ``seed``: a pure function of its arguments (module doc)."""
    if size % patch:
        raise ValueError(f"image size {size} is not a multiple of the patch size {patch}")
    rng = scene_rng(seed, index, 0x5A9)
    k = len(bank)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = _surfaces(rng, size, (xx, yy))
    owner = np.full((size, size), -1, np.int64)
    for _ in range(int(rng.integers(0, CLUTTER + 1))):
        kind = PRIMITIVES[int(rng.integers(len(PRIMITIVES)))]
        pts = _place(_outline(kind, int(rng.integers(5, 9))), rng.uniform(0, size, 2),
                     rng.uniform(0.04, 0.18, 2) * size, float(rng.uniform(0, np.pi)))
        img = np.where(_fill(pts, size)[..., None], rng.uniform(0, 255, 3).astype(np.float32), img)
    count = int(rng.integers(1, max_objects + 1))
    for c in rng.choice(k, size=min(count, k), replace=False):
        img = paint_shape(bank[int(c)], rng, img, owner, int(c))
    img = img + rng.normal(0, rng.uniform(2.0, 10.0), size=img.shape).astype(np.float32)
    visible = np.bincount(owner.ravel() + 1, minlength=k + 1)[1:] / owner.size
    labels = (visible >= MIN_VISIBLE).astype(np.float32)
    return Scene(np.clip(img, 0, 255).astype(np.uint8), labels, object_patch_labels(owner, k, patch))
