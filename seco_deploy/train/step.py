"""One SeCo training iteration as a module: ``TrainingStep(net, ...)(batch, iteration) -> StepResult``.

The forward is the whole step of docs/method.md §2, top to bottom, so a DDP wrapper around the
module sees ONE forward per iteration (as MoCo v3 and DINO keep their step a module's forward).
No optimiser step: that is :class:`seco_deploy.train.iteration.Iteration`.

``batch`` holds, on the network's device, ``image``, ``local_view`` (B, 3, S, S), ``global_view`` (B, 3, G, G)
normalised, ``img_box`` (B, 4) long (y0, y1, x0, x1) and ``tags`` (B, C) multi-hot.
``iteration`` is the 0-based index of this iteration (the reference's ``n_iter``); the schedule is

    iteration <= contrast_start:  cls + w_cls_aux cls_aux + w_ptc ptc
    iteration <= seg_start:       ... + w_lig lig + w_lil lil
    after:                        ... + w_seg seg + w_reg reg

Terms outside the schedule (and switched-off ablations) are not computed and reported as 0.
Run it under ``torch.autocast`` for mixed precision; contrast logits, softmax normalisers and the
other losses are computed in float32 regardless.

What is skipped to save time without changing the step's results (method §2.12):
  - the global-view, crop and teacher passes start only ``ceil(Q / keys per step)`` iterations
    before ``contrast_start``: earlier keys would have been dequeued before LiL/LiG first read the
    queue, and before then the contrast terms have weight 0; the teacher EMA still runs every
    iteration (it does not depend on those passes);
  - with every ablation switch off (plain-CAM baseline) no crop, projection or teacher pass runs.
The loss pool is ``[current keys, queue after enqueueing them]``, as in the reference.
Parameters outside the current schedule get no gradient (None): wrap the module with
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

LOSS_TERMS = ("cls", "cls_aux", "ptc", "lig", "lil", "seg", "reg")
TERMS = (*LOSS_TERMS, "total")


def section(number: str) -> torch.profiler.record_function:
    """The profiler label ``seco §<number>`` of one numbered part of the step (benchmarks/step_profile.py)."""
    return torch.profiler.record_function(f"seco §{number}")


@dataclass
class StepResult:
    """``loss``: the scheduled total (call ``backward`` on it); ``terms``: detached 0-dim tensors
    named as :data:`TERMS` (0 when not computed); ``stats``: ``rectified`` (anchors whose tag was
    rectified), ``anchors`` (anchors with a tag != -1 after rectification), ``prototype_images``
    (images used for the prototype update), all 0-dim tensors (call ``.item()`` only when logging);
    ``probe``: what the step decided, for measuring the chain (:mod:`seco_deploy.train.chain`),
    no gradient: ``cam`` (B, C, S, S) the normalised CAMs, and when the contrast branch ran ``roi``
    (B, S, S), ``crop_y0`` / ``crop_x0`` / ``crop_tags`` (B, n) (tags before rectification) and
    ``anchor_tags`` (B, 2 + n) after it."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    probe: dict[str, torch.Tensor] = field(default_factory=dict)


