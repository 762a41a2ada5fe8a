"""Export a SeCo network's inference branch to one self-contained ONNX file.

Graph contract:
  - input ``images``: (N, 3, H, W) float32, normalised as in training ((x/255 - mean) / std);
  - output ``seg_logits``: (N, C+1, H/p, W/p) float32 and, with the CAM head, ``cams``
    (N, C, H/p, W/p, raw class maps: no ReLU, not normalised) and ``cls_logits`` (N, C); all float32 even in an
    fp16 export.
  - dynamic export (default): N, H and W are free; H and W must be multiples of the patch size
    p (the graph computes the token grid as H/p, W/p; the predictor pads or resizes to such
    sides). Static export: H and W fixed to the export size; N is fixed only when ``batch`` is
    given, else it stays dynamic.

How: ``torch.onnx.export(..., dynamo=True)`` (the one exporter path), with
``dynamic_shapes`` ``{0: batch, 2: p * grid_h, 3: p * grid_w}`` and an example batch of 2
(a batch of 1 would be specialised), opset >= 18, the exporter's standard optimisation, and all
weights inside the file (no ``.onnx.data``). The axes are then renamed ``batch``, ``height``,
``width`` (inputs) and ``grid_h``, ``grid_w`` (outputs), the model card (:mod:`seco_deploy.runtime.card`)
is embedded, the model is checked with ``onnx.checker`` (full check), and written atomically.

``target="opencv"``: OpenCV's DNN module (opencv-python 5.x) crashes (segmentation fault) in
``cv2.dnn.readNetFromONNX`` on the dynamo exporter's graphs, whatever the opset or shape
options; it reads the graphs of PyTorch's TorchScript-based exporter (``dynamo=False``), measured
here at opsets 17 and 18 with dynamic batch, height and width, matching ONNX Runtime to ~2e-6.
This target uses that exporter at the requested opset (``dynamic_axes`` instead of
``dynamic_shapes``; the card's ``extra`` says ``exporter: torchscript``); ONNX Runtime reads it too.

fp16: the network is cast to half except every ``LayerNorm``, which computes in fp32 (casts
around it), the input is cast to half inside the graph and the outputs back to float32.

``simplify``: a second onnxscript optimizer pass with constant-folding size limits raised to
cover whole weight tensors (folds e.g. a static export's resized positional embedding, which
the exporter's default pass leaves when it exceeds 8192 elements), unused nodes removed, and
ONNX shape inference stored in the file.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import warnings
from collections.abc import Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seco_deploy.runtime.card import INPUT_NAME, OUTPUT_NAMES, ModelCard, embed_in_onnx

MIN_OPSET = 18
TARGETS = ("onnxruntime", "opencv")
PROTO_LIMIT = 2**31 - 1  # protobuf's 2 GiB limit for one self-contained file


class ExportError(RuntimeError):
    """The network could not be exported; the message says why and what to try."""


@dataclass
class OnnxExportOptions:
    """``heads``: ("seg",) or ("seg", "cam"); ``size``: export/static side (multiple of p);
    ``dynamic``: free N/H/W; ``batch``: fix N in a static export; ``fp16``; ``opset`` (>= 18);
    ``simplify``: extra constant folding."""

    heads: tuple[str, ...] = ("seg",)
    size: int = 448
    dynamic: bool = True
    batch: int | None = None
    fp16: bool = False
    opset: int = MIN_OPSET
    simplify: bool = False
    target: str = "onnxruntime"  # onnxruntime (dynamo exporter) | opencv (TorchScript exporter, OpenCV DNN reads it)


@dataclass
class ExportReport:
    """What the export wrote."""

    path: Path
    input_shape: list[int]
    nodes: int
    nodes_before_simplify: int
    bytes: int
    op_counts: dict[str, int] = field(default_factory=dict)


class FP32LayerNorm(nn.Module):
    """Runs a wrapped ``nn.LayerNorm`` in float32 and returns the input's dtype."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.float()).to(x.dtype)


