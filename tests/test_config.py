"""Config: presets, YAML round trip, overrides and their errors."""

from __future__ import annotations

import pytest

from seco_deploy.config import PRESETS, Config, ConfigError, build_config, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_yaml(name: str, tmp_path) -> None:
    cfg = preset(name)
    path = tmp_path / "c.yaml"
    cfg.save(path)
    again = Config.load(path)
    assert again == cfg
    assert isinstance(again.data.scale_range, tuple)
    assert isinstance(again.train.lr, float)


def test_voc_preset_holds_reference_defaults() -> None:
    cfg = preset("voc")
    assert cfg.data.crop_size == 448
    assert cfg.model.backbone == "vit_base_patch16_224"
    assert cfg.model.queue_size == 4608
    assert cfg.model.teacher_momentum == 0.999
    assert (cfg.model.tau_local, cfg.model.tau_global) == (0.08, 0.1)
    assert cfg.model.cam_scales == (1.0, 0.5, 0.75, 1.5)
    assert (cfg.train.iters, cfg.train.lr, cfg.train.warmup_iters) == (20000, 6e-5, 1500)
    assert (cfg.train.w_ptc, cfg.train.w_seg, cfg.train.w_reg) == (0.3, 0.12, 0.05)


def test_override_parses_values_by_field_type() -> None:
    cfg = build_config(
        "test",
        overrides=["train.iters=7", "train.lr=0.001", "model.use_lig=false", "model.cam_scales=[1.0, 0.5]",
                   "model.pretrained=/tmp/w.pth", "model.pretrained=null"],
    )
    assert cfg.train.iters == 7
    assert cfg.train.lr == 0.001
    assert cfg.model.use_lig is False
    assert cfg.model.cam_scales == (1.0, 0.5)
    assert cfg.model.pretrained is None


def test_int_accepted_where_float_expected() -> None:
    cfg = build_config("test", overrides=["train.lr=1"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.itres=5", "train.itres"),
        ("trian.iters=5", "trian"),
        ("train.iters=five", "train.iters"),
        ("train.iters=1.5", "train.iters"),
        ("model.use_lig=3", "model.use_lig"),
        ("data.scale_range=[0.5]", "data.scale_range"),
        ("train.amp=fp8", "train.amp"),
        ("data.global_view_size=-1", "data.global_view_size"),
        ("iters=5", "section.key"),
        ("train.iters", "section.key=value"),
    ],
)
def test_bad_override_names_the_key(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config("test", overrides=[override])
    assert fragment in str(info.value)


def test_yaml_unknown_key_and_wrong_type_are_errors(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_sise: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="train.batch_sise"):
        build_config("test", config_file=bad)
    bad.write_text("model:\n  backbone_kwargs: [1, 2]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="model.backbone_kwargs"):
        build_config("test", config_file=bad)
    bad.write_text("nonsense: {a: 1}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="nonsense"):
        build_config("test", config_file=bad)


def test_yaml_file_applies_over_preset_then_overrides_win(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  iters: 99\n  batch_size: 3\nmodel:\n  backbone_kwargs: {depth: 2}\n", encoding="utf-8")
    cfg = build_config("test", config_file=f, overrides=["train.iters=5"])
    assert cfg.train.iters == 5
    assert cfg.train.batch_size == 3
    assert cfg.model.backbone_kwargs == {"depth": 2}
    assert cfg.data.crop_size == preset("test").data.crop_size


def test_unknown_preset_lists_choices() -> None:
    with pytest.raises(ConfigError, match="voc"):
        preset("imagenet")


def test_missing_config_file_is_an_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_config("test", config_file=tmp_path / "nope.yaml")


def test_presets_are_independent_copies() -> None:
    a = preset("test")
    a.model.backbone_kwargs["depth"] = 99
    assert preset("test").model.backbone_kwargs["depth"] != 99


def test_off_and_on_stay_strings(tmp_path) -> None:
    assert build_config("test", overrides=["train.amp=off"]).train.amp == "off"
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  amp: off\nmodel:\n  use_lig: false\n", encoding="utf-8")
    cfg = build_config("test", config_file=f)
    assert cfg.train.amp == "off" and cfg.model.use_lig is False


@pytest.mark.parametrize(("text", "value"), [("1e-4", 1e-4), ("5E-4", 5e-4), ("-2e+1", -20.0), ("1.5e-3", 1.5e-3)])
def test_exponent_floats_without_a_dot_are_numbers(text: str, value: float, tmp_path) -> None:
    assert build_config("test", overrides=[f"train.lr={text}"]).train.lr == pytest.approx(value)
    f = tmp_path / "c.yaml"
    f.write_text(f"train:\n  lr: {text}\n", encoding="utf-8")
    assert build_config("test", config_file=f).train.lr == pytest.approx(value)
