"""Index throughput and memory: contaudit's index vs a naive n-gram baseline, in one run.

Corpus: real prose, the package documentation of this machine (``/usr/share/doc``,
``/usr/share/man``, ``/usr/share/info``: READMEs, changelogs, manuals, HTML and man pages
as text; files that are mostly not letters are left out), about 250 MB as JSON Lines,
one document per file. It is built once and cached under ``--data``. Benchmark: 600
real passages of 40-150 words cut from it: 10 % verbatim, 10 % lightly edited (1-10 %
of words substituted, deleted or inserted), 10 % edited every 9-12 words so that no
13-gram survives, and 70 % cut from held-out documents (absent unless the text is
duplicated elsewhere, as licences are).

Every build runs in a fresh process (so its peak RSS is its own), alternating with the
naive baseline (every corpus 13-gram looked up in a Python set of benchmark 13-grams)
over ``--rounds`` rounds. Prints MB/s per core with the defaults (exact + near
duplicates) and exact only, the naive baseline, their ratios (median over rounds, since
this machine's speed drifts), the recall of the planted passages, and peak RSS for two
corpus sizes and for a corpus of one 50 MB document. ``--against DIR`` times another
checkout (e.g. ``git worktree add /tmp/before HEAD``) in the same rounds, for a before
and after from one run.

    python benchmarks/index_throughput.py [--rounds 3] [--data DIR] [--against DIR] [--aho]
    python benchmarks/index_throughput.py --ray   # Ray with 1 and 2 workers (see ray_main)
"""

from __future__ import annotations

import argparse
import gzip
import html
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from pathlib import Path

from contaudit.index import IndexConfig, build_index
from contaudit.io import iter_documents
from contaudit.text import normalize

N = 13
DOC_ROOTS = ("/usr/share/doc", "/usr/share/man", "/usr/share/info")
KINDS = ("verbatim", "light", "scattered", "absent", "absent", "absent", "absent", "absent", "absent", "absent")


# ----------------------------------------------------------------------------- prose corpus

_SKIP_EXT = {"ps", "pdf", "png", "jpg", "jpeg", "gif", "svg", "tar", "json", "js", "css", "woff", "woff2", "ttf",
             "ico", "zip", "xz", "bz2", "eps", "gpg", "map"}
_TAGS = re.compile(r"<script.*?</script>|<style.*?</style>|<[^>]+>", re.S | re.I)
_ROFF_ESCAPES = re.compile(r"\\f[BIRP0-9]|\\f\(..|\\\(..|\\[-&e]|\\s[-+]?\d")
_TOKEN = re.compile(r"\S+")


def _prose_of(path: str) -> str | None:
    """The text of one documentation file, or None when it is binary, data, or mostly not letters."""
    name = path[:-3] if path.endswith(".gz") else path
    ext = name.rsplit(".", 1)[-1].lower() if "." in os.path.basename(name) else ""
    if ext in _SKIP_EXT:
        return None
    try:
        with (gzip.open(path) if path.endswith(".gz") else open(path, "rb")) as f:
            data = f.read()
        if b"\0" in data:
            return None
        text = data.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError):
        return None
    if ext in ("html", "htm", "xhtml"):
        text = html.unescape(_TAGS.sub(" ", text))
    elif "/man/" in path:  # roff: keep the text lines (and bold/italic ones), drop requests and font escapes
        text = "\n".join(_ROFF_ESCAPES.sub("", line) for line in text.splitlines()
                         if not line.startswith((".", "'")) or line.startswith((".B ", ".I ", ".IR ", ".BR ")))
    visible = len(text) - sum(c.isspace() for c in text)
    return text if visible and sum(c.isalpha() for c in text) >= 0.7 * visible else None


def _group(path: str) -> str:
    """The package a documentation file belongs to (man and info pages: their command's family)."""
    parts = path.split("/")
    if parts[3] == "doc":
        return parts[4]
    return re.split(r"[_.-]", os.path.basename(path))[0]


