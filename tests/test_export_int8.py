"""`seco export --int8`: static QDQ int8 on a tiny model, its card, and the image-level parity check."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import onnx
import pytest
import torch
from _cli import invoke, said
from _data_helpers import block_mask, noise_image, save_rgb
from _export_helpers import workspace  # noqa: F401

from seco_deploy.cli.common import EXIT_PARITY, EXIT_USAGE
from seco_deploy.data.io import write_mask_png


def labelled_set(root: Path, count: int = 10) -> Path:
    """``count`` 64 x 64 noise images in VOC layout with stripe masks (classes 0..3)."""
    for i in range(count):
        save_rgb(root / "JPEGImages" / f"img{i:02d}.jpg", noise_image(64, 64, seed=i))
        write_mask_png(root / "SegmentationClass" / f"img{i:02d}.png", block_mask(64, 64, [0, 1 + i % 3]))
    return root


def test_int8_export_round_trip_card_and_parity(workspace, tmp_path) -> None:  # noqa: F811
    data = labelled_set(tmp_path / "set")
    out = tmp_path / "model.int8.onnx"
    figures = tmp_path / "int8.json"
    result = invoke(["export", workspace.checkpoint, "--int8", "--calib", data, "--calib-images", "4",
                     "--out", out, "--json", figures])
    report = json.loads(figures.read_text(encoding="utf-8"))["parity"]
    assert result.exit_code == (0 if report["passed"] else EXIT_PARITY), result.output
    assert report["images"] == 6  # the 6 images that did not calibrate
    assert 0.0 <= report["min_agreement"] <= 1.0 and report["miou"] is not None
    assert report["passed"] == (report["min_agreement"] >= 0.98
                                and report["miou"]["reference"] - report["miou"]["candidate"] <= 1.0)

    from seco_deploy.runtime.card import read_onnx_card

    card = read_onnx_card(out)
    assert card.precision == "int8"
    info = card.extra["int8"]
    assert info["calibration_method"] == "minmax" and info["calibration_images"] == 4
    assert len(info["calibration_sha256"]) == 64 and info["per_channel"] is True
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "LayerNormalization", "Softmax"} <= ops


def test_int8_parity_failure_exits_4(workspace, tmp_path, monkeypatch) -> None:  # noqa: F811
    import seco_deploy.export.parity as parity

    monkeypatch.setattr(parity, "INT8_TOLERANCE", dataclasses.replace(parity.INT8_TOLERANCE, min_agreement=1.01))
    data = labelled_set(tmp_path / "set", count=4)
    result = invoke(["export", workspace.checkpoint, "--int8", "--calib", data, "--calib-images", "2",
                     "--out", tmp_path / "m.onnx"])
    assert result.exit_code == EXIT_PARITY, result.output
    assert said(result, "do not deploy it")


def test_int8_needs_calibration_images(workspace, tmp_path) -> None:  # noqa: F811
    result = invoke(["export", workspace.checkpoint, "--int8", "--out", tmp_path / "m.onnx"])
    assert result.exit_code == EXIT_USAGE and said(result, "--calib DIR")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke(["export", workspace.checkpoint, "--int8", "--calib", empty, "--out", tmp_path / "m.onnx"])
    assert result.exit_code == EXIT_USAGE and said(result, "holds no images")


def test_image_parity_counts_pixels_and_miou() -> None:
    from seco_deploy.export.parity import INT8_TOLERANCE, check_on_images

    x = torch.zeros(3, 3, 32, 32)
    logits = torch.zeros(3, 2, 2, 2)
    logits[:, 1] = 1.0  # class 1 everywhere

    def reference(images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"seg_logits": logits[: images.shape[0]]}

    def flipped_first(images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = logits[: images.shape[0]].clone()
        out[0] = out[0].flip(0)  # the first image of each batch predicts class 0
        return {"seg_logits": out}

    masks = torch.ones(3, 32, 32, dtype=torch.long)
    same = check_on_images(reference, reference, x, INT8_TOLERANCE, masks=masks, batch=2)
    assert same.passed and same.min_agreement == 1.0 and same.miou == {"reference": 100.0, "candidate": 100.0}
    worse = check_on_images(reference, flipped_first, x, INT8_TOLERANCE, masks=masks, batch=2)
    assert worse.min_agreement == pytest.approx(1 / 3) and not worse.passed
    assert worse.miou_drop is not None and worse.miou_drop > 1.0
