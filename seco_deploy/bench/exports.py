"""Each format's model file, exported once and cached beside the checkpoint.

The cache is ``CHECKPOINT_DIR/STEM.bench/`` (or ``--cache``): ``NAME.onnx`` / ``NAME.engine`` and
``NAME.json``, the stamp that makes it reusable: the checkpoint's SHA-256, the export request's
options, the seconds the export took and the parity figures it printed. A file is reused only when
its stamp matches the checkpoint and the options of this run exactly; anything else exports again
(atomically: a file is never half-written). The PyTorch formats use the checkpoint itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seco_deploy.bench.formats import Format
from seco_deploy.data.io import atomic_write_text, file_sha256

__all__ = ["ExportedModel", "cache_folder", "export_request", "exported_model"]


@dataclass
class ExportedModel:
    """The model file of one format, the seconds its export took (0 for the checkpoint), whether it came
    from the cache, and the export's parity figures (None for the checkpoint or without a check)."""

    path: Path
    seconds: float
    cached: bool
    parity: dict[str, Any] | None = None


def cache_folder(checkpoint: Path, cache: Path | None = None) -> Path:
    """``cache``, else ``CHECKPOINT_DIR/STEM.bench``."""
    return Path(cache) if cache is not None else checkpoint.parent / f"{checkpoint.stem}.bench"


def export_request(fmt: Format, checkpoint: Path, out: Path, calib: Path | None, calib_images: int) -> Any:
    """The :class:`~seco_deploy.export.exporter.ExportRequest` of ``fmt`` (the parity check on)."""
    from seco_deploy.export.exporter import ExportRequest

    common: dict[str, Any] = {"checkpoint": checkpoint, "out": out, "check": True}
    if fmt.runtime == "tensorrt":
        return ExportRequest(format="trt", fp16=fmt.precision == "fp16", **common)
    if fmt.runtime == "opencv":
        return ExportRequest(format="onnx", target="opencv", **common)
    if fmt.precision == "int8":
        return ExportRequest(format="onnx", int8=True, calib=calib, calib_images=calib_images, **common)
    return ExportRequest(format="onnx", fp16=fmt.precision == "fp16", **common)


def _options_of(request: Any) -> dict[str, Any]:
    """The request's options as JSON values (what the stamp compares); the calibration folder as a
    fingerprint of its image files (names, sizes, modification times), so new images export again."""
    import hashlib
    from dataclasses import asdict

    options = asdict(request)
    for key in ("checkpoint", "out", "onnx_path", "timing_cache"):
        options.pop(key, None)
    if request.calib is not None:
        from seco_deploy.export.images import image_files

        listing = "\n".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                             for p in image_files(request.calib))
        options["calib"] = hashlib.sha256(listing.encode()).hexdigest()
    return json.loads(json.dumps(options, default=str))


def exported_model(fmt: Format, checkpoint: Path, folder: Path, calib: Path | None, calib_images: int,
                   progress: Callable[[str], None] | None = None) -> ExportedModel:
    """The model file of ``fmt``: the checkpoint, a cached export whose stamp matches, or a new export.

    Raises what :func:`seco_deploy.export.exporter.export_checkpoint` raises. A file that fails its
    parity check is kept in the cache and measured (``parity["passed"]`` is False): the benchmark's
    table shows what it costs in accuracy, and says not to deploy it.
    """
    if fmt.export == "checkpoint":
        return ExportedModel(checkpoint, 0.0, cached=False)
    from seco_deploy.export.exporter import export_checkpoint

    suffix = ".engine" if fmt.export == "engine" else ".onnx"
    out = folder / f"{fmt.name}{suffix}"
    stamp_path = folder / f"{fmt.name}.json"
    request = export_request(fmt, checkpoint, out, calib, calib_images)
    digest = file_sha256(checkpoint)
    options = _options_of(request)
    if out.is_file() and stamp_path.is_file():
        try:
            stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stamp = {}
        if (stamp.get("checkpoint_sha256") == digest and stamp.get("options") == options
                and stamp.get("model_sha256") == file_sha256(out)):
            return ExportedModel(out, float(stamp.get("seconds", 0.0)), cached=True, parity=stamp.get("parity"))
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    outcome = export_checkpoint(request, progress=progress)
    seconds = time.perf_counter() - start
    parity = outcome.parity.as_dict() if outcome.parity is not None else None
    atomic_write_text(stamp_path, json.dumps({
        "format": fmt.name, "checkpoint": str(checkpoint), "checkpoint_sha256": digest,
        "model_sha256": file_sha256(out), "options": options, "seconds": round(seconds, 3), "parity": parity,
    }, indent=2) + "\n")
    return ExportedModel(out, seconds, cached=False, parity=parity)
