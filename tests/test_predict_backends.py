"""Backends (seco_deploy.runtime.backends): dispatch, devices, the PyTorch backend, shape limits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from _predict_helpers import CLASSES, StubBackend, checkpoint, one_thread, write_image

from seco_deploy.infer.options import PredictOptions
from seco_deploy.infer.predictor import Predictor
from seco_deploy.infer.sources import expand_source
from seco_deploy.runtime.backends import TorchBackend, model_info_from_card, open_backend
from seco_deploy.runtime.device import resolve_device
from seco_deploy.runtime.errors import BackendError, MissingRuntimeError

__all__ = ["checkpoint", "one_thread"]  # fixtures


def test_torch_backend_contract(checkpoint: Path) -> None:
    backend, info = open_backend(checkpoint, device="cpu")
    assert isinstance(backend, TorchBackend) and backend.info is info
    assert info.classes == CLASSES and info.patch_size == 16 and info.crop_size == 64
    assert info.heads == ("seg", "cam") and info.palette.shape == (256, 3) and info.config is not None
    x = torch.randn(2, 3, 64, 48)
    out = backend(x)
    assert set(out) == {"seg"} and out["seg"].shape == (2, 4, 4, 3) and out["seg"].dtype == torch.float32
    out = backend(x, with_cam=True)
    assert out["cam"].shape == (2, 3, 4, 3) and out["cls"].shape == (2, 3)
    assert (out["cam"] < 0).any()  # raw class maps: the predictor applies the ReLU after upsampling
    backend.close()
    with pytest.raises(BackendError):
        backend(x)


def test_bf16_autocast_gives_float32_outputs_close_to_fp32(checkpoint: Path) -> None:
    fp32, _ = open_backend(checkpoint, device="cpu")
    bf16, _ = open_backend(checkpoint, device="cpu", amp="bf16")
    x = torch.randn(2, 3, 64, 64)
    a, b = fp32(x)["seg"], bf16(x)["seg"]
    assert b.dtype == torch.float32
    assert float((a - b).abs().max()) < 0.05 * float(a.abs().max()) + 1e-3
    with pytest.raises(BackendError, match="fp16"):
        open_backend(checkpoint, device="cpu", amp="fp16")


def test_open_backend_refuses_unknown_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="unknown file type"):
        open_backend(tmp_path / "model.bin")
    with pytest.raises(BackendError, match="does not exist"):
        open_backend(tmp_path / "model.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BackendError, match="junk.pt"):
        open_backend(tmp_path / "junk.pt", device="cpu")


def test_open_backend_dispatches_onnx_and_engines_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import seco_deploy.runtime.onnx_backend as onnx_backend
    import seco_deploy.runtime.trt_backend as trt_backend

    made = []

    class Fake:
        def __init__(self, path, device="auto", amp="off"):
            made.append((type(self).__name__, Path(path).name, device, amp))
            self.info = "info"

    monkeypatch.setattr(onnx_backend, "OnnxBackend", type("OnnxBackend", (Fake,), {}), raising=False)
    monkeypatch.setattr(trt_backend, "TensorRTBackend", type("TensorRTBackend", (Fake,), {}), raising=False)
    for name in ("m.onnx", "m.engine", "m.plan"):
        (tmp_path / name).write_bytes(b"x")
        _, info = open_backend(tmp_path / name, device="cpu", amp="bf16")
        assert info == "info"
    assert made == [("OnnxBackend", "m.onnx", "cpu", "bf16"), ("TensorRTBackend", "m.engine", "cpu", "bf16"),
                    ("TensorRTBackend", "m.plan", "cpu", "bf16")]


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(BackendError):
        resolve_device("tpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(MissingRuntimeError, match="--device cpu"):
            resolve_device("cuda:0")


def test_model_info_from_export_metadata() -> None:
    from seco_deploy.config import preset
    from seco_deploy.runtime.card import ModelCard

    cfg = preset("test")
    meta = ModelCard(
        classes=CLASSES, palette=[[0, 0, 0], [1, 2, 3], [4, 5, 6], [7, 8, 9]], mean=[0.5] * 3, std=[0.25] * 3,
        patch_size=16, crop_size=64, mask_scales=[1.0, 1.5], cam_scales=[1.0], heads=["seg"],
        backbone="vit", input_shape=[-1, 3, 64, 64], config=cfg.to_yaml(),
    )
    info = model_info_from_card(meta, "m.onnx", max_batch=8)
    assert info.classes == CLASSES and info.mask_scales == (1.0, 1.5) and info.input_shape == (-1, 3, 64, 64)
    assert info.palette[1].tolist() == [1, 2, 3] and info.palette.shape == (256, 3) and not info.has_cam
    assert info.config is not None and info.config.model.par_iters == cfg.model.par_iters and info.max_batch == 8


def test_predictor_respects_static_batch_and_max_batch(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / "in" / f"{i}.png", 32, 32, seed=i)
    zeros = lambda x: torch.zeros(x.shape[0], 4, x.shape[2] // 16, x.shape[3] // 16)  # noqa: E731
    static = StubBackend(zeros, crop=32)
    static.info = dataclasses.replace(static.info, input_shape=(4, 3, 32, 32))
    Predictor(static, static.info, PredictOptions(batch=3, workers=0)).run(expand_source(tmp_path / "in"),
                                                                             tmp_path / "a")
    assert static.calls == [(4, 3, 32, 32)] * 2  # 6 inputs (3 images + flips) padded to two batches of 4
    limited = StubBackend(zeros, crop=32)
    limited.info = dataclasses.replace(limited.info, max_batch=4)
    Predictor(limited, limited.info, PredictOptions(batch=3, workers=0)).run(expand_source(tmp_path / "in"),
                                                                               tmp_path / "b")
    assert limited.calls == [(4, 3, 32, 32), (2, 3, 32, 32)]
    with pytest.raises(BackendError, match="static input"):
        Predictor(static, static.info, PredictOptions(scales=(1.0, 1.5)))
    seg_only = StubBackend(zeros, crop=32)
    seg_only.info = dataclasses.replace(seg_only.info, heads=("seg",))
    with pytest.raises(BackendError, match="CAM head"):
        Predictor(seg_only, seg_only.info, PredictOptions(mode="pseudo"))


def test_a_failing_batch_is_retried_image_by_image(tmp_path: Path) -> None:
    from PIL import Image

    write_image(tmp_path / "in" / "a.png", 32, 32, seed=1)
    write_image(tmp_path / "in" / "c.png", 32, 32, seed=2)
    Image.new("RGB", (32, 32), (255, 255, 255)).save(tmp_path / "in" / "b.png")

    def fn(x: torch.Tensor) -> torch.Tensor:  # mean 0, std 1: x = pixel / 255, so white is 1.0
        if bool((x.flatten(1).amin(1) > 0.99).any()):
            raise RuntimeError("out of memory (simulated)\ndetails")
        return torch.zeros(x.shape[0], 4, x.shape[2] // 16, x.shape[3] // 16)

    backend = StubBackend(fn, crop=32)
    summary = Predictor(backend, backend.info, PredictOptions(batch=3, workers=0)).run(
        expand_source(tmp_path / "in"), tmp_path / "out")
    assert (summary.ok, summary.failed) == (2, 1) and summary.exit_code == 3
    assert summary.failures[0][0].endswith("b.png")
    assert summary.failures[0][1] == "prediction failed: RuntimeError: out of memory (simulated)"
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["a.png", "c.png"]


def test_cpu_session_options() -> None:
    pytest.importorskip("onnxruntime")
    from seco_deploy.runtime.onnx_backend import cpu_session_options

    so = cpu_session_options(threads=3, opt_level="basic")
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.set_denormal_as_zero") == "1"
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # threads sleep between runs
    with pytest.raises(ValueError, match="choose one of"):
        cpu_session_options(opt_level="fast")


def test_postprocess_chunks_give_the_masks_of_the_per_image_formula(monkeypatch) -> None:
    """Masks made for chunks of same-size images equal argmax(max over scales of each image's
    flip-summed logits upsampled to its size), whatever the chunk budget."""
    import numpy as np

    import seco_deploy.infer.predictor as predictor_module
    from seco_deploy.infer.decode import Decoded

    generator = torch.Generator().manual_seed(0)
    fn = lambda x: torch.randn(x.shape[0], 4, x.shape[2] // 16, x.shape[3] // 16, generator=generator)  # noqa: E731
    backend = StubBackend(fn, crop=32, scales=(1.0, 1.5))
    rng = np.random.default_rng(0)
    sizes = [(40, 30), (40, 30), (40, 30), (25, 50), (40, 30)]
    samples = [Decoded(i, torch.from_numpy(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)), 0.0)
               for i, hw in enumerate(sizes)]
    predictor = Predictor(backend, backend.info, PredictOptions(batch=5, workers=0))
    batch = predictor.preprocess(samples)
    fused = predictor.infer(batch)
    assert predictor.chunks(batch) == [(0, 1), (1, 5)]  # sorted by size: (25, 50) first, then the four (40, 30)
    wide = {s.index: r.mask for s, r in predictor.postprocess(batch, fused)}
    monkeypatch.setattr(predictor_module, "POSTPROCESS_ELEMENTS", 2 * 4 * 40 * 30)
    assert predictor.chunks(batch) == [(0, 1), (1, 3), (3, 5)]
    narrow = {s.index: r.mask for s, r in predictor.postprocess(batch, fused)}
    for i, image in enumerate(batch.images):
        size = tuple(image.shape[1:])
        expected = torch.stack([torch.nn.functional.interpolate(seg[i : i + 1], size=size, mode="bilinear",
                                                                align_corners=False)[0] for seg in fused.segs])
        expected = expected.amax(0).argmax(0).numpy()
        index = batch.samples[i].index
        assert wide[index].shape == size and (wide[index] == expected).all() and (narrow[index] == expected).all()


def test_outputs_are_fsynced_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import seco_deploy.data.io as io_module

    for i in range(2):
        write_image(tmp_path / "in" / f"{i}.png", 32, 32, seed=i)
    synced: list[int] = []
    real = io_module.os.fsync
    monkeypatch.setattr(io_module.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    zeros = lambda x: torch.zeros(x.shape[0], 4, x.shape[2] // 16, x.shape[3] // 16)  # noqa: E731
    backend = StubBackend(zeros, crop=32)
    Predictor(backend, backend.info, PredictOptions(batch=2, workers=0)).run(expand_source(tmp_path / "in"),
                                                                              tmp_path / "fast")
    assert len(synced) == 2  # run.json only (the file and its folder), no mask
    assert len(list((tmp_path / "fast" / "masks").iterdir())) == 2
    Predictor(backend, backend.info, PredictOptions(batch=2, workers=0, fsync=True, overlay=True)).run(
        expand_source(tmp_path / "in"), tmp_path / "durable")
    assert len(synced) == 2 + 2 + 2 * 2 * 2  # run.json; per image the mask and the overlay, file and folder
