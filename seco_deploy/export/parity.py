"""Parity check: does an exported model compute what the PyTorch network computes?

Both models get the same random normalised images (seeded, standard normal) at three shapes;
for every output the check reports ``max |exported - pytorch|`` and, for ``seg_logits``, the
fraction of grid cells whose argmax class agrees. It passes when, for every shape and output,

    max |diff| <= limit   and   agreement >= min_agreement

with the tolerances (:data:`FP32_TOLERANCE`, :data:`FP16_TOLERANCE`):
  - fp32: ``limit = 1e-3`` (absolute, on logits), agreement >= 99.9%;
  - fp16 (LayerNorm in fp32): ``limit = 0.02 * max(1, max |pytorch output|)`` (about 20 fp16
    ulps at the output's scale, relative so that it holds for trained logits of any size),
    agreement >= 99%.

Shapes (:func:`parity_shapes`): the export shape (batch 2, the crop size), a batch of 3 at a
non-square size the export did not see, and a batch of 1 at a third size; a static export keeps
its fixed sides and varies only the batch (a fully static export repeats its one shape with new
images). A TensorRT engine uses its profile's ``opt``, a batch of 3 (or its max batch) at the
largest height and smallest width, and a batch of 1 at the smallest sides.

The PyTorch side runs in strict fp32 (TF32 off for matmuls and cuDNN while it runs).

int8 (:data:`INT8_TOLERANCE`, :func:`check_on_images`): rounding to 8 bits moves logits by a few
percent of their range by design, so the logit difference is reported, not judged, and random
noise is the wrong input (its activation ranges are not the calibrated ones). The check runs
real images (preprocessed as the predictor does, at the crop size; held out from calibration
when the folder has enough) and judges what users see: the argmax masks, upsampled to the input
size, agree with PyTorch fp32's on >= 98 % of pixels, and, when the images have masks, the mIoU
against them drops by at most 1 point (the targets of issue 15).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from seco_deploy.cam import scaled_size
from seco_deploy.runtime.engine_file import ProfileShapes

Outputs = dict[str, torch.Tensor]
Runner = Callable[[torch.Tensor], Outputs]


@dataclass(frozen=True)
class Tolerance:
    """``atol`` is absolute, or when ``relative`` a fraction of ``max(1, max |reference|)``."""

    atol: float
    min_agreement: float
    relative: bool = False
    judge_diff: bool = True  # False: max |diff| is reported only (int8)
    max_miou_drop: float | None = None  # points of mIoU (0-100) below the reference, when masks are given

    def limit(self, reference_max: float) -> float:
        return self.atol * max(1.0, reference_max) if self.relative else self.atol

    def describe(self) -> str:
        if not self.judge_diff:
            text = f"argmax pixel agreement >= {self.min_agreement:.1%} on real images"
            if self.max_miou_drop is not None:
                text += f", mIoU drop <= {self.max_miou_drop:g} point (with masks)"
            return text + "; logit |diff| reported, not judged (int8 rounding)"
        size = f"{self.atol:g} x max(1, max|ref|)" if self.relative else f"{self.atol:g}"
        return f"max |diff| <= {size}, argmax agreement >= {self.min_agreement:.1%}"


FP32_TOLERANCE = Tolerance(atol=1e-3, min_agreement=0.999)
FP16_TOLERANCE = Tolerance(atol=2e-2, min_agreement=0.99, relative=True)
INT8_TOLERANCE = Tolerance(atol=float("inf"), min_agreement=0.98, judge_diff=False, max_miou_drop=1.0)


def tolerance_for(precision: str) -> Tolerance:
    return {"fp16": FP16_TOLERANCE, "int8": INT8_TOLERANCE}.get(precision, FP32_TOLERANCE)


@dataclass
class ShapeResult:
    shape: tuple[int, int, int, int]
    max_abs_diff: dict[str, float]
    reference_max: dict[str, float]
    agreement: float
    limits: dict[str, float]

    @property
    def passed(self) -> bool:
        return all(self.max_abs_diff[k] <= self.limits[k] for k in self.max_abs_diff)


@dataclass
class ParityReport:
    """Per-shape figures and the verdict."""

    tolerance: Tolerance
    results: list[ShapeResult] = field(default_factory=list)
    miou: dict[str, float] | None = None  # {"reference", "candidate"} in points, when masks were given
    images: int = 0  # real images checked (check_on_images); 0 for the random-input check

    @property
    def miou_drop(self) -> float | None:
        return None if self.miou is None else self.miou["reference"] - self.miou["candidate"]

    @property
    def max_abs_diff(self) -> float:
        return max((max(r.max_abs_diff.values()) for r in self.results), default=0.0)

    @property
    def min_agreement(self) -> float:
        return min((r.agreement for r in self.results), default=1.0)

    @property
    def passed(self) -> bool:
        drop, limit = self.miou_drop, self.tolerance.max_miou_drop
        return bool(self.results) and all(
            (r.passed or not self.tolerance.judge_diff) and r.agreement >= self.tolerance.min_agreement
            for r in self.results
        ) and (drop is None or limit is None or drop <= limit)

    def lines(self) -> list[str]:
        """Human-readable rows: shape, max |diff| per output, argmax agreement, verdict."""
        rows = []
        for r in self.results:
            diffs = ", ".join(f"{k} {v:.2e}" for k, v in r.max_abs_diff.items())
            ok = (r.passed or not self.tolerance.judge_diff) and r.agreement >= self.tolerance.min_agreement
            shape = "x".join(str(s) for s in r.shape)
            rows.append(f"{shape}: max|diff| {diffs}; argmax agreement {r.agreement:.4%} {'ok' if ok else 'FAIL'}")
        if self.miou is not None:
            drop, limit = self.miou_drop or 0.0, self.tolerance.max_miou_drop
            ok = limit is None or drop <= limit
            rows.append(f"mIoU on {self.images} labelled images: reference {self.miou['reference']:.2f}, "
                        f"exported {self.miou['candidate']:.2f} (drop {drop:+.2f}) {'ok' if ok else 'FAIL'}")
        rows.append(f"tolerance: {self.tolerance.describe()}")
        return rows

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "tolerance": self.tolerance.describe(),
            "max_abs_diff": self.max_abs_diff,
            "min_agreement": self.min_agreement,
            "miou": self.miou,
            "images": self.images,
            "shapes": [
                {"shape": list(r.shape), "max_abs_diff": r.max_abs_diff, "agreement": r.agreement} for r in self.results
            ],
        }


def parity_shapes(input_shape: Sequence[int], crop_size: int, patch_size: int) -> list[tuple[int, int, int, int]]:
    """Three (N, 3, H, W) shapes for an ONNX export whose ``input_shape`` has -1 on dynamic axes."""
    n_fixed, _, h_fixed, w_fixed = input_shape
    base = scaled_size(crop_size, crop_size, 1.0, patch_size)[0]
    if h_fixed == -1 or w_fixed == -1:
        sizes = [
            (base, base),
            (scaled_size(crop_size, crop_size, 1.25, patch_size)[0],
             scaled_size(crop_size, crop_size, 0.75, patch_size)[0]),
            (base + patch_size, max(patch_size, base - patch_size)),
        ]
    else:
        sizes = [(h_fixed, w_fixed)] * 3
    batches = [2, 3, 1] if n_fixed == -1 else [n_fixed] * 3
    return [(n, 3, h, w) for n, (h, w) in zip(batches, sizes, strict=True)]


def engine_parity_shapes(profile: ProfileShapes) -> list[tuple[int, int, int, int]]:
    """Three shapes inside a TensorRT profile: ``opt``, a batch of 3 (capped) at max H / min W, and min."""
    b3 = min(3, profile.max[0])
    return [
        tuple(profile.opt),  # type: ignore[list-item]
        (b3, 3, profile.max[2], profile.min[3]),
        (profile.min[0], 3, profile.min[2], profile.min[3]),
    ]


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Switch TF32 off for CUDA matmuls and cuDNN convolutions while the block runs."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def torch_runner(net: torch.nn.Module, with_cam: bool, device: torch.device | str = "cpu") -> Runner:
    """``images -> forward_infer outputs`` of ``net`` on ``device``, fp32, no gradients."""

    def run(images: torch.Tensor) -> Outputs:
        with torch.no_grad(), strict_fp32():
            out = net.forward_infer(images.to(device), with_cam=with_cam)
        return {k: v.float() for k, v in out.items()}

    return run


def compare(reference: Outputs, candidate: Outputs, tolerance: Tolerance, shape: Sequence[int]) -> ShapeResult:
    """Figures for one shape; the keys of ``reference`` are compared (``candidate`` must have them)."""
    diffs, maxima, limits = {}, {}, {}
    for name, ref in reference.items():
        if name not in candidate:
            raise KeyError(f"the exported model did not return '{name}'")
        got = candidate[name].detach().float().cpu()
        ref = ref.detach().float().cpu()
        if got.shape != ref.shape:
            raise ValueError(f"'{name}': exported shape {tuple(got.shape)} != PyTorch shape {tuple(ref.shape)}")
        diff = (got - ref).abs()
        diffs[name] = float(diff.max()) if diff.numel() and torch.isfinite(diff).all() else float("inf")
        maxima[name] = float(ref.abs().max()) if ref.numel() else 0.0
        limits[name] = tolerance.limit(maxima[name])
    seg_ref = reference["seg_logits"].float().cpu().argmax(1)
    seg_got = candidate["seg_logits"].float().cpu().argmax(1)
    agreement = float((seg_ref == seg_got).float().mean())
    return ShapeResult(tuple(int(s) for s in shape), diffs, maxima, agreement, limits)  # type: ignore[arg-type]


def check_parity(
    reference: Runner,
    candidate: Runner,
    shapes: Sequence[Sequence[int]],
    tolerance: Tolerance,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> ParityReport:
    """Run both on the same seeded standard-normal images at each shape and compare."""
    report = ParityReport(tolerance)
    for i, shape in enumerate(shapes):
        gen = torch.Generator().manual_seed(seed + i)
        images = torch.randn(*shape, generator=gen)
        result = compare(reference(images), candidate(images), tolerance, shape)
        report.results.append(result)
        if progress is not None:
            progress(_row(result, tolerance))
    return report


def _row(result: ShapeResult, tolerance: Tolerance) -> str:
    return ParityReport(tolerance, [result]).lines()[0]


def miou_points(confusion: torch.Tensor) -> float:
    """Mean IoU (0-100) over the classes present in the labels or the predictions of ``confusion`` (K x K)."""
    conf = confusion.double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean() * 100) if bool(present.any()) else 0.0


def confusion_of(pred: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """K x K counts (rows: label, columns: prediction); label 255 (and any label >= K) is ignored."""
    keep = labels < classes
    index = labels[keep] * classes + pred[keep]
    return torch.bincount(index.flatten(), minlength=classes * classes).view(classes, classes)


def check_on_images(
    reference: Runner,
    candidate: Runner,
    inputs: torch.Tensor,
    tolerance: Tolerance,
    masks: torch.Tensor | None = None,
    batch: int = 4,
    progress: Callable[[str], None] | None = None,
) -> ParityReport:
    """Parity on real preprocessed ``inputs`` (N, 3, S, S): the argmax of ``seg_logits`` upsampled to
    S x S (bilinear, as the predictor) agrees on at least ``min_agreement`` of the pixels, and with
    ``masks`` (N, S, S) the mIoU drop is at most ``max_miou_drop``. One row for the whole set (agreement
    over all its pixels, the largest logit difference of any batch)."""
    import torch.nn.functional as F

    report = ParityReport(tolerance, images=int(inputs.shape[0]))
    conf_ref = conf_got = None
    same = pixels = 0
    diffs: dict[str, float] = {}
    maxima: dict[str, float] = {}
    for start in range(0, inputs.shape[0], batch):
        x = inputs[start : start + batch]
        ref, got = reference(x), candidate(x)
        part = compare(ref, got, tolerance, x.shape)
        for name, value in part.max_abs_diff.items():
            diffs[name] = max(diffs.get(name, 0.0), value)
            maxima[name] = max(maxima.get(name, 0.0), part.reference_max[name])
        size = tuple(x.shape[2:])
        up_ref = F.interpolate(ref["seg_logits"].float().cpu(), size=size, mode="bilinear", align_corners=False)
        up_got = F.interpolate(got["seg_logits"].float().cpu(), size=size, mode="bilinear", align_corners=False)
        a_ref, a_got = up_ref.argmax(1), up_got.argmax(1)
        same += int((a_ref == a_got).sum())
        pixels += a_ref.numel()
        if masks is not None:
            k = up_ref.shape[1]
            labels = masks[start : start + batch]
            c_ref, c_got = confusion_of(a_ref, labels, k), confusion_of(a_got, labels, k)
            conf_ref = c_ref if conf_ref is None else conf_ref + c_ref
            conf_got = c_got if conf_got is None else conf_got + c_got
        if progress is not None:
            progress(f"parity: {min(start + batch, inputs.shape[0])}/{inputs.shape[0]} images")
    shape = tuple(int(s) for s in inputs.shape)
    limits = {name: tolerance.limit(m) for name, m in maxima.items()}
    report.results.append(ShapeResult(shape, diffs, maxima, same / max(pixels, 1), limits))  # type: ignore[arg-type]
    if conf_ref is not None and conf_got is not None:
        report.miou = {"reference": miou_points(conf_ref), "candidate": miou_points(conf_got)}
    return report
