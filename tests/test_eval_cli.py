"""`seco eval` on hand-made masks: figures, problem files, JSON, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _cli import invoke, said

from seco_deploy.data.io import write_mask_png


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_mask_png(gt / "a.png", np.array([[0, 0, 1, 1], [0, 0, 2, 255]], dtype=np.uint8))
    write_mask_png(pred / "a.png", np.array([[0, 1, 1, 1], [0, 0, 2, 2]], dtype=np.uint8))
    write_mask_png(gt / "b.png", np.array([[1, 1], [1, 2]], dtype=np.uint8))
    write_mask_png(pred / "b.png", np.array([[1, 255], [2, 2]], dtype=np.uint8))
    return pred, gt


def test_eval_hand_computed_figures(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, gt = folders
    classes = tmp_path / "classes.txt"
    classes.write_text("background\ncat\ndog\nbird\n", encoding="utf-8")
    out = tmp_path / "report.json"
    result = invoke(["eval", str(pred), "--gt", str(gt), "--classes", str(classes), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert said(result, "cat", "63.89")  # mIoU in the title
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["images_evaluated"] == 2
    # Hand count: TP 3, 3, 2; GT pixels 4, 5, 2; predicted 3, 4, 3 (one "255" prediction).
    assert report["miou"] == pytest.approx((3 / 4 + 3 / 6 + 2 / 3) / 3)
    by_name = {c["name"]: c for c in report["classes"]}
    assert by_name["cat"]["iou"] == pytest.approx(0.5)
    assert by_name["cat"]["precision"] == pytest.approx(0.75)
    assert by_name["cat"]["recall"] == pytest.approx(0.6)
    assert by_name["cat"]["fp_tp"] == pytest.approx(1 / 3)
    assert by_name["dog"]["fp_tp"] == pytest.approx(0.5)
    assert by_name["bird"]["present"] is False and by_name["bird"]["iou"] is None


def test_eval_without_classes_infers_count(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, gt = folders
    out = tmp_path / "r.json"
    result = invoke(["eval", str(pred), "--gt", str(gt), "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert len(report["classes"]) == 3
    assert report["miou"] == pytest.approx((3 / 4 + 3 / 6 + 2 / 3) / 3)


def test_eval_reports_problem_files(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, gt = folders
    write_mask_png(gt / "missing.png", np.zeros((2, 2), dtype=np.uint8))
    write_mask_png(pred / "extra.png", np.zeros((2, 2), dtype=np.uint8))
    write_mask_png(gt / "sized.png", np.zeros((3, 3), dtype=np.uint8))
    write_mask_png(pred / "sized.png", np.zeros((2, 3), dtype=np.uint8))
    (gt / "broken.png").write_bytes(b"not a png")
    (pred / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "r.json"
    result = invoke(["eval", str(pred), "--gt", str(gt), "--json", str(out)])
    assert result.exit_code == 3, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["missing"] == ["missing"] and report["extra"] == ["extra"]
    assert len(report["size_mismatch"]) == 1 and report["size_mismatch"][0].startswith("sized:")
    assert len(report["unreadable"]) == 1 and report["unreadable"][0].startswith("broken:")
    # The good pairs were still scored, with the same figures.
    assert report["images_evaluated"] == 2
    assert report["miou"] == pytest.approx((3 / 4 + 3 / 6 + 2 / 3) / 3)


def test_eval_nothing_to_compare_is_usage_error(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    write_mask_png(tmp_path / "g" / "x.png", np.zeros((2, 2), dtype=np.uint8))
    result = invoke(["eval", str(tmp_path / "p"), "--gt", str(tmp_path / "g")])
    assert result.exit_code == 2
    result = invoke(["eval", str(tmp_path / "nope"), "--gt", str(tmp_path / "g")])
    assert result.exit_code == 2
