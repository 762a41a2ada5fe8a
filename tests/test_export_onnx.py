"""ONNX export: graph contract, onnx.checker, parity at three shapes, fp16, static, corruption."""

from __future__ import annotations

import onnx
import pytest
import torch
from _export_helpers import CLASSES, load_net, workspace  # noqa: F401
from onnx import numpy_helper

from seco_deploy.export.parity import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    check_parity,
    parity_shapes,
    torch_runner,
)
from seco_deploy.runtime.card import read_onnx_card
from seco_deploy.runtime.onnx_backend import OnnxRunner


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _parity(path, checkpoint, tolerance=FP32_TOLERANCE):
    net, _, _ = load_net(checkpoint)
    meta = read_onnx_card(path)
    shapes = parity_shapes(meta.input_shape, meta.crop_size, meta.patch_size)
    runner = OnnxRunner(path, device="cpu", threads=1)
    return shapes, check_parity(torch_runner(net, "cam" in meta.heads), runner.run, shapes, tolerance)


def test_dynamic_export_passes_checker_and_parity_at_three_shapes(workspace) -> None:  # noqa: F811
    path = workspace.onnx("dyn_cam", heads=("seg", "cam"))
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert not path.with_name(path.name + ".data").exists()  # one self-contained file
    assert [v.name for v in model.graph.input] == ["images"]
    assert _dims(model.graph.input[0]) == ["batch", 3, "height", "width"]
    outputs = {v.name: _dims(v) for v in model.graph.output}
    c = len(CLASSES) - 1
    assert outputs == {
        "seg_logits": ["batch", c + 1, "grid_h", "grid_w"],
        "cams": ["batch", c, "grid_h", "grid_w"],
        "cls_logits": ["batch", c],
    }
    shapes, report = _parity(path, workspace.checkpoint)
    assert len(shapes) == 3 and any(s[0] == 3 for s in shapes)
    assert any(s[2:] != (64, 64) for s in shapes)  # one shape the export (crop 64) never saw
    assert report.passed, report.lines()
    assert report.max_abs_diff < 1e-4 and report.min_agreement == 1.0
    assert set(report.results[0].max_abs_diff) == {"seg_logits", "cams", "cls_logits"}


def test_static_export_fixes_sides_and_passes_parity(workspace) -> None:  # noqa: F811
    path = workspace.onnx("static", dynamic=False, simplify=True)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert _dims(model.graph.input[0]) == ["batch", 3, 64, 64]
    assert [v.name for v in model.graph.output] == ["seg_logits"]
    assert "Resize" not in {n.op_type for n in model.graph.node}  # simplify folded the pos-embed resize
    shapes, report = _parity(path, workspace.checkpoint)
    assert [s[0] for s in shapes] == [2, 3, 1] and all(s[2:] == (64, 64) for s in shapes)
    assert report.passed, report.lines()
    runner = OnnxRunner(path, device="cpu", threads=1)
    with pytest.raises(ValueError, match="static export"):
        runner.run(torch.zeros(1, 3, 48, 64))


def test_static_batch_export_is_fully_static(workspace) -> None:  # noqa: F811
    path = workspace.onnx("static_b2", dynamic=False, batch=2)
    model = onnx.load(str(path))
    assert _dims(model.graph.input[0]) == [2, 3, 64, 64]
    meta = read_onnx_card(path)
    assert meta.input_shape == [2, 3, 64, 64]
    assert parity_shapes(meta.input_shape, 64, 16) == [(2, 3, 64, 64)] * 3


def test_fp16_export_keeps_layernorm_fp32_and_passes_fp16_tolerance(workspace) -> None:  # noqa: F811
    path = workspace.onnx("fp16", fp16=True)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    onnx.checker.check_model(model, full_check=True)
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.input)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert norms, "the export should keep LayerNormalization nodes"
    for node in norms:
        assert types[node.input[0]] == onnx.TensorProto.FLOAT, node.name
    matmul_types = {types.get(n.input[1]) for n in model.graph.node if n.op_type == "MatMul"}
    assert onnx.TensorProto.FLOAT16 in matmul_types  # the rest of the network is half
    assert {model.graph.input[0].type.tensor_type.elem_type, model.graph.output[0].type.tensor_type.elem_type} == {
        onnx.TensorProto.FLOAT
    }
    assert read_onnx_card(path).precision == "fp16"
    _, report = _parity(path, workspace.checkpoint, FP16_TOLERANCE)
    assert report.passed, report.lines()
    assert report.max_abs_diff > 0  # it really ran in half precision


def test_export_rejects_bad_options(workspace, tmp_path) -> None:  # noqa: F811
    from seco_deploy.export.exporter import ExportRequest, export_checkpoint

    bad = [
        ({"size": 50}, "multiple of the patch size"),
        ({"opset": 17}, "opset"),
        ({"batch": 2}, "--batch"),
    ]
    for options, message in bad:
        with pytest.raises(ValueError, match=message):
            export_checkpoint(ExportRequest(checkpoint=workspace.checkpoint, out=tmp_path / "x.onnx", **options))
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_checkpoint(ExportRequest(checkpoint=workspace.checkpoint, out=tmp_path / "x.engine"))


def test_corrupted_export_fails_parity(workspace, tmp_path) -> None:  # noqa: F811
    model = onnx.load(str(workspace.onnx("dyn_cam", heads=("seg", "cam"))))
    target = next(t for t in model.graph.initializer if t.name == "net.decoder.branches.0.weight")
    values = numpy_helper.to_array(target).copy()
    values[0] *= 1.5  # one decoder branch's background filter is wrong
    target.CopyFrom(numpy_helper.from_array(values, target.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    _, report = _parity(bad, workspace.checkpoint)
    assert not report.passed
    assert report.max_abs_diff > 10 * FP32_TOLERANCE.atol


def test_opencv_target_reads_in_opencv_dnn_and_a_crash_is_reported(workspace, tmp_path) -> None:  # noqa: F811
    """--target opencv (TorchScript exporter) loads in cv2.dnn and matches PyTorch; the dynamo export's
    outcome in OpenCV DNN (a crash, measured with opencv-python 5.x) comes back as an error, not a dead process."""
    from seco_deploy.export.exporter import ExportRequest, export_checkpoint
    from seco_deploy.export.opencv_dnn import OpenCVProbeError, probe_opencv

    outcome = export_checkpoint(ExportRequest(checkpoint=workspace.checkpoint, out=tmp_path / "cv.onnx",
                                              target="opencv"))
    assert outcome.card.extra["target"] == "opencv"
    assert outcome.parity.passed and outcome.parity.max_abs_diff < 1e-4
    x = torch.randn(1, 3, 64, 64)
    try:
        probe_opencv(workspace.onnx("dynamic"), [x])
    except OpenCVProbeError as exc:
        assert "OpenCV DNN" in str(exc)
