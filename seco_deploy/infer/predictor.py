"""The predictor: images in, masks or pseudo-labels out, for any :class:`~seco_deploy.runtime.backends.Backend`.

Pipeline (memory stays flat over any number of images: inputs stream through bounded queues)::

    worker processes            main process (device)                 writer threads
    skip check / read_image --> group by resized shape --> batch  --> PNG / JPEG / npz (atomic)
                                resize, normalise, TTA, backend,      manifest line
                                upsample, fuse, argmax, refine

Modes (SPEC 3):

- ``mask``: for every scale s of ``scales`` (default: the model's ``mask_scales``), the image is
  resized to the base size times s (base: the training crop size, square like the reference; or
  ``resize="keep"``: the long side, keeping the aspect ratio; sides rounded to multiples of the
  patch size p) and run with its horizontal flip in one batch; decoder logits of the image and
  of the un-flipped flip are summed, upsampled bilinearly to the original size, and the maximum
  over scales is taken; argmax. ``crf``: dense CRF (:data:`seco_deploy.model.crf.MASK_CRF`) on the
  softmax before the argmax.
- ``pseudo``: CAM pseudo-labels. Per scale (default: the model's ``cam_scales``) the CAMs of the
  image and of the un-flipped flip, upsampled to the base size, are combined by elementwise max,
  ReLU'd and summed over scales; normalised per class to [0, 1]
  (:func:`seco_deploy.cam.normalise_cam`); upsampled to the original size; only the image's
  classes are kept: from the tags file, else the classes whose image logit (mean over scales
  and flips) exceeds ``cls_threshold``; background where the best kept value <= ``bkg_thre``
  (:func:`seco_deploy.cam.cam_to_label`). ``refine``: ``par`` runs PAR
  (:class:`seco_deploy.model.par.PAR`, the model's ``par_dilations`` / ``par_iters``) on the
  softmax of [``bkg_thre``, kept CAMs] at up to the crop size, then argmax; ``crf`` runs the
  dense CRF with a unary from the label map (:data:`seco_deploy.model.crf.LABEL_CRF`). Both
  only ever choose among background and the kept classes.

Never losing work: outputs are written atomically; an image whose requested outputs all exist
(and whose mask decodes) is skipped unless ``overwrite``; ``run.json`` in OUT records the
settings that shape the outputs, and a run with different settings over existing outputs is
refused (:class:`RunMismatchError`) unless ``overwrite``. Unreadable inputs become ``failed``
records with the reason; the others go on.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from seco_deploy.data.io import DEFAULT_MAX_PIXELS, ImageReadError, atomic_write_text, read_image, read_mask
from seco_deploy.infer.outputs import (
    OutputPaths,
    class_fractions,
    remove_stale_temporaries,
    write_cam,
    write_mask,
    write_overlay,
    write_probs,
)
from seco_deploy.infer.sources import InputItem
from seco_deploy.runtime.backends import Backend, ModelInfo
from seco_deploy.runtime.errors import BackendError

__all__ = [
    "MODES",
    "REFINES",
    "PredictOptions",
    "Predictor",
    "RunMismatchError",
    "RunSummary",
    "TagTable",
    "input_side",
]

MODES = ("mask", "pseudo")
REFINES = ("none", "par", "crf")
RESIZES = ("square", "keep")
RUN_FILE = "run.json"


class RunMismatchError(ValueError):
    """OUT holds outputs made with other settings; re-running would mix them."""


# ---------------------------------------------------------------------------- options
@dataclass
class PredictOptions:
    """Everything that shapes a prediction run; ``None`` means "the model's default"."""

    mode: str = "mask"
    scales: tuple[float, ...] | None = None
    flip: bool = True
    base_size: int | None = None
    resize: str = "square"
    crf: bool = False
    refine: str = "none"
    tags: TagTable | None = None
    cls_threshold: float | None = None
    bkg_thre: float | None = None
    overlay: bool = False
    save_probs: bool = False
    probs_scale: float = 0.25
    save_cam: bool = False
    batch: int = 4
    workers: int = 1
    overwrite: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    crf_implementation: str = "auto"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option that is wrong."""
        if self.mode not in MODES:
            raise ValueError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.refine not in REFINES:
            raise ValueError(f"--refine {self.refine!r}: choose one of {', '.join(REFINES)}")
        if self.resize not in RESIZES:
            raise ValueError(f"--resize {self.resize!r}: choose one of {', '.join(RESIZES)}")
        if self.mode == "mask" and self.refine != "none":
            raise ValueError("--refine applies to --mode pseudo; for masks use --crf")
        if self.mode == "pseudo" and self.crf:
            raise ValueError("--crf applies to --mode mask; for pseudo-labels use --refine crf")
        if self.mode == "mask" and self.tags is not None:
            raise ValueError("--tags applies to --mode pseudo")
        if self.scales is not None and (not self.scales or min(self.scales) <= 0):
            raise ValueError("--scales must list positive numbers, e.g. 1.0,1.25,1.5")
        if self.batch < 1:
            raise ValueError("--batch must be >= 1")
        if self.workers < 0:
            raise ValueError("--workers must be >= 0")
        if not 0 < self.probs_scale <= 1:
            raise ValueError("--probs-scale must lie in (0, 1]")
        if self.base_size is not None and self.base_size < 1:
            raise ValueError("--size must be a positive number of pixels")


