"""The measurements of one format, in the process that runs it (see :mod:`seco_deploy.bench.worker`).

On the same images, with ``seco predict``'s default settings unless the spec overrides them (the
model's TTA scales and flip, batch, decoding workers, threads: :mod:`seco_deploy.infer.options`):

- **end to end**: a :class:`~seco_deploy.infer.predictor.Predictor` run over every image (decode,
  TTA, upsampling, argmax, PNG writing, manifest) after a warm-up run on a few; images/s =
  images written / the run's wall time (model loading excluded);
- **model alone**: the backend's forward (:meth:`Predictor.forward`) on exactly the inputs that run
  feeds it (the same batches, scales and flips) for up to ``bare_images`` images, best of
  ``repeats``; ``forward share`` is the fraction of the end-to-end run spent inside forward;
- **FLOPs per image** (PyTorch formats): those inputs' forward counted by
  ``torch.utils.flop_counter`` (matmuls, convolutions, attention; 2 per multiply-add) over the
  images, so that model images/s x FLOPs per image is the model's achieved FLOP/s;
- **latency**: batch 1, one image at a time through preprocess, infer and postprocess (no decode,
  no write): the median and 95th percentile over ``latency_images`` images, after one warm-up;
- **memory**: this process's peak resident set (``VmHWM``) at the end; on a GPU also the peak
  memory PyTorch's allocator reserved (PyTorch formats) or the device memory in use after the run
  beyond what it was before the model was opened (other runtimes);
- **accuracy**: mIoU (points) of the written masks against the ground truth when the set has masks,
  and pixel agreement with the reference format's masks (PyTorch fp32) when those exist.
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seco_deploy.bench.formats import FORMATS, Format
from seco_deploy.runtime.backends import Backend, RunnerBackend, model_info_from_card

__all__ = ["MeasureSpec", "TimedBackend", "measure", "open_format"]


@dataclass
class MeasureSpec:
    """What one worker measures; paths as strings (the spec travels as JSON)."""

    format: str
    model: str
    images: list[str]
    out: str  # the worker's folder: OUT/warmup and OUT/predict are seco predict output folders
    reference: str | None = None  # the reference format's mask folder (pixel agreement)
    masks: str | None = None  # ground-truth masks, NAME.png for each image stem
    device: str = "cpu"
    threads: int | None = None  # None: seco predict's default
    batch: int | None = None  # None: the model's default
    workers: int | None = None  # None: seco predict's default
    latency_images: int = 20
    bare_images: int = 32
    repeats: int = 3
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class TimedBackend(Backend):
    """A backend with the seconds spent in its forward calls counted (``seconds``)."""

    def __init__(self, inner: Backend) -> None:
        self.inner, self.info, self.device, self.seconds = inner, inner.info, inner.device, 0.0

    def __call__(self, images: torch.Tensor, with_cam: bool = False) -> dict[str, torch.Tensor]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        out = self.inner(images, with_cam)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - start
        return out

    def close(self) -> None:
        self.inner.close()


class OpenCVBackend(RunnerBackend):
    """A ``--target opencv`` ONNX file run by OpenCV DNN (CPU, fp32); only ever inside a worker."""

    name = "OpenCV DNN"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from seco_deploy.export.opencv_dnn import OpenCVRunner

        self.runner = OpenCVRunner(path, threads=threads)
        self.device = torch.device("cpu")
        self.info = model_info_from_card(self.runner.card, str(path))

    def close(self) -> None:
        self.runner = None


def open_format(fmt: Format, model: str | Path, device: str, threads: int | None) -> Backend:
    """The backend that runs ``fmt``'s model file on ``device``."""
    if fmt.runtime == "torch":
        from seco_deploy.runtime.backends import TorchBackend

        return TorchBackend(model, device=device, amp="bf16" if fmt.precision == "bf16" else "off")
    if fmt.runtime == "onnxruntime":
        from seco_deploy.runtime.onnx_backend import OnnxBackend

        return OnnxBackend(model, device=device, threads=threads)
    if fmt.runtime == "opencv":
        return OpenCVBackend(model, threads=threads)
    from seco_deploy.runtime.backends import open_backend

    return open_backend(model, device=device)[0]


