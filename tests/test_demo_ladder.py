"""The demo report's section for a shipped benchmarks/ladder.py result."""

from __future__ import annotations


def test_ladder_section_shows_each_arm_with_its_spread_and_command() -> None:
    from seco_deploy.demo.report import ladder_section

    stat = {"mean": 0.25, "min": 0.2, "max": 0.3, "values": [0.2, 0.25, 0.3]}
    ladder = {"seeds": [0, 1, 2], "pretrained": "builtin:x", "difficulty": "hard", "ratio": 2.5,
              "command": "python benchmarks/ladder.py --iters 9",
              "arms": {"d@N": {"iterations": [9, 9, 9], "train_seconds": [10.0, 20.0, 30.0], "pseudo_miou": stat,
                               "decoder_miou": {"mean": None}, "context_fa": {"boat": stat}},
                       "a@N": {"iterations": [9, 9, 9], "train_seconds": [1.0, 2.0, 3.0], "pseudo_miou": stat,
                               "decoder_miou": stat, "context_fa": {"boat": stat}}}}
    html = ladder_section(ladder)
    assert "d@N" in html and "a@N" in html and "25.0 (20.0..30.0)" in html and "boat: context FA %" in html
    assert "<td>20</td>" in html and "python benchmarks/ladder.py --iters 9" in html and "2.50" in html


def test_each_shipped_ladder_is_measured_on_its_profile() -> None:
    from seco_deploy.assets import LADDERS, shipped_ladder
    from seco_deploy.data.synth import PROFILES

    for difficulty in LADDERS:
        assert difficulty in PROFILES
        ladder = shipped_ladder(difficulty)
        assert ladder is not None and ladder["difficulty"] == difficulty
        assert {"d@N", "a@N", "a@T"} <= set(ladder["arms"]) and len(ladder["seeds"]) >= 3
    assert shipped_ladder("easy") is None  # no ladder measured there: the report shows none


def test_the_demo_default_profile_has_a_shipped_ladder() -> None:
    from seco_deploy.assets import shipped_ladder
    from seco_deploy.demo.pipeline import DemoOptions

    assert DemoOptions().difficulty == "partial"
    assert shipped_ladder(DemoOptions().difficulty) is not None
