"""Training views and the validation transform (method §2.0), numpy/OpenCV, seeded.

Training (:class:`TrainViews`), for an RGB uint8 image of size (h, w) and crop size S:

1. **Main crop.** Rescale by r ~ U(``data.scale_range``) to (int(r h), int(r w)), flip
   horizontally with p 0.5, pad with zeros to at least S x S at a random offset and cut a
   random S x S window. ``img_box = (y0, y1, x0, x1)`` is where real pixels lie in the crop;
   the mask is 255 outside it. The three steps are one affine warp from the crop back to the
   source (bilinear for the image, nearest for the mask), so the cost is O(S^2) whatever the
   source size and image and mask stay aligned pixel for pixel.
2. **Second global view** of the source image: random-resized crop (area fraction
   ~ U(``data.global_crop_scale``), aspect ratio log-uniform in [3/4, 4/3], torchvision's
   10-try rule with a centre-crop fallback) resized to G x G (``data.global_view_size``; 0, the
   default: G = S), flip p 0.5, colour jitter
   (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1; random order) with p 0.8, grayscale
   p 0.2, Gaussian blur (sigma ~ U(0.1, 2)) p 0.1, solarise (v >= 128 -> 255 - v) p 0.2.
3. **Strong local view**: the main crop, not moved (the teacher's local crops are cut at the
   same positions as the student's), with colour jitter p 0.8, grayscale p 0.2, blur p 0.5.
4. **Normalise**: (v / 255 - mean) / std per channel, channels first.

Every random draw comes from the ``np.random.Generator`` passed in, in a fixed order, so the
same generator state gives the same views. :class:`TrainDataset` derives one generator per
item from ``(seed, epoch, index)``, which makes batches independent of the number of workers.

Validation (:class:`EvalTransform`): resize to S x S (bilinear) and normalise; the mask is
kept at the original size for scoring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from seco_deploy.config import DataConfig
from seco_deploy.data.datasets import SegDataset

__all__ = [
    "EvalDataset",
    "EvalTransform",
    "TrainDataset",
    "TrainViews",
    "color_jitter",
    "eval_collate",
    "gaussian_blur",
    "item_rng",
    "main_crop",
    "normalize",
    "random_resized_crop_box",
    "solarize",
    "to_grayscale",
]

_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_IDENTITY = np.arange(256, dtype=np.float32)


# ---------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class CropGeometry:
    """Where the main crop comes from: the inverse affine map of crop pixels to source pixels and
    ``box`` (y0, y1, x0, x1), the crop pixels that show the image (outside it: padding)."""

    matrix: np.ndarray  # float64 (2, 3), for cv2.warpAffine with WARP_INVERSE_MAP
    box: np.ndarray  # int64 (4,)
    size: int

    def warp(self, array: np.ndarray, nearest: bool, fill: int) -> np.ndarray:
        """``array`` (H, W[, 3]) cut to the crop (bilinear, or nearest for masks); ``fill`` outside the box."""
        flags = (cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
        out = cv2.warpAffine(array, self.matrix, (self.size, self.size), flags=flags,
                             borderMode=cv2.BORDER_REPLICATE)
        y0, y1, x0, x1 = (int(v) for v in self.box)
        outside = np.ones((self.size, self.size), dtype=bool)
        outside[y0:y1, x0:x1] = False
        out[outside] = fill
        return out


def crop_geometry(h: int, w: int, crop_size: int, scale_range: tuple[float, float],
                  rng: np.random.Generator) -> CropGeometry:
    """Draw the main crop of an (h, w) image: rescale, flip, pad and crop (see the module doc)."""
    size = int(crop_size)
    ratio = float(rng.uniform(scale_range[0], scale_range[1]))
    hs, ws = max(1, int(h * ratio)), max(1, int(w * ratio))
    flip = bool(rng.random() < 0.5)
    big_h, big_w = max(size, hs), max(size, ws)
    pad_y = int(rng.integers(0, big_h - hs + 1))
    pad_x = int(rng.integers(0, big_w - ws + 1))
    start_y = int(rng.integers(0, big_h - size + 1))
    start_x = int(rng.integers(0, big_w - size + 1))
    y0, y1 = max(pad_y - start_y, 0), min(size, pad_y + hs - start_y)
    x0, x1 = max(pad_x - start_x, 0), min(size, pad_x + ws - start_x)
    box = np.array([y0, y1, x0, x1], dtype=np.int64)
    # Crop pixel (u, v) shows scaled pixel (u + start_x - pad_x, v + start_y - pad_y), flipped
    # in x when ``flip``; a scaled pixel xs shows source position (xs + 0.5) * w / ws - 0.5.
    sx, sy = w / ws, h / hs
    if flip:
        ax, bx = -sx, (ws - 0.5 - start_x + pad_x) * sx - 0.5
    else:
        ax, bx = sx, (start_x - pad_x + 0.5) * sx - 0.5
    ay, by = sy, (start_y - pad_y + 0.5) * sy - 0.5
    return CropGeometry(np.array([[ax, 0.0, bx], [0.0, ay, by]], dtype=np.float64), box, size)


def main_crop(
    image: np.ndarray,
    mask: np.ndarray | None,
    crop_size: int,
    scale_range: tuple[float, float],
    rng: np.random.Generator,
    ignore_index: int = 255,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Rescale, flip and pad-crop ``image`` (and ``mask``) to ``crop_size``; see the module doc.

    Returns ``(crop uint8 (S, S, 3), mask crop uint8 (S, S) or None, img_box int64 (4,))``;
    outside ``img_box`` the crop is 0 and the mask is ``ignore_index``.
    """
    geometry = crop_geometry(image.shape[0], image.shape[1], crop_size, scale_range, rng)
    crop = geometry.warp(image, nearest=False, fill=0)
    mask_crop = geometry.warp(mask, nearest=True, fill=ignore_index) if mask is not None else None
    return crop, mask_crop, geometry.box


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    rng: np.random.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop geometry: ``(top, left, crop_h, crop_w)``.

    Up to 10 tries of area fraction ~ U(scale) and log-uniform aspect ratio; the first that
    fits wins. Otherwise a centre crop with the aspect ratio clamped to ``ratio``.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * float(rng.uniform(scale[0], scale[1]))
        aspect = math.exp(float(rng.uniform(log_lo, log_hi)))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= width and 0 < ch <= height:
            top = int(rng.integers(0, height - ch + 1))
            left = int(rng.integers(0, width - cw + 1))
            return top, left, ch, cw
    in_ratio = width / height
    if in_ratio < ratio[0]:
        cw, ch = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = height, int(round(height * ratio[1]))
    else:
        cw, ch = width, height
    return (height - ch) // 2, (width - cw) // 2, ch, cw


