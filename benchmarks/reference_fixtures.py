"""Golden fixtures from the reference implementation (issue 13): its own functions on seeded inputs.

    python benchmarks/reference_fixtures.py REF_DIR --bilateral BILATERAL_DIR [--out tests/fixtures/reference]

``REF_DIR`` is a checkout of zwyang6/SeCo at commit 202357f, ``BILATERAL_DIR`` the build output of
the rloss ``bilateralfilter`` extension that its ``model/losses.py`` imports (how to build it:
``benchmarks/reference_env.py``). Every file under ``--out`` is rewritten: one ``.npz`` per stage
(inputs and the reference's outputs), ``crf_error.json`` (the CRF regulariser's relative error
against the reference by image size and cell factor) and ``README.md`` (commit, the changes made
to run the reference on the CPU, this command). The tests ``tests/test_fidelity_*.py`` read only
these files. With ``--skip-crf-table`` the (slow, about a minute) error table is left as it is.

Inputs are drawn from ``torch.Generator`` seeds fixed here; the reference runs in float32 on the
CPU. Nothing of the reference is copied: it is imported from ``REF_DIR``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_env import (  # noqa: E402
    BILATERAL_COMMIT,
    BILATERAL_REPO,
    CPU_CHANGES,
    REFERENCE_COMMIT,
    REFERENCE_REPO,
    Reference,
    add_backbone,
    cpu_only,
    load_reference,
    reference_args,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TINY_VIT = {"img_size": 64, "embed_dim": 32, "depth": 4, "num_heads": 2, "num_classes": 0}
TINY_CLASSES = 4  # foreground classes of the tiny network
CAM_SCALES = (1.0, 0.5, 0.75, 1.5)  # scripts/train_voc.py --cam_scales
SEG_SCALES = (1.0, 1.25, 1.5)  # tools/infer_seg_voc.py --scales
PSEUDO_SCALES = (1.0, 0.5, 0.75, 1.25, 1.5, 1.75, 2.0)  # tools/infer_cam.py, refine_with_multiscale
HIGH, LOW, BKG, IGNORE = 0.7, 0.25, 0.5, 255


# ---------------------------------------------------------------------------- inputs
def smooth(g: torch.Generator, shape: tuple[int, ...], cell: int = 8) -> torch.Tensor:
    """Smooth random field (N, C, H, W): normal noise on a coarse grid, upsampled bicubically."""
    n, c, h, w = shape
    coarse = torch.randn(n, c, max(2, h // cell), max(2, w // cell), generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)


def unit_maps(g: torch.Generator, shape: tuple[int, ...], cell: int = 8) -> torch.Tensor:
    """Per-map min-max normalised smooth fields in [0, 1] (what multi-scale CAMs look like)."""
    x = smooth(g, shape, cell)
    x = x - x.amin(dim=(-2, -1), keepdim=True)
    return x / x.amax(dim=(-2, -1), keepdim=True)


def rgb_uint8(g: torch.Generator, n: int, h: int, w: int, cell: int = 16, noise: float = 4.0) -> torch.Tensor:
    """Piecewise-smooth colour images (N, 3, H, W) uint8: a few flat regions plus mild texture."""
    base = smooth(g, (n, 3, h, w), cell) * 60 + 128
    regions = (smooth(g, (n, 1, h, w), cell * 2) > 0).float()
    tint = torch.randint(-70, 70, (n, 3, 1, 1), generator=g).float()
    img = base + regions * tint + torch.randn(n, 3, h, w, generator=g) * noise
    return img.clamp(0, 255).round().to(torch.uint8)


def normalise(img_u8: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (img_u8.float() / 255.0 - mean) / std


def arrays(**items: Any) -> dict[str, np.ndarray]:
    out = {}
    for k, v in items.items():
        out[k] = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    return out


def save(out: Path, name: str, meta: dict[str, Any], **items: Any) -> None:
    data = arrays(**items)
    data["meta"] = np.asarray(json.dumps(meta, sort_keys=True))
    np.savez_compressed(out / f"{name}.npz", **data)
    size = (out / f"{name}.npz").stat().st_size
    print(f"  {name}.npz: {len(data)} arrays, {size / 1024:.0f} KiB", flush=True)


# ---------------------------------------------------------------------------- the tiny network
def tiny_network(ref: Reference, seed: int = 0) -> torch.nn.Module:
    """The reference's ``network`` with a tiny ViT (4 blocks of width 32, 64 px grid), seeded weights.

    Weights are perturbed (normal noise, std 0.2, on every encoder and head tensor) so that the
    blocks do more than pass the patch embedding through.
    """
    add_backbone(ref, "fidelity_tiny_vit", **TINY_VIT)
    args = reference_args(num_classes=TINY_CLASSES + 1, ctc_dim=16, moco_queue=48)
    torch.manual_seed(seed)
    with cpu_only():
        net = ref.model_seco.network(args, backbone="fidelity_tiny_vit", num_classes=TINY_CLASSES + 1,
                                     pretrained=False, init_momentum=0.999, aux_layer=-3)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in (net.encoder, net.classifier, net.aux_classifier, net.decoder):
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return net.eval()


def network_weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Encoder (timm key names), classifier, aux classifier and decoder (``decoder.{i}.weight``) tensors."""
    out = {f"encoder.{k}": v for k, v in net.encoder.state_dict().items() if not k.startswith("head.")}
    out["classifier"] = net.classifier.weight
    out["aux_classifier"] = net.aux_classifier.weight
    for i, (_, conv) in enumerate(sorted(net.decoder.named_children())):
        out[f"decoder.{i}.weight"] = conv.weight
        out[f"decoder.{i}.bias"] = conv.bias
    return {k: v.detach().clone() for k, v in out.items()}


