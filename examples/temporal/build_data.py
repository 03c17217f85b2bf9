"""Build a real temporal test case from the Debian changelogs installed on this machine.

Every Debian package ships ``/usr/share/doc/<pkg>/changelog.Debian.gz``: a list of
dated entries, each a header, bullet lines and a trailer::

    bash (5.2.15-2) unstable; urgency=medium

      * Remove one more pdf file without source. Closes: #1024598.

     -- Matthias Klose <doko@debian.org>  Mon, 02 Jan 2023 13:06:21 +0100

The trailer's date says when the entry was written, so the entries split naturally
by time: old entries (2005-2014 by default) are the *test* set, text a model trained
"now" may have seen; recent ones (>= 2023 by default) are the *shadow* set, written
after a notional training cutoff. Everything else is *filler*, the corpus the probe
models are pretrained and fine-tuned on.

Each entry's text is its header line plus its body (bullets), with the trailer
dropped (it carries a name, an e-mail address and the date itself, which would make
items trivially identifiable or give the date away). Entries are deduplicated by
text (several binary packages share one source changelog, and some doc directories
are symlinks), and kept when they have ``--min-words`` to ``--max-words`` words
(probes need at least 48: a 32-word suffix and a 16-word prefix).

Outputs in ``--out`` (default ``runs/temporal/data``):

* ``test.jsonl`` / ``shadow.jsonl``: ``{"id", "text", "date", "package"}``, sampled
  with ``--seed``, at most ``--per-package`` entries per source package;
* ``filler.jsonl``: ``{"id", "text"}``, every other entry (any length, any date, never
  one whose text equals a test or shadow item), a seeded sample capped at
  ``--filler-mb`` MB of text;
* ``summary.json``: counts and year histograms (also printed).

Standard library and numpy only; the same machine and seed give the same files.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path

import numpy as np

HEADER = re.compile(r"^(?P<pkg>[A-Za-z0-9][A-Za-z0-9.+\-]*) \((?P<version>[^()\s]+)\)(?P<rest>.*;.*)$")
TRAILER = re.compile(r"^ -- (?P<who>.*?)\s*<(?P<email>[^>]*)>\s+(?P<date>\S.*?)\s*$")


@dataclass
class Entry:
    """One parsed changelog entry."""

    package: str   # source package named in the header
    version: str
    when: datetime
    text: str      # header line + body, trailer dropped
    source: str    # changelog file it came from

    @property
    def words(self) -> int:
        return len(self.text.split())


def parse_changelog(lines: list[str], source: str) -> tuple[list[Entry], int]:
    """All entries of one changelog and the number that could not be parsed.

    An entry starts at a header line and ends at its trailer. An entry whose trailer
    is missing or whose date does not parse, or text between a trailer and the next
    header that is not blank (old free-form notes, Emacs local variables), counts as
    unparseable.
    """
    entries, bad = [], 0
    header, body = None, []
    for raw in lines:
        line = raw.rstrip()
        m = HEADER.match(line)
        if m and not line.startswith(" "):
            if header is not None:  # a header before the previous entry's trailer
                bad += 1
            header, body = m, []
            continue
        if header is None:
            continue  # junk between entries (e.g. "Local variables:" blocks)
        t = TRAILER.match(line)
        if t:
            try:
                when = parsedate_to_datetime(t["date"])
                if when.tzinfo is None:  # "-0000": UTC with the offset unknown
                    when = when.replace(tzinfo=timezone.utc)
            except (TypeError, ValueError, IndexError):
                when = None
            text = _normalise(header.group(0), body)
            if when is None or not text:
                bad += 1
            else:
                entries.append(Entry(header["pkg"], header["version"], when, text, source))
            header, body = None, []
            continue
        body.append(line)
    if header is not None:
        bad += 1
    return entries, bad


def _normalise(header: str, body: list[str]) -> str:
    """Header + body lines, tabs expanded, blank runs collapsed, ends trimmed."""
    lines, blank = [header.strip()], False
    for line in body:
        line = line.expandtabs(8).rstrip()
        if not line:
            blank = True
            continue
        if blank:
            lines.append("")
        blank = False
        lines.append(line)
    if len(lines) < 2:
        return ""
    # the body always follows one blank line after the header
    if lines[1] != "":
        lines.insert(1, "")
    return "\n".join(lines).strip()


def read_all(pattern: str) -> tuple[list[Entry], dict]:
    """Every distinct entry of every changelog matching ``pattern`` and parse statistics."""
    stats = Counter()
    seen_files, seen_texts, entries = set(), set(), []
    for path in sorted(glob.glob(pattern)):
        real = os.path.realpath(path)
        if real in seen_files:
            stats["duplicate_files"] += 1
            continue
        seen_files.add(real)
        try:
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except (OSError, EOFError):
            stats["unreadable_files"] += 1
            continue
        stats["files"] += 1
        found, bad = parse_changelog(lines, path)
        stats["unparseable_entries"] += bad
        for e in found:
            stats["parsed_entries"] += 1
            key = hashlib.sha256(e.text.encode()).hexdigest()
            if key in seen_texts:
                stats["duplicate_entries"] += 1
                continue
            seen_texts.add(key)
            entries.append(e)
    stats["distinct_entries"] = len(entries)
    return entries, dict(stats)


def _capped(order, n: int, per_package: int) -> list[Entry]:
    """The first ``n`` entries of ``order`` with at most ``per_package`` per source package, by date."""
    taken, per = [], Counter()
    for e in order:
        if per[e.package] >= per_package:
            continue
        per[e.package] += 1
        taken.append(e)
        if len(taken) == n:
            break
    return sorted(taken, key=lambda e: (e.when, e.package, e.version))


def sample(pool: list[Entry], n: int, per_package: int, rng: np.random.Generator) -> list[Entry]:
    """Up to ``n`` entries in a seeded random order, at most ``per_package`` per source package."""
    return _capped((pool[i] for i in rng.permutation(len(pool))), n, per_package)


def most_recent(pool: list[Entry], n: int, per_package: int) -> list[Entry]:
    """The ``n`` most recent entries, at most ``per_package`` per source package."""
    return _capped(sorted(pool, key=lambda e: (e.when, e.package, e.version), reverse=True), n, per_package)


WORD = re.compile(r"\w+")


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Lower-cased word ``n``-grams of ``text`` (the kind of overlap `contaudit index` looks for)."""
    words = WORD.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def shared_counts(entries: list[Entry], idx: list[int], n: int) -> dict[int, int]:
    """For each entry index in ``idx``: how many other entries share a word ``n``-gram with it."""
    grams = [ngrams(e.text, n) for e in entries]
    where = defaultdict(set)
    for i, g in enumerate(grams):
        for x in g:
            where[x].add(i)
    out = {}
    for i in idx:
        others = set()
        for x in grams[i]:
            others |= where[x]
        others.discard(i)
        out[i] = len(others)
    return out


