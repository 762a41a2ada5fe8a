"""What one SeCo iteration costs against one before the contrast phase, per configuration.

Issue 14's yardstick: at equal training time, SeCo's iterations after ``train.contrast_start``
(the global view, the crops, the teacher, and after ``train.seg_start`` the decoder's pseudo label,
PAR and the CRF regulariser) are what it pays for its extra passes. For each configuration
(``--configs``: ``seco`` = the ``cpu`` preset, ``gv96`` / ``gv64`` = the same with
``data.global_view_size`` 96 / 64, ``baseline`` = every ablation switch off), in ONE process,
this builds :func:`train_step.build_iteration` at three phases (``early``: cls, aux, ptc only;
``contrast``: LiL and LiG on, before the seg term; ``full``: every term on) and times them
round-robin (one iteration of each, ``--rounds`` times, after a warm-up), so the machine's load
hits every row alike. It prints the fastest seconds per phase and the ratios to the ``early``
phase of the same configuration (the demo's calibration measures ``full`` / ``early``)::

    .venv/bin/python benchmarks/iteration_cost.py --rounds 4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_step  # noqa: E402

VARIANTS = {
    "seco": ("cpu", []),
    "gv96": ("cpu", ["data.global_view_size=96"]),
    "gv64": ("cpu", ["data.global_view_size=64"]),
    "baseline": ("cpu", train_step.ABLATION_OFF),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="seco,gv96,gv64,baseline")
    parser.add_argument("--phases", default="early,contrast,full")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch

    from seco_deploy.train.iteration import resolve_amp

    names = args.configs.split(",")
    phases = args.phases.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {', '.join(VARIANTS)}")
    runs = {}
    for name in names:
        train_step.CONFIGS[name] = VARIANTS[name]
        for phase in phases:
            iterate, info = train_step.build_iteration(name, None, "cpu", args.classes, phase)
            runs[(name, phase)] = (iterate, resolve_amp(info["amp"], torch.device("cpu")))
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    for iterate, amp in runs.values():
        iterate(0, amp)  # warm-up
    for r in range(args.rounds):
        for key, (iterate, amp) in runs.items():
            t0 = time.perf_counter()
            iterate(r + 1, amp)
            times[key].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n}/{p} {times[(n, p)][-1]:.2f} s" for n, p in runs),
              flush=True)
    print(f"\nfastest of {args.rounds} rounds, s per iteration (ratio to the same configuration's early phase):")
    print("| configuration | " + " | ".join(phases) + " |")
    print("| --- |" + " --- |" * len(phases))
    result = {}
    for name in names:
        best = {p: min(times[(name, p)]) for p in phases}
        base = best.get("early")
        cells = [f"{best[p]:.3f}" + (f" ({best[p] / base:.2f}x)" if base and p != "early" else "") for p in phases]
        print(f"| {name} | " + " | ".join(cells) + " |")
        result[name] = {"overrides": VARIANTS[name][1], "fastest_s": best,
                        "all_s": {p: times[(name, p)] for p in phases}}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
