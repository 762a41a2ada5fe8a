"""The ``seco`` command line (Typer). Every command parses options into config objects and
calls the library; see ``seco --help``."""

from seco_deploy.cli.app import app, main

__all__ = ["app", "main"]