def weights_meta() -> dict[str, Any]:
    return {"vit": {k: v for k, v in TINY_VIT.items() if k != "num_classes"}, "aux_layer": -3, "patch": 16,
            "num_classes": TINY_CLASSES}


# ---------------------------------------------------------------------------- stages
def stage_cam_fusion(ref: Reference, out: Path) -> None:
    """utils/camutils.py multi_scale_cam2 on the tiny network (sizes whose scaled sides are, and are
    not, multiples of the patch). Also writes the tiny network's weights (``tiny_network.npz``),
    which the inference stage uses too."""
    net = tiny_network(ref)
    g = torch.Generator().manual_seed(10)
    x64 = smooth(g, (2, 3, 64, 64), 8)
    x80 = smooth(g, (1, 3, 80, 80), 8)
    results = {}
    with cpu_only():
        for name, x in (("x64", x64), ("x80", x80)):
            cam, cam_aux = ref.camutils.multi_scale_cam2(net, x, list(CAM_SCALES))
            results[f"{name}_cam"], results[f"{name}_cam_aux"] = cam, cam_aux
    save(out, "tiny_network", {**weights_meta(), "function": "model/model_seco.py:21 (network), tiny ViT"},
         **network_weights(net))
    save(out, "cam_fusion", {"scales": CAM_SCALES, "function": "utils/camutils.py:116"},
         x64=x64, x80=x80, **results)


def _seg_validate(ref: Reference, net: torch.nn.Module, image_u8: torch.Tensor,
                  scales: tuple[float, ...]) -> np.ndarray:
    """tools/infer_seg_voc.py ``_validate`` on one image: its saved multi-scale logits (1, C+1, H, W)."""
    tool = ref.import_module("tools.infer_seg_voc")
    tool.evaluate = type("NoScores", (), {"scores": staticmethod(lambda *a, **k: {})})
    tool.format_tabs_multi_metircs = lambda *a, **k: ""
    x = normalise(image_u8)
    h, w = x.shape[-2:]
    batch = (["img"], x, torch.zeros(1, h, w, dtype=torch.long), torch.zeros(1, TINY_CLASSES))
    with tempfile.TemporaryDirectory() as tmp:
        args = type("Args", (), {"scales": list(scales), "logits_dir": tmp})()
        with cpu_only():
            tool._validate(model=net, data_loader=[batch], args=args)
        saved = np.load(Path(tmp) / "img.npy", allow_pickle=True).item()
    return saved["msc_seg"]


