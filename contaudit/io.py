"""Read records from the file formats contaudit accepts.

Corpus inputs: JSON Lines (plain, ``.gz``, ``.zst``), Parquet, directories of text or
code files (recursive, include/exclude globs) and datasets saved with Hugging Face
``datasets.save_to_disk``. Benchmarks: JSON Lines, Parquet, or a split of a dataset in the
local Hugging Face cache named ``hf:DATASET[:CONFIG]:SPLIT`` (:mod:`contaudit.hf_sets`, offline).

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

from contaudit.errors import InputError, json_problem
from contaudit.hf_sets import is_hf_set, iter_hf_records
from contaudit.manifest import INDEX_PLAN, OUTPUT_DIR_MANIFESTS

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


def open_binary(path: Path) -> io.BufferedIOBase:
    """Open a possibly compressed file for reading bytes (``readline`` splits on ``\\n`` only).

    Corrupt or truncated compressed data raises one of :data:`DECOMPRESS_ERRORS` while reading.
    """
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        return io.BufferedReader(_ZstdReader(path), _ZstdReader.CHUNK)
    return open(path, "rb")


_BOM = b"\xef\xbb\xbf"


def iter_jsonl(path: str | Path, *, skip_bad: bool = False, stats: ReadStats | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each JSON object line of ``path``.

    Blank lines are ignored. A line that is not valid UTF-8, not valid JSON, or not a
    JSON object raises :class:`InputError` naming the file and line, or is counted in
    ``stats`` when ``skip_bad`` is true. Each line is decoded on its own, so a bad line
    is named exactly and the lines after it are still read. A UTF-8 byte-order mark at
    the start is dropped.
    """
    path = Path(path)
    _check_exists(path)
    stats = stats if stats is not None else ReadStats()
    line_no = 0
    try:
        f = open_binary(path)
    except OSError as e:
        raise InputError(f"cannot open it ({_reason(e)})", path=path) from None
    with f:
        while True:
            try:
                raw = f.readline()
            except DECOMPRESS_ERRORS as e:
                what = "compressed file" if path.name.lower().endswith((".gz", ".zst")) else "file"
                where = f"after line {line_no}" if line_no else "at its first line"
                raise InputError(f"cannot read {what} {where}: {_reason(e)}", path=path) from None
            if not raw:
                break
            line_no += 1
            if line_no == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if not skip_bad:
                    raise InputError(f"not valid UTF-8 at byte {e.start} of this line ({e.reason}); re-encode the "
                                     f"file or pass --skip-bad", path=path, record=line_no) from None
                stats.skip(f"{path}:{line_no}: not valid UTF-8")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                if not skip_bad:
                    raise InputError(f"malformed JSON ({json_problem(e)}); expected one JSON object per line",
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
    """Yield ``(record_number, record)`` from a JSON Lines, Parquet or saved-dataset path, or a cached
    dataset split (``hf:DATASET[:CONFIG]:SPLIT``, read offline)."""
    if is_hf_set(path):
        yield from iter_hf_records(path)
        return
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
                             f"(--exclude) or pass --skip-bad", path=path) from None
        stats.skip(f"{path}: unreadable ({_reason(e)})")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if not skip_bad:
            raise InputError(f"not valid UTF-8 at byte {e.start}; re-encode it or pass --skip-bad",
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
    stats = stats if stats is not None else ReadStats()
    for doc in _iter_record_documents(Path(path), text_field, skip_bad, stats):
        stats.read += 1
        yield doc


# ----------------------------------------------------------------------------- corpora (index and finetune)

#: Inside a corpus directory these files are read record by record (``text_field``); every other file is one
#: text document. A plain ``.json`` file there is text (in a source tree it is a config file such as
#: ``package.json``); a ``.json`` file named as a corpus input itself is JSON Lines.
DIR_RECORD_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".jsonl.zst", ".ndjson.gz", ".ndjson.zst", ".json.gz",
                       ".json.zst", ".parquet")


def is_record_file_in_dir(path: Path) -> bool:
    """True for a file inside a corpus directory that is read as records, not as one text document."""
    return path.name.lower().endswith(DIR_RECORD_SUFFIXES)


@dataclass(frozen=True)
class CorpusUnit:
    """One corpus input as named: a record file or saved dataset (``files`` empty), a single text file
    (``files == (path,)``), or a directory (``files``: the files read from it, sorted)."""

    path: Path
    files: tuple[Path, ...] = ()

    @property
    def is_text_dir(self) -> bool:
        """True when the unit is read file by file (a directory, or a single text file)."""
        return bool(self.files) or (self.path.is_dir() and not is_saved_dataset(self.path))


MANIFEST_MAX_BYTES = 1 << 24


def contaudit_manifest(path: Path) -> dict | None:
    """The manifest at ``path`` when contaudit wrote it (a JSON object with ``stage`` and
    ``contaudit_version``), else None (no file, a foreign file, unreadable)."""
    try:
        if not path.is_file() or path.stat().st_size > MANIFEST_MAX_BYTES:
            return None
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("stage"), str) and "contaudit_version" in data:
        return data
    return None




