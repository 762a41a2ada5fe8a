"""One SeCo training iteration's forward and loss computation (SPEC 2, steps 1-9). No optimiser step.

``TrainingStep(model_cfg, train_cfg, data_cfg=None)(model, batch, iteration, generator=None) -> StepResult``
(or the one-shot :func:`training_step`). ``model`` is a :class:`SeCoNet` or a DDP wrapper around
one; ``batch`` holds, on the model's device, ``image``, ``global_view``, ``local_view`` (B, 3, S, S)
normalised, ``img_box`` (B, 4) long (y0, y1, x0, x1) and ``tags`` (B, C) multi-hot.
``iteration`` is the 0-based index of this iteration (the reference's ``n_iter``); the schedule is

    iteration <= contrast_start:  cls + w_cls_aux cls_aux + w_ptc ptc
    iteration <= seg_start:       ... + w_lig lig + w_lil lil
    after:                        ... + w_seg seg + w_reg reg

Terms outside the schedule (and switched-off ablations) are not computed and reported as 0.
Run it under ``torch.autocast`` for mixed precision; contrast logits, softmax normalisers and
the other losses are computed in float32 regardless.

What happens, in order:
  1. the student forward (one call of ``model``, so DDP sees one forward) on the main view and,
     when the contrast branch runs, the global view (same encoder pass) and the student crops;
     inside it, the multi-scale flip CAMs run without gradient, one encoder pass per scale on the
     image and its flip concatenated, except scale 1 where the main view's class maps are reused
     and only the flip is encoded; the ROI mask and the decomposition follow (SPEC 2.1, 2.3, 2.4);
  2. prototypes (from ``train.update_prototype``), teacher EMA (every iteration), teacher keys,
     enqueue (SPEC 2.6, 2.7), all gathered across ranks under DDP;
  3. rectification and the losses (SPEC 2.8, 2.9); the refined pseudo label (SPEC 2.2, PAR) only
     once the seg term is on.

Cost savings that do not change any result:
  - the crop, global-view and teacher passes start only ``ceil(Q / keys per step)`` iterations
    before ``contrast_start``: earlier keys would have been dequeued before LiL/LiG first read the
    queue, and before then the contrast terms have weight 0; the teacher EMA still runs every
    iteration (it does not depend on those passes);
  - with every ablation switch off (plain-CAM baseline) no crop, projection or teacher pass runs.
The loss pool is ``[current keys, queue after enqueueing them]``, as in the reference.
Parameters outside the current schedule get no gradient (None): wrap the model with
``DistributedDataParallel(find_unused_parameters=True)``, as the reference does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seco_deploy import cam as camlib
from seco_deploy import losses
from seco_deploy.config import DataConfig, ModelConfig, TrainConfig
from seco_deploy.model.distributed import world_size
from seco_deploy.model.network import SeCoNet
from seco_deploy.model.par import PAR

TERMS = ("cls", "cls_aux", "ptc", "lig", "lil", "seg", "reg", "total")


@dataclass
class StepResult:
    """``loss``: the scheduled total (call ``backward`` on it); ``terms``: detached 0-dim tensors
    named as :data:`TERMS` (0 when not computed); ``stats``: ``rectified`` (anchors whose tag was
    rectified), ``anchors`` (anchors with a tag != -1 after rectification), ``prototype_images``
    (images used for the prototype update), all 0-dim tensors (call ``.item()`` only when logging)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


def unwrap(model: nn.Module) -> SeCoNet:
    """The :class:`SeCoNet` inside a DDP (or similar ``.module``) wrapper."""
    net = model
    while not isinstance(net, SeCoNet) and hasattr(net, "module"):
        net = net.module
    if not isinstance(net, SeCoNet):
        raise TypeError(f"expected a SeCoNet or a wrapper around one, got {type(model).__name__}")
    return net


