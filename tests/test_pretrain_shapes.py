"""seco pretrain's `shapes` source: objects made of solid parts on unlabelled textured surfaces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seco_deploy.pretrain import PretrainRecipe, pretrain, read_weights_metadata
from seco_deploy.pretrain.fractals import PATCH_COVER, object_patch_labels
from seco_deploy.pretrain.shapes import PRIMITIVES, ShapeCategory, paint_shape, render_shape_scene, shape_bank

TINY = {"depth": 3, "embed_dim": 32, "num_heads": 2}


def test_shape_scenes_are_a_function_of_seed_and_index() -> None:
    bank = shape_bank(0, 5)
    a = render_shape_scene(bank, 7, 3, 64, 16)
    b = render_shape_scene(bank, 7, 3, 64, 16)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.patch_labels, b.patch_labels)
    assert not np.array_equal(a.image, render_shape_scene(bank, 7, 4, 64, 16).image)
    assert a.image.shape == (64, 64, 3) and a.image.dtype == np.uint8
    assert a.labels.shape == (5,) and a.patch_labels.shape == (4, 4)
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        render_shape_scene(bank, 7, 3, 60, 16)


def test_categories_are_distinct_normalised_arrangements() -> None:
    bank = shape_bank(3, 12)
    assert bank == shape_bank(3, 12) and bank[:4] == shape_bank(3, 4)  # category k depends on (seed, k) only
    assert len({c.parts for c in bank}) == 12
    for category in bank:
        assert 2 <= len(category.parts) <= 5 and {p.kind for p in category.parts} <= set(PRIMITIVES)
        centres = np.array([p.centre for p in category.parts])
        assert category.aspect > 0
        assert np.all(np.abs(centres[:, 0]) <= category.aspect / 2 + 1e-9)  # inside the box of height 1
        assert np.all(np.abs(centres[:, 1]) <= 0.5 + 1e-9)


def test_labels_and_patches_name_only_the_painted_objects() -> None:
    bank = shape_bank(1, 6)
    labelled = 0
    for index in range(40):
        scene = render_shape_scene(bank, 1, index, 64, 16, max_objects=2)
        present = {int(c) + 1 for c in np.flatnonzero(scene.labels)}
        assert len(present) <= 2
        assert set(np.unique(scene.patch_labels)) - {0} <= present  # a quarter patch is above MIN_VISIBLE
        labelled += len(present)
    assert labelled >= 40  # most scenes show at least one object big enough to name


def test_one_painted_instance_owns_its_pixels_and_its_patches() -> None:
    bank = shape_bank(2, 3)
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64, 3), np.float32)
    owner = np.full((64, 64), -1, np.int64)
    out = paint_shape(bank[1], rng, img, owner, 1)
    painted = owner == 1
    assert painted.any() and set(np.unique(owner)) <= {-1, 1}
    assert np.all(out[~painted] == 0)  # nothing painted outside the object
    patches = object_patch_labels(owner, 3, 16)
    cover = painted.reshape(4, 16, 4, 16).mean(axis=(1, 3))
    assert np.array_equal(patches == 2, cover >= PATCH_COVER)


def test_recipe_takes_the_shapes_source() -> None:
    assert PretrainRecipe(source="shapes", categories=32).classes == 32
    assert isinstance(shape_bank(0, 1)[0], ShapeCategory)


def test_shapes_run_writes_weights_with_its_card(tmp_path: Path) -> None:
    recipe = PretrainRecipe(source="shapes", backbone_kwargs=TINY, categories=4, max_objects=2, image_size=32, iters=4,
                            batch_size=4, warmup_iters=1, eval_images=8, log_every=2, eval_every=2, save_every=2)
    outcome = pretrain(recipe, tmp_path / "run", say=lambda _: None)
    assert outcome.finished and read_weights_metadata(outcome.weights)["recipe"]["source"] == "shapes"
    card = json.loads((tmp_path / "run" / "card.json").read_text(encoding="utf-8"))
    assert "arrangement of 2-5 solid parts" in card["has_seen"] and "unlabelled" in card["has_seen"]
    assert "none of the synthetic co-occurrence set's classes" in card["has_seen"]
