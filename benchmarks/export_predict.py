"""Throughput of the exported model against PyTorch, and against this machine's fp32 matmul peak.

One run measures, on the same images and input size:
  - images/s of PyTorch eager fp32, PyTorch eager with bf16 autocast, and ONNX Runtime (CPU)
    over a sweep of graph-optimisation levels, intra-op threads and batch sizes;
  - achieved GFLOP/s = images/s x FLOPs per image, the FLOPs counted by
    ``torch.utils.flop_counter`` on ``forward_infer`` (2 per multiply-add; matmuls and convs);
  - the fp32 matmul peak, measured in the same run with one ONNX Runtime ``MatMul`` node and
    with ``torch.matmul`` on n x n x n products, and each backend's share of it.

Every images/s figure is the best of ``--rounds`` timed rounds (each at least ``--seconds``).
The share of the peak is measured in pairs: each round times the ONNX Runtime MatMul peak (same
thread count), the backend, and the peak again, back to back, and the share is the median over
rounds of (backend GFLOP/s / the better of that round's two peaks), so that other load on a
shared machine affects both sides of each ratio alike. A second share divides GFLOP per
process-CPU-second (all threads) of both, which other processes affect least. The peak
reported on its own is the best MatMul round.

    .venv/bin/python benchmarks/export_predict.py                      # ViT-B/16 (voc preset) at 224
    .venv/bin/python benchmarks/export_predict.py --preset cpu --size 224 --batches 1,8,16
    .venv/bin/python benchmarks/export_predict.py --checkpoint runs/x/best.pt --json figures.json

Without ``--checkpoint`` the network of ``--preset`` is randomly initialised (the throughput
does not depend on the weights; denormals are flushed to zero in both runtimes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def rate(step: Callable[[], int], seconds: float) -> tuple[float, float]:
    """``(units per wall second, units per process-CPU second)`` while repeating ``step`` for >= ``seconds``.

    ``step`` returns the units it did. Process CPU time sums every thread of this process, so the
    second figure is what one fully used core delivers, whatever other processes are doing.
    """
    done, start, cpu0 = 0, time.perf_counter(), time.process_time()
    while True:
        done += step()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed, done / max(time.process_time() - cpu0, 1e-9)


def best_rate(step: Callable[[], int], seconds: float, rounds: int, warmup: int = 1) -> float:
    """Best wall-clock rate over ``rounds`` of :func:`rate`."""
    for _ in range(warmup):
        step()
    return max(rate(step, seconds)[0] for _ in range(rounds))


def paired(step: Callable[[], int], peak_step: Callable[[], tuple[float, float]], seconds: float, rounds: int,
           flops: int) -> tuple[float, float, float]:
    """``(best images/s, median wall share of the peak, median CPU-time share)``; each round times the peak,
    then ``step``, then the peak again, back to back, and divides by the better of the two peaks."""
    step()
    rates, shares, cpu_shares = [], [], []
    for _ in range(rounds):
        before = peak_step()
        wall, cpu = rate(step, seconds)
        after = peak_step()
        peak_wall, peak_cpu = max(before[0], after[0]), max(before[1], after[1])
        rates.append(wall)
        shares.append(wall * flops / 1e9 / peak_wall)
        cpu_shares.append(cpu * flops / 1e9 / peak_cpu)
    return max(rates), float(np.median(shares)), float(np.median(cpu_shares))


# ---------------------------------------------------------------------- matmul peak
def ort_matmul_meter(n: int, threads: int) -> Callable[[float], tuple[float, float]]:
    """``meter(seconds) -> (GFLOP/s, GFLOP per CPU-second)`` of one ONNX Runtime MatMul node, n x n fp32."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}

    def step() -> int:
        session.run(None, feeds)
        return 1

    step()

    def meter(seconds: float) -> tuple[float, float]:
        wall, cpu = rate(step, seconds)
        return wall * 2 * n**3 / 1e9, cpu * 2 * n**3 / 1e9

    return meter


def torch_matmul_peak(n: int, threads: int, seconds: float, rounds: int) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)

    def step() -> int:
        torch.mm(a, b)
        return 1

    return best_rate(step, seconds, rounds) * 2 * n**3 / 1e9


# ---------------------------------------------------------------------- model
def flops_per_image(net: torch.nn.Module, size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net.forward_infer(torch.zeros(1, 3, size, size))
    return int(counter.get_total_flops())


def torch_step(net, images: torch.Tensor, batch: int, amp: bool, threads: int) -> Callable[[], int]:
    def step() -> int:
        torch.set_num_threads(threads)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            for chunk in images.split(batch):
                net.forward_infer(chunk)
        return images.shape[0]

    return step


def ort_step(path: Path, images: torch.Tensor, batch: int, threads: int, level: str) -> Callable[[], int]:
    from seco_deploy.runtime.onnx_backend import OnnxRunner

    runner = OnnxRunner(path, device="cpu", threads=threads, opt_level=level)
    chunks = [np.ascontiguousarray(c.numpy()) for c in images.split(batch)]

    def step() -> int:
        for chunk in chunks:
            runner.session.run(None, {"images": chunk})
        return images.shape[0]

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="A seco checkpoint (default: random --preset network).")
    parser.add_argument("--preset", default="voc", help="Preset of the random network (voc: ViT-B/16, cpu: ViT-Ti).")
    parser.add_argument("--size", type=int, default=224, help="Input side in px (a multiple of the patch size).")
    parser.add_argument("--images", type=int, default=4, help="Images per timed pass (same for every backend).")
    parser.add_argument("--batches", default="1,4,8", help="Batch sizes to try.")
    parser.add_argument("--levels", default="basic,extended,all", help="ORT graph optimisation levels to try.")
    parser.add_argument("--threads", default="", help="Thread counts to try, e.g. 1,2 (default: all CPUs).")
    parser.add_argument("--matmul-n", type=int, default=1024, help="Side of the peak matmul.")
    parser.add_argument("--seconds", type=float, default=1.0, help="Minimum length of a timed round.")
    parser.add_argument("--rounds", type=int, default=2, help="Timed rounds per figure (best is kept).")
    parser.add_argument("--json", type=Path, help="Write all figures here.")
    args = parser.parse_args(argv)

    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory(prefix="seco-bench-") as tmp:
        return _run(args, Path(tmp))


