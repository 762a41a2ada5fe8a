"""seco pretrain's `regions` source: textured regions that are categories of their own, objects on top."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seco_deploy.pretrain import PretrainRecipe, RecipeError, pretrain, read_weights_metadata
from seco_deploy.pretrain.fractals import category_bank
from seco_deploy.pretrain.regions import FAMILIES, Texture, render_region_scene, texture_bank, texture_pattern

TINY = {"depth": 3, "embed_dim": 32, "num_heads": 2}


def test_region_scenes_are_a_function_of_seed_and_index() -> None:
    objects, textures = category_bank(0, 4), texture_bank(0, 5)
    a = render_region_scene(objects, textures, 7, 3, 64, 16)
    b = render_region_scene(objects, textures, 7, 3, 64, 16)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.patch_labels, b.patch_labels)
    assert not np.array_equal(a.image, render_region_scene(objects, textures, 7, 4, 64, 16).image)
    assert a.labels.shape == (9,) and a.patch_labels.shape == (4, 4)


def test_labels_name_objects_and_the_textures_under_them() -> None:
    objects, textures = category_bank(1, 4), texture_bank(1, 6)
    seen_texture_patch = False
    for index in range(30):
        scene = render_region_scene(objects, textures, 1, index, 64, 16, max_objects=2, max_regions=3)
        present = {int(c) + 1 for c in np.flatnonzero(scene.labels)}
        objects_present = {c for c in present if c <= 4}
        assert 1 <= len(objects_present) <= 2
        assert len(present - objects_present) <= 3  # at most one texture per region
        assert set(np.unique(scene.patch_labels)) - {0} <= present
        seen_texture_patch |= bool((scene.patch_labels > 4).any())
    assert seen_texture_patch


def test_texture_families_are_distinct_patterns() -> None:
    rng = np.random.default_rng(0)
    patterns = [texture_pattern(Texture(f, 0.3, 8.0), rng, 64) for f in FAMILIES]
    for v in patterns:
        assert v.shape == (64, 64) and v.min() >= -1 and v.max() <= 1 and v.std() > 0.3
    for i in range(len(patterns)):
        for j in range(i + 1, len(patterns)):
            assert abs(np.corrcoef(patterns[i].ravel(), patterns[j].ravel())[0, 1]) < 0.9
    assert [t.family for t in texture_bank(0, 6)] == [*FAMILIES, FAMILIES[0]]


def test_recipe_counts_texture_classes_and_checks_the_source() -> None:
    assert PretrainRecipe().classes == 8
    assert PretrainRecipe(source="regions", textures=5).classes == 13
    with pytest.raises(RecipeError, match="source must be one of fractals, regions"):
        PretrainRecipe(source="photos")


def test_regions_run_writes_weights_with_its_card(tmp_path: Path) -> None:
    recipe = PretrainRecipe(source="regions", textures=3, backbone_kwargs=TINY, categories=3, max_objects=2,
                            image_size=32, iters=4, batch_size=4, warmup_iters=1, eval_images=8, log_every=2,
                            eval_every=2, save_every=2)
    outcome = pretrain(recipe, tmp_path / "run", say=lambda _: None)
    assert outcome.finished and read_weights_metadata(outcome.weights)["recipe"]["source"] == "regions"
    card = json.loads((tmp_path / "run" / "card.json").read_text(encoding="utf-8"))
    assert "3 texture categories" in card["has_seen"] and "independently of the objects" in card["has_seen"]


def test_cli_names_the_sources_on_a_wrong_one(tmp_path: Path) -> None:
    from tests._cli import invoke, said

    bad = invoke(["pretrain", str(tmp_path / "q"), "--source", "photos"])
    assert bad.exit_code == 2 and said(bad, "source must be one of fractals, regions")
    assert not (tmp_path / "q").exists()