def prose_documents(roots=DOC_ROOTS) -> list[tuple[str, str]]:
    """``(package, text)`` of every prose documentation file under ``roots``, in a fixed order."""
    docs = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for f in sorted(filenames):
                p = os.path.join(dirpath, f)
                if not os.path.islink(p) and (text := _prose_of(p)):
                    docs.append((_group(p), text))
    return docs


def _passage(doc: str, rng: random.Random) -> str | None:
    """40-150 whitespace-separated words of ``doc``, cut from the original text."""
    spans = [m.span() for m in _TOKEN.finditer(doc)]
    if len(spans) < 60:
        return None
    n = rng.randint(40, 150)
    start = rng.randrange(max(1, len(spans) - n))
    piece = spans[start:start + n]
    return doc[piece[0][0]:piece[-1][1]]


def _nonce(rng: random.Random) -> str:
    return f"edit{rng.randrange(10**6)}"


def light_edit(words: list[str], fraction: float, rng: random.Random) -> list[str]:
    """``fraction`` of the words substituted, deleted or preceded by an insertion (as tests/planted.py)."""
    words = list(words)
    for pos in sorted(rng.sample(range(len(words)), max(1, int(len(words) * fraction))), reverse=True):
        kind = rng.choice(("sub", "del", "ins"))
        if kind == "sub":
            words[pos] = _nonce(rng)
        elif kind == "del":
            del words[pos]
        else:
            words.insert(pos, _nonce(rng))
    return words


def scattered_edit(words: list[str], rng: random.Random) -> list[str]:
    """A substitution or an insertion every 9-12 words: no 13 consecutive words survive."""
    out, run, gap = [], 0, rng.randint(9, 12)
    for w in words:
        if run == gap:
            out.append(_nonce(rng))
            run, gap = 0, rng.randint(9, 12)
            if rng.random() < 0.5:
                continue  # it replaced w
        out.append(w)
        run += 1
    return out


def _grams(words: list[str], n: int) -> set:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def make_prose_inputs(data: Path, n_items: int = 600, seed: int = 0) -> dict:
    """Write (once) the prose corpus, its benchmark and the corpora for the memory runs.

    Passages come from packages drawn uniformly (one package, e.g. a cloud SDK's
    thousands of near-identical man pages, would otherwise supply most of them). The
    absent ones come from the 5 % of packages left out of the corpus, and are kept only
    when an exact index finds none of their 8-grams in the corpus.
    """
    meta_path = data / "meta.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    data.mkdir(parents=True, exist_ok=True)
    docs = prose_documents()
    rng = random.Random(seed)
    groups: dict[str, list[str]] = {}
    for group, text in docs:
        groups.setdefault(group, []).append(text)
    names = sorted(groups)
    held = set(rng.sample(names, len(names) // 20))
    inside = [g for g in names if g not in held]
    corpus, quarter, single = data / "prose.jsonl", data / "prose-quarter.jsonl", data / "one-50mb-document.jsonl"
    n_docs = 0
    with open(corpus, "w") as f, open(quarter, "w") as q:
        size = 0
        for group, text in docs:
            if group in held:
                continue
            line = json.dumps({"id": n_docs, "text": text}) + "\n"
            n_docs += 1
            f.write(line)
            if size < 64e6:
                q.write(line)
                size += len(line)
    with open(single, "w") as f:
        text = "\n".join(text for group, text in docs if group not in held)
        f.write(json.dumps({"id": 0, "text": text[:50_000_000]}) + "\n")

    def passages(pool: list[str], count: int):
        while count:
            passage = _passage(rng.choice(groups[rng.choice(pool)]), rng)
            words = normalize(passage).split() if passage else []
            if len(words) >= 30:
                count -= 1
                yield passage, words

    n_absent = sum(KINDS[i % len(KINDS)] == "absent" for i in range(n_items))
    candidates = data / "absent-candidates.jsonl"
    with open(candidates, "w") as f:
        for i, (passage, _) in enumerate(passages(sorted(held), 4 * n_absent)):
            f.write(json.dumps({"id": str(i), "text": passage}) + "\n")
    found = build_index([corpus], candidates, data / "absent-check", config=IndexConfig(neardup=False)).index
    absent = [json.loads(line)["text"] for line, rec in zip(open(candidates), found.items)
              if rec["status"] == "unseen"]
    kinds, present = {}, passages(inside, n_items)
    with open(data / "bench.jsonl", "w") as f:
        for i in range(n_items):
            kind = KINDS[i % len(KINDS)]
            if kind == "absent":
                if not absent:
                    continue
                text = absent.pop(0)
            else:
                passage, words = next(present)
                if kind == "light":
                    text = " ".join(light_edit(words, rng.uniform(0.01, 0.10), rng))
                elif kind == "scattered":
                    edited = scattered_edit(words, rng)
                    assert not _grams(edited, N) & _grams(words, N)
                    text = " ".join(edited)
                else:
                    text = passage
            kinds[f"{kind}-{i}"] = kind
            f.write(json.dumps({"id": f"{kind}-{i}", "text": text}) + "\n")
    meta = {"documents": n_docs, "packages": len(inside), "bytes": corpus.stat().st_size, "kinds": kinds}
    meta_path.write_text(json.dumps(meta))
    return meta


# ----------------------------------------------------------------------------- stdlib corpus (for --ray)


def stdlib_docs() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for p in sorted(root.rglob("*.py")):
        if "site-packages" in p.parts:
            continue
        try:
            docs.append(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            continue
    return docs


def make_inputs(tmp: Path, docs: list[str], n_items: int = 1000, seed: int = 0) -> tuple[Path, Path]:
    """The stdlib source as JSON Lines, and 1,000 items cut from it (90 % word-shuffled, absent)."""
    rng = random.Random(seed)
    corpus = tmp / "corpus.jsonl"
    with open(corpus, "w") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, "text": d}) + "\n")
    bench = tmp / "bench.jsonl"
    with open(bench, "w") as f:
        for i in range(n_items):
            words = rng.choice(docs).split()
            start = rng.randrange(max(1, len(words) - 150))
            piece = words[start:start + rng.randint(40, 150)]
            if i % 10:  # 90 % unseen: shuffled words
                rng.shuffle(piece)
            f.write(json.dumps({"id": f"b{i}", "text": " ".join(piece)}) + "\n")
    return corpus, bench


