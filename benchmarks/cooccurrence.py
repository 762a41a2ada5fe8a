"""The co-occurrence benchmark: does SeCo stop a tag-trained CAM from lighting up the context?

On one synthetic set (``seco data synth``, default profile ``hard``), one seed and one
training time budget per variant, train the paper's ablation ladder:

  a  plain-CAM baseline       every SeCo switch off (ToCo-style: cls, aux cls, PTC, seg, reg)
  b  decomposition + LiL      ROI decomposition, local contrast
  c  + LiG                    global contrast with prototypes
  d  full SeCo                + tag rectification

then export each to ONNX (seg + CAM heads) and with ONNX Runtime write CAM pseudo-labels for
the training split (true tags; heatmaps saved) and decoder masks for the validation split. Per
variant: pseudo-label mIoU (train), decoder mIoU (val), and for every class with a context or
a partner its FP:TP and false activation (``seco_deploy.demo.cooccurrence``: over images holding
the class, the fraction of its context's pixels labelled as the class; "far" counts only
context pixels more than one patch from any object).

Prints one table; writes OUT/cooccurrence.json and OUT/report.html (table + baseline vs SeCo
heatmaps side by side). ``seco demo --benchmark OUT`` puts the same section in the demo report.

    python benchmarks/cooccurrence.py --minutes 8 --out runs/cooccurrence
    python benchmarks/cooccurrence.py --preset test --images 24 --size 64 --minutes 0.5   # smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS: dict[str, tuple[str, dict[str, bool]]] = {
    "a": ("plain-CAM baseline", dict(use_decomposition=False, use_lil=False, use_lig=False,
                                     use_rectification=False, use_aux_roi=False)),
    "b": ("decomposition + LiL", dict(use_decomposition=True, use_lil=True, use_lig=False,
                                      use_rectification=False, use_aux_roi=True)),
    "c": ("+ LiG", dict(use_decomposition=True, use_lil=True, use_lig=True, use_rectification=False,
                        use_aux_roi=True)),
    "d": ("full SeCo (+ rectification)", dict(use_decomposition=True, use_lil=True, use_lig=True,
                                              use_rectification=True, use_aux_roi=True)),
}


def switches(key: str) -> list[str]:
    return [f"model.{k}={'true' if v else 'false'}" for k, v in VARIANTS[key][1].items()]


def run_variant(key: str, args: argparse.Namespace, data_root: Path, out: Path, console: Any) -> dict[str, Any]:
    from seco_deploy.demo.evaluation import score_folder, split_names
    from seco_deploy.demo.pipeline import demo_config, export_model, predict_split, train_run

    vdir = out / key
    overrides = [*args.set, *switches(key)]
    cfg = demo_config(args.preset, overrides, data_root, args.minutes, args.sec_per_iter, args.seed,
                      console=console, iters=args.iters)
    console.print(f"[bold]variant {key}: {VARIANTS[key][0]}[/] ({cfg.train.iters} iterations planned, "
                  f"stop after {args.minutes:g} min)", highlight=False)
    t0 = time.perf_counter()
    result = train_run(cfg, vdir / "run", console)
    train_s = time.perf_counter() - t0
    onnx = vdir / "model.onnx"
    export_model(vdir / "run" / "last.pt", onnx, console)
    train_names, val_names = split_names(data_root, "train"), split_names(data_root, "val")
    pred_dir = vdir / "pseudo"
    predict_split(onnx, data_root, train_names, pred_dir, "pseudo", save_cam=True)
    predict_split(onnx, data_root, val_names, vdir / "mask", "mask")
    pseudo = score_folder(pred_dir / "masks", data_root, train_names, args.away_px)
    masks = score_folder(vdir / "mask" / "masks", data_root, val_names, args.away_px)
    coupled = set(pseudo["cooccurrence"])
    per_class = {
        row["name"]: {"pseudo_iou": row["iou"], "pseudo_fp_tp": row["fp_tp"],
                      "decoder_iou": m["iou"], "decoder_fp_tp": m["fp_tp"]}
        for row, m in zip(pseudo["classes"], masks["classes"], strict=True)
    }
    return {
        "label": VARIANTS[key][0],
        "switches": VARIANTS[key][1],
        "iterations": result.iteration,
        "iterations_planned": cfg.train.iters,
        "schedule": {k: getattr(cfg.train, k) for k in ("warmup_iters", "update_prototype", "contrast_start",
                                                          "seg_start", "cam2mask")},
        "stop_reason": result.stop_reason,
        "train_seconds": round(train_s, 1),
        "pseudo_miou_train": pseudo["miou"],
        "decoder_miou_val": masks["miou"],
        "cooccurrence": pseudo["cooccurrence"],
        "decoder_cooccurrence": masks["cooccurrence"],
        "coupled_classes": {c: per_class[c] for c in sorted(coupled)},
        "per_class": per_class,
        "pred_dir": str(pred_dir),
    }


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:5.1f}"


def _ratio(x: Any) -> str:
    if x is None:
        return "-"
    return "inf" if x == float("inf") or x == "inf" else f"{x:.2f}"


def print_table(result: dict[str, Any]) -> str:
    """The benchmark table as text (also returned)."""
    variants = result["variants"]
    coupled = []
    for v in variants.values():
        for c in v["cooccurrence"]:
            if c not in coupled:
                coupled.append(c)
    head = f"{'variant':<32} {'iters':>5} {'pseudo mIoU':>11} {'dec mIoU':>8}"
    for c in coupled:
        head += f" | {c + ' FP:TP':>12} {'FA':>5} {'FAfar':>5}"
    lines = [head, "-" * len(head)]
    for key, v in variants.items():
        line = f"{key + ' ' + v['label']:<32} {v['iterations']:>5} {_pct(v['pseudo_miou_train']):>11} " \
               f"{_pct(v['decoder_miou_val']):>8}"
        for c in coupled:
            r = v["cooccurrence"].get(c, {})
            line += f" | {_ratio(v['per_class'][c]['pseudo_fp_tp']):>12} {_pct(r.get('fa')):>5} " \
                    f"{_pct(r.get('fa_far')) if r.get('kind') == 'context' else '  n/a':>5}"
        lines.append(line)
    lines.append("FP:TP and FA (false activation, %) of the CAM pseudo-labels on the training split; FAfar: context "
                 "pixels more than one patch from any object; partners (horse/person): FA = partner pixels "
                 "labelled as the class.")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/cooccurrence"))
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget per variant")
    parser.add_argument("--iters", type=int, default=None,
                        help="fixed iterations per variant instead of fitting the schedule to --minutes (a cap then)")
    parser.add_argument("--variants", default="a,b,c,d")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", default="hard", help="synthetic profile (hard: the baseline shows the trap)")
    parser.add_argument("--data", type=Path, default=None, help="use this synthetic set (default OUT/data)")
    parser.add_argument("--set", action="append", default=[], help="extra config override (every variant)")
    parser.add_argument("--sec-per-iter", type=float, default=None)
    parser.add_argument("--away-px", type=float, default=16.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    import torch

    from seco_deploy.console import Console
    from seco_deploy.demo.pipeline import prepare_data

    torch.set_flush_denormal(True)
    console = Console(stderr=True)
    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown or not keys:
        parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    data_root = args.data or prepare_data(args.out / "data", args.images, args.size, args.seed, args.difficulty,
                                          console)
    from seco_deploy.data.synth import load_synth_info

    info = load_synth_info(data_root)
    result: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/cooccurrence.py", *(argv if argv is not None else sys.argv[1:])]),
        "data_root": str(Path(data_root).resolve()),
        "difficulty": info["difficulty"],
        "images": info["images"],
        "seed": args.seed,
        "preset": args.preset,
        "minutes_per_variant": args.minutes,
        "overrides": args.set,
        "classes": info["classes"],
        "variants": {},
    }
    path = args.out / "cooccurrence.json"
    if path.is_file():  # keep the variants of an earlier run on the same data that this run does not redo
        earlier = json.loads(path.read_text(encoding="utf-8"))
        if earlier.get("data_root") == result["data_root"]:
            result["variants"] = {k: v for k, v in earlier.get("variants", {}).items() if k not in keys}
    for key in keys:
        result["variants"][key] = run_variant(key, args, Path(data_root), args.out, console)
        # after every variant: partial results survive
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    result["variants"] = {k: result["variants"][k] for k in VARIANTS if k in result["variants"]}
    result["table"] = print_table(result)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_report(result, args.out)
    print(f"json: {path}\nreport: {args.out / 'report.html'}")
    return 0


def write_report(result: dict[str, Any], out: Path) -> Path:
    from seco_deploy.demo import report as rp
    from seco_deploy.demo.evaluation import split_names
    from seco_deploy.demo.pipeline import pick_examples

    root = Path(result["data_root"])
    rep = rp.Report("Co-occurrence benchmark: plain CAM vs SeCo",
                    subtitle=rp.esc(f"{result['command']} ({result['images']} images, {result['difficulty']}, "
                                    f"seed {result['seed']}, {result['minutes_per_variant']:g} min per variant)"))
    rep.add("table", "Results", f"<pre>{rp.esc(result.get('table', ''))}</pre>")
    rep.add("comparison", "Baseline vs SeCo", rp.comparison_section(
        result, root, pick_examples(root, split_names(root, "train"), 6)))
    return rep.write(out / "report.html")


if __name__ == "__main__":
    raise SystemExit(main())