def stage_inference(ref: Reference, out: Path) -> None:
    """Segmentation masks (tools/infer_seg_voc.py ``_validate``: scales of a 448 base, image + flip
    summed, maximum over scales) and CAM pseudo-labels (tools/infer_cam.py ``_validate``, lines
    68-80: resize to 448, multi_scale_cam2, resize back, cam_to_label with bkg_thre 0.5)."""
    net = tiny_network(ref)
    g = torch.Generator().manual_seed(20)
    images = {
        "base": rgb_uint8(g, 1, 448, 448, noise=0.0),  # already the base size: one resampling path
        "small": rgb_uint8(g, 1, 150, 200, noise=0.0),  # upsampled to every scale
        "large": rgb_uint8(g, 1, 480, 460, noise=0.0),  # shrunk to the 448 base (antialiasing differs)
    }
    items: dict[str, Any] = dict(images)
    stride = 5
    for name, img in images.items():
        logits = torch.from_numpy(_seg_validate(ref, net, img, SEG_SCALES))
        items[f"{name}_seg_argmax"] = logits.argmax(1)[0].to(torch.uint8)
        items[f"{name}_seg_prob_grid"] = torch.softmax(logits, 1)[0, :, ::stride, ::stride]
    tags = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    for name, img in images.items():
        x = normalise(img)
        with torch.no_grad(), cpu_only():
            inputs = F.interpolate(x, size=[448, 448], mode="bilinear", align_corners=False)
            cams, _ = ref.camutils.multi_scale_cam2(net, inputs, list(PSEUDO_SCALES))
            resized = F.interpolate(cams, size=x.shape[-2:], mode="bilinear", align_corners=False)
            label = ref.camutils.cam_to_label(resized, tags, bkg_thre=BKG)
        items[f"{name}_pseudo"] = label[0].to(torch.uint8)
        items[f"{name}_pseudo_cam_grid"] = resized[0, :, ::stride, ::stride]
    save(out, "inference", {"seg_scales": SEG_SCALES, "pseudo_scales": PSEUDO_SCALES,
                            "base": 448, "grid_stride": stride, "bkg_thre": BKG,
                            "functions": ["tools/infer_seg_voc.py:49", "tools/infer_cam.py:51",
                                          "utils/camutils.py:116", "utils/camutils.py:63"]},
         tags=tags, **items)


def stage_cam_labels(ref: Reference, out: Path) -> None:
    """cam_to_label (training and inference forms), cam_to_roi_mask, and the PTC label at feature size."""
    g = torch.Generator().manual_seed(30)
    cam = unit_maps(g, (3, 4, 48, 56), 8)
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1]])
    img_box = torch.tensor([[0, 48, 0, 56], [5, 40, 8, 50], [30, 48, 20, 56]])
    cu = ref.camutils
    valid_cam, pseudo = cu.cam_to_label(cam.clone(), cls_label=labels, img_box=img_box, ignore_mid=True,
                                        bkg_thre=BKG, high_thre=HIGH, low_thre=LOW, ignore_index=IGNORE)
    infer_label = cu.cam_to_label(cam.clone(), labels, bkg_thre=BKG)
    roi = cu.cam_to_roi_mask(cam.clone(), cls_label=labels, img_box=img_box, ignore_mid=True, bkg_thre=BKG,
                             low_thre=LOW, high_thre=HIGH, ignore_index=IGNORE)
    # PTC label (scripts/train_voc.py lines 213-215): aux CAMs resized to the feature map, then
    # cam_to_label with the pixel crop box; then label_to_aff_mask.
    cam_aux = unit_maps(g, (3, 4, 64, 80), 16)
    ptc_box = torch.tensor([[0, 64, 0, 80], [3, 60, 2, 70], [20, 64, 0, 80]])
    fsize = (4, 5)
    resized = F.interpolate(cam_aux, size=fsize, mode="bilinear", align_corners=False)
    _, ptc_label = cu.cam_to_label(resized, cls_label=labels, img_box=ptc_box, ignore_mid=True, bkg_thre=BKG,
                                   high_thre=HIGH, low_thre=LOW, ignore_index=IGNORE)
    aff = cu.label_to_aff_mask(ptc_label)
    save(out, "cam_labels", {"high": HIGH, "low": LOW, "bkg": BKG, "ignore": IGNORE, "feature_size": fsize,
                             "functions": ["utils/camutils.py:63", "utils/camutils.py:85",
                                           "utils/camutils.py:158"]},
         cam=cam, labels=labels, img_box=img_box, valid_cam=valid_cam, pseudo=pseudo, infer_label=infer_label,
         roi=roi, cam_aux=cam_aux, ptc_box=ptc_box, ptc_label=ptc_label, ptc_aff=aff)


def _tag_rois(h: int = 40, w: int = 40) -> torch.Tensor:
    """Five ROI masks (class / -1 / 0 / 255) for the crop-tag stage, each built to show one rule."""
    roi = torch.zeros(5, h, w, dtype=torch.long)
    # 0: two classes (3 and 15) with uncertain rims, ignored rows at the bottom.
    roi[0, 4:20, 4:22] = -1
    roi[0, 7:17, 7:19] = 3
    roi[0, 18:36, 20:38] = -1
    roi[0, 21:33, 23:35] = 15
    roi[0, 36:] = IGNORE
    # 1: one class (7) with an uncertain ring: its uncertain pixels count as class 7.
    roi[1, 6:34, 6:34] = -1
    roi[1, 12:28, 12:28] = 7
    # 2: uncertain pixels but no confident class (an empty ROI mask).
    roi[2, 8:32, 5:30] = -1
    # 3: sparse pixels of class 18 (one in 36), no uncertain pixel: fraction 1/36 but index sum 0.5.
    roi[3, 2::6, 3::6] = 18
    # 4: mostly background, one block of class 2 and three uncertain pixels (fewer than the crops:
    # centres are drawn among all positions).
    roi[4, 2:10, 2:10] = 2
    roi[4, 30, 30:33] = -1
    return roi


