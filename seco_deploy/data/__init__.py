"""Data layer: safe image I/O (:mod:`.io`), dataset readers (:mod:`.datasets`), training views
(:mod:`.transforms`, imports torch) and the synthetic co-occurrence set (:mod:`.synth`).

The names below need neither torch nor a dataset; import :mod:`seco_deploy.data.transforms`
for ``TrainViews``, ``TrainDataset`` and ``EvalTransform``.
"""

from seco_deploy.data.datasets import (
    COCO_CLASSES,
    VOC_CLASSES,
    DatasetError,
    Sample,
    SegDataset,
    open_dataset,
)
from seco_deploy.data.io import (
    ImageReadError,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    read_image,
    read_mask,
    write_mask_png,
)
from seco_deploy.data.palette import VOC_PALETTE, colorize

__all__ = [
    "COCO_CLASSES",
    "VOC_CLASSES",
    "VOC_PALETTE",
    "DatasetError",
    "ImageReadError",
    "Sample",
    "SegDataset",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "colorize",
    "open_dataset",
    "read_image",
    "read_mask",
    "write_mask_png",
]
