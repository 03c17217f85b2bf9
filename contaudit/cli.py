"""The ``contaudit`` command line: a thin typer layer over the library.

Each command parses its options, calls one library function, and renders the result
with rich. Library errors (:class:`contaudit.errors.ContauditError`) become a one-line
message and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import click
import typer
from typer.core import TyperGroup
from rich.console import Console

from contaudit import __version__
from contaudit.errors import ContauditError

class _CliError(click.ClickException):
    exit_code = 2


class _Group(TyperGroup):
    """Turns library errors into a one-line ``Error: ...`` and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ContauditError as e:
            if _state["debug"]:
                raise
            raise _CliError(str(e)) from None


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit language models for benchmark contamination.")
console = Console(stderr=True)
out = Console()
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        out.print(f"contaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _state["debug"] = debug or bool(os.environ.get("CONTAUDIT_DEBUG"))


def main() -> None:
    """Console-script entry point."""
    app()


# --- commands: each stage adds its command(s) below this line ---
