"""Seconds per training iteration and peak memory: SeCo against the plain-CAM baseline.

One iteration = :class:`~seco_deploy.train.iteration.Iteration`, as training runs it: the
:class:`~seco_deploy.train.step.TrainingStep` (every loss term on: the phase after
``train.seg_start``) + backward + AdamW step, on a synthetic batch held in memory (no data
loading). Each configuration runs in its own subprocess so that its peak memory (the process's
peak RSS on CPU, torch's peak allocation on CUDA) is its own. On a shared CPU the time of one
iteration varies with the other load: compare the fastest iterations, and read them against the
matmul GFLOP/s each subprocess measures right after its timed iterations.

Modes:
  ``cpu``        the ``cpu`` preset (ViT-Tiny, crop 224, batch 32, bf16) with SeCo, and the same
                 with every ablation switch off (plain-CAM baseline); prints the SeCo/baseline
                 ratios.
  ``reference``  the reference implementation's size on CPU: a 768-wide, 8-block ViT/16, crop 224,
                 2 images, 10 local crops of 64 px (+ 2 global views), the ``voc`` preset otherwise;
                 fp32 and bf16. With ``--ref-dir`` (a checkout of zwyang6/SeCo at 202357f) and
                 ``--bilateral`` (its CRF extension, built as benchmarks/reference_env.py says), the
                 reference's own iteration (benchmarks/reference_step.py) runs in the same process,
                 interleaved with ours (ours, reference, ours, ...), at 1 and 2 threads, and the
                 ratio is printed; without them, the ratio is to a constant measured elsewhere.

    python benchmarks/train_step.py --mode cpu --iters 3
    python benchmarks/train_step.py --mode reference --iters 2 --json out.json
    python benchmarks/train_step.py --mode reference --ref-dir REF --bilateral DIR --iters 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

REFERENCE_SECONDS = 4.8  # the reference implementation, same size, measured on another day and machine

ABLATION_OFF = [
    "model.use_decomposition=false",
    "model.use_lil=false",
    "model.use_lig=false",
    "model.use_rectification=false",
    "model.use_aux_roi=false",
]
REFERENCE_SIZE = [
    "model.backbone=vit_base_patch16_224",
    "model.backbone_kwargs={depth: 8}",
    "data.crop_size=224",
    "data.local_crop_size=64",
    "train.batch_size=2",
    "model.num_local_crops=10",  # the reference's --ncrops 12 = 10 local crops + 2 global views
]

CONFIGS: dict[str, tuple[str, list[str]]] = {
    "seco": ("cpu", []),
    "baseline": ("cpu", ABLATION_OFF),
    "reference-fp32": ("voc", [*REFERENCE_SIZE, 'train.amp="off"']),
    "reference-bf16": ("voc", [*REFERENCE_SIZE, "train.amp=bf16"]),
}
MODES = {"cpu": ["seco", "baseline"], "reference": ["reference-fp32", "reference-bf16"]}


def matmul_gflops(dtype_name: str, size: int = 1024, repeats: int = 5) -> float:
    """This process's achieved GFLOP/s on a square matmul right now (a yardstick for a shared CPU)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - t0) / 1e9


PHASES = ("full", "contrast", "early")


