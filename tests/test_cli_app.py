"""The command-line surface: every documented command exists and answers --help."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _cli import invoke, said

from seco_deploy import __version__


@pytest.mark.parametrize(
    "command", [["train"], ["export"], ["predict"], ["eval"], ["info"], ["demo"], ["data", "synth"]]
)
def test_every_command_has_help(command: list[str]) -> None:
    result = invoke([*command, "--help"])
    assert result.exit_code == 0, result.output
    assert said(result, "Usage")


def test_version() -> None:
    result = invoke(["--version"])
    assert result.exit_code == 0
    assert said(result, __version__)


def test_unknown_option_is_a_usage_error() -> None:
    result = invoke(["eval", "--no-such-option"])
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