def stage_crop_tags(ref: Reference, out: Path) -> None:
    """assign_csc_tags (utils/camutils.py:4) with the training defaults (10 crops, threshold 0.2).

    The images carry their own coordinates (channel 0 the row, 1 the column), so the crops it
    returns reveal the positions it drew."""
    roi = _tag_rois()
    b, h, w = roi.shape
    rows = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(b, 1, h, w)
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(b, 1, h, w)
    idx = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 1, h, w)
    images = torch.cat([rows, cols, idx], dim=1).contiguous()
    crop_num, crop_size, threshold = 10, 16, 0.2
    with cpu_only():
        crops, flags = ref.camutils.assign_csc_tags(images=images, roi_mask=roi.clone(), crop_num=crop_num,
                                                    crop_size=crop_size, threshold=threshold)
    crops_t = torch.stack(crops, dim=1)  # (B, n, 3, s, s)
    y0 = crops_t[:, :, 0, 0, 0].long()
    x0 = crops_t[:, :, 1, 0, 0].long()
    save(out, "crop_tags", {"crop_num": crop_num, "crop_size": crop_size, "threshold": threshold,
                            "function": "utils/camutils.py:4"},
         roi=roi, flags=flags.long(), y0=y0, x0=x0, crops=crops_t)


def stage_par(ref: Reference, out: Path) -> None:
    """model/PAR.py PAR on given masks, and utils/camutils.py refine_cams_with_bkg_v2 (the decoder's label)."""
    g = torch.Generator().manual_seed(40)
    dil, iters = [1, 2, 4, 8, 12, 24], 10
    par = ref.par.PAR(num_iter=iters, dilations=dil)
    image01 = rgb_uint8(g, 2, 40, 48, 12).float() / 255.0
    masks = torch.softmax(smooth(g, (2, 3, 20, 24), 4) * 3, dim=1)
    with torch.no_grad(), cpu_only():
        par_out = par(image01, masks)
    # refine_cams_with_bkg_v2 as scripts/train_voc.py calls it (lines 182-187): the de-normalised
    # image (imutils.denormalize_img2), the valid CAMs from cam_to_label, high/low background.
    img_u8 = rgb_uint8(g, 3, 64, 80, 16)
    x = normalise(img_u8)
    cam = unit_maps(g, (3, 4, 64, 80), 12)
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1]])
    img_box = torch.tensor([[0, 64, 0, 80], [6, 60, 10, 72], [0, 40, 0, 80]])
    with torch.no_grad(), cpu_only():
        denorm = ref.imutils.denormalize_img2(x.clone())
        valid_cam, _ = ref.camutils.cam_to_label(cam.clone(), cls_label=labels, img_box=img_box, ignore_mid=True,
                                                 bkg_thre=BKG, high_thre=HIGH, low_thre=LOW, ignore_index=IGNORE)
        refined = ref.camutils.refine_cams_with_bkg_v2(par, denorm, cams=valid_cam, cls_labels=labels,
                                                       high_thre=HIGH, low_thre=LOW, ignore_index=IGNORE,
                                                       img_box=img_box)
    save(out, "par", {"dilations": dil, "num_iter": iters, "high": HIGH, "low": LOW,
                      "functions": ["model/PAR.py:26", "utils/camutils.py:174"]},
         image01=image01, masks=masks, par_out=par_out, image_u8=img_u8, image=x, cam=cam, labels=labels,
         img_box=img_box, refined=refined.long())


def _contrast_case(g: torch.Generator, anchors: int, queue: int, dim: int, classes: int) -> dict[str, torch.Tensor]:
    """Anchors, keys (noisy copies of the anchors) and a queue near per-class centres, with tags."""
    centres = F.normalize(torch.randn(classes + 1, dim, generator=g), dim=1)
    tags = torch.randint(-1, classes + 1, (anchors,), generator=g)
    tags[:4] = torch.tensor([-1, 0, 1, 2])
    q = F.normalize(centres[tags.clamp(min=0)] + 0.6 * torch.randn(anchors, dim, generator=g), dim=1)
    keys = F.normalize(q + 0.3 * torch.randn(anchors, dim, generator=g), dim=1)
    queue_tags = torch.randint(-1, classes + 1, (queue,), generator=g)
    queue_feats = F.normalize(centres[queue_tags.clamp(min=0)] + 0.6 * torch.randn(queue, dim, generator=g), dim=1)
    return {"q": q, "tags": tags, "keys": keys, "queue": queue_feats, "queue_tags": queue_tags}


