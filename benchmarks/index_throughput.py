"""Index throughput: contaudit's index vs a naive n-gram baseline, measured in one run.

Corpus: the Python standard library's source (real code, on every machine), written
as JSON Lines. Benchmark: 1,000 items cut from that source, 90 % of them word-shuffled
(same vocabulary, absent from the corpus) and 10 % verbatim (present).

Prints corpus MB/s per core for the index (exact n-grams only, and with near
duplicates), a pyahocorasick automaton over the same 13-grams (the classic tool,
which the index's vectorized hashing replaced), the naive baseline (every corpus 13-gram looked up in a Python set of
benchmark 13-grams), their ratio (median over alternating rounds, since this
machine's speed drifts), and the peak RSS of index builds over two corpus sizes.

    python benchmarks/index_throughput.py [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from contaudit.index import IndexConfig, build_index
from contaudit.io import iter_documents
from contaudit.text import normalize

N = 13


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


def peak_rss_child(corpus: Path, bench: Path, out: Path) -> float:
    """Peak RSS (MB) of a fresh process building the index."""
    code = ("import sys,resource; from contaudit.index import build_index; "
            "build_index([sys.argv[1]], sys.argv[2], sys.argv[3]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    res = subprocess.run([sys.executable, "-c", code, str(corpus), str(bench), str(out)],
                         capture_output=True, text=True, check=True)
    return float(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    docs = stdlib_docs()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus, bench = make_inputs(tmp, docs)
        mb = corpus.stat().st_size / 1e6
        print(f"corpus: {len(docs)} stdlib files, {mb:.1f} MB; benchmark: 1000 items")
        exact, near, naive, ratios, aho = [], [], [], [], []
        for r in range(args.rounds):
            t_exact, nbytes = timed_index(corpus, bench, tmp / "i1", neardup=False)
            t0 = time.perf_counter()
            naive_bytes, hits = naive_scan(corpus, bench)
            t_naive = time.perf_counter() - t0
            t_near, _ = timed_index(corpus, bench, tmp / "i2", neardup=True)
            t0 = time.perf_counter()
            aho_bytes, _ = aho_corasick_scan(corpus, bench)
            aho.append(aho_bytes / 1e6 / (time.perf_counter() - t0))
            exact.append(nbytes / 1e6 / t_exact)
            naive.append(naive_bytes / 1e6 / t_naive)
            near.append(nbytes / 1e6 / t_near)
            ratios.append(t_naive / t_exact)
            print(f"round {r + 1}: index exact {exact[-1]:.1f} MB/s, index exact+near-dup {near[-1]:.1f} MB/s, "
                  f"naive {naive[-1]:.2f} MB/s, Aho-Corasick {aho[-1]:.1f} MB/s, ratio {ratios[-1]:.1f}x")
        t_par, nbytes = timed_index(corpus, bench, tmp / "i3", neardup=False, workers=args.workers)
        print()
        print(f"index, exact 13-grams, 1 core:       {statistics.median(exact):6.1f} MB/s (median of {args.rounds})")
        print(f"index, exact + near-dup, 1 core:     {statistics.median(near):6.1f} MB/s")
        print(f"naive set lookup, 1 core:            {statistics.median(naive):6.2f} MB/s")
        print(f"pyahocorasick automaton, 1 core:     {statistics.median(aho):6.2f} MB/s")
        print(f"speed-up over naive (median ratio):  {statistics.median(ratios):6.1f}x")
        print(f"index, exact, {args.workers} workers:             {nbytes / 1e6 / t_par:6.1f} MB/s")

        # Memory must not grow with the corpus: same benchmark, corpus x1 and x3.
        big = tmp / "corpus3.jsonl"
        with open(big, "w") as f:
            for _ in range(3):
                f.write(corpus.read_text())
        rss1 = peak_rss_child(corpus, bench, tmp / "m1")
        rss3 = peak_rss_child(big, bench, tmp / "m3")
        print(f"peak RSS: {rss1:.0f} MB for {mb:.0f} MB of corpus, {rss3:.0f} MB for {3 * mb:.0f} MB")


if __name__ == "__main__":
    main()