class TrainingStep(nn.Module):
    """The forward and losses of one iteration over ``net``; see the module docstring."""

    def __init__(self, net: SeCoNet, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 data_cfg: DataConfig | None = None) -> None:
        super().__init__()
        data_cfg = data_cfg if data_cfg is not None else DataConfig()
        self.net = net
        self.mcfg = model_cfg
        self.tcfg = train_cfg
        self.local_crop_size = int(data_cfg.local_crop_size)
        self.par = PAR(tuple(model_cfg.par_dilations), model_cfg.par_iters)
        self.mean = tuple(float(m) for m in data_cfg.mean)
        self.std = tuple(float(s) for s in data_cfg.std)

    # ------------------------------------------------------------------ schedule
    def contrast_on(self, iteration: int) -> bool:
        return iteration > self.tcfg.contrast_start

    def seg_on(self, iteration: int) -> bool:
        return iteration > self.tcfg.seg_start

    def reservoir_on(self, iteration: int, batch_size: int) -> bool:
        """Whether the global-view, crop and teacher passes run this iteration (see the module docstring)."""
        net = self.net
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
    def forward(self, batch: dict[str, Any], iteration: int, generator: torch.Generator | None = None) -> StepResult:
        net, mcfg, tcfg = self.net, self.mcfg, self.tcfg
        image = batch["image"]
        device = image.device
        labels = batch["tags"].to(device=device, dtype=torch.float32)
        img_box = batch["img_box"].to(device)
        b = image.shape[0]
        zero = torch.zeros((), device=device)
        reservoir = self.reservoir_on(iteration, b)
        contrast = self.contrast_on(iteration)
        stats = {k: torch.zeros((), dtype=torch.long, device=device)
                 for k in ("rectified", "anchors", "prototype_images")}
        terms: dict[str, torch.Tensor] = {"lil": zero, "lig": zero, "seg": zero, "reg": zero}

        # §2.1 student forward: main view and (for the contrast branch) the global view in one pass.
        with section("2.1"):
            out = net.student(image, batch["global_view"].to(device) if reservoir else None)

        # §2.2 multi-scale flip CAMs, no gradient; scale 1 reuses the student's class maps.
        with section("2.2"):
            known = net.cam_maps(out["F"].detach(), out["F_aux"].detach())
            cam, cam_aux = camlib.multi_scale_cams(net, image, mcfg.cam_scales, known_scale1=known)
            probe = {"cam": cam}

        # §2.3 ROI mask; §2.4 decomposition into local crops, crop tags and global-view tags.
        with section("2.3"):
            dec = None
            if reservoir:
                roi = camlib.roi_mask(cam_aux if self.roi_source_aux(iteration) else cam, labels, img_box,
                                      mcfg.high_thre, mcfg.low_thre)
                if mcfg.use_decomposition:
                    dec = camlib.decompose(image, batch["local_view"].to(device), roi, net.num_classes,
                                           mcfg.num_local_crops, self.local_crop_size, mcfg.tag_threshold, generator,
                                           mcfg.uncertain_as_class)
                    view_tags = dec["global_tags"]
                else:
                    view_tags = camlib.single_roi_class(roi, net.num_classes)
                tags = view_tags[:, None].expand(b, 2)
                if dec is not None:
                    tags = torch.cat([tags, dec["tags"]], dim=1)
                tags = tags.reshape(-1)
                probe["roi"] = roi
                if dec is not None:
                    probe.update(crop_y0=dec["y0"], crop_x0=dec["x0"], crop_tags=dec["tags"])

                # §2.5 anchors: the student's class tokens of the views and crops, projected.
                q = net.anchors(out["view_cls"], dec["student"] if dec is not None else None)

        # §2.6 global teacher: prototypes from single-class images.
        with section("2.6"):
            if iteration >= tcfg.update_prototype:
                stats["prototype_images"] = net.update_prototypes(out["cls"], labels)

        # §2.7 local teacher: EMA, keys of the global views and teacher crops, enqueue / dequeue.
        with section("2.7"):
            net.momentum_update()
            if reservoir and net.has_pool:
                keys = net.teacher_keys(out["view_cls"], dec["teacher"] if dec is not None else None)
                net.enqueue(keys, tags)
                pool = torch.cat([keys, net.queue.detach().clone()], dim=0)
                pool_tags = torch.cat([tags, net.queue_tags.clone()], dim=0)

        # §2.8 tag rectification, and the contrast losses LiL and LiG (§2.10).
        with section("2.8"):
            if reservoir and contrast:
                sigma = mcfg.rectify_sigma if mcfg.use_rectification else None
                if mcfg.use_lil:
                    terms["lil"], tags, stats["rectified"] = losses.lil_loss(q, pool, tags, pool_tags, mcfg.tau_local,
                                                                             sigma)
                elif sigma is not None:
                    tags, stats["rectified"] = losses.rectify_tags(q, pool, tags, pool_tags, sigma)
                if mcfg.use_lig:
                    terms["lig"] = losses.lig_loss(q, net.prototypes, tags, mcfg.tau_global)
                stats["anchors"] = (tags != -1).sum()
                probe["anchor_tags"] = tags.detach().view(b, -1)

        # §2.9 decoder pseudo label (two background levels, PAR), once the seg term is on.
        with section("2.9"):
            seg_on = self.seg_on(iteration)
            if seg_on:
                pseudo = camlib.refined_pseudo_label(image, cam, labels, img_box, self.par, mcfg.high_thre,
                                                     mcfg.low_thre)

        # §2.10 the losses and their schedule.
        with section("2.10"):
            terms["cls"] = losses.multilabel_soft_margin(out["cls_logits"], labels)
            terms["cls_aux"] = losses.multilabel_soft_margin(out["aux_logits"], labels)
            feats = out["F"]
            ptc_target = camlib.ptc_label(cam_aux, labels, img_box, tuple(feats.shape[-2:]), mcfg.high_thre,
                                          mcfg.low_thre)
            terms["ptc"] = losses.ptc_loss(feats, ptc_target)
            if seg_on:
                seg = F.interpolate(out["seg_logits"], size=pseudo.shape[-2:], mode="bilinear", align_corners=False)
                terms["seg"] = losses.balanced_seg_loss(seg, pseudo)
                mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
                std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
                rgb = (image.float() * std + mean) * 255.0
                inside = camlib.box_mask(img_box, b, image.shape[-2], image.shape[-1], device).float()
                terms["reg"] = losses.crf_energy_loss(rgb, torch.softmax(seg.float(), dim=1), inside, pseudo == 255,
                                                      max_points=mcfg.reg_max_points)
        total = terms["cls"] + tcfg.w_cls_aux * terms["cls_aux"] + tcfg.w_ptc * terms["ptc"]
        if reservoir and contrast:
            if mcfg.use_lig:
                total = total + tcfg.w_lig * terms["lig"]
            if mcfg.use_lil:
                total = total + tcfg.w_lil * terms["lil"]
        if seg_on:
            total = total + tcfg.w_seg * terms["seg"] + tcfg.w_reg * terms["reg"]
        terms["total"] = total
        return StepResult(total, {k: terms[k].detach() for k in TERMS}, stats, probe)


def unwrap(module: nn.Module) -> TrainingStep:
    """The :class:`TrainingStep` inside a DDP (or similar ``.module``) wrapper."""
    step = module
    while not isinstance(step, TrainingStep) and hasattr(step, "module"):
        step = step.module
    if not isinstance(step, TrainingStep):
        raise TypeError(f"expected a TrainingStep or a wrapper around one, got {type(module).__name__}")
    return step
