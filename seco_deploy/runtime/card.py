"""The model card: what an exported model carries about itself, so that it runs with no other file.

A :class:`ModelCard` holds the class names (background first), the palette, the input
normalisation (``mean``/``std`` on 0-1 RGB), the patch size ``p`` and the training crop size, the
test-time scales, the exported heads, the input shape contract (dynamic or static), precision,
opset, the library version, the checkpoint's SHA-256 and training iteration, and the full
training configuration as YAML text.

Storage:
  - ONNX: one ``metadata_props`` entry per field, key ``seco.<field>``, value JSON text
    (``seco.config`` is the YAML text itself), plus ``seco.format`` = :data:`METADATA_FORMAT`.
    ONNX Runtime exposes them as ``session.get_modelmeta().custom_metadata_map``.
  - TensorRT engines have no metadata slot; :mod:`seco_deploy.runtime.engine_file` stores the
    same key/value mapping as a JSON header in front of the serialized engine.

Names: the input is ``images`` (N, 3, H, W) float32, normalised; the outputs of each head are
:data:`OUTPUT_NAMES`. Backends return them under the short keys of :data:`OUTPUT_KEYS`
(:func:`backend_outputs` is the one place that renames them).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from seco_deploy.runtime.errors import BackendError

METADATA_FORMAT = "seco-deploy/model-metadata/1"
KEY_PREFIX = "seco."
FORMAT_KEY = KEY_PREFIX + "format"
HEADS = ("seg", "cam")
PRECISIONS = ("fp32", "fp16", "int8")  # int8: ONNX Runtime static QDQ, see seco_deploy.export.quantize
# ONNX output names per head; the input is always ``images`` (N, 3, H, W) float32, normalised.
INPUT_NAME = "images"
OUTPUT_NAMES = {"seg": ("seg_logits",), "cam": ("cams", "cls_logits")}
# Graph output name -> the key a Backend returns it under.
OUTPUT_KEYS = {"seg_logits": "seg", "cams": "cam", "cls_logits": "cls"}


class CardError(BackendError):
    """A model file lacks a seco-deploy model card or holds a malformed entry (the message names it)."""


@dataclass
class ModelCard:
    """Everything a backend and the predictor need to use an exported model on their own.

    ``input_shape`` is ``[N or -1, 3, H or -1, W or -1]``: -1 marks a dynamic axis. Dynamic
    heights and widths must be multiples of ``patch_size``.
    """

    classes: list[str]
    palette: list[list[int]]
    mean: list[float]
    std: list[float]
    patch_size: int
    crop_size: int
    mask_scales: list[float]
    cam_scales: list[float]
    heads: list[str]
    backbone: str
    input_shape: list[int]
    precision: str = "fp32"  # fp32 | fp16 (LayerNorm stays fp32) | int8 (QDQ; extra["int8"] says how)
    opset: int = 18
    library_version: str = ""
    checkpoint_sha256: str = ""
    iteration: int = -1
    config: str = ""  # the checkpoint's full Config as YAML text
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. TensorRT profile and build details

    # ------------------------------------------------------------------ derived
    @property
    def num_classes(self) -> int:
        """C, the number of foreground classes."""
        return len(self.classes) - 1

    @property
    def dynamic_batch(self) -> bool:
        return self.input_shape[0] == -1

    @property
    def dynamic_size(self) -> bool:
        return self.input_shape[2] == -1 or self.input_shape[3] == -1

    @property
    def output_names(self) -> list[str]:
        return [name for head in self.heads for name in OUTPUT_NAMES[head]]

    # ------------------------------------------------------------------ conversion
    def to_props(self) -> dict[str, str]:
        """``{"seco.<field>": JSON text}`` (``seco.config`` is plain YAML) plus ``seco.format``."""
        props = {FORMAT_KEY: METADATA_FORMAT}
        for name, value in asdict(self).items():
            props[KEY_PREFIX + name] = value if name == "config" else json.dumps(value)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelCard:
        """Inverse of :meth:`to_props`; raises :class:`CardError` naming a missing/bad key."""
        fmt = props.get(FORMAT_KEY)
        if fmt is None:
            raise CardError(
                f"{source} has no seco-deploy metadata (no '{FORMAT_KEY}' entry); export it with "
                "`seco export CHECKPOINT` so that it carries classes, normalisation and sizes"
            )
        if fmt != METADATA_FORMAT:
            raise CardError(
                f"{source} carries metadata format {fmt!r}; this version of seco-deploy reads "
                f"{METADATA_FORMAT!r}; re-export the model with this version"
            )
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = KEY_PREFIX + f.name
            if key not in props:
                if f.default is not MISSING or f.default_factory is not MISSING:
                    continue
                raise CardError(f"{source}: metadata entry '{key}' is missing; re-export the model")
            raw = props[key]
            if f.name == "config":
                values[f.name] = raw
                continue
            try:
                values[f.name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise CardError(f"{source}: metadata entry '{key}' is not valid JSON ({exc})") from exc
        meta = cls(**values)
        meta.validate(source)
        return meta

    def validate(self, source: str = "model") -> None:
        """Check types and consistency; raise :class:`CardError` naming the field."""
        if not isinstance(self.classes, list) or len(self.classes) < 2:
            raise CardError(f"{source}: 'classes' must list background and at least one class")
        if any(h not in HEADS for h in self.heads) or "seg" not in self.heads:
            raise CardError(f"{source}: 'heads' must be ['seg'] or ['seg', 'cam'], got {self.heads}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise CardError(f"{source}: 'mean' and 'std' must hold 3 values (std > 0)")
        if not isinstance(self.patch_size, int) or self.patch_size < 1:
            raise CardError(f"{source}: 'patch_size' must be a positive integer")
        if len(self.input_shape) != 4 or self.input_shape[1] != 3:
            raise CardError(f"{source}: 'input_shape' must be [N, 3, H, W], got {self.input_shape}")
        for side in self.input_shape[2:]:
            if side != -1 and (side <= 0 or side % self.patch_size):
                raise CardError(
                    f"{source}: static input side {side} is not a multiple of the patch size {self.patch_size}"
                )
        if len(self.palette) < len(self.classes) or any(len(c) != 3 for c in self.palette):
            raise CardError(f"{source}: 'palette' needs one RGB triple per class")
        if self.precision not in PRECISIONS:
            raise CardError(f"{source}: 'precision' must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")



def card_from_checkpoint(
    checkpoint: str | Path,
    cfg: Any,
    classes: list[str],
    patch_size: int,
    heads: list[str] | tuple[str, ...],
    input_shape: list[int] | tuple[int, ...],
    precision: str = "fp32",
    opset: int = 18,
    iteration: int = -1,
) -> ModelCard:
    """Build the metadata of an export of ``checkpoint`` (``cfg`` is its :class:`~seco_deploy.config.Config`)."""
    from seco_deploy import __version__
    from seco_deploy.data.io import file_sha256
    from seco_deploy.data.palette import VOC_PALETTE

    n = len(classes)
    palette = VOC_PALETTE[: max(n, 1)].astype(int).tolist()
    meta = ModelCard(
        classes=[str(c) for c in classes],
        palette=palette,
        mean=[float(v) for v in cfg.data.mean],
        std=[float(v) for v in cfg.data.std],
        patch_size=int(patch_size),
        crop_size=int(cfg.data.crop_size),
        mask_scales=[float(s) for s in cfg.infer.mask_scales],
        cam_scales=[float(s) for s in cfg.model.cam_scales],
        heads=list(heads),
        backbone=str(cfg.model.backbone),
        input_shape=[int(v) for v in input_shape],
        precision=precision,
        opset=int(opset),
        library_version=__version__,
        checkpoint_sha256=file_sha256(checkpoint),
        iteration=int(iteration),
        config=cfg.to_yaml(),
    )
    meta.validate(str(checkpoint))
    return meta


# ---------------------------------------------------------------------- ONNX
def embed_in_onnx(model: Any, meta: ModelCard) -> None:
    """Write ``meta`` into ``model.metadata_props`` (an ``onnx.ModelProto``), replacing old ``seco.*`` keys."""
    props = meta.to_props()
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(KEY_PREFIX)]
    del model.metadata_props[:]
    for key, value in keep + sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value


def onnx_props(path: str | Path) -> dict[str, str]:
    """All ``metadata_props`` of an ONNX file, without loading external weight files."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def read_onnx_card(path: str | Path) -> ModelCard:
    """The :class:`ModelCard` embedded in an ONNX file."""
    return ModelCard.from_props(onnx_props(path), source=str(path))


def to_json(meta: ModelCard) -> str:
    return json.dumps(asdict(meta), indent=2)


def backend_outputs(outputs: dict[str, Any], heads: tuple[str, ...] | list[str] = HEADS) -> dict[str, Any]:
    """Graph outputs by name (``seg_logits``, ``cams``, ``cls_logits``) -> the Backend's keys
    (``seg``, ``cam``, ``cls``), keeping only the outputs of ``heads``."""
    wanted = {name for head in heads for name in OUTPUT_NAMES[head]}
    return {OUTPUT_KEYS[name]: value for name, value in outputs.items() if name in wanted}