def build_iteration(name: str, batch: int | None, device: str, num_classes: int,
                    phase: str = "full") -> tuple[Any, dict[str, Any]]:
    """Our training iteration of configuration ``name`` on a synthetic batch held in memory.

    ``phase``: ``full`` (every loss term on, after ``train.seg_start``), ``contrast`` (LiL and LiG
    on, before the seg term) or ``early`` (before the contrast phase and its passes: cls, aux,
    ptc only). Returns ``(iterate, info)``: ``iterate(offset, autocast)`` runs one
    :class:`~seco_deploy.train.iteration.Iteration` (the step of that phase, under
    ``torch.autocast`` with dtype ``autocast`` when it is not None, backward, AdamW step), as
    training runs it, and returns the loss terms; ``info`` describes the configuration.
    """
    import torch

    from seco_deploy.config import build_config
    from seco_deploy.model.network import SeCoNet
    from seco_deploy.train.iteration import Iteration
    from seco_deploy.train.schedule import WarmupPolySchedule, build_optimizer
    from seco_deploy.train.step import TrainingStep

    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    preset_name, overrides = CONFIGS[name]
    extra = [f"train.batch_size={batch}"] if batch is not None else []
    cfg = build_config(preset_name, None, [*overrides, *extra])
    dev = torch.device(device)
    net = SeCoNet(cfg.model, num_classes).to(dev).train()
    run = Iteration(TrainingStep(net, cfg.model, cfg.train, cfg.data),
                    build_optimizer(net.param_groups(cfg.train), cfg.train), WarmupPolySchedule.from_config(cfg.train))
    b, s = cfg.train.batch_size, cfg.data.crop_size
    gs = cfg.data.global_view_side
    g = torch.Generator().manual_seed(0)
    tags = (torch.rand(b, num_classes, generator=g) < 2.0 / num_classes).float()
    tags[torch.arange(b), torch.randint(0, num_classes, (b,), generator=g)] = 1.0
    batch_t = {
        "image": torch.randn(b, 3, s, s, generator=g),
        "global_view": torch.randn(b, 3, gs, gs, generator=g),
        "local_view": torch.randn(b, 3, s, s, generator=g),
        "img_box": torch.tensor([[0, s, 0, s]] * b),
        "tags": tags,
    }
    batch_t = {k: v.to(dev) for k, v in batch_t.items()}
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r}: choose one of {', '.join(PHASES)}")
    tc = cfg.train
    first = {"full": max(tc.seg_start, tc.contrast_start, tc.update_prototype) + 1,
             "contrast": tc.contrast_start + 1, "early": 0}[phase]
    if phase == "contrast" and first >= tc.seg_start:
        raise ValueError(f"{name}: no iteration with contrast on and the seg term off (contrast_start "
                         f"{tc.contrast_start}, seg_start {tc.seg_start})")

    def iterate(offset: int, autocast: Any = None) -> dict[str, float]:
        run.amp_dtype = autocast
        out = run(batch_t, first + offset + 1)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return {k: float(v) for k, v in out.terms.items()}

    info = {
        "config": name,
        "phase": phase,
        "preset": preset_name,
        "overrides": overrides + extra,
        "batch": b,
        "crop": s,
        "amp": cfg.train.amp,
        "params_m": round(sum(p.numel() for p in net.parameters() if p.requires_grad) / 1e6, 2),
    }
    return iterate, info


def run_one(name: str, iters: int, warmup: int, batch: int | None, device: str, num_classes: int) -> dict[str, Any]:
    """Time ``iters`` iterations (after ``warmup``) of configuration ``name`` in this process."""
    import torch

    from seco_deploy.train.iteration import resolve_amp
    from seco_deploy.train.runlog import peak_memory_mb

    iterate, info = build_iteration(name, batch, device, num_classes)
    dev = torch.device(device)
    amp = resolve_amp(info["amp"], dev)
    times = []
    terms: dict[str, float] = {}
    for i in range(warmup + iters):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        terms = iterate(i, amp)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    mem, kind = peak_memory_mb(dev)
    probe = "bf16" if amp == torch.bfloat16 else "fp32"
    return {
        "matmul_gflops": round(matmul_gflops(probe), 1) if dev.type == "cpu" else None,
        **info,
        "sec_per_iter": sum(times) / len(times),
        "sec_min": min(times),
        "peak_mem_mb": round(mem, 1),
        "mem_kind": kind,
        "threads": torch.get_num_threads(),
        "terms": terms,
    }


