"""Static int8 quantization of an fp32 ONNX export (ONNX Runtime, QDQ format), calibrated on real images.

Contract:
  - input: an fp32 ``.onnx`` written by :func:`seco_deploy.export.onnx_export.export_onnx` and a
    :class:`CalibrationSet` (images read and preprocessed as the predictor does: resized to the
    training crop size, square, bilinear with antialias, normalised with the card's mean/std);
  - output: one ``.onnx`` whose weight matmuls / convolutions run in int8 (QuantizeLinear /
    DequantizeLinear pairs around them, weights int8 per output channel when ``per_channel``),
    activations uint8 with ranges from the calibration (``method``: minmax, percentile or
    entropy); everything else stays float: LayerNorm, Softmax, GELU, the attention's
    activation x activation matmuls (Q K^T and A V), the positional-embedding Resize and the
    graph outputs. The predictor's final upsampling runs outside the graph, in float;
  - the model card says ``precision: int8`` and carries ``extra["int8"]``: the method, the set's
    size and SHA-256 (of the sorted per-image file hashes), per-channel, reduce-range and the
    quantized operator types.

On an x86 CPU without AVX-512 VNNI, ONNX Runtime's uint8 x int8 kernels use ``vpmaddubsw``
whose 16-bit intermediate sums can saturate; ``reduce_range`` (7-bit weights) avoids it at a
small cost in resolution. It is off by default; the parity check tells whether it is needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seco_deploy.export.images import CalibrationSet
from seco_deploy.export.onnx_export import save_onnx
from seco_deploy.runtime.card import INPUT_NAME, ModelCard, embed_in_onnx

__all__ = ["CALIB_METHODS", "Int8Options", "QuantizeReport", "quantize_onnx"]

CALIB_METHODS = ("minmax", "percentile", "entropy")
QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")  # with a constant (weight) input only


@dataclass(frozen=True)
class Int8Options:
    """``method``: calibration (minmax | percentile | entropy); ``images``: how many images calibrate;
    ``per_channel``: one weight scale per output channel; ``reduce_range``: 7-bit weights (see module)."""

    method: str = "minmax"
    images: int = 32
    per_channel: bool = True
    reduce_range: bool = False
    batch: int = 4

    def validate(self) -> None:
        if self.method not in CALIB_METHODS:
            raise ValueError(f"--calib-method {self.method!r}: choose one of {', '.join(CALIB_METHODS)}")
        if self.images < 1:
            raise ValueError("--calib-images must be >= 1")


@dataclass
class QuantizeReport:
    path: Path
    bytes: int
    quantized_nodes: int
    float_nodes: int
    op_counts: dict[str, int] = field(default_factory=dict)


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a :class:`CalibrationSet`."""

    def __init__(self, calib: CalibrationSet, batch: int) -> None:
        self._batches = list(calib.batches(batch))
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._batches):
            return None
        self._i += 1
        return {INPUT_NAME: self._batches[self._i - 1]}

    def rewind(self) -> None:
        self._i = 0


def weight_nodes(model: Any) -> tuple[list[str], list[str]]:
    """(names of the MatMul / Gemm / Conv nodes with a constant input, names of those without).

    A constant input is an initializer or a ``Constant`` node's output (directly, or through a
    ``Transpose`` / ``Cast``)."""
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    for n in model.graph.node:  # one pass of pass-through ops is enough for exported graphs
        if n.op_type in ("Transpose", "Cast", "Identity") and n.input and n.input[0] in consts:
            consts |= set(n.output)
    with_weight, without = [], []
    for n in model.graph.node:
        if n.op_type not in QUANTIZED_OPS:
            continue
        (with_weight if any(i in consts for i in n.input[1:2]) else without).append(n.name)
    return with_weight, without


@contextlib.contextmanager
def _quiet_ort_logging() -> Iterator[None]:
    """Silence the quantizer's root-logger advice to run its pre-processing (shape inference is not needed
    for a graph with exported shapes; the node names it needs are set by :func:`_name_nodes`)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _name_nodes(model: Any) -> None:
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    calib: CalibrationSet,
    card: ModelCard,
    options: Int8Options,
    progress: Callable[[str], None] | None = None,
) -> QuantizeReport:
    """Write the int8 QDQ model of ``fp32_path`` to ``out_path`` with ``card`` (precision int8) embedded.

    Raises ``ValueError`` for bad options and ``RuntimeError`` naming ONNX Runtime's failure.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    options.validate()
    say = progress or (lambda _text: None)
    model = onnx.load(str(fp32_path))
    _name_nodes(model)
    quantize, keep = weight_nodes(model)
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[options.method]
    extra: dict[str, Any] = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if options.method == "percentile":
        extra["CalibPercentile"] = 99.99
    say(f"int8: calibrating {len(calib.files)} images ({options.method}), quantizing {len(quantize)} weight "
        f"matmuls/convs, {len(keep)} activation matmuls and every LayerNorm/Softmax/Resize kept float")
    with tempfile.TemporaryDirectory(prefix="seco-int8-") as tmp:
        named = Path(tmp) / "named.onnx"
        onnx.save_model(model, str(named))
        raw = Path(tmp) / "int8.onnx"
        try:
            with _quiet_ort_logging():
                quantize_static(
                    str(named), str(raw), _Reader(calib, options.batch),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
                    nodes_to_quantize=quantize, nodes_to_exclude=keep, per_channel=options.per_channel,
                    reduce_range=options.reduce_range, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=method, extra_options=extra,
                )
        except Exception as exc:  # ONNX Runtime raises many types here
            raise RuntimeError(f"ONNX Runtime static quantization failed: {type(exc).__name__}: {exc}") from exc
        qmodel = onnx.load(str(raw))
    meta = dataclasses.replace(card, precision="int8", extra={**card.extra, "int8": {
        "format": "QDQ (ONNX Runtime static quantization)",
        "calibration_method": options.method,
        "calibration_images": len(calib.files),
        "calibration_sha256": calib.sha256,
        "calibration_size": int(calib.inputs.shape[-1]),
        "per_channel": options.per_channel,
        "reduce_range": options.reduce_range,
        "activations": "uint8 asymmetric", "weights": "int8 symmetric",
        "quantized_ops": list(QUANTIZED_OPS), "quantized_nodes": len(quantize),
    }})
    embed_in_onnx(qmodel, meta)
    out = Path(out_path)
    counts = save_onnx(qmodel, out)
    say(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {counts.get('QuantizeLinear', 0)} QuantizeLinear)")
    return QuantizeReport(out, out.stat().st_size, len(quantize), len(keep), counts)
