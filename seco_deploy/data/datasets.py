"""Dataset readers: PASCAL VOC layout, COCO converted to VOC-style masks, folder + tags.

Every reader returns a :class:`SegDataset`: ``classes`` (background first, so there are
``C = len(classes) - 1`` foreground classes), ``names``, ``len()``, ``has_masks`` and
``ds[i] -> Sample(name, image uint8 (H, W, 3), tags float32 (C,), mask uint8 (H, W) | None,
context uint8 (H, W) | None)``.
Tag ``c - 1`` of the multi-hot vector is class index ``c`` of the masks.

Layouts (``open_dataset(root, split, format="auto")`` tells them apart):

``voc``::

    ROOT/JPEGImages/NAME.jpg                      (any common image extension)
    ROOT/SegmentationClassAug/NAME.png            or SegmentationClass/ (palette or gray PNG)
    ROOT/ImageSets/Segmentation/<split>.txt       one NAME a line
    ROOT/Annotations/NAME.xml                     optional, VOC object annotations
    ROOT/ContextMasks/NAME.png                    optional, context index per pixel (seco data synth)
    ROOT/tags.csv, ROOT/classes.txt               optional

  Tags come from ``tags.csv`` when it exists, else from the image's mask (the classes present
  in it, as VOC practice does), else from ``Annotations/NAME.xml`` (its ``object/name``s).
  Classes come from ``classes.txt`` when it exists, else the 21 VOC classes.

``coco`` (the reference's layout, masks from a COCO-to-VOC conversion, 81 classes)::

    ROOT/JPEGImages/<split>2014/COCO_<split>2014_000000000009.jpg
    ROOT/SegmentationClass/<split>2014/000000000009.png
    ROOT/ImageSets/Segmentation/<split>.txt or ROOT/<split>.txt   optional name lists

  The image folder is ``<split>``, ``<split>2014`` or ``<split>2017``; a mask is named after
  the image without its ``COCO_<folder>_`` prefix (or with the full name). Without a name list
  every image of the folder is used. Tags from ``tags.csv``, else from the masks.

``folder``::

    ROOT/tags.csv        header ``image,tags`` (optional third column ``split``); ``image`` a
                         path relative to ROOT, ``tags`` class names separated by ``;``
    ROOT/classes.txt     one class name a line, background first

  No masks. With a ``split`` column only that split's rows are used, else every row.

Files ``tags.csv`` and ``classes.txt`` are read strictly: an unknown class name is an error
naming the class and the line.
"""

from __future__ import annotations

import csv
import difflib
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seco_deploy.data.io import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, read_image, read_mask

__all__ = [
    "COCO_CLASSES",
    "DatasetError",
    "FORMATS",
    "Sample",
    "SegDataset",
    "VOC_CLASSES",
    "detect_format",
    "open_dataset",
    "read_classes_txt",
    "read_tags_csv",
]

FORMATS = ("auto", "voc", "coco", "folder")

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

COCO_CLASSES: tuple[str, ...] = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

IGNORE_INDEX = 255


class DatasetError(ValueError):
    """A dataset folder is missing something or holds something invalid; the message says what."""


@dataclass
class Sample:
    """One dataset item: ``tags[c - 1] == 1`` when class ``c`` is in the image."""

    name: str
    image: np.ndarray  # uint8 (H, W, 3) RGB
    tags: np.ndarray  # float32 (C,)
    mask: np.ndarray | None  # uint8 (H, W) class indices, 255 = ignore; None when there is none
    context: np.ndarray | None = None  # uint8 (H, W) context index (0 = none), where the set labels contexts


@dataclass(frozen=True)
class _Record:
    name: str
    image: Path
    mask: Path | None
    xml: Path | None
    tags: np.ndarray | None  # from tags.csv
    context: Path | None = None  # ContextMasks/NAME.png


