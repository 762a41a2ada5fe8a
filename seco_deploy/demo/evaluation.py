"""Scoring predicted masks of a synthetic set: mIoU, per-class IoU and FP:TP, context false activation.

``score_folder(pred_dir, data_root, names)`` scores ``pred_dir/NAME.png`` for every name against the
set's ``SegmentationClass`` with :func:`seco_deploy.metrics.evaluate_folders` (mIoU over the
classes present in the ground truth) and counts context false activation from ``ContextMasks``
(:mod:`seco_deploy.demo.cooccurrence`).
``aux_cam_folder`` writes the auxiliary-CAM pseudo-labels of a checkpoint (PyTorch; the ONNX
export carries the seg and CAM heads only) so they can be scored the same way.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from seco_deploy.demo.cooccurrence import CooccurrenceMeter, couplings_from_synth
from seco_deploy.metrics import evaluate_folders

__all__ = ["aux_cam_folder", "score_folder", "split_names"]


def split_names(data_root: str | Path, split: str) -> list[str]:
    """Image names of ``ImageSets/Segmentation/<split>.txt``."""
    path = Path(data_root) / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is {data_root} a VOC-layout set?")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _clean(x: float) -> float | None:
    return None if (isinstance(x, float) and math.isnan(x)) else (float(x) if not math.isinf(x) else float("inf"))


def score_folder(
    pred_dir: str | Path,
    data_root: str | Path,
    names: list[str],
    away_px: float = 16.0,
) -> dict[str, Any]:
    """Score ``pred_dir/NAME.png`` against the ground truth of ``data_root`` for ``names``.

    Returns ``miou``, ``images``, ``missing`` (names without a prediction), ``classes``: a list of
    ``{name, iou, fp_tp, precision, recall, present}`` (background first) and ``cooccurrence``
    (see :class:`CooccurrenceMeter`; empty when the set has no ``synth.json``).
    """
    from seco_deploy.data.datasets import read_classes_txt
    from seco_deploy.data.io import read_mask
    from seco_deploy.data.synth import load_synth_info

    root, pred_dir = Path(data_root), Path(pred_dir)
    try:
        info = load_synth_info(root)
        classes = list(info["classes"])
    except FileNotFoundError:
        info = None
        classes = read_classes_txt(root / "classes.txt")
    meter = CooccurrenceMeter(couplings_from_synth(info), away_px=away_px) if info is not None else None

    def count_context(name: str, gt: np.ndarray, pred: np.ndarray) -> None:
        if meter is not None:
            ctx_path = root / "ContextMasks" / f"{name}.png"
            meter.update(pred, gt, read_mask(ctx_path) if ctx_path.is_file() else None)

    result = evaluate_folders(pred_dir, root / "SegmentationClass", len(classes), names=list(names),
                              on_pair=count_context)
    scores = result.scores
    missing = result.missing
    rows = [
        {
            "name": classes[k],
            "iou": _clean(scores["iou"][k]),
            "fp_tp": _clean(scores["fp_tp"][k]),
            "precision": _clean(scores["precision"][k]),
            "recall": _clean(scores["recall"][k]),
            "present": bool(scores["present"][k]),
        }
        for k in range(len(classes))
    ]
    co = meter.compute() if meter is not None else {}
    co = {k: {kk: (_clean(v) if isinstance(v, float) else v) for kk, v in row.items()} for k, row in co.items()}
    return {
        "miou": _clean(float(scores["miou"])),
        "images": result.evaluated,
        "missing": missing,
        "classes": rows,
        "cooccurrence": co,
    }


def aux_cam_folder(
    checkpoint: str | Path,
    data_root: str | Path,
    names: list[str],
    out_dir: str | Path,
    batch: int = 8,
    scales: tuple[float, ...] | None = None,
) -> Path:
    """Write the aux-CAM pseudo-labels (given tags) of ``names`` as palette PNGs in ``out_dir``.

    Same recipe as training validation: image resized to the crop size, multi-scale flip CAMs
    (``scales``, default ``model.cam_scales``) upsampled to the mask size, :func:`~seco_deploy.cam.cam_to_label` with
    the true tags and ``infer.bkg_thre`` (:func:`~seco_deploy.cam.labels_at_size`, as validation does).
    """
    import torch

    from seco_deploy.cam import labels_at_size, multi_scale_cams
    from seco_deploy.data.datasets import open_dataset
    from seco_deploy.data.io import write_mask_png
    from seco_deploy.data.palette import VOC_PALETTE
    from seco_deploy.data.transforms import EvalTransform
    from seco_deploy.runtime.checkpoint import load_for_inference

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net, cfg, _ = load_for_inference(checkpoint, device="cpu")
    dataset = open_dataset(data_root, "trainval")
    index = {n: i for i, n in enumerate(dataset.names)}
    transform = EvalTransform(cfg.data)
    with torch.inference_mode():
        for start in range(0, len(names), batch):
            samples = [dataset[index[n]] for n in names[start : start + batch]]
            images = torch.stack([torch.from_numpy(transform(s.image)) for s in samples])
            _, cam_aux = multi_scale_cams(net, images, tuple(scales) if scales else cfg.model.cam_scales)
            for i, s in enumerate(samples):
                size = s.image.shape[:2]
                label = labels_at_size(cam_aux[i : i + 1], torch.from_numpy(s.tags[None]), size, cfg.infer.bkg_thre)[0]
                write_mask_png(out / f"{s.name}.png", label.to(torch.uint8).numpy(), VOC_PALETTE)
    return out
