"""`seco data synth`: deterministic bytes, exact masks that match the tags, the VOC layout."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from _cli import invoke, said

from seco_deploy.data.datasets import open_dataset
from seco_deploy.data.io import read_image, read_mask
from seco_deploy.data.synth import (
    CLASSES,
    CONTEXT_OF,
    CONTEXTS,
    PROFILES,
    load_synth_info,
    read_context_mask,
    render_scene,
    synthesize,
)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    synthesize(tmp_path / "a", images=8, size=48, seed=3)
    synthesize(tmp_path / "b", images=8, size=48, seed=3)
    synthesize(tmp_path / "c", images=8, size=48, seed=4)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a.keys() == b.keys() and len(a) == 8 * 3 + 6
    assert a == b
    assert a["JPEGImages/synth_00000.jpg"] != c["JPEGImages/synth_00000.jpg"]


# Recorded from the single-module synth.py (commit f2d6ac0) before it became a package. The
# digest covers what is exact on every machine: the text files (lists, tags.csv, classes.txt,
# synth.json) and the decoded masks and context masks (numpy's generators and OpenCV's integer
# rasterisation). JPEG and PNG bytes depend on the libjpeg / zlib build, and the float image
# filters may round a pixel differently on another CPU, so the images are checked through their
# mean RGB: a changed draw order moves it by whole units, a rounding difference by < 0.01.
_RECORDED = {
    "easy": ("43ca3262d5a528e155abcd16c34d7c5e57aeee76b0fc4b28fef23535b056a22c", (126.307, 137.082, 138.219)),
    "cooccur": ("8480597374333b27f6375795e5415da79393ec70cd3e0aaf92fd3b6779b2a76c", (116.464, 141.422, 148.381)),
    "hard": ("f25be4d17a57b22f284fb45db5458b206448ac0858651dd268df5827011aa05f", (115.377, 140.868, 148.544)),
    # Recorded when the profile was added (the demo's default set).
    "partial": ("99a6eb550f3d10fc49028dd59d998f2b6c85fb416a389cf50ab2a48aa4717311", (126.675, 138.828, 144.039)),
}


@pytest.mark.parametrize("difficulty", sorted(_RECORDED))
def test_output_matches_the_recorded_set(tmp_path: Path, difficulty: str) -> None:
    root = tmp_path / difficulty
    synthesize(root, images=6, size=48, seed=11, val_fraction=0.34, difficulty=difficulty)
    digest, means = hashlib.sha256(), []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        if path.suffix == ".png":
            digest.update(read_mask(path).tobytes())
        elif path.suffix == ".jpg":
            means.append(read_image(path).reshape(-1, 3).mean(axis=0))
        else:
            digest.update(path.read_bytes())
    expected_digest, expected_mean = _RECORDED[difficulty]
    assert len(means) == 6
    assert digest.hexdigest() == expected_digest
    np.testing.assert_allclose(np.mean(means, axis=0), expected_mean, atol=0.02)


def test_image_i_does_not_depend_on_the_number_of_images(tmp_path: Path) -> None:
    synthesize(tmp_path / "few", images=3, size=40, seed=1, val_fraction=0.0)
    synthesize(tmp_path / "more", images=5, size=40, seed=1, val_fraction=0.0)
    for name in ("synth_00000", "synth_00002"):
        for sub, ext in (("JPEGImages", "jpg"), ("SegmentationClass", "png"), ("ContextMasks", "png")):
            rel = f"{sub}/{name}.{ext}"
            assert (tmp_path / "few" / rel).read_bytes() == (tmp_path / "more" / rel).read_bytes()


def test_layout_masks_and_tags_agree(tmp_path: Path) -> None:
    out = tmp_path / "set"
    summary = synthesize(out, images=24, size=64, seed=0, val_fraction=0.25)
    assert (summary.train, summary.val) == (18, 6)
    assert (out / "classes.txt").read_text(encoding="utf-8").split() == list(CLASSES)
    rows = list(csv.DictReader((out / "tags.csv").open()))
    assert [r["image"] for r in rows] == [f"JPEGImages/synth_{i:05d}.jpg" for i in range(24)]
    meta = load_synth_info(out)
    assert meta["context_index"] == {"water": 1, "rails": 2}
    assert meta["context_of"] == CONTEXT_OF and meta["contexts"] == list(CONTEXTS)
    assert meta["difficulty"] == "hard" and meta["context_masks"] == "ContextMasks"
    seen_classes = set()
    for row in rows:
        name = Path(row["image"]).stem
        mask = read_mask(out / "SegmentationClass" / f"{name}.png")
        context = read_context_mask(out, name)
        image = read_image(out / row["image"])
        assert image.shape == (64, 64, 3) and mask.shape == context.shape == (64, 64)
        present = {CLASSES[c] for c in np.unique(mask) if c}
        assert present == {t for t in row["tags"].split(";") if t}, name
        assert set(np.unique(mask)) <= set(range(len(CLASSES)))
        assert set(np.unique(context)) <= set(range(len(CONTEXTS)))
        assert (mask[context > 0] == 0).all()  # contexts are background in the ground truth
        seen_classes |= present
    assert len(seen_classes) >= 4
    lists = out / "ImageSets" / "Segmentation"
    splits = {s: (lists / f"{s}.txt").read_text(encoding="utf-8").split() for s in ("train", "val")}
    assert len(splits["train"]) == 18 and len(splits["val"]) == 6 and not set(splits["train"]) & set(splits["val"])
    assert {r["split"] for r in rows if Path(r["image"]).stem in splits["val"]} == {"val"}
    ds = open_dataset(out, "train")
    assert ds.format == "voc" and ds.has_masks and ds.classes == list(CLASSES)
    sample = ds[0]
    expected = np.zeros(len(CLASSES) - 1, dtype=np.float32)
    expected[[c - 1 for c in np.unique(sample.mask) if c]] = 1
    np.testing.assert_array_equal(sample.tags, expected)


def test_default_profile_couples_contexts_and_pairs() -> None:
    """The sampled rates of the default profile: the co-occurrence trap is in the data."""
    profile = PROFILES["cooccur"]
    boats = trains = water_with_boat = rails_with_train = water_alone = rails_alone = 0
    horses = riders = 0
    n = 400
    for i in range(n):
        scene = render_scene(np.random.default_rng(i), 32, profile)
        tags = scene.tags
        has = {name: bool(tags[k - 1]) for k, name in enumerate(CLASSES) if k}
        water, rails = (scene.context == 1).any(), (scene.context == 2).any()
        boats += has["boat"]
        trains += has["train"]
        water_with_boat += has["boat"] and water
        rails_with_train += has["train"] and rails
        water_alone += water and not has["boat"]
        rails_alone += rails and not has["train"]
        horses += has["horse"]
        riders += has["horse"] and has["person"]
    assert water_with_boat / boats > 0.9 and rails_with_train / trains > 0.9
    assert water_alone / n < 0.12 and rails_alone / n < 0.12
    assert water_alone > 0 and rails_alone > 0  # contexts also appear alone
    assert riders / horses > 0.65


def test_profiles_order_the_coupling(tmp_path: Path) -> None:
    easy = synthesize(tmp_path / "easy", images=80, size=32, seed=0, difficulty="easy")
    hard = synthesize(tmp_path / "hard", images=80, size=32, seed=0, difficulty="hard")
    assert sum(easy.context_alone.values()) > sum(hard.context_alone.values())
    assert easy.pair_rate["person|horse"] < hard.pair_rate["person|horse"]
    partial = synthesize(tmp_path / "partial", images=80, size=32, seed=0, difficulty="partial")
    # partial: hard's coupling of class to context, but each context alone more often than in hard
    assert sum(hard.context_alone.values()) < sum(partial.context_alone.values()) < sum(easy.context_alone.values())


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown difficulty 'medium'"):
        synthesize(tmp_path / "x", images=2, size=32, difficulty="medium")
    with pytest.raises(ValueError, match="--size must be at least 32"):
        synthesize(tmp_path / "x", images=2, size=16)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(FileExistsError, match="not empty"):
        synthesize(tmp_path / "busy", images=2, size=32)
    with pytest.raises(FileExistsError, match="not a synthetic set"):
        synthesize(tmp_path / "busy", images=2, size=32, overwrite=True)
    assert (tmp_path / "busy" / "keep.txt").read_text(encoding="utf-8") == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]  # no temporary folders left


def test_cli_writes_layout_summary_and_preview(tmp_path: Path) -> None:
    out, preview = tmp_path / "synth", tmp_path / "preview.png"
    args = ["data", "synth", str(out), "--images", "6", "--size", "48", "--seed", "2", "--val-fraction", "0.5"]
    result = invoke([*args, "--preview", str(preview)])
    assert result.exit_code == 0, result.output
    assert said(result, "images per class", "P(water | boat)")
    for rel in ("tags.csv", "classes.txt", "synth.json", "ImageSets/Segmentation/train.txt"):
        assert (out / rel).is_file(), rel
    assert len(list((out / "JPEGImages").glob("*.jpg"))) == 6
    assert len(list((out / "SegmentationClass").glob("*.png"))) == 6
    sheet = read_image(preview)
    assert sheet.shape[0] > 48 and sheet.shape[1] > 2 * 48
    again = invoke(args)
    assert again.exit_code == 2 and said(again, "is not empty; choose a new folder")
    replaced = invoke([*args, "--overwrite", "--difficulty", "hard"])
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "synth.json").read_text(encoding="utf-8"))["difficulty"] == "hard"
    bad = invoke(["data", "synth", str(tmp_path / "y"), "--difficulty", "medium"])
    assert bad.exit_code == 2 and said(bad, "easy, cooccur, hard, partial")
