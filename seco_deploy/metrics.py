"""Segmentation and classification metrics (method §3.4).

A streaming confusion matrix over ``K = C + 1`` classes (background 0): ground-truth pixels equal
to ``ignore_index`` (or outside ``[0, K)``) are skipped; a predicted value outside ``[0, K)`` (e.g.
255, "no decision") counts as a miss for the ground-truth class and as a prediction of no class.
With ``M[g, p]`` the pixel counts, ``TP_k = M[k, k]``, ``GT_k`` the row sum (misses included) and
``PR_k`` the column sum:

    IoU_k       = TP_k / (GT_k + PR_k - TP_k)
    precision_k = TP_k / PR_k
    recall_k    = TP_k / GT_k
    FP:TP_k     = (PR_k - TP_k) / TP_k                  (the paper's confusion ratio)
    mIoU        = mean of IoU_k over classes with GT_k > 0

Undefined ratios (0 / 0) are NaN; FP:TP with TP = 0 and FP > 0 is +inf.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _as_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class ConfusionMatrix:
    """Accumulates ``M`` (K x K+1; the last column counts out-of-range predictions) image by image.

    Memory is ``O(K^2)`` whatever the number of images.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def update(self, gt: ArrayLike, pred: ArrayLike) -> None:
        """Add one mask pair (any equal shapes, integer values)."""
        g = _as_numpy(gt).astype(np.int64, copy=False).ravel()
        p = _as_numpy(pred).astype(np.int64, copy=False).ravel()
        if g.shape != p.shape:
            raise ValueError(f"ground truth has {g.size} pixels but prediction has {p.size}")
        k = self.num_classes
        keep = (g != self.ignore_index) & (g >= 0) & (g < k)
        g, p = g[keep], p[keep]
        p = np.where((p >= 0) & (p < k), p, k)  # out-of-range prediction -> the "no class" column
        self.matrix += np.bincount(g * (k + 1) + p, minlength=k * (k + 1)).reshape(k, k + 1)

    def merge(self, other: ConfusionMatrix | np.ndarray) -> None:
        """Add another matrix (e.g. from another process or shard)."""
        m = other.matrix if isinstance(other, ConfusionMatrix) else np.asarray(other)
        if m.shape != self.matrix.shape:
            raise ValueError(f"cannot merge a {m.shape} matrix into a {self.matrix.shape} one")
        self.matrix += m.astype(np.int64)

    def compute(self) -> dict[str, Any]:
        """The figures above as floats/lists (index = class), plus pixel accuracy and counts."""
        return scores_from_matrix(self.matrix)


def scores_from_matrix(matrix: np.ndarray) -> dict[str, Any]:
    """IoU, precision, recall, FP:TP per class and mIoU from a K x K or K x (K+1) matrix."""
    m = np.asarray(matrix, dtype=np.float64)
    k = m.shape[0]
    tp = np.diag(m[:, :k])
    gt = m.sum(axis=1)
    pr = m[:, :k].sum(axis=0)
    fp = pr - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (gt + pr - tp)
        precision = tp / pr
        recall = tp / gt
        fp_tp = fp / tp
    present = gt > 0
    miou = float(np.mean(iou[present])) if present.any() else math.nan
    total = gt.sum()
    return {
        "miou": miou,
        "pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
        "iou": iou.tolist(),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "fp_tp": fp_tp.tolist(),
        "present": present.tolist(),
        "gt_pixels": gt.astype(np.int64).tolist(),
        "pred_pixels": pr.astype(np.int64).tolist(),
    }


def multilabel_f1(labels: ArrayLike, predictions: ArrayLike) -> np.ndarray:
    """Per-image F1 of binary tag predictions: ``2 TP / (2 TP + FP + FN)`` over the C tags.

    ``labels``, ``predictions``: (N, C) in {0, 1}. An image with no true and no predicted tag
    scores 1 (nothing to find, nothing claimed); otherwise 0 / 0 cannot occur.
    """
    y = _as_numpy(labels).astype(bool)
    p = _as_numpy(predictions).astype(bool)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} differ in shape")
    y = y.reshape(y.shape[0], -1) if y.ndim > 1 else y[None]
    p = p.reshape(p.shape[0], -1) if p.ndim > 1 else p[None]
    tp = (y & p).sum(axis=1)
    fp = (~y & p).sum(axis=1)
    fn = (y & ~p).sum(axis=1)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)


# ---------------------------------------------------------------------------- folders of masks
MASK_SUFFIXES = (".png",)


