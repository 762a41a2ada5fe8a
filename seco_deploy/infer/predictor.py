"""The predictor: images in, masks or pseudo-labels out, for any :class:`~seco_deploy.runtime.backends.Backend`.

Its public stages, in the order :meth:`Predictor.run` calls them for every group of decoded
images with the same network input shapes (as Ultralytics' predictor)::

    decode (workers)  ->  preprocess  ->  infer  ->  postprocess  ->  write (threads)
    skip complete,        runs on the     backend    full size,       PNG / JPEG / npz
    read_image            device, TTA     per scale, argmax, CRF /    (atomic), manifest
                          inputs          fusion     PAR, tags        line

- :meth:`Predictor.preprocess`: sorts the group, moves it to the device as float runs
  (:func:`seco_deploy.infer.tta.stack_runs`);
- :meth:`Predictor.infer`: for each scale the normalised input with its flips
  (:class:`~seco_deploy.infer.tta.Normaliser`), the backend in chunks of at most ``max_batch``
  (:meth:`Predictor.forward`, the model alone),
  and the TTA fusion of :mod:`seco_deploy.infer.tta` (decoder logits per scale; CAMs fused,
  summed and normalised; image logits averaged); the image-level labels (tags, else the
  classifier above ``cls_threshold``);
- :meth:`Predictor.postprocess`: at the images' original size, in chunks of images of one size
  whose full-size logits fit :data:`POSTPROCESS_ELEMENTS` (memory holds one chunk, at least one
  image): mask mode, the maximum over scales then argmax over the classes that can win
  (:func:`~seco_deploy.infer.tta.fused_masks`; ``--crf``:
  :func:`~seco_deploy.infer.refine.crf_mask`); pseudo mode, :func:`seco_deploy.cam.cam_to_label`
  with ``bkg_thre`` then :class:`~seco_deploy.infer.refine.PseudoRefiner`;
- :meth:`Predictor.write`: the outputs (:mod:`seco_deploy.infer.outputs`), the mask last (its
  presence marks completion), and the image's manifest record.

Modes (method §3): ``mask`` uses the model's ``mask_scales`` by default, ``pseudo`` its
``cam_scales``; the base size is the training crop size, square like the reference, or
``resize="keep"``. Never losing work: outputs are atomic; complete images are skipped unless
``overwrite`` (:mod:`seco_deploy.infer.decode`); ``run.json`` refuses other settings over
existing outputs (:mod:`seco_deploy.infer.manifest`); unreadable inputs become ``failed``
records and the others go on; a batch that fails is retried image by image.
Memory stays flat over any number of images: inputs stream through bounded queues.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seco_deploy.cam import cam_to_label, fuse_flip, normalise_cam
from seco_deploy.data.io import file_sha256
from seco_deploy.infer.decode import Decoded, DecodeDataset, decode_loader
from seco_deploy.infer.manifest import Manifest, RunSummary, check_run_file
from seco_deploy.infer.options import PredictOptions
from seco_deploy.infer.outputs import (
    OutputPaths,
    class_fractions,
    remove_stale_temporaries,
    write_cam,
    write_mask,
    write_overlay,
    write_probs,
)
from seco_deploy.infer.refine import PseudoRefiner, argmax_uint8, crf_mask
from seco_deploy.infer.sources import InputItem
from seco_deploy.infer.tta import Normaliser, fuse_seg, fused_masks, input_size, stack_runs
from seco_deploy.runtime.backends import Backend, ModelInfo
from seco_deploy.runtime.errors import BackendError

__all__ = ["POSTPROCESS_ELEMENTS", "Batch", "Fused", "Predictor", "Result"]

# Full-size logits that :meth:`Predictor.postprocess` holds at once (float32: 128 MiB): eight
# 500 x 375 images of 21 classes fit, so batches of typical photos need one upsampling and one
# argmax, while a batch of very large images is still handled one image at a time.
POSTPROCESS_ELEMENTS = 1 << 25


@dataclass
class Batch:
    """A preprocessed group: samples (sorted by size), float runs on the device, the images of the runs."""

    samples: list[Decoded]
    runs: list[torch.Tensor]  # float (n, 3, H, W) 0-255, equal sizes
    images: list[torch.Tensor]  # float (3, H, W) views into the runs, in sample order

    @property
    def base_hw(self) -> tuple[int, int]:
        return tuple(self.runs[0].shape[2:])  # type: ignore[return-value]


@dataclass
class Fused:
    """What :meth:`Predictor.infer` returns: per-scale decoder logits (mask mode), normalised CAMs
    (B, C, S, S) and image-level labels (B, C) (when CAMs are needed)."""

    segs: list[torch.Tensor] = field(default_factory=list)
    cams: torch.Tensor | None = None
    labels: torch.Tensor | None = None


@dataclass
class Result:
    """One image's predictions, ready to write."""

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
        self.normalise = Normaliser(info.mean, info.std, self.device)
        self.refiner = PseudoRefiner(
            options.refine, self.bkg_thre, self.base,
            tuple(cfg.model.par_dilations) if cfg is not None else (1, 2, 4, 8, 12, 24),
            cfg.model.par_iters if cfg is not None else 10, options.crf_implementation,
        )
        self.crf_iters = cfg.infer.crf_iters if cfg is not None else None
        self._signature: dict[str, Any] | None = None
        self.palette = np.asarray(info.palette, dtype=np.uint8)

    # ------------------------------------------------------------------ settings that shape outputs
    def signature(self) -> dict[str, Any]:
        """The settings recorded in ``OUT/run.json``; a re-run must match them to skip outputs."""
        if self._signature is None:
            o = self.options
            self._signature = {
                "mode": self.mode,
                "model_sha256": _sha256_or_none(self.info.source),
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
        return self._signature

    def prepare_output(self, out_dir: str | os.PathLike[str]) -> None:
        """Create OUT and check / write ``OUT/run.json`` (:func:`seco_deploy.infer.manifest.check_run_file`);
        :meth:`run` calls it too."""
        check_run_file(Path(out_dir), self.signature(), self.options.overwrite)

    def input_size(self, hw: tuple[int, int], scale: float) -> tuple[int, int]:
        """The network input (h, w) of an image of size ``hw`` at ``scale`` (:func:`.tta.input_size`)."""
        return input_size(hw, scale, self.base, self.info.patch_size, self.options.resize, self.fixed)

    # ------------------------------------------------------------------ the stages
    def preprocess(self, samples: list[Decoded]) -> Batch:
        """Samples sorted by size, as float runs on the device."""
        samples = sorted(samples, key=lambda s: tuple(s.image.shape))
        runs = stack_runs([s.image for s in samples], self.device)
        return Batch(samples, runs, [image for run in runs for image in run])

    def network_input(self, batch: Batch, scale: float) -> torch.Tensor:
        """The normalised network input of ``batch`` at ``scale``, with the flips when TTA flips."""
        return self.normalise(batch.runs, self.input_size(batch.base_hw, scale), self.options.flip)

    @torch.inference_mode()
    def infer(self, batch: Batch) -> Fused:
        """The backend at every scale and the TTA fusion (see the module docstring)."""
        b = len(batch.samples)
        flip = self.options.flip
        fused = Fused()
        cam_sum = cls_sum = None
        cam_base = self.input_size(batch.base_hw, 1.0)
        for scale in self.scales:
            out = self.forward(self.network_input(batch, scale))
            if self.mode == "mask":
                fused.segs.append(out["seg"][:b] + out["seg"][b:].flip(-1) if flip else out["seg"])
            if self.need_cam:
                cam = fuse_flip(out["cam"], cam_base, flipped=flip)
                cam_sum = cam if cam_sum is None else cam_sum + cam
                cls = out["cls"].view(-1, b, out["cls"].shape[-1]).mean(0)
                cls_sum = cls if cls_sum is None else cls_sum + cls
        if cam_sum is not None and cls_sum is not None:
            fused.cams = normalise_cam(cam_sum)
            cls_mean = cls_sum / len(self.scales)
            fused.labels = torch.stack([
                torch.as_tensor(s.tags, device=self.device) if s.tags is not None
                else (cls_mean[i] > self.cls_threshold).float()
                for i, s in enumerate(batch.samples)
            ])
        return fused

    @torch.inference_mode()
    def postprocess(self, batch: Batch, fused: Fused) -> list[tuple[Decoded, Result]]:
        """Per image at its original size: the mask (or pseudo-label), refined, with the extras asked for.

        Masks are made for chunks of images of one size at once (:meth:`chunks`): plain masks over
        the classes that can win (:func:`~seco_deploy.infer.tta.fused_masks`), with ``--crf`` or
        ``--save-probs`` from the full logits.
        """
        results = []
        plain_masks = self.mode == "mask" and not (self.options.crf or self.options.save_probs)
        for start, stop in self.chunks(batch):
            size = tuple(batch.images[start].shape[1:])
            logits = masks = None
            if plain_masks:
                masks = fused_masks(fused.segs, slice(start, stop), size)
            elif self.mode == "mask":
                logits = fuse_seg(fused.segs, slice(start, stop), size)
            for j, i in enumerate(range(start, stop)):
                sample, image = batch.samples[i], batch.images[i]
                cam_full = None
                if fused.cams is not None:
                    cam_full = torch.nn.functional.interpolate(fused.cams[i : i + 1], size=size, mode="bilinear",
                                                               align_corners=False)[0]
                if masks is not None:
                    result = Result(mask=masks[j])
                elif logits is not None:
                    result = self._mask_result(logits[j], sample)
                else:
                    assert fused.labels is not None and cam_full is not None
                    result = self._pseudo_result(cam_full, fused.labels[i], image, sample)
                if fused.labels is not None and cam_full is not None:
                    present = fused.labels[i] > 0.5
                    if self.options.save_cam:
                        heat = cam_full[present].amax(0) if bool(present.any()) else torch.zeros_like(cam_full[0])
                        result.cam = heat.float().cpu().numpy()
                    result.tags = [self.classes[c + 1] for c in torch.nonzero(present).flatten().tolist()]
                results.append((sample, result))
        return results

    def chunks(self, batch: Batch) -> list[tuple[int, int]]:
        """``(start, stop)`` ranges of ``batch``'s images that :meth:`postprocess` handles together: in
        mask mode, consecutive images of one size whose full-size logits hold at most
        :data:`POSTPROCESS_ELEMENTS` values (at least one image); in pseudo mode, one image each."""
        out: list[tuple[int, int]] = []
        start = 0
        n = len(batch.images)
        k = len(self.classes)  # mask logits: background and the classes
        while start < n:
            stop = start + 1
            if self.mode == "mask":
                size = batch.images[start].shape[1:]
                per_image = k * size[0] * size[1]
                while (stop < n and batch.images[stop].shape[1:] == size
                       and (stop - start + 1) * per_image <= POSTPROCESS_ELEMENTS):
                    stop += 1
            out.append((start, stop))
            start = stop
        return out

    def predict(self, samples: list[Decoded]) -> list[tuple[Decoded, Result]]:
        """``postprocess(infer(preprocess(samples)))``: the results of one group of images."""
        batch = self.preprocess(samples)
        return self.postprocess(batch, self.infer(batch))

    def write(self, item: InputItem, paths: OutputPaths, out: Path, image: np.ndarray | None, result: Result,
              seconds: float) -> dict[str, Any]:
        """Write one image's outputs (the mask last: its presence marks completion); its manifest record."""
        start = time.perf_counter()
        try:
            durable = self.options.fsync
            if paths.overlay is not None and image is not None:
                write_overlay(paths.overlay, image, result.mask, self.palette, self.classes, durable)
            if paths.probs is not None and result.probs is not None:
                kind = "softmax" if self.mode == "mask" else "cam"
                names = self.classes if self.mode == "mask" else self.classes[1:]
                write_probs(paths.probs, result.probs, names, tuple(result.mask.shape), kind, durable)
            if paths.cam is not None and image is not None and result.cam is not None:
                write_cam(paths.cam, image, result.cam, durable)
            write_mask(paths.mask, result.mask, self.palette, durable)
        except (OSError, ValueError) as exc:
            return self._record(item, "failed", reason=f"cannot write outputs: {exc}",
                                seconds=round(seconds + time.perf_counter() - start, 4))
        record = self._record(item, "ok", size=list(result.mask.shape),
                              classes=class_fractions(result.mask, self.classes))
        if result.tags is not None:
            record["tags"] = result.tags
        record["outputs"] = paths.relative(out)
        record["seconds"] = round(seconds + time.perf_counter() - start, 4)
        return record

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
        paths = [OutputPaths.for_name(out, it.name, o.overlay, o.save_probs, o.save_cam) for it in items]
        remove_stale_temporaries(out, {it.name for it in items})
        manifest_file = Path(manifest_path) if manifest_path is not None else out / "manifest.jsonl"
        manifest_file.parent.mkdir(parents=True, exist_ok=True)
        tags: list[np.ndarray | None] = [None] * len(items)
        todo: list[int] = []
        with open(manifest_file, "w", encoding="utf-8") as log, ThreadPoolExecutor(max_workers=2) as writers:
            manifest = Manifest(log, len(items), on_record)
            pending: collections.deque[Future[dict[str, Any]]] = collections.deque()

            def drain(limit: int) -> None:
                while len(pending) > limit or (pending and pending[0].done()):
                    manifest.emit(pending.popleft().result())

            for i, item in enumerate(items):
                if self.mode == "pseudo" and o.tags is not None:
                    tags[i] = o.tags.lookup(item)
                    if tags[i] is None:
                        manifest.emit(self._record(item, "failed", reason=f"no row for this image in {o.tags.path}"))
                        continue
                todo.append(i)
            dataset = DecodeDataset([items[i] for i in todo], [paths[i] for i in todo], self.classes,
                                    o.overwrite, o.max_pixels)
            loader = decode_loader(dataset, o.workers, o.batch, pin_memory=self.device.type == "cuda")
            for group in self._groups(loader, todo, tags, manifest.emit, items):
                t0 = time.perf_counter()
                results, errors = self._predict_safely(group)
                per_image = (time.perf_counter() - t0) / len(group)
                manifest.summary.compute_seconds += time.perf_counter() - t0
                for sample, reason in errors:
                    manifest.emit(self._record(items[sample.index], "failed", reason=reason,
                                               seconds=round(sample.seconds + per_image, 4)))
                for sample, result in results:
                    image = sample.image.numpy() if (o.overlay or o.save_cam) else None
                    pending.append(writers.submit(self.write, items[sample.index], paths[sample.index], out, image,
                                                  result, sample.seconds + per_image))
                drain(limit=4 * o.batch)
            drain(limit=0)
            manifest.summary.seconds = time.perf_counter() - start
            manifest.close(mode=self.mode, model=self.info.source, device=str(self.device))
        return manifest.summary

    # ------------------------------------------------------------------ pieces of the stages
    def _predict_safely(self, group: list[Decoded]) -> tuple[list[tuple[Decoded, Result]], list[tuple[Decoded, str]]]:
        """:meth:`predict`; when a batch fails (out of memory, a size the backend refuses), its images
        are retried one at a time and those that still fail are reported, not fatal."""
        try:
            return self.predict(group), []
        except (RuntimeError, ValueError) as exc:
            if len(group) == 1:
                return [], [(group[0], f"prediction failed: {type(exc).__name__}: {_first_line(exc)}")]
        results: list[tuple[Decoded, Result]] = []
        errors: list[tuple[Decoded, str]] = []
        for sample in group:
            r, e = self._predict_safely([sample])
            results += r
            errors += e
        return results, errors

    def _record(self, item: InputItem, status: str, **extra: Any) -> dict[str, Any]:
        return {"type": "image", "path": item.source, "name": item.name, "status": status, **extra}

    def _groups(self, loader: Any, todo: list[int], tags: list[np.ndarray | None],
                emit: Callable[[dict[str, Any]], None], items: list[InputItem]) -> Iterator[list[Decoded]]:
        """Decoded samples grouped by network input shape, ``batch`` at a time (bounded buffering)."""
        o = self.options
        groups: dict[tuple, list[Decoded]] = {}
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
            decoded = Decoded(index=index, image=torch.from_numpy(sample["image"]), seconds=sample["seconds"],
                              tags=tags[index])
            hw = tuple(decoded.image.shape[:2])
            key = tuple(self.input_size(hw, s) for s in self.scales)  # type: ignore[arg-type]
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

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
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

    def _probs_out(self, probs: torch.Tensor) -> np.ndarray:
        h, w = probs.shape[-2:]
        scale = self.options.probs_scale
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        if size != (h, w):
            probs = torch.nn.functional.interpolate(probs[None], size=size, mode="area")[0]
        return probs.half().cpu().numpy()

    def _mask_result(self, logits: torch.Tensor, sample: Decoded) -> Result:
        probs = torch.softmax(logits, dim=0) if (self.options.crf or self.options.save_probs) else None
        if self.options.crf:
            assert probs is not None
            mask = crf_mask(sample.image.numpy(), probs, self.crf_iters, self.options.crf_implementation)
        else:
            mask = argmax_uint8(logits)
        result = Result(mask=mask)
        if self.options.save_probs:
            assert probs is not None
            result.probs = self._probs_out(probs)
        return result

    def _pseudo_result(self, cam: torch.Tensor, labels: torch.Tensor, image: torch.Tensor, sample: Decoded) -> Result:
        mask = cam_to_label(cam[None], labels[None], self.bkg_thre)[0]
        mask = self.refiner(mask, cam, labels, image, sample.image.numpy())
        result = Result(mask=mask.to(torch.uint8).cpu().numpy())
        if self.options.save_probs:
            result.probs = self._probs_out(cam)
        return result


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


def _sha256_or_none(path: str | os.PathLike[str]) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None
