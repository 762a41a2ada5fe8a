"""Training: the loop and everything around one SeCo iteration.

Modules (import what you need; this package imports nothing heavy by itself):
  ``checkpoint``   atomic save, weights-only load, ``load_for_inference``, resume checks, RNG state
  ``schedule``     linear warm-up + poly learning rate, AdamW over the parameter groups
  ``loader``       endless, resumable, rank-sharded batches with per-epoch reshuffle
  ``distributed``  torchrun environment, device choice, Gloo/NCCL process group, ``--nproc`` launch
  ``runlog``       ``RUN/metrics.jsonl``, TensorBoard, progress bar, peak memory
  ``validate``     CAM / aux-CAM / decoder mIoU and classification F1 on the validation split
  ``step``         one iteration's forward and losses, method §2 (``TrainingStep``)
  ``trainer``      ``train(cfg, run_dir, resume)`` and ``Trainer``

``train``, ``Trainer`` and ``TrainResult`` are re-exported lazily from ``trainer``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainResult", "Trainer", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from seco_deploy.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'seco_deploy.train' has no attribute {name!r}")
