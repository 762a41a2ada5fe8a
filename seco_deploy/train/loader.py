"""Endless, resumable batches: per-epoch reshuffle, rank sharding, worker processes.

Epoch ``e`` visits ``perm_e = randperm(N, seed + e)`` truncated to a multiple of the world size;
rank ``r`` takes ``perm_e[r::world]`` and cuts it into batches of ``B``, dropping the last partial
batch. So every epoch has ``steps_per_epoch = (N // world) // B`` iterations on every rank, and
iteration ``i`` (1-based, counted over the whole run) is batch ``(i - 1) % steps_per_epoch`` of
epoch ``(i - 1) // steps_per_epoch``: a resumed run continues with exactly the batches the
uninterrupted one would have drawn. The sampler yields ``(epoch, index)`` keys, which
:class:`~seco_deploy.data.transforms.TrainDataset` turns into per-item random generators, so the
augmentations of a resumed run are the same too, whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset, Sampler

from seco_deploy.data.workers import worker_init_fn


class EpochShardSampler(Sampler[tuple[int, int]]):
    """``(epoch, index)`` keys of one epoch for one rank, from position ``start`` (see the module doc)."""

    def __init__(self, size: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        if size < 1:
            raise ValueError("the training dataset is empty")
        self.size, self.batch_size = size, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = 0
        self.start = 0  # position (in samples) within this rank's share of the epoch
        self.per_rank = size // world_size
        self.steps_per_epoch = self.per_rank // batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the training split has {size} images, fewer than batch size {batch_size} x {world_size} "
                "process(es); lower train.batch_size or add images"
            )

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def epoch_indices(self, epoch: int) -> list[int]:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.size, generator=g)[: self.per_rank * self.world_size]
        mine = perm[self.rank :: self.world_size][: self.steps_per_epoch * self.batch_size]
        return mine.tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(epoch, i) for i in self.epoch_indices(epoch)[self.start :]])

    def __len__(self) -> int:
        return self.steps_per_epoch * self.batch_size - self.start


class InfiniteBatches:
    """``next(batches)`` gives the batch for the next iteration, forever, reshuffling each epoch.

    ``start_iteration`` is the number of iterations already done (0 for a fresh run). Worker
    processes (``num_workers > 0``) are persistent and started with ``worker_start_method``.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        num_workers: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_iteration: int = 0,
        pin_memory: bool = False,
        worker_start_method: str = "spawn",
    ) -> None:
        self.sampler = EpochShardSampler(len(dataset), batch_size, rank, world_size, seed)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.epoch, offset = divmod(start_iteration, self.steps_per_epoch)
        self.sampler.set_position(self.epoch, offset * batch_size)
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=num_workers,
            drop_last=True,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            # Workers are started fresh, not forked: a process forked after OpenCV (or OpenMP) ran
            # threads inherits their locks and can hang in its first cv2 call. Started once per run.
            multiprocessing_context=mp.get_context(worker_start_method) if num_workers > 0 else None,
            worker_init_fn=worker_init_fn if num_workers > 0 else None,
            # Its own generator: starting an epoch must not draw from the global torch RNG, whose
            # state the checkpoints carry (the views draw from per-item generators anyway).
            generator=torch.Generator().manual_seed(seed),
        )
        self._it: Iterator[Any] | None = None

    def __iter__(self) -> InfiniteBatches:
        return self

    def __next__(self) -> Any:
        if self._it is None:
            self._it = iter(self.loader)
        try:
            return next(self._it)
        except StopIteration:
            self.epoch += 1
            self.sampler.set_position(self.epoch, 0)
            self._it = iter(self.loader)
            return next(self._it)

    def close(self) -> None:
        """Stop the worker processes now (they are persistent otherwise, until garbage collection)."""
        it, self._it = self._it, None
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
