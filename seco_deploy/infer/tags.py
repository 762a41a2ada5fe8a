"""Image-level tags for pseudo-label mode, read from a ``tags.csv`` and matched to inputs."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np

from seco_deploy.data.io import file_sha256
from seco_deploy.infer.sources import InputItem

__all__ = ["TagTable"]


class TagTable:
    """Image-level tags from a ``tags.csv`` (the dataset format: ``image,tags``, tags ``;``-separated).

    The file is checked against the model's classes when it is read: an unknown class raises
    :class:`seco_deploy.data.datasets.DatasetError` naming the file, line and class. An input
    finds its row by (1) its output name, (2) its path relative to the tags file's folder,
    (3) its file name, when that is unique in the file; all without extension.
    """

    def __init__(self, path: str | os.PathLike[str], classes: list[str]) -> None:
        from seco_deploy.data.datasets import read_tags_csv

        self.path = Path(path)
        self.root = os.path.abspath(self.path.parent)
        rows = read_tags_csv(self.path, classes)
        self.by_name = {name: tags for name, (_, tags) in rows.items()}
        stems: dict[str, list[str]] = collections.defaultdict(list)
        for name in self.by_name:
            stems[name.rsplit("/", 1)[-1]].append(name)
        self.by_stem = {stem: names[0] for stem, names in stems.items() if len(names) == 1}
        self.sha256 = file_sha256(self.path)

    def __len__(self) -> int:
        return len(self.by_name)

    def lookup(self, item: InputItem) -> np.ndarray | None:
        """Multi-hot tags float32 (C,) of ``item``, or None when the file has no row for it."""
        if item.name in self.by_name:
            return self.by_name[item.name]
        rel = os.path.relpath(os.path.abspath(item.path), self.root).replace(os.sep, "/")
        rel = os.path.splitext(rel)[0]
        if rel in self.by_name:
            return self.by_name[rel]
        stem = os.path.splitext(os.path.basename(item.path))[0]
        if stem in self.by_stem:
            return self.by_name[self.by_stem[stem]]
        return None
