"""`seco info`: what a checkpoint, ONNX file or TensorRT engine holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from seco_deploy.cli.common import EXIT_USAGE, fail

_ORDER = (
    "kind", "path", "bytes", "backbone", "backbone_kwargs", "patch_size", "embed_dim", "parameters", "crop_size",
    "num_classes", "classes", "heads", "mask_scales", "cam_scales", "mean", "std", "iteration", "train_iters",
    "best_miou", "input_shape", "precision", "opset", "inputs", "outputs", "nodes", "producer", "profile",
    "tensorrt_version", "device_name", "strongly_typed", "library_version", "checkpoint_sha256", "sha256",
)
_HIDDEN = ("palette",)


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (list, tuple, dict)) for v in value):
            return json.dumps(value)
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def info(
    model: Path = typer.Argument(..., help="Checkpoint (.pt), model.onnx or model.engine."),
    json_out: bool = typer.Option(False, "--json", help="Print everything as one JSON object."),
) -> None:
    """Show what a model file holds: classes, backbone, sizes, heads, opset, metadata, training iterations."""
    from seco_deploy.runtime.describe import describe

    try:
        details = describe(model)
    except (ValueError, FileNotFoundError) as exc:  # also CheckpointError and MetadataError
        fail(escape(str(exc)), EXIT_USAGE)
    if json_out:
        typer.echo(json.dumps(details, indent=2))
        return
    keys = [k for k in _ORDER if k in details] + sorted(k for k in details if k not in _ORDER and k not in _HIDDEN)
    width = max(len(k) for k in keys)
    for key in keys:
        typer.echo(f"{key:<{width}}  {_text(details[key])}")
