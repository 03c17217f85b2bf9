"""Per-item outcomes of an evaluation the user ran, matched to the audit's items.

Two formats (docs/outcomes.md):

- ``jsonl``: one ``{"id": ..., "score": ...}`` object per line (0/1, a boolean or a real);
- ``lm_eval``: the per-sample files ``samples_<task>_<time>.jsonl`` that
  ``lm_eval --log_samples --output_path DIR`` writes (a file, or the directory).

Each record is matched to an item by its id field when it has one, else by its text
(:func:`contaudit.splits.text_key`). Every record is accounted for: ``n_records ==
n_matched + unmatched + skipped``, and the audit's items with no outcome are counted
(``missing``). Example::

    from contaudit.io import load_items
    from contaudit.outcomes import read_outcomes

    items = load_items("test.jsonl") + load_items("shadow.jsonl")
    out = read_outcomes("lm_eval_out/", items, task="my_task", metric="acc")
    print(out.n_matched, out.missing, sum(out.scores.values()) / len(out.scores))
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from contaudit.errors import InputError
from contaudit.io import MAX_SKIP_EXAMPLES, Item, is_jsonl, item_id_of, iter_jsonl
from contaudit.manifest import hash_file
from contaudit.splits import text_key

FORMATS = ("auto", "jsonl", "lm_eval")
DEFAULT_SCORE_FIELD = "score"
#: Keys of an lm-evaluation-harness sample record that are not metrics (lm_eval/evaluator.py).
SAMPLE_KEYS = frozenset({"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics",
                         "doc_hash", "prompt_hash", "target_hash"})
#: ``samples_<task>_<date>.jsonl``; the date is ``datetime.isoformat()`` with ``:`` as ``-``.
SAMPLES_NAME = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T[0-9.\-]+)\.jsonl$")


@dataclass(frozen=True)
class Outcomes:
    """Per-item outcomes read from one file, and how every record of it was used.

    ``scores`` maps item id -> outcome. ``metric`` is the score field (``jsonl``) or the
    lm_eval metric; ``task`` and ``filter`` are lm_eval's (None for ``jsonl``).
    ``n_records == n_matched + unmatched + skipped``; ``missing`` counts the items given
    that got no outcome; ``examples`` holds the first few reasons of each.
    """

    scores: dict[str, float]
    metric: str
    path: str
    sha256: str
    format: str
    task: str | None = None
    filter: str | None = None
    n_records: int = 0
    n_matched: int = 0
    unmatched: int = 0
    skipped: int = 0
    missing: int = 0
    examples: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """Everything but the scores, as JSON-ready values (for a manifest or ``results.json``)."""
        return {"path": self.path, "sha256": self.sha256, "format": self.format, "task": self.task,
                "filter": self.filter, "metric": self.metric, "n_records": self.n_records,
                "n_matched": self.n_matched, "unmatched": self.unmatched, "skipped": self.skipped,
                "missing": self.missing, "examples": list(self.examples)}


# ----------------------------------------------------------------------------- lm_eval's files


def samples_task(path: Path) -> str | None:
    """The task named by an lm_eval samples file name, None for any other name."""
    m = SAMPLES_NAME.match(path.name)
    return m.group("task") if m else None


def find_samples_files(directory: str | Path) -> dict[str, list[Path]]:
    """lm_eval samples files under ``directory`` (recursive: lm_eval writes ``DIR/<model>/``), by task."""
    found: dict[str, list[Path]] = {}
    for p in sorted(Path(directory).rglob("samples_*.jsonl")):
        task = samples_task(p)
        if task is not None and p.is_file():
            found.setdefault(task, []).append(p)
    return found


def _listing(names) -> str:
    return ", ".join(map(str, names))


def _samples_file(path: Path, task: str | None) -> tuple[Path, str | None]:
    """The one samples file to read at ``path`` (a file or lm_eval's output directory), and its task."""
    if path.is_file():
        named = samples_task(path)
        if task is not None and named is not None and named != task:
            raise InputError(f"holds samples of task {named!r}, not of task {task!r}; pass that task's file "
                             f"or its directory", path=path)
        return path, task or named
    by_task = find_samples_files(path)
    if not by_task:
        raise InputError("no lm-evaluation-harness samples files (samples_<task>_<time>.jsonl) under this "
                         "directory; run lm_eval with --log_samples --output_path DIR", path=path)
    if task is None:
        if len(by_task) > 1:
            raise InputError(f"holds samples of several tasks ({_listing(by_task)}); choose one with "
                             f"[outcomes] task (task= in Python)", path=path)
        task = next(iter(by_task))
    if task not in by_task:
        raise InputError(f"holds no samples of task {task!r}; its tasks are {_listing(by_task)}", path=path)
    files = by_task[task]
    if len(files) > 1:
        raise InputError(f"holds {len(files)} samples files of task {task!r} (several runs or models: "
                         f"{_listing(files)}); pass the file to read", path=path)
    return files[0], task


def _looks_like_samples(path: Path) -> bool:
    """True when the first record of a JSON Lines file is an lm_eval sample (``doc_id`` and ``doc``)."""
    records = iter_jsonl(path)
    try:
        first = next(records, None)
    finally:
        records.close()
    return first is not None and "doc_id" in first[1] and isinstance(first[1].get("doc"), dict)


def _resolve_format(path: Path, format: str) -> str:
    if format not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    if format != "auto":
        return format
    if path.is_dir() or samples_task(path) is not None:
        return "lm_eval"
    return "lm_eval" if _looks_like_samples(path) else "jsonl"


# ----------------------------------------------------------------------------- matching records to items


class _Matcher:
    """Finds the item a record (a JSONL record, or an lm_eval sample's ``doc``) is about."""

    def __init__(self, items: Sequence[Item], id_field: str, text_field: str | None):
        if not items:
            raise InputError("no items given; expected the audit's test and shadow items to match outcomes to")
        self.ids: set[str] = set()
        self.by_text: dict[str, list[str]] = {}
        for it in items:
            if it.id in self.ids:
                raise InputError(f"items: id {it.id!r} is given twice; the items matched in one call (test and "
                                 f"shadow sets together) need distinct ids")
            self.ids.add(it.id)
            self.by_text.setdefault(text_key(it.text), []).append(it.id)
        self.id_field, self.text_field = id_field, text_field

    def match(self, doc: dict, *, path: Path, record: int) -> tuple[str | None, str]:
        """``(item_id, "")`` for a match, ``(None, why)`` for a record that is about no item.

        A record with the id field is matched by id only; without it, by the text field
        (``text_field``) or by any string field equal to an item's text.
        """
        if self.id_field in doc:
            item_id = item_id_of(doc[self.id_field], self.id_field, path=path, record=record)
            if item_id in self.ids:
                return item_id, ""
            return None, f"id {item_id!r} is no item of the audit"
        if self.text_field is not None:
            if self.text_field not in doc:
                raise InputError(f"has neither the id field {self.id_field!r} nor the text field "
                                 f"{self.text_field!r}; fields are {sorted(doc)}", path=path, record=record)
            value = doc[self.text_field]
            if not isinstance(value, str):
                raise InputError(f"text field {self.text_field!r} must be a string, got {type(value).__name__}",
                                 path=path, record=record)
            fields = {self.text_field: value}
        else:
            fields = {k: v for k, v in doc.items() if isinstance(v, str)}
        hits: dict[str, list[str]] = {}  # text key -> fields holding it
        for name, value in fields.items():
            key = text_key(value)
            if key and key in self.by_text:
                hits.setdefault(key, []).append(name)
        if not hits:
            if self.text_field is None:
                return None, f"no id field {self.id_field!r} and no field equal to an item's text"
            return None, f"no id field {self.id_field!r}, and its field {self.text_field!r} is no item's text"
        if len(hits) > 1:
            names = sorted(n for ns in hits.values() for n in ns)
            raise InputError(f"fields {names} equal the texts of different items; name the one to match with "
                             f"[outcomes] text_field or add the id field {self.id_field!r}",
                             path=path, record=record)
        (key, names), = hits.items()
        ids = self.by_text[key]
        if len(ids) > 1:
            raise InputError(f"field {names[0]!r} equals the text of several items ({_listing(ids[:5])}); match "
                             f"by id: give the records the id field {self.id_field!r}", path=path, record=record)
        return ids[0], ""


# ----------------------------------------------------------------------------- reading


def _number(value) -> float | None:
    """A finite number (booleans as 0/1), else None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


@dataclass
class _Tally:
    """Counts while reading, and the first few examples of each kind."""

    n_records: int = 0
    unmatched: int = 0
    skipped: int = 0
    examples: list[str] = field(default_factory=list)
    _kinds: dict[str, int] = field(default_factory=dict)

    def note(self, kind: str, text: str) -> None:
        if self._kinds.get(kind, 0) < MAX_SKIP_EXAMPLES // 4 and len(self.examples) < MAX_SKIP_EXAMPLES:
            self.examples.append(text)
        self._kinds[kind] = self._kinds.get(kind, 0) + 1


@dataclass
class _Sample:
    """What one record contributes: where it is, its item (or why none), its filter and metric values."""

    record: int
    item_id: str | None
    why: str
    filter: str | None
    values: dict


def _sample_metrics(rec: dict) -> dict:
    """An lm_eval sample's metric values: the keys listed in ``metrics``, else (older lm_eval
    files) every key that is not one of :data:`SAMPLE_KEYS`."""
    names = rec.get("metrics")
    if isinstance(names, list):
        return {n: rec[n] for n in names if isinstance(n, str) and n in rec}
    return {k: v for k, v in rec.items() if k not in SAMPLE_KEYS}


def _read_samples(path: Path, fmt: str, matcher: _Matcher, tally: _Tally, skip_bad: bool) -> list[_Sample]:
    samples = []
    for record, rec in iter_jsonl(path):
        tally.n_records += 1
        if fmt == "lm_eval":
            doc = rec.get("doc")
            if not isinstance(doc, dict):
                why = "no 'doc' object; expected an lm-evaluation-harness sample (lm_eval --log_samples)"
                if not skip_bad:
                    raise InputError(why, path=path, record=record)
                tally.skipped += 1
                tally.note("bad", f"{path}:{record}: {why}")
                continue
            flt = rec.get("filter")
            flt = flt if isinstance(flt, str) else "none"  # older lm_eval files have no filter key
            values = _sample_metrics(rec)
        else:
            doc, flt, values = rec, None, rec
        try:
            item_id, why = matcher.match(doc, path=path, record=record)
        except InputError as e:
            if not skip_bad:
                raise
            tally.skipped += 1
            tally.note("bad", str(e))
            continue
        samples.append(_Sample(record, item_id, why, flt, values))
    if not tally.n_records:
        raise InputError("holds no records; expected one JSON object per line", path=path)
    return samples


def _metric_choices(samples: list[_Sample]) -> list[tuple[str, str]]:
    """The (metric, filter) pairs of lm_eval samples, in the order first seen."""
    seen: dict[tuple[str, str], None] = {}
    for s in samples:
        for name in s.values:
            seen.setdefault((name, s.filter), None)
    return list(seen)


def _choose_metric(samples: list[_Sample], metric: str | None, path: Path) -> tuple[str, str]:
    """The one (metric, filter) pair that ``metric`` (``"acc"`` or lm_eval's ``"acc,none"``) names."""
    pairs = _metric_choices(samples)
    listing = _listing(f"{m},{f}" for m, f in pairs) or "none"
    if metric is None:
        chosen = pairs
    else:
        name, _, flt = metric.partition(",")
        chosen = [(m, f) for m, f in pairs if m == name and (not flt or f == flt)]
    if len(chosen) == 1:
        return chosen[0]
    if not chosen:
        raise InputError(f"no metric {metric!r} in these samples; they hold {listing}", path=path)
    what = "several metrics" if metric is None else f"metric {metric!r} under several filters"
    raise InputError(f"holds {what} ({listing}); choose one with [outcomes] metric, e.g. "
                     f"{chosen[0][0]!r} or {','.join(chosen[0])!r}", path=path)


def _nothing_matched(path: Path, tally: _Tally, id_field: str) -> InputError:
    hint = f"; first: {tally.examples[0]}" if tally.examples else ""
    return InputError(f"no record matched an item of the audit ({tally.unmatched} unmatched, {tally.skipped} "
                      f"skipped{hint}); check id_field ({id_field!r}) and text_field", path=path)


def read_outcomes(path: str | Path, items: Sequence[Item], *, format: str = "auto", metric: str | None = None,
                  task: str | None = None, id_field: str = "id", text_field: str | None = None,
                  skip_bad: bool = False) -> Outcomes:
    """Read per-item outcomes and match them to ``items`` (the audit's test and shadow items).

    ``format``: ``"jsonl"`` (``{id_field: ..., metric: ...}`` per line; ``metric``
    defaults to ``"score"``), ``"lm_eval"`` (a samples file or the ``--output_path``
    directory; ``task`` picks among several tasks, ``metric`` among several metrics or
    filters, as ``"acc"`` or ``"acc,none"``) or ``"auto"`` (a directory, a
    ``samples_*.jsonl`` name or a first record with ``doc_id`` and ``doc`` is lm_eval).

    A record with ``id_field`` (an lm_eval sample: in its ``doc``) is matched by id;
    without it, by ``text_field`` or any string field equal to an item's text
    (whitespace collapsed). Records about no item are counted in ``unmatched``; an
    outcome given twice for one item, a malformed score, or an ambiguous text match is
    an :class:`InputError` naming the file and line (with ``skip_bad``, bad records are
    counted in ``skipped`` instead). lm_eval records of another filter are counted in
    ``skipped``. A file where no record matches an item is an error.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory; expected per-item outcomes (JSON Lines, or lm_eval "
                         "--log_samples output)", path=path)
    if path.is_file() and not is_jsonl(path):
        raise InputError("expected a JSON Lines file (.jsonl, optionally .gz/.zst) or lm_eval's output "
                         "directory", path=path)
    fmt = _resolve_format(path, format)
    if fmt == "jsonl":
        if path.is_dir():
            raise InputError("is a directory; a jsonl outcomes file is one file (a directory is read with "
                             "format='lm_eval')", path=path)
        if task is not None:
            raise InputError(f"task={task!r} applies to lm_eval samples only; this is read as {fmt}", path=path)
    else:
        path, task = _samples_file(path, task)
    matcher = _Matcher(items, id_field, text_field)
    tally = _Tally()
    samples = _read_samples(path, fmt, matcher, tally, skip_bad)

    if fmt == "lm_eval":
        if not samples:
            raise _nothing_matched(path, tally, id_field)
        metric, flt = _choose_metric(samples, metric, path)
    else:
        metric, flt = metric or DEFAULT_SCORE_FIELD, None
    scores: dict[str, float] = {}
    first: dict[str, int] = {}
    other_filters: dict[str, int] = {}
    for s in samples:
        if s.filter != flt:
            other_filters[s.filter] = other_filters.get(s.filter, 0) + 1
            continue
        if s.item_id is None:
            tally.unmatched += 1
            tally.note("unmatched", f"{path}:{s.record}: {s.why}")
            continue
        if metric not in s.values:
            why = (f"no score field {metric!r}; fields are {sorted(s.values)}" if fmt == "jsonl"
                   else f"no value of metric {metric!r}; it has {sorted(s.values)}")
            if not skip_bad:
                raise InputError(why, path=path, record=s.record)
            tally.skipped += 1
            tally.note("bad", f"{path}:{s.record}: {why}")
            continue
        value = s.values[metric]
        score = _number(value)
        if score is None:
            if fmt == "lm_eval" and isinstance(value, (list, dict, str)):
                # bleu, f1, ... store pieces per sample and are computed over the whole set
                raise InputError(f"metric {metric!r} is not a per-item score: its per-sample value is "
                                 f"{json.dumps(value)[:60]} (lm_eval aggregates it over the whole set); choose "
                                 f"a metric with a number per sample", path=path, record=s.record)
            why = f"{'score field' if fmt == 'jsonl' else 'metric'} {metric!r} must be a finite number (0/1, a " \
                  f"boolean or a real); got {json.dumps(value)[:60]}"
            if not skip_bad:
                raise InputError(why, path=path, record=s.record)
            tally.skipped += 1
            tally.note("bad", f"{path}:{s.record}: {why}")
            continue
        if s.item_id in scores:
            raise InputError(f"a second outcome for item {s.item_id!r} (the first is at record {first[s.item_id]}); "
                             f"expected one per item", path=path, record=s.record)
        scores[s.item_id] = score
        first[s.item_id] = s.record
    for name, n in other_filters.items():
        tally.skipped += n
        tally.note("filter", f"{n} record(s) of filter {name!r} set aside (filter {flt!r} chosen)")
    if not scores:
        raise _nothing_matched(path, tally, id_field)
    missing = [i for i in matcher.ids if i not in scores]
    for item_id in sorted(missing)[:5]:
        tally.note("missing", f"item {item_id!r} has no outcome")
    return Outcomes(scores=scores, metric=metric, path=str(path), sha256=hash_file(path), format=fmt, task=task,
                    filter=flt, n_records=tally.n_records, n_matched=len(scores), unmatched=tally.unmatched,
                    skipped=tally.skipped, missing=len(missing), examples=tally.examples)
