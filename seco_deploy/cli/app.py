"""Assemble the Typer app from one module per command."""

from __future__ import annotations

import typer

from seco_deploy import __version__
from seco_deploy.cli import benchmark as benchmark_cmd
from seco_deploy.cli import data as data_cmd
from seco_deploy.cli import demo as demo_cmd
from seco_deploy.cli import eval as eval_cmd
from seco_deploy.cli import export as export_cmd
from seco_deploy.cli import info as info_cmd
from seco_deploy.cli import predict as predict_cmd
from seco_deploy.cli import pretrain as pretrain_cmd
from seco_deploy.cli import train as train_cmd

app = typer.Typer(
    name="seco",
    help="SeCo weakly supervised segmentation: train from image tags, export, predict masks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cmd.app, name="data")
app.command("pretrain")(pretrain_cmd.pretrain)
app.command("train")(train_cmd.train)
app.command("export")(export_cmd.export)
app.command("predict")(predict_cmd.predict)
app.command("eval")(eval_cmd.evaluate)
app.command("benchmark")(benchmark_cmd.benchmark)
app.command("info")(info_cmd.info)
app.command("demo")(demo_cmd.demo)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"seco-deploy {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """SeCo weakly supervised segmentation: train from image tags, export, predict masks."""


def main() -> None:
    app()
