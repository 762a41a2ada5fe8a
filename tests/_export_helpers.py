"""Shared fixtures for the export tests: one tiny checkpoint and its exports, built once per session.

The checkpoint is a randomly initialised ``test``-preset network (ViT depth 3, width 32, crop
64, patch 16), so an export takes a few seconds and a parity check well under one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

CLASSES = ["background", "boat", "train", "person", "horse", "bird", "car"]  # as `seco data synth`


@dataclass(frozen=True)
class ExportWorkspace:
    root: Path
    checkpoint: Path

    def onnx(self, name: str, **options: object) -> Path:
        """Export the checkpoint once per (name, options) with the library call; returns the path."""
        return _export(self.root, self.checkpoint, name, tuple(sorted(options.items())))


@functools.cache
def _workspace(root: str) -> ExportWorkspace:
    from seco_deploy.train.checkpoint import build_inference_checkpoint

    folder = Path(root) / "export-ws"
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = build_inference_checkpoint(folder / "tiny.pt", CLASSES, seed=3)
    return ExportWorkspace(folder, ckpt)


@functools.cache
def _export(root: Path, checkpoint: Path, name: str, options: tuple) -> Path:
    from seco_deploy.export.exporter import ExportRequest, export_checkpoint

    out = root / f"{name}.onnx"
    outcome = export_checkpoint(ExportRequest(checkpoint=checkpoint, out=out, check=False, **dict(options)))
    return outcome.path


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> ExportWorkspace:
    return _workspace(str(tmp_path_factory.getbasetemp()))


def load_net(checkpoint: Path):
    from seco_deploy.runtime.checkpoint import load_for_inference

    return load_for_inference(checkpoint, "cpu")


def gpu_runtime_reason() -> str | None:
    """None when TensorRT and a CUDA GPU are usable here, else why the GPU tests skip."""
    from seco_deploy.runtime.device import require_gpu_runtime
    from seco_deploy.runtime.errors import MissingRuntimeError

    try:
        require_gpu_runtime("cuda")
    except MissingRuntimeError as exc:
        return f"needs TensorRT and a CUDA GPU: {exc}"
    return None
