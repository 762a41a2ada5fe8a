"""Checkpoints as inference reads them: safe loading, the stored config, the network they rebuild.

A checkpoint written by ``seco train`` is a ``dict`` of tensors and plain Python data (str, int,
float, bool, None, lists, tuples, dicts), so it loads with ``torch.load(..., weights_only=True)``
and nothing from a user's file is ever unpickled. Keys (the trainer writes them,
:mod:`seco_deploy.train.checkpoint`):

``format``       :data:`CHECKPOINT_FORMAT` (marks the file as ours)
``model``        ``SeCoNet.state_dict()``: student, local teacher, prototypes, queue
``optimizer``    ``AdamW.state_dict()``
``scaler``       ``GradScaler.state_dict()`` (fp16 only, else absent)
``iteration``    iterations completed (the next one to run is ``iteration + 1``)
``rng``          random-generator states
``config``       the full :class:`~seco_deploy.config.Config` as YAML text
``classes``      class names, background first (C = len(classes) - 1)
``version``      ``seco_deploy.__version__`` of the writer
``best_miou``    the best validation mIoU so far (-1.0 when never validated)

Only ``model``, ``config`` and ``classes`` (:data:`REQUIRED_KEYS`) are needed for inference.
"""

from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from seco_deploy.config import Config, ConfigError, validate

if TYPE_CHECKING:
    from seco_deploy.model.network import SeCoNet

__all__ = [
    "CHECKPOINT_FORMAT",
    "REQUIRED_KEYS",
    "CheckpointError",
    "build_network",
    "checkpoint_iteration",
    "config_from_checkpoint",
    "load_checkpoint",
    "load_for_inference",
]

CHECKPOINT_FORMAT = "seco-deploy/checkpoint/1"
REQUIRED_KEYS = ("model", "config", "classes")

# How torch's weights-only unpickler names an object it refused to build.
_PICKLED_OBJECT = re.compile(r"Unsupported global: GLOBAL [\w.]+|unrecognized function[^\n]*|Unsupported class[^\n]*")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unsafe, not ours, or does not match the configuration."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` and check that it is one of ours.

    Raises :class:`CheckpointError` when the file is missing, holds a pickled Python object
    (which we refuse to unpickle), is not a torch file, or lacks :data:`REQUIRED_KEYS`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        match = _PICKLED_OBJECT.search(str(exc))
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


def checkpoint_iteration(path: str | Path) -> int:
    """The ``iteration`` entry of a checkpoint (-1 when absent), read memory-mapped: no tensor is loaded."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(ckpt.get("iteration", -1)) if isinstance(ckpt, dict) else -1


def build_network(cfg: Config, classes: list[str] | tuple[str, ...], load_pretrained: bool = True) -> SeCoNet:
    """``SeCoNet(cfg.model, num_classes=len(classes) - 1)``; without pretrained weights if asked.

    Inference and resuming never load ``model.pretrained`` (the checkpoint has the weights, and
    the file or hub name may not exist on this machine).
    """
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"