class SegDataset:
    """An indexable dataset of images, multi-hot image tags and (when present) masks.

    Tags of an item come from, in order: the ``tags.csv`` row, the classes present in its
    mask, its VOC XML annotation. Images are read with :func:`read_image` (``max_pixels``).
    """

    def __init__(
        self,
        root: Path,
        split: str,
        format: str,
        classes: list[str],
        records: list[_Record],
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.root = root
        self.split = split
        self.format = format
        self.classes = list(classes)
        self._records = records
        self.names = [r.name for r in records]
        self.has_masks = bool(records) and all(r.mask is not None for r in records)
        self.max_pixels = max_pixels
        self._index = {name: i for i, name in enumerate(self.names)}

    # ---------------------------------------------------------------- basics
    @property
    def num_classes(self) -> int:
        """C, the number of foreground classes (background excluded)."""
        return len(self.classes) - 1

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return (
            f"SegDataset(format={self.format!r}, root={str(self.root)!r}, split={self.split!r}, "
            f"images={len(self)}, classes={self.num_classes}, has_masks={self.has_masks})"
        )

    def index_of(self, name: str) -> int:
        return self._index[name]

    def image_path(self, i: int) -> Path:
        return self._records[i].image

    def mask_path(self, i: int) -> Path | None:
        return self._records[i].mask

    # ---------------------------------------------------------------- loading
    def load_image(self, i: int) -> np.ndarray:
        return read_image(self._records[i].image, max_pixels=self.max_pixels)

    def load_mask(self, i: int) -> np.ndarray | None:
        path = self._records[i].mask
        if path is None:
            return None
        mask = read_mask(path, max_pixels=self.max_pixels)
        bad = mask[(mask != IGNORE_INDEX) & (mask > self.num_classes)]
        if bad.size:
            raise DatasetError(
                f"mask {path} holds class index {int(bad.max())} but the dataset has only "
                f"{len(self.classes)} classes (0..{self.num_classes}, 255 = ignore); check classes.txt"
            )
        return mask

    def tags(self, i: int, mask: np.ndarray | None = None) -> np.ndarray:
        """Multi-hot tags ``float32 (C,)`` of item ``i`` (reads only what the tag source needs)."""
        record = self._records[i]
        if record.tags is not None:
            return record.tags.copy()
        if record.mask is not None:
            if mask is None:
                mask = self.load_mask(i)
            return _tags_from_mask(mask, self.num_classes)
        if record.xml is not None:
            return _tags_from_xml(record.xml, self.classes)
        raise DatasetError(f"image {record.name} has no tags: no tags.csv row, no mask and no XML annotation")

    def tags_matrix(self) -> np.ndarray:
        """Tags of every item, ``float32 (N, C)``; reads masks or XML files when tags come from them."""
        if not self._records:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        return np.stack([self.tags(i) for i in range(len(self))])

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} images")
        i = i % len(self)
        record = self._records[i]
        image = self.load_image(i)
        mask = self.load_mask(i)
        if mask is not None and mask.shape != image.shape[:2]:
            raise DatasetError(
                f"mask {record.mask} is {mask.shape[1]}x{mask.shape[0]} but image {record.image} is "
                f"{image.shape[1]}x{image.shape[0]}; they must have the same size"
            )
        context = read_mask(record.context, max_pixels=self.max_pixels) if record.context is not None else None
        if context is not None and context.shape != image.shape[:2]:
            raise DatasetError(f"context mask {record.context} does not have the size of image {record.image}")
        return Sample(name=record.name, image=image, tags=self.tags(i, mask), mask=mask, context=context)


# ---------------------------------------------------------------------------- tag sources
def _tags_from_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    present = np.unique(mask)
    present = present[(present != 0) & (present != IGNORE_INDEX) & (present <= num_classes)]
    tags = np.zeros(num_classes, dtype=np.float32)
    tags[present.astype(np.intp) - 1] = 1.0
    return tags


