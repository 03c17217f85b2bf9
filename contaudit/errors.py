"""Exception types raised by contaudit.

The library raises these; the CLI turns them into a one-line message and a non-zero
exit code (the traceback only with ``--debug``).
"""

from __future__ import annotations

from pathlib import Path

# Exit codes of the command line besides the gate's (contaudit.analysis.verdict.EXIT_STATUS:
# 0 pass, 1 fail, 3 INVALID_DESIGN, 4 INCONCLUSIVE); the README's "Exit codes" lists them all.
EXIT_BAD_INPUT = 2  # a ContauditError: bad input, one line naming the file, record or key
EXIT_INTERNAL_ERROR = 5  # an unexpected exception: a bug or a broken environment, never a gate outcome
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


class ContauditError(Exception):
    """Base class of every error contaudit raises on purpose."""


class InputError(ContauditError):
    """Bad user input: a file, a record in it, or a parameter.

    ``path`` and ``record`` (a 1-based line number or row index) are included in the
    message when given, so the user can find the offending record.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, record: int | None = None):
        self.path = str(path) if path is not None else None
        self.record = record
        where = ""
        if self.path is not None:
            where = self.path
            if record is not None:
                where += f", record {record}"
            where += ": "
        super().__init__(where + message)


class ManifestMismatchError(ContauditError):
    """A stage's input was produced with settings the current stage cannot accept."""


class ProtocolError(ContauditError):
    """A protocol file is invalid: names the key, the file and what is allowed."""


def json_problem(error, *, line: bool = False) -> str:
    """What a :class:`json.JSONDecodeError` says, with where: ``Expecting ',' delimiter at column 7``.

    Some of Python's messages end in "at" ("Unterminated string starting at"), which a plain
    ``f"{msg} at column {n}"`` doubles ("starting at at column 28").
    """
    where = (f"line {error.lineno}, " if line else "") + f"column {error.colno}"
    return f"{error.msg} {where}" if error.msg.endswith(" at") else f"{error.msg} at {where}"

