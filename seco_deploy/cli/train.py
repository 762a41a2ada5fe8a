"""`seco train`: parse options into a Config, then run the trainer (or launch torchrun for --nproc)."""

from __future__ import annotations

from pathlib import Path

import typer

from seco_deploy.cli.common import EXIT_ERROR, EXIT_MISSING_RUNTIME, EXIT_USAGE, console, fail
from seco_deploy.config import Config, ConfigError, build_config, validate


def train(
    data: Path = typer.Option(..., "--data", help="Dataset root (VOC layout, COCO-as-VOC, or folder + tags.csv)."),
    out: Path = typer.Option(Path("runs/train"), "--out", help="Run folder for checkpoints and logs."),
    preset: str = typer.Option("voc", "--preset", help="voc | coco | cpu | test"),
    config: Path | None = typer.Option(None, "--config", help="YAML config applied over the preset."),
    set_: list[str] = typer.Option([], "--set", help="Override: section.key=value (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pt."),
    nproc: int = typer.Option(1, "--nproc", help="Processes to launch with torchrun."),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda | cuda:N (default: auto)."),
    amp: str | None = typer.Option(
        None, "--amp", help="bf16 | fp16 | off | auto (bf16 where the device computes it natively, else fp32)"
    ),
    pretrained: str | None = typer.Option(
        None, "--pretrained", help="Backbone weights: local file, builtin:NAME, timm name, or null (random init)."),
    iters: int | None = typer.Option(None, "--iters", help="Shortcut for --set train.iters=N."),
    max_minutes: float | None = typer.Option(None, "--max-minutes", help="Stop (and save) after this wall time."),
) -> None:
    """Train SeCo end to end from image-level tags.

    Writes OUT/config.yaml, OUT/metrics.jsonl, OUT/last.pt (every train.save_every iterations and at
    the end) and OUT/best.pt (best validation mIoU). Under torchrun every rank runs this command;
    --nproc N starts torchrun for you on this machine.
    """
    from seco_deploy.runtime.errors import MissingRuntimeError
    from seco_deploy.train.distributed import launch_torchrun, under_torchrun

    if not data.exists():
        fail(f"--data {data} does not exist")
    if config is not None and not config.is_file():
        fail(f"--config {config} does not exist")
    if nproc < 1:
        fail("--nproc must be at least 1")
    try:
        cfg = build_config(preset, config, list(set_))
        cfg = apply_options(cfg, data, device, amp, pretrained, iters, max_minutes)
    except ConfigError as exc:
        fail(str(exc))
    if nproc > 1:
        if under_torchrun():
            fail("--nproc is for launching torchrun; this process already runs under torchrun")
        args = torchrun_args(data, out, preset, config, list(set_), resume, device, amp, pretrained, iters, max_minutes)
        console.print(f"launching torchrun with {nproc} processes", highlight=False)
        raise typer.Exit(launch_torchrun(nproc, args))

    from seco_deploy.runtime.checkpoint import CheckpointError
    from seco_deploy.train.trainer import TrainingError, TrainingSetupError
    from seco_deploy.train.trainer import train as run_training

    try:
        run_training(cfg, out, resume=resume)
    except MissingRuntimeError as exc:
        fail(str(exc), EXIT_MISSING_RUNTIME)
    except (ConfigError, CheckpointError, TrainingSetupError) as exc:
        fail(str(exc), EXIT_USAGE)
    except TrainingError as exc:
        fail(str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        fail(f"aborted by a second interrupt; {out / 'last.pt'} holds the last saved iteration", EXIT_ERROR)


def apply_options(
    cfg: Config,
    data: Path,
    device: str | None = None,
    amp: str | None = None,
    pretrained: str | None = None,
    iters: int | None = None,
    max_minutes: float | None = None,
) -> Config:
    """Fold the command-line shortcuts into ``cfg`` (they win over the preset, file and --set)."""
    cfg.data.root = str(data)
    if device is not None:
        cfg.train.device = device
    if amp is not None:
        cfg.train.amp = amp
    if iters is not None:
        cfg.train.iters = iters
    if max_minutes is not None:
        cfg.train.max_minutes = float(max_minutes)
    if pretrained is not None:
        cfg.model.pretrained = None if pretrained.strip().lower() in ("null", "none", "") else pretrained
    return validate(cfg)


def torchrun_args(
    data: Path,
    out: Path,
    preset: str,
    config: Path | None,
    set_: list[str],
    resume: bool,
    device: str | None,
    amp: str | None,
    pretrained: str | None,
    iters: int | None,
    max_minutes: float | None,
) -> list[str]:
    """The ``seco train ...`` arguments each torchrun worker gets (everything but ``--nproc``)."""
    args = ["train", "--data", str(data), "--out", str(out), "--preset", preset]
    if config is not None:
        args += ["--config", str(config)]
    for item in set_:
        args += ["--set", item]
    if resume:
        args.append("--resume")
    for flag, value in (("--device", device), ("--amp", amp), ("--pretrained", pretrained), ("--iters", iters),
                        ("--max-minutes", max_minutes)):
        if value is not None:
            args += [flag, str(value)]
    return args
