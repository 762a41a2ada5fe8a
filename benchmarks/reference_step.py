"""One full training iteration of the reference implementation on the CPU, and an interleaved timer.

:class:`ReferenceStep` builds the reference's network, PAR, losses and ``PolyWarmupAdamW`` from a
checkout of zwyang6/SeCo (202357f) at a given size and runs one iteration on a synthetic batch held
in memory: the calls of ``scripts/train_voc.py`` lines 180-241 in their order (multi-scale CAMs,
``cam_to_label``, ``refine_cams_with_bkg_v2``, ``cam_to_roi_mask``, two ``assign_csc_tags``, the
network forward with its prototype update, teacher EMA and queue, the seven losses, backward and
the optimiser step), without the logging and the per-iteration ``multilabel_score`` (sklearn).
It runs the reference unwrapped (no ``DistributedDataParallel``: one process). Changes to run it
on the CPU: ``benchmarks/reference_env.py``; for bf16, the forward runs under ``torch.autocast``
(as ours) and the CRF energy outside it (the reference hands the probabilities to numpy, which
has no bf16; ours computes that term in float32 too).

:func:`interleave` times several iterations A, B, A, B, ... in one process for each setting
(dtype, threads) and reports min / median and the ratio; ``benchmarks/train_step.py --mode
reference --ref-dir REF --bilateral DIR`` calls it with our iteration as the other side.

    python benchmarks/reference_step.py REF --bilateral DIR --iters 2     # the reference alone
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_env import Reference, add_backbone, cpu_only, load_reference, reference_args  # noqa: E402


@dataclass(frozen=True)
class Size:
    """The benchmark size (issue 13): ViT-B width with 8 blocks, crop 224, 2 images, 10 local + 2
    global crops of 64 px, CAM scales (1, 0.5, 0.75, 1.5), the VOC queue and 20 classes."""

    width: int = 768
    depth: int = 8
    heads: int = 12
    crop: int = 224
    batch: int = 2
    local_crops: int = 10
    local_crop_size: int = 64
    num_classes: int = 20
    cam_scales: tuple[float, ...] = (1.0, 0.5, 0.75, 1.5)
    queue: int = 4608


def synthetic_batch(size: Size, seed: int = 0) -> dict[str, torch.Tensor]:
    """Normalised random views and multi-hot tags (each image has at least one class), full crop boxes."""
    g = torch.Generator().manual_seed(seed)
    b, s, c = size.batch, size.crop, size.num_classes
    tags = (torch.rand(b, c, generator=g) < 2.0 / c).float()
    tags[torch.arange(b), torch.randint(0, c, (b,), generator=g)] = 1.0
    return {
        "image": torch.randn(b, 3, s, s, generator=g),
        "global_view": torch.randn(b, 3, s, s, generator=g),
        "local_view": torch.randn(b, 3, s, s, generator=g),
        "img_box": torch.tensor([[0, s, 0, s]] * b),
        "tags": tags,
    }


class ReferenceStep:
    """The reference's training iteration at ``size`` (see the module docstring); call with ``n_iter``."""

    def __init__(self, ref: Reference, size: Size = Size(), seed: int = 0) -> None:
        self.ref = ref
        self.size = size
        add_backbone(ref, "bench_vit", embed_dim=size.width, depth=size.depth, num_heads=size.heads,
                     mlp_ratio=4, num_classes=0)
        # scripts/train_voc.py defaults, at the benchmark size.
        self.args = reference_args(
            num_classes=size.num_classes + 1, ctc_dim=size.width, moco_queue=size.queue, ncrops=size.local_crops + 2,
            backbone="bench_vit", pretrained=False, optimizer="PolyWarmupAdamW", lr=6e-5, warmup_lr=1e-6,
            wt_decay=1e-2, betas=(0.9, 0.999), power=0.9, warmup_iters=1500, max_iters=20000,
            w_ptc=0.3, w_lil=0.5, w_lig=0.5, w_seg=0.12, w_reg=0.05, high_thre=0.7, low_thre=0.25, bkg_thre=0.5,
            tag_threshold=0.2, cam_scales=size.cam_scales, ignore_index=255, cam2mask=10000,
            local_crop_size=size.local_crop_size, temp_lil=0.08, base_temp_lil=0.08, temp_lig=0.1,
            base_temp_lig=0.1,
        )
        torch.manual_seed(seed)
        network_engine = ref.import_module("engine.network_engine")
        optimizer_engine = ref.import_module("engine.optimizer_engine")
        with cpu_only():
            self.model, param_groups = network_engine.build_network(self.args)
            self.model.train()
            self.optim = optimizer_engine.build_optimizer(self.args, param_groups)
        losses = ref.losses
        assert losses is not None, "load the reference with the bilateral extension (bilateral_dir)"
        self.loss_layer = losses.DenseEnergyLoss(weight=1e-7, sigma_rgb=15, sigma_xy=100, scale_factor=0.5)
        self.lig = losses.LIG_Loss(temperature=self.args.temp_lig, base_temperature=self.args.base_temp_lig)
        self.lil = losses.LIL_Loss(temperature=self.args.temp_lil, base_temperature=self.args.base_temp_lil)
        self.par = ref.par.PAR(num_iter=10, dilations=[1, 2, 4, 8, 12, 24])
        batch = synthetic_batch(size, seed)
        self.inputs = batch["image"]
        self.cls_label = batch["tags"]
        single = self.cls_label.sum(1) == 1
        self.label_idx = torch.where(single, self.cls_label.argmax(1) + 1, -1).view(-1, 1)
        self.img_box = batch["img_box"]
        self.crops = [batch["image"], batch["global_view"], batch["local_view"]]  # raw, w, s images

    def __call__(self, n_iter: int, autocast: torch.dtype | None = None) -> dict[str, float]:
        """One iteration (forward under ``autocast`` when given, then backward and the optimiser step)."""
        a, ref = self.args, self.ref
        cu, losses = ref.camutils, ref.losses
        amp = (torch.autocast("cpu", dtype=autocast) if autocast is not None else contextlib.nullcontext())
        with cpu_only():
            with amp:
                inputs, cls_label, img_box = self.inputs, self.cls_label, self.img_box
                inputs_denorm = ref.imutils.denormalize_img2(inputs.clone())
                cams, cams_aux = cu.multi_scale_cam2(self.model, inputs=inputs, scales=a.cam_scales)
                valid_cam, _ = cu.cam_to_label(cams.detach(), cls_label=cls_label, img_box=img_box, ignore_mid=True,
                                               bkg_thre=a.bkg_thre, high_thre=a.high_thre, low_thre=a.low_thre,
                                               ignore_index=a.ignore_index)
                refined = cu.refine_cams_with_bkg_v2(self.par, inputs_denorm, cams=valid_cam, cls_labels=cls_label,
                                                     high_thre=a.high_thre, low_thre=a.low_thre,
                                                     ignore_index=a.ignore_index, img_box=img_box)
                roi_source = cams if n_iter >= a.cam2mask else cams_aux
                roi = cu.cam_to_roi_mask(roi_source.detach(), cls_label=cls_label, img_box=img_box, ignore_mid=True,
                                         bkg_thre=a.bkg_thre, low_thre=a.low_thre, high_thre=a.high_thre,
                                         ignore_index=a.ignore_index)
                crops_k, _ = cu.assign_csc_tags(images=self.crops[2], roi_mask=roi, crop_num=a.ncrops - 2,
                                                crop_size=a.local_crop_size, threshold=a.tag_threshold)
                crops_q, flags = cu.assign_csc_tags(images=self.crops[0], roi_mask=roi, crop_num=a.ncrops - 2,
                                                    crop_size=a.local_crop_size, threshold=a.tag_threshold)
                roi_crops = self.crops[:2] + crops_q + crops_k
                flags = flags.reshape(-1, 1)
                cls, segs, fmap, cls_aux, out_q, feats_all, flags_all, prototype = self.model(
                    inputs, label_idx=self.label_idx, crops=roi_crops, cls_flags_local=flags, n_iter=n_iter)
                cls_loss = F.multilabel_soft_margin_loss(cls, cls_label)
                cls_loss_aux = F.multilabel_soft_margin_loss(cls_aux, cls_label)
                lil_loss, flags_revised = self.lil(out_q, feats_all, flags, flags_all, n_iter)
                lig_loss = self.lig(out_q, prototype, flags_revised)
                segs = F.interpolate(segs, size=refined.shape[1:], mode="bilinear", align_corners=False)
                seg_loss = losses.get_seg_loss(segs, refined.type(torch.long), ignore_index=a.ignore_index)
                resized_aux = F.interpolate(cams_aux, size=fmap.shape[2:], mode="bilinear", align_corners=False)
                _, label_aux = cu.cam_to_label(resized_aux.detach(), cls_label=cls_label, img_box=img_box,
                                               ignore_mid=True, bkg_thre=a.bkg_thre, high_thre=a.high_thre,
                                               low_thre=a.low_thre, ignore_index=a.ignore_index)
                ptc_loss = losses.get_masked_ptc_loss(fmap, cu.label_to_aff_mask(label_aux))
            with torch.autocast("cpu", enabled=False):
                reg_loss = losses.get_energy_loss(img=inputs, logit=segs.float(), label=refined, img_box=img_box,
                                                  loss_layer=self.loss_layer)
            loss = cls_loss + cls_loss_aux + a.w_ptc * ptc_loss
            if n_iter > 1000:
                loss = loss + a.w_lig * lig_loss + a.w_lil * lil_loss
            if n_iter > 2000:
                loss = loss + a.w_seg * seg_loss + a.w_reg * reg_loss
            self.optim.zero_grad()
            loss.backward()
            self.optim.step()
        terms = {"cls": cls_loss, "cls_aux": cls_loss_aux, "ptc": ptc_loss, "lig": lig_loss, "lil": lil_loss,
                 "seg": seg_loss, "reg": reg_loss, "total": loss}
        return {k: float(v.detach().float().sum()) for k, v in terms.items()}


