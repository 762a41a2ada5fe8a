"""Wrapping belongs to terminals: output that goes to a file or a pipe keeps every line whole."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from _cli import flat, invoke, said

from seco_deploy.console import LOG_WIDTH, Console

LONG = "error: " + "/very/long/path/segment" * 12 + " is not empty; choose a new folder"


def test_console_never_wraps_a_file() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=40)
    console.print(LONG, highlight=False)
    assert buffer.getvalue() == LONG + "\n"
    assert console.width == LOG_WIDTH


def test_console_wraps_on_a_terminal() -> None:
    buffer = io.StringIO()
    Console(file=buffer, width=40, force_terminal=True, no_color=True).print(LONG, highlight=False)
    lines = buffer.getvalue().splitlines()
    assert len(lines) > 1 and all(len(line) <= 40 for line in lines)


def test_said_ignores_line_breaks() -> None:
    assert said("a long\nphrase  here", "long phrase here") and not said("a long phrase", "long phrases")
    assert flat(" a\n\tb ") == "a b"


def test_synth_error_redirected_to_a_file_is_one_line(tmp_path: Path) -> None:
    busy = tmp_path / ("deep-folder-name-" * 6) / "synth"
    busy.mkdir(parents=True)
    (busy / "keep.txt").write_text("mine", encoding="utf-8")
    log = tmp_path / "seco.log"
    env = {**os.environ, "COLUMNS": "40"}
    env.pop("FORCE_COLOR", None)
    with open(log, "w", encoding="utf-8") as fh:
        code = subprocess.call([sys.executable, "-m", "seco_deploy.cli", "data", "synth", str(busy)],
                               stdout=fh, stderr=fh, env=env)
    assert code == 2
    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines == [f"error: {busy} is not empty; choose a new folder (or overwrite a synthetic set)"]


def test_cli_errors_are_whole_under_any_columns(tmp_path: Path) -> None:
    busy = tmp_path / ("x" * 90) / "synth"
    busy.mkdir(parents=True)
    (busy / "keep.txt").write_text("mine", encoding="utf-8")
    for columns in ("40", "300"):
        result = invoke(["data", "synth", busy], env={"COLUMNS": columns})
        assert result.exit_code == 2
        assert f"error: {busy} is not empty" in result.output  # on one line, not merely after flattening
