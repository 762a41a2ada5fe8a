"""TensorRT: profile logic and engine files (everywhere); engine build, parity and backend (GPU only)."""

from __future__ import annotations

import json

import pytest
from _export_helpers import gpu_runtime_reason, workspace  # noqa: F401

from seco_deploy.export.parity import engine_parity_shapes
from seco_deploy.export.tensorrt.build import workspace_bytes
from seco_deploy.export.tensorrt.profile import (
    parse_shape,
    resolve_profile,
    side_for_scale,
    tta_profile,
    tta_sides,
    validate_profile,
)
from seco_deploy.runtime.card import ModelCard
from seco_deploy.runtime.describe import describe
from seco_deploy.runtime.device import require_gpu_runtime
from seco_deploy.runtime.engine_file import ENGINE_MAGIC, ProfileShapes, read_engine_file, write_engine_file
from seco_deploy.runtime.errors import MissingRuntimeError


def test_parse_shape_accepts_x_and_commas_and_rejects_the_rest() -> None:
    assert parse_shape("2x3x448x448") == (2, 3, 448, 448)
    assert parse_shape(" 1, 3, 224 ,320 ") == (1, 3, 224, 320)
    for bad in ("2x3x448", "2x3x448x448x1", "ax3x4x4", "0x3x16x16", ""):
        with pytest.raises(ValueError):
            parse_shape(bad)


def test_tta_sides_round_to_patch_multiples() -> None:
    # 448 * (1.0, 1.25, 1.5) / 16 = 28, 35, 42 patches; 448 * 0.5 = 224; 448 * 0.75 = 336
    assert tta_sides(448, (1.0, 1.25, 1.5), 16) == [448, 560, 672]
    assert tta_sides(448, (1.0, 0.5, 0.75, 1.5), 16) == [224, 336, 448, 672]
    # 100 * 1.3 / 16 = 8.125 -> 8 patches = 128; tiny scales never go below one patch
    assert side_for_scale(100, 1.3, 16) == 128
    assert side_for_scale(64, 0.1, 16) == 16
    with pytest.raises(ValueError):
        tta_sides(448, (), 16)


def test_tta_profile_covers_every_scale_from_batch_1_to_max() -> None:
    scales = (1.0, 0.5, 0.75, 1.25, 1.5)
    profile = tta_profile(448, scales, 16, max_batch=8)
    assert profile.min == (1, 3, 224, 224)
    assert profile.opt == (8, 3, 448, 448)
    assert profile.max == (8, 3, 672, 672)
    for side in tta_sides(448, scales, 16):
        for n in (1, 5, 8):
            assert profile.covers((n, 3, side, side))
    assert not profile.covers((9, 3, 448, 448))
    assert not profile.covers((1, 3, 688, 448))
    # without scale 1.0 the opt side is the TTA side nearest to the crop
    assert tta_profile(448, (0.5, 1.25), 16, max_batch=4, opt_batch=2).opt == (2, 3, 560, 560)
    with pytest.raises(ValueError):
        tta_profile(448, scales, 16, max_batch=4, opt_batch=5)
    # min_aspect 0.5 also covers the short side of 2:1 images (`--resize keep`):
    # 448 * 0.5 = 224 px at the smallest scale 0.5 -> 112 px
    wide = tta_profile(448, scales, 16, max_batch=8, min_aspect=0.5)
    assert wide.min == (1, 3, 112, 112) and wide.max == profile.max
    assert wide.covers((2, 3, 224, 112))


def test_validate_profile_names_the_problem() -> None:
    ok = ProfileShapes((1, 3, 32, 32), (2, 3, 64, 64), (4, 3, 96, 96))
    validate_profile(ok, 16)
    cases = [
        (ProfileShapes((1, 3, 30, 32), (2, 3, 64, 64), (4, 3, 96, 96)), "multiples of the patch size"),
        (ProfileShapes((1, 1, 32, 32), (2, 1, 64, 64), (4, 1, 96, 96)), "3 channels"),
        (ProfileShapes((3, 3, 32, 32), (2, 3, 64, 64), (4, 3, 96, 96)), "batch: need min <= opt <= max"),
        (ProfileShapes((1, 3, 32, 32), (2, 3, 128, 64), (4, 3, 96, 96)), "height"),
    ]
    for profile, message in cases:
        with pytest.raises(ValueError, match=message):
            validate_profile(profile, 16)
    with pytest.raises(ValueError, match="fixes axis 2 to 64"):
        validate_profile(ok, 16, static_shape=[-1, 3, 64, 64])


def test_resolve_profile_applies_overrides_and_pins_static_axes() -> None:
    default = tta_profile(64, (1.0, 0.5, 1.5), 16, max_batch=4)
    assert default == ProfileShapes((1, 3, 32, 32), (4, 3, 64, 64), (4, 3, 96, 96))
    custom = resolve_profile(default, 16, max_shape="8x3x128x96")
    assert custom.max == (8, 3, 128, 96) and custom.min == default.min
    static = resolve_profile(default, 16, static_shape=[-1, 3, 64, 64])
    assert static == ProfileShapes((1, 3, 64, 64), (4, 3, 64, 64), (4, 3, 64, 64))
    fully_static = resolve_profile(default, 16, static_shape=[2, 3, 64, 64])
    assert {fully_static.min, fully_static.opt, fully_static.max} == {(2, 3, 64, 64)}
    with pytest.raises(ValueError, match="min <= opt <= max"):
        resolve_profile(default, 16, min_shape="1x3x128x128")