@dataclass
class FolderEvaluation:
    """What :func:`evaluate_folders` found: the figures and every pair it could not use."""

    scores: dict[str, Any]
    num_classes: int
    evaluated: int = 0
    missing: list[str] = field(default_factory=list)  # in GT, no prediction
    extra: list[str] = field(default_factory=list)  # prediction without GT
    size_mismatch: list[str] = field(default_factory=list)  # "name: pred HxW, gt HxW"
    unreadable: list[str] = field(default_factory=list)  # "name: reason"
    gt_out_of_range: int = 0  # GT pixels >= num_classes that are not ignore_index (skipped)

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.size_mismatch) + len(self.unreadable)

    def to_dict(self, class_names: list[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "miou": _json_float(self.scores["miou"]),
            "pixel_acc": _json_float(self.scores["pixel_acc"]),
            "images_evaluated": self.evaluated,
            "classes": [],
            "missing": self.missing,
            "extra": self.extra,
            "size_mismatch": self.size_mismatch,
            "unreadable": self.unreadable,
            "gt_out_of_range_pixels": self.gt_out_of_range,
        }
        for k in range(self.num_classes):
            out["classes"].append(
                {
                    "index": k,
                    "name": class_names[k] if class_names and k < len(class_names) else str(k),
                    "present": bool(self.scores["present"][k]),
                    "iou": _json_float(self.scores["iou"][k]),
                    "precision": _json_float(self.scores["precision"][k]),
                    "recall": _json_float(self.scores["recall"][k]),
                    "fp_tp": _json_float(self.scores["fp_tp"][k]),
                    "gt_pixels": int(self.scores["gt_pixels"][k]),
                    "pred_pixels": int(self.scores["pred_pixels"][k]),
                }
            )
        return out


def _json_float(x: float) -> float | str | None:
    """JSON has no NaN/inf: NaN -> None, inf -> "inf"."""
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


def _index_masks(folder: Path) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in MASK_SUFFIXES and not p.name.startswith(".")  # skip temp files
    }


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    num_classes: int | None = None,
    ignore_index: int = 255,
    progress: Callable[[int, int], None] | None = None,
    names: list[str] | None = None,
    on_pair: Callable[[str, np.ndarray, np.ndarray], None] | None = None,
) -> FolderEvaluation:
    """Confusion matrix of the index PNGs in ``pred_dir`` against same-named ones in ``gt_dir``.

    The one way a folder of masks is scored (``seco eval``, the demo, the benchmarks). Pairs are
    matched by file stem; ``names`` restricts the ground truth to those stems (a split), in that
    order. Missing or extra files, size mismatches and unreadable files are recorded and skipped.
    One image pair is in memory at a time. Without ``num_classes`` the class count is the largest
    index seen (other than ``ignore_index``) plus one. ``progress(done, total)`` is called after
    each ground-truth file and ``on_pair(name, gt, pred)`` with every pair that was counted (for
    figures of one's own, e.g. context false activation).
    """
    from seco_deploy.data.io import read_mask

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for folder, what in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder {folder} does not exist or is not a folder")
    preds, gts = _index_masks(pred_dir), _index_masks(gt_dir)
    # Without a class count, accumulate over indices 0..254 (255 is "ignore"/"no decision") and trim.
    k = num_classes if num_classes is not None else 255
    cm = ConfusionMatrix(k, ignore_index=ignore_index)
    result = FolderEvaluation(scores={}, num_classes=k)
    if names is None:
        result.extra = sorted(set(preds) - set(gts))
        names = sorted(gts)
    for i, name in enumerate(names):
        if name not in preds or name not in gts:
            result.missing.append(name)
        else:
            try:
                gt = read_mask(gts[name])
                pred = read_mask(preds[name])
            except (ValueError, OSError) as exc:
                result.unreadable.append(f"{name}: {exc}")
            else:
                if gt.shape != pred.shape:
                    result.size_mismatch.append(
                        f"{name}: prediction {pred.shape[0]}x{pred.shape[1]}, ground truth {gt.shape[0]}x{gt.shape[1]}"
                    )
                else:
                    g = gt.astype(np.int64)
                    result.gt_out_of_range += int(((g >= k) & (g != ignore_index)).sum())
                    cm.update(g, pred)
                    result.evaluated += 1
                    if on_pair is not None:
                        on_pair(name, gt, pred)
        if progress is not None:
            progress(i + 1, len(names))
    matrix = cm.matrix
    if num_classes is None:
        used = np.flatnonzero(matrix[:, :k].sum(axis=0) + matrix.sum(axis=1))
        k = int(used.max()) + 1 if used.size else 1
        matrix = np.concatenate([matrix[:k, :k], matrix[:k, -1:]], axis=1)
        result.num_classes = k
    result.scores = scores_from_matrix(matrix)
    return result
