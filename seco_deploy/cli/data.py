"""`seco data ...`: dataset utilities."""

from __future__ import annotations

from pathlib import Path

import typer

from seco_deploy.cli.common import not_built

app = typer.Typer(help="Dataset utilities: synthesise a co-occurrence set.", no_args_is_help=True)


@app.command("synth")
def synth(
    out: Path = typer.Argument(..., help="Output folder (VOC layout)."),
    images: int = typer.Option(1000, "--images", help="Number of images."),
    size: int = typer.Option(224, "--size", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same bytes."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Fraction of images in the val split."),
    preview: Path | None = typer.Option(None, "--preview", help="Write a contact sheet PNG here."),
) -> None:
    """Write a synthetic co-occurrence dataset in VOC layout."""
    not_built("data synth")