def test_engine_parity_shapes_lie_inside_the_profile_and_include_a_batch_of_3() -> None:
    profile = ProfileShapes((1, 3, 32, 32), (4, 3, 64, 64), (8, 3, 96, 96))
    shapes = engine_parity_shapes(profile)
    assert shapes == [(4, 3, 64, 64), (3, 3, 96, 32), (1, 3, 32, 32)]
    assert all(profile.covers(s) for s in shapes)
    small = ProfileShapes((1, 3, 32, 32), (2, 3, 32, 32), (2, 3, 32, 32))
    assert all(small.covers(s) for s in engine_parity_shapes(small))


def test_workspace_bytes() -> None:
    assert workspace_bytes(1.5) == 3 * 2**29
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError):
            workspace_bytes(bad)


def _meta(**changes) -> ModelCard:
    values = dict(
        classes=["background", "a", "b"], palette=[[0, 0, 0], [128, 0, 0], [0, 128, 0]], mean=[0.5] * 3,
        std=[0.25] * 3, patch_size=16, crop_size=64, mask_scales=[1.0], cam_scales=[1.0, 0.5], heads=["seg", "cam"],
        backbone="vit_tiny_patch16_224", input_shape=[-1, 3, -1, -1], iteration=12,
        extra={"tensorrt_version": "10.9.0", "profile": {"min": [1, 3, 32, 32]}},
    )
    values.update(changes)
    return ModelCard(**values)


def test_engine_file_round_trips_metadata_and_plan(tmp_path) -> None:
    plan = bytes(range(256)) * 3
    path = write_engine_file(tmp_path / "m.engine", plan, _meta().to_props())
    raw = path.read_bytes()
    assert raw.startswith(ENGINE_MAGIC)
    header_len = int.from_bytes(raw[8:16], "little")
    assert raw[16 + header_len :] == plan  # the documented layout: strip 16 + N bytes for the bare plan
    props, got = read_engine_file(path)
    assert got == plan
    meta = ModelCard.from_props(props)
    assert meta == _meta()
    info = describe(path)  # no TensorRT needed to read the header
    assert info["kind"] == "tensorrt-engine" and info["classes"] == ["background", "a", "b"]
    assert info["tensorrt_version"] == "10.9.0" and info["plan_bytes"] == len(plan)


def test_bare_plans_and_broken_headers(tmp_path) -> None:
    bare = tmp_path / "bare.plan"
    bare.write_bytes(b"\x00plan-bytes")
    assert read_engine_file(bare) == ({}, b"\x00plan-bytes")
    truncated = tmp_path / "t.engine"
    truncated.write_bytes(ENGINE_MAGIC + (1000).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="past the end"):
        read_engine_file(truncated)
    garbage = tmp_path / "g.engine"
    garbage.write_bytes(ENGINE_MAGIC + (3).to_bytes(8, "little") + b"{x}" + b"plan")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_engine_file(garbage)
    assert json.loads(json.dumps(_meta().to_props()))  # props are plain strings


def test_missing_runtime_message_says_what_to_install() -> None:
    reason = gpu_runtime_reason()
    if reason is None:
        pytest.skip("TensorRT and a CUDA GPU are present")
    with pytest.raises(MissingRuntimeError) as info:
        require_gpu_runtime("cuda")
    text = str(info.value)
    assert "pip install" in text or "nvidia-smi" in text


def test_tensorrt_backend_refuses_cpu_and_reports_a_missing_runtime(tmp_path) -> None:
    from seco_deploy.runtime.backends import open_backend
    from seco_deploy.runtime.errors import BackendError

    path = write_engine_file(tmp_path / "m.engine", b"not-a-real-plan", _meta().to_props())
    with pytest.raises(BackendError, match="CUDA GPU only"):
        open_backend(path, device="cpu")
    if gpu_runtime_reason() is not None:
        with pytest.raises(MissingRuntimeError):
            open_backend(path, device="cuda")


# ---------------------------------------------------------------------- GPU (TensorRT) tests
_GPU_REASON = gpu_runtime_reason()


@pytest.mark.gpu
@pytest.mark.skipif(_GPU_REASON is not None, reason=_GPU_REASON or "")
@pytest.mark.parametrize("fp16", [False, True])
def test_engine_build_parity_and_backend_on_gpu(workspace, tmp_path, fp16) -> None:  # noqa: F811
    import torch

    from seco_deploy.export.exporter import ExportRequest, export_checkpoint
    from seco_deploy.runtime.backends import open_backend

    out = tmp_path / ("m16.engine" if fp16 else "m32.engine")
    cache = tmp_path / "timing.cache"
    outcome = export_checkpoint(
        ExportRequest(checkpoint=workspace.checkpoint, out=out, format="trt", heads=("seg", "cam"), fp16=fp16,
                      timing_cache=cache, max_batch=4)
    )
    assert outcome.parity is not None and outcome.parity.passed, outcome.parity.lines()
    assert cache.is_file() and cache.stat().st_size > 0
    backend, info = open_backend(out, device="cuda")
    assert info.max_batch == 4 and info.classes == outcome.card.classes
    images = torch.randn(2, 3, 64, 64, device=backend.device)
    result = backend(images, with_cam=True)
    assert result["seg"].shape == (2, 4, 4, 4) and result["seg"].device.type == "cuda"
    assert result["cam"].shape == (2, 3, 4, 4) and result["cls"].shape == (2, 3)
    with pytest.raises(ValueError, match="outside the engine's profile"):
        backend(torch.randn(5, 3, 64, 64, device=backend.device))
    backend.close()
