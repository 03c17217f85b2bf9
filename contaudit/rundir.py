"""A run directory owned by one command at a time (``audit``, ``screen``, ``calibrate``, ``demo``).

Before anything in ``--out`` is read or written, :func:`run_directory`:

* refuses a folder that holds files contaudit did not write (a new run directory gets a
  marker, ``.contaudit-run.json``, naming the command that made it; one of an earlier
  version is recognised by a contaudit manifest or result file near its top);
* refuses a symbolic link anywhere inside it: contaudit writes only inside ``--out``, and a
  linked ``sets/`` or cache file would send the run's writes elsewhere;
* takes an exclusive lock (``.contaudit.lock``, ``flock``) held until the command ends, so
  a second command on the same folder fails at once with one line instead of mixing its
  models' scores with the first one's.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from contaudit.errors import InputError
from contaudit.io import contaudit_manifest
from contaudit.manifest import write_json_atomic

MARKER_NAME = ".contaudit-run.json"
LOCK_NAME = ".contaudit.lock"
# Result files by which a run directory of a version before the marker is known as contaudit's
# (besides any contaudit manifest within LEGACY_DEPTH levels: a killed run's scores or models).
LEGACY_RESULTS = ("suite.json", "calibration.json", "order_calibration.json")
LEGACY_DEPTH = 3
MAX_LISTED = 3


@contextlib.contextmanager
def run_directory(out: str | Path, command: str) -> Iterator[Path]:
    """Own ``out`` for ``command`` (its checks and lock above) while the ``with`` block runs."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("--out must be a directory; this is a file", path=out)
    _check_owned(out, command)
    _check_no_links(out)
    out.mkdir(parents=True, exist_ok=True)
    with _lock(out, command):
        marker = out / MARKER_NAME
        if not marker.exists():
            write_json_atomic(marker, {"kind": "contaudit-run", "command": command})
        yield out


def _check_owned(out: Path, command: str) -> None:
    if not out.is_dir():
        return
    entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
    if not entries:
        return
    marker = out / MARKER_NAME
    if marker.is_file():
        try:
            made_by = json.loads(marker.read_text(encoding="utf-8")).get("command")
        except (OSError, ValueError, AttributeError):
            made_by = None
        if made_by is None:
            raise InputError(f"{MARKER_NAME} is not a contaudit run marker; choose another --out", path=marker)
        if made_by != command:
            raise InputError(f"is the run directory of `contaudit {made_by}`, not of `contaudit {command}`; "
                             f"choose another --out", path=out)
        return
    if any((out / name).is_file() for name in LEGACY_RESULTS) or _has_manifest(out, LEGACY_DEPTH):
        return
    shown = ", ".join(entries[:MAX_LISTED]) + (", ..." if len(entries) > MAX_LISTED else "")
    raise InputError(f"holds files contaudit did not write ({shown}); `contaudit {command}` writes its run "
                     f"directory itself and overwrites what is there: choose a new or empty --out", path=out)


def _has_manifest(directory: Path, depth: int) -> bool:
    """A contaudit manifest (``*.json`` with ``stage`` and ``contaudit_version``) within ``depth`` levels."""
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix == ".json" and contaudit_manifest(path) is not None:
            return True
        if path.is_dir() and not path.is_symlink() and depth > 1 and _has_manifest(path, depth - 1):
            return True
    return False


def _check_no_links(out: Path) -> None:
    if not out.is_dir():
        return
    for root, dirs, files in os.walk(out):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink():
                raise InputError(f"is a symbolic link inside the run directory {out}; contaudit writes only inside "
                                 f"--out and never through a link: remove the link (or copy what it points to)",
                                 path=path)


@contextlib.contextmanager
def _lock(out: Path, command: str) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # no flock on this platform: no protection against concurrent runs
        yield
        return
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise InputError(f"another contaudit command is writing this run directory (lock {path}); wait for it to "
                         f"finish, or choose another --out", path=out) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} contaudit {command}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (deleting it would race with a waiting run)
