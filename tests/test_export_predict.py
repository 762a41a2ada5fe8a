"""`seco predict --model model.onnx` writes the same masks as the checkpoint it was exported from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _cli import invoke
from _export_helpers import CLASSES, workspace  # noqa: F401
from PIL import Image

from seco_deploy.runtime.backends import open_backend
from seco_deploy.runtime.errors import BackendError, MissingRuntimeError


@pytest.fixture(scope="module")
def synth_images(tmp_path_factory):
    from seco_deploy.data.synth import synthesize

    root = tmp_path_factory.mktemp("synth") / "set"
    synthesize(root, images=6, size=64, seed=1, val_fraction=0.0)
    assert (root / "classes.txt").read_text(encoding="utf-8").split() == CLASSES
    return root


def _predict(model, source, out, *extra: str) -> list[np.ndarray]:
    args = ["predict", str(source), "--model", str(model), "--out", str(out), "--device", "cpu", "--workers", "0",
            "-q", *extra]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    files = sorted((out / "masks").glob("*.png"))
    assert len(files) == 6
    return [np.array(Image.open(f)) for f in files]


@pytest.mark.parametrize(
    "mode, extra",
    [("mask", ["--scales", "1.0,1.5"]), ("pseudo", [])],
)
def test_onnx_masks_match_the_checkpoint(workspace, synth_images, tmp_path, mode, extra) -> None:  # noqa: F811
    onnx_model = workspace.onnx("dyn_cam", heads=("seg", "cam"))
    if mode == "pseudo":
        extra = [*extra, "--tags", str(synth_images / "tags.csv")]
    args = ["--mode", mode, *extra]
    reference = _predict(workspace.checkpoint, synth_images / "JPEGImages", tmp_path / "pt", *args)
    exported = _predict(onnx_model, synth_images / "JPEGImages", tmp_path / "onnx", *args)
    same = sum(int((a == b).sum()) for a, b in zip(reference, exported, strict=True))
    total = sum(a.size for a in reference)
    assert same / total >= 0.999
    assert len(np.unique(np.concatenate([m.ravel() for m in reference]))) > 1  # not a trivial all-background run


def test_onnx_backend_contract(workspace) -> None:  # noqa: F811
    seg_only = workspace.onnx("dyn_seg")
    backend, info = open_backend(seg_only, device="cpu")
    assert info.classes == CLASSES and info.heads == ("seg",) and info.patch_size == 16
    assert info.crop_size == 64 and info.input_shape == (-1, 3, -1, -1)
    assert info.config is not None and info.config.data.crop_size == 64
    assert backend.device == torch.device("cpu")
    out = backend(torch.randn(3, 3, 48, 80))
    assert set(out) == {"seg"} and out["seg"].shape == (3, len(CLASSES), 3, 5)
    assert out["seg"].dtype == torch.float32
    with pytest.raises(BackendError, match="--heads seg,cam"):
        backend(torch.randn(1, 3, 64, 64), with_cam=True)
    with pytest.raises(ValueError, match="multiples of the patch size"):
        backend(torch.randn(1, 3, 50, 64))
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend(torch.randn(1, 3, 64, 64))

    both, _ = open_backend(workspace.onnx("dyn_cam", heads=("seg", "cam")), device="cpu")
    out = both(torch.randn(2, 3, 64, 64), with_cam=True)
    assert out["cam"].shape == (2, len(CLASSES) - 1, 4, 4) and out["cls"].shape == (2, len(CLASSES) - 1)
    assert float(out["cam"].min()) < 0.0  # raw class maps: the ReLU comes after upsampling and flip fusion


def test_onnx_backend_devices(workspace) -> None:  # noqa: F811
    import onnxruntime as ort

    from seco_deploy.runtime.onnx_backend import resolve_providers

    cpu_only = ["CPUExecutionProvider"]
    assert resolve_providers("auto", cpu_only) == (["CPUExecutionProvider"], torch.device("cpu"))
    with pytest.raises(MissingRuntimeError, match="onnxruntime-gpu"):
        resolve_providers("cuda", cpu_only)
    with pytest.raises(MissingRuntimeError, match="TensorRT"):
        resolve_providers("tensorrt:1", cpu_only)
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers, device = resolve_providers("cuda:1", gpu)
    assert providers[0] == ("CUDAExecutionProvider", {"device_id": 1}) and device == torch.device("cuda", 1)
    providers, _ = resolve_providers("tensorrt", gpu)
    assert [p[0] if isinstance(p, tuple) else p for p in providers] == gpu
    with pytest.raises(BackendError):
        resolve_providers("tpu", gpu)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(MissingRuntimeError):
            open_backend(workspace.onnx("dyn_seg"), device="cuda")