def year_histogram(entries: list[Entry]) -> dict[int, int]:
    return dict(sorted(Counter(e.when.year for e in entries).items()))


def _item_id(prefix: str, e: Entry) -> str:
    return f"{prefix}/{e.package}/{e.version}"


def _record(prefix: str, e: Entry) -> dict:
    return {"id": _item_id(prefix, e), "text": e.text, "date": e.when.date().isoformat(), "package": e.package}


def write_jsonl(path: Path, rows) -> int:
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def _print_hist(name: str, hist: dict[int, int]) -> None:
    print(f"{name}: " + ", ".join(f"{y}:{c}" for y, c in hist.items()))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--changelogs", default="/usr/share/doc/*/changelog.Debian.gz", help="glob of changelog files")
    ap.add_argument("--out", type=Path, default=Path("runs/temporal/data"), help="output directory")
    ap.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    ap.add_argument("--n-test", type=int, default=120, help="test items (old entries)")
    ap.add_argument("--n-shadow", type=int, default=120, help="shadow items (recent entries)")
    ap.add_argument("--test-from", default="2005-01-01", help="first date of the test period")
    ap.add_argument("--test-to", default="2014-12-31", help="last date of the test period")
    ap.add_argument("--shadow-from", default="2022-01-01",
                    help="earliest date a shadow item may have (the notional training cutoff)")
    ap.add_argument("--shadow-pick", choices=("recent", "random"), default="recent",
                    help="shadow items: the most recent eligible entries, or a seeded random sample of them")
    ap.add_argument("--min-words", type=int, default=60, help="fewest words of a test/shadow item")
    ap.add_argument("--max-words", type=int, default=250, help="most words of a test/shadow item")
    ap.add_argument("--per-package", type=int, default=3, help="most test (and shadow) items per source package")
    ap.add_argument("--filler-mb", type=float, default=7.0, help="cap on filler text, MB (UTF-8)")
    ap.add_argument("--max-shared", type=int, default=0,
                    help="a test/shadow candidate may share a --purge-ngram n-gram with at most this many other "
                         "entries (boilerplate uploads, e.g. kernel stable updates or X.org library releases, "
                         "have near-copies that would be 'seen' or would drag text out of the filler); -1: no limit")
    ap.add_argument("--purge-ngram", type=int, default=13,
                    help="drop filler entries sharing a word n-gram of this length with a test or shadow item, "
                         "so that no model sees the items except through injection (0: keep them)")
    args = ap.parse_args(argv)

    entries, stats = read_all(args.changelogs)
    print(f"changelog files: {stats.get('files', 0)} (+{stats.get('duplicate_files', 0)} symlinked duplicates, "
          f"{stats.get('unreadable_files', 0)} unreadable)")
    print(f"entries: {stats.get('parsed_entries', 0)} parsed, {stats.get('unparseable_entries', 0)} unparseable "
          f"(skipped), {stats.get('duplicate_entries', 0)} duplicate texts, {len(entries)} distinct")
    _print_hist("all distinct entries by year", year_histogram(entries))

    def day(s: str) -> date:
        return date.fromisoformat(s)

    t0, t1, s0 = day(args.test_from), day(args.test_to), day(args.shadow_from)
    sized = [e for e in entries if args.min_words <= e.words <= args.max_words]
    n_sized = len(sized)
    if args.max_shared >= 0 and args.purge_ngram:
        idx = [i for i, e in enumerate(entries) if args.min_words <= e.words <= args.max_words]
        shared = shared_counts(entries, idx, args.purge_ngram)
        sized = [entries[i] for i in idx if shared[i] <= args.max_shared]
        print(f"entries with {args.min_words}-{args.max_words} words: {n_sized}; {n_sized - len(sized)} share a "
              f"{args.purge_ngram}-gram with more than {args.max_shared} other entries and are not candidates")
    test_pool = [e for e in sized if t0 <= e.when.date() <= t1]
    shadow_pool = [e for e in sized if e.when.date() >= s0]
    print(f"candidates: {len(sized)}; "
          f"in the test period {len(test_pool)} ({len({e.package for e in test_pool})} packages), "
          f"in the shadow period {len(shadow_pool)} ({len({e.package for e in shadow_pool})} packages)")

    rng = np.random.default_rng(args.seed)
    test = sample(test_pool, args.n_test, args.per_package, rng)
    if args.shadow_pick == "recent":
        shadow = most_recent(shadow_pool, args.n_shadow, args.per_package)
    else:
        shadow = sample(shadow_pool, args.n_shadow, args.per_package, rng)
    n_2023 = sum(1 for e in shadow_pool if e.when.year >= 2023)
    print(f"shadow pool: {len(shadow_pool)} entries since {args.shadow_from}, {n_2023} of them from 2023 on; "
          f"shadow items ({args.shadow_pick}) dated {shadow[0].when.date()} .. {shadow[-1].when.date()}"
          if shadow else "shadow pool is empty")
    for name, got, want in (("test", test, args.n_test), ("shadow", shadow, args.n_shadow)):
        if len(got) < want:
            print(f"WARNING: only {len(got)} {name} items available (asked for {want}); "
                  f"widen the period or raise --per-package")

    # Filler: every other entry, minus any whose text equals a chosen item (already
    # deduplicated by text, so this is a set difference), seeded sample up to the cap.
    chosen = {id(e) for e in test + shadow}
    rest = [e for e in entries if id(e) not in chosen]
    purged = 0
    if args.purge_ngram:
        item_grams = set().union(*(ngrams(e.text, args.purge_ngram) for e in test + shadow))
        kept = [e for e in rest if not (ngrams(e.text, args.purge_ngram) & item_grams)]
        purged = len(rest) - len(kept)
        rest = kept
        print(f"filler: dropped {purged} entries sharing a {args.purge_ngram}-word n-gram with a test/shadow item")
    cap = int(args.filler_mb * 1e6)
    filler, size = [], 0
    for i in rng.permutation(len(rest)):
        e = rest[i]
        n = len(e.text.encode()) + 1
        if size + n > cap:
            continue
        filler.append(e)
        size += n
    filler.sort(key=lambda e: (e.source, e.when))

    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "test.jsonl", (_record("test", e) for e in test))
    write_jsonl(args.out / "shadow.jsonl", (_record("shadow", e) for e in shadow))
    ids = Counter()
    rows = []
    for e in filler:
        base = f"filler/{e.package}/{e.version}"
        ids[base] += 1
        rows.append({"id": base if ids[base] == 1 else f"{base}#{ids[base]}", "text": e.text})
    write_jsonl(args.out / "filler.jsonl", rows)

    def words(es):
        w = [e.words for e in es]
        return {"mean": round(float(np.mean(w)), 1), "min": int(min(w)), "max": int(max(w))} if w else {}

    summary = {
        "parse": stats, "seed": args.seed,
        "periods": {"test": [args.test_from, args.test_to], "shadow_from": args.shadow_from},
        "max_shared": args.max_shared,
        "pools": {"sized": n_sized, "distinctive": len(sized), "test": len(test_pool), "shadow": len(shadow_pool),
                  "shadow_from_2023": n_2023},
        "shadow_pick": args.shadow_pick, "purge_ngram": args.purge_ngram, "filler_purged": purged,
        "counts": {"test": len(test), "shadow": len(shadow), "filler": len(filler),
                   "filler_not_taken": len(rest) - len(filler), "filler_bytes": size},
        "packages": {"test": len({e.package for e in test}), "shadow": len({e.package for e in shadow})},
        "words": {"test": words(test), "shadow": words(shadow)},
        "years": {"all": year_histogram(entries), "test": year_histogram(test), "shadow": year_histogram(shadow),
                  "filler": year_histogram(filler)},
    }
    with open(args.out / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    print(f"test: {len(test)} items from {summary['packages']['test']} packages, words {summary['words']['test']}")
    _print_hist("  test by year", summary["years"]["test"])
    print(f"shadow: {len(shadow)} items from {summary['packages']['shadow']} packages, "
          f"words {summary['words']['shadow']}")
    _print_hist("  shadow by year", summary["years"]["shadow"])
    print(f"filler: {len(filler)} entries, {size / 1e6:.2f} MB "
          f"({len(rest) - len(filler)} other entries left out by the cap)")
    _print_hist("  filler by year", summary["years"]["filler"])
    print(f"wrote {args.out}/{{test,shadow,filler}}.jsonl and summary.json")
    return summary


if __name__ == "__main__":
    main()
