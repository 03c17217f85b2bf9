"""Read records from the file formats contaudit accepts.

Corpus inputs: JSON Lines (plain, ``.gz``, ``.zst``), Parquet, directories of text or
code files (recursive, include/exclude globs) and datasets saved with Hugging Face
``datasets.save_to_disk``. Benchmarks: JSON Lines or Parquet.

Every reader names the file and the record (1-based line or row) in its errors. With
``skip_bad=True`` bad records are counted in a :class:`ReadStats` instead.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import json
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from contaudit.errors import InputError

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst", ".ndjson.gz", ".ndjson.zst")
PARQUET_SUFFIXES = (".parquet",)
MAX_SKIP_EXAMPLES = 20


@dataclass
class ReadStats:
    """Counts of records read and skipped, with the first few skip reasons."""

    read: int = 0
    skipped: int = 0
    examples: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        if len(self.examples) < MAX_SKIP_EXAMPLES:
            self.examples.append(reason)

    def merge(self, other: "ReadStats") -> None:
        self.read += other.read
        self.skipped += other.skipped
        room = MAX_SKIP_EXAMPLES - len(self.examples)
        self.examples.extend(other.examples[:room])

    def as_dict(self) -> dict:
        return {"read": self.read, "skipped": self.skipped, "skip_examples": self.examples}


@dataclass(frozen=True)
class Document:
    """One corpus document: where it came from and its text."""

    source: str  # file path
    record: int  # 1-based line / row number; 0 for a whole text file
    text: str


@dataclass(frozen=True)
class Item:
    """One benchmark item."""

    id: str
    text: str
    record: int
    fields: dict


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError("no such file or directory", path=path)


def is_jsonl(path: Path) -> bool:
    return path.name.lower().endswith(JSONL_SUFFIXES)


def is_parquet(path: Path) -> bool:
    return path.name.lower().endswith(PARQUET_SUFFIXES)


def is_saved_dataset(path: Path) -> bool:
    """True for a directory written by ``datasets.Dataset.save_to_disk``."""
    return path.is_dir() and (path / "dataset_info.json").exists() and (path / "state.json").exists()


def open_text(path: Path) -> io.TextIOBase:
    """Open a possibly compressed text file for reading as strict UTF-8."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="strict")
    if name.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
        return io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8", errors="strict")


def iter_jsonl(path: str | Path, *, skip_bad: bool = False, stats: ReadStats | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each JSON object line of ``path``.

    Blank lines are ignored. A line that is not valid JSON, or not a JSON object,
    raises :class:`InputError` naming the file and line, or is counted in ``stats``
    when ``skip_bad`` is true.
    """
    path = Path(path)
    _check_exists(path)
    stats = stats if stats is not None else ReadStats()
    line_no = 0
    with open_text(path) as f:
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError as e:
                # The decoder fails on a block, so the rest of the file cannot be read.
                raise InputError(f"not valid UTF-8 after line {line_no} ({e.reason})", path=path) from None
            except (OSError, EOFError) as e:
                raise InputError(f"cannot read compressed file after line {line_no}: {e}", path=path) from None
            if not line:
                break
            line_no += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                if not skip_bad:
                    raise InputError(f"malformed JSON ({e.msg} at column {e.colno}); expected one JSON object per line",
                                     path=path, record=line_no) from None
                stats.skip(f"{path}:{line_no}: malformed JSON")
                continue
            if not isinstance(obj, dict):
                if not skip_bad:
                    raise InputError(f"expected a JSON object, got {type(obj).__name__}", path=path, record=line_no)
                stats.skip(f"{path}:{line_no}: not a JSON object")
                continue
            yield line_no, obj


def iter_parquet(path: str | Path, *, columns: list[str] | None = None, batch_size: int = 4096) -> Iterator[tuple[int, dict]]:
    """Yield ``(row_number, record)`` (1-based) from a Parquet file, streaming by batch."""
    import pyarrow.parquet as pq

    path = Path(path)
    _check_exists(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a non-Parquet file
        raise InputError(f"not a readable Parquet file ({e})", path=path) from None
    if columns is not None:
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise InputError(f"column(s) {missing} not found; columns are {pf.schema_arrow.names}", path=path)
    row = 0
    for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
        for rec in batch.to_pylist():
            row += 1
            yield row, rec


def iter_saved_dataset(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(row_number, record)`` from a dataset saved with ``save_to_disk``."""
    import datasets

    path = Path(path)
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise InputError(f"not a readable saved Hugging Face dataset ({e})", path=path) from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds.values())
    else:
        splits = [ds]
    row = 0
    for split in splits:
        for rec in split:
            row += 1
            yield row, rec


