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


def dilated_neighbours(x: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 8 * len(dilations), H, W): each pixel's neighbours, replicate-padded."""
    h, w = x.shape[-2:]
    pad = max(dilations)
    xp = F.pad(x, [pad, pad, pad, pad], mode="replicate")
    views = [
        xp[:, :, pad + dy * d : pad + dy * d + h, pad + dx * d : pad + dx * d + w]
        for d in dilations
        for dy, dx in OFFSETS
    ]
    return torch.stack(views, dim=2)


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
        """Affinities (N, 1, K, H, W) of an image batch (N, 3, H, W); rows sum to 1."""
        images = images.float()
        nb = dilated_neighbours(images, self.dilations)
        diff = (nb - images.unsqueeze(2)).abs()
        std = nb.std(dim=2, keepdim=True)
        aff = -((diff / (std + 1e-8) / self.w_colour) ** 2)
        aff = torch.softmax(aff.mean(dim=1, keepdim=True), dim=2)
        aff = aff + self.w_pos * self.pos_weight.to(aff.device).view(1, 1, -1, 1, 1)
        return aff / (1.0 + self.w_pos)

    def propagate(self, aff: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Apply ``num_iter`` propagation steps to masks (N, M, H, W) with affinities from :meth:`affinity`.

        Accumulates ``sum_j a_ij m_j`` neighbour by neighbour (fused multiply-add on shifted views of
        one padded copy) instead of stacking all neighbours: same result, far less memory traffic.
        """
        masks = masks.float()
        h, w = masks.shape[-2:]
        pad = max(self.dilations)
        offsets = [(dy * d, dx * d) for d in self.dilations for dy, dx in OFFSETS]
        for _ in range(self.num_iter):
            padded = F.pad(masks, [pad, pad, pad, pad], mode="replicate")
            acc = torch.zeros_like(masks)
            for k, (oy, ox) in enumerate(offsets):
                acc.addcmul_(padded[:, :, pad + oy : pad + oy + h, pad + ox : pad + ox + w], aff[:, :, k])
            masks = acc
        return masks

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Refine masks (N, M, h, w) with images (N, 3, H, W); masks are first resized to (H, W)."""
        if masks.shape[-2:] != images.shape[-2:]:
            masks = F.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=True)
        return self.propagate(self.affinity(images), masks)
