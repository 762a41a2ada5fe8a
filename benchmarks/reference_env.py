"""Import the reference implementation (GitHub zwyang6/SeCo, commit 202357f) from a folder, on the CPU.

Used by ``benchmarks/reference_fixtures.py`` (golden fixtures) and ``benchmarks/reference_step.py``
(one reference training iteration). Nothing here is needed by the package or its tests.

The reference's files are never edited. What is changed, at import or run time only (the
list is also printed into ``tests/fixtures/reference/README.md``), is :data:`CPU_CHANGES`.

    ref = load_reference("/path/to/SeCo", bilateral_dir="/path/to/built/bilateralfilter")
    ref.camutils.cam_to_label(...)          # the reference's own functions
    with cpu_only():                        # around any call that says .cuda()
        ...
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import importlib.machinery
import os
import sys
import tempfile
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REFERENCE_REPO = "zwyang6/SeCo"
REFERENCE_COMMIT = "202357f1f97b349bcd8d7d54664eca2978619608"
BILATERAL_REPO = "meng-tang/rloss"
BILATERAL_COMMIT = "1caa759e568db2c7209ab73e73ac039ea3d7101c"

CPU_CHANGES = (
    "`torch.Tensor.cuda` and `torch.nn.Module.cuda` return the object unchanged, and `torch.cuda.device` "
    "is a null context, only while a reference function runs (`cpu_only()`); the reference calls "
    "`.cuda()` in `model/losses.py` (energy loss), `model/model_seco.py` (batch shuffle) and "
    "`tools/infer_seg_voc.py`.",
    "A single-process `gloo` process group (world size 1) is started, so the reference's "
    "`concat_all_gather`, `torch.distributed.broadcast` and `get_rank` in `model/model_seco.py` run "
    "unchanged.",
    "Modules that the reference imports but the functions run here never call are stubbed when they "
    "are not installed: `imageio` (and `imageio.v2`), `joblib`, `texttable`, `sklearn.metrics` (any use raises). In "
    "`tools/infer_seg_voc.py`, the score tables computed after the logits are saved "
    "(`evaluate.scores`, `format_tabs_multi_metircs`) are replaced by no-ops.",
    "timm's model registry is restored after `model/backbone/vit.py` is imported (it re-registers "
    "`vit_base_patch16_224` and others, which would otherwise replace timm's own models in this "
    "process).",
    "Backbone constructors are added as attributes of the reference's `model.backbone` package, "
    "built with the reference's own `VisionTransformer` class: a tiny ViT for the fixtures and a "
    "768-wide, 8-block ViT/16 for the speed run (its `vit_base_patch16_224` fixes depth 12 and "
    "downloads weights).",
    "The compiled `bilateralfilter` extension that `model/losses.py` imports comes from "
    f"{BILATERAL_REPO} (commit {BILATERAL_COMMIT[:7]}, `pytorch/wrapper/bilateralfilter`), built with "
    "swig 4.5.1 from PyPI and g++ 12: `swig -python -c++ bilateralfilter.i`, then "
    "`CPPFLAGS='-DPyInt_Check=PyLong_Check -DPyString_Check=PyUnicode_Check' LDFLAGS=-fopenmp "
    "python setup.py build_ext --build-lib OUT` and the generated `bilateralfilter.py` copied into OUT "
    "(its `numpy.i` predates Python 3; the extension uses OpenMP but its setup.py does not link it); "
    "OUT is put on `sys.path` (the reference appends a build folder of its own, which does not exist).",
)


@dataclass
class Reference:
    """The reference's modules, imported from ``root``."""

    root: Path
    camutils: types.ModuleType
    par: types.ModuleType
    losses: types.ModuleType | None
    model_seco: types.ModuleType
    backbone: types.ModuleType
    vit: types.ModuleType
    imutils: types.ModuleType
    optimizer: types.ModuleType

    def import_module(self, name: str) -> types.ModuleType:
        """Import another module of the reference (e.g. ``tools.infer_seg_voc``) with the same set-up."""
        _stub_missing(STUBBED)
        return importlib.import_module(name)


# Imported by the reference, never called by what runs here (stubbed only when not installed).
STUBBED = ("imageio", "imageio.v2", "joblib", "texttable", "sklearn", "sklearn.metrics")


class _Unavailable(types.ModuleType):
    """A stand-in for a module the reference imports but never calls here: any name it is asked
    for is a placeholder that raises when called."""

    def __getattr__(self, item: str) -> Any:
        if item.startswith("__"):
            raise AttributeError(item)

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"{self.__name__}.{item} is a stub in this harness (the module is not installed)")

        return unavailable


