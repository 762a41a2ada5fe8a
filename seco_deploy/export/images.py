"""Images for calibration and image-level parity: read and preprocessed as the predictor does.

``image_files(DIR)``: the images of a folder (``JPEGImages/`` of a VOC-layout set, else the folder
itself, recursively); ``mask_for(image)``: its ``SegmentationClass[Aug]/NAME.png`` when the set
has one; ``preprocess``: resize square to the crop size (bilinear, antialias) and normalise with
the card's mean/std, as :class:`seco_deploy.infer.tta.Normaliser` does at scale 1;
``calibration_set`` / ``labelled_set``: evenly spread picks of those files, preprocessed, with
the SHA-256 of the sorted per-file hashes (what the model card records).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seco_deploy.runtime.card import ModelCard

__all__ = ["CalibrationSet", "calibration_set", "image_files", "mask_for", "preprocess", "spread"]

MASK_FOLDERS = ("SegmentationClassAug", "SegmentationClass")


@dataclass
class CalibrationSet:
    """Preprocessed inputs (N, 3, S, S) float32, the files they came from and their hash."""

    files: list[Path]
    inputs: torch.Tensor
    sha256: str
    masks: torch.Tensor | None = None  # (N, S, S) int64 class indices (255 ignore) when every image has one

    def batches(self, size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self.inputs), size):
            yield np.ascontiguousarray(self.inputs[start : start + size].numpy())


def image_files(folder: str | Path, option: str = "--calib") -> list[Path]:
    """The images of ``folder``: ``JPEGImages/`` of a VOC-layout set when present, else the folder's own
    image files (recursively), sorted by path. ``option`` names the folder in errors."""
    from seco_deploy.data.io import IMAGE_EXTENSIONS

    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{option} {root} is not a folder; give a folder of images (or a VOC-layout dataset)")
    base = root / "JPEGImages" if (root / "JPEGImages").is_dir() else root
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"{option} {root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def preprocess(image: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) float32, as the predictor's square resize and normalisation."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    if tuple(x.shape[2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std).view(1, 3, 1, 1) * 255.0
    return ((x - m) / s)[0]


def calibration_set(files: Sequence[Path], card: ModelCard, count: int) -> CalibrationSet:
    """The first ``count`` of ``files`` (evenly spread over the list when it is longer), read with
    :func:`seco_deploy.data.io.read_image` and preprocessed at the card's crop size."""
    from seco_deploy.data.io import file_sha256, read_image, read_mask

    if not files:
        raise ValueError("the calibration set is empty")
    chosen = spread(files, count)
    inputs = torch.stack([preprocess(read_image(p), card.crop_size, card.mean, card.std) for p in chosen])
    masks = None
    paths = [mask_for(p) for p in chosen]
    if all(m is not None for m in paths):
        masks = torch.stack([resize_mask(read_mask(m), card.crop_size) for m in paths if m is not None])
    digest = hashlib.sha256("\n".join(sorted(file_sha256(p) for p in chosen)).encode()).hexdigest()
    return CalibrationSet(chosen, inputs.contiguous(), digest, masks)


def spread(files: Sequence[Path], count: int) -> list[Path]:
    """``count`` of ``files`` evenly spread over the list (all of them when it is shorter)."""
    picks = np.linspace(0, len(files) - 1, num=min(count, len(files))).round().astype(int)
    return [Path(files[i]) for i in sorted(set(picks.tolist()))]


def mask_for(image: Path) -> Path | None:
    """``ROOT/SegmentationClass[Aug]/NAME.png`` for ``ROOT/JPEGImages/NAME.*``, when it exists."""
    if image.parent.name != "JPEGImages":
        return None
    for folder in MASK_FOLDERS:
        path = image.parent.parent / folder / f"{image.stem}.png"
        if path.is_file():
            return path
    return None


def resize_mask(mask: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) uint8 class indices -> (size, size) int64, nearest neighbour (255 stays ignore)."""
    m = torch.from_numpy(np.ascontiguousarray(mask))[None, None].float()
    return F.interpolate(m, size=(size, size), mode="nearest")[0, 0].long()
