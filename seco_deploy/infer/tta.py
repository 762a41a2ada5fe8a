"""Test-time augmentation: the network inputs of a batch, and the fusion of their outputs.

Sizes (:func:`input_size`): at scale s an image is resized to the base size B times s (square, as
in training; or ``resize="keep"``: long side B x s, aspect ratio kept), sides rounded to multiples
of the patch size p by :func:`seco_deploy.cam.scaled_size`; a static export fixes the size.

Inputs (:class:`Normaliser`): uint8 images -> float ``(x - 255 mean) / (255 std)`` at that size
(bilinear, antialiased when shrinking), with their horizontal flips as images B..2B-1.

Fusion (method §3.1, §3.2):
- masks (:func:`fuse_seg`): per scale, logits of the image plus the un-flipped flip's; per image,
  the maximum over scales of the logits upsampled to the original size. Only the channels of
  :func:`mask_candidates` can hold the argmax, so masks need only those upsampled;
- CAMs: per scale :func:`seco_deploy.cam.fuse_flip` at the size of scale 1, summed over scales,
  :func:`seco_deploy.cam.normalise_cam`; image logits are averaged over scales and flips.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from seco_deploy.cam import scaled_size
from seco_deploy.infer.refine import argmax_uint8

__all__ = ["Normaliser", "fuse_seg", "fused_masks", "input_size", "mask_candidates", "stack_runs"]

# How far, relative to the logits' magnitude, a class must lie below another at every corner of a
# cell to be ruled out: float32 bilinear weights and sums are exact to a few ulp (1e-7 relative),
# so a margin of 1e-5 leaves the argmax of the full computation unchanged.
CANDIDATE_MARGIN = 1e-5


def input_size(hw: tuple[int, int], scale: float, base: int, patch: int, resize: str = "square",
               fixed: tuple[int, int] | None = None) -> tuple[int, int]:
    """The network input (h, w) of an image of size ``hw`` at one scale (see the module docstring)."""
    if fixed is not None:
        return fixed
    if resize == "square":
        return scaled_size(base, base, scale, patch)
    h, w = hw
    long = max(h, w)
    return scaled_size(round(base * h / long), round(base * w / long), scale, patch)


def stack_runs(images: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """uint8 (H, W, 3) CPU images, equal sizes contiguous -> contiguous float (n, 3, H, W) 0-255 runs on ``device``."""
    runs, i = [], 0
    while i < len(images):
        j = i + 1
        while j < len(images) and images[j].shape == images[i].shape:
            j += 1
        stack = images[i] if j == i + 1 else torch.stack(list(images[i:j]))
        stack = stack.view(-1, *images[i].shape).to(device, non_blocking=True)
        runs.append(stack.permute(0, 3, 1, 2).float().contiguous())  # NCHW: resizing it is 1.5x faster
        i = j
    return runs


class Normaliser:
    """``(x - 255 mean) / (255 std)`` on ``device`` as one fused multiply-add (see the module docstring)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        std_t = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0
        self.scale = 1.0 / std_t
        self.shift = -torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0 / std_t

    def __call__(self, runs: list[torch.Tensor], size: tuple[int, int], flip: bool = False) -> torch.Tensor:
        """Runs of float images -> the normalised network input (B or 2B, 3, h, w), flips written in place."""
        parts = [
            r if tuple(r.shape[2:]) == size
            else F.interpolate(r, size=size, mode="bilinear", align_corners=False, antialias=True)
            for r in runs
        ]
        x = parts[0] if len(parts) == 1 else torch.cat(parts)
        b = x.shape[0]
        if not flip:
            return torch.addcmul(self.shift, x, self.scale)
        out = x.new_empty((2 * b, *x.shape[1:]))
        torch.addcmul(self.shift, x, self.scale, out=out[:b])
        reverse = torch.arange(size[1] - 1, -1, -1, device=x.device)
        torch.index_select(out[:b], 3, reverse, out=out[b:])
        return out