# ---------------------------------------------------------------------------- interleaved timing
@dataclass(frozen=True)
class Setting:
    dtype: str  # "fp32" | "bf16"
    threads: int

    @property
    def autocast(self) -> torch.dtype | None:
        return torch.bfloat16 if self.dtype == "bf16" else None


Side = Callable[[int, torch.dtype | None], Any]  # (iteration offset, autocast dtype) -> anything


def interleave(sides: dict[str, Side], settings: Iterable[Setting], repeats: int = 3, warmup: int = 1,
               log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """For each setting: ``warmup`` untimed iterations per side, then ``repeats`` rounds in which every
    side runs once, in turn (A, B, A, B, ...). Returns one record per setting with each side's wall
    seconds (all, min, median) and CPU seconds of this process (all, median: the work done, which
    a loaded machine inflates less than the wall time) and, for two sides, the ratios second / first."""
    results = []
    names = list(sides)
    for setting in settings:
        torch.set_num_threads(setting.threads)
        for name in names:
            for w in range(warmup):
                sides[name](w, setting.autocast)
        times: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for r in range(repeats):
            for name in names:
                c0, t0 = time.process_time(), time.perf_counter()
                sides[name](warmup + r, setting.autocast)
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
            log(f"  {setting.dtype} {setting.threads} thread(s) round {r + 1}: "
                + ", ".join(f"{n} {times[n][-1]:.2f} s (cpu {cpu[n][-1]:.2f} s)" for n in names))
        rec: dict[str, Any] = {"dtype": setting.dtype, "threads": setting.threads}
        for n in names:
            rec[n] = {"seconds": [round(t, 3) for t in times[n]], "min": min(times[n]),
                      "median": statistics.median(times[n]), "cpu_seconds": [round(t, 3) for t in cpu[n]],
                      "cpu_median": statistics.median(cpu[n])}
        if len(names) == 2:
            a, b = names
            rec["ratio_min"] = rec[b]["min"] / rec[a]["min"]
            rec["ratio_median"] = rec[b]["median"] / rec[a]["median"]
            rec["ratio_cpu_median"] = rec[b]["cpu_median"] / rec[a]["cpu_median"]
        results.append(rec)
    return results


def format_table(results: list[dict[str, Any]], names: list[str]) -> str:
    """A Markdown table: setting, wall min / median and CPU median seconds per side, ratios (second / first)."""
    two = len(names) == 2
    head = "| dtype | threads | " + " | ".join(f"{n}: wall min / median, cpu median (s)" for n in names)
    head += " | ratio wall min | ratio wall median | ratio cpu median |" if two else " |"
    rule = "| --- | --- | " + " | ".join("---" for _ in names) + (" | --- | --- | --- |" if two else " |")
    rows = [head, rule]
    for rec in results:
        cells = " | ".join(f"{rec[n]['min']:.2f} / {rec[n]['median']:.2f}, {rec[n]['cpu_median']:.2f}" for n in names)
        ratio = (f" | x{rec['ratio_min']:.2f} | x{rec['ratio_median']:.2f} | x{rec['ratio_cpu_median']:.2f} |"
                 if two else " |")
        rows.append(f"| {rec['dtype']} | {rec['threads']} | {cells}{ratio}")
    return "\n".join(rows)


def reference_side(ref_dir: str, bilateral_dir: str, size: Size = Size(), first_iter: int = 2001) -> Side:
    """The reference's iteration as a timing side (iterations ``first_iter + offset``: every term on)."""
    torch.set_flush_denormal(True)
    step = ReferenceStep(load_reference(ref_dir, bilateral_dir), size)
    return lambda offset, autocast: step(first_iter + offset, autocast)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref_dir")
    parser.add_argument("--bilateral", required=True, help="folder with the built bilateralfilter extension")
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    side = reference_side(args.ref_dir, args.bilateral)
    setting = Setting(args.dtype, args.threads)
    torch.set_num_threads(setting.threads)
    for i in range(args.iters):
        t0 = time.perf_counter()
        terms = side(i, setting.autocast)
        print(f"reference iteration {i}: {time.perf_counter() - t0:.2f} s  "
              + " ".join(f"{k} {v:.4g}" for k, v in terms.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

