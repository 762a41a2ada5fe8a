"""Refinement of predictions (method §3.3): dense CRF on masks, PAR or dense CRF on pseudo-labels.

- :func:`crf_mask`: masks with ``--crf``: the dense CRF (:data:`seco_deploy.model.crf.MASK_CRF`,
  the checkpoint's ``infer.crf_iters``) on the softmax of the fused logits, then argmax.
- :class:`PseudoRefiner`: pseudo-labels with ``--refine par``: PAR (the model's ``par_dilations``
  / ``par_iters``) on ``softmax([bkg_thre, kept CAMs])`` at up to the base size, then argmax;
  ``--refine crf``: the dense CRF with a unary from the label map
  (:data:`seco_deploy.model.crf.LABEL_CRF`, probability 0.7 on the label). Both choose only among
  background and the image's classes, so a class outside the tags never appears.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PseudoRefiner", "argmax_uint8", "crf_mask"]


def argmax_uint8(scores: torch.Tensor) -> np.ndarray:
    """Argmax over the channel axis of (K, H, W) or (N, K, H, W) scores as a uint8 (H, W) or (N, H, W) array.

    Ties go to the lowest index, as ``argmax`` does. On the CPU a running maximum over the K
    channels (K elementwise passes, multi-threaded) replaces the reduction over the channel axis,
    which is slower in PyTorch (5-10x) and single-threaded in NumPy (about 2x here for K = 7).
    """
    channel = scores.dim() - 3
    if channel not in (0, 1):
        raise ValueError(f"argmax_uint8 needs (K, H, W) or (N, K, H, W) scores, got shape {tuple(scores.shape)}")
    if scores.device.type != "cpu":
        return scores.argmax(channel).to(torch.uint8).cpu().numpy()
    scores = scores.float()
    best = scores.select(channel, 0).clone()
    index = torch.zeros(best.shape, dtype=torch.uint8)
    for k in range(1, scores.shape[channel]):
        score = scores.select(channel, k)
        index.masked_fill_(score > best, k)
        torch.maximum(best, score, out=best)
    return index.numpy()


def crf_mask(image: np.ndarray, probs: torch.Tensor, iters: int | None, implementation: str = "auto") -> np.ndarray:
    """Mask of the dense CRF on ``probs`` (K, H, W) over the uint8 RGB ``image`` (H, W, 3)."""
    from seco_deploy.model.crf import MASK_CRF, dense_crf

    params = MASK_CRF if iters is None else dataclasses.replace(MASK_CRF, iters=iters)
    return argmax_uint8(dense_crf(image, probs, params, implementation))


class PseudoRefiner:
    """``--refine par|crf`` for CAM pseudo-labels (see the module docstring)."""

    def __init__(self, refine: str, bkg_thre: float, base: int, par_dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24),
                 par_iters: int = 10, crf_implementation: str = "auto") -> None:
        self.refine = refine
        self.bkg_thre = bkg_thre
        self.base = base
        self.par_dilations, self.par_iters = tuple(par_dilations), par_iters
        self.crf_implementation = crf_implementation
        self._par: torch.nn.Module | None = None

    def __call__(self, mask: torch.Tensor, cam: torch.Tensor, labels: torch.Tensor, image: torch.Tensor,
                 pixels: np.ndarray) -> torch.Tensor:
        """Refined (H, W) label map from the unrefined ``mask``, normalised CAMs ``cam`` (C, H, W),
        image-level ``labels`` (C,), the float image (3, H, W) and its uint8 ``pixels`` (H, W, 3)."""
        present = torch.nonzero(labels > 0.5).flatten()
        if self.refine == "none" or present.numel() == 0:
            return mask
        keep = torch.cat([present.new_zeros(1), present + 1])  # channel -> class index
        if self.refine == "par":
            return keep[self._par_argmax(cam[present], image)]
        from seco_deploy.model.crf import LABEL_CRF, dense_crf, probs_from_labels

        local = torch.searchsorted(keep, mask.long().contiguous())
        probs = probs_from_labels(local, keep.numel(), gt_prob=0.7)
        refined = dense_crf(pixels, probs, LABEL_CRF, self.crf_implementation)
        return keep[refined.to(mask.device).argmax(0)]

    def _par_argmax(self, cams: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """PAR on softmax([bkg_thre, cams]) at up to the base size; the argmax channel (H, W)."""
        from seco_deploy.model.par import PAR

        if self._par is None:
            self._par = PAR(dilations=self.par_dilations, num_iter=self.par_iters).to(image.device)
        h, w = image.shape[1:]
        factor = min(1.0, self.base / max(h, w))
        small = (max(1, round(h * factor)), max(1, round(w * factor)))
        img = image[None] if small == (h, w) else F.interpolate(image[None], size=small, mode="bilinear",
                                                                 align_corners=False, antialias=True)
        scores = F.interpolate(cams[None], size=small, mode="bilinear", align_corners=False)
        scores = torch.cat([torch.full_like(scores[:, :1], self.bkg_thre), scores], dim=1)
        refined = self._par(img, torch.softmax(scores, dim=1))
        if small != (h, w):
            refined = F.interpolate(refined, size=(h, w), mode="bilinear", align_corners=False)
        return refined[0].argmax(0)