def run_against_reference(args: argparse.Namespace) -> dict[str, Any]:
    """Ours and the reference's iteration (benchmarks/reference_step.py) interleaved in this process."""
    import os

    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import reference_step

    ours, info = build_iteration("reference-fp32", args.batch, "cpu", args.classes)  # autocast set per setting
    size = reference_step.Size(batch=info["batch"], crop=info["crop"], num_classes=args.classes)
    sides = {"ours": ours, "reference": reference_step.reference_side(args.ref_dir, args.bilateral, size)}
    settings = [reference_step.Setting(d, t) for d in args.dtypes for t in args.threads]
    gflops = {d: round(matmul_gflops(d), 1) for d in ("fp32", "bf16")}
    load = os.getloadavg()
    print(f"interleaved: {args.iters} rounds per setting after {args.warmup} warm-up; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; matmul now fp32 {gflops['fp32']} / bf16 {gflops['bf16']} "
          f"GFLOP/s ({torch.get_num_threads()} threads)", flush=True)
    if "bf16" in args.dtypes and gflops["bf16"] < gflops["fp32"] / 4:
        print("warning: bf16 matmul is far slower than fp32 on this CPU (no bf16 instructions): bf16 timings "
              "measure emulation", flush=True)
    results = reference_step.interleave(sides, settings, repeats=args.iters, warmup=args.warmup,
                                        log=lambda m: print(m, flush=True))
    print(reference_step.format_table(results, list(sides)))
    print("ratio = reference / ours (above 1: ours is faster)")
    after = {d: round(matmul_gflops(d), 1) for d in ("fp32",)}
    print(f"matmul after the run: fp32 {after['fp32']} GFLOP/s; load average {os.getloadavg()[0]:.2f}", flush=True)
    return {"size": vars(size), "ours": info, "load_average": load, "matmul_gflops": gflops,
            "matmul_gflops_after": after, "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=[*MODES, "all"], default="cpu")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--batch", type=int, default=None, help="override the per-step batch size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--classes", type=int, default=20, help="foreground classes of the synthetic batch")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one config, print JSON
    parser.add_argument("--ref-dir", default=None, help="reference checkout: time it interleaved with ours")
    parser.add_argument("--bilateral", default=None, help="folder with the reference's built CRF extension")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (with --ref-dir)")
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
                        help="precisions (with --ref-dir); bf16 runs the forward under autocast")
    args = parser.parse_args(argv)

    if args.ref_dir is not None:
        if args.mode != "reference" or args.bilateral is None:
            parser.error("--ref-dir goes with --mode reference and --bilateral")
        record = run_against_reference(args)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(record, fh, indent=2)
        return 0

    if args.one is not None:
        print(json.dumps(run_one(args.one, args.iters, args.warmup, args.batch, args.device, args.classes)))
        return 0

    names = [n for mode in (MODES if args.mode == "all" else [args.mode]) for n in MODES[mode]]
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        cmd = [sys.executable, __file__, "--one", name, "--iters", str(args.iters), "--warmup", str(args.warmup),
               "--device", args.device, "--classes", str(args.classes)]
        if args.batch is not None:
            cmd += ["--batch", str(args.batch)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[name]
        print(f"{name:15s} batch {r['batch']:3d} crop {r['crop']} amp {r['amp']:4s} {r['params_m']:7.2f}M params  "
              f"{r['sec_per_iter']:7.3f} s/iter (min {r['sec_min']:.3f})  peak {r['peak_mem_mb']:8.1f} MiB "
              f"({r['mem_kind']})" + (f"  [{r['amp'] if r['amp'] == 'bf16' else 'fp32'} matmul now "
                                       f"{r['matmul_gflops']} GFLOP/s]" if r["matmul_gflops"] else ""), flush=True)
    if "seco" in results and "baseline" in results:
        s, b = results["seco"], results["baseline"]
        print(f"SeCo / baseline: time x{s['sec_per_iter'] / b['sec_per_iter']:.2f} (mean), "
              f"x{s['sec_min'] / b['sec_min']:.2f} (fastest iteration), "
              f"peak memory x{s['peak_mem_mb'] / b['peak_mem_mb']:.2f}")
    for name in ("reference-fp32", "reference-bf16"):
        if name in results:
            r = results[name]
            print(f"{name}: {r['sec_per_iter']:.2f} s/iter = x{r['sec_per_iter'] / REFERENCE_SECONDS:.2f} "
                  f"the reference implementation's {REFERENCE_SECONDS} s/iter")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
