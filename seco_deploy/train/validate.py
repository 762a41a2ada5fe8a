"""Validation during training: the three mIoUs of the reference log and classification F1.

For each validation image (resized to the training crop size S, as the reference does):

- ``miou_cam``:     multi-scale flip CAMs (``model.cam_scales``), upsampled to the mask size,
                    :func:`~seco_deploy.cam.cam_to_label` with the image's true tags and
                    ``infer.bkg_thre`` (the CAM pseudo-label product, method §3.1; validation is §3.5);
- ``miou_cam_aux``: the same from the auxiliary CAMs;
- ``miou_seg``:     argmax of the decoder's logits upsampled to the mask size (single scale);
- ``cls_f1``:       mean over images of the F1 of ``cls_logits > 0`` against the true tags.

mIoU is over the classes present in the ground truth (:mod:`seco_deploy.metrics`). Under DDP
every rank scores a strided share of the images and the confusion matrices are summed, so all
ranks return the same figures.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from seco_deploy.cam import labels_at_size, multi_scale_cams
from seco_deploy.config import Config
from seco_deploy.data.datasets import SegDataset
from seco_deploy.data.transforms import EvalDataset, eval_collate
from seco_deploy.metrics import ConfusionMatrix, multilabel_f1
from seco_deploy.train.distributed import DistContext, all_reduce_

HEADS = ("cam", "cam_aux", "seg")


@torch.no_grad()
def validate(
    net: torch.nn.Module,
    dataset: SegDataset,
    cfg: Config,
    ctx: DistContext,
    batch_size: int = 4,
    autocast: Any = None,
) -> dict[str, float]:
    """Score ``net`` (a ``SeCoNet``, not a DDP wrapper) on ``dataset`` (which must have masks).

    Returns ``miou_cam``, ``miou_cam_aux``, ``miou_seg``, ``cls_f1`` (fractions in [0, 1]) and
    ``images``. ``autocast`` is an optional context-manager factory for mixed precision.
    """
    if not dataset.has_masks:
        raise ValueError("validation needs ground-truth masks; this split has none")
    was_training = net.training
    net.eval()
    device = ctx.device
    k = len(dataset.classes)
    matrices = {head: ConfusionMatrix(k, ignore_index=cfg.data.ignore_index) for head in HEADS}
    shard = Subset(EvalDataset(dataset, cfg.data), list(range(ctx.rank, len(dataset), ctx.world_size)))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=eval_collate)
    f1_sum, count = 0.0, 0
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        tags = batch["tags"].to(device)
        ctxm = autocast() if autocast is not None else torch.autocast(device.type, enabled=False)
        with ctxm:
            out = net.forward_infer(images, with_cam=True)
            cam, cam_aux = multi_scale_cams(net, images, cfg.model.cam_scales)
        f1 = multilabel_f1(tags.cpu().numpy() > 0.5, (out["cls_logits"].float() > 0).cpu().numpy())
        f1_sum += float(f1.sum())
        count += len(f1)
        for i, gt in enumerate(batch["mask"]):
            size = tuple(gt.shape)
            label = tags[i : i + 1]
            preds = {
                "cam": labels_at_size(cam[i : i + 1], label, size, cfg.infer.bkg_thre),
                "cam_aux": labels_at_size(cam_aux[i : i + 1], label, size, cfg.infer.bkg_thre),
                "seg": _resize(out["seg_logits"][i : i + 1].float(), size).argmax(1),
            }
            gt_np = gt.numpy()
            for head, pred in preds.items():
                matrices[head].update(gt_np, pred[0].cpu().numpy())
    # Sum the matrices and the F1 tallies over ranks.
    packed = torch.from_numpy(np.concatenate([matrices[h].matrix.ravel() for h in HEADS])).to(torch.float64)
    tally = torch.tensor([f1_sum, float(count)], dtype=torch.float64)
    if ctx.distributed:
        reduce_device = device if device.type == "cuda" else torch.device("cpu")
        packed, tally = packed.to(reduce_device), tally.to(reduce_device)
        all_reduce_(packed, ctx)
        all_reduce_(tally, ctx)
        packed, tally = packed.cpu(), tally.cpu()
    size = matrices["cam"].matrix.size
    result: dict[str, float] = {}
    for j, head in enumerate(HEADS):
        total = ConfusionMatrix(k, ignore_index=cfg.data.ignore_index)
        total.matrix = packed[j * size : (j + 1) * size].round().to(torch.int64).numpy().reshape(total.matrix.shape)
        result[f"miou_{head}"] = float(total.compute()["miou"])
    result["cls_f1"] = float(tally[0] / tally[1]) if tally[1] > 0 else float("nan")
    result["images"] = int(tally[1])
    net.train(was_training)
    return result


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)