def fuse_seg(segs: Sequence[torch.Tensor], images: slice, size: tuple[int, int]) -> torch.Tensor:
    """(n, K, H, W) logits of the ``images`` of a batch, all of original size ``size``: the maximum
    over scales of their flip-summed logits (``segs``: one (B, K, h, w) per scale) upsampled to ``size``."""
    logits = None
    for seg in segs:
        up = F.interpolate(seg[images], size=size, mode="bilinear", align_corners=False)
        logits = up if logits is None else torch.maximum(logits, up, out=logits)
    if logits is None:
        raise ValueError("fuse_seg needs at least one scale")
    return logits


def mask_candidates(segs: Sequence[torch.Tensor], images: slice) -> torch.Tensor:
    """(n, K) bool: per image of ``segs[s][images]``, the channels that can be the argmax of
    :func:`fuse_seg` anywhere.

    Bilinear upsampling makes every output value a convex combination of the four corners of one
    cell (two adjacent rows by two adjacent columns) of the low-resolution logits. In a cell let
    ``L = max_j min_corners a_j`` (some class j is at least L at every corner) and ``U_k =
    max_corners a_k``: if ``U_k < L``, class k lies below class j everywhere the cell reaches. A
    class for which that holds in every cell at every scale is below some class at every output
    pixel after the maximum over scales too, so it is never the argmax (ties included): the
    argmax over the other channels, mapped back to their indices, is the argmax over all. The
    margin :data:`CANDIDATE_MARGIN` covers float rounding. (Upsampling a subset of the channels
    may round differently in the last bit from upsampling all of them, which can move only pixels
    where two kept classes tie to the last bit.)
    """
    keep = None
    for seg in segs:
        a = seg[images].float()  # (n, K, h, w)
        cell = (min(2, a.shape[-2]), min(2, a.shape[-1]))
        high = F.max_pool2d(a, kernel_size=cell, stride=1)  # U_k per cell
        low = -F.max_pool2d(-a, kernel_size=cell, stride=1)  # min over the corners per class
        floor = low.amax(dim=1, keepdim=True)  # L per cell
        margin = CANDIDATE_MARGIN * (float(a.abs().max()) + 1.0) if a.numel() else 0.0
        alive = (high >= floor - margin).flatten(2).any(dim=2)  # (n, K)
        keep = alive if keep is None else keep | alive
    if keep is None:
        raise ValueError("mask_candidates needs at least one scale")
    return keep


def fused_masks(segs: Sequence[torch.Tensor], images: slice, size: tuple[int, int]) -> np.ndarray:
    """uint8 (n, H, W) masks of ``images`` (all of original size ``size``): the argmax of
    :func:`fuse_seg`, over the channels of :func:`mask_candidates` only.

    On the CPU upsampling and argmax cost in proportion to the channels: when the images have few
    candidates (at most half the classes on average), each image is done alone over its own
    (``benchmarks/mask_candidates.py``: 1.5x faster on the demo's trained 7-class model, 3.6
    candidates an image; 5.4x for 500 x 375 masks of 21 classes with 3); otherwise, as for an
    untrained model whose logits are all alike, and always on a GPU, the images are done together
    over every class (one upsampling, one argmax). One candidate fills the mask with that class.
    """
    if segs and segs[0].device.type != "cpu":
        return argmax_uint8(fuse_seg(segs, images, size))
    alive = mask_candidates(segs, images)
    n, k = alive.shape
    if int(alive.sum()) * 2 > n * k:
        return argmax_uint8(fuse_seg(segs, images, size))
    out = np.empty((n, *size), dtype=np.uint8)
    first = images.start or 0
    for j in range(n):
        keep = torch.nonzero(alive[j]).flatten()
        if keep.numel() == 1:
            out[j] = int(keep[0])
            continue
        one = slice(first + j, first + j + 1)
        picked = argmax_uint8(fuse_seg([seg[:, keep] for seg in segs], one, size))[0]
        out[j] = keep.to(torch.uint8).numpy()[picked]
    return out
