"""Running ``seco`` in tests: one runner with a pinned console, and matching blind to line breaks.

Captured output is not a terminal, so seco's own consoles never wrap it
(:mod:`seco_deploy.console`), but Typer's help and usage panels are laid out at the console
width. Every CLI test goes through :func:`invoke`, which pins what shapes the output (``COLUMNS``,
``LINES``, ``TERM``, colour), and matches text with :func:`said`, which compares phrases with
every run of whitespace (line breaks included) collapsed to one space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from typer.testing import CliRunner, Result

from seco_deploy.cli import app

# What shapes CLI output; None unsets a variable (so FORCE_COLOR from a CI runner cannot leak in).
CLI_ENV: dict[str, str | None] = {
    "COLUMNS": "100",
    "LINES": "40",
    "TERM": "dumb",
    "NO_COLOR": "1",
    "FORCE_COLOR": None,
    "TTY_COMPATIBLE": None,
}

_runner = CliRunner()


def invoke(args: Sequence[Any], env: Mapping[str, str | None] | None = None, **kwargs: Any) -> Result:
    """``seco ARGS`` in this process with :data:`CLI_ENV` (plus ``env``); arguments become strings."""
    return _runner.invoke(app, [str(a) for a in args], env={**CLI_ENV, **(env or {})}, **kwargs)


def flat(text: str) -> str:
    """``text`` with every run of whitespace (spaces, tabs, line breaks) collapsed to one space."""
    return " ".join(text.split())


def said(output: Result | str, *phrases: str) -> bool:
    """True when every phrase occurs in ``output`` (a :class:`Result` or text), whitespace collapsed."""
    text = flat(output.output if isinstance(output, Result) else output)
    return all(flat(p) in text for p in phrases)
