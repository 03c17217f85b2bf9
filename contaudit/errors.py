"""Exception types raised by contaudit.

The library raises these; the CLI turns them into a one-line message and a non-zero
exit code (the traceback only with ``--debug``).
"""

from __future__ import annotations

from pathlib import Path


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
