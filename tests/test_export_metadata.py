"""Model metadata: round trip through ONNX properties, validation, and what a checkpoint export carries."""

from __future__ import annotations

import hashlib

import onnx
import pytest
from _export_helpers import CLASSES, workspace  # noqa: F401
from onnx import TensorProto, helper

from seco_deploy import __version__
from seco_deploy.config import preset
from seco_deploy.data.io import file_sha256
from seco_deploy.runtime.card import (
    FORMAT_KEY,
    METADATA_FORMAT,
    CardError,
    ModelCard,
    card_from_checkpoint,
    embed_in_onnx,
    read_onnx_card,
)


def _meta(**changes) -> ModelCard:
    values = dict(
        classes=["background", "cat", "dog"], palette=[[0, 0, 0], [128, 0, 0], [0, 128, 0]], mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225], patch_size=16, crop_size=448, mask_scales=[1.0, 1.25, 1.5],
        cam_scales=[1.0, 0.5, 0.75, 1.5], heads=["seg", "cam"], backbone="vit_base_patch16_224",
        input_shape=[-1, 3, -1, -1], iteration=20000, config="data:\n  crop_size: 448\n",
    )
    values.update(changes)
    return ModelCard(**values)


def _tiny_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return helper.make_model(graph)


def test_props_round_trip_and_keep_foreign_keys(tmp_path) -> None:
    meta = _meta()
    props = meta.to_props()
    assert props[FORMAT_KEY] == METADATA_FORMAT
    assert props["seco.config"] == meta.config  # YAML stays readable text
    assert ModelCard.from_props(props) == meta
    assert meta.num_classes == 2 and meta.dynamic_batch and meta.dynamic_size
    assert meta.output_names == ["seg_logits", "cams", "cls_logits"]

    model = _tiny_model()
    model.metadata_props.add(key="author", value="someone")
    embed_in_onnx(model, _meta(iteration=1))
    embed_in_onnx(model, meta)  # re-embedding replaces, never duplicates
    keys = [p.key for p in model.metadata_props]
    assert keys.count("seco.iteration") == 1 and "author" in keys
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert read_onnx_card(path) == meta


def test_from_props_names_what_is_wrong() -> None:
    props = _meta().to_props()
    with pytest.raises(CardError, match="no seco-deploy metadata"):
        ModelCard.from_props({k: v for k, v in props.items() if k != FORMAT_KEY})
    with pytest.raises(CardError, match="re-export"):
        ModelCard.from_props({**props, FORMAT_KEY: "seco-deploy/model-metadata/0"})
    with pytest.raises(CardError, match="seco.classes"):
        ModelCard.from_props({k: v for k, v in props.items() if k != "seco.classes"})
    with pytest.raises(CardError, match="seco.mean"):
        ModelCard.from_props({**props, "seco.mean": "[0.5, oops"})
    bad = [
        ({"heads": ["cam"]}, "heads"),
        ({"classes": ["background"]}, "classes"),
        ({"std": [1.0, 0.0, 1.0]}, "std"),
        ({"input_shape": [-1, 3, 100, 100]}, "multiple of the patch size"),
        ({"palette": [[0, 0, 0]]}, "palette"),
        ({"precision": "int4"}, "precision"),
    ]
    for change, message in bad:
        with pytest.raises(CardError, match=message):
            _meta(**change).validate()


def test_metadata_from_checkpoint(workspace) -> None:  # noqa: F811
    from seco_deploy.runtime.checkpoint import load_for_inference

    net, cfg, classes = load_for_inference(workspace.checkpoint)
    meta = card_from_checkpoint(workspace.checkpoint, cfg, classes, 16, ["seg"], [-1, 3, -1, -1], iteration=7)
    test_cfg = preset("test")
    assert meta.classes == CLASSES
    assert meta.crop_size == test_cfg.data.crop_size and meta.mean == list(test_cfg.data.mean)
    assert meta.mask_scales == list(test_cfg.infer.mask_scales) and meta.cam_scales == list(test_cfg.model.cam_scales)
    assert meta.backbone == test_cfg.model.backbone and meta.library_version == __version__
    assert meta.palette[:2] == [[0, 0, 0], [128, 0, 0]] and len(meta.palette) == len(CLASSES)
    assert meta.checkpoint_sha256 == hashlib.sha256(workspace.checkpoint.read_bytes()).hexdigest()
    assert meta.checkpoint_sha256 == file_sha256(workspace.checkpoint)
    assert meta.iteration == 7 and "crop_size: 64" in meta.config
