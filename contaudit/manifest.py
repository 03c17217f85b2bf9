"""Manifests and atomic writes shared by every stage.

Every artifact contaudit writes is accompanied by a manifest (JSON) recording its
inputs (path, size, content hash), parameters, package versions and time. Writes go to
a temporary file in the same directory and are renamed into place, so a reader never
sees a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from contaudit import __version__

HASH_CHUNK = 1 << 20


# The manifest that marks each stage's output directory as contaudit's, named once: the stages
# write them, and io.py refuses to read a directory holding one as corpus.
INDEX_MANIFEST = "manifest.json"  # an index directory (beside items.jsonl)
INDEX_PLAN = "plan.json"  # an index build's staging directory (OUT.partial)
INJECTION_MANIFEST = "injection.json"  # a fine-tuned model
PRETRAIN_MANIFEST = "pretrain.json"  # a model pretrained from scratch
RESULTS_MANIFEST = "results.manifest.json"  # an analysis run
OUTPUT_DIR_MANIFESTS = (INDEX_MANIFEST, INJECTION_MANIFEST, PRETRAIN_MANIFEST, RESULTS_MANIFEST)
DATA_SUFFIXES = (".jsonl.gz", ".jsonl.zst", ".jsonl", ".json")


def manifest_beside(path: str | Path) -> Path:
    """The manifest of an output file, ``NAME.manifest.json`` beside ``NAME.jsonl`` (or ``.json``,
    ``.jsonl.gz``, ``.jsonl.zst``); for any other name, ``NAME.EXT.manifest.json``. Writers and
    readers of every stage use this one rule, so they always agree."""
    path = Path(path)
    for suffix in DATA_SUFFIXES:
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)] + ".manifest.json")
    return path.with_name(path.name + ".manifest.json")

def current_umask() -> int:
    """The process umask (read from /proc where possible, as setting it to read it is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_can_create(path: str | Path) -> None:
    """Raise InputError unless ``path`` could be created: its nearest existing parent must be a
    writable directory. Checked before a stage's work, so a bad ``--out`` fails at once."""
    from contaudit.errors import InputError

    path = Path(path)
    parent = Path(os.path.abspath(path)).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"cannot be created: {parent} is not a directory", path=path)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot be written: directory {parent} is not writable; choose another --out", path=path)


def _unwritable(path: Path, action: str, e: OSError):
    from contaudit.errors import InputError

    return InputError(f"cannot {action} ({e.strerror or e}); choose another --out", path=path)


def replace_dir(finished: Path, out: Path, old: Path) -> None:
    """Move the finished directory ``finished`` onto ``out``.

    A previous ``out`` is first renamed to ``old`` (a path the caller created or owns,
    never one it merely found) and deleted after the swap, so ``out`` is at every moment
    either the complete old directory or the complete new one.
    """
    import shutil

    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.replace(out, old)
    os.replace(finished, out)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched. The
    file gets the mode a plain ``open()`` would give it (0o666 less the umask), not
    ``mkstemp``'s 0o600. A directory or file that cannot be written raises InputError.
    """
    from contaudit.errors import InputError

    path = Path(path)
    if path.is_dir():
        raise InputError("is a directory; expected a file path", path=path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _unwritable(path, "be written", e) from None
    tmp_path = Path(tmp)
    try:
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
        finally:
            os.close(fd)
        yield tmp_path
        try:
            os.replace(tmp_path, path)
        except OSError as e:
            raise _unwritable(path, "be replaced", e) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (inf, nan) as None: standard JSON has no Infinity or NaN."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, strict JSON to ``path`` atomically (inf and nan become null)."""
    write_text_atomic(path, json.dumps(finite_json(obj), indent=2, sort_keys=False, ensure_ascii=False,
                                       allow_nan=False) + "\n")


def write_jsonl_atomic(path: str | Path, rows) -> int:
    """Write an iterable of dicts as JSON Lines atomically; return the row count."""
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(finite_json(row), ensure_ascii=False, allow_nan=False) + "\n")
                n += 1
    return n


def read_json(path: str | Path) -> Any:
    """Read a JSON file, raising InputError with the path on failure."""
    from contaudit.errors import InputError, json_problem

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON ({json_problem(e, line=True)})", path=path) from None


def hash_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def hash_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's content, read in chunks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                h.update(chunk)
    except OSError as e:
        from contaudit.errors import InputError

        raise InputError(f"cannot read it ({e.strerror or e})", path=path) from None
    return h.hexdigest()


def describe_path(path: str | Path) -> dict:
    """Path, size and content hash of a file, or of every file under a directory.

    A directory's hash is the SHA-256 of its files' relative paths and hashes, in
    sorted order, so it changes whenever any file changes. A cached dataset split
    (``hf:DATASET[:CONFIG]:SPLIT``) is described by :func:`contaudit.hf_sets.describe_hf_set`.
    """
    from contaudit.hf_sets import describe_hf_set, is_hf_set

    if is_hf_set(path):
        return describe_hf_set(path)
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        size = 0
        files = sorted(p for p in path.rglob("*") if p.is_file())
        for p in files:
            rel = p.relative_to(path).as_posix()
            h.update(rel.encode() + b"\0" + hash_file(p).encode() + b"\n")
            size += p.stat().st_size
        return {"path": str(path), "kind": "directory", "files": len(files), "size": size, "sha256": h.hexdigest()}
    return {"path": str(path), "kind": "file", "size": path.stat().st_size, "sha256": hash_file(path)}


def package_versions(names=("torch", "transformers", "datasets", "datasketch", "numpy", "scipy")) -> dict:
    """Installed versions of the packages a result may depend on."""
    versions = {"contaudit": __version__, "python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def make_manifest(stage: str, *, inputs: list[dict], parameters: dict, **extra: Any) -> dict:
    """A manifest dict for ``stage`` with inputs, parameters, versions and time."""
    return {
        "stage": stage,
        "contaudit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": inputs,
        "parameters": parameters,
        "versions": package_versions(),
        **extra,
    }