def _peak_rss_mb() -> float:
    """This process's peak resident set in MiB: ``VmHWM`` of ``/proc/self/status`` (its own, from its
    exec on), else ``ru_maxrss`` (which on Linux carries the parent's peak over fork and exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(spec: MeasureSpec, progress: Any = None) -> dict[str, Any]:
    """Every figure of the module docstring for ``spec``; returns a JSON-ready dict."""
    from seco_deploy.data.io import read_image
    from seco_deploy.infer.decode import Decoded
    from seco_deploy.infer.options import PredictOptions, default_threads, default_workers
    from seco_deploy.infer.predictor import Predictor
    from seco_deploy.infer.sources import InputItem
    from seco_deploy.metrics import evaluate_folders

    def say(text: str) -> None:
        if progress is not None:
            progress(text)

    fmt = FORMATS[spec.format]
    threads = spec.threads if spec.threads is not None else default_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(threads)
    gpu_before = None
    if spec.device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        gpu_before = torch.cuda.mem_get_info()[0]
    t0 = time.perf_counter()
    backend = TimedBackend(open_format(fmt, spec.model, spec.device, threads))
    load_seconds = time.perf_counter() - t0
    info = backend.info
    batch = spec.batch if spec.batch is not None else (info.config.infer.batch if info.config is not None else 4)
    workers = spec.workers if spec.workers is not None else default_workers()
    options = PredictOptions(batch=batch, workers=workers, overwrite=True)
    predictor = Predictor(backend, info, options)
    items = [InputItem(path=p, name=Path(p).stem, source=p) for p in spec.images]
    n = len(items)
    out = Path(spec.out)

    say(f"warm-up on {min(n, batch)} image(s)")
    predictor.run(items[: min(n, batch)], out / "warmup")
    say(f"end to end: {n} image(s), batch {batch}, {workers} decoding worker(s), {threads} thread(s)")
    backend.seconds = 0.0
    summary = predictor.run(items, out / "predict")
    if summary.ok != n:
        reasons = "; ".join(f"{p}: {r}" for p, r in summary.failures[:3])
        raise RuntimeError(f"{summary.failed} of {n} images failed: {reasons}")
    e2e_seconds = summary.seconds
    forward_share = backend.seconds / e2e_seconds if e2e_seconds > 0 else float("nan")

    # the model alone, on the inputs the run fed it
    bare_items = items[: max(1, min(n, spec.bare_images))]
    decoded = [Decoded(i, torch.from_numpy(read_image(it.path)), 0.0) for i, it in enumerate(bare_items)]
    inputs = []
    with torch.inference_mode():
        for start in range(0, len(decoded), batch):
            group = predictor.preprocess(decoded[start : start + batch])
            inputs += [predictor.network_input(group, scale) for scale in predictor.scales]
    say(f"model alone: {len(decoded)} image(s) x {spec.repeats}")
    bare_times = []
    for _ in range(spec.repeats):
        _sync(backend.device)
        start = time.perf_counter()
        for x in inputs:
            predictor.forward(x)
        _sync(backend.device)
        bare_times.append(time.perf_counter() - start)
    model_ips = len(decoded) / min(bare_times)
    flops_per_image = None
    if fmt.runtime == "torch":
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            for x in inputs:
                predictor.forward(x)
        flops_per_image = counter.get_total_flops() / len(decoded)
    del inputs

    # batch-1 latency of preprocess + infer + postprocess
    lat_items = decoded[: max(1, min(len(decoded), spec.latency_images))]
    say(f"latency: {len(lat_items)} image(s) at batch 1")
    predictor.predict([lat_items[0]])
    latencies = []
    for sample in lat_items:
        _sync(backend.device)
        start = time.perf_counter()
        predictor.predict([sample])
        _sync(backend.device)
        latencies.append((time.perf_counter() - start) * 1000)

    result: dict[str, Any] = {
        "format": fmt.name,
        "images": n,
        "batch": batch,
        "workers": workers,
        "threads": threads,
        "scales": list(predictor.scales),
        "flip": options.flip,
        "load_seconds": round(load_seconds, 3),
        "e2e_ips": n / e2e_seconds if e2e_seconds > 0 else float("nan"),
        "model_ips": model_ips,
        "flops_per_image": flops_per_image,
        "forward_share": forward_share,
        "latency_p50_ms": _percentile(latencies, 50),
        "latency_p95_ms": _percentile(latencies, 95),
        "peak_rss_mb": _peak_rss_mb(),
        "gpu_mb": None,
        "miou": None,
        "agreement": None,
        "providers": info.extra.get("providers"),
    }
    if gpu_before is not None:
        if fmt.runtime == "torch":
            result["gpu_mb"] = torch.cuda.max_memory_reserved() / 2**20
        else:
            result["gpu_mb"] = (gpu_before - torch.cuda.mem_get_info()[0]) / 2**20
    backend.close()

    names = [it.name for it in items]
    k = len(info.classes)
    if spec.masks is not None:
        scores = evaluate_folders(out / "predict" / "masks", spec.masks, num_classes=k, names=names)
        if scores.evaluated:
            result["miou"] = 100.0 * float(scores.scores["miou"])
    if spec.reference is not None:
        agreement = evaluate_folders(out / "predict" / "masks", spec.reference, num_classes=k, names=names)
        if agreement.evaluated:
            result["agreement"] = float(agreement.scores["pixel_acc"])
    return result
