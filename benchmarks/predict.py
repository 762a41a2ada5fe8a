"""Benchmark `seco predict`: images/s and peak memory, batch 1 vs 8, fp32 vs bf16, against the bare model.

Setup: N synthetic images (``seco_deploy.data.synth``, 224 px JPEGs) and a random-init checkpoint
of the ``cpu`` preset (ViT-Tiny/16, crop 224, mask scale 1.0 with flip TTA). Each configuration
runs in its own process, so peak memory is that configuration's own:

- ``predict``: the full :class:`~seco_deploy.infer.predictor.Predictor` run (worker decoding,
  resizing, TTA, upsampling, argmax, PNG writing, manifest), wall time from start to the last
  file, excluding model loading;
- ``bare``: the backend's forward alone on the same preprocessed input tensors (images and flips,
  same batch);
- after a first (untimed) predict run, the two are timed alternately ``--repeats`` times;
  images/s are the best of the runs (the mean in brackets), as the machine's load varies;
- ``ratio`` = predict images/s / bare images/s (the target is >= 0.85);
- ``forward share``: the fraction of a predict run's wall time spent inside the model's forward
  calls (measured in the same run, so immune to the machine's load changing between runs);
- ``peak RSS``: the process's maximum resident set (``ru_maxrss``) after the first predict run,
  before the bare model's inputs are built, and the largest decoding worker's; ``RSS@25%`` /
  ``RSS@100%``: resident memory after a quarter and after all images of a run (flat memory
  means these two match).

Usage::

    .venv/bin/python benchmarks/predict.py                       # 200 images, full grid
    .venv/bin/python benchmarks/predict.py --images 40 --batches 8 --amps off   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(args: argparse.Namespace) -> None:
    import torch

    from seco_deploy.data.io import read_image
    from seco_deploy.infer.decode import Decoded
    from seco_deploy.infer.options import PredictOptions
    from seco_deploy.infer.predictor import Predictor
    from seco_deploy.infer.sources import expand_source
    from seco_deploy.runtime.backends import Backend, open_backend

    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    inner, info = open_backend(args.checkpoint, device=args.device, amp=args.amp)

    class TimedBackend(Backend):
        """The backend, with the seconds spent in its forward calls counted."""

        def __init__(self) -> None:
            self.info, self.device, self.seconds = inner.info, inner.device, 0.0

        def __call__(self, images: torch.Tensor, with_cam: bool = False) -> dict[str, torch.Tensor]:
            start = time.perf_counter()
            out = inner(images, with_cam)
            self.seconds += time.perf_counter() - start
            return out

    backend = TimedBackend()
    items = expand_source(args.images_dir)
    n = len(items)
    options = PredictOptions(batch=args.batch, workers=args.workers, overwrite=True)
    predictor = Predictor(backend, info, options)
    out = Path(args.out)
    samples: dict[str, float] = {}
    count = {"n": 0}

    def on_record(_record: dict) -> None:
        count["n"] += 1
        if count["n"] == max(1, n // 4):
            samples["rss_25"] = rss_mb()

    in_run_forward: list[float] = []

    def predict() -> float:
        backend.seconds = 0.0
        start = time.perf_counter()
        summary = predictor.run(items, out, on_record=on_record)
        assert summary.ok == n, f"{summary.failed} images failed"
        elapsed = time.perf_counter() - start
        in_run_forward.append(backend.seconds / elapsed)
        return elapsed

    side = info.crop_size
    backend(torch.zeros(2 * args.batch, 3, side, side))  # warm-up
    predict()  # first run: warm-up and memory figures, not timed
    samples["rss_100"] = rss_mb()
    peak_predict = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    # The bare model's inputs: exactly what the predictor feeds the backend (resize, normalise, flips).
    batches = []
    with torch.inference_mode():
        for i in range(0, n, args.batch):
            chunk = items[i : i + args.batch]
            group = [Decoded(j, torch.from_numpy(read_image(it.path)), 0.0) for j, it in enumerate(chunk)]
            batches.append(predictor.network_input(predictor.preprocess(group), 1.0))

    def bare() -> float:
        start = time.perf_counter()
        for x in batches:
            backend(x)
        return time.perf_counter() - start

    bare_times, predict_times = [], []
    for _ in range(args.repeats):  # interleaved, so machine load hits both alike
        bare_times.append(bare())
        predict_times.append(predict())
    result = {
        "batch": args.batch,
        "amp": args.amp,
        "workers": args.workers,
        "images": n,
        "predict_ips": n / min(predict_times),
        "predict_ips_mean": n / (sum(predict_times) / len(predict_times)),
        "bare_ips": n / min(bare_times),
        "bare_ips_mean": n / (sum(bare_times) / len(bare_times)),
        "ratio": min(bare_times) / min(predict_times),
        "ratio_mean": sum(bare_times) / len(bare_times) / (sum(predict_times) / len(predict_times)),
        "forward_share": sum(in_run_forward[1:]) / len(in_run_forward[1:]),
        "peak_rss_mb": peak_predict,
        "peak_worker_rss_mb": peak_worker,
        "rss_25_mb": samples.get("rss_25", 0.0),
        "rss_100_mb": samples["rss_100"],
        "threads": torch.get_num_threads(),
    }
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--amps", default="off,bf16")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="Interleaved bare/predict repetitions (best of).")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", default=None, help="Working folder (default: a temporary one, removed).")
    parser.add_argument("--json", default=None, help="Also write the results here.")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--images-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--amp", default="off", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from seco_deploy.config import preset
    from seco_deploy.data.synth import synthesize
    from seco_deploy.train.checkpoint import build_inference_checkpoint

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="seco-bench-predict-"))
    data = work / "data"
    if not (data / "JPEGImages").is_dir() or len(list((data / "JPEGImages").iterdir())) != args.images:
        synthesize(data, images=args.images, size=args.size, seed=0, overwrite=True)
    classes = (data / "classes.txt").read_text(encoding="utf-8").split()
    ckpt = work / "cpu_random.pt"
    if not ckpt.exists():
        build_inference_checkpoint(ckpt, classes, cfg=preset("cpu"))
    results = []
    print(f"{args.images} images ({args.size} px JPEG), cpu preset random-init checkpoint, "
          f"{args.workers} decoding worker(s), device {args.device}, "
          f"torch threads {args.threads or 'default'}", flush=True)
    for amp in args.amps.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            cmd = [sys.executable, __file__, "--child", "--checkpoint", str(ckpt), "--images-dir",
                   str(data / "JPEGImages"), "--out", str(work / f"out_b{batch}_{amp}"), "--batch", str(batch),
                   "--amp", amp, "--workers", str(args.workers), "--device", args.device,
                   "--repeats", str(args.repeats), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                raise SystemExit(f"benchmark child failed for batch {batch}, amp {amp}")
            result = json.loads(lines[-1][len("RESULT "):])
            results.append(result)
            print(
                f"batch {batch:>2} amp {amp:>4}: predict {result['predict_ips']:6.2f} img/s "
                f"(mean {result['predict_ips_mean']:.2f}) | bare model {result['bare_ips']:6.2f} img/s "
                f"(mean {result['bare_ips_mean']:.2f}) | ratio {result['ratio']:.3f} (means {result['ratio_mean']:.3f})"
                f" | forward share of the run {result['forward_share']:.3f}"
                f" | peak RSS {result['peak_rss_mb']:.0f} MB (worker {result['peak_worker_rss_mb']:.0f} MB) | "
                f"RSS@25% {result['rss_25_mb']:.0f} MB, @100% {result['rss_100_mb']:.0f} MB",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