# ----------------------------------------------------------------------------- what is timed


def naive_scan(corpus: Path, bench: Path) -> tuple[int, int]:
    """The baseline: a Python set of benchmark 13-grams, every corpus 13-gram looked up."""
    grams = set()
    for _, rec in iter_documents_records(bench):
        ws = normalize(rec["text"]).split()
        grams.update(tuple(ws[i:i + N]) for i in range(len(ws) - N + 1))
    hits = nbytes = 0
    for doc in iter_documents(corpus):
        nbytes += len(doc.text.encode())
        ws = normalize(doc.text).split()
        for i in range(len(ws) - N + 1):
            if tuple(ws[i:i + N]) in grams:
                hits += 1
    return nbytes, hits


def aho_corasick_scan(corpus: Path, bench: Path) -> tuple[int, int]:
    """The textbook alternative: one pyahocorasick automaton of " w1 ... w13 " keys."""
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for _, rec in iter_documents_records(bench):
        ws = normalize(rec["text"]).split()
        for i in range(len(ws) - N + 1):
            automaton.add_word(" " + " ".join(ws[i:i + N]) + " ", 1)
    automaton.make_automaton()
    hits = nbytes = 0
    for doc in iter_documents(corpus):
        nbytes += len(doc.text.encode())
        hits += sum(1 for _ in automaton.iter(" " + normalize(doc.text) + " "))
    return nbytes, hits


def iter_documents_records(path: Path):
    with open(path) as f:
        for i, line in enumerate(f, 1):
            yield i, json.loads(line)


def timed_index(corpus: Path, bench: Path, out: Path, **config) -> tuple[float, int]:
    t = time.perf_counter()
    summary = build_index([corpus], bench, out, config=IndexConfig(**config))
    return time.perf_counter() - t, summary.corpus_bytes