def _ref_lil(ref: Reference, q: torch.Tensor, tags: torch.Tensor, pool: torch.Tensor, pool_tags: torch.Tensor,
             n_iter: int = 2001) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LIL_Loss as scripts/train_voc.py line 204 calls it: ``queue_feats_all`` = [anchors, pool]."""
    lil = ref.losses.LIL_Loss(temperature=0.08, base_temperature=0.08)
    qg = q.clone().requires_grad_(True)
    feats_all = torch.cat([qg, pool], dim=0)
    flags_all = torch.cat([tags, pool_tags]).float().view(-1, 1)
    loss, revised = lil(qg, feats_all, tags.float().view(-1, 1).clone(), flags_all, n_iter)
    if loss.requires_grad:  # a constant 0 when no anchor contributes
        loss.sum().backward()
    grad = qg.grad if qg.grad is not None else torch.zeros_like(q)
    return loss.detach().reshape(()), revised.detach().view(-1).long(), grad


def stage_losses(ref: Reference, out: Path) -> None:
    """LIL_Loss (with its rectification), LIG_Loss, get_masked_ptc_loss + label_to_aff_mask, get_seg_loss."""
    assert ref.losses is not None
    g = torch.Generator().manual_seed(50)
    dim, classes = 16, 3
    case = _contrast_case(g, anchors=24, queue=48, dim=dim, classes=classes)
    pool = torch.cat([case["keys"], case["queue"]])
    pool_tags = torch.cat([case["tags"], case["queue_tags"]])
    lil, lil_tags, lil_grad = _ref_lil(ref, case["q"], case["tags"], pool, pool_tags)
    # Rectification, one anchor per case against a pool of 100 unit keys, 4 (resp. 1) of them close
    # to the anchor and the others far, all at about the same similarity (-0.9): case 0 (tag 1)
    # has a pool all of tag 1; case 1 (tag 2) has 20 keys of tag 2 (1 close, 19 far) and 80 of tag 1.
    rect_q, rect_tags, rect_pool, rect_pool_tags, rect_lil, rect_revised = [], [], [], [], [], []
    for tag, n_close, n_same in ((1, 4, 100), (2, 1, 20)):
        base = F.normalize(torch.randn(dim, generator=g), dim=0)
        close = F.normalize(base + 0.01 * torch.randn(n_close, dim, generator=g), dim=1)
        far = F.normalize(-0.9 * base + 0.4 * F.normalize(torch.randn(dim, generator=g), dim=0)
                          + 0.01 * torch.randn(100 - n_close, dim, generator=g), dim=1)
        pool_tags_r = torch.ones(100, dtype=torch.long)
        pool_tags_r[:n_same] = tag
        rq, rt, rp = base[None], torch.tensor([tag]), torch.cat([close, far])
        value, revised, _ = _ref_lil(ref, rq, rt, rp, pool_tags_r)
        for acc, item in zip((rect_q, rect_tags, rect_pool, rect_pool_tags, rect_lil, rect_revised),
                             (rq, rt, rp, pool_tags_r, value, revised), strict=True):
            acc.append(item)
    # LiG on the first case's anchors (tags as given), prototypes near the class centres.
    protos = F.normalize(torch.randn(classes, dim, generator=g), dim=1)
    lig_fn = ref.losses.LIG_Loss(temperature=0.1, base_temperature=0.1)
    qg = case["q"].clone().requires_grad_(True)
    lig = lig_fn(qg, protos, case["tags"].float().view(-1, 1))
    lig.sum().backward()
    lig_grad = qg.grad
    # PTC on a feature map with a label that has ignored cells.
    fmap = torch.randn(2, 16, 6, 7, generator=g)
    ptc_label = torch.randint(0, 3, (2, 6, 7), generator=g)
    ptc_label[torch.rand(2, 6, 7, generator=g) < 0.2] = IGNORE
    fg = fmap.clone().requires_grad_(True)
    ptc = ref.losses.get_masked_ptc_loss(fg, ref.camutils.label_to_aff_mask(ptc_label))
    ptc.backward()
    # Balanced segmentation loss.
    seg_logits = torch.randn(2, 4, 10, 12, generator=g) * 2
    seg_label = torch.randint(0, 4, (2, 10, 12), generator=g)
    seg_label[torch.rand(2, 10, 12, generator=g) < 0.15] = IGNORE
    sg = seg_logits.clone().requires_grad_(True)
    seg = ref.losses.get_seg_loss(sg, seg_label, ignore_index=IGNORE)
    seg.backward()
    save(out, "losses", {"tau_lil": 0.08, "tau_lig": 0.1, "n_iter": 2001,
                         "functions": ["model/losses.py:88", "model/losses.py:14", "model/losses.py:173",
                                       "utils/camutils.py:158", "model/losses.py:190"]},
         lil_q=case["q"], lil_tags=case["tags"], lil_pool=pool, lil_pool_tags=pool_tags, lil=lil,
         lil_revised=lil_tags, lil_grad=lil_grad,
         rect_q=torch.stack(rect_q), rect_tags=torch.stack(rect_tags), rect_pool=torch.stack(rect_pool),
         rect_pool_tags=torch.stack(rect_pool_tags), rect_lil=torch.stack(rect_lil),
         rect_revised=torch.stack(rect_revised),
         lig_prototypes=protos, lig=lig.detach().reshape(()), lig_grad=lig_grad,
         ptc_feats=fmap, ptc_label=ptc_label, ptc=ptc.detach(), ptc_grad=fg.grad,
         seg_logits=seg_logits, seg_label=seg_label, seg=seg.detach(), seg_grad=sg.grad)


def stage_state(ref: Reference, out: Path) -> None:
    """network.update_prototype and network._dequeue_and_enqueue (model/model_seco.py:56, :109)."""
    net = tiny_network(ref)
    g = torch.Generator().manual_seed(60)
    dim, classes = 16, TINY_CLASSES
    protos0 = F.normalize(torch.randn(classes, dim, generator=g), dim=1)
    net.prototypes = protos0.clone()
    embeds = torch.randn(3, 6, dim, generator=g)
    label_idx = torch.tensor([[[2], [-1], [2], [4], [1], [2]], [[3], [3], [-1], [-1], [3], [1]],
                              [[-1], [-1], [-1], [-1], [-1], [-1]]])
    protos = []
    for e, lab in zip(embeds, label_idx, strict=True):
        protos.append(net.update_prototype(e, lab).clone())
    # Queue of 48 keys, 12 keys per step, 5 steps (wraps once).
    queue0 = F.normalize(torch.randn(48, dim, generator=g), dim=1)
    net.queue = queue0.clone()
    net.queue_label_flag = torch.zeros(48, 1)
    net.queue_ptr = torch.zeros(1, dtype=torch.long)
    args = reference_args(moco_queue=48)
    keys = F.normalize(torch.randn(5, 12, dim, generator=g), dim=2)
    key_tags = torch.randint(-1, classes + 1, (5, 12), generator=g)
    queues, flags, ptrs = [], [], []
    for k, t in zip(keys, key_tags, strict=True):
        net._dequeue_and_enqueue(k, t.float().view(-1, 1), args)
        queues.append(net.queue.clone())
        flags.append(net.queue_label_flag.clone().view(-1).long())
        ptrs.append(int(net.queue_ptr))
    save(out, "state", {"proto_m": 0.9, "moco_queue": 48,
                        "functions": ["model/model_seco.py:56", "model/model_seco.py:109"]},
         protos0=protos0, embeds=embeds, label_idx=label_idx, protos=torch.stack(protos),
         queue0=queue0, keys=keys, key_tags=key_tags, queues=torch.stack(queues), queue_tags=torch.stack(flags),
         ptrs=torch.tensor(ptrs))


def stage_optimiser(ref: Reference, out: Path) -> None:
    """utils/optimizer.py PolyWarmupAdamW with engine/optimizer_engine.py's four groups (lr, lr,
    10 lr, 10 lr; weight decay 0.01) on a quadratic, 220 steps (past a 150-step warm-up of 2000)."""
    g = torch.Generator().manual_seed(90)
    init = torch.randn(4, 3, generator=g)
    params = [torch.nn.Parameter(init[i].clone()) for i in range(4)]
    lr, wd, warmup, total = 6e-5, 1e-2, 150, 2000
    opt = ref.optimizer.PolyWarmupAdamW(
        params=[{"params": [p], "lr": lr * m, "weight_decay": wd} for p, m in zip(params, (1, 1, 10, 10), strict=True)],
        lr=lr, weight_decay=wd, betas=(0.9, 0.999), warmup_iter=warmup, max_iter=total, warmup_ratio=1e-6, power=0.9)
    steps = 220
    lrs = torch.zeros(steps, 4, dtype=torch.float64)
    for step in range(steps):
        opt.zero_grad()
        loss = sum(((p - 1.0) ** 2).sum() for p in params)
        loss.backward()
        opt.step()
        lrs[step] = torch.tensor([group["lr"] for group in opt.param_groups], dtype=torch.float64)
    save(out, "optimiser", {"lr": lr, "weight_decay": wd, "warmup_iters": warmup, "iters": total,
                            "warmup_ratio": 1e-6, "power": 0.9, "betas": [0.9, 0.999], "steps": steps,
                            "function": "utils/optimizer.py:38"},
         init=init, lrs=lrs, final=torch.stack([p.detach() for p in params]))


def _energy_inputs(g: torch.Generator, n: int, h: int, w: int, k: int) -> dict[str, torch.Tensor]:
    """Image, low-resolution logits (upsampled bilinearly to (h, w) by :func:`energy_logits`), pseudo label, box."""
    img = rgb_uint8(g, n, h, w, max(8, h // 8))
    low = smooth(g, (n, k, max(2, h // 16), max(2, w // 16)), 1) * 3
    label = torch.randint(0, k, (n, h, w), generator=g)
    label[torch.rand(n, h, w, generator=g) < 0.3] = IGNORE
    box = torch.tensor([[0, h, 0, w]] + [[h // 8, h, 0, w - w // 6]] * (n - 1))
    return {"image_u8": img, "logits_low": low, "label": label, "img_box": box}


def energy_logits(logits_low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(logits_low, size=size, mode="bilinear", align_corners=False)


def _ref_energy(ref: Reference, case: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """get_energy_loss with DenseEnergyLoss(weight 1e-7, sigma_rgb 15, sigma_xy 100, scale 0.5), as
    scripts/train_voc.py lines 167 and 210; returns (loss, d loss / d logits)."""
    assert ref.losses is not None
    layer = ref.losses.DenseEnergyLoss(weight=1e-7, sigma_rgb=15, sigma_xy=100, scale_factor=0.5)
    logits = energy_logits(case["logits_low"], tuple(case["image_u8"].shape[-2:])).requires_grad_(True)
    with cpu_only():
        loss = ref.losses.get_energy_loss(img=normalise(case["image_u8"]), logit=logits, label=case["label"],
                                          img_box=case["img_box"], loss_layer=layer)
        loss.sum().backward()  # its backward calls .cuda() too
    return loss.detach().reshape(()), logits.grad


def stage_crf(ref: Reference, out: Path) -> None:
    """DenseEnergyLoss through get_energy_loss (model/losses.py:205, :224) on three image sizes."""
    g = torch.Generator().manual_seed(70)
    items: dict[str, Any] = {}
    sizes = [(2, 64, 64), (2, 96, 128), (1, 224, 224)]
    for i, (n, h, w) in enumerate(sizes):
        case = _energy_inputs(g, n, h, w, k=4)
        loss, grad = _ref_energy(ref, case)
        case_store = dict(case, label=case["label"].to(torch.uint8))
        items.update({f"c{i}_{k}": v for k, v in case_store.items()})
        items[f"c{i}_loss"] = loss
        if h * w <= 96 * 128:  # the gradient of the largest case is not stored (size)
            items[f"c{i}_grad"] = grad
    save(out, "crf", {"sizes": sizes, "weight": 1e-7, "sigma_rgb": 15, "sigma_xy": 100, "scale": 0.5,
                      "functions": ["model/losses.py:205", "model/losses.py:224", "model/losses.py:248"]},
         **items)


def crf_error_table(ref: Reference, out: Path) -> list[dict[str, Any]]:
    """Relative error of our CRF regulariser against the reference's and against the exact dense
    energy, by image side S (square, batch 1, 4 classes) and cell factor f."""
    from seco_deploy.losses import crf_energy_loss

    rows = []
    g = torch.Generator().manual_seed(80)
    for side in (64, 128, 224, 320, 448):
        case = _energy_inputs(g, 1, side, side, k=4)
        ref_loss, ref_grad = _ref_energy(ref, case)
        logits = energy_logits(case["logits_low"], (side, side))
        rgb = case["image_u8"].float()
        inside = torch.zeros(1, side, side)
        y0, y1, x0, x1 = case["img_box"][0].tolist()
        inside[:, y0:y1, x0:x1] = 1
        unl = case["label"] == IGNORE
        points = math.ceil(side * 0.5) ** 2
        results = {}
        for f in (1, 2, 3, 4, 6, 8):
            if side // 2 < 4 * f:
                continue
            max_points = math.ceil(points / f**2)
            while math.ceil(math.sqrt(points / max_points)) > f:
                max_points += 1
            lg = logits.clone().requires_grad_(True)
            t0 = time.perf_counter()
            loss = crf_energy_loss(rgb, torch.softmax(lg, 1), inside, unl, max_points=max_points)
            loss.backward()
            seconds = time.perf_counter() - t0
            results[f] = (float(loss), lg.grad.clone(), seconds)
        exact, exact_grad, _ = results[1]
        for f, (value, grad, seconds) in results.items():
            cos_ref = float(F.cosine_similarity(grad.flatten(), ref_grad.flatten(), dim=0))
            row = {"side": side, "points": points, "f": f, "ours": value, "reference": float(ref_loss),
                   "exact_dense": exact, "rel_err_vs_reference": (value - float(ref_loss)) / abs(float(ref_loss)),
                   "rel_err_vs_exact": (value - exact) / abs(exact),
                   "grad_cosine_vs_reference": cos_ref,
                   "grad_cosine_vs_exact": float(F.cosine_similarity(grad.flatten(), exact_grad.flatten(), dim=0)),
                   "seconds": round(seconds, 3)}
            rows.append(row)
            print(f"  S={side:3d} f={f} ours {value:.6g} ref {float(ref_loss):.6g} exact {exact:.6g} "
                  f"err/ref {row['rel_err_vs_reference']:+.4f} err/exact {row['rel_err_vs_exact']:+.5f} "
                  f"grad cos/ref {cos_ref:.4f} ({seconds:.2f} s)", flush=True)
        ref_vs_exact = (float(ref_loss) - exact) / abs(exact)
        print(f"  S={side:3d} reference vs exact dense: {ref_vs_exact:+.4f}", flush=True)
    (out / "crf_error.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


# ---------------------------------------------------------------------------- README
def write_readme(out: Path, command: str) -> None:
    import timm

    timm_version = timm.__version__
    changes = "\n".join(f"{i}. {c}" for i, c in enumerate(CPU_CHANGES, 1))
    files = "\n".join(f"- `{p.name}`" for p in sorted(out.glob("*.npz")))
    text = f"""# Reference fixtures (issue 13)