class TagTable:
    """Image-level tags from a ``tags.csv`` (the dataset format: ``image,tags``, tags ``;``-separated).

    The file is checked against the model's classes when it is read: an unknown class raises
    :class:`seco_deploy.data.datasets.DatasetError` naming the file, line and class. An input
    finds its row by (1) its output name, (2) its path relative to the tags file's folder,
    (3) its file name, when that is unique in the file; all without extension.
    """

    def __init__(self, path: str | os.PathLike[str], classes: list[str]) -> None:
        from seco_deploy.data.datasets import read_tags_csv

        self.path = Path(path)
        self.root = os.path.abspath(self.path.parent)
        rows = read_tags_csv(self.path, classes)
        self.by_name = {name: tags for name, (_, tags) in rows.items()}
        stems: dict[str, list[str]] = collections.defaultdict(list)
        for name in self.by_name:
            stems[name.rsplit("/", 1)[-1]].append(name)
        self.by_stem = {stem: names[0] for stem, names in stems.items() if len(names) == 1}
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()

    def __len__(self) -> int:
        return len(self.by_name)

    def lookup(self, item: InputItem) -> np.ndarray | None:
        """Multi-hot tags float32 (C,) of ``item``, or None when the file has no row for it."""
        if item.name in self.by_name:
            return self.by_name[item.name]
        rel = os.path.relpath(os.path.abspath(item.path), self.root).replace(os.sep, "/")
        rel = os.path.splitext(rel)[0]
        if rel in self.by_name:
            return self.by_name[rel]
        stem = os.path.splitext(os.path.basename(item.path))[0]
        if stem in self.by_stem:
            return self.by_name[self.by_stem[stem]]
        return None


@dataclass
class RunSummary:
    """Counts of a run; ``exit_code`` 0 when nothing failed, 3 otherwise."""

    total: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    compute_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 3 if self.failed else 0

    def as_record(self) -> dict[str, Any]:
        processed = self.ok
        return {
            "type": "summary",
            "images": self.total,
            "ok": self.ok,
            "skipped": self.skipped,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(processed / self.seconds, 3) if self.seconds > 0 and processed else 0.0,
        }


def input_side(base: int, scale: float, patch: int) -> int:
    """``max(p, round(base * scale / p) * p)``: a TTA input side (same rule as the TensorRT profile)."""
    return max(patch, int(round(base * scale / patch)) * patch)


