"""The SeCo network (method §1): student encoder and heads, local teacher, prototypes and key queue.

``SeCoNet(model_cfg, num_classes)`` with ``num_classes = C`` foreground classes (masks and
``seg_logits`` have C + 1 channels, background first).

Modules
  ``encoder``          :class:`ViTBackbone` (student; also the global teacher)
  ``classifier``       1x1 conv D -> C, no bias, on global max pooling of ``F``
  ``aux_classifier``   1x1 conv D -> C, no bias, on global max pooling of ``F_aux``
  ``decoder``          ASPP D -> C + 1 (dilations ``model.decoder_dilations``)
  ``proj_head``        MLP D -> hidden -> hidden -> D, L2-normalised           (contrast branch only)
  ``teacher_head``     momentum copy of ``proj_head``, no gradients                    (key pool only)
  ``teacher_encoder``  momentum copy of ``encoder``, no gradients      (key pool + decomposition only)
Buffers: ``prototypes`` (C, D) unit rows; ``queue`` (Q, D) unit rows, ``queue_tags`` (Q,) long
(initially 0), ``queue_ptr`` () long. The contrast branch (projection head) exists when ``use_lil``
or ``use_lig``; the key pool (teacher head, queue; teacher encoder with decomposition) when it
is read, i.e. with ``use_lil`` or ``use_rectification``. With every switch off the network is
the plain-CAM baseline (no projection head, no teacher, empty queue).

Calls
  ``student(images, global_view=None) -> dict``: the student's gradient-carrying pass on the main
    view (and the global view, same encoder pass): ``cls`` (N, D), ``F``/``F_aux`` (N, D, h, w),
    ``cls_logits``/``aux_logits`` (N, C), ``seg_logits`` (N, C+1, h, w), ``view_cls`` (N, v, D).
  ``anchors(view_cls, crops=None) -> q`` (N*(v+n), D): the projected class tokens of [main, global,
    crop_1..crop_n] per image (crops (N*n, 3, s, s), image-major).
  ``forward(images, global_view=None, crops=None)``: both in one call. A training step calls
    them from :class:`seco_deploy.train.step.TrainingStep`, whose forward is the whole step (so a
    DDP wrapper around it sees one forward).
  ``forward_infer(images, with_cam=False) -> dict``: ``seg_logits`` and, with ``with_cam``,
    ``cams`` (N, C, h, w; the raw class maps, no ReLU, not normalised) and ``cls_logits`` (N, C). Traceable.
  ``cam_maps(F, F_aux) -> (cam, cam_aux)``: raw 1x1-conv class maps (no ReLU).
  ``param_groups(train_cfg)``: AdamW groups ``encoder``, ``encoder_norm`` (lr), ``heads``,
    ``decoder`` (lr * head_lr_mult); each dict carries ``name`` and ``lr_mult``.
  ``momentum_update()``, ``teacher_keys(...)``, ``update_prototypes(...)``, ``enqueue(...)``:
    the no-gradient state updates of method §2.6-§2.7 (gathered across ranks under DDP).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seco_deploy.config import ModelConfig, TrainConfig
from seco_deploy.model.backbone import ViTBackbone
from seco_deploy.model.distributed import concat_all_gather
from seco_deploy.model.heads import ASPPDecoder, ProjectionHead


# ---------------------------------------------------------------------------- pure state maths
def prototype_ema(
    prototypes: torch.Tensor,
    feats: torch.Tensor,
    rows: torch.Tensor,
    momentum: float,
    mode: str = "ema",
) -> torch.Tensor:
    """New prototypes after the global teacher's update (method §2.6). Pure; returns a new tensor.

    ``rows`` (N,) holds each feature's prototype row (class c -> row c - 1) or -1 to skip it.

    ``ema``: features are applied in order, ``P_r <- m P_r + (1 - m) f_j``, and every updated row is
    L2-normalised once at the end (the reference's loop); in closed form
    ``P_r <- m^k P_r + (1 - m) sum_j m^(e_j) f_j`` with k the number of features of row r and e_j
    the number of later features of the same row.
    ``weighted`` (the paper's variant): ``P_r <- normalise(m P_r + (1 - m) sum_j w_j f_j)`` with
    ``w = softmax_j(cos(f_j, P_r))`` over the features of row r.
    Rows without features are returned unchanged.
    """
    if mode not in ("ema", "weighted"):
        raise ValueError(f"prototype update mode {mode!r}; choose 'ema' or 'weighted'")
    protos = prototypes.float()
    feats = feats.detach().float()
    num_rows = protos.shape[0]
    valid = rows >= 0
    r = rows.clamp(min=0)
    counts = torch.zeros(num_rows, device=protos.device).index_add_(0, r, valid.float())
    if mode == "ema":
        same = (rows[:, None] == rows[None, :]) & valid[:, None] & valid[None, :]
        later = torch.ones_like(same).triu(diagonal=1)
        exponent = (same & later).sum(1).float()
        coef = (1.0 - momentum) * momentum**exponent * valid.float()
        decay = momentum**counts
    else:
        cos = (F.normalize(feats, dim=1) * F.normalize(protos[r], dim=1)).sum(1)
        cos = torch.where(valid, cos, torch.full_like(cos, -torch.inf))
        row_max = torch.full((num_rows,), -torch.inf, device=protos.device).scatter_reduce(
            0, r, cos, reduce="amax", include_self=True
        )
        expo = torch.where(valid, torch.exp(cos - row_max[r]), torch.zeros_like(cos))
        denom = torch.zeros(num_rows, device=protos.device).index_add_(0, r, expo)
        coef = (1.0 - momentum) * expo / denom[r].clamp(min=1e-12)
        decay = torch.where(counts > 0, torch.full_like(counts, momentum), torch.ones_like(counts))
    summed = torch.zeros_like(protos).index_add_(0, r, feats * coef[:, None])
    updated = protos * decay[:, None] + summed
    out = torch.where((counts > 0)[:, None], F.normalize(updated, dim=1), protos)
    return out.to(prototypes.dtype)


def queue_positions(ptr: int | torch.Tensor, count: int, size: int) -> torch.Tensor:
    """Queue rows written by ``count`` keys starting at ``ptr`` (wrapping around ``size``).

    ``ptr`` may be a 0-dim tensor; the result then lives on its device (no host sync).
    """
    if count > size:
        raise ValueError(
            f"{count} keys per step exceed the queue of {size}; raise model.queue_size (a multiple of the key count)"
        )
    device = ptr.device if isinstance(ptr, torch.Tensor) else None
    return (ptr + torch.arange(count, device=device)) % size


def single_class_rows(labels: torch.Tensor) -> torch.Tensor:
    """(N, C) multi-hot image labels -> (N,) row of the one present class, or -1 (none or several)."""
    present = labels > 0.5
    one = present.sum(1) == 1
    return torch.where(one, present.float().argmax(1), torch.full_like(one, -1, dtype=torch.long))


# ---------------------------------------------------------------------------- network
class SeCoNet(nn.Module):
    """Student, local teacher and shared state of SeCo; see the module docstring."""

    def __init__(self, model_cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 foreground class, got {num_classes}")
        self.cfg = copy.deepcopy(model_cfg)
        self.num_classes = int(num_classes)
        self.encoder = ViTBackbone(
            model_cfg.backbone,
            pretrained=model_cfg.pretrained,
            aux_layer=model_cfg.aux_layer,
            freeze_pos_embed=model_cfg.freeze_pos_embed,
            **model_cfg.backbone_kwargs,
        )
        dim = self.encoder.embed_dim
        self.embed_dim = dim
        self.patch_size = self.encoder.patch_size
        self.classifier = nn.Conv2d(dim, num_classes, kernel_size=1, bias=False)
        self.aux_classifier = nn.Conv2d(dim, num_classes, kernel_size=1, bias=False)
        self.decoder = ASPPDecoder(dim, num_classes + 1, tuple(model_cfg.decoder_dilations))

        self.has_contrast = bool(model_cfg.use_lil or model_cfg.use_lig)
        # The key pool (teacher + queue) is read by LiL and by rectification.
        self.has_pool = self.has_contrast and bool(model_cfg.use_lil or model_cfg.use_rectification)
        self.has_teacher_encoder = self.has_pool and bool(model_cfg.use_decomposition)
        if self.has_contrast:
            self.proj_head = ProjectionHead(dim, model_cfg.proj_hidden_dim, dim)
        if self.has_pool:
            self.teacher_head = copy.deepcopy(self.proj_head).requires_grad_(False)
        if self.has_teacher_encoder:
            self.teacher_encoder = copy.deepcopy(self.encoder).requires_grad_(False)

        self.register_buffer("prototypes", F.normalize(torch.randn(num_classes, dim), dim=1))
        queue_size = model_cfg.queue_size if self.has_pool else 0
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_tags", torch.zeros(queue_size, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ forward passes
    def cam_maps(self, feats: torch.Tensor, feats_aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw class maps (N, C, h, w) of the classifier on ``F`` and the aux classifier on ``F_aux``."""
        return F.conv2d(feats, self.classifier.weight), F.conv2d(feats_aux, self.aux_classifier.weight)

    def _logits(self, feats: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        pooled = F.adaptive_max_pool2d(feats, 1)
        return conv(pooled).flatten(1)

    def student(self, images: torch.Tensor, global_view: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The student on the main view and, when given, the global view, in ONE encoder pass (method §2.1;
        two when the global view has another size).

        Keys ``cls`` (N, D), ``F``/``F_aux`` (N, D, h, w), ``cls_logits``/``aux_logits`` (N, C),
        ``seg_logits`` (N, C+1, h, w) of the main view, and ``view_cls`` (N, v, D): the class tokens
        of [main view, global view] (v = 2 with a global view, else 1).
        """
        n = images.shape[0]
        joint = global_view is not None and global_view.shape[-2:] == images.shape[-2:]
        both = torch.cat([images, global_view], dim=0) if joint else images
        cls_all, feats_all, aux_all = self.encoder(both)
        feats, feats_aux = feats_all[:n], aux_all[:n]
        views = [cls_all[:n, None]]
        if global_view is not None:  # another size (data.global_view_size): its own pass, class token only
            views.append(cls_all[n:, None] if joint else self.encoder.forward_cls(global_view)[:, None])
        return {
            "cls": cls_all[:n],
            "F": feats,
            "F_aux": feats_aux,
            "cls_logits": self._logits(feats, self.classifier),
            "aux_logits": self._logits(feats_aux, self.aux_classifier),
            "seg_logits": self.decoder(feats),
            "view_cls": torch.cat(views, dim=1),
        }

    def anchors(self, view_cls: torch.Tensor, crops: torch.Tensor | None = None) -> torch.Tensor:
        """Anchors q (N*(v+n), D), unit rows (method §2.5): the projection head on the view tokens
        ``view_cls`` (N, v, D) followed by the student's class tokens of the ``crops`` (N*n, 3, s, s,
        image-major), per image [main, global, crop_1..crop_n]."""
        if not self.has_contrast:
            raise RuntimeError("this network has no contrast branch (model.use_lil and model.use_lig are off)")
        n = view_cls.shape[0]
        tokens = [view_cls]
        if crops is not None:
            tokens.append(self.encoder.forward_cls(crops).reshape(n, -1, self.embed_dim))
        return self.proj_head(torch.cat(tokens, dim=1).reshape(-1, self.embed_dim))

    def forward(
        self,
        images: torch.Tensor,
        global_view: torch.Tensor | None = None,
        crops: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """:meth:`student` and, with a global view or crops, ``q`` = :meth:`anchors` (one call)."""
        out = self.student(images, global_view)
        if global_view is not None or crops is not None:
            out["q"] = self.anchors(out["view_cls"], crops)
        return out

    def forward_infer(self, images: torch.Tensor, with_cam: bool = False) -> dict[str, torch.Tensor]:
        """Deployment outputs only: ``seg_logits`` (N, C+1, h, w); with ``with_cam`` also ``cams``
        (N, C, h, w: the raw class maps of :meth:`cam_maps`, not normalised; the ReLU comes after
        upsampling and flip fusion, method §2.2) and ``cls_logits`` (N, C). No data-dependent control flow."""
        _, feats, _ = self.encoder(images)
        out = {"seg_logits": self.decoder(feats)}
        if with_cam:
            out["cams"] = F.conv2d(feats, self.classifier.weight)
            out["cls_logits"] = self._logits(feats, self.classifier)
        return out

    # ------------------------------------------------------------------ optimiser groups
    def param_groups(self, train_cfg: TrainConfig) -> list[dict[str, Any]]:
        """AdamW groups: encoder (lr), encoder norms (lr), heads and decoder (lr * head_lr_mult).

        Every trainable parameter appears exactly once; teacher parameters (no gradients) and a
        frozen positional embedding are left out. Empty groups are dropped.
        """
        enc, enc_norm = [], []
        for name, p in self.encoder.named_parameters():
            if p.requires_grad:
                (enc_norm if "norm" in name else enc).append(p)
        heads = [p for p in (self.classifier.weight, self.aux_classifier.weight) if p.requires_grad]
        if self.has_contrast:
            heads += [p for p in self.proj_head.parameters() if p.requires_grad]
        decoder = [p for p in self.decoder.parameters() if p.requires_grad]
        mult = train_cfg.head_lr_mult
        groups = [
            ("encoder", enc, 1.0),
            ("encoder_norm", enc_norm, 1.0),
            ("heads", heads, mult),
            ("decoder", decoder, mult),
        ]
        return [
            {"name": name, "params": params, "lr": train_cfg.lr * m, "lr_mult": m,
             "weight_decay": train_cfg.weight_decay}
            for name, params, m in groups
            if params
        ]

    # ------------------------------------------------------------------ no-gradient state updates
    def teacher_parameters(self) -> list[nn.Parameter]:
        params: list[nn.Parameter] = []
        if self.has_pool:
            params += list(self.teacher_head.parameters())
        if self.has_teacher_encoder:
            params += list(self.teacher_encoder.parameters())
        return params

    @torch.no_grad()
    def momentum_update(self, momentum: float | None = None) -> None:
        """Local teacher EMA: ``t <- m t + (1 - m) s`` for the encoder and the projection head."""
        if not self.has_pool:
            return
        m = self.cfg.teacher_momentum if momentum is None else momentum
        pairs = [(self.proj_head, self.teacher_head)]
        if self.has_teacher_encoder:
            pairs.append((self.encoder, self.teacher_encoder))
        students, teachers = [], []
        for s_mod, t_mod in pairs:
            for ps, pt in zip(s_mod.parameters(), t_mod.parameters(), strict=True):
                students.append(ps.detach())
                teachers.append(pt)
        torch._foreach_mul_(teachers, m)
        torch._foreach_add_(teachers, students, alpha=1.0 - m)

    @torch.no_grad()
    def teacher_keys(self, student_global_cls: torch.Tensor, teacher_crops: torch.Tensor | None) -> torch.Tensor:
        """Keys (N*(v+n), D) = teacher head([student global-view tokens (N, v, D), teacher-encoder
        tokens of the teacher crops (N*n, 3, s, s), image-major]), in the layout of ``q``."""
        n = student_global_cls.shape[0]
        tokens = [student_global_cls.detach()]
        if teacher_crops is not None:
            tokens.append(self.teacher_encoder.forward_cls(teacher_crops).reshape(n, -1, self.embed_dim))
        tokens_all = torch.cat(tokens, dim=1).reshape(-1, self.embed_dim)
        return self.teacher_head(tokens_all)

    @torch.no_grad()
    def update_prototypes(self, cls_tokens: torch.Tensor, image_labels: torch.Tensor) -> torch.Tensor:
        """Global teacher update (method §2.6) from images with exactly one class, gathered over ranks.

        Returns the number of (global) images used, as a 0-dim tensor (no host sync).
        """
        feats = concat_all_gather(cls_tokens.detach().float())
        rows = concat_all_gather(single_class_rows(image_labels))
        self.prototypes.copy_(
            prototype_ema(self.prototypes, feats, rows, self.cfg.prototype_momentum, self.cfg.prototype_update)
        )
        return (rows >= 0).sum()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, tags: torch.Tensor) -> None:
        """Write keys (K, D) and tags (K,) of every rank at the pointer, dequeuing the oldest."""
        keys = concat_all_gather(keys.detach())
        tags = concat_all_gather(tags.to(self.queue_tags.dtype))
        idx = queue_positions(self.queue_ptr, keys.shape[0], self.queue.shape[0])
        self.queue.index_copy_(0, idx, keys.to(self.queue.dtype))
        self.queue_tags.index_copy_(0, idx, tags)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % self.queue.shape[0])