def _child(task: str, corpus: str, bench: str, out: str, neardup: str) -> None:
    """One measurement in this fresh process; prints seconds, bytes and peak RSS as JSON."""
    if task == "index":
        seconds, nbytes = timed_index(Path(corpus), Path(bench), Path(out), neardup=neardup == "1")
    else:
        t = time.perf_counter()
        nbytes, _ = (naive_scan if task == "naive" else aho_corasick_scan)(Path(corpus), Path(bench))
        seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "bytes": nbytes, "rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak RSS. (``ru_maxrss`` would not do: Linux keeps the parent's across exec.)"""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(task: str, corpus: Path, bench: Path, out: Path, neardup: bool = True, src: str | None = None) -> dict:
    """Run one measurement in a fresh process (with ``src`` first on the path when given)."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    res = subprocess.run([sys.executable, __file__, "--child", task, str(corpus), str(bench), str(out),
                          "1" if neardup else "0"], capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(f"{task} failed:\n{res.stderr[-3000:]}")
    m = json.loads(res.stdout.strip().splitlines()[-1])
    m["mb_s"] = m["bytes"] / 1e6 / m["seconds"]
    return m


def recall(index_dir: Path, kinds: dict) -> dict:
    """Per kind of planted passage: items, seen, near duplicates >= 0.8, and items with a 13-gram."""
    out: dict = {}
    for line in open(index_dir / "items.jsonl"):
        rec = json.loads(line)
        row = out.setdefault(kinds[rec["id"]], Counter())
        row["items"] += 1
        row["seen"] += rec["status"] == "seen"
        row["near"] += rec["neardup_jaccard"] >= 0.8
        row["exact"] += rec["matched_ngrams"] > 0
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return _child(*sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "contaudit-index-bench",
                    help="where the prose corpus is built once and kept")
    ap.add_argument("--against", help="another checkout's root (e.g. a git worktree of main), timed in the same rounds")
    ap.add_argument("--aho", action="store_true", help="also time a pyahocorasick automaton over the 13-grams")
    ap.add_argument("--ray", action="store_true", help="only measure `index --ray` with 1 and 2 workers (ray_main)")
    args = ap.parse_args()
    if args.ray:
        return ray_main(args.rounds)

    meta = make_prose_inputs(args.data)
    data, kinds = args.data, meta["kinds"]
    corpus, bench = data / "prose.jsonl", data / "bench.jsonl"
    mb = meta["bytes"] / 1e6
    print(f"corpus: {meta['documents']} documentation files of {meta['packages']} packages, {mb:.0f} MB of JSON Lines; benchmark: {len(kinds)} "
          f"passages ({', '.join(f'{n} {k}' for k, n in sorted(Counter(kinds.values()).items()))})")
    sides = [("after", None)] + ([("before", args.against)] if args.against else [])
    runs: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(args.rounds):
            line = []
            order = [("naive", None)] + [(name, src) for name, src in sides]
            for name, src in order if r % 2 == 0 else order[::-1]:
                if name == "naive":
                    runs.setdefault("naive", []).append(m := measure("naive", corpus, bench, tmp / "naive"))
                    line.append(f"naive {m['mb_s']:.1f}")
                    continue
                for neardup in (True, False):
                    m = measure("index", corpus, bench, tmp / f"{name}-{int(neardup)}", neardup, src)
                    runs.setdefault((name, neardup), []).append(m)
                    line.append(f"{name} {'default' if neardup else 'exact'} {m['mb_s']:.1f}")
            if args.aho:
                runs.setdefault("aho", []).append(m := measure("aho", corpus, bench, tmp / "aho"))
                line.append(f"aho-corasick {m['mb_s']:.1f}")
            print(f"round {r + 1} (MB/s): " + ", ".join(line), flush=True)

        def speed(key) -> float:
            return statistics.median(m["mb_s"] for m in runs[key])

        def ratio(key) -> float:  # median over rounds of each build against the naive run of its round
            return statistics.median(m["mb_s"] / n["mb_s"] for m, n in zip(runs[key], runs["naive"]))

        print()
        print(f"naive set lookup of 13-grams, 1 core:  {speed('naive'):6.1f} MB/s (median of {len(runs['naive'])})")
        if args.aho:
            print(f"pyahocorasick automaton, 1 core:       {speed('aho'):6.1f} MB/s")
        for name, _ in sides:
            print(f"[{name}] index, defaults (exact + near-dup), 1 core: {speed((name, True)):6.1f} MB/s, "
                  f"{ratio((name, True)):.2f}x naive")
            print(f"[{name}] index, exact only (--no-neardup), 1 core:  {speed((name, False)):6.1f} MB/s, "
                  f"{ratio((name, False)):.2f}x naive")
        for name, _ in sides:
            rows = recall(tmp / f"{name}-1", kinds)
            print(f"[{name}] recall (defaults): " + "; ".join(
                f"{k}: {row['seen']}/{row['items']} seen, {row['near']} near-dup >= 0.8, {row['exact']} with a 13-gram"
                for k, row in sorted(rows.items())))

        # Memory must not grow with the corpus or with one document's size.
        for name, src in sides:
            quarter = measure("index", data / "prose-quarter.jsonl", bench, tmp / "m1", True, src)
            full = statistics.median(m["rss_mb"] for m in runs[(name, True)])
            single = measure("index", data / "one-50mb-document.jsonl", bench, tmp / "m2", True, src)
            single_exact = measure("index", data / "one-50mb-document.jsonl", bench, tmp / "m3", False, src)
            print(f"[{name}] peak RSS, defaults: {quarter['rss_mb']:.0f} MB for {quarter['bytes'] / 1e6:.0f} MB of "
                  f"corpus, {full:.0f} MB for {mb:.0f} MB; one 50 MB document: {single['rss_mb']:.0f} MB "
                  f"({single['mb_s']:.1f} MB/s), exact only {single_exact['rss_mb']:.0f} MB")


# --- `--ray`: the index as Ray tasks with 1 and 2 workers, checked against one machine ---------------


def ray_main(rounds: int = 3, files: int = 4) -> None:
    """Exact 13-gram index of the stdlib corpus (as ``files`` JSON Lines files), one machine vs Ray.

    Each Ray instance is started before the timed builds (its start-up is not counted);
    every Ray index must equal the one-machine index byte for byte.
    """
    import ray

    docs = stdlib_docs()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus, bench = make_inputs(tmp, docs)
        lines = corpus.read_text().splitlines(keepends=True)
        parts = [tmp / f"corpus-{k}.jsonl" for k in range(files)]
        for k, part in enumerate(parts):
            part.write_text("".join(lines[k::files]))
        mb = sum(p.stat().st_size for p in parts) / 1e6
        print(f"corpus: {len(docs)} stdlib files in {files} JSON Lines files, {mb:.1f} MB; benchmark: 1000 items")

        def run(out: Path, **config) -> float:
            t = time.perf_counter()
            summary = build_index(parts, bench, out, config=IndexConfig(neardup=False, **config))
            return summary.corpus_bytes / 1e6 / (time.perf_counter() - t)

        here = [run(tmp / "here") for _ in range(rounds)]
        reference = (tmp / "here" / "items.jsonl").read_bytes()
        print(f"one machine, 1 process:  {statistics.median(here):6.1f} MB/s (median of {rounds})")
        here2 = [run(tmp / "here2", workers=2) for _ in range(rounds)]
        print(f"one machine, 2 processes:{statistics.median(here2):6.1f} MB/s")
        for workers in (1, 2):
            ray.init(num_cpus=workers, include_dashboard=False, logging_level="WARNING")
            try:
                speeds = [run(tmp / f"ray{workers}", ray=True, workers=workers) for _ in range(rounds)]
            finally:
                ray.shutdown()
            same = (tmp / f"ray{workers}" / "items.jsonl").read_bytes() == reference
            print(f"Ray, {workers} worker{'s' if workers > 1 else ' '}:          {statistics.median(speeds):6.1f} MB/s, "
                  f"index {'byte-identical to' if same else 'DIFFERENT FROM'} one machine")


if __name__ == "__main__":
    main()
