"""Dataset readers: VOC (masks, XML, tags.csv), COCO-style, folder + tags; layout detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _data_helpers import (
    block_mask,
    noise_image,
    save_rgb,
    write_coco,
    write_folder,
    write_split,
    write_voc_masks,
    write_voc_xml,
)

from seco_deploy.data.datasets import (
    COCO_CLASSES,
    VOC_CLASSES,
    DatasetError,
    detect_format,
    open_dataset,
    read_classes_txt,
)
from seco_deploy.data.io import write_mask_png


def _expected(classes: list[int], num_classes: int) -> np.ndarray:
    tags = np.zeros(num_classes, dtype=np.float32)
    tags[np.asarray(classes, dtype=int) - 1] = 1
    return tags


def test_builtin_class_lists() -> None:
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background" and VOC_CLASSES[15] == "person"
    assert len(COCO_CLASSES) == 81 and COCO_CLASSES[1] == "person" and COCO_CLASSES[80] == "toothbrush"
    assert len(set(VOC_CLASSES)) == 21 and len(set(COCO_CLASSES)) == 81


def test_voc_with_masks_only(tmp_path: Path) -> None:
    present = write_voc_masks(tmp_path)
    ds = open_dataset(tmp_path, "train")
    assert ds.format == "voc" and ds.has_masks and len(ds) == 2
    assert ds.classes == list(VOC_CLASSES) and ds.num_classes == 20
    assert ds.names == ["2007_000001", "2007_000002"]
    for i, name in enumerate(ds.names):
        sample = ds[i]
        assert sample.name == name
        assert sample.image.shape == (24, 32, 3) and sample.image.dtype == np.uint8
        assert sample.mask is not None and sample.mask.shape == (24, 32)
        assert sample.tags.dtype == np.float32
        np.testing.assert_array_equal(sample.tags, _expected(present[name], 20))
    val = open_dataset(tmp_path, "val")
    np.testing.assert_array_equal(val[0].tags, _expected([19], 20))  # 255 border is not a class
    assert val.tags_matrix().shape == (1, 20)


def test_voc_prefers_segmentation_class_aug(tmp_path: Path) -> None:
    write_voc_masks(tmp_path, mask_dir="SegmentationClass")
    write_mask_png(tmp_path / "SegmentationClassAug" / "2007_000001.png", block_mask(24, 32, [7]))
    write_mask_png(tmp_path / "SegmentationClassAug" / "2007_000002.png", block_mask(24, 32, [8]))
    ds = open_dataset(tmp_path, "train")
    np.testing.assert_array_equal(ds[0].tags, _expected([7], 20))
    assert ds.mask_path(0).parent.name == "SegmentationClassAug"


def test_voc_with_xml_only(tmp_path: Path) -> None:
    objects = write_voc_xml(tmp_path)
    ds = open_dataset(tmp_path, "train", format="voc")
    assert not ds.has_masks
    lookup = {name: i for i, name in enumerate(VOC_CLASSES)}
    for i, name in enumerate(ds.names):
        sample = ds[i]
        assert sample.mask is None
        np.testing.assert_array_equal(sample.tags, _expected([lookup[o] for o in objects[name]], 20))


def test_voc_xml_unknown_class_names_file_and_class(tmp_path: Path) -> None:
    write_voc_xml(tmp_path)
    (tmp_path / "Annotations" / "2008_000011.xml").write_text(
        "<annotation><object><name>unicorn</name></object></annotation>", encoding="utf-8"
    )
    ds = open_dataset(tmp_path, "train")
    with pytest.raises(DatasetError, match=r"2008_000011\.xml.*unknown class 'unicorn'"):
        ds[1]


def test_voc_tags_csv_wins_over_masks(tmp_path: Path) -> None:
    write_voc_masks(tmp_path)
    tags = "image,tags\n2007_000001.jpg,cat;dog\nJPEGImages/2007_000002.jpg,\n"
    (tmp_path / "tags.csv").write_text(tags, encoding="utf-8")
    ds = open_dataset(tmp_path, "train")
    np.testing.assert_array_equal(ds[0].tags, _expected([8, 12], 20))
    np.testing.assert_array_equal(ds[1].tags, np.zeros(20, dtype=np.float32))
    assert ds[0].mask is not None  # masks still come with the samples


def test_voc_missing_split_lists_available(tmp_path: Path) -> None:
    write_voc_masks(tmp_path)
    with pytest.raises(DatasetError, match=r"test\.txt does not exist; available splits: train, val"):
        open_dataset(tmp_path, "test")


def test_voc_missing_image_is_named(tmp_path: Path) -> None:
    write_voc_masks(tmp_path)
    write_split(tmp_path, "train", ["2007_000001", "2007_999999"])
    with pytest.raises(DatasetError, match="2007_999999"):
        open_dataset(tmp_path, "train")


def test_mask_and_image_size_mismatch(tmp_path: Path) -> None:
    write_voc_masks(tmp_path)
    write_mask_png(tmp_path / "SegmentationClass" / "2007_000001.png", np.zeros((5, 5), dtype=np.uint8))
    ds = open_dataset(tmp_path, "train")
    with pytest.raises(DatasetError, match="same size"):
        ds[0]


def test_mask_class_beyond_the_class_list(tmp_path: Path) -> None:
    write_voc_masks(tmp_path)
    write_mask_png(tmp_path / "SegmentationClass" / "2007_000001.png", block_mask(24, 32, [0, 42]))
    ds = open_dataset(tmp_path, "train")
    with pytest.raises(DatasetError, match="class index 42"):
        ds[0]


def test_coco_style_layout(tmp_path: Path) -> None:
    present = write_coco(tmp_path)
    assert detect_format(tmp_path) == "coco"
    ds = open_dataset(tmp_path, "train")
    assert ds.format == "coco" and ds.has_masks and ds.num_classes == 80
    assert ds.classes == list(COCO_CLASSES)
    assert ds.names == ["COCO_train2014_000000000009", "COCO_train2014_000000000025"]
    for i, name in enumerate(ds.names):
        sample = ds[i]
        assert sample.image.shape == (20, 30, 3)
        np.testing.assert_array_equal(sample.tags, _expected(present[name], 80))
    val = open_dataset(tmp_path, "val")
    np.testing.assert_array_equal(val[0].tags, _expected([18], 80))
    # A name list restricts the split.
    (tmp_path / "train.txt").write_text("COCO_train2014_000000000025\n", encoding="utf-8")
    assert open_dataset(tmp_path, "train").names == ["COCO_train2014_000000000025"]


def test_folder_with_tags(tmp_path: Path) -> None:
    rows = ["image,tags", "img/a.jpg,cat;dog", "img/sub/b.png, dog ", "img/c.jpg,"]
    write_folder(tmp_path, rows, ["background", "cat", "dog"])
    assert detect_format(tmp_path) == "folder"
    ds = open_dataset(tmp_path, "train")
    assert ds.format == "folder" and not ds.has_masks
    assert ds.classes == ["background", "cat", "dog"] and ds.names == ["img/a", "img/sub/b", "img/c"]
    assert ds[0].tags.tolist() == [1.0, 1.0]
    assert ds[1].tags.tolist() == [0.0, 1.0]
    assert ds[2].tags.tolist() == [0.0, 0.0]
    assert ds[1].mask is None and ds[1].image.shape == (16, 16, 3)


def test_folder_split_column(tmp_path: Path) -> None:
    rows = ["image,tags,split", "a.jpg,cat,train", "b.jpg,dog,val", "c.jpg,dog,train"]
    write_folder(tmp_path, rows, ["background", "cat", "dog"])
    assert open_dataset(tmp_path, "train").names == ["a", "c"]
    assert open_dataset(tmp_path, "val").names == ["b"]


def test_folder_unknown_class_names_class_and_line(tmp_path: Path) -> None:
    rows = ["image,tags", "a.jpg,cat", "b.jpg,dog;cta"]
    write_folder(tmp_path, rows, ["background", "cat", "dog"])
    with pytest.raises(DatasetError, match=r"tags\.csv, line 3: unknown class 'cta' \(did you mean 'cat'\?\)"):
        open_dataset(tmp_path, "train")


def test_folder_errors(tmp_path: Path) -> None:
    write_folder(tmp_path / "bg", ["image,tags", "a.jpg,background"], ["background", "cat"])
    with pytest.raises(DatasetError, match="line 2: 'background' is the background class"):
        open_dataset(tmp_path / "bg", "train")
    write_folder(tmp_path / "dup", ["image,tags", "a.jpg,cat", "a.jpg,cat"], ["background", "cat"])
    with pytest.raises(DatasetError, match="line 3: image 'a.jpg' already listed on line 2"):
        open_dataset(tmp_path / "dup", "train")
    write_folder(tmp_path / "hdr", ["file,labels", "a.jpg,cat"], ["background", "cat"])
    with pytest.raises(DatasetError, match="header must be 'image,tags'"):
        open_dataset(tmp_path / "hdr", "train")
    write_folder(tmp_path / "nocls", ["image,tags", "a.jpg,cat"], ["background", "cat"])
    (tmp_path / "nocls" / "classes.txt").unlink()
    with pytest.raises(DatasetError, match="classes.txt"):
        open_dataset(tmp_path / "nocls", "train")
    write_folder(tmp_path / "gone", ["image,tags", "a.jpg,cat"], ["background", "cat"])
    (tmp_path / "gone" / "a.jpg").unlink()
    with pytest.raises(DatasetError, match="a.jpg"):
        open_dataset(tmp_path / "gone", "train")


def test_classes_txt_rules(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("background\n\ncat\n", encoding="utf-8")
    assert read_classes_txt(path) == ["background", "cat"]
    path.write_text("background\ncat\ncat\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="line 3: class 'cat' repeats line 2"):
        read_classes_txt(path)
    path.write_text("background\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="at least one foreground"):
        read_classes_txt(path)


def test_layout_detection_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "missing", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="cannot tell the layout"):
        open_dataset(tmp_path / "empty", "train")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        open_dataset(tmp_path, "train", format="kitti")


def test_voc_with_png_images_and_classes_txt(tmp_path: Path) -> None:
    save_rgb(tmp_path / "JPEGImages" / "x.png", noise_image(8, 8))
    write_mask_png(tmp_path / "SegmentationClass" / "x.png", block_mask(8, 8, [0, 2], border=False))
    write_split(tmp_path, "train", ["x"])
    (tmp_path / "classes.txt").write_text("background\nwater\nboat\n", encoding="utf-8")
    ds = open_dataset(tmp_path, "train")
    assert ds.classes == ["background", "water", "boat"]
    assert ds[0].tags.tolist() == [0.0, 1.0]
