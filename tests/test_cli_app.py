"""The command-line surface: every documented command exists and answers --help."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from seco_deploy import __version__
from seco_deploy.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "command", [["train"], ["export"], ["predict"], ["eval"], ["info"], ["demo"], ["data", "synth"]]
)
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_unknown_option_is_a_usage_error() -> None:
    result = runner.invoke(app, ["eval", "--no-such-option"])
    assert result.exit_code == 2


def test_module_entry_point_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "seco_deploy.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "predict" in proc.stdout


def test_cli_start_up_does_not_import_torch() -> None:
    """`seco --help` must stay instant: command modules import heavy libraries lazily."""
    code = "import sys, seco_deploy.cli.app; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
