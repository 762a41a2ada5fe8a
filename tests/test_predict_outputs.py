"""Output writers (seco_deploy.infer.outputs): fractions, overlays, probabilities, temporaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from seco_deploy.data.palette import VOC_PALETTE
from seco_deploy.infer.outputs import (
    OutputPaths,
    cam_heatmap,
    class_fractions,
    remove_stale_temporaries,
    render_overlay,
    write_mask,
    write_probs,
)

CLASSES = ["background", "cat", "dog"]


def test_class_fractions_hand_case() -> None:
    mask = np.array([[0, 0, 1, 1], [0, 2, 2, 2]], np.uint8)  # 3/8 bg, 2/8 cat, 3/8 dog
    assert class_fractions(mask, CLASSES) == {"background": 0.375, "cat": 0.25, "dog": 0.375}
    assert class_fractions(np.full((2, 2), 7, np.uint8), CLASSES) == {"7": 1.0}


def test_overlay_blends_foreground_only_and_adds_a_legend() -> None:
    image = np.full((40, 30, 3), 100, np.uint8)
    mask = np.zeros((40, 30), np.uint8)
    mask[10:20, 5:15] = 1  # cat: VOC colour (128, 0, 0)
    out = render_overlay(image, mask, VOC_PALETTE, CLASSES, alpha=0.5)
    assert out.shape[0] >= 40 and out.shape[1] > 30  # a legend taller than the image extends it
    assert (out[0, 0] == 100).all()  # background keeps the image
    assert out[15, 10].tolist() == [114, 50, 50]  # 0.5 * 100 + 0.5 * (128, 0, 0), rounded
    legend = out[:, 30:]
    assert (legend == np.array(VOC_PALETTE[1])).all(axis=2).any()  # the cat swatch is drawn


def test_mask_png_and_probs_npz(tmp_path: Path) -> None:
    paths = OutputPaths.for_name(tmp_path, "sub/x y", probs=True)
    assert paths.mask == tmp_path / "masks" / "sub" / "x y.png" and paths.overlay is None
    mask = np.array([[0, 1], [2, 1]], np.uint8)
    write_mask(paths.mask, mask, VOC_PALETTE)
    with Image.open(paths.mask) as im:
        assert im.mode == "P" and np.array_equal(np.asarray(im), mask)
    probs = np.random.default_rng(0).random((3, 2, 2)).astype(np.float32)
    write_probs(paths.probs, probs, CLASSES, (8, 8), "softmax")
    data = np.load(paths.probs)
    assert data["probs"].dtype == np.float16 and np.allclose(data["probs"], probs, atol=1e-3)
    assert data["classes"].tolist() == CLASSES and data["size"].tolist() == [8, 8] and str(data["kind"]) == "softmax"
    assert paths.relative(tmp_path) == {"mask": "masks/sub/x y.png", "probs": "probs/sub/x y.npz"}


def test_cam_heatmap_is_hot_where_the_cam_is_high() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    cam = np.zeros((4, 4), np.float32)
    cam[0, 0] = 1.0
    heat = cam_heatmap(image, cam, alpha=1.0)
    assert heat[0, 0, 0] > 100 and heat[0, 0, 2] < 50  # jet: 1 is red
    assert heat[3, 3, 2] > 100 and heat[3, 3, 0] < 50  # 0 is blue


def test_remove_stale_temporaries_touches_only_the_given_names(tmp_path: Path) -> None:
    masks = tmp_path / "masks" / "sub"
    masks.mkdir(parents=True)
    mine = masks / ".a.0123456789ab.tmp.png"
    other = masks / ".b.0123456789ab.tmp.png"
    keep = masks / ".a.png"
    for p in (mine, other, keep):
        p.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path, {"sub/a"}) == 1
    assert not mine.exists() and other.exists() and keep.exists()
