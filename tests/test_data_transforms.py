"""Training views and the validation transform keep image, mask and crop box consistent."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _data_helpers import write_voc_masks

from seco_deploy.config import DataConfig
from seco_deploy.data.datasets import open_dataset
from seco_deploy.data.palette import VOC_PALETTE
from seco_deploy.data.transforms import (
    EvalDataset,
    EvalTransform,
    TrainDataset,
    TrainViews,
    color_jitter,
    eval_collate,
    item_rng,
    main_crop,
    normalize,
    random_resized_crop_box,
    solarize,
)
from seco_deploy.data.workers import worker_init_fn

MEAN = np.array(DataConfig().mean, dtype=np.float32)[:, None, None]
STD = np.array(DataConfig().std, dtype=np.float32)[:, None, None]


def _denormalize(chw: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((chw * STD + MEAN) * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def _labelled_scene(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A mask of rectangles (classes 1..5 on 0) and an image painting each class its palette colour."""
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[h // 8 : h // 2, w // 10 : w // 3] = 1
    mask[h // 3 : 3 * h // 4, w // 2 : 9 * w // 10] = 2
    mask[3 * h // 5 :, : w // 4] = 3
    mask[: h // 5, 2 * w // 3 :] = 4
    mask[4 * h // 5 :, 2 * w // 5 : 3 * w // 5] = 5
    return VOC_PALETTE[mask].copy(), mask


@pytest.mark.parametrize("shape", [(40, 60), (90, 70), (300, 200)])
def test_main_view_image_mask_and_box_agree(shape: tuple[int, int]) -> None:
    image, mask = _labelled_scene(*shape)
    cfg = DataConfig(crop_size=64, scale_range=(0.5, 2.0))
    views = TrainViews(cfg)
    for seed in range(12):
        out = views(image, mask, np.random.default_rng(seed))
        crop, crop_mask, (y0, y1, x0, x1) = _denormalize(out["image"]), out["mask"], out["img_box"].tolist()
        assert out["image"].shape == out["global_view"].shape == out["local_view"].shape == (3, 64, 64)
        assert out["img_box"].dtype == np.int64 and crop_mask.dtype == np.uint8
        assert 0 <= y0 < y1 <= 64 and 0 <= x0 < x1 <= 64
        inside = np.zeros((64, 64), dtype=bool)
        inside[y0:y1, x0:x1] = True
        assert (crop_mask[~inside] == 255).all() and (crop[~inside] == 0).all()
        assert (crop_mask[inside] != 255).all()
        # Away from label edges, every pixel shows the colour of its label.
        labels = np.where(inside, crop_mask, 0)
        uniform = (cv2.erode(labels, np.ones((3, 3), np.uint8)) == cv2.dilate(labels, np.ones((3, 3), np.uint8)))
        interior = uniform & cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        interior[[0, -1], :] = interior[:, [0, -1]] = False  # the crop edge has unseen neighbours
        assert interior.sum() > 0
        diff = np.abs(crop[interior].astype(int) - VOC_PALETTE[crop_mask[interior]].astype(int))
        assert diff.max() <= 2, f"seed {seed}: image and mask disagree by {diff.max()}"


def test_main_crop_box_matches_scaled_size() -> None:
    image, mask = _labelled_scene(30, 50)
    for seed in range(20):
        crop, crop_mask, box = main_crop(image, mask, 64, (0.5, 1.5), np.random.default_rng(seed))
        y0, y1, x0, x1 = box.tolist()
        # Recompute the draw to know the scaled size: box extent = min(64, scaled side).
        ratio = np.random.default_rng(seed).uniform(0.5, 1.5)
        assert y1 - y0 == min(64, int(30 * ratio)) and x1 - x0 == min(64, int(50 * ratio))
        assert crop.shape == (64, 64, 3) and crop_mask is not None


def test_flip_moves_image_and_mask_together() -> None:
    image, mask = _labelled_scene(64, 64)
    seen_flip = seen_plain = False
    for seed in range(16):
        crop, crop_mask, _ = main_crop(image, mask, 64, (1.0, 1.0), np.random.default_rng(seed))
        if np.array_equal(crop_mask, mask):
            seen_plain = True
            np.testing.assert_array_equal(crop, image)
        elif np.array_equal(crop_mask, mask[:, ::-1]):
            seen_flip = True
            np.testing.assert_array_equal(crop, image[:, ::-1])
        else:
            raise AssertionError("at scale 1 and crop = image size the crop must be the image or its mirror")
    assert seen_flip and seen_plain


def test_views_are_deterministic_under_a_generator() -> None:
    image, mask = _labelled_scene(50, 80)
    views = TrainViews(DataConfig(crop_size=48))
    a = views(image, mask, item_rng(3, 1, 7))
    b = views(image, mask, item_rng(3, 1, 7))
    c = views(image, mask, item_rng(3, 2, 7))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_global_view_size_sets_the_second_views_side_only() -> None:
    image, mask = _labelled_scene(50, 80)
    same = TrainViews(DataConfig(crop_size=48))(image, mask, item_rng(0, 0, 0))
    small = TrainViews(DataConfig(crop_size=48, global_view_size=32))(image, mask, item_rng(0, 0, 0))
    assert same["global_view"].shape == (3, 48, 48) and small["global_view"].shape == (3, 32, 32)
    for key in ("image", "local_view", "img_box", "mask"):  # the same draws: the other views are unchanged
        np.testing.assert_array_equal(same[key], small[key])


def test_local_view_keeps_the_main_crop_geometry() -> None:
    # A gray pattern: hue and saturation changes leave it gray, so luma stays comparable.
    y, x = np.mgrid[0:80, 0:80]
    gray = (((y // 10) + (x // 10)) % 2 * 160 + 40).astype(np.uint8)
    image = np.repeat(gray[..., None], 3, axis=2)
    views = TrainViews(DataConfig(crop_size=64))
    for seed in range(8):
        out = views(image, None, np.random.default_rng(seed))
        main = out["image"].mean(0).ravel()
        local = out["local_view"].mean(0).ravel()
        assert np.corrcoef(main, local)[0, 1] > 0.7
        assert (out["mask"] == 255).all()


def test_photometric_ops() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert color_jitter(image, rng).shape == image.shape
    np.testing.assert_array_equal(solarize(np.array([[[0, 127, 128]]], np.uint8)), [[[0, 127, 127]]])
    # Zero jitter is the identity.
    same = color_jitter(image, np.random.default_rng(1), brightness=0, contrast=0, saturation=0, hue=0)
    np.testing.assert_array_equal(same, image)


def test_normalize_matches_formula() -> None:
    image = np.array([[[0, 128, 255]]], dtype=np.uint8)
    out = normalize(image, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    np.testing.assert_allclose(out[:, 0, 0], [(0 - 0.5) / 0.25, (128 / 255 - 0.5) / 0.5, (1 - 0.5) / 1.0], atol=1e-6)


def test_random_resized_crop_box_stays_inside() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        top, left, ch, cw = random_resized_crop_box(40, 100, (0.4, 1.0), rng)
        assert 0 <= top and top + ch <= 40 and 0 <= left and left + cw <= 100 and ch > 0 and cw > 0


def test_train_dataset_tensors_and_worker_independence(tmp_path: Path) -> None:
    write_voc_masks(tmp_path)
    seg = open_dataset(tmp_path, "train")
    cfg = DataConfig(crop_size=32, num_workers=0)
    ds = TrainDataset(seg, cfg, seed=5)
    item = ds[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 32)
    assert item["img_box"].dtype == torch.int64 and item["mask"].dtype == torch.uint8
    assert item["tags"].shape == (20,) and item["name"] == "2007_000001"
    again = ds[(0, 0)]
    assert torch.equal(item["image"], again["image"])
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["global_view"], item["global_view"])
    ds.set_epoch(0)
    serial = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0)))
    parallel = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, worker_init_fn=worker_init_fn)))
    for key in ("image", "global_view", "local_view", "img_box", "mask", "tags"):
        assert torch.equal(serial[key], parallel[key]), key


def test_eval_transform_and_dataset(tmp_path: Path) -> None:
    write_voc_masks(tmp_path)
    seg = open_dataset(tmp_path, "train")
    cfg = DataConfig(crop_size=48)
    out = EvalTransform(cfg)(seg[0].image)
    assert out.shape == (3, 48, 48) and out.dtype == np.float32
    ds = EvalDataset(seg, cfg)
    batch = eval_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 48, 48) and batch["tags"].shape == (2, 20)
    assert [m.shape for m in batch["mask"]] == [(24, 32), (24, 32)] and batch["size"] == [(24, 32), (24, 32)]


def test_context_mask_is_cut_like_the_mask_and_costs_no_draws() -> None:
    rng_image = np.random.default_rng(3)
    image = rng_image.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    mask = rng_image.integers(0, 4, (40, 56), dtype=np.uint8)
    context = ((mask == 2) * 1 + (mask == 3) * 2).astype(np.uint8)  # a function of the mask, pixel by pixel
    views = TrainViews(DataConfig(crop_size=32))
    plain = views(image, mask, np.random.default_rng(7))
    both = views(image, mask, np.random.default_rng(7), context)
    for key in ("image", "global_view", "local_view", "img_box", "mask"):
        assert np.array_equal(plain[key], both[key]), key
    inside = both["mask"] != 255
    expected = ((both["mask"] == 2) * 1 + (both["mask"] == 3) * 2).astype(np.uint8)
    assert np.array_equal(both["context"][inside], expected[inside])
    assert (both["context"][~inside] == 255).all()
    assert (plain["context"][inside] == 0).all()
