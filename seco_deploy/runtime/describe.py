"""`seco info`: what a model file holds, as plain data, read without running it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seco_deploy.data.io import file_sha256
from seco_deploy.runtime.card import ModelCard
from seco_deploy.runtime.model_file import model_kind

__all__ = ["describe"]


def describe(path: str | Path) -> dict[str, Any]:
    """What a checkpoint (.pt/.pth), ONNX file or TensorRT engine (.engine/.plan/.trt) holds, as plain data.

    Keys common to all: ``kind``, ``path``, ``bytes``, ``classes``, ``num_classes``, ``backbone``,
    ``patch_size``, ``crop_size``, ``mask_scales``, ``cam_scales``, ``heads``, ``mean``, ``std``,
    ``iteration``. ONNX adds ``opset``, ``inputs``, ``outputs``, ``nodes``, ``precision``,
    ``input_shape``, ``library_version``, ``checkpoint_sha256``; engines add ``profile`` and the
    TensorRT build details (read from the header, so TensorRT need not be installed).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist")
    readers = {"checkpoint": _describe_checkpoint, "onnx": _describe_onnx, "engine": _describe_engine}
    info = readers[model_kind(p)](p)
    return {"kind": info.pop("kind"), "path": str(p), "bytes": p.stat().st_size, **info}


def _common(meta: ModelCard) -> dict[str, Any]:
    return {
        "classes": meta.classes,
        "num_classes": meta.num_classes,
        "backbone": meta.backbone,
        "patch_size": meta.patch_size,
        "crop_size": meta.crop_size,
        "mask_scales": meta.mask_scales,
        "cam_scales": meta.cam_scales,
        "heads": meta.heads,
        "mean": meta.mean,
        "std": meta.std,
        "iteration": meta.iteration,
        "input_shape": meta.input_shape,
        "precision": meta.precision,
        "opset": meta.opset,
        "library_version": meta.library_version,
        "checkpoint_sha256": meta.checkpoint_sha256,
        "palette": meta.palette,
    }


def _describe_checkpoint(path: Path) -> dict[str, Any]:
    from seco_deploy.runtime.checkpoint import build_network, config_from_checkpoint, load_checkpoint

    ckpt = load_checkpoint(path)
    cfg = config_from_checkpoint(ckpt)
    classes = [str(c) for c in ckpt["classes"]]
    net = build_network(cfg, classes, load_pretrained=False)
    params = sum(t.numel() for t in ckpt["model"].values() if hasattr(t, "numel"))
    return {
        "kind": "checkpoint",
        "classes": classes,
        "num_classes": len(classes) - 1,
        "backbone": cfg.model.backbone,
        "backbone_kwargs": cfg.model.backbone_kwargs,
        "patch_size": int(net.encoder.patch_size),
        "embed_dim": int(net.encoder.embed_dim),
        "crop_size": cfg.data.crop_size,
        "mask_scales": list(cfg.infer.mask_scales),
        "cam_scales": list(cfg.model.cam_scales),
        "heads": ["seg", "cam"],
        "mean": list(cfg.data.mean),
        "std": list(cfg.data.std),
        "iteration": int(ckpt.get("iteration", -1)),
        "train_iters": cfg.train.iters,
        "best_miou": ckpt.get("best_miou"),
        "library_version": ckpt.get("version", ""),
        "parameters": int(params),
        "sha256": file_sha256(path),
    }


def _describe_onnx(path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    meta = ModelCard.from_props({p.key: p.value for p in model.metadata_props}, source=str(path))

    def dims(value: Any) -> list[Any]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    info = {"kind": "onnx", **_common(meta)}
    info["opset"] = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), meta.opset)
    info["inputs"] = {v.name: dims(v) for v in model.graph.input}
    info["outputs"] = {v.name: dims(v) for v in model.graph.output}
    info["nodes"] = len(model.graph.node)
    info["producer"] = f"{model.producer_name} {model.producer_version}".strip()
    return info


def _describe_engine(path: Path) -> dict[str, Any]:
    from seco_deploy.runtime.engine_file import read_engine_file

    props, plan = read_engine_file(path)
    meta = ModelCard.from_props(props, source=str(path))
    info = {"kind": "tensorrt-engine", **_common(meta)}
    info["plan_bytes"] = len(plan)
    info.update(meta.extra)
    return info
