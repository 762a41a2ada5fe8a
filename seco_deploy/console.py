"""Consoles that wrap text only on terminals.

Users pipe ``seco`` into log files and grep them, so a line must never be broken in the middle of
a phrase or a path there. :class:`Console` is rich's console with one rule added, decided at each
write from the stream it writes to (so it holds for a console made before the stream was
redirected, and under test runners that capture output):

- on a terminal: rich's behaviour (text wrapped at the terminal width, ``COLUMNS`` honoured);
- anywhere else (a file, a pipe, captured output): ``soft_wrap`` is on, so ``print`` never inserts
  line breaks, and the width that lays out tables and progress bars is :data:`LOG_WIDTH` whatever
  ``COLUMNS`` or the terminal of another stream says.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console as RichConsole
from rich.console import ConsoleDimensions

__all__ = ["LOG_WIDTH", "Console"]

LOG_WIDTH = 200  # columns for tables and bars when not writing to a terminal


class Console(RichConsole):
    """:class:`rich.console.Console` that wraps only on terminals (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._terminal_soft_wrap = bool(kwargs.get("soft_wrap", False))
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def soft_wrap(self) -> bool:
        return self._terminal_soft_wrap if self.is_terminal else True

    @soft_wrap.setter
    def soft_wrap(self, value: bool) -> None:
        self._terminal_soft_wrap = bool(value)

    @property
    def size(self) -> ConsoleDimensions:
        if self.is_terminal:
            return RichConsole.size.fget(self)  # type: ignore[attr-defined]
        return ConsoleDimensions(LOG_WIDTH, RichConsole.size.fget(self).height)  # type: ignore[attr-defined]

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        RichConsole.size.fset(self, new_size)  # type: ignore[attr-defined]