def half_with_fp32_layernorm(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` in fp16 whose LayerNorms keep fp32 weights and compute in fp32."""
    half = copy.deepcopy(net)

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.LayerNorm):
                setattr(module, name, FP32LayerNorm(child))
            else:
                swap(child)

    swap(half)
    half.half()
    for module in half.modules():
        if isinstance(module, FP32LayerNorm):
            module.norm.float()
    return half


class InferenceGraph(nn.Module):
    """``images -> (seg_logits[, cams, cls_logits])`` from ``net.forward_infer``; the exported module."""

    def __init__(self, net: nn.Module, heads: Sequence[str], half: bool = False) -> None:
        super().__init__()
        self.net = half_with_fp32_layernorm(net) if half else net
        self.with_cam = "cam" in heads
        self.half = half

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = images.half() if self.half else images
        out = self.net.forward_infer(x, with_cam=self.with_cam)
        names = list(OUTPUT_NAMES["seg"]) + (list(OUTPUT_NAMES["cam"]) if self.with_cam else [])
        return tuple(out[name].float() for name in names)


def check_options(options: OnnxExportOptions, patch_size: int) -> None:
    """Raise ValueError naming the bad option."""
    if options.target not in TARGETS:
        raise ValueError(f"--target {options.target!r}: choose one of {', '.join(TARGETS)}")
    if options.target == "opencv" and options.fp16:
        raise ValueError("--target opencv exports fp32 (OpenCV DNN's CPU path computes in fp32); drop --fp16")
    if options.opset < MIN_OPSET:
        raise ValueError(f"--opset {options.opset} is too low: the dynamo exporter needs opset >= {MIN_OPSET}")
    if tuple(options.heads) not in (("seg",), ("seg", "cam")):
        raise ValueError(f"--heads must be 'seg' or 'seg,cam', got {','.join(options.heads)!r}")
    if options.size < patch_size or options.size % patch_size:
        raise ValueError(f"--size {options.size} must be a positive multiple of the patch size {patch_size}")
    if options.batch is not None and options.batch < 1:
        raise ValueError("--batch must be >= 1")
    if options.dynamic and options.batch is not None:
        raise ValueError("--batch fixes the batch of a --static export; leave it out with --dynamic")


def export_input_shape(options: OnnxExportOptions) -> list[int]:
    """``[N, 3, H, W]`` with -1 on dynamic axes."""
    if options.dynamic:
        return [-1, 3, -1, -1]
    return [options.batch if options.batch is not None else -1, 3, options.size, options.size]


def _dynamic_shapes(options: OnnxExportOptions, patch_size: int) -> dict[str, dict[int, Any]] | None:
    from torch.export import Dim

    axes: dict[int, Any] = {}
    if options.batch is None:
        axes[0] = Dim("batch", min=1, max=4096)
    if options.dynamic:
        axes[2] = patch_size * Dim("grid_h", min=1, max=1024)
        axes[3] = patch_size * Dim("grid_w", min=1, max=1024)
    return {"images": axes} if axes else None


def _rename_axes(model: Any, output_names: Sequence[str]) -> None:
    """Give the graph's symbolic axes readable names (inputs and outputs only)."""
    names_in = {0: "batch", 2: "height", 3: "width"}
    for value in model.graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_param") and axis in names_in:
                dim.dim_param = names_in[axis]
    for value in model.graph.output:
        if value.name not in output_names:
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_param"):
                dim.dim_param = {0: "batch", 2: "grid_h", 3: "grid_w"}.get(axis, f"d{axis}")


def simplify_model(model: Any) -> Any:
    """Constant folding (limits raised to whole weight tensors), dead-node removal, shape inference."""
    import onnx
    import onnxscript.optimizer

    limit = max((math.prod(t.dims) for t in model.graph.initializer), default=1)
    folded = onnxscript.optimizer.optimize(
        model, num_iterations=3, input_size_limit=max(limit, 8192), output_size_limit=max(limit, 262144) * 4
    )
    return onnx.shape_inference.infer_shapes(folded, data_prop=True)


def export_onnx(
    net: nn.Module,
    out_path: str | Path,
    meta: ModelCard,
    options: OnnxExportOptions,
    patch_size: int,
) -> ExportReport:
    """Export ``net`` (a :class:`~seco_deploy.model.network.SeCoNet` on CPU, eval mode) to ``out_path``.

    Raises :class:`ExportError` when the exporter fails, the file would exceed 2 GiB, or the
    checker rejects the result.
    """
    check_options(options, patch_size)
    net = net.eval().cpu()
    graph = InferenceGraph(net, options.heads, half=options.fp16).eval()
    example_batch = options.batch if options.batch is not None else 2
    example = torch.zeros(example_batch, 3, options.size, options.size)
    output_names = list(OUTPUT_NAMES["seg"]) + (list(OUTPUT_NAMES["cam"]) if "cam" in options.heads else [])
    if options.target == "opencv":
        model = _torchscript_export(graph, example, options, output_names)
        nodes_before = len(model.graph.node)
        return _finish(model, out_path, meta, options, output_names, nodes_before)
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph,
                (example,),
                dynamo=True,
                dynamic_shapes=_dynamic_shapes(options, patch_size),
                opset_version=options.opset,
                input_names=[INPUT_NAME],
                output_names=output_names,
                external_data=False,
                optimize=True,
                verbose=False,
                report=False,
            )
    except Exception as exc:  # the exporter raises many error types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"torch.onnx.export (dynamo) failed: {type(exc).__name__}: {first}; "
            "try --static, or another --opset >= 18"
        ) from exc
    model = program.model_proto
    nodes_before = len(model.graph.node)
    if options.simplify:
        model = simplify_model(model)
    return _finish(model, out_path, meta, options, output_names, nodes_before)


def _torchscript_export(graph: nn.Module, example: torch.Tensor, options: OnnxExportOptions,
                        output_names: list[str]) -> Any:
    """The TorchScript-based exporter (``dynamo=False``) for ``target="opencv"``; the ModelProto."""
    import onnx

    axes: dict[str, dict[int, str]] = {}
    if options.batch is None:
        axes[INPUT_NAME] = {0: "batch"}
        axes.update({name: {0: "batch"} for name in output_names})
    if options.dynamic:
        axes.setdefault(INPUT_NAME, {}).update({2: "height", 3: "width"})
        for name in output_names:
            if name != "cls_logits":
                axes.setdefault(name, {}).update({2: "grid_h", 3: "grid_w"})
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (example,), buffer, dynamo=False, opset_version=options.opset,
                              input_names=[INPUT_NAME], output_names=output_names, dynamic_axes=axes or None,
                              do_constant_folding=True)
    except Exception as exc:  # the exporter raises many error types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.onnx.export (TorchScript, --target opencv) failed: {type(exc).__name__}: {first}; "
                          "try --static") from exc
    return onnx.load_from_string(buffer.getvalue())


def save_onnx(model: Any, out: Path) -> dict[str, int]:
    """Write ``model`` to ``out`` atomically (a reader never sees half a file); its node count per op type."""
    import onnx

    from seco_deploy.data.io import atomic_path

    with atomic_path(out) as tmp:
        onnx.save_model(model, str(tmp))
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _finish(model: Any, out_path: str | Path, meta: ModelCard, options: OnnxExportOptions,
            output_names: list[str], nodes_before: int) -> ExportReport:
    """Rename axes, embed the card, check, write atomically; the report."""
    import onnx

    _rename_axes(model, output_names)
    meta = dataclasses.replace(
        meta,
        input_shape=export_input_shape(options),
        opset=options.opset,
        precision="fp16" if options.fp16 else "fp32",
        heads=list(options.heads),
        extra={**meta.extra, "exporter": "torchscript", "target": "opencv"} if options.target == "opencv"
        else meta.extra,
    )
    embed_in_onnx(model, meta)
    if model.ByteSize() > PROTO_LIMIT:
        raise ExportError(
            f"the model is {model.ByteSize() / 2**30:.2f} GiB, over protobuf's 2 GiB limit for a single "
            "ONNX file; export with --fp16 to halve it"
        )
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the exported model: {exc}") from exc
    out = Path(out_path)
    counts = save_onnx(model, out)
    return ExportReport(
        path=out,
        input_shape=list(meta.input_shape),
        nodes=len(model.graph.node),
        nodes_before_simplify=nodes_before,
        bytes=out.stat().st_size,
        op_counts=dict(sorted(counts.items(), key=lambda kv: -kv[1])),
    )
