"""seco pretrain: fractal scenes, the recipe, a run, resume, the weights file and built-in weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seco_deploy.assets import BUILTIN, PREFIX, builtin_weights
from seco_deploy.model.backbone import ViTBackbone, WeightLoadError
from seco_deploy.pretrain import PretrainRecipe, RecipeError, pretrain, read_weights_metadata
from seco_deploy.pretrain.fractals import MIN_FILL, _chaos_game, _fill_rate, category_bank, render_scene
from tests._cli import invoke, said

TINY = {"depth": 3, "embed_dim": 32, "num_heads": 2}


def tiny_recipe(**changes: object) -> PretrainRecipe:
    base = dict(backbone_kwargs=TINY, categories=4, max_objects=2, image_size=32, iters=6, batch_size=4,
                warmup_iters=2, eval_images=8, log_every=2, eval_every=3, save_every=2)
    base.update(changes)
    return PretrainRecipe(**base)  # type: ignore[arg-type]


def test_scenes_are_a_function_of_seed_and_index() -> None:
    bank = category_bank(0, 6)
    a, b = render_scene(bank, 7, 3, 64, 16), render_scene(bank, 7, 3, 64, 16)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.patch_labels, b.patch_labels)
    other = render_scene(bank, 7, 4, 64, 16)
    assert not np.array_equal(a.image, other.image)
    assert a.image.shape == (64, 64, 3) and a.image.dtype == np.uint8 and a.patch_labels.shape == (4, 4)


def test_patch_labels_name_only_categories_of_the_image() -> None:
    bank = category_bank(1, 8)
    for index in range(20):
        scene = render_scene(bank, 1, index, 64, 16, max_objects=3)
        present = {int(c) + 1 for c in np.flatnonzero(scene.labels)}
        assert 1 <= len(present) <= 3
        assert set(np.unique(scene.patch_labels)) - {0} <= present | {0}


def test_category_bank_keeps_filling_systems_only() -> None:
    bank = category_bank(2, 5)
    assert len(bank) == 5
    rng = np.random.default_rng(0)
    for category in bank:
        maps, probs = category.maps, category.probs
        assert np.isclose(probs.sum(), 1.0)
        assert _fill_rate(_chaos_game(maps, probs, rng, points=1500)) >= MIN_FILL * 0.5
    line = np.array([[[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # collapses onto a segment
    assert _fill_rate(_chaos_game(line, np.ones(1), rng, points=500)) == 0.0


def test_scene_size_must_be_a_multiple_of_the_patch() -> None:
    with pytest.raises(ValueError, match="multiple of the patch"):
        render_scene(category_bank(0, 2), 0, 0, 50, 16)


def test_recipe_overrides_and_errors() -> None:
    recipe = PretrainRecipe().with_overrides(["iters=200", "supervision=image", "lr=0.002", "warmup_iters=10"])
    assert (recipe.iters, recipe.supervision, recipe.lr) == (200, "image", 0.002)
    with pytest.raises(RecipeError, match="supervision"):
        PretrainRecipe(supervision="pixels")
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        PretrainRecipe().with_overrides(["colour=red"])
    with pytest.raises(RecipeError, match="warmup_iters=N"):
        PretrainRecipe(iters=50)
    with pytest.raises(RecipeError, match="takes a int"):
        PretrainRecipe().with_overrides(["iters=many"])


def test_learning_rate_warms_up_then_follows_the_cosine() -> None:
    r = PretrainRecipe(iters=110, warmup_iters=10, lr=1.0, min_lr_ratio=0.1)
    assert r.learning_rate(0) == pytest.approx(0.1) and r.learning_rate(9) == pytest.approx(1.0)
    assert r.learning_rate(10) == pytest.approx(1.0)
    assert r.learning_rate(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: the cosine's midpoint
    assert r.learning_rate(110) == pytest.approx(0.1)


def test_run_writes_weights_that_load_strictly(tmp_path: Path) -> None:
    recipe = tiny_recipe()
    outcome = pretrain(recipe, tmp_path / "run", say=lambda _: None)
    assert outcome.finished and outcome.iteration == 6
    meta = read_weights_metadata(outcome.weights)
    assert meta["recipe"] == recipe.to_dict() and meta["iterations"] == 6
    card = json.loads((tmp_path / "run" / "card.json").read_text(encoding="utf-8"))
    assert card["images_seen"] == 24 and "no photograph" in card["has_seen"]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["iter"] for x in lines if "total" in x] == [2, 4, 6]
    assert any("eval_f1" in x for x in lines)
    encoder = ViTBackbone("vit_tiny_patch16_224", pretrained=str(outcome.weights), **TINY)
    from safetensors.torch import load_file

    stored = load_file(str(outcome.weights))
    assert all(v.dtype == torch.float16 for v in stored.values())
    assert torch.equal(encoder.vit.cls_token.detach().half(), stored["cls_token"])


def test_resume_sees_what_an_uninterrupted_run_sees(tmp_path: Path) -> None:
    recipe = tiny_recipe()
    whole = pretrain(recipe, tmp_path / "whole", say=lambda _: None)
    cut = pretrain(recipe, tmp_path / "cut", max_minutes=1e-9, say=lambda _: None)  # stops after iteration 1
    assert cut.iteration == 1 and not cut.finished
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(recipe, tmp_path / "cut", say=lambda _: None)
    with pytest.raises(RecipeError, match="differs in lr"):
        pretrain(tiny_recipe(lr=0.5), tmp_path / "cut", resume=True, say=lambda _: None)
    resumed = pretrain(recipe, tmp_path / "cut", resume=True, say=lambda _: None)
    assert resumed.finished
    from safetensors.torch import load_file

    a, b = load_file(str(whole.weights)), load_file(str(resumed.weights))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), atol=2e-3, rtol=0)


def test_cli_refuses_a_used_folder_and_names_the_fix(tmp_path: Path) -> None:
    args = ["pretrain", str(tmp_path / "p"), "--iters", "2", "--batch", "2", "--size", "32", "--set", "warmup_iters=1",
            "--set", "categories=3", "--set", 'backbone_kwargs={"depth": 3, "embed_dim": 16, "num_heads": 1}',
            "--set", "eval_images=2"]
    first = invoke(args)
    assert first.exit_code == 0, first.output
    assert said(first, "weights:")
    again = invoke(args)
    assert again.exit_code == 2 and said(again, "pass --resume or a new folder")
    bad = invoke(["pretrain", str(tmp_path / "q"), "--supervision", "pixels"])
    assert bad.exit_code == 2 and said(bad, "supervision must be one of image, dense")


def test_builtin_names_resolve_or_say_which_exist() -> None:
    with pytest.raises(ValueError, match="builtin:vit-tiny-fractal"):
        builtin_weights("builtin:vit-huge-imagenet")
    with pytest.raises(WeightLoadError, match="unknown built-in weights"):
        ViTBackbone("vit_tiny_patch16_224", pretrained="builtin:nope", **TINY)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_shipped_weights_match_their_cards_and_load_into_the_cpu_preset_encoder(name: str) -> None:
    from seco_deploy.data.io import file_sha256

    path = builtin_weights(PREFIX + name)
    card = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert card["sha256"] == file_sha256(path) and card["weights"] == path.name
    assert card["iterations"] == card["recipe"]["iters"] and card["command"].startswith("seco pretrain")
    encoder = ViTBackbone(BUILTIN[name][1], pretrained=PREFIX + name)
    assert encoder.embed_dim == 192
