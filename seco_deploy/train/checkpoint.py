"""Checkpoints as training writes them: atomic save, resume checks, random-generator state.

The file format (keys, weights-only loading) and everything inference reads from a checkpoint
live in :mod:`seco_deploy.runtime.checkpoint`; this module adds what only training needs:
:func:`save_checkpoint` (atomic, :func:`seco_deploy.data.io.atomic_path`), :func:`check_compatible`
(a resumed run must agree with the checkpoint on :data:`ARCHITECTURE_FIELDS` and the classes),
:func:`capture_rng_state` / :func:`restore_rng_state`, and :func:`build_inference_checkpoint`
(a checkpoint of a randomly initialised network, for tests and tools).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seco_deploy import __version__
from seco_deploy.config import Config, preset, validate
from seco_deploy.data.io import atomic_path
from seco_deploy.runtime.checkpoint import CHECKPOINT_FORMAT, CheckpointError, build_network, config_from_checkpoint

# Model fields that change parameter shapes or what the weights mean: a resumed or fine-tuned
# run must agree with the checkpoint on every one of them.
ARCHITECTURE_FIELDS = (
    "backbone",
    "backbone_kwargs",
    "aux_layer",
    "proj_hidden_dim",
    "queue_size",
    "decoder_dilations",
)


# ---------------------------------------------------------------------------- save / load
def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (a temp file in the same folder, fsync, rename).

    A reader never sees a half-written file, and a crash mid-write leaves the previous file
    intact. The payload must hold only tensors and plain data (checked by the loader).
    """
    path = Path(path)
    payload = dict(payload)
    payload.setdefault("format", CHECKPOINT_FORMAT)
    payload.setdefault("version", __version__)
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        torch.save(payload, fh)
    return path


def check_compatible(ckpt: dict[str, Any], cfg: Config, classes: list[str] | tuple[str, ...]) -> None:
    """Refuse to resume when ``cfg``/``classes`` contradict the checkpoint's (shapes or meaning differ)."""
    stored = config_from_checkpoint(ckpt)
    stored_classes = [str(c) for c in ckpt["classes"]]
    if list(classes) != stored_classes:
        raise CheckpointError(
            "the dataset's classes differ from the checkpoint's: checkpoint has "
            f"{stored_classes}, dataset has {list(classes)}; resume on the same dataset, or start a new run "
            "with another --out"
        )
    diffs = []
    for name in ARCHITECTURE_FIELDS:
        a, b = getattr(stored.model, name), getattr(cfg.model, name)
        if a != b:
            diffs.append(f"model.{name}: checkpoint {a!r}, config {b!r}")
    if diffs:
        raise CheckpointError(
            "the configuration contradicts the checkpoint's network (" + "; ".join(diffs) + "); "
            "use the same preset/config as the original run, or start a new run with another --out"
        )


def build_inference_checkpoint(
    path: str | Path,
    classes: list[str] | tuple[str, ...],
    cfg: Config | None = None,
    seed: int = 0,
    overrides: list[str] | tuple[str, ...] = (),
) -> Path:
    """Write a checkpoint of a randomly initialised network (default: the ``test`` preset).

    For tests and tools that need a real checkpoint without training: ``classes`` is background
    first; ``overrides`` are ``section.key=value`` strings applied over ``cfg``.
    """
    cfg = cfg if cfg is not None else preset("test")
    if overrides:
        cfg = validate(cfg.override(list(overrides)))
    classes = [str(c) for c in classes]
    if len(classes) < 2:
        raise ValueError("classes must list background and at least one class")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(cfg, classes, load_pretrained=False)
    payload = {
        "model": net.state_dict(),
        "iteration": 0,
        "config": cfg.to_yaml(),
        "classes": classes,
        "best_miou": -1.0,
    }
    return save_checkpoint(path, payload)


# ---------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as tensors and plain data."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (missing parts are left alone)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        s = state["numpy"]
        key = s["key"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", key, int(s["pos"]), int(s["has_gauss"]), float(s["cached_gaussian"])))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])



def _to_plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value
