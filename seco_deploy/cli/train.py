"""`seco train`."""

from __future__ import annotations

from pathlib import Path

import typer

from seco_deploy.cli.common import not_built


def train(
    data: Path = typer.Option(..., "--data", help="Dataset root (VOC layout, COCO-as-VOC, or folder + tags.csv)."),
    out: Path = typer.Option(Path("runs/train"), "--out", help="Run folder for checkpoints and logs."),
    preset: str = typer.Option("voc", "--preset", help="voc | coco | cpu | test"),
    config: Path | None = typer.Option(None, "--config", help="YAML config applied over the preset."),
    set_: list[str] = typer.Option([], "--set", help="Override: section.key=value (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pt."),
    nproc: int = typer.Option(1, "--nproc", help="Processes to launch with torchrun."),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda | cuda:N (default: auto)."),
    amp: str | None = typer.Option(None, "--amp", help="bf16 | fp16 | off"),
    pretrained: str | None = typer.Option(None, "--pretrained", help="Backbone weights: local file or timm name."),
) -> None:
    """Train SeCo end to end from image-level tags."""
    not_built("train")
