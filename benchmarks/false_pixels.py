"""Where a context-coupled class's false pixels lie: on its context, above the context's band, elsewhere.

The context false activation (``seco_deploy.demo.cooccurrence``) counts only the context's own
pixels (water for boat, rails for train). This script asks the converse: of all the pixels a set
of masks gives to class c wrongly, which share lies on c's context, which above the topmost row
of the context in that image (sky, shore: the scene's upper part), and which elsewhere; with
FP:TP (wrong pixels / right pixels) beside it. Over the images of the split (``--split``) that
have a mask in every folder given.

    python benchmarks/false_pixels.py --data runs/demo/data runs/demo/pred/pseudo/masks
    python benchmarks/false_pixels.py --data /tmp/lad/hard/data /tmp/lad/hard/jobs/{a,d}@N-s*/*/pseudo/masks

One line per class and folder; ``--json`` writes them too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image


def false_pixels(pred: np.ndarray, gt: np.ndarray, context: np.ndarray, cls: int, ctx: int) -> dict[str, int]:
    """Pixel counts for one image: ``right``, ``wrong`` (labelled ``cls``, truth another class), and of
    the wrong ones ``on_context`` (context mask == ``ctx``) and ``above`` (rows above the context's
    topmost row, off the context; 0 when the image has no such context)."""
    labelled = pred == cls
    wrong = labelled & (gt != cls)
    on_context = wrong & (context == ctx)
    rows = np.flatnonzero((context == ctx).any(axis=1))
    above = 0
    if rows.size:
        above = int((wrong[: rows[0]] & (context[: rows[0]] != ctx)).sum())
    return {"right": int((labelled & (gt == cls)).sum()), "wrong": int(wrong.sum()),
            "on_context": int(on_context.sum()), "above": above}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("masks", nargs="+", type=Path, help="folders of predicted masks (NAME.png)")
    parser.add_argument("--data", type=Path, required=True, help="the synthetic set (seco data synth)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    meta = json.loads((args.data / "synth.json").read_text(encoding="utf-8"))
    classes, index = meta["classes"], meta["context_index"]
    coupled = {c: (classes.index(c), index[ctx]) for c, ctx in meta["context_of"].items()}
    names = (args.data / "ImageSets" / "Segmentation" / f"{args.split}.txt").read_text(encoding="utf-8").split()
    rows = []
    for folder in args.masks:
        present = [n for n in names if (folder / f"{n}.png").is_file()]
        if not present:
            raise SystemExit(f"{folder}: no mask of the {args.split} split")
        totals = {c: dict.fromkeys(("right", "wrong", "on_context", "above"), 0) for c in coupled}
        for n in present:
            pred = np.asarray(Image.open(folder / f"{n}.png"))
            gt = np.asarray(Image.open(args.data / "SegmentationClass" / f"{n}.png"))
            context = np.asarray(Image.open(args.data / meta["context_masks"] / f"{n}.png"))
            for c, (ci, ctx) in coupled.items():
                for k, v in false_pixels(pred, gt, context, ci, ctx).items():
                    totals[c][k] += v
        for c, t in totals.items():
            w = max(t["wrong"], 1)
            row = {"masks": str(folder), "class": c, "images": len(present), **t,
                   "fp_tp": t["wrong"] / max(t["right"], 1), "share_on_context": t["on_context"] / w,
                   "share_above": t["above"] / w, "share_elsewhere": (t["wrong"] - t["on_context"] - t["above"]) / w}
            rows.append(row)
            print(f"{folder}  {c:>6}: FP:TP {row['fp_tp']:6.2f}; of its false pixels {row['share_on_context']:6.1%} on "
                  f"{meta['context_of'][c]}, {row['share_above']:6.1%} above it, {row['share_elsewhere']:6.1%} "
                  f"elsewhere ({len(present)} images)")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