def _run(args: argparse.Namespace, work: Path) -> int:
    from seco_deploy.config import preset
    from seco_deploy.export.onnx_export import OnnxExportOptions, export_onnx
    from seco_deploy.runtime.card import card_from_checkpoint
    from seco_deploy.runtime.checkpoint import load_checkpoint, load_for_inference
    from seco_deploy.runtime.device import available_cpus
    from seco_deploy.train.checkpoint import build_inference_checkpoint

    cpus = available_cpus()
    thread_counts = [int(t) for t in args.threads.split(",") if t] or [cpus]
    batches = [int(b) for b in args.batches.split(",") if b]
    levels = [lv for lv in args.levels.split(",") if lv]
    ckpt = args.checkpoint
    if ckpt is None:
        cfg = preset(args.preset)
        ckpt = build_inference_checkpoint(work / "random.pt", ["background"] + [f"class{i}" for i in range(20)], cfg)
    net, cfg, classes = load_for_inference(ckpt, "cpu")
    patch = int(net.encoder.patch_size)
    if args.size % patch:
        raise SystemExit(f"--size must be a multiple of the patch size {patch}")
    meta = card_from_checkpoint(ckpt, cfg, classes, patch, ["seg"], [-1, 3, -1, -1],
                                    iteration=int(load_checkpoint(ckpt).get("iteration", -1)))
    onnx_path = work / "model.onnx"
    t0 = time.perf_counter()
    export_onnx(net, onnx_path, meta, OnnxExportOptions(size=args.size), patch)
    export_s = time.perf_counter() - t0
    flops = flops_per_image(net, args.size)
    images = torch.randn(args.images, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    print(f"model: {cfg.model.backbone} {cfg.model.backbone_kwargs or ''}, input {args.size}x{args.size}, "
          f"{flops / 1e9:.2f} GFLOP/image (forward_infer, seg head); export {export_s:.1f} s; {cpus} CPU(s); "
          f"torch {torch.__version__}", flush=True)

    meters = {t: ort_matmul_meter(args.matmul_n, t) for t in thread_counts}
    peak_seconds = max(0.2, args.seconds / 2)
    peaks = {
        "ort_matmul": max(meters[t](args.seconds)[0] for t in thread_counts for _ in range(args.rounds)),
        "torch_matmul": max(torch_matmul_peak(args.matmul_n, t, args.seconds, args.rounds) for t in thread_counts),
    }
    print(f"fp32 matmul peak ({args.matmul_n}^3, best round): ONNX Runtime {peaks['ort_matmul']:.1f} GFLOP/s, "
          f"torch {peaks['torch_matmul']:.1f} GFLOP/s", flush=True)

    rows: list[dict] = []

    def record(name: str, batch: int, threads: int, step: Callable[[], int], **extra: object) -> None:
        images_per_s, share, cpu_share = paired(step, lambda: meters[threads](peak_seconds), args.seconds,
                                                args.rounds, flops)
        gflops = images_per_s * flops / 1e9
        rows.append({"backend": name, "batch": batch, "threads": threads, "images_per_s": images_per_s,
                     "gflops": gflops, "share_of_peak": share, "cpu_share_of_peak": cpu_share, **extra})
        detail = " ".join(f"{k}={v}" for k, v in extra.items())
        print(f"  {name:<12} batch {batch:>2} threads {threads} {detail:<16} {images_per_s:8.2f} img/s "
              f"{gflops:7.1f} GFLOP/s  {share:6.1%} of peak (CPU time: {cpu_share:6.1%})", flush=True)

    for batch in batches:
        for threads in thread_counts:
            record("torch fp32", batch, threads, torch_step(net, images, batch, False, threads))
            record("torch bf16", batch, threads, torch_step(net, images, batch, True, threads))
            for level in levels:
                record("onnxruntime", batch, threads, ort_step(onnx_path, images, batch, threads, level), level=level)

    best = {name: max((r for r in rows if r["backend"] == name), key=lambda r: r["images_per_s"])
            for name in ("torch fp32", "torch bf16", "onnxruntime")}
    for name, row in best.items():
        extra = f", {row['level']}" if "level" in row else ""
        print(f"best {name:<12} {row['images_per_s']:8.2f} img/s {row['gflops']:7.1f} GFLOP/s "
              f"{row['share_of_peak']:6.1%} of peak, CPU time {row['cpu_share_of_peak']:6.1%} "
              f"(batch {row['batch']}, {row['threads']} thread(s){extra})")
    target = 0.75
    ort_share = best["onnxruntime"]["share_of_peak"]
    cpu_share = best["onnxruntime"]["cpu_share_of_peak"]
    print(f"ONNX Runtime at {ort_share:.1%} of the fp32 matmul peak (paired wall-clock median; "
          f"{cpu_share:.1%} per CPU-second; target {target:.0%}): {'met' if ort_share >= target else 'not met'}")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "model": cfg.model.backbone, "size": args.size, "flops_per_image": flops, "cpus": cpus,
            "peaks_gflops": peaks, "rows": rows, "best": best,
            "torch": torch.__version__, "host": os.uname().nodename,
        }, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
