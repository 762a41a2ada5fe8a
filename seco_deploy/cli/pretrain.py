"""`seco pretrain`: a pretrained ViT encoder from rendered scenes, for `seco train --pretrained`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from seco_deploy.cli.common import EXIT_ERROR, EXIT_USAGE, console, fail


def _say(text: str) -> None:
    console.print(escape(text), highlight=False, soft_wrap=True)


def pretrain(
    out: Path = typer.Argument(..., help="Run folder: last.pt, metrics.jsonl, weights.safetensors, card.json."),
    source: str | None = typer.Option(None, "--source", help="fractals (objects on noise, default) | regions "
                                      "(objects on textured regions that are categories of their own) | shapes "
                                      "(objects made of solid parts on unlabelled textured surfaces)."),
    iters: int | None = typer.Option(None, "--iters", help="Iterations (default 2000)."),
    batch: int | None = typer.Option(None, "--batch", help="Images per iteration (default 32)."),
    size: int | None = typer.Option(None, "--size", help="Image side in pixels (default 112)."),
    supervision: str | None = typer.Option(None, "--supervision", help="dense (image + patch labels) | image."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the categories, the images and the init."),
    set_: list[str] = typer.Option([], "--set", help="Any recipe setting: key=value (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pt (same recipe)."),
    max_minutes: float | None = typer.Option(None, "--max-minutes", help="Stop (and save) after this wall time."),
    threads: int | None = typer.Option(None, "--threads", help="torch threads (default: torch's)."),
) -> None:
    """Pretrain the encoder on rendered fractal scenes (formula-driven, no dataset images).

    `--source regions` lays the fractals on textured regions whose textures are labels too;
    `--source shapes` draws objects made of solid parts on unlabelled textured surfaces.
    `--set init=mimetic` starts the attention as a trained ViT's (faster from scratch).

    The weights file OUT/weights.safetensors loads with `seco train --pretrained FILE`; the
    project ships two: `builtin:vit-tiny-fractal` (the defaults) and `builtin:vit-tiny-fractal-5k`
    (`--iters 5000`, the `cpu` preset's start; docs/method.md, "Pretrained start").
    """
    from seco_deploy.pretrain import PretrainRecipe, RecipeError
    from seco_deploy.pretrain import pretrain as run_pretrain

    pairs = list(set_)
    for key, value in (("source", source), ("iters", iters), ("batch_size", batch), ("image_size", size),
                       ("supervision", supervision), ("seed", seed)):
        if value is not None:
            pairs.append(f"{key}={value}")
    try:
        recipe = PretrainRecipe().with_overrides(pairs)
        run_pretrain(recipe, out, resume=resume, max_minutes=max_minutes, threads=threads, say=_say)
    except (RecipeError, FileExistsError) as exc:
        fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        fail(f"interrupted; {out / 'last.pt'} holds the last saved iteration (--resume continues)", EXIT_ERROR)
