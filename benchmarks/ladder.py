"""The co-occurrence ladder over seeds: baseline vs SeCo from the same weights, equal iterations and equal time.

One synthetic set (made once), one initial encoder (``--pretrained``, default the ``cpu``
preset's ``builtin:vit-tiny-fractal-5k``), and for every training seed s:

- ``d@N``: full SeCo, N iterations (the schedule scaled to N: every phase joins);
- ``a@N``: the plain-CAM baseline, N iterations (**equal iterations**);
- ``a@T``: the baseline with as many iterations as it runs in SeCo's time, ``round(N * r)``
  where ``r = t_SeCo / t_baseline`` is the per-iteration cost ratio measured at the start of
  this run, interleaved (**equal time**);
- any ``--arm NAME=OVERRIDES`` (e.g. ``d-sigma0.5=model.rectify_sigma=0.5``), N iterations, or K
  when OVERRIDES holds ``iters=K`` (e.g. a cheaper SeCo at SeCo's time:
  ``d-gv64@T=data.global_view_size=64,iters=190``).

Runs and heads start from the same seed, so for one seed every arm starts from the same
weights. Each job is ``benchmarks/cooccurrence.py`` in its own process (``--jobs`` at a time,
``--threads`` torch threads each). Per arm the table gives the mean over seeds, the spread
(min..max) and the per-seed values of: CAM pseudo-label mIoU (train split), decoder mIoU
(val) and, for each context-coupled class, the CAM pseudo-labels' context false activation;
then the chain (``seco_deploy.train.chain``) of the last logged window of SeCo's training.

    python benchmarks/ladder.py --out runs/ladder --iters 300 --seeds 0,1,2 --jobs 2 --threads 1
    python benchmarks/ladder.py --out runs/ladder --difficulty cooccur ...   # the partly trapped profile

Writes OUT/ladder.json and OUT/ladder.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def calibrate(args: argparse.Namespace, data: Path) -> float:
    """t(d) / t(a): per-iteration cost ratio of full SeCo to the baseline, interleaved, every term on."""
    sys.path.insert(0, str(HERE))
    import torch
    from cooccurrence import switches

    from seco_deploy.demo.pipeline import demo_config, measure_sec_per_iter

    torch.set_num_threads(args.threads)
    cfgs = {k: demo_config(args.preset, [*args.set, *switches(k), f"model.pretrained={args.pretrained}"], data,
                           60.0, seed=0, iters=args.iters) for k in ("a", "d")}
    times: dict[str, list[float]] = {"a": [], "d": []}
    for _ in range(args.calibration_rounds):
        for k in ("a", "d"):
            times[k].append(measure_sec_per_iter(cfgs[k]))
    ratio = min(times["d"]) / min(times["a"])
    print(f"calibration: SeCo {min(times['d']):.2f} s/iter, baseline {min(times['a']):.2f} s/iter, ratio {ratio:.2f}",
          flush=True)
    return ratio


def run_job(args: argparse.Namespace, data: Path, name: str, variant: str, iters: int, seed: int,
            extra: list[str]) -> dict[str, Any]:
    out = args.out / "jobs" / f"{name}-s{seed}"
    result_path = out / "cooccurrence.json"
    if result_path.is_file() and not args.redo:
        done = json.loads(result_path.read_text(encoding="utf-8"))
        if variant in done.get("variants", {}) and done["variants"][variant]["iterations"] == iters:
            return done["variants"][variant] | {"out": str(out)}
    cmd = [sys.executable, str(HERE / "cooccurrence.py"), "--data", str(data), "--out", str(out), "--variants",
           variant, "--iters", str(iters), "--minutes", str(args.cap_minutes), "--seed", str(seed), "--preset",
           args.preset, "--set", f"model.pretrained={args.pretrained}"]
    for item in [*args.set, *extra]:
        cmd += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with (out / "job.log").open("w", encoding="utf-8") as log:
        code = subprocess.call(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f"job {name} seed {seed} failed (exit {code}); see {out / 'job.log'}")
    done = json.loads(result_path.read_text(encoding="utf-8"))
    print(f"  {name} seed {seed}: {iters} iterations in {time.perf_counter() - t0:.0f} s", flush=True)
    return done["variants"][variant] | {"out": str(out)}


def last_chain(job: dict[str, Any]) -> dict[str, Any]:
    """The last logged chain window of the job's training, with ``rectification_total`` over the whole run."""
    from seco_deploy.demo.plots import read_chain

    records = read_chain(Path(job["out"]) / variant_dir(job) / "run" / "metrics.jsonl")
    if not records:
        return {}
    total = {"removed_wrong": 0, "removed_right": 0}
    for r in records:
        for k in total:
            total[k] += int(r.get("rectification", {}).get(k, 0))
    return {**records[-1], "rectification_total": total}