Inputs and outputs of the reference implementation's own functions, for
`tests/test_fidelity_*.py`, which read only these files (no network, no reference checkout).
What each stage compares and the largest differences measured: `docs/fidelity.md`.

- Reference: GitHub `{REFERENCE_REPO}`, commit `{REFERENCE_COMMIT}`.
- CRF extension: GitHub `{BILATERAL_REPO}`, commit `{BILATERAL_COMMIT}`, `pytorch/wrapper/bilateralfilter`.
- Written by `benchmarks/reference_fixtures.py` (ours; it imports the reference from the folder given).
  Every `.npz` holds a `meta` entry (JSON: parameters, the reference functions as `file:line`).

## Changes made to run the reference on the CPU

No file of the reference is edited. At import or run time only (`benchmarks/reference_env.py`):

{changes}

## Regenerate every file

The reference at its commit in `REF_DIR`, the extension built into `BILATERAL_DIR` (change 6
above), then, from the repository root, with the package's virtualenv (about 70 s on 2 cores):

```
{command}
```

Here: `REF_DIR` was the reference's tree at `{REFERENCE_COMMIT[:7]}` (a `git worktree`/`git archive` of a
mirror), `BILATERAL_DIR` the build described above; torch {torch.__version__}, timm {timm_version}, numpy
{np.__version__}, Python {sys.version.split()[0]}.

