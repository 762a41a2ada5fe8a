"""Parity figures on hand-made outputs, tolerances, and the shapes the check uses."""

from __future__ import annotations

import pytest
import torch

from seco_deploy.export.parity import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    check_parity,
    compare,
    parity_shapes,
    strict_fp32,
)


def _seg(values: list[list[float]]) -> torch.Tensor:
    """(C+1, 4) logits per cell -> (1, C+1, 2, 2)."""
    return torch.tensor(values).view(1, len(values), 2, 2)


def test_compare_reports_max_diff_and_argmax_agreement() -> None:
    ref = _seg([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 2.0]])  # argmax: 0, 1, 2, 2
    got = ref.clone()
    got[0, 0, 1, 1] += 3.0  # last cell: class 0 now 3.0 > 2.0 -> argmax flips to 0
    got[0, 1, 0, 0] -= 0.25
    result = compare({"seg_logits": ref}, {"seg_logits": got}, FP32_TOLERANCE, (1, 3, 32, 32))
    assert result.max_abs_diff == {"seg_logits": 3.0}
    assert result.reference_max == {"seg_logits": 2.0}
    assert result.agreement == 0.75  # 3 of 4 cells agree
    assert not result.passed


def test_tolerances() -> None:
    assert FP32_TOLERANCE.limit(50.0) == 1e-3  # absolute
    assert FP16_TOLERANCE.limit(0.5) == pytest.approx(0.02)  # relative to max(1, max|ref|)
    assert FP16_TOLERANCE.limit(50.0) == pytest.approx(1.0)
    assert "1e-03" in FP32_TOLERANCE.describe() or "0.001" in FP32_TOLERANCE.describe()


def test_check_parity_passes_and_fails_on_the_threshold() -> None:
    def reference(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"seg_logits": x[:, :2, ::16, ::16] * 3.0, "cls_logits": x.mean((2, 3))}

    def close(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = reference(x)
        return {k: v + 5e-4 for k, v in out.items()}

    def off(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = reference(x)
        out["cls_logits"] = out["cls_logits"] + 2e-3  # only the class logits drift
        return out

    shapes = [(2, 3, 32, 32), (3, 3, 48, 32), (1, 3, 16, 64)]
    good = check_parity(reference, close, shapes, FP32_TOLERANCE)
    assert good.passed and good.max_abs_diff == pytest.approx(5e-4, rel=1e-3)
    assert [r.shape for r in good.results] == shapes
    bad = check_parity(reference, off, shapes, FP32_TOLERANCE)
    assert not bad.passed and bad.min_agreement == 1.0
    assert all("FAIL" in line for line in bad.lines()[:3])
    assert bad.as_dict()["passed"] is False


def test_check_parity_rejects_missing_outputs_and_wrong_shapes() -> None:
    def reference(x):
        return {"seg_logits": x[:, :2], "cams": x[:, :1]}

    with pytest.raises(KeyError, match="cams"):
        check_parity(reference, lambda x: {"seg_logits": x[:, :2]}, [(1, 3, 16, 16)], FP32_TOLERANCE)
    with pytest.raises(ValueError, match="shape"):
        check_parity(reference, lambda x: {"seg_logits": x[:, :3], "cams": x[:, :1]}, [(1, 3, 16, 16)], FP32_TOLERANCE)


def test_parity_shapes() -> None:
    dynamic = parity_shapes([-1, 3, -1, -1], crop_size=448, patch_size=16)
    # export shape, batch of 3 at 1.25 x 0.75 of the crop, batch of 1 at (crop + p) x (crop - p)
    assert dynamic == [(2, 3, 448, 448), (3, 3, 560, 336), (1, 3, 464, 432)]
    assert parity_shapes([-1, 3, 64, 64], 64, 16) == [(2, 3, 64, 64), (3, 3, 64, 64), (1, 3, 64, 64)]
    assert parity_shapes([4, 3, 64, 96], 64, 16) == [(4, 3, 64, 96)] * 3


def test_strict_fp32_restores_flags() -> None:
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with strict_fp32():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
