"""Each format's model-alone GFLOP/s against this machine's fp32 matmul peak, measured by `seco benchmark`.

For every format (``--formats``) and every setting of ``--threads`` x ``--batches`` one
:class:`~seco_deploy.bench.runner.Benchmark` worker measures the model alone on predict's inputs
(same TTA, same batches; :mod:`seco_deploy.bench.measure`); its GFLOP/s is that images/s x the FLOPs
per image PyTorch counted on the same inputs (2 per multiply-add; matmuls, convolutions, attention).

The peak is one ONNX Runtime ``MatMul`` node, n x n x n fp32, at the same thread count, timed right
before and right after each worker; the share of the peak is the worker's GFLOP/s over the better
of the two, so that other load on a shared machine affects both sides of the ratio alike.

    .venv/bin/python benchmarks/export_predict.py                       # ViT-B/16 (voc preset) at 224
    .venv/bin/python benchmarks/export_predict.py --preset cpu --batches 1,8 --threads 1,2
    .venv/bin/python benchmarks/export_predict.py --checkpoint runs/x/best.pt --json figures.json

Without ``--checkpoint`` the network of ``--preset`` is randomly initialised (the throughput does not
depend on the weights). The images are ``seco data synth`` images of ``--size`` px.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def ort_matmul_meter(n: int, threads: int) -> Callable[[float], float]:
    """``meter(seconds) -> GFLOP/s`` of one ONNX Runtime MatMul node on n x n fp32 inputs."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    session.run(None, feeds)

    def meter(seconds: float) -> float:
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or done == 0:
            session.run(None, feeds)
            done += 1
        return done * 2 * n**3 / 1e9 / elapsed

    return meter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="A seco checkpoint (default: random --preset network).")
    parser.add_argument("--preset", default="voc", help="Preset of the random network (voc: ViT-B/16, cpu: ViT-Ti).")
    parser.add_argument("--size", type=int, default=224, help="Side of the synthetic images in px.")
    parser.add_argument("--images", type=int, default=8, help="Images per worker (the model alone runs on all).")
    parser.add_argument("--formats", default="torch,torch-bf16,onnx", help="seco benchmark formats.")
    parser.add_argument("--batches", default="1,8", help="Batch sizes to try.")
    parser.add_argument("--threads", default="", help="Thread counts to try, e.g. 1,2 (default: every CPU).")
    parser.add_argument("--matmul-n", type=int, default=1024, help="Side of the peak matmul.")
    parser.add_argument("--seconds", type=float, default=1.0, help="Length of each peak measurement.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed passes of the model alone (best is kept).")
    parser.add_argument("--json", type=Path, help="Write every figure here.")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="seco-bench-gflops-"))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    from seco_deploy.bench.runner import Benchmark, BenchmarkRequest
    from seco_deploy.config import preset
    from seco_deploy.data.synth import synthesize
    from seco_deploy.runtime.device import available_cpus
    from seco_deploy.train.checkpoint import build_inference_checkpoint

    data = work / "data"
    synthesize(data, images=args.images, size=args.size, seed=0, overwrite=True)
    checkpoint = args.checkpoint
    if checkpoint is None:
        classes = (data / "classes.txt").read_text(encoding="utf-8").split()
        checkpoint = build_inference_checkpoint(work / "random.pt", classes, cfg=preset(args.preset))
    cpus = available_cpus()
    threads = [int(t) for t in args.threads.split(",") if t] or [cpus]
    batches = [int(b) for b in args.batches.split(",") if b]
    meters = {t: ort_matmul_meter(args.matmul_n, t) for t in threads}
    print(f"{checkpoint}: {args.images} images of {args.size} px, {cpus} CPU(s); formats {args.formats}; "
          f"threads {threads} x batch {batches}", flush=True)

    def measure(fmt: str, t: int, b: int):
        request = BenchmarkRequest(checkpoint=checkpoint, data=data, formats=fmt, images=args.images, device="cpu",
                                   out=work / "runs" / f"{fmt}-t{t}-b{b}", cache=work / "cache", threads=t, batch=b,
                                   workers=0, latency_images=1, bare_images=args.images, repeats=args.repeats)
        return Benchmark(request).run().rows[0]

    counted = measure("torch", threads[-1], batches[0])  # PyTorch counts the FLOPs per image of predict's inputs
    flops = counted.details.get("flops_per_image") if counted.status == "measured" else None
    if not flops:
        raise SystemExit(f"PyTorch could not run the model to count its FLOPs: {counted.note}")
    print(f"{flops / 1e9:.2f} GFLOP per image (its TTA included)", flush=True)
    rows = []
    for fmt, t, b in itertools.product(args.formats.split(","), threads, batches):
        before = meters[t](args.seconds)
        row = measure(fmt, t, b)
        after = meters[t](args.seconds)
        if row.status != "measured":
            print(f"  {fmt}: {row.status}: {row.note}", flush=True)
            continue
        gflops = row.model_ips * flops / 1e9
        peak = max(before, after)
        share = gflops / peak
        rows.append({"format": fmt, "threads": t, "batch": b, "model_ips": row.model_ips, "gflops": gflops,
                     "peak_gflops": peak, "share_of_peak": share})
        print(f"  {fmt:<11} threads {t} batch {b:>2}: {row.model_ips:8.2f} img/s {gflops:7.1f} GFLOP/s, "
              f"peak {peak:6.1f} GFLOP/s: {share:6.1%} of peak", flush=True)
    for fmt in dict.fromkeys(r["format"] for r in rows):
        best = max((r for r in rows if r["format"] == fmt), key=lambda r: r["share_of_peak"])
        print(f"best {fmt:<11} {best['share_of_peak']:6.1%} of the fp32 matmul peak "
              f"({best['gflops']:.1f} of {best['peak_gflops']:.1f} GFLOP/s; threads {best['threads']}, "
              f"batch {best['batch']})")
    if args.json is not None:
        args.json.write_text(json.dumps({"checkpoint": str(args.checkpoint), "preset": args.preset,
                                         "size": args.size, "cpus": cpus, "flops_per_image": flops,
                                         "rows": rows}, indent=2),
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
