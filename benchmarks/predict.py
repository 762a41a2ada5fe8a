"""`seco predict` at its default settings against the model's best throughput on this machine, per format.

The measurement is `seco benchmark`'s (:mod:`seco_deploy.bench.measure`, one worker process per
format and setting): images/s end to end (decode, TTA, argmax, PNG writing) and of the model
alone on the same inputs. Setup: ``--images`` synthetic 224 px images (``seco data synth``) and a
random-init checkpoint of the ``cpu`` preset (ViT-Tiny/16, crop 160, mask scale 1.0, flip TTA);
the model's throughput does not depend on the weights. Predict's barely does: an untrained
model's logits are all alike, so no class is ruled out of its masks
(:func:`seco_deploy.infer.tta.fused_masks`) and the figures are those of the slowest case.

For every format it runs predict's defaults (no ``--threads``/``--workers``/``--batch``), then a
grid of settings a user could tune (``--threads`` x ``--workers`` x ``--batches``), and prints:

- ``default``: end-to-end images/s at the defaults;
- ``best model``: the model alone at its best setting of the grid (and the defaults);
- ``ratio`` = default / best model: the share of the machine's best model throughput that predict
  delivers untuned (the target is >= 0.85);
- ``best e2e``: the best end-to-end figure over the grid, with its setting.

Settings run interleaved per format (defaults, grid, defaults again; the better default counts),
so the machine's load changes hit them alike::

    .venv/bin/python benchmarks/predict.py --images 100 --formats torch,torch-bf16,onnx-int8
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--formats", default="torch,torch-bf16,onnx-int8")
    parser.add_argument("--threads", default=None, help="Grid of --threads (default: 1 and every CPU).")
    parser.add_argument("--workers", default="0,1", help="Grid of --workers.")
    parser.add_argument("--batches", default="8", help="Grid of --batch (the defaults use the model's, 8).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default=None, help="Working folder (default: a temporary one, removed).")
    parser.add_argument("--json", default=None, help="Also write the results here.")
    args = parser.parse_args()

    from seco_deploy.bench.runner import Benchmark, BenchmarkRequest
    from seco_deploy.config import preset
    from seco_deploy.data.synth import synthesize
    from seco_deploy.runtime.device import available_cpus
    from seco_deploy.train.checkpoint import build_inference_checkpoint

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="seco-bench-predict-"))
    data = work / "data"
    if not (data / "JPEGImages").is_dir() or len(list((data / "JPEGImages").iterdir())) != args.images:
        synthesize(data, images=args.images, size=args.size, seed=0, overwrite=True)
    classes = (data / "classes.txt").read_text(encoding="utf-8").split()
    ckpt = work / "cpu_random.pt"
    if not ckpt.exists():
        build_inference_checkpoint(ckpt, classes, cfg=preset("cpu"))
    cpus = available_cpus()
    threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, cpus})
    grid = list(itertools.product(threads, [int(w) for w in args.workers.split(",")],
                                  [int(b) for b in args.batches.split(",")]))
    print(f"{args.images} images ({args.size} px JPEG), cpu preset random-init checkpoint, {cpus} CPUs; "
          f"grid threads {threads} x workers {args.workers} x batch {args.batches}", flush=True)

    def run(fmt: str, setting: tuple[int, int, int] | None, tag: str) -> dict:
        t, w, b = setting if setting is not None else (None, None, None)
        request = BenchmarkRequest(checkpoint=ckpt, data=data, formats=fmt, images=args.images, device="cpu",
                                   out=work / "runs" / tag, cache=work / "cache", threads=t, workers=w, batch=b,
                                   repeats=args.repeats)
        row = Benchmark(request).run().rows[0]
        if row.status != "measured":
            raise SystemExit(f"{fmt} {tag}: {row.status}: {row.reason}")
        d = row.details
        return {"setting": f"threads {d['threads']} workers {d['workers']} batch {d['batch']}",
                "default": setting is None, "e2e_ips": row.e2e_ips, "model_ips": row.model_ips,
                "forward_share": d.get("forward_share")}

    results = {}
    for fmt in args.formats.split(","):
        runs = [run(fmt, None, f"{fmt}-default-1")]
        runs += [run(fmt, s, f"{fmt}-t{s[0]}-w{s[1]}-b{s[2]}") for s in grid]
        runs.append(run(fmt, None, f"{fmt}-default-2"))
        default = max((r for r in runs if r["default"]), key=lambda r: r["e2e_ips"])
        best_model = max(runs, key=lambda r: r["model_ips"])
        best_e2e = max(runs, key=lambda r: r["e2e_ips"])
        ratio = default["e2e_ips"] / best_model["model_ips"]
        results[fmt] = {"runs": runs, "default": default, "best_model": best_model, "best_e2e": best_e2e,
                        "ratio": ratio}
        for r in runs:
            print(f"  {fmt:>10} {'(default) ' if r['default'] else ''}{r['setting']}: end to end "
                  f"{r['e2e_ips']:.2f} img/s, model alone {r['model_ips']:.2f} img/s, forward share "
                  f"{r['forward_share']:.2f}", flush=True)
        print(f"{fmt:>10}: default {default['e2e_ips']:.2f} img/s ({default['setting']}) | best model "
              f"{best_model['model_ips']:.2f} img/s ({best_model['setting']}) | ratio {ratio:.3f} | best end to end "
              f"{best_e2e['e2e_ips']:.2f} img/s ({best_e2e['setting']})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