class TrainingStep:
    """Forward and losses of one iteration; holds only the PAR module and the configs."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        data_cfg: DataConfig | None = None,
    ) -> None:
        data_cfg = data_cfg if data_cfg is not None else DataConfig()
        self.mcfg = model_cfg
        self.tcfg = train_cfg
        self.mean = tuple(float(m) for m in data_cfg.mean)
        self.std = tuple(float(s) for s in data_cfg.std)
        self.local_crop_size = int(data_cfg.local_crop_size)
        self.par = PAR(tuple(model_cfg.par_dilations), model_cfg.par_iters)

    # ------------------------------------------------------------------ schedule
    def contrast_on(self, iteration: int) -> bool:
        return iteration > self.tcfg.contrast_start

    def seg_on(self, iteration: int) -> bool:
        return iteration > self.tcfg.seg_start

    def reservoir_on(self, net: SeCoNet, iteration: int, batch_size: int) -> bool:
        """Whether the global-view, crop and teacher passes run this iteration (see module docstring)."""
        if not net.has_contrast:
            return False
        if not net.has_pool:
            return self.contrast_on(iteration)
        n = self.mcfg.num_local_crops if self.mcfg.use_decomposition else 0
        keys = batch_size * (n + 2) * world_size()
        fill = math.ceil(net.queue.shape[0] / keys)
        return iteration > self.tcfg.contrast_start - fill

    def roi_source_aux(self, iteration: int) -> bool:
        return self.mcfg.use_aux_roi and iteration < self.tcfg.cam2mask

    # ------------------------------------------------------------------ the step
    def __call__(
        self,
        model: nn.Module,
        batch: dict[str, Any],
        iteration: int,
        generator: torch.Generator | None = None,
    ) -> StepResult:
        net = unwrap(model)
        mcfg, tcfg = self.mcfg, self.tcfg
        image = batch["image"]
        device = image.device
        labels = batch["tags"].to(device=device, dtype=torch.float32)
        img_box = batch["img_box"].to(device)
        b = image.shape[0]
        num_classes = net.num_classes
        zero = torch.zeros((), device=device)

        run_reservoir = self.reservoir_on(net, iteration, b)
        run_decomp = run_reservoir and mcfg.use_decomposition
        state: dict[str, Any] = {}

        def cams_and_crops(out: dict[str, torch.Tensor]) -> torch.Tensor | None:
            """SPEC 2.1 (multi-scale CAMs) and, when decomposing, 2.3-2.4 (ROI mask, crops, tags)."""
            known = net.cam_maps(out["F"].detach(), out["F_aux"].detach())
            cam, cam_aux = camlib.multi_scale_cams(net, image, mcfg.cam_scales, known_scale1=known)
            state["cam"], state["cam_aux"] = cam, cam_aux
            if not run_decomp:
                return None
            source = cam_aux if self.roi_source_aux(iteration) else cam
            roi = camlib.roi_mask(source, labels, img_box, mcfg.high_thre, mcfg.low_thre)
            dec = camlib.decompose(
                image, batch["local_view"].to(device), roi, num_classes, mcfg.num_local_crops,
                self.local_crop_size, mcfg.tag_threshold, generator,
            )
            state["dec"] = dec
            return dec["student"]

        # 5 (+1, 3, 4 inside): the student's one gradient-carrying forward.
        if run_reservoir:
            out = model(image, global_view=batch["global_view"].to(device),
                        crops=cams_and_crops if run_decomp else None)
        else:
            out = model(image)
        if "cam" not in state:
            cams_and_crops(out)
        cam, cam_aux = state["cam"], state["cam_aux"]

        terms: dict[str, torch.Tensor] = {}
        stats: dict[str, torch.Tensor] = {
            "rectified": torch.zeros((), dtype=torch.long, device=device),
            "anchors": torch.zeros((), dtype=torch.long, device=device),
            "prototype_images": torch.zeros((), dtype=torch.long, device=device),
        }
        terms["cls"] = losses.multilabel_soft_margin(out["cls_logits"], labels)
        terms["cls_aux"] = losses.multilabel_soft_margin(out["aux_logits"], labels)

        # PTC on F against the aux-CAM label at feature resolution.
        feats = out["F"]
        ptc_target = camlib.ptc_label(cam_aux, labels, img_box, tuple(feats.shape[-2:]), mcfg.high_thre,
                                      mcfg.low_thre)
        terms["ptc"] = losses.ptc_loss(feats, ptc_target)

        # 6. global teacher: prototypes.
        if iteration >= tcfg.update_prototype:
            stats["prototype_images"] = net.update_prototypes(out["cls"], labels)

        # 7. local teacher and tag pool.
        net.momentum_update()
        terms["lil"] = zero
        terms["lig"] = zero
        if run_reservoir:
            dec = state.get("dec")
            if dec is not None:
                view_tags = dec["global_tags"][:, None].expand(b, 2)
                tags = torch.cat([view_tags, dec["tags"]], dim=1).reshape(-1)
            else:
                roi = camlib.roi_mask(cam_aux if self.roi_source_aux(iteration) else cam, labels, img_box,
                                      mcfg.high_thre, mcfg.low_thre)
                tags = camlib.single_roi_class(roi, num_classes)[:, None].expand(b, 2).reshape(-1)
            if net.has_pool:
                keys = net.teacher_keys(out["view_cls"], dec["teacher"] if dec is not None else None)
                net.enqueue(keys, tags)
            if self.contrast_on(iteration):
                q = out["q"]
                if net.has_pool:
                    pool = torch.cat([keys, net.queue.detach().clone()], dim=0)
                    pool_tags = torch.cat([tags, net.queue_tags.clone()], dim=0)
                sigma = mcfg.rectify_sigma if mcfg.use_rectification else None
                if mcfg.use_lil:
                    terms["lil"], tags, stats["rectified"] = losses.lil_loss(q, pool, tags, pool_tags,
                                                                             mcfg.tau_local, sigma)
                elif sigma is not None:
                    tags, stats["rectified"] = losses.rectify_tags(q, pool, tags, pool_tags, sigma)
                if mcfg.use_lig:
                    terms["lig"] = losses.lig_loss(q, net.prototypes, tags, mcfg.tau_global)
                stats["anchors"] = (tags != -1).sum()

        # 2 + 9. refined pseudo label, segmentation and CRF regulariser.
        terms["seg"] = zero
        terms["reg"] = zero
        if self.seg_on(iteration):
            pseudo = camlib.refined_pseudo_label(image, cam, labels, img_box, self.par, mcfg.high_thre,
                                                 mcfg.low_thre)
            seg = F.interpolate(out["seg_logits"], size=pseudo.shape[-2:], mode="bilinear", align_corners=False)
            terms["seg"] = losses.balanced_seg_loss(seg, pseudo)
            rgb = self._denormalise(image)
            inside = camlib.box_mask(img_box, b, image.shape[-2], image.shape[-1], device).float()
            terms["reg"] = losses.crf_energy_loss(rgb, torch.softmax(seg.float(), dim=1), inside, pseudo == 255,
                                                  max_points=mcfg.reg_max_points)

        total = terms["cls"] + tcfg.w_cls_aux * terms["cls_aux"] + tcfg.w_ptc * terms["ptc"]
        if self.contrast_on(iteration):
            if mcfg.use_lig and run_reservoir:
                total = total + tcfg.w_lig * terms["lig"]
            if mcfg.use_lil and run_reservoir:
                total = total + tcfg.w_lil * terms["lil"]
        if self.seg_on(iteration):
            total = total + tcfg.w_seg * terms["seg"] + tcfg.w_reg * terms["reg"]
        terms["total"] = total
        return StepResult(total, {k: terms[k].detach() for k in TERMS}, stats)

    # ------------------------------------------------------------------ helpers
    def _denormalise(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=image.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=image.device).view(1, 3, 1, 1)
        return (image.float() * std + mean) * 255.0


def training_step(
    model: nn.Module,
    batch: dict[str, Any],
    iteration: int,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    data_cfg: DataConfig | None = None,
    generator: torch.Generator | None = None,
) -> StepResult:
    """One-shot form of :class:`TrainingStep` (builds the PAR module each call)."""
    return TrainingStep(model_cfg, train_cfg, data_cfg)(model, batch, iteration, generator)
