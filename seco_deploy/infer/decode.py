"""Decoding inputs in worker processes, and telling which inputs are already complete.

:class:`DecodeDataset` item i -> ``{"index", "status": "decoded" | "skipped" | "failed", ...}``: an
input whose requested outputs all exist (and whose mask decodes) is ``skipped`` with its class
fractions, unless ``overwrite``; an unreadable one is ``failed`` with the reason; else its
uint8 (H, W, 3) RGB pixels come back as a NumPy array. :func:`decode_loader` streams the items
through a DataLoader with ``workers`` processes (0: in this process), bounded prefetch, one
thread each (:func:`seco_deploy.data.workers.worker_init_fn`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from seco_deploy.data.io import ImageReadError, read_image, read_mask
from seco_deploy.data.workers import worker_init_fn
from seco_deploy.infer.outputs import OutputPaths, class_fractions
from seco_deploy.infer.sources import InputItem

__all__ = ["DecodeDataset", "Decoded", "complete_fractions", "decode_loader"]


@dataclass
class Decoded:
    """One decoded input: its index in the run's item list, pixels, decode seconds, tags."""

    index: int
    image: torch.Tensor  # uint8 (H, W, 3), CPU
    seconds: float
    tags: np.ndarray | None = None


def _identity(x: Any) -> Any:
    return x


class DecodeDataset(torch.utils.data.Dataset):
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
            done = complete_fractions(self.paths[index], self.classes, self.max_pixels)
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


def complete_fractions(paths: OutputPaths, classes: list[str], max_pixels: int) -> tuple[dict, list] | None:
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


def decode_loader(dataset: DecodeDataset, workers: int, batch: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """The DataLoader over ``dataset`` (one item at a time, in order; ``2 * batch`` prefetched in all)."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity,
        prefetch_factor=max(2, 2 * batch // max(workers, 1)) if workers > 0 else None,
        persistent_workers=False, pin_memory=pin_memory,
        worker_init_fn=worker_init_fn if workers > 0 else None,
    )
