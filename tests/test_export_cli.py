"""`seco export` and `seco info` from the command line: exit codes, JSON figures, metadata round trip."""

from __future__ import annotations

import json

import onnx
import pytest
from _cli import invoke, said
from _export_helpers import CLASSES, gpu_runtime_reason, workspace  # noqa: F401
from onnx import numpy_helper

from seco_deploy.cli.common import EXIT_MISSING_RUNTIME, EXIT_PARITY, EXIT_USAGE
from seco_deploy.config import preset


def test_export_cli_writes_model_figures_and_info_round_trips(workspace, tmp_path) -> None:  # noqa: F811
    out = tmp_path / "model.onnx"
    figures = tmp_path / "export.json"
    result = invoke(["export", workspace.checkpoint, "--out", out, "--heads", "seg,cam", "--json", figures])
    assert result.exit_code == 0, result.output
    assert said(result, "parity ok")
    data = json.loads(figures.read_text(encoding="utf-8"))
    assert data["parity"]["passed"] is True
    assert len(data["parity"]["shapes"]) == 3
    assert data["parity"]["max_abs_diff"] < 1e-3 and data["parity"]["min_agreement"] >= 0.999
    assert data["input_shape"] == [-1, 3, -1, -1]

    shown = invoke(["info", str(out), "--json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.output)
    ckpt_info = json.loads(invoke(["info", str(workspace.checkpoint), "--json"]).output)
    cfg = preset("test")
    assert info["kind"] == "onnx" and ckpt_info["kind"] == "checkpoint"
    for key in ("classes", "backbone", "patch_size", "crop_size", "mask_scales", "cam_scales", "mean", "std",
                "iteration"):
        assert info[key] == ckpt_info[key], key
    assert info["classes"] == CLASSES
    assert info["crop_size"] == cfg.data.crop_size and info["patch_size"] == 16
    assert info["mean"] == pytest.approx(list(cfg.data.mean))
    assert info["heads"] == ["seg", "cam"] and info["opset"] == 18
    assert info["checkpoint_sha256"] == ckpt_info["sha256"]
    assert info["outputs"]["cams"] == ["batch", len(CLASSES) - 1, "grid_h", "grid_w"]

    text = invoke(["info", str(out)])
    assert text.exit_code == 0
    assert said(text, "classes", "boat", "opset")


def test_check_only_exits_4_on_a_corrupted_export(workspace, tmp_path) -> None:  # noqa: F811
    good = workspace.onnx("dyn_cam", heads=("seg", "cam"))
    ok = invoke(["export", str(workspace.checkpoint), "--out", str(good), "--check-only"])
    assert ok.exit_code == 0, ok.output

    model = onnx.load(str(good))
    target = next(t for t in model.graph.initializer if t.name == "net.encoder.vit.patch_embed.proj.weight")
    values = numpy_helper.to_array(target).copy()
    values[:, 0] = -values[:, 0]  # red channel's filters flipped: a plausible-looking, wrong model
    target.CopyFrom(numpy_helper.from_array(values, target.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    result = invoke(["export", str(workspace.checkpoint), "--out", str(bad), "--check-only"])
    assert result.exit_code == EXIT_PARITY, result.output
    assert said(result, "parity check failed", "FAIL")


def test_usage_errors_exit_2(workspace, tmp_path) -> None:  # noqa: F811
    cases = [
        ["export", str(tmp_path / "missing.pt")],
        ["export", str(workspace.checkpoint), "--heads", "cam"],
        ["export", str(workspace.checkpoint), "--format", "tflite"],
        ["export", str(workspace.checkpoint), "--out", str(tmp_path / "m.onnx"), "--size", "70"],
        ["export", str(workspace.checkpoint), "--out", str(tmp_path / "absent.onnx"), "--check-only"],
        ["info", str(tmp_path / "missing.onnx")],
    ]
    for args in cases:
        result = invoke(args)
        assert result.exit_code == EXIT_USAGE, (args, result.output)


def test_info_rejects_an_onnx_file_without_metadata(tmp_path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(path))
    result = invoke(["info", str(path)])
    assert result.exit_code == EXIT_USAGE
    assert said(result, "no seco-deploy metadata")


def test_tensorrt_export_without_runtime_exits_5_saying_what_to_install(workspace, tmp_path) -> None:  # noqa: F811
    if gpu_runtime_reason() is None:
        pytest.skip("TensorRT and a GPU are present here; the missing-runtime path cannot be shown")
    result = invoke(["export", str(workspace.checkpoint), "--format", "trt", "--out", str(tmp_path / "m.engine")]
    )
    assert result.exit_code == EXIT_MISSING_RUNTIME, result.output
    assert said(result, "pip install")
    assert not (tmp_path / "m.engine").exists()