# ---------------------------------------------------------------------------- decoding (worker processes)
def _identity(x: Any) -> Any:
    return x


class _DecodeDataset(torch.utils.data.Dataset):
    """Item i -> ``{"index", "status": "decoded"|"skipped"|"failed", ...}``; runs in DataLoader workers."""

    def __init__(self, items: list[InputItem], paths: list[OutputPaths], classes: list[str], overwrite: bool,
                 max_pixels: int) -> None:
        self.items, self.paths, self.classes = items, paths, classes
        self.overwrite, self.max_pixels = overwrite, max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        start = time.perf_counter()
        item = self.items[index]
        if not self.overwrite:
            done = _complete_fractions(self.paths[index], self.classes, self.max_pixels)
            if done is not None:
                fractions, size = done
                return {"index": index, "status": "skipped", "classes": fractions, "size": size,
                        "seconds": time.perf_counter() - start}
        try:
            image = read_image(item.path, max_pixels=self.max_pixels)
        except ImageReadError as exc:
            return {"index": index, "status": "failed", "reason": exc.reason, "seconds": time.perf_counter() - start}
        except Exception as exc:  # noqa: BLE001 - any decoder crash is this input's failure, not the run's
            return {"index": index, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                    "seconds": time.perf_counter() - start}
        # A NumPy array travels pickled through the worker's pipe: for images this is cheaper than
        # a torch tensor, which opens a shared-memory file and a socket per image.
        return {"index": index, "status": "decoded", "image": image,
                "seconds": time.perf_counter() - start}


def _complete_fractions(paths: OutputPaths, classes: list[str], max_pixels: int) -> tuple[dict, list] | None:
    """``(class fractions, [H, W])`` of an existing complete mask when every output exists, else None."""
    for p in paths.all():
        try:
            if p.stat().st_size == 0:
                return None
        except OSError:
            return None
    try:
        mask = read_mask(paths.mask, max_pixels=max_pixels)
    except (ImageReadError, OSError, ValueError):
        return None
    return class_fractions(mask, classes), list(mask.shape)


# ---------------------------------------------------------------------------- the predictor
@dataclass
class _Decoded:
    index: int
    image: torch.Tensor  # uint8 (H, W, 3), CPU
    seconds: float
    tags: np.ndarray | None = None


@dataclass
class _Result:
    mask: np.ndarray
    probs: np.ndarray | None = None
    cam: np.ndarray | None = None
    tags: list[str] | None = None