def is_index_plan(path: Path) -> bool:
    """True when ``path`` is the ``plan.json`` of an index build's staging directory (``OUT.partial``)."""
    try:
        if not path.is_file() or path.stat().st_size > MANIFEST_MAX_BYTES:
            return False
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and set(data) == {"parameters", "benchmark", "inputs"}


def _own_output(root: Path, file: Path, cache: dict[Path, str | None]) -> tuple[str, str | None] | None:
    """What contaudit output ``file`` (under ``root``) belongs to, and an ``--exclude`` glob that leaves it
    out (None when ``root`` itself is the output); None for a file contaudit did not write."""

    def of_dir(d: Path) -> str | None:
        if d not in cache:
            found = None
            for name in OUTPUT_DIR_MANIFESTS:
                manifest = contaudit_manifest(d / name)
                if manifest is not None:
                    found = f"output of `contaudit {manifest['stage']}` ({d / name})"
                    break
            if found is None and d.name.endswith(".partial") and is_index_plan(d / INDEX_PLAN):
                found = f"the staging directory of `contaudit index` ({d})"
            cache[d] = found
        return cache[d]

    name = file.name
    for stem_end in (".manifest.json", ".jsonl", ".json"):  # NAME.jsonl / NAME.json beside NAME.manifest.json
        if name.endswith(stem_end):
            stem = name[: -len(stem_end)]
            manifest = contaudit_manifest(file.with_name(stem + ".manifest.json"))
            if manifest is not None:
                glob = file.with_name(stem + ".*").relative_to(root).as_posix()
                return f"output of `contaudit {manifest['stage']}` ({file.with_name(stem + '.manifest.json')})", glob
            break
    d = file.parent
    while True:
        found = of_dir(d)
        if found is not None:
            return found, (None if d == root else d.relative_to(root).as_posix() + "/*")
        if d == root or d == d.parent:
            return None
        d = d.parent


def _refuse_own_outputs(root: Path, files: list[Path]) -> None:
    """contaudit never reads its own outputs as corpus: refuse a directory whose listed files include one."""
    cache: dict[Path, str | None] = {}
    for file in files:
        found = _own_output(root, file, cache)
        if found is None:
            continue
        what, glob = found
        if glob is None:
            raise InputError(f"this corpus directory is {what}; contaudit does not read its own outputs as "
                             f"corpus", path=root)
        raise InputError(f"is {what}, inside the corpus directory {root}; contaudit does not read its own "
                         f"outputs as corpus: move it out or exclude it (--exclude '{glob}')", path=file)


def corpus_units(paths: list[str | Path], *, include: list[str] | None = None,
                 exclude: list[str] | None = None) -> list[CorpusUnit]:
    """Resolve corpus inputs into units, checking each exists and holds something to read.

    The one corpus reader of ``index`` and ``finetune``:

    * ``.jsonl`` / ``.json`` / ``.ndjson`` (optionally ``.gz`` / ``.zst``) and ``.parquet`` files, and datasets
      saved with ``datasets.save_to_disk``: one document per record (its ``text_field``);
    * a directory: its files (recursive, sorted, ``include`` / ``exclude`` globs, hidden directories and
      ``__pycache__`` left out), each ``.jsonl`` / ``.ndjson`` (optionally ``.gz`` / ``.zst``), ``.json.gz``,
      ``.json.zst`` or ``.parquet`` file read record by record and every other file as one text document;
      a directory holding contaudit's own outputs (an index, a fine-tuned model, probes, scores, results)
      is refused;
    * any other file: one text document.
    """
    if not paths:
        raise InputError("no corpus given; expected at least one corpus file or directory")
    units = []
    for p in map(Path, paths):
        if is_hf_set(p):
            raise InputError("a dataset in the Hugging Face cache is read as a benchmark, not as a corpus; save it "
                             "with datasets' save_to_disk and pass that directory", path=p)
        if not p.exists():
            raise InputError("no such file or directory; expected a corpus file (.jsonl, .parquet, text) or "
                             "directory", path=p)
        if p.is_dir() and not is_saved_dataset(p):
            files = list_text_files(p, include, exclude)
            if not files:
                if include or exclude:
                    n = len(list_text_files(p))
                    raise InputError(f"no file in this directory matches --include/--exclude (it holds {n} "
                                     f"file(s)); the corpus would get no documents from it", path=p)
                raise InputError("the corpus directory holds no files, so no documents", path=p)
            _refuse_own_outputs(p, files)
            units.append(CorpusUnit(p, tuple(files)))
        elif is_saved_dataset(p) or is_parquet(p) or is_jsonl(p):
            units.append(CorpusUnit(p))
        elif p.is_file():
            units.append(CorpusUnit(p, (p,)))  # a single text file: one document
        else:
            raise InputError("neither a file nor a directory; expected a corpus file or directory", path=p)
    return units



