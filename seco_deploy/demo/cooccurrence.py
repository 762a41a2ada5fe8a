"""Context false activation: how much of a class's co-occurring context is labelled as the class.

For a context-coupled class ``k`` with context ``x`` (``boat`` on ``water``, ``train`` on
``rails``; from ``synth.json``), over the images whose ground truth holds ``k``:

    CFA_k      = #{context pixels of x labelled k} / #{context pixels of x}
    CFA_far_k  = the same over context pixels farther than ``away_px`` (Euclidean, pixels)
                 from every object pixel (any foreground class of the ground truth)

``CFA_far`` leaves out the band next to objects where a coarse CAM (one value per patch)
bleeds over the object's outline; what remains is activation on the context itself, the
co-occurrence error. Context pixels are those of ``ContextMasks/NAME.png`` (visible context,
objects excluded), so no object pixel is ever counted.

For a partner pair (``horse``, ``person``) the "context" of each class is its partner: over the
images holding both, the fraction of the partner's ground-truth pixels labelled as the class
(``PFA``; ``PFA_far`` is not defined for partners, they touch by construction).

Everything accumulates pixel counts image by image (memory O(classes)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = ["CooccurrenceMeter", "CouplingSpec", "couplings_from_synth", "far_from_objects"]


@dataclass(frozen=True)
class CouplingSpec:
    """One measured coupling: ``cls`` (class index) with a context (index in the context masks)
    or a partner class (index in the class masks)."""

    name: str  # class name
    cls: int
    kind: str  # "context" | "partner"
    other_name: str  # context or partner name
    other: int  # context value in ContextMasks, or partner class index


def couplings_from_synth(info: dict[str, Any]) -> list[CouplingSpec]:
    """The couplings recorded in a ``synth.json`` (see :func:`seco_deploy.data.synth.load_synth_info`)."""
    classes = list(info["classes"])
    index = {name: i for i, name in enumerate(classes)}
    ctx_index = dict(info.get("context_index", {}))
    specs = [
        CouplingSpec(cls_name, index[cls_name], "context", ctx, int(ctx_index[ctx]))
        for cls_name, ctx in dict(info.get("context_of", {})).items()
        if cls_name in index and ctx in ctx_index
    ]
    for a, b in info.get("pairs", []):
        if a in index and b in index:
            specs.append(CouplingSpec(a, index[a], "partner", b, index[b]))
            specs.append(CouplingSpec(b, index[b], "partner", a, index[a]))
    return specs


def far_from_objects(gt: np.ndarray, away_px: float, ignore_index: int = 255) -> np.ndarray:
    """bool (H, W): pixels whose Euclidean distance to the nearest object pixel exceeds ``away_px``.

    Object pixels are ground-truth values in ``1..254`` (not background 0, not ``ignore_index``).
    With no object in the image every pixel is far.
    """
    objects = (gt > 0) & (gt != ignore_index)
    if not objects.any():
        return np.ones(gt.shape, dtype=bool)
    # distanceTransform measures the distance to the nearest ZERO pixel: make objects zero.
    dist = cv2.distanceTransform((~objects).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist > away_px


@dataclass
class _Counts:
    images: int = 0
    pixels: int = 0
    hits: int = 0
    far_pixels: int = 0
    far_hits: int = 0


@dataclass
class CooccurrenceMeter:
    """Accumulates CFA / CFA_far (contexts) and PFA (partners) over images; see the module docstring."""

    specs: list[CouplingSpec]
    away_px: float = 16.0
    counts: dict[str, _Counts] = field(default_factory=dict)

    def update(self, pred: np.ndarray, gt: np.ndarray, context: np.ndarray | None) -> None:
        """Add one image: ``pred`` and ``gt`` class-index masks and its context mask, all (H, W)."""
        if pred.shape != gt.shape:
            raise ValueError(f"prediction is {pred.shape} but ground truth is {gt.shape}")
        present = set(np.unique(gt).tolist())
        far = None
        for spec in self.specs:
            if spec.cls not in present:
                continue
            c = self.counts.setdefault(spec.name, _Counts())
            if spec.kind == "context":
                if context is None:
                    continue
                if context.shape != gt.shape:
                    raise ValueError(f"context mask is {context.shape} but ground truth is {gt.shape}")
                region = context == spec.other
                if not region.any():
                    continue
                if far is None:
                    far = far_from_objects(gt, self.away_px)
                hit = pred == spec.cls
                c.images += 1
                c.pixels += int(region.sum())
                c.hits += int((region & hit).sum())
                region_far = region & far
                c.far_pixels += int(region_far.sum())
                c.far_hits += int((region_far & hit).sum())
            else:
                if spec.other not in present:
                    continue
                region = gt == spec.other
                c.images += 1
                c.pixels += int(region.sum())
                c.hits += int((region & (pred == spec.cls)).sum())

    def compute(self) -> dict[str, dict[str, Any]]:
        """``{class: {kind, other, images, fa, fa_far (contexts only)}}``; NaN where nothing was counted."""
        out: dict[str, dict[str, Any]] = {}
        for spec in self.specs:
            c = self.counts.get(spec.name, _Counts())
            row: dict[str, Any] = {
                "kind": spec.kind,
                "other": spec.other_name,
                "images": c.images,
                "fa": c.hits / c.pixels if c.pixels else float("nan"),
            }
            if spec.kind == "context":
                row["fa_far"] = c.far_hits / c.far_pixels if c.far_pixels else float("nan")
                row["far_pixels"] = c.far_pixels
            out[spec.name] = row
        return out
