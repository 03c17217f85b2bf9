"""The suite example with one benchmark leaked into the corpus only as paraphrases (issue 27).

Each ``man-pages`` test paragraph is rephrased from real text: its sentences reordered (when it has
two or more) and half of its words that WordNet knows replaced by a synonym (Debian's
``wordnet-base``; ``benchmarks/semantic_recall.py`` holds the rephrasing), re-wrapped at 60
characters under a one-line heading. The corpus is the suspect's training text plus these 100
paraphrases; the suite is ``runs/suite/suite.toml`` with that corpus and ``[index] semantic = true``.
The models never saw the paraphrases, so the verdicts stay as they are: what changes is the corpus
evidence, where the paraphrased items are counted apart from the ``seen`` ones.

Needs ``runs/suite`` from ``build_suite.py`` and ``apt-get install wordnet-base``. Run::

    python examples/suite/paraphrase_leak.py            # -> runs/suite-paraphrase/{corpus.jsonl,suite.toml}
    contaudit screen runs/suite-paraphrase/suite.toml --out runs/suite-paraphrase/screen
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from semantic_recall import SENTENCE, load_wordnet, reorder, substitute


def rewrap(words: list[str], width: int = 60) -> str:
    lines, line = [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = ""
        line += (" " if line else "") + w
    return "\n".join(lines + [line])


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", type=Path, default=Path("runs/suite"), help="build_suite.py's output")
    ap.add_argument("--benchmark", default="man-pages", help="the benchmark leaked as paraphrases")
    ap.add_argument("--out", type=Path, default=Path("runs/suite-paraphrase"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate", type=float, default=0.5, help="share of the WordNet-known words replaced")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in
            (args.suite / "data" / f"{args.benchmark}-test.jsonl").read_text(encoding="utf-8").splitlines()]
    synonyms, rng = load_wordnet(), random.Random(args.seed)
    corpus = args.out / "corpus.jsonl"
    training = args.suite / "data" / "suspect-training-text.jsonl"
    with open(corpus, "w", encoding="utf-8") as f, open(training, encoding="utf-8") as src:
        f.writelines(src)
        for r in rows:
            text = r["text"] if len(SENTENCE.split(r["text"])) < 2 else reorder(r["text"], rng)
            body = rewrap(substitute(text, synonyms, rng, rate=args.rate).split())
            f.write(json.dumps({"id": f"paraphrase/{r['id']}", "text": "Notes, summarised.\n" + body}) + "\n")
    suite = (args.suite / "suite.toml").read_text()
    suite = suite.replace(json.dumps(str(training.resolve())), json.dumps(str(corpus.resolve())))
    suite = suite.replace("[index]\n", "[index]\nsemantic = true\n", 1)
    suite = suite.replace('name = "', f'name = "{args.benchmark} leaked as paraphrases; ', 1)
    (args.out / "suite.toml").write_text(suite)
    print(f"{len(rows)} {args.benchmark} test items paraphrased into {corpus}; suite: {args.out / 'suite.toml'}")
    return args.out / "suite.toml"


if __name__ == "__main__":
    main()