def iter_records(path: str | Path, *, skip_bad: bool = False, stats: ReadStats | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(record_number, record)`` from a JSON Lines, Parquet or saved-dataset path."""
    path = Path(path)
    _check_exists(path)
    if is_saved_dataset(path):
        yield from iter_saved_dataset(path)
    elif is_parquet(path):
        yield from iter_parquet(path)
    elif is_jsonl(path):
        yield from iter_jsonl(path, skip_bad=skip_bad, stats=stats)
    else:
        raise InputError("unknown record format; expected .jsonl/.json (optionally .gz/.zst), .parquet, "
                         "or a directory saved with datasets.save_to_disk", path=path)


def list_text_files(root: str | Path, include: list[str] | None = None, exclude: list[str] | None = None) -> list[Path]:
    """Files under ``root`` (recursive, sorted) whose relative path matches the globs.

    ``include`` defaults to every file; ``exclude`` patterns win over ``include``.
    Hidden directories (``.git``) and ``__pycache__`` are always skipped.
    """
    root = Path(root)
    _check_exists(root)
    out = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        parts = rel.split("/")
        if any(part.startswith(".") or part == "__pycache__" for part in parts[:-1]):
            continue
        if include and not any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(p.name, g) for g in include):
            continue
        if exclude and any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(p.name, g) for g in exclude):
            continue
        out.append(p)
    return out


def read_text_file(path: Path, *, skip_bad: bool, stats: ReadStats) -> str | None:
    """Read one corpus text file as UTF-8; None (counted) when skipped."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if not skip_bad:
            raise InputError(f"not valid UTF-8 at byte {e.start}; re-encode it or pass --skip-bad-records",
                             path=path) from None
        stats.skip(f"{path}: not valid UTF-8")
        return None


def record_text(rec: dict, text_field: str, *, path: Path, record: int) -> str:
    """The text of a corpus record, with a clear error when the field is missing."""
    if text_field not in rec:
        raise InputError(f"missing text field {text_field!r}; fields are {sorted(rec)}", path=path, record=record)
    value = rec[text_field]
    if not isinstance(value, str):
        raise InputError(f"field {text_field!r} must be a string, got {type(value).__name__}", path=path, record=record)
    return value


def iter_documents(path: str | Path, *, text_field: str = "text", skip_bad: bool = False,
                   stats: ReadStats | None = None) -> Iterator[Document]:
    """Yield the documents of one corpus input file or saved dataset (not a text directory)."""
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    for record, rec in iter_records(path, skip_bad=skip_bad, stats=stats):
        try:
            text = record_text(rec, text_field, path=path, record=record)
        except InputError as e:
            if not skip_bad:
                raise
            stats.skip(str(e))
            continue
        stats.read += 1
        yield Document(str(path), record, text)


class _Template(string.Formatter):
    """``str.format`` over a record's fields, naming a missing field clearly."""

    def get_value(self, key, args, kwargs):
        if isinstance(key, str) and key not in kwargs:
            raise KeyError(key)
        return super().get_value(key, args, kwargs)


def template_fields(template: str) -> list[str]:
    """The field names a ``{field}`` template refers to."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def item_id_of(value, id_field: str, *, path: Path, record: int) -> str:
    """An item id as text: strings and integers only (``null``, booleans, floats and objects would
    turn into ids like "None" or "True" that name nothing in the file)."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InputError(f"id field {id_field!r} must be a non-empty string or an integer; got {json.dumps(value)}",
                     path=path, record=record)


def load_items(path: str | Path, *, text_field: str | None = "text", template: str | None = None,
               id_field: str | None = "id", skip_bad: bool = False, stats: ReadStats | None = None) -> list[Item]:
    """Load benchmark items from JSON Lines or Parquet.

    The item text is ``record[text_field]`` or, with ``template``, the template
    formatted with the record's fields (e.g. ``"{question}\\n{answer}"``). Ids come from
    ``id_field``; when ``id_field`` is None the 1-based record number is the id.
    Duplicate ids, an empty file, and missing fields are errors.
    """
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    formatter = _Template()
    items: list[Item] = []
    seen_ids: dict[str, int] = {}
    for record, rec in iter_records(path, skip_bad=skip_bad, stats=stats):
        try:
            if template is not None:
                try:
                    text = formatter.format(template, **rec)
                except KeyError as e:
                    raise InputError(f"template field {e.args[0]!r} missing; fields are {sorted(rec)}",
                                     path=path, record=record) from None
                except (ValueError, IndexError) as e:
                    # a malformed ('{text') or positional ('{0}') field: the template itself is bad
                    raise InputError(f"bad template {template!r} ({e}); use named fields like '{{prompt}}{{answer}}'",
                                     path=path, record=record) from None
            else:
                text = record_text(rec, text_field, path=path, record=record)
            if id_field is None:
                item_id = str(record)
            elif id_field not in rec:
                raise InputError(f"missing id field {id_field!r}; fields are {sorted(rec)}", path=path, record=record)
            else:
                item_id = item_id_of(rec[id_field], id_field, path=path, record=record)
        except InputError as e:
            if not skip_bad:
                raise
            stats.skip(str(e))
            continue
        if item_id in seen_ids:
            # Duplicate ids are never skipped: results keyed by id would silently merge.
            raise InputError(f"duplicate id {item_id!r} (first seen at record {seen_ids[item_id]}); ids must be unique",
                             path=path, record=record)
        seen_ids[item_id] = record
        stats.read += 1
        items.append(Item(item_id, text, record, rec))
    if not items:
        raise InputError("no items found; expected at least one record" +
                         (f" ({stats.skipped} skipped as bad)" if stats.skipped else ""), path=path)
    return items
