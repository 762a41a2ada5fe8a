"""`seco data ...`: dataset utilities."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from seco_deploy.cli.common import EXIT_ERROR, EXIT_USAGE, fail
from seco_deploy.console import Console

app = typer.Typer(help="Dataset utilities: synthesise a co-occurrence set.", no_args_is_help=True)


@app.command("synth")
def synth(
    out: Path = typer.Argument(..., help="Output folder (VOC layout)."),
    images: int = typer.Option(1000, "--images", help="Number of images."),
    size: int = typer.Option(224, "--size", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same bytes."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Fraction of images in the val split."),
    difficulty: str = typer.Option(
        "hard",
        "--difficulty",
        help="Profile: easy (loose coupling, distinctive objects), cooccur (the co-occurrence trap), "
        "hard (default: stronger coupling, smaller objects, more clutter; the one that traps a plain CAM here), "
        "partial (seco demo's: large distinctive objects, each context alone in ~4% of images).",
    ),
    preview: Path | None = typer.Option(None, "--preview", help="Write a contact sheet PNG here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it holds an earlier synthetic set."),
) -> None:
    """Write a synthetic co-occurrence dataset in VOC layout (plus tags.csv, classes.txt, synth.json)."""
    from seco_deploy.data.synth import PROFILES, synthesize

    if difficulty not in PROFILES:
        fail(f"unknown --difficulty {difficulty!r}; choose one of {', '.join(PROFILES)}", EXIT_USAGE)
    try:
        summary = synthesize(
            out,
            images=images,
            size=size,
            seed=seed,
            val_fraction=val_fraction,
            difficulty=difficulty,
            overwrite=overwrite,
            preview=preview,
        )
    except (ValueError, FileExistsError) as exc:
        fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        fail(f"could not write the dataset: {exc}", EXIT_ERROR)

    console = Console()
    console.print(
        f"wrote {summary.images} images ({summary.train} train, {summary.val} val) of {size}x{size} px to "
        f"{summary.out_dir} in {summary.seconds:.1f} s, profile [bold]{summary.profile}[/]",
        highlight=False,
    )
    table = Table(title="images per class", title_justify="left")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("mean area", justify="right")
    for name, count in summary.images_per_class.items():
        table.add_row(name, str(count), f"{summary.mean_area[name]:.3f}")
    console.print(table)
    rates = Table(title="co-occurrence", title_justify="left")
    rates.add_column("rate")
    rates.add_column("value", justify="right")
    for key, value in summary.context_given_class.items():
        context, cls = key.split("|")
        rates.add_row(f"P({context} | {cls})", f"{value:.3f}")
    for context, value in summary.context_alone.items():
        rates.add_row(f"images with {context} but not its class", f"{value:.3f}")
    for key, value in summary.pair_rate.items():
        b, a = key.split("|")
        rates.add_row(f"P({b} | {a})", f"{value:.3f}")
    for context, value in summary.context_area.items():
        rates.add_row(f"mean area of {context} where present", f"{value:.3f}")
    rates.add_row("images with no foreground class", f"{summary.extra.get('background_only', 0.0):.3f}")
    console.print(rates)
    if preview is not None:
        console.print(f"contact sheet: {preview}", highlight=False)