## Files

{files}
- `crf_error.json`: the CRF regulariser's relative error against the reference and the exact dense
  energy, by image side and cell factor f.
"""
    (out / "README.md").write_text(text)


STAGES = {
    "cam_fusion": stage_cam_fusion,
    "inference": stage_inference,
    "cam_labels": stage_cam_labels,
    "crop_tags": stage_crop_tags,
    "par": stage_par,
    "losses": stage_losses,
    "state": stage_state,
    "optimiser": stage_optimiser,
    "crf": stage_crf,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref_dir", help="checkout of zwyang6/SeCo at 202357f")
    parser.add_argument("--bilateral", required=True, help="folder with the built bilateralfilter extension")
    parser.add_argument("--out", default="tests/fixtures/reference")
    parser.add_argument("--only", nargs="*", choices=sorted(STAGES), help="regenerate these stages only")
    parser.add_argument("--skip-crf-table", action="store_true", help="keep crf_error.json as it is")
    args = parser.parse_args(argv)

    torch.set_num_threads(max(1, torch.get_num_threads()))
    torch.set_flush_denormal(True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ref = load_reference(args.ref_dir, args.bilateral)
    for name in args.only or list(STAGES):
        print(f"{name}:", flush=True)
        STAGES[name](ref, out)
    if not args.skip_crf_table and not args.only:
        print("crf error table:", flush=True)
        crf_error_table(ref, out)
    write_readme(out, "OMP_WAIT_POLICY=PASSIVE python benchmarks/reference_fixtures.py REF_DIR "
                      "--bilateral BILATERAL_DIR --out tests/fixtures/reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
