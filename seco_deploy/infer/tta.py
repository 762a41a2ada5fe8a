"""Test-time augmentation: the network inputs of a batch, and the fusion of their outputs.

Sizes (:func:`input_size`): at scale s an image is resized to the base size B times s (square, as
in training; or ``resize="keep"``: long side B x s, aspect ratio kept), sides rounded to multiples
of the patch size p by :func:`seco_deploy.cam.scaled_size`; a static export fixes the size.

Inputs (:class:`Normaliser`): uint8 images -> float ``(x - 255 mean) / (255 std)`` at that size
(bilinear, antialiased when shrinking), with their horizontal flips as images B..2B-1.

Fusion (method §3.1, §3.2):
- masks (:func:`fuse_seg`): per scale, logits of the image plus the un-flipped flip's; per image,
  the maximum over scales of the logits upsampled to the original size;
- CAMs: per scale :func:`seco_deploy.cam.fuse_flip` at the size of scale 1, summed over scales,
  :func:`seco_deploy.cam.normalise_cam`; image logits are averaged over scales and flips.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from seco_deploy.cam import scaled_size

__all__ = ["Normaliser", "fuse_seg", "input_size", "stack_runs"]


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