def variant_dir(job: dict[str, Any]) -> str:
    return "d" if job["switches"].get("use_decomposition") else "a"


def _stats(values: list[float | None]) -> dict[str, Any]:
    xs = [v for v in values if v is not None]
    if not xs:
        return {"mean": None, "min": None, "max": None, "sd": None, "values": values}
    return {"mean": statistics.fmean(xs), "min": min(xs), "max": max(xs),
            "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0, "values": values}


def summarise(arms: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, jobs in arms.items():
        row: dict[str, Any] = {"iterations": [j["iterations"] for j in jobs],
                               "train_seconds": [j["train_seconds"] for j in jobs],
                               "pseudo_miou": _stats([j["pseudo_miou_train"] for j in jobs]),
                               "decoder_miou": _stats([j["decoder_miou_val"] for j in jobs]), "context_fa": {}}
        for cls in jobs[0]["cooccurrence"]:
            if jobs[0]["cooccurrence"][cls].get("kind") == "context":
                row["context_fa"][cls] = _stats([j["cooccurrence"].get(cls, {}).get("fa") for j in jobs])
        chains = [last_chain(j) for j in jobs]
        row["chain"] = chains
        out[name] = row
    return out


def _chain_mean(chain: list[dict[str, Any]], part: str, cls: str, key: str) -> str:
    vals = [float(v) for c in chain
            if isinstance(v := c.get(part, {}).get(cls, {}).get(key), (int, float))]
    return f"{statistics.fmean(vals):.2f}" if vals else "-"


def _fmt(s: dict[str, Any], scale: float = 100.0) -> str:
    if s["mean"] is None:
        return "-"
    per = "/".join("-" if v is None else f"{scale * v:.1f}" for v in s["values"])
    return f"{scale * s['mean']:.1f} ({scale * s['min']:.1f}..{scale * s['max']:.1f}; {per})"


def markdown(result: dict[str, Any]) -> str:
    summary = result["arms"]
    classes = sorted({c for row in summary.values() for c in row["context_fa"]})
    head = "| arm | iterations | train s | CAM pseudo mIoU | decoder mIoU | " + " | ".join(
        f"{c} context FA %" for c in classes) + " |"
    lines = [head, "|" + " --- |" * (5 + len(classes))]
    for name, row in summary.items():
        lines.append(f"| {name} | {'/'.join(map(str, row['iterations']))} | "
                     f"{'/'.join(f'{t:.0f}' for t in row['train_seconds'])} | {_fmt(row['pseudo_miou'])} | "
                     f"{_fmt(row['decoder_miou'])} | " + " | ".join(_fmt(row["context_fa"][c]) for c in classes) + " |")
    lines += ["", "Mean (min..max; per seed). FA: the share of the context's pixels, in images of its class, that the "
              "CAM pseudo-labels give to the class.", ""]
    for name, row in summary.items():
        chain = [c for c in row["chain"] if c]
        if not chain or "tags" not in chain[0]:
            continue
        lines.append(f"Chain of `{name}` (last logged window; mean over seeds):")
        lines.append("")
        lines.append("| class | seed precision | seed recall | seed context FA | ROI precision | crops tagged | "
                     "tag right | context only | other class | nothing |")
        lines.append("|" + " --- |" * 10)
        cells = (("seeds", "precision"), ("seeds", "recall"), ("seeds", "context_fa"), ("roi", "precision"),
                 ("tags", "crops"), ("tags", "right"), ("tags", "context"), ("tags", "other"), ("tags", "nothing"))
        for cls in chain[0]["seeds"]:
            lines.append(f"| {cls} | " + " | ".join(_chain_mean(chain, part, cls, key) for part, key in cells) + " |")
        rect = [c.get("rectification_total", {}) for c in chain]
        lines.append("")
        lines.append("Rectification over the whole run, per seed: " + "; ".join(
            f"removed {r.get('removed_wrong', 0)} wrong, {r.get('removed_right', 0)} right" for r in rect))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ladder"))
    parser.add_argument("--iters", type=int, default=300, help="SeCo's iterations (N)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--difficulty", default="hard")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--pretrained", default="builtin:vit-tiny-fractal-5k")
    parser.add_argument("--set", action="append", default=[], help="override for every arm")
    parser.add_argument("--arm", action="append", default=[],
                        help="extra arm NAME=OVERRIDE[,OVERRIDE] (full SeCo + overrides, N iterations, or K "
                             "with the item iters=K)")
    parser.add_argument("--no-equal-time", action="store_true", help="skip the baseline at SeCo's time")
    parser.add_argument("--arms", default=None, help="run only these arms (comma-separated names, e.g. d@N,a@T)")
    parser.add_argument("--ratio", type=float, default=None, help="cost ratio SeCo/baseline (skip calibration)")
    parser.add_argument("--calibration-rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cap-minutes", type=float, default=240.0, help="time cap of one job's training")
    parser.add_argument("--redo", action="store_true", help="rerun jobs whose results exist")
    args = parser.parse_args(argv)

    from seco_deploy.console import Console
    from seco_deploy.demo.pipeline import prepare_data

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(args.out / "data", args.images, args.size, args.data_seed, args.difficulty,
                        Console(stderr=True))
    ratio = args.ratio if args.ratio is not None else (None if args.no_equal_time else calibrate(args, data))
    plan: list[tuple[str, str, int, list[str]]] = [("d@N", "d", args.iters, []), ("a@N", "a", args.iters, [])]
    if ratio is not None and not args.no_equal_time:
        plan.append(("a@T", "a", max(1, round(args.iters * ratio)), []))
    for spec in args.arm:
        name, _, overrides = spec.partition("=")
        items = [o for o in overrides.split(",") if o]
        iters = [int(o.split("=", 1)[1]) for o in items if o.startswith("iters=")]
        plan.append((name, "d", iters[-1] if iters else args.iters, [o for o in items if not o.startswith("iters=")]))
    if args.arms:
        keep = {a.strip() for a in args.arms.split(",") if a.strip()}
        unknown = keep - {p[0] for p in plan}
        if unknown:
            parser.error(f"--arms: unknown arm(s) {', '.join(sorted(unknown))}; known: {', '.join(p[0] for p in plan)}")
        plan = [p for p in plan if p[0] in keep]
    jobs = [(name, variant, iters, seed, extra) for name, variant, iters, extra in plan for seed in seeds]
    print(f"{len(jobs)} jobs ({', '.join(p[0] for p in plan)} x seeds {seeds}), {args.jobs} at a time", flush=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {(name, seed): pool.submit(run_job, args, data, name, variant, iters, seed, extra)
                   for name, variant, iters, seed, extra in jobs}
        arms = {name: [futures[(name, seed)].result() for seed in seeds] for name, *_ in plan}
    result = {"command": " ".join(["python", "benchmarks/ladder.py", *(argv if argv is not None else sys.argv[1:])]),
              "seeds": seeds, "ratio": ratio, "difficulty": args.difficulty, "pretrained": args.pretrained,
              "iters": args.iters, "arms": summarise(arms)}
    (args.out / "ladder.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = markdown(result)
    (args.out / "ladder.md").write_text(f"`{result['command']}` (cost ratio {ratio})\n\n{text}\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