# ---------------------------------------------------------------------------- photometric
def _lut(values: np.ndarray) -> np.ndarray:
    return np.clip(values, 0, 255).astype(np.uint8)


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def color_jitter(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.1,
) -> np.ndarray:
    """torchvision-style ColorJitter on uint8 RGB, factors and order drawn from ``rng``.

    brightness b: v * b; contrast c: v * c + mean(gray) * (1 - c); saturation s:
    v * s + gray * (1 - s); hue h: rotate the hue by h turns. b, c, s ~ U(1 - x, 1 + x),
    h ~ U(-hue, hue); results are clipped to [0, 255] after each step.
    """
    factors = (
        float(rng.uniform(max(0.0, 1 - brightness), 1 + brightness)),
        float(rng.uniform(max(0.0, 1 - contrast), 1 + contrast)),
        float(rng.uniform(max(0.0, 1 - saturation), 1 + saturation)),
        float(rng.uniform(-hue, hue)),
    )
    out = image
    for op in rng.permutation(4).tolist():
        factor = factors[op]
        if op == 0:
            out = cv2.LUT(out, _lut(_IDENTITY * factor))
        elif op == 1:
            mean = float(_gray(out).mean())
            out = cv2.LUT(out, _lut(_IDENTITY * factor + mean * (1.0 - factor)))
        elif op == 2:
            gray3 = cv2.cvtColor(_gray(out), cv2.COLOR_GRAY2RGB)
            out = cv2.addWeighted(out, factor, gray3, 1.0 - factor, 0.0)
        elif int(round(factor * 256)) % 256:
            hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV_FULL)
            shift = int(round(factor * 256)) % 256
            hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 256).astype(np.uint8)
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    return out


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """RGB -> luma (0.299 R + 0.587 G + 0.114 B) repeated on three channels."""
    return cv2.cvtColor(_gray(image), cv2.COLOR_GRAY2RGB)