def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_output_apart(out: str | Path, corpus: list[str | Path], inputs: dict[str, str | Path | None] | None = None,
                       *, written: list[str | Path] = ()) -> None:
    """Refuse an output that a later run would read as corpus, or whose writing would replace an input.

    ``out`` and the other paths the stage ``written`` (staging directories it may delete) must not be a
    corpus input or lie inside a corpus directory, and no corpus input nor any of ``inputs`` (role ->
    path; a cached dataset split, ``hf:...``, lies nowhere) may lie inside them. Paths are compared
    with symbolic links resolved.
    """
    def real(p: str | Path) -> Path:
        return Path(os.path.realpath(p))

    outs = [(Path(out), real(out))] + [(Path(w), real(w)) for w in written]
    for c in map(Path, corpus):
        rc = real(c)
        for o, ro in outs:
            if ro == rc:
                named = "" if str(c) == str(o) else f" ({c})"
                raise InputError(f"is also a corpus input{named}; choose another --out", path=o)
            if c.is_dir() and _inside(ro, rc):
                raise InputError(f"is inside the corpus directory {c}; a later run would read this output as "
                                 f"corpus: choose an --out outside the corpus", path=o)
    named = [("corpus input", c) for c in corpus] + [(role, p) for role, p in (inputs or {}).items()
                                                      if p is not None and not is_hf_set(p)]
    for role, p in named:
        rp = real(p)
        for o, ro in outs:
            if _inside(rp, ro):
                raise InputError(f"the {role} is inside {o}, which this command replaces; move it or choose "
                                 f"another --out", path=p)


def _iter_record_documents(path: Path, text_field: str, skip_bad: bool, stats: ReadStats) -> Iterator[Document]:
    """The records' texts as documents; bad records raise, or are skipped and counted with ``skip_bad``."""
    for record, rec in iter_records(path, skip_bad=skip_bad, stats=stats):
        try:
            text = record_text(rec, text_field, path=path, record=record)
        except InputError as e:
            if not skip_bad:
                raise
            stats.skip(str(e))
            continue
        yield Document(str(path), record, text)


def iter_unit_documents(unit: CorpusUnit, *, text_field: str = "text", skip_bad: bool = False,
                        stats: ReadStats | None = None) -> Iterator[Document]:
    """The non-empty documents of one corpus unit, in a fixed order.

    Documents that are empty or only whitespace are skipped and counted in ``stats``
    (they hold nothing to find or train on); ``stats.read`` counts the documents yielded.
    """
    stats = stats if stats is not None else ReadStats()

    def docs() -> Iterator[Document]:
        if not unit.files:
            yield from _iter_record_documents(unit.path, text_field, skip_bad, stats)
            return
        for f in unit.files:
            if f != unit.path and is_record_file_in_dir(f):
                yield from _iter_record_documents(f, text_field, skip_bad, stats)
                continue
            text = read_text_file(f, skip_bad=skip_bad, stats=stats)
            if text is not None:
                yield Document(str(f), 0, text)

    for doc in docs():
        if not doc.text.strip():
            stats.skip(f"{doc.source}{f':{doc.record}' if doc.record else ''}: empty document")
            continue
        stats.read += 1
        yield doc


def no_documents_error(paths: list[str | Path], stats: ReadStats) -> InputError:
    """The error for a corpus that gave no document: names the inputs and what was skipped."""
    detail = ""
    if stats.skipped:
        detail = f" ({stats.skipped} empty or bad record(s) skipped; first: {stats.examples[0]})"
    return InputError(f"the corpus holds no documents: {', '.join(map(str, paths))}{detail}; expected at least "
                      f"one non-empty document")


def iter_corpus_documents(units: list[CorpusUnit], *, text_field: str = "text", skip_bad: bool = False,
                          stats: ReadStats | None = None) -> Iterator[Document]:
    """Every non-empty document of the corpus, unit by unit; an :class:`InputError` at the end when
    there was none (no records, only empty documents, or every record skipped as bad)."""
    stats = stats if stats is not None else ReadStats()
    n = 0
    for unit in units:
        for doc in iter_unit_documents(unit, text_field=text_field, skip_bad=skip_bad, stats=stats):
            n += 1
            yield doc
    if not n:
        raise no_documents_error([u.path for u in units], stats)


def check_corpus_has_documents(units: list[CorpusUnit], *, text_field: str = "text", skip_bad: bool = False) -> None:
    """Raise the corpus's first reading error, or :func:`no_documents_error` when it holds no document.

    Reads only up to the first document (the whole corpus only when it is empty), so a
    streaming reader can fail before it writes anything.
    """
    docs = iter_corpus_documents(units, text_field=text_field, skip_bad=skip_bad, stats=ReadStats())
    try:
        next(docs)
    except StopIteration:  # pragma: no cover -- iter_corpus_documents raises instead of ending empty
        raise no_documents_error([u.path for u in units], ReadStats()) from None
    finally:
        docs.close()

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
    """Load benchmark items from JSON Lines, Parquet or a cached dataset split (``hf:DATASET[:CONFIG]:SPLIT``).

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