def _class_lookup_error(where: str, name: str, classes: list[str]) -> DatasetError:
    close = difflib.get_close_matches(name, classes[1:], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    shown = ", ".join(classes[1:]) if len(classes) <= 30 else ", ".join(classes[1:30]) + ", ..."
    return DatasetError(f"{where}: unknown class {name!r}{hint}; known classes: {shown}")


def _tags_from_xml(path: Path, classes: list[str]) -> np.ndarray:
    lookup = {name: i for i, name in enumerate(classes)}
    try:
        tree = ElementTree.parse(path)
    except (ElementTree.ParseError, OSError) as exc:
        raise DatasetError(f"cannot read annotation {path}: {exc}") from exc
    tags = np.zeros(len(classes) - 1, dtype=np.float32)
    for element in tree.getroot().iter("object"):
        name = (element.findtext("name") or "").strip()
        if not name:
            continue
        index = lookup.get(name)
        if index is None or index == 0:
            raise _class_lookup_error(str(path), name, classes)
        tags[index - 1] = 1.0
    return tags


def read_classes_txt(path: str | os.PathLike[str]) -> list[str]:
    """Read ``classes.txt``: one class name a line, background first; blank lines and ``#`` comments skipped.

    The one reader of class-name files (datasets, ``seco eval --classes``, scoring)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read {p}: {exc}") from exc
    classes: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name in seen:
            raise DatasetError(f"{p}, line {lineno}: class {name!r} repeats line {seen[name]}")
        seen[name] = lineno
        classes.append(name)
    if len(classes) < 2:
        raise DatasetError(f"{p} must list the background class first and at least one foreground class")
    if len(classes) > 255:
        raise DatasetError(f"{p} lists {len(classes)} classes; masks hold at most 255 (index 255 is 'ignore')")
    return classes


def _strip_image_ext(path: str) -> str:
    root, ext = os.path.splitext(path)
    return root if ext.lower() in IMAGE_EXTENSIONS else path


def read_tags_csv(
    path: str | os.PathLike[str], classes: list[str], split: str | None = None
) -> dict[str, tuple[str, np.ndarray]]:
    """Read ``tags.csv`` into ``{name: (image column, tags float32 (C,))}``.

    The header must hold ``image`` and ``tags`` (and may hold ``split``); ``name`` is the image
    column without its extension. Tags are class names separated by ``;`` (empty: no
    foreground). When ``split`` is given and the file has a ``split`` column, only rows of that
    split are returned. Unknown class names and repeated images are errors naming the line.
    """
    p = Path(path)
    lookup = {name: i for i, name in enumerate(classes)}
    out: dict[str, tuple[str, np.ndarray]] = {}
    lines_of: dict[str, int] = {}
    try:
        handle = open(p, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DatasetError(f"cannot read {p}: {exc}") from exc
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        fields = [h.strip().lower() for h in header] if header else []
        if "image" not in fields or "tags" not in fields:
            raise DatasetError(f"{p}, line 1: the header must be 'image,tags' (optionally ',split'), got {header}")
        col_image, col_tags = fields.index("image"), fields.index("tags")
        col_split = fields.index("split") if "split" in fields else None
        for row in reader:
            lineno = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) <= max(col_image, col_tags):
                raise DatasetError(f"{p}, line {lineno}: expected the columns {header}, got {row}")
            if col_split is not None and split is not None:
                if len(row) <= col_split or row[col_split].strip() != split:
                    continue
            image = row[col_image].strip().replace("\\", "/")
            if not image:
                raise DatasetError(f"{p}, line {lineno}: the image column is empty")
            name = _strip_image_ext(image)
            if name in lines_of:
                raise DatasetError(f"{p}, line {lineno}: image {image!r} already listed on line {lines_of[name]}")
            tags = np.zeros(len(classes) - 1, dtype=np.float32)
            for piece in row[col_tags].split(";"):
                label = piece.strip()
                if not label:
                    continue
                index = lookup.get(label)
                if index is None:
                    raise _class_lookup_error(f"{p}, line {lineno}", label, classes)
                if index == 0:
                    raise DatasetError(
                        f"{p}, line {lineno}: {label!r} is the background class; list only foreground classes"
                    )
                tags[index - 1] = 1.0
            out[name] = (image, tags)
            lines_of[name] = lineno
    return out


# ---------------------------------------------------------------------------- layouts
def _read_name_list(path: Path) -> list[str]:
    names: list[str] = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(_strip_image_ext(line.split()[0]))
    return names


def _index_images(folder: Path) -> dict[str, Path]:
    """Map file stem -> path for the image files directly inside ``folder`` (``.jpg`` preferred)."""
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    found: dict[str, tuple[int, Path]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)
            ext = ext.lower()
            if ext not in rank or not entry.is_file():
                continue
            if stem not in found or rank[ext] < found[stem][0]:
                found[stem] = (rank[ext], Path(entry.path))
    return {stem: path for stem, (_, path) in found.items()}


def _index_files(folder: Path | None, suffix: str) -> set[str]:
    if folder is None or not folder.is_dir():
        return set()
    with os.scandir(folder) as entries:
        return {entry.name[: -len(suffix)] for entry in entries if entry.name.endswith(suffix)}


def _missing_error(what: str, missing: list[str], where: Path) -> DatasetError:
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return DatasetError(f"{len(missing)} {what} missing from {where}: {shown}")


def _dataset_classes(root: Path, default: tuple[str, ...]) -> list[str]:
    path = root / "classes.txt"
    return read_classes_txt(path) if path.is_file() else list(default)


def _open_voc(root: Path, split: str, max_pixels: int) -> SegDataset:
    image_dir = root / "JPEGImages"
    list_dir = root / "ImageSets" / "Segmentation"
    list_path = list_dir / f"{split}.txt"
    if not list_path.is_file():
        available = sorted(p.stem for p in list_dir.glob("*.txt")) if list_dir.is_dir() else []
        hint = f"; available splits: {', '.join(available)}" if available else ""
        raise DatasetError(f"split list {list_path} does not exist{hint}")
    names = _read_name_list(list_path)
    if not names:
        raise DatasetError(f"split list {list_path} is empty")
    classes = _dataset_classes(root, VOC_CLASSES)
    images = _index_images(image_dir)
    missing = [n for n in names if n not in images]
    if missing:
        raise _missing_error("images of the split are", missing, image_dir)
    mask_dir = next((d for d in (root / "SegmentationClassAug", root / "SegmentationClass") if d.is_dir()), None)
    masks = _index_files(mask_dir, ".png")
    xml_dir = root / "Annotations"
    xmls = _index_files(xml_dir, ".xml")
    csv_tags = _csv_tags_for(root, classes, names, split)
    context_dir = root / "ContextMasks"
    contexts = _index_files(context_dir if context_dir.is_dir() else None, ".png")
    records = []
    no_source = []
    for name in names:
        mask = mask_dir / f"{name}.png" if mask_dir is not None and name in masks else None
        xml = xml_dir / f"{name}.xml" if name in xmls else None
        tags = csv_tags[name] if csv_tags is not None else None
        if tags is None and mask is None and xml is None:
            no_source.append(name)
        records.append(_Record(name, images[name], mask, xml, tags, context_dir / f"{name}.png" if name in contexts
                               else None))
    if no_source:
        raise _missing_error(
            "images have no tag source (no tags.csv, mask or Annotations XML); they are", no_source, root
        )
    return SegDataset(root, split, "voc", classes, records, max_pixels)


def _csv_tags_for(root: Path, classes: list[str], names: list[str], split: str) -> dict[str, np.ndarray] | None:
    path = root / "tags.csv"
    if not path.is_file():
        return None
    rows = {name: tags for name, (_, tags) in read_tags_csv(path, classes, split=None).items()}
    # The image column may name the file relative to JPEGImages/ or to the dataset root.
    by_stem = {os.path.basename(name): tags for name, tags in rows.items()}
    found = {n: rows.get(n, by_stem.get(n)) for n in names}
    missing = [n for n, tags in found.items() if tags is None]
    if missing:
        raise _missing_error(f"images of split {split!r} have no row in tags.csv; they are", missing, path)
    return found  # type: ignore[return-value]


def _coco_subfolder(root: Path, split: str) -> str:
    for candidate in (split, f"{split}2014", f"{split}2017"):
        if (root / "JPEGImages" / candidate).is_dir():
            return candidate
    available = sorted(p.name for p in (root / "JPEGImages").iterdir() if p.is_dir())
    raise DatasetError(
        f"no image folder for split {split!r} under {root / 'JPEGImages'} (looked for {split}, {split}2014, "
        f"{split}2017); found: {', '.join(available) or 'none'}"
    )


def _open_coco(root: Path, split: str, max_pixels: int) -> SegDataset:
    sub = _coco_subfolder(root, split)
    image_dir = root / "JPEGImages" / sub
    images = _index_images(image_dir)
    list_path = next(
        (p for p in (root / "ImageSets" / "Segmentation" / f"{split}.txt", root / f"{split}.txt") if p.is_file()),
        None,
    )
    names = _read_name_list(list_path) if list_path is not None else sorted(images)
    if not names:
        raise DatasetError(f"split {split!r} of {root} holds no images")
    missing = [n for n in names if n not in images]
    if missing:
        raise _missing_error("images of the split are", missing, image_dir)
    classes = _dataset_classes(root, COCO_CLASSES)
    mask_dir = next(
        (d for d in (root / "SegmentationClass" / sub, root / "SegmentationClassAug" / sub) if d.is_dir()), None
    )
    masks = _index_files(mask_dir, ".png")
    prefix = f"COCO_{sub}_"
    csv_tags = _csv_tags_for(root, classes, names, split)
    records = []
    no_source = []
    for name in names:
        short = name[len(prefix) :] if name.startswith(prefix) else name
        stem = short if short in masks else (name if name in masks else None)
        mask = mask_dir / f"{stem}.png" if mask_dir is not None and stem is not None else None
        tags = csv_tags[name] if csv_tags is not None else None
        if tags is None and mask is None:
            no_source.append(name)
        records.append(_Record(name, images[name], mask, None, tags))
    if no_source:
        raise _missing_error("images have neither a mask nor a tags.csv row; they are", no_source, root)
    return SegDataset(root, split, "coco", classes, records, max_pixels)


def _open_folder(root: Path, split: str, max_pixels: int) -> SegDataset:
    tags_path = root / "tags.csv"
    classes_path = root / "classes.txt"
    if not tags_path.is_file():
        raise DatasetError(f"a folder dataset needs {tags_path} (header 'image,tags', tags separated by ';')")
    if not classes_path.is_file():
        raise DatasetError(f"a folder dataset needs {classes_path} (one class name a line, background first)")
    classes = read_classes_txt(classes_path)
    rows = read_tags_csv(tags_path, classes, split=split)
    if not rows:
        raise DatasetError(f"{tags_path} has no rows for split {split!r}")
    records = []
    missing = []
    for name, (image, tags) in rows.items():
        path = root / image
        if not path.is_file():
            missing.append(image)
        records.append(_Record(name, path, None, None, tags))
    if missing:
        raise _missing_error("images listed in tags.csv are", missing, root)
    return SegDataset(root, split, "folder", classes, records, max_pixels)


def detect_format(root: str | os.PathLike[str]) -> str:
    """Tell the layout of ``root``: ``voc``, ``coco`` or ``folder`` (see the module docstring)."""
    r = Path(root)
    if not r.is_dir():
        raise DatasetError(f"dataset folder {r} does not exist")
    image_dir = r / "JPEGImages"
    if image_dir.is_dir():
        has_subdirs = any(p.is_dir() for p in image_dir.iterdir())
        has_images = bool(_index_images(image_dir))
        return "coco" if has_subdirs and not has_images else "voc"
    if (r / "tags.csv").is_file():
        return "folder"
    raise DatasetError(
        f"cannot tell the layout of {r}: expected JPEGImages/ (VOC or COCO layout) or tags.csv + classes.txt "
        "(folder layout)"
    )


def open_dataset(
    root: str | os.PathLike[str],
    split: str,
    format: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SegDataset:
    """Open the ``split`` of the dataset at ``root`` in the given layout (``auto`` detects it)."""
    if format not in FORMATS:
        raise DatasetError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")
    r = Path(root)
    if not r.is_dir():
        raise DatasetError(f"dataset folder {r} does not exist")
    fmt = detect_format(r) if format == "auto" else format
    opener = {"voc": _open_voc, "coco": _open_coco, "folder": _open_folder}[fmt]
    return opener(r, split, max_pixels)