def gaussian_blur(image: np.ndarray, rng: np.random.Generator, sigma: tuple[float, float] = (0.1, 2.0)) -> np.ndarray:
    """Gaussian blur with sigma ~ U(sigma) (the reference's PIL radius range)."""
    s = float(rng.uniform(sigma[0], sigma[1]))
    return cv2.GaussianBlur(image, (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT_101)


def solarize(image: np.ndarray, threshold: int = 128) -> np.ndarray:
    """Invert every value >= ``threshold`` (PIL's ImageOps.solarize)."""
    lut = np.where(np.arange(256) >= threshold, 255 - np.arange(256), np.arange(256)).astype(np.uint8)
    return cv2.LUT(image, lut)


def _strong_colour(
    image: np.ndarray, rng: np.random.Generator, p_blur: float, p_solarize: float
) -> np.ndarray:
    """Jitter p 0.8, grayscale p 0.2, blur p ``p_blur``, solarise p ``p_solarize`` (in that order)."""
    out = image
    if rng.random() < 0.8:
        out = color_jitter(out, rng)
    if rng.random() < 0.2:
        out = to_grayscale(out)
    if rng.random() < p_blur:
        out = gaussian_blur(out, rng)
    if p_solarize > 0 and rng.random() < p_solarize:
        out = solarize(out)
    return out


def normalize(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W) with (v / 255 - mean) / std per channel."""
    out = np.empty((3, image.shape[0], image.shape[1]), dtype=np.float32)
    for c in range(3):
        table = ((_IDENTITY / 255.0 - mean[c]) / std[c]).astype(np.float32)
        np.take(table, image[..., c], out=out[c], mode="clip")
    return out


# ---------------------------------------------------------------------------- views
class TrainViews:
    """Make the training views of one image; ``views(image, mask, rng) -> dict`` of numpy arrays.

    Keys: ``image``, ``local_view`` float32 (3, S, S), ``global_view`` (3, G, G); ``img_box`` int64 (4,)
    ``(y0, y1, x0, x1)``; ``mask`` uint8 (S, S), 255 outside the box and everywhere when the
    image has no mask; ``context`` uint8 (S, S), the context mask cut the same way (0 where the
    set labels no context, 255 outside the box). Masks are for measuring (the training chain's
    figures), never for training losses; they cost no random draws, so views are the same with
    or without them.
    """

    def __init__(self, data_cfg: DataConfig) -> None:
        self.crop_size = int(data_cfg.crop_size)
        self.scale_range = tuple(data_cfg.scale_range)
        self.global_crop_scale = tuple(data_cfg.global_crop_scale)
        self.global_view_size = data_cfg.global_view_side
        self.mean = tuple(data_cfg.mean)
        self.std = tuple(data_cfg.std)
        self.ignore_index = int(data_cfg.ignore_index)

    def global_view(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The second global view as uint8 (G, G, 3), before normalisation."""
        top, left, ch, cw = random_resized_crop_box(image.shape[0], image.shape[1], self.global_crop_scale, rng)
        size = self.global_view_size
        view = cv2.resize(image[top : top + ch, left : left + cw], (size, size), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.5:
            view = np.ascontiguousarray(view[:, ::-1])
        return _strong_colour(view, rng, p_blur=0.1, p_solarize=0.2)

    def local_view(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The strong local view of the main crop as uint8 (S, S, 3), same geometry."""
        return _strong_colour(crop, rng, p_blur=0.5, p_solarize=0.0)

    def __call__(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator,
                 context: np.ndarray | None = None) -> dict[str, np.ndarray]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"TrainViews expects an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        if mask is not None and mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
        if context is not None and context.shape != image.shape[:2]:
            raise ValueError(f"context shape {context.shape} does not match image shape {image.shape[:2]}")
        geometry = crop_geometry(image.shape[0], image.shape[1], self.crop_size, self.scale_range, rng)
        crop = geometry.warp(image, nearest=False, fill=0)
        local = self.local_view(crop, rng)
        global_ = self.global_view(image, rng)
        empty = np.full(image.shape[:2], self.ignore_index, dtype=np.uint8)
        mask_crop = geometry.warp(mask if mask is not None else empty, nearest=True, fill=self.ignore_index)
        context_crop = geometry.warp(context if context is not None else np.zeros_like(empty), nearest=True,
                                     fill=self.ignore_index)
        return {
            "image": normalize(crop, self.mean, self.std),
            "global_view": normalize(global_, self.mean, self.std),
            "local_view": normalize(local, self.mean, self.std),
            "img_box": geometry.box,
            "mask": mask_crop,
            "context": context_crop,
        }


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for item ``index`` of ``epoch``: independent of workers and of order."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]))


class TrainDataset(Dataset):
    """Torch dataset of training views: ``ds[i]`` (or ``ds[(epoch, i)]``) -> dict.

    Values: ``image``, ``local_view`` float32 (3, S, S), ``global_view`` (3, G, G), ``img_box`` int64
    (4,), ``mask`` and ``context`` uint8 (S, S), ``tags`` float32 (C,) tensors and ``name`` str. The random
    draws of item i come from :func:`item_rng` ``(seed, epoch, i)``; call :meth:`set_epoch`
    before iterating a new epoch (DataLoader workers copy the dataset when the iterator starts,
    so use ``persistent_workers=False``, or index with ``(epoch, i)`` pairs from a sampler).
    """

    def __init__(self, seg_dataset: SegDataset, data_cfg: DataConfig, seed: int = 0) -> None:
        self.dataset = seg_dataset
        self.views = TrainViews(data_cfg)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (self.epoch, int(key))
        sample = self.dataset[index]
        views = self.views(sample.image, sample.mask, item_rng(self.seed, epoch, index), sample.context)
        out: dict[str, Any] = {key_: torch.from_numpy(value) for key_, value in views.items()}
        out["tags"] = torch.from_numpy(sample.tags.astype(np.float32))
        out["name"] = sample.name
        return out


class EvalTransform:
    """Validation input: resize to S x S (bilinear) and normalise -> float32 (3, S, S)."""

    def __init__(self, data_cfg: DataConfig) -> None:
        self.crop_size = int(data_cfg.crop_size)
        self.mean = tuple(data_cfg.mean)
        self.std = tuple(data_cfg.std)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        size = self.crop_size
        resized = image if image.shape[:2] == (size, size) else cv2.resize(
            image, (size, size), interpolation=cv2.INTER_LINEAR
        )
        return normalize(resized, self.mean, self.std)


class EvalDataset(Dataset):
    """Torch dataset for validation: ``image`` float32 (3, S, S), ``mask`` uint8 (H, W) at the
    original size (absent when the dataset has none), ``tags`` float32 (C,), ``size`` (H, W)
    and ``name``. Batch it with :func:`eval_collate` (masks differ in size)."""

    def __init__(self, seg_dataset: SegDataset, data_cfg: DataConfig) -> None:
        self.dataset = seg_dataset
        self.transform = EvalTransform(data_cfg)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        out: dict[str, Any] = {
            "image": torch.from_numpy(self.transform(sample.image)),
            "tags": torch.from_numpy(sample.tags.astype(np.float32)),
            "size": tuple(sample.image.shape[:2]),
            "name": sample.name,
        }
        if sample.mask is not None:
            out["mask"] = torch.from_numpy(sample.mask)
        return out


def eval_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``image`` and ``tags``; keep ``mask``, ``size`` and ``name`` as lists."""
    out: dict[str, Any] = {
        "image": torch.stack([b["image"] for b in batch]),
        "tags": torch.stack([b["tags"] for b in batch]),
        "size": [b["size"] for b in batch],
        "name": [b["name"] for b in batch],
    }
    if all("mask" in b for b in batch):
        out["mask"] = [b["mask"] for b in batch]
    return out

