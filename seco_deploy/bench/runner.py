"""The benchmark: every format of one checkpoint measured on the same images, one worker each.

``Benchmark(BenchmarkRequest(...), progress).run() -> BenchmarkResult`` (``seco benchmark``). Stages:

1. :meth:`Benchmark.images`: ``--images`` images spread evenly over ``--data`` (``JPEGImages/`` of a
   VOC-layout set, else the folder), and their masks when every one has a
   ``SegmentationClass[Aug]/NAME.png``;
2. for each format, in table order (PyTorch fp32 first: the others are compared with its masks):
   - a format this machine cannot run (:func:`~seco_deploy.bench.formats.unavailable_reason`) is a
     row that says why;
   - :meth:`Benchmark.model_file`: its export, cached (:mod:`seco_deploy.bench.exports`); a missing
     runtime found at export time is an ``unavailable`` row, an export that fails a ``failed`` one;
   - :meth:`Benchmark.measure`: a worker process measures it (:mod:`seco_deploy.bench.worker`) with
     ``timeout`` seconds; its crash, error or timeout is a ``failed`` row and the next format goes on.

Outputs under ``out``: ``runs/FORMAT/`` (``predict/``: the masks as ``seco predict`` writes them; the
worker's spec, result and log); the caller writes
the JSON and Markdown (:mod:`seco_deploy.bench.report`).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seco_deploy.bench.exports import cache_folder, exported_model
from seco_deploy.bench.formats import Format, parse_formats, unavailable_reason
from seco_deploy.bench.measure import MeasureSpec
from seco_deploy.bench.report import BenchmarkResult, Row

__all__ = ["Benchmark", "BenchmarkRequest", "run_benchmark"]


@dataclass
class BenchmarkRequest:
    """Options of ``seco benchmark`` (see the CLI help for each)."""

    checkpoint: Path
    data: Path
    formats: str | None = None  # comma-separated names; None: every format
    images: int = 50
    device: str = "auto"
    out: Path | None = None  # default: the cache folder
    cache: Path | None = None  # default: CHECKPOINT_DIR/STEM.bench
    calib: Path | None = None  # int8 calibration images; default: data
    calib_images: int = 32
    threads: int | None = None
    batch: int | None = None
    workers: int | None = None
    latency_images: int = 20
    bare_images: int = 32
    repeats: int = 3
    timeout: float = 3600.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option that is wrong."""
        if not self.checkpoint.is_file():
            raise ValueError(f"--model {self.checkpoint} does not exist; give a checkpoint (.pt) from seco train")
        if not self.data.is_dir():
            raise ValueError(f"--data {self.data} is not a folder; give a folder of images or a VOC-layout set")
        for name, value in (("--images", self.images), ("--calib-images", self.calib_images),
                            ("--latency-images", self.latency_images), ("--repeats", self.repeats)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError("--threads must be >= 1")
        if self.batch is not None and self.batch < 1:
            raise ValueError("--batch must be >= 1")
        if self.workers is not None and self.workers < 0:
            raise ValueError("--workers must be >= 0")
        parse_formats(self.formats)


def worker_command(fmt: Format) -> list[str]:
    """The command that measures ``fmt`` (SPEC and RESULT paths are appended)."""
    return [sys.executable, "-m", "seco_deploy.bench.worker"]


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on: CPU, CPUs usable, GPU, library versions."""
    from seco_deploy.runtime.device import available_cpus

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    env: dict[str, Any] = {"cpu": cpu, "cpus": available_cpus(), "torch": torch.__version__}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    for module, key in (("onnxruntime", "onnxruntime"), ("cv2", "opencv"), ("tensorrt", "tensorrt")):
        try:
            env[key] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - absent or broken: the rows say so
            env[key] = None
    return env


class Benchmark:
    """One benchmark run; see the module docstring. Build it (options are checked), then :meth:`run`."""

    def __init__(self, request: BenchmarkRequest, progress: Callable[[str], None] | None = None) -> None:
        from seco_deploy.runtime.device import resolve_device

        request.validate()
        self.request = request
        self.progress = progress
        self.formats, self.explicit = parse_formats(request.formats)
        self.device = resolve_device(request.device)
        self.cache = cache_folder(request.checkpoint, request.cache)
        self.out = Path(request.out) if request.out is not None else self.cache
        self.reference: Path | None = None
        self.flops_per_image: float | None = None  # counted by the first PyTorch format measured

    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    def images(self) -> tuple[list[Path], Path | None]:
        """The images measured, and the folder of their masks (None unless every image has one)."""
        from seco_deploy.export.images import image_files, mask_for, spread

        files = spread(image_files(self.request.data, option="--data"), self.request.images)
        masks = [mask_for(p) for p in files]
        folders = {m.parent for m in masks if m is not None}
        if len(folders) == 1 and all(m is not None for m in masks):
            return files, folders.pop()
        return files, None

    def model_file(self, fmt: Format) -> tuple[Any, Row | None]:
        """``(ExportedModel, None)``, or ``(None, row)`` when the export says the format cannot run here."""
        from seco_deploy.runtime.errors import MissingRuntimeError

        req = self.request
        calib = req.calib if req.calib is not None else req.data
        try:
            return exported_model(fmt, req.checkpoint, self.cache, calib, req.calib_images,
                                  progress=lambda text: self.say(f"  {fmt.name}: {text}")), None
        except MissingRuntimeError as exc:
            return None, Row(fmt.name, fmt.label, "unavailable", str(exc))
        except Exception as exc:  # noqa: BLE001 - any exporter failure is this row's reason
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return None, Row(fmt.name, fmt.label, "failed", f"export failed: {type(exc).__name__}: {first}")

    def measure(self, fmt: Format, model: Path, files: list[Path], masks: Path | None) -> dict[str, Any]:
        """The worker's result dict, or ``{"error": reason}`` when it raised, crashed or timed out."""
        from seco_deploy.data.io import atomic_write_text
        from seco_deploy.export.opencv_dnn import describe_exit

        req = self.request
        run = self.out / "runs" / fmt.name
        run.mkdir(parents=True, exist_ok=True)
        spec = MeasureSpec(
            format=fmt.name, model=str(model), images=[str(p) for p in files], out=str(run),
            reference=None if fmt.is_reference or self.reference is None else str(self.reference),
            masks=str(masks) if masks is not None else None, device=str(self.device), threads=req.threads,
            batch=req.batch, workers=req.workers, latency_images=req.latency_images, bare_images=req.bare_images,
            repeats=req.repeats,
        )
        spec_path, result_path = run / "spec.json", run / "result.json"
        atomic_write_text(spec_path, json.dumps(spec.to_json(), indent=2) + "\n")
        result_path.unlink(missing_ok=True)
        cmd = [*worker_command(fmt), str(spec_path), str(result_path)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log_path = run / "worker.log"
        with log_path.open("w", encoding="utf-8") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.PIPE, text=True, env=env)

            def pump() -> None:  # the worker's progress lines, relayed and logged
                assert proc.stderr is not None
                for line in proc.stderr:
                    log.write(line)
                    if line.startswith(f"{fmt.name}: "):
                        self.say(f"  {line.rstrip()}")

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            try:
                code = proc.wait(timeout=req.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                reader.join()
                return {"error": f"timed out after {req.timeout:.0f} s (log: {log_path})"}
            reader.join()
        if result_path.is_file():
            return json.loads(result_path.read_text(encoding="utf-8"))
        return {"error": f"the worker ended: {describe_exit(code)} (log: {log_path})"}

    def row(self, fmt: Format, files: list[Path], masks: Path | None) -> Row:
        """The measured, unavailable or failed row of ``fmt``."""
        reason = unavailable_reason(fmt, self.device, explicit=fmt.name in self.explicit)
        if reason is not None:
            return Row(fmt.name, fmt.label, "unavailable", reason)
        self.say(f"{fmt.name}: export" if fmt.export != "checkpoint" else f"{fmt.name}: the checkpoint")
        exported, row = self.model_file(fmt)
        if row is not None:
            return row
        if exported.cached:
            self.say(f"  {fmt.name}: cached {exported.path}")
        result = self.measure(fmt, exported.path, files, masks)
        if "unavailable" in result:
            return Row(fmt.name, fmt.label, "unavailable", result["unavailable"])
        if "error" in result:
            return Row(fmt.name, fmt.label, "failed", result["error"])
        if fmt.is_reference:
            self.reference = self.out / "runs" / fmt.name / "predict" / "masks"
        if result.get("flops_per_image") and self.flops_per_image is None:
            self.flops_per_image = float(result["flops_per_image"])
        gflops = None if self.flops_per_image is None else result["model_ips"] * self.flops_per_image / 1e9
        parity = exported.parity
        keys = ("batch", "workers", "threads", "scales", "flip", "forward_share", "load_seconds", "providers")
        return Row(
            fmt.name, fmt.label, "measured", miou=result["miou"], agreement=result["agreement"],
            e2e_ips=result["e2e_ips"], model_ips=result["model_ips"], model_gflops=gflops,
            latency_p50_ms=result["latency_p50_ms"], latency_p95_ms=result["latency_p95_ms"],
            peak_rss_mb=result["peak_rss_mb"], gpu_mb=result["gpu_mb"],
            file_mb=exported.path.stat().st_size / 2**20, export_seconds=exported.seconds,
            export_cached=exported.cached, parity_passed=None if parity is None else bool(parity.get("passed")),
            details={k: result[k] for k in keys if k in result}
            | {"file": str(exported.path), "flops_per_image": self.flops_per_image},
        )

    def run(self) -> BenchmarkResult:
        """Every row, in table order."""
        files, masks = self.images()
        req = self.request
        self.say(f"{len(files)} image(s) from {req.data}" + (f", masks in {masks}" if masks else ", no masks (no mIoU)")
                 + f"; device {self.device}; {len(self.formats)} format(s)")
        rows = [self.row(fmt, files, masks) for fmt in self.formats]
        settings = {
            "model": str(req.checkpoint), "data": str(req.data), "images": len(files),
            "masks": str(masks) if masks else None, "device": str(self.device),
            "threads": req.threads if req.threads is not None else "predict's default",
            "batch": req.batch if req.batch is not None else "the model's default",
            "workers": req.workers if req.workers is not None else "predict's default",
        }
        return BenchmarkResult(rows, environment(self.device), settings)


def run_benchmark(request: BenchmarkRequest, progress: Callable[[str], None] | None = None) -> BenchmarkResult:
    """``Benchmark(request, progress).run()``."""
    return Benchmark(request, progress).run()
