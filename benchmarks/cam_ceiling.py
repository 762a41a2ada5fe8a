"""The resolution ceiling of CAM pseudo-labels: the mIoU of a perfect CAM on the ViT's token grid.

A CAM holds one value per patch token. At base size S (the image resized to S x S, as the CAM
pseudo-labels are made, method §3.1) and scale s, the grid is ``round(S s / p)`` tokens a side
for patch size p. The best such a map can say about class c at a token is the share of the
token's pixels that are c; this script takes exactly that (the ground truth's one-hot masks,
area-pooled to each grid), upsamples it bilinearly to the image as the CAMs are, sums over the
scales, and takes the argmax. No classifier, CAM or threshold can do better at that grid (up to
the decoding rule), so a CAM mIoU target above this figure cannot be met at that setting.

    python benchmarks/cam_ceiling.py --data runs/demo/data --setting 160:1.0 --setting 160:1.0,1.4

Per setting: mIoU and per-class IoU over the split's images (``--split``, default val).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seco_deploy.data.datasets import open_dataset  # noqa: E402
from seco_deploy.metrics import ConfusionMatrix  # noqa: E402


def parse_setting(text: str) -> tuple[int, tuple[float, ...]]:
    """``"160:1.0,1.4"`` -> ``(160, (1.0, 1.4))``."""
    base, sep, scales = text.partition(":")
    try:
        parsed = (int(base), tuple(float(s) for s in (scales or "1.0").split(",")))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--setting {text!r}: expected BASE:SCALES, e.g. 160:1.0,1.4") from exc
    if parsed[0] < 1 or not parsed[1] or min(parsed[1]) <= 0:
        raise argparse.ArgumentTypeError(f"--setting {text!r}: the base and the scales must be positive")
    return parsed


def ceiling_label(mask: np.ndarray, num_classes: int, base: int, scales: tuple[float, ...], patch: int,
                  ignore_index: int = 255) -> np.ndarray:
    """The perfect CAM's label (H, W) of ``mask`` (H, W) at ``base`` and ``scales`` (module doc)."""
    h, w = mask.shape
    valid = mask != ignore_index
    onehot = F.one_hot(torch.from_numpy(np.where(valid, mask, 0).astype(np.int64)), num_classes)
    onehot = onehot.permute(2, 0, 1)[None].float()
    total = torch.zeros(1, num_classes, h, w)
    for s in scales:
        grid = max(1, round(base * s / patch))
        share = F.adaptive_avg_pool2d(onehot, grid)
        total += F.interpolate(share, size=(h, w), mode="bilinear", align_corners=False)
    return total.argmax(1)[0].numpy().astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a dataset with masks (any layout seco reads)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--setting", type=parse_setting, action="append", default=None,
                        help="BASE:SCALES, e.g. 160:1.0 or 160:1.0,1.4 (repeatable; default 160:1.0)")
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    settings = args.setting or [(160, (1.0,))]
    ds = open_dataset(args.data, args.split)
    if not ds.has_masks:
        raise SystemExit(f"{args.data} ({args.split}) has no masks; the ceiling needs them")
    k = len(ds.classes)
    matrices = [ConfusionMatrix(k, ignore_index=255) for _ in settings]
    for i in range(len(ds)):
        mask = ds[i].mask
        for matrix, (base, scales) in zip(matrices, settings, strict=True):
            matrix.update(mask, ceiling_label(mask, k, base, scales, args.patch))
    rows = []
    print(f"{args.data} ({args.split}, {len(ds)} images), patch {args.patch}; per class: "
          + " ".join(ds.classes))
    for matrix, (base, scales) in zip(matrices, settings, strict=True):
        r = matrix.compute()
        iou = [float(x) for x in np.asarray(r["iou"])]
        rows.append({"base": base, "scales": list(scales), "miou": float(r["miou"]), "iou": iou})
        grids = "/".join(str(max(1, round(base * s / args.patch))) for s in scales)
        print(f"base {base} scales {','.join(f'{s:g}' for s in scales):12s} grid {grids:>8s}: "
              f"mIoU {100 * r['miou']:5.1f}  " + " ".join(f"{100 * x:4.0f}" for x in iou))
    if args.json:
        args.json.write_text(json.dumps({"data": str(args.data), "split": args.split, "rows": rows}, indent=2) + "\n",
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
