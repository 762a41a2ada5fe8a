"""PAR, pixel-adaptive refinement (method §2.9; from ToCo): affinity propagation of class maps.

For every pixel i and its 8 neighbours j at each dilation d (replicate padding at the border):

    a_ij = softmax_j( -mean_c (|I_c(j) - I_c(i)| / (std_j I_c(j) + 1e-8) / 0.3)^2 )
           + w_pos * softmax_j( -(dist_ij / (std_j dist_ij + 1e-8) / 0.3)^2 )

where ``std_j`` is the (unbiased) standard deviation over all 8 * len(dilations) neighbours of i
and ``dist_ij`` is ``d`` (``d * sqrt(2)`` on diagonals). Masks are then propagated ``num_iter``
times: ``m_i <- sum_j a_ij m_j``. Unlike the reference, the affinities are divided by
``1 + w_pos`` so each step is a weighted average (a constant mask stays constant); this scales
every channel alike and leaves the argmax unchanged.

Because every colour term is divided by its local standard deviation, PAR is invariant to a
per-channel affine change of the image: a normalised image gives the same affinities as the
de-normalised one. The affinity depends on the image only, so :meth:`PAR.affinity` is computed
once and :meth:`PAR.propagate` applied to any number of mask channels stacked together.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# The 8 neighbours, row-major: (dy, dx).
OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def neighbour_views(x: torch.Tensor, dilations: tuple[int, ...]) -> list[torch.Tensor]:
    """The 8 * len(dilations) neighbours of every pixel of ``x`` (N, C, H, W), replicate-padded.

    View ``k`` (order: dilation, then :data:`OFFSETS`) is (N, C, H, W) and holds at (y, x) the
    value at (y + dy * d, x + dx * d). The views share one padded copy of ``x``; nothing is stacked.
    """
    h, w = x.shape[-2:]
    pad = max(dilations)
    xp = F.pad(x, [pad, pad, pad, pad], mode="replicate")
    return [xp[:, :, pad + dy * d : pad + dy * d + h, pad + dx * d : pad + dx * d + w]
            for d in dilations for dy, dx in OFFSETS]


class PAR(nn.Module):
    """Pixel-adaptive refinement with the given dilations and iterations (see the module docstring)."""

    def __init__(
        self,
        dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24),
        num_iter: int = 10,
        w_colour: float = 0.3,
        w_pos: float = 0.01,
    ) -> None:
        super().__init__()
        if not dilations or min(dilations) < 1:
            raise ValueError(f"PAR dilations must be positive integers, got {dilations}")
        self.dilations = tuple(int(d) for d in dilations)
        self.num_iter = int(num_iter)
        self.w_colour = float(w_colour)
        self.w_pos = float(w_pos)
        dist = [d * (math.sqrt(2.0) if dy and dx else 1.0) for d in self.dilations for dy, dx in OFFSETS]
        pos = torch.tensor(dist)
        pos_aff = -((pos / (pos.std() + 1e-8) / self.w_colour) ** 2)
        self.register_buffer("pos_weight", torch.softmax(pos_aff, dim=0), persistent=False)

    def affinity(self, images: torch.Tensor) -> torch.Tensor:
        """Affinities (N, 1, K, H, W) of an image batch (N, 3, H, W); rows sum to 1.

        Computed neighbour by neighbour on views of one padded copy, never stacking the K
        neighbours of every channel (memory traffic); the standard deviation in two passes, as
        ``torch.std``.
        """
        images = images.float()
        views = neighbour_views(images, self.dilations)
        k = len(views)
        mean = torch.zeros_like(images)
        for view in views:
            mean.add_(view)
        mean.div_(k)
        var = torch.zeros_like(images)
        for view in views:
            dev = view - mean
            var.addcmul_(dev, dev)
        # 1 / ((std + 1e-8) * w_colour), per pixel and channel
        scale = var.div_(k - 1).sqrt_().add_(1e-8).mul_(self.w_colour).reciprocal_()
        logits = images.new_empty((images.shape[0], k, *images.shape[-2:]))
        for j, view in enumerate(views):
            z = (view - images).mul_(scale)
            logits[:, j] = z.mul_(z).mean(dim=1)
        aff = torch.softmax(logits.neg_(), dim=1)
        aff.add_(self.w_pos * self.pos_weight.to(aff.device).view(1, -1, 1, 1)).div_(1.0 + self.w_pos)
        return aff.unsqueeze(1)

    def propagate(self, aff: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Apply ``num_iter`` propagation steps to masks (N, M, H, W) with affinities from :meth:`affinity`.

        Accumulates ``sum_j a_ij m_j`` neighbour by neighbour (fused multiply-add on shifted views of
        one padded copy) instead of stacking all neighbours: same result, far less memory traffic.
        """
        masks = masks.float()
        for _ in range(self.num_iter):
            acc = torch.zeros_like(masks)
            for k, view in enumerate(neighbour_views(masks, self.dilations)):
                acc.addcmul_(view, aff[:, :, k])
            masks = acc
        return masks

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Refine masks (N, M, h, w) with images (N, 3, H, W); masks are first resized to (H, W)."""
        if masks.shape[-2:] != images.shape[-2:]:
            masks = F.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=True)
        return self.propagate(self.affinity(images), masks)
