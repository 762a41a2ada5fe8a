"""The files of a synthetic set on disk, and reading them back.

A set written by :func:`seco_deploy.data.synth.synthesize` (``seco data synth OUT``) is a VOC
layout plus three files of its own::

    OUT/JPEGImages/NAME.jpg              RGB, JPEG quality 92 (deterministic encoder)
    OUT/SegmentationClass/NAME.png       8-bit palette masks, exact (0 background)
    OUT/ContextMasks/NAME.png            per pixel context id (1 water, 2 rails, 0 none);
                                         visible context pixels only (objects excluded)
    OUT/ImageSets/Segmentation/{train,val,trainval}.txt
    OUT/tags.csv                         image,tags,split (tags = classes present in the mask)
    OUT/classes.txt                      background first
    OUT/synth.json                       parameters, classes, contexts, couplings, statistics

Images are named ``synth_NNNNN`` (at least five digits, more when the set needs them). The
constants below are the one home of these names; ``synth.json`` carries ``version``
(:data:`SYNTH_VERSION`), raised when the layout or its meaning changes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from seco_deploy.data.io import read_mask

SYNTH_VERSION = 1
IMAGES_DIR = "JPEGImages"
MASKS_DIR = "SegmentationClass"
CONTEXT_MASKS_DIR = "ContextMasks"
LISTS_DIR = "ImageSets/Segmentation"
TAGS_FILE = "tags.csv"
CLASSES_FILE = "classes.txt"
INFO_FILE = "synth.json"


def load_synth_info(root: str | os.PathLike[str]) -> dict:
    """Parse ``root/synth.json``; raises ``FileNotFoundError`` when ``root`` is not a synthetic set.

    Useful keys: ``classes``, ``contexts``, ``context_of`` (class -> context name),
    ``context_index`` (context name -> value in the context masks), ``pairs``, ``stats``.
    """
    path = Path(root) / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; {root} is not a set written by `seco data synth`")
    return json.loads(path.read_text(encoding="utf-8"))


def read_context_mask(root: str | os.PathLike[str], name: str) -> np.ndarray:
    """The context mask of image ``name``: uint8 (H, W), 0 none, else an index of ``CONTEXTS``."""
    return read_mask(Path(root) / CONTEXT_MASKS_DIR / f"{name}.png")