class Predictor:
    """Runs one backend over a list of inputs; see the module docstring."""

    def __init__(self, backend: Backend, info: ModelInfo, options: PredictOptions) -> None:
        options.validate()
        self.backend = backend
        self.info = info
        self.options = options
        self.device = backend.device
        self.mode = options.mode
        self.classes = list(info.classes)
        if len(self.classes) > 256:
            raise ValueError(
                f"the model has {len(self.classes)} classes; 8-bit palette masks hold at most 256 (0..255)"
            )
        cfg = info.config
        self.bkg_thre = options.bkg_thre if options.bkg_thre is not None else (
            cfg.infer.bkg_thre if cfg is not None else 0.5)
        self.cls_threshold = options.cls_threshold if options.cls_threshold is not None else (
            cfg.infer.cls_threshold if cfg is not None else 0.0)
        default_scales = info.mask_scales if self.mode == "mask" else info.cam_scales
        self.scales = tuple(options.scales) if options.scales is not None else tuple(default_scales)
        self.base = int(options.base_size or info.crop_size)
        self.fixed = None
        if info.input_shape[2] != -1 and info.input_shape[3] != -1:
            self.fixed = (int(info.input_shape[2]), int(info.input_shape[3]))
            if len(self.scales) != 1:
                raise BackendError(
                    f"{info.source} has a static input of {self.fixed[0]}x{self.fixed[1]}: only one scale works "
                    f"(got --scales {','.join(map(str, self.scales))}); re-export with --dynamic for multi-scale TTA"
                )
        self.need_cam = self.mode == "pseudo" or options.save_cam
        if self.need_cam and not info.has_cam:
            raise BackendError(
                f"{info.source} has no CAM head (heads: {', '.join(info.heads)}); pseudo-labels and --save-cam "
                "need it: export with --heads seg,cam"
            )
        std = torch.tensor(info.std, device=self.device).view(1, 3, 1, 1) * 255.0
        self.scale = 1.0 / std
        self.shift = -torch.tensor(info.mean, device=self.device).view(1, 3, 1, 1) * 255.0 / std
        self._par = None
        self._signature: dict[str, Any] | None = None
        self.palette = np.asarray(info.palette, dtype=np.uint8)

    # ------------------------------------------------------------------ settings that shape outputs
    def signature(self) -> dict[str, Any]:
        """The settings recorded in ``OUT/run.json``; a re-run must match them to skip outputs."""
        if self._signature is None:
            self._signature = self._make_signature()
        return self._signature

    def _make_signature(self) -> dict[str, Any]:
        o = self.options
        return {
            "mode": self.mode,
            "model_sha256": _file_sha256(self.info.source),
            "classes": self.classes,
            "scales": list(self.scales),
            "flip": o.flip,
            "base_size": self.base,
            "resize": o.resize,
            "crf": o.crf,
            "refine": o.refine,
            "bkg_thre": self.bkg_thre if self.mode == "pseudo" else None,
            "cls_threshold": self.cls_threshold if self.mode == "pseudo" and o.tags is None else None,
            "tags_sha256": o.tags.sha256 if o.tags is not None else None,
        }

    def prepare_output(self, out_dir: str | os.PathLike[str]) -> None:
        """Create OUT and check / write ``OUT/run.json``; raises :class:`RunMismatchError` when
        OUT holds outputs of other settings (unless ``overwrite``). :meth:`run` calls it too."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        sig = self.signature()
        run_file = out_dir / RUN_FILE
        if run_file.exists() and not self.options.overwrite:
            try:
                old = json.loads(run_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
            if isinstance(old, dict) and old.get("signature") not in (None, sig):
                keys = sorted(set(sig) | set(old["signature"]))
                diffs = [k for k in keys if old["signature"].get(k) != sig.get(k)]
                raise RunMismatchError(
                    f"{out_dir} holds outputs made with other settings ({', '.join(diffs)} differ); re-running "
                    "would mix them: pass --overwrite to redo every image, or choose another --out"
                )
        atomic_write_text(run_file, json.dumps({"signature": sig}, indent=2) + "\n")

    # ------------------------------------------------------------------ the run
    def run(
        self,
        items: list[InputItem],
        out_dir: str | os.PathLike[str],
        manifest_path: str | os.PathLike[str] | None = None,
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ) -> RunSummary:
        """Predict every item; write outputs under ``out_dir`` and one manifest line per image.

        ``manifest_path`` defaults to ``out_dir/manifest.jsonl``; its last line is the summary.
        ``on_record`` is called with every image record (progress display).
        """
        o = self.options
        out = Path(out_dir)
        self.prepare_output(out)
        start = time.perf_counter()
        summary = RunSummary(total=len(items))
        paths = [OutputPaths.for_name(out, it.name, o.overlay, o.save_probs, o.save_cam) for it in items]
        remove_stale_temporaries(out, {it.name for it in items})
        manifest = Path(manifest_path) if manifest_path is not None else out / "manifest.jsonl"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        tags: list[np.ndarray | None] = [None] * len(items)
        todo: list[int] = []
        with open(manifest, "w", encoding="utf-8") as log, ThreadPoolExecutor(max_workers=2) as writers:
            pending: collections.deque[Future[dict[str, Any]]] = collections.deque()

            def emit(record: dict[str, Any]) -> None:
                status = record["status"]
                if status == "ok":
                    summary.ok += 1
                elif status == "skipped":
                    summary.skipped += 1
                else:
                    summary.failed += 1
                    summary.failures.append((record["path"], record.get("reason", "")))
                log.write(json.dumps(record, ensure_ascii=False) + "\n")
                log.flush()
                if on_record is not None:
                    on_record(record)

            def drain(limit: int) -> None:
                while len(pending) > limit or (pending and pending[0].done()):
                    emit(pending.popleft().result())

            for i, item in enumerate(items):
                if self.mode == "pseudo" and o.tags is not None:
                    tags[i] = o.tags.lookup(item)
                    if tags[i] is None:
                        emit(self._record(item, "failed", reason=f"no row for this image in {o.tags.path}"))
                        continue
                todo.append(i)
            dataset = _DecodeDataset([items[i] for i in todo], [paths[i] for i in todo], self.classes,
                                     o.overwrite, o.max_pixels)
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=None, shuffle=False, num_workers=o.workers, collate_fn=_identity,
                prefetch_factor=max(2, 2 * o.batch // max(o.workers, 1)) if o.workers > 0 else None,
                persistent_workers=False, pin_memory=self.device.type == "cuda",
            )
            for group in self._batches(loader, todo, tags, emit, items):
                t0 = time.perf_counter()
                results, errors = self._predict_safely(group)
                per_image = (time.perf_counter() - t0) / len(group)
                summary.compute_seconds += time.perf_counter() - t0
                for sample, reason in errors:
                    emit(self._record(items[sample.index], "failed", reason=reason,
                                      seconds=round(sample.seconds + per_image, 4)))
                for sample, result in results:
                    item = items[sample.index]
                    image = sample.image.numpy() if (o.overlay or o.save_cam) else None
                    pending.append(writers.submit(
                        self._write, item, paths[sample.index], out, image, result,
                        sample.seconds + per_image))
                drain(limit=4 * o.batch)
            drain(limit=0)
            summary.seconds = time.perf_counter() - start
            record = summary.as_record()
            record.update({"mode": self.mode, "model": self.info.source, "device": str(self.device)})
            log.write(json.dumps(record, ensure_ascii=False) + "\n")
        return summary

    def _predict_safely(
        self, group: list[_Decoded]
    ) -> tuple[list[tuple[_Decoded, _Result]], list[tuple[_Decoded, str]]]:
        """:meth:`_predict_batch`; when a batch fails (out of memory, a size the backend refuses),
        its images are retried one at a time and those that still fail are reported, not fatal."""
        try:
            return self._predict_batch(group), []
        except (RuntimeError, ValueError) as exc:
            if len(group) == 1:
                return [], [(group[0], f"prediction failed: {type(exc).__name__}: {_first_line(exc)}")]
        results: list[tuple[_Decoded, _Result]] = []
        errors: list[tuple[_Decoded, str]] = []
        for sample in group:
            r, e = self._predict_safely([sample])
            results += r
            errors += e
        return results, errors

    def _record(self, item: InputItem, status: str, **extra: Any) -> dict[str, Any]:
        return {"type": "image", "path": item.source, "name": item.name, "status": status, **extra}

    def _batches(self, loader: Any, todo: list[int], tags: list[np.ndarray | None],
                 emit: Callable[[dict[str, Any]], None], items: list[InputItem]) -> Iterator[list[_Decoded]]:
        """Decoded samples grouped by network input shape, ``batch`` at a time (bounded buffering)."""
        o = self.options
        groups: dict[tuple, list[_Decoded]] = {}
        buffered = 0
        limit = 4 * o.batch
        for sample in loader:
            index = todo[sample["index"]]
            item = items[index]
            status = sample["status"]
            seconds = round(sample["seconds"], 4)
            if status == "failed":
                emit(self._record(item, "failed", reason=sample["reason"], seconds=seconds))
                continue
            if status == "skipped":
                emit(self._record(item, "skipped", size=sample["size"], classes=sample["classes"], seconds=seconds))
                continue
            image = torch.from_numpy(sample["image"])
            decoded = _Decoded(index=index, image=image, seconds=sample["seconds"], tags=tags[index])
            key = self._shape_key(tuple(decoded.image.shape[:2]))
            groups.setdefault(key, []).append(decoded)
            buffered += 1
            if len(groups[key]) >= o.batch:
                buffered -= len(groups[key])
                yield groups.pop(key)
            elif buffered > limit:
                largest = max(groups, key=lambda k: len(groups[k]))
                buffered -= len(groups[largest])
                yield groups.pop(largest)
        for key in list(groups):
            yield groups.pop(key)

    # ------------------------------------------------------------------ sizes
    def _input_size(self, hw: tuple[int, int], scale: float) -> tuple[int, int]:
        if self.fixed is not None:
            return self.fixed
        p = self.info.patch_size
        if self.options.resize == "square":
            side = input_side(self.base, scale, p)
            return side, side
        h, w = hw
        long = max(h, w)
        return (input_side(round(self.base * h / long), scale, p), input_side(round(self.base * w / long), scale, p))

    def _shape_key(self, hw: tuple[int, int]) -> tuple:
        return tuple(self._input_size(hw, s) for s in self.scales)

    # ------------------------------------------------------------------ device work
    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the backend in chunks of at most ``max_batch`` (padding a static batch axis)."""
        limit = self.info.max_batch or x.shape[0]
        static_n = self.info.input_shape[0] if self.info.input_shape[0] != -1 else None
        if static_n is not None:
            limit = static_n
        outs: dict[str, list[torch.Tensor]] = collections.defaultdict(list)
        for chunk in x.split(limit):
            n = chunk.shape[0]
            if static_n is not None and n < static_n:
                chunk = torch.cat([chunk, chunk.new_zeros(static_n - n, *chunk.shape[1:])])
            result = self.backend(chunk.contiguous(), with_cam=self.need_cam)
            for key, value in result.items():
                outs[key].append(value[:n])
        return {k: torch.cat(v) if len(v) > 1 else v[0] for k, v in outs.items()}

    def _runs(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """uint8 (H, W, 3) CPU images, equal sizes contiguous -> float (n, 3, H, W) 0-255 runs on the device."""
        runs, i = [], 0
        while i < len(images):
            j = i + 1
            while j < len(images) and images[j].shape == images[i].shape:
                j += 1
            stack = images[i] if j == i + 1 else torch.stack(images[i:j])
            stack = stack.view(-1, *images[i].shape).to(self.device, non_blocking=True)
            runs.append(stack.permute(0, 3, 1, 2).float())
            i = j
        return runs

    def _network_input(self, runs: list[torch.Tensor], size: tuple[int, int], flip: bool = False) -> torch.Tensor:
        """Runs of float images -> the normalised network input (B, 3, h, w): bilinear resize
        (antialiased when shrinking), then ``(x - 255 mean) / (255 std)``; with ``flip`` the
        horizontal flips follow as images B..2B-1, written in place (no extra copies)."""
        parts = [
            r if tuple(r.shape[2:]) == size
            else F.interpolate(r, size=size, mode="bilinear", align_corners=False, antialias=True)
            for r in runs
        ]
        x = parts[0] if len(parts) == 1 else torch.cat(parts)
        b = x.shape[0]
        if not flip:
            return torch.addcmul(self.shift, x, self.scale)
        out = x.new_empty((2 * b, *x.shape[1:]))
        torch.addcmul(self.shift, x, self.scale, out=out[:b])
        reverse = torch.arange(size[1] - 1, -1, -1, device=x.device)
        torch.index_select(out[:b], 3, reverse, out=out[b:])
        return out

    @torch.inference_mode()
    def _predict_batch(self, group: list[_Decoded]) -> list[tuple[_Decoded, _Result]]:
        """Masks (and requested extras) for one group of images with the same input shapes.

        Returns ``(sample, result)`` pairs (samples reordered so equal original sizes are adjacent).
        """
        group = sorted(group, key=lambda s: tuple(s.image.shape))
        b = len(group)
        runs = self._runs([s.image for s in group])
        images = [image for run in runs for image in run]  # float (3, H, W) views, in group order
        base_hw = tuple(runs[0].shape[2:])
        segs: list[torch.Tensor] = []  # per scale: (B, C+1, h, w) logits, image + un-flipped flip
        cam_sum: torch.Tensor | None = None
        cls_sum: torch.Tensor | None = None
        cam_base = self._input_size(base_hw, 1.0)
        for scale in self.scales:
            out = self._forward(self._network_input(runs, self._input_size(base_hw, scale), self.options.flip))
            if self.mode == "mask":
                segs.append(out["seg"][:b] + out["seg"][b:].flip(-1) if self.options.flip else out["seg"])
            if self.need_cam:
                cam = F.interpolate(out["cam"], size=cam_base, mode="bilinear", align_corners=False)
                cam = F.relu(torch.maximum(cam[:b], cam[b:].flip(-1)) if self.options.flip else cam)
                cam_sum = cam if cam_sum is None else cam_sum + cam
                cls = out["cls"].view(-1, b, out["cls"].shape[-1]).mean(0)
                cls_sum = cls if cls_sum is None else cls_sum + cls
        labels = cam_norm = None
        if self.need_cam:
            from seco_deploy.cam import normalise_cam

            assert cam_sum is not None and cls_sum is not None
            cam_norm = normalise_cam(cam_sum)  # (B, C, S, S)
            cls_mean = cls_sum / len(self.scales)
            labels = torch.stack([
                torch.as_tensor(s.tags, device=self.device) if s.tags is not None
                else (cls_mean[i] > self.cls_threshold).float()
                for i, s in enumerate(group)
            ])
        # Full-resolution maps are made one image at a time, so memory holds one at most.
        results = []
        for i, (sample, image) in enumerate(zip(group, images, strict=True)):
            size = tuple(image.shape[1:])
            cam_full = None
            if cam_norm is not None:
                cam_full = F.interpolate(cam_norm[i : i + 1], size=size, mode="bilinear", align_corners=False)[0]
            if self.mode == "mask":
                logits = None
                for seg in segs:  # maximum over scales of the upsampled logits
                    up = F.interpolate(seg[i : i + 1], size=size, mode="bilinear", align_corners=False)[0]
                    logits = up if logits is None else torch.maximum(logits, up)
                result = self._finish_mask(logits, sample)
            else:
                assert labels is not None and cam_full is not None
                result = self._finish_pseudo(cam_full, labels[i], image, sample)
            if labels is not None and cam_full is not None:
                present = labels[i] > 0.5
                if self.options.save_cam:
                    heat = cam_full[present].amax(0) if bool(present.any()) else torch.zeros_like(cam_full[0])
                    result.cam = heat.float().cpu().numpy()
                result.tags = [self.classes[c + 1] for c in torch.nonzero(present).flatten().tolist()]
            results.append((sample, result))
        return results

    def _probs_out(self, probs: torch.Tensor) -> np.ndarray:
        h, w = probs.shape[-2:]
        scale = self.options.probs_scale
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        if size != (h, w):
            probs = F.interpolate(probs[None], size=size, mode="area")[0]
        return probs.half().cpu().numpy()

    def _finish_mask(self, logits: torch.Tensor | None, sample: _Decoded) -> _Result:
        assert logits is not None
        probs = None
        if self.options.crf or self.options.save_probs:
            probs = torch.softmax(logits, dim=0)
        if self.options.crf:
            from seco_deploy.model.crf import MASK_CRF, dense_crf

            params = MASK_CRF
            if self.info.config is not None:  # the checkpoint's infer.crf_iters
                params = dataclasses.replace(MASK_CRF, iters=self.info.config.infer.crf_iters)
            refined = dense_crf(sample.image.numpy(), probs, params, self.options.crf_implementation)
            mask = _argmax_uint8(refined)
        else:
            mask = _argmax_uint8(logits)
        result = _Result(mask=mask)
        if self.options.save_probs:
            assert probs is not None
            result.probs = self._probs_out(probs)
        return result

    def _finish_pseudo(self, cam: torch.Tensor, labels: torch.Tensor, image: torch.Tensor,
                       sample: _Decoded) -> _Result:
        from seco_deploy.cam import cam_to_label

        mask = cam_to_label(cam[None], labels[None], self.bkg_thre)[0]
        refine = self.options.refine
        present = torch.nonzero(labels > 0.5).flatten()
        if refine != "none" and present.numel() > 0:
            keep = torch.cat([present.new_zeros(1), present + 1])  # channel -> class index
            if refine == "par":
                mask = keep[self._par_refine(cam[present], image)]
            else:
                from seco_deploy.model.crf import LABEL_CRF, dense_crf, probs_from_labels

                local = torch.searchsorted(keep, mask.long().contiguous())
                probs = probs_from_labels(local, keep.numel(), gt_prob=0.7)
                refined = dense_crf(sample.image.numpy(), probs, LABEL_CRF, self.options.crf_implementation)
                mask = keep[refined.to(self.device).argmax(0)]
        result = _Result(mask=mask.to(torch.uint8).cpu().numpy())
        if self.options.save_probs:
            result.probs = self._probs_out(cam)
        return result

    def _par_refine(self, cams: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """PAR on softmax([bkg_thre, cams]) at up to the crop size; returns the argmax channel (H, W)."""
        from seco_deploy.model.par import PAR

        if self._par is None:
            cfg = self.info.config
            dil = tuple(cfg.model.par_dilations) if cfg is not None else (1, 2, 4, 8, 12, 24)
            iters = cfg.model.par_iters if cfg is not None else 10
            self._par = PAR(dilations=dil, num_iter=iters).to(self.device)
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

    # ------------------------------------------------------------------ writing (threads)
    def _write(self, item: InputItem, paths: OutputPaths, out: Path, image: np.ndarray | None, result: _Result,
               seconds: float) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            if paths.overlay is not None and image is not None:
                write_overlay(paths.overlay, image, result.mask, self.palette, self.classes)
            if paths.probs is not None and result.probs is not None:
                kind = "softmax" if self.mode == "mask" else "cam"
                names = self.classes if self.mode == "mask" else self.classes[1:]
                write_probs(paths.probs, result.probs, names, tuple(result.mask.shape), kind)
            if paths.cam is not None and image is not None and result.cam is not None:
                write_cam(paths.cam, image, result.cam)
            write_mask(paths.mask, result.mask, self.palette)  # last: its presence marks completion
        except (OSError, ValueError) as exc:
            return self._record(item, "failed", reason=f"cannot write outputs: {exc}",
                                seconds=round(seconds + time.perf_counter() - start, 4))
        record = self._record(item, "ok", size=list(result.mask.shape), classes=class_fractions(result.mask,
                                                                                                   self.classes))
        if result.tags is not None:
            record["tags"] = result.tags
        record["outputs"] = paths.relative(out)
        record["seconds"] = round(seconds + time.perf_counter() - start, 4)
        return record


def _argmax_uint8(scores: torch.Tensor) -> np.ndarray:
    """Argmax over the channel axis of (K, H, W) scores as a uint8 (H, W) array.

    On the CPU NumPy's argmax is used: PyTorch's reduction over the outer axis is 5-10x slower.
    """
    if scores.device.type == "cpu":
        return scores.float().numpy().argmax(0).astype(np.uint8)
    return scores.argmax(0).to(torch.uint8).cpu().numpy()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


def _file_sha256(path: str | os.PathLike[str]) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()

