"""Checkpoints: atomic save, safe load, rebuilding a network for inference.

A checkpoint is a ``dict`` of tensors and plain Python data (str, int, float, bool, None, lists,
tuples, dicts), so it loads with ``torch.load(..., weights_only=True)`` and nothing from a user's
file is ever unpickled. Keys written by the trainer:

``format``       ``CHECKPOINT_FORMAT`` (marks the file as ours)
``model``        ``SeCoNet.state_dict()``: student, local teacher, prototypes, queue
``optimizer``    ``AdamW.state_dict()``
``scaler``       ``GradScaler.state_dict()`` (fp16 only, else absent)
``iteration``    iterations completed (the next one to run is ``iteration + 1``)
``rng``          random-generator states (see :func:`capture_rng_state`)
``config``       the full :class:`~seco_deploy.config.Config` as YAML text
``classes``      class names, background first (C = len(classes) - 1)
``version``      ``seco_deploy.__version__`` of the writer
``best_miou``    the best validation mIoU so far (-1.0 when never validated)
``data_epoch``   the data sampler's epoch and position, for an exact resume

Only ``model``, ``config`` and ``classes`` are needed for inference.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from seco_deploy import __version__
from seco_deploy.config import Config, ConfigError, preset, validate

if TYPE_CHECKING:
    from seco_deploy.model.network import SeCoNet

CHECKPOINT_FORMAT = "seco-deploy/checkpoint/1"
REQUIRED_KEYS = ("model", "config", "classes")

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


# How torch's weights-only unpickler names an object it refused to build.
_PICKLED_OBJECT = re.compile(r"Unsupported global: GLOBAL [\w.]+|unrecognized function[^\n]*|Unsupported class[^\n]*")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unsafe, not ours, or does not match the configuration."""


# ---------------------------------------------------------------------------- save / load
def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically: a temp file in the same folder, then ``os.replace``.

    A reader never sees a half-written file, and a crash mid-write leaves the previous file
    intact. The payload must hold only tensors and plain data (checked by the loader).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(payload)
    payload.setdefault("format", CHECKPOINT_FORMAT)
    payload.setdefault("version", __version__)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` and check that it is one of ours.

    Raises :class:`CheckpointError` when the file is missing, holds a pickled Python object
    (which we refuse to unpickle), is not a torch file, or lacks ``model``/``config``/``classes``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        match = _PICKLED_OBJECT.search(text)
        if match:
            detail = match.group(0).rstrip(". ")
            raise CheckpointError(
                f"{path} contains a pickled Python object ({detail}), so it was refused: seco-deploy "
                "never unpickles code from a checkpoint. If you trust the file, load it yourself and "
                "re-save only its tensors and plain data."
            ) from exc
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (its bytes are not a torch file); "
            "pass a .pt file written by `seco train`"
        ) from exc
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {_first_line(exc)}); "
            "pass a .pt file written by `seco train`"
        ) from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{path} holds a {type(ckpt).__name__}, not a seco-deploy checkpoint (a dict with "
            f"{', '.join(REQUIRED_KEYS)}); pass a .pt file written by `seco train`"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path} is not a seco-deploy checkpoint: it lacks {', '.join(missing)}; "
            "pass a .pt file written by `seco train` (RUN/last.pt or RUN/best.pt)"
        )
    if not isinstance(ckpt["classes"], (list, tuple)) or len(ckpt["classes"]) < 2:
        raise CheckpointError(f"{path}: 'classes' must list background and at least one class")
    return ckpt


def config_from_checkpoint(ckpt: dict[str, Any]) -> Config:
    """The :class:`Config` stored in a checkpoint (YAML text), validated."""
    text = ckpt.get("config")
    if not isinstance(text, str):
        raise CheckpointError("checkpoint 'config' must be YAML text")
    try:
        return validate(Config.from_yaml(text))
    except ConfigError as exc:
        raise CheckpointError(f"the configuration stored in the checkpoint is invalid: {exc}") from exc


# ---------------------------------------------------------------------------- networks
def build_network(cfg: Config, classes: list[str] | tuple[str, ...], load_pretrained: bool = True) -> SeCoNet:
    """``SeCoNet(cfg.model, num_classes=len(classes) - 1)``; without pretrained weights if asked.

    Inference and resuming never load ``model.pretrained`` (the checkpoint has the weights, and
    the file or hub name may not exist on this machine).
    """
    import copy

    from seco_deploy.model.network import SeCoNet

    model_cfg = cfg.model
    if not load_pretrained and model_cfg.pretrained is not None:
        model_cfg = copy.deepcopy(model_cfg)
        model_cfg.pretrained = None
    return SeCoNet(model_cfg, num_classes=len(classes) - 1)


def load_for_inference(path: str | Path, device: str | torch.device = "cpu") -> tuple[SeCoNet, Config, list[str]]:
    """Rebuild the network of a checkpoint from its stored config and classes, in eval mode.

    Returns ``(net, cfg, classes)``; ``net`` is on ``device`` with ``requires_grad`` off.
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    cfg = config_from_checkpoint(ckpt)
    classes = [str(c) for c in ckpt["classes"]]
    net = build_network(cfg, classes, load_pretrained=False)
    try:
        net.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: the weights do not fit the network described by its own config ({exc}); "
            "the file was written by an incompatible version or edited"
        ) from exc
    net.eval().requires_grad_(False)
    return net.to(device), cfg, classes


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


def _to_plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value
