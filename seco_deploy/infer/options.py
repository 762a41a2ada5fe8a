"""What shapes a prediction run: :class:`PredictOptions` and the choices its fields take.

``None`` in a field means "the model's default" (its card or checkpoint config supplies it).
:meth:`PredictOptions.validate` raises ``ValueError`` naming the option (exit 2 in the CLI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from seco_deploy.data.io import DEFAULT_MAX_PIXELS
from seco_deploy.runtime.device import available_cpus

if TYPE_CHECKING:
    from seco_deploy.infer.tags import TagTable

__all__ = ["MODES", "REFINES", "RESIZES", "PredictOptions", "default_threads", "default_workers"]

MODES = ("mask", "pseudo")
REFINES = ("none", "par", "crf")
RESIZES = ("square", "keep")


def default_workers(cpus: int | None = None) -> int:
    """Decoding processes when ``--workers`` is not given: half the CPUs this process may use, 1 to 4;
    none (decoding in the main process, between batches) on 2 CPUs or fewer, where a decoding
    process takes its core from the model's threads (measured: ``benchmarks/predict.py``)."""
    cpus = available_cpus() if cpus is None else cpus
    return 0 if cpus <= 2 else min(4, cpus // 2)


def default_threads() -> int:
    """The model's intra-op CPU threads when ``--threads`` is not given, for PyTorch and ONNX Runtime
    alike: PyTorch's own choice (``OMP_NUM_THREADS`` when set, else one per physical core this
    process may use), read before anything in the process changes it."""
    import torch

    return max(1, torch.get_num_threads())


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
    fsync: bool = False  # flush every output to disk before its rename (infer/outputs.py)
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