def _stub_missing(names: tuple[str, ...]) -> None:
    for name in names:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except ImportError:
            stub = _Unavailable(name)
            stub.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=True)
            stub.__path__ = []
            sys.modules[name] = stub
            parent, _, child = name.rpartition(".")
            if parent and parent in sys.modules:
                setattr(sys.modules[parent], child, sys.modules[name])


@contextlib.contextmanager
def _timm_registry_kept() -> Iterator[None]:
    """Restore every table of timm's model registry on exit."""
    from timm.models import _registry

    saved = {k: copy.copy(v) for k, v in vars(_registry).items()
             if not k.startswith("__") and isinstance(v, dict | set | list)}
    try:
        yield
    finally:
        for k, v in saved.items():
            current = getattr(_registry, k)
            current.clear()
            if isinstance(current, dict):
                current.update(v)
            elif isinstance(current, set):
                current.update(v)
            else:
                current.extend(v)


def _identity(self: Any, *args: Any, **kwargs: Any) -> Any:
    return self


@contextlib.contextmanager
def cpu_only() -> Iterator[None]:
    """While active, ``.cuda()`` on tensors and modules is the identity and ``torch.cuda.device`` a null context."""
    import torch

    saved = (torch.Tensor.cuda, torch.nn.Module.cuda, torch.cuda.device)
    torch.Tensor.cuda = _identity  # type: ignore[method-assign]
    torch.nn.Module.cuda = _identity  # type: ignore[method-assign]
    torch.cuda.device = lambda *a, **k: contextlib.nullcontext()  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda, torch.cuda.device = saved  # type: ignore[method-assign]


def init_single_process_group() -> None:
    """A world-of-one ``gloo`` group (idempotent), so the reference's all_gather/broadcast run as written."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    store = os.path.join(tempfile.mkdtemp(prefix="seco-ref-pg-"), "store")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)


def add_backbone(ref: Reference, name: str, **vit_kwargs: Any) -> None:
    """Register ``name`` in the reference's ``model.backbone`` package: its ``VisionTransformer`` with
    ``patch_size=16, qkv_bias=True, LayerNorm(eps=1e-6)`` (as its ``vit_base_patch16_224``) and ``vit_kwargs``."""
    import torch.nn as nn

    def build(pretrained: bool = False, **kwargs: Any) -> Any:
        if pretrained:
            raise ValueError("the harness builds reference backbones without pretrained weights")
        args = dict(patch_size=16, qkv_bias=True, norm_layer=functools.partial(nn.LayerNorm, eps=1e-6))
        args.update(vit_kwargs)
        args.update(kwargs)
        return ref.vit.VisionTransformer(**args)

    setattr(ref.backbone, name, build)


def load_reference(root: str | os.PathLike[str], bilateral_dir: str | os.PathLike[str] | None = None) -> Reference:
    """Import the reference from ``root`` (a checkout of zwyang6/SeCo). With ``bilateral_dir`` (the
    build output of the rloss extension) ``model/losses.py`` is imported too, else ``losses`` is None."""
    root = Path(root).resolve()
    if not (root / "utils" / "camutils.py").is_file() or not (root / "model" / "model_seco.py").is_file():
        raise FileNotFoundError(f"{root} is not a checkout of {REFERENCE_REPO} (no utils/camutils.py)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import timm  # noqa: F401  (imported before any stub: it walks installed modules)

    _stub_missing(STUBBED)
    init_single_process_group()
    with _timm_registry_kept():
        backbone = importlib.import_module("model.backbone")
        vit = importlib.import_module("model.backbone.vit")
    losses = None
    if bilateral_dir is not None:
        bdir = Path(bilateral_dir).resolve()
        if not any(bdir.glob("_bilateralfilter*.so")):
            raise FileNotFoundError(f"{bdir} holds no built _bilateralfilter extension (see CPU_CHANGES)")
        if str(bdir) not in sys.path:
            sys.path.insert(0, str(bdir))
        losses = importlib.import_module("model.losses")
    return Reference(
        root=root,
        camutils=importlib.import_module("utils.camutils"),
        par=importlib.import_module("model.PAR"),
        losses=losses,
        model_seco=importlib.import_module("model.model_seco"),
        backbone=backbone,
        vit=vit,
        imutils=importlib.import_module("utils.imutils"),
        optimizer=importlib.import_module("utils.optimizer"),
    )


def reference_args(**overrides: Any) -> types.SimpleNamespace:
    """The ``args`` namespace the reference's ``network`` reads, with scripts/train_voc.py's defaults."""
    args = dict(num_classes=21, ctc_dim=768, moco_queue=4608, proto_m=0.9, update_prototype=600, ncrops=12,
                momentum=0.999, aux_layer=-3)
    args.update(overrides)
    return types.SimpleNamespace(**args)
