"""Where one training iteration's time goes, section by section of the step (method §2.1-§2.10).

Runs :class:`~seco_deploy.train.iteration.Iteration` (the phase with every loss term on) under
``torch.profiler`` and sums the wall time of each ``seco §2.x`` range that
:class:`~seco_deploy.train.step.TrainingStep` opens around its numbered parts; what is left of the
iteration's wall time is backward and the optimiser. The shares are measured in one run, so
machine load affects every row alike; compare configurations by their shares.

    python benchmarks/step_profile.py --preset cpu --iters 3
    python benchmarks/step_profile.py --preset cpu --set model.use_lil=false ...
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

LABEL = "seco §"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", action="append", default=[], help="config override")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--batch", type=int, default=None)
    args = parser.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train_step

    from seco_deploy.train.iteration import resolve_amp

    train_step.CONFIGS["profile"] = (args.preset, list(args.set))
    iterate, info = train_step.build_iteration("profile", args.batch, "cpu", args.classes)
    amp = resolve_amp(info["amp"], torch.device("cpu"))
    iterate(0, amp)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for i in range(args.iters):
            iterate(i + 1, amp)
        wall = time.perf_counter() - start
    spent: dict[str, float] = collections.defaultdict(float)
    for event in prof.events():
        if event.name.startswith(LABEL):
            spent[event.name[len(LABEL):]] += event.cpu_time_total / 1e6
    spent["backward, optimiser"] = max(0.0, wall - sum(spent.values()))
    print(f"{info['config']}: preset {args.preset} {' '.join(args.set)}; batch {info['batch']}, crop {info['crop']}; "
          f"{args.iters} iterations, {wall / args.iters:.2f} s per iteration")
    for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  §{name:<30} {seconds / args.iters:7.3f} s  {100 * seconds / wall:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
