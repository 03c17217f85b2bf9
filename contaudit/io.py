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
import os
import string
import zlib
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


def _reason(e: BaseException) -> str:
    """An OS error's own words ("Permission denied"), else the exception's message."""
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
    return " ".join(text.split())  # one line: pyarrow's messages span several


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


class _ZstdReader(io.RawIOBase):
    """Decompress a ``.zst`` file frame by frame, failing on corrupt or truncated data.

    ``zstandard``'s stream reader returns what it has when the file ends inside a frame
    (a truncated file reads as a shorter one); here that is an :class:`EOFError`, and
    corrupt data an :class:`OSError`. Concatenated frames are read in turn.
    """

    CHUNK = 1 << 16

    def __init__(self, path: Path):
        import zstandard

        self._error = zstandard.ZstdError
        self._dctx = zstandard.ZstdDecompressor()
        self._file = open(path, "rb")  # noqa: SIM115 -- closed in close()
        self._frame = None  # decompressor of the frame being read; None between frames
        self._pending = b""  # compressed bytes not yet given to a decompressor
        self._out = b""
        self._pos = 0
        self._eof = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        if not self._pending:
            self._pending = self._file.read(self.CHUNK)
            if not self._pending:
                if self._frame is not None:
                    raise EOFError("the file ends inside a zstd frame (truncated?)")
                self._eof = True
                return
        if self._frame is None:
            self._frame = self._dctx.decompressobj()
        try:
            self._out = self._frame.decompress(self._pending)
        except self._error as e:
            raise OSError(f"corrupt zstd data ({e})") from None
        self._pos = 0
        if self._frame.eof:
            self._pending = self._frame.unused_data
            self._frame = None
        else:
            self._pending = self._frame.unconsumed_tail

    def readinto(self, buffer) -> int:
        while self._pos >= len(self._out) and not self._eof:
            self._fill()
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


#: Errors a compressed reader raises on corrupt or truncated data.
DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error)


def open_text(path: Path) -> io.TextIOBase:
    """Open a possibly compressed text file for reading as strict UTF-8.

    A UTF-8 byte-order mark at the start is dropped (``utf-8-sig``). Corrupt or
    truncated compressed data raises one of :data:`DECOMPRESS_ERRORS` while reading.
    """
    name = path.name.lower()
    if name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="strict")
    if name.endswith(".zst"):
        return io.TextIOWrapper(io.BufferedReader(_ZstdReader(path), _ZstdReader.CHUNK), encoding="utf-8-sig",
                                errors="strict")
    return open(path, encoding="utf-8-sig", errors="strict")


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
    try:
        f = open_text(path)
    except OSError as e:
        raise InputError(f"cannot open it ({_reason(e)})", path=path) from None
    with f:
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError as e:
                # The decoder fails on a block, so the rest of the file cannot be read.
                raise InputError(f"not valid UTF-8 after line {line_no} ({e.reason})", path=path) from None
            except DECOMPRESS_ERRORS as e:
                what = "compressed file" if path.name.lower().endswith((".gz", ".zst")) else "file"
                where = f"after line {line_no}" if line_no else "at its first line"
                raise InputError(f"cannot read {what} {where}: {_reason(e)}", path=path) from None
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
    import pyarrow as pa
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
    n_groups = pf.metadata.num_row_groups
    for group in range(n_groups):  # one group at a time, so a corrupt one is named exactly
        first, size = row + 1, pf.metadata.row_group(group).num_rows
        batches = pf.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns)
        while True:
            try:
                batch = next(batches, None)
                recs = batch.to_pylist() if batch is not None else None
            except (OSError, ValueError, pa.ArrowException) as e:
                raise InputError(f"corrupt Parquet data in row group {group + 1} of {n_groups} (records {first}-"
                                 f"{first + size - 1}): {_reason(e).rstrip('.')}", path=path, record=row + 1) from None
            if recs is None:
                break
            for rec in recs:
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

    def unreadable(e: OSError) -> None:  # a directory that cannot be listed would silently drop its files
        raise InputError(f"cannot list this directory ({_reason(e)}); the corpus would be read only in part",
                         path=e.filename or root)

    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = [d for d in dirnames if not (d.startswith(".") or d == "__pycache__")]
        found.extend(Path(dirpath) / name for name in filenames)
    out = []
    for p in sorted(found):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if include and not any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(p.name, g) for g in include):
            continue
        if exclude and any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(p.name, g) for g in exclude):
            continue
        out.append(p)
    return out


def read_text_file(path: Path, *, skip_bad: bool, stats: ReadStats) -> str | None:
    """Read one corpus text file as UTF-8 (a leading byte-order mark kept as text); None (counted) when skipped."""
    try:
        data = path.read_bytes()
    except OSError as e:
        if not skip_bad:
            raise InputError(f"cannot read this corpus file ({_reason(e)}); fix its permissions, exclude it "
                             f"(--exclude) or pass --skip-bad-records", path=path) from None
        stats.skip(f"{path}: unreadable ({_reason(e)})")
        return None
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

    def get_field(self, field_name, args, kwargs):
        if "." in field_name or "[" in field_name:  # '{text.upper}' would format a method's repr
            raise ValueError(f"field {field_name!r} uses attribute or index access")
        return super().get_field(field_name, args, kwargs)

    def get_value(self, key, args, kwargs):
        if isinstance(key, str) and key not in kwargs:
            raise KeyError(key)
        return super().get_value(key, args, kwargs)


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
