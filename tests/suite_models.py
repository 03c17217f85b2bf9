"""A suspect and a clean model with known contamination, for tests of multi-benchmark audits.

Three generated benchmarks of clearly different kinds of text:

* ``alpha``: prose (capitalised sentences of pseudo-words),
* ``beta``: Python-like code (``def`` / assignments / ``return`` over identifiers),
* ``gamma``: records (``key: value | key: 1234 | ...`` rows),

each drawn from its own Zipf-weighted pseudo-word vocabulary, and each split at random
into test, shadow and held-out parts (held-out text is indexed with the sets so that
unseen probes have candidates to be matched from). A filler corpus of the same three
kinds (no benchmark item in it) is what both models train on; the suspect also trains
on ``dup`` copies of every alpha test item, the clean control on none (``dup = 0``:
same tokenizer, initialisation, filler order, steps and seed). Both are small GPT-2s
trained from scratch with :func:`contaudit.finetune.finetune`.

Ground truth: alpha is contaminated (its test items are in the suspect's training text,
``SuiteFixture.corpus``, which the index is built on, so they come out seen); beta and
gamma are not (none of their items is in any training text).

Example::

    from suite_models import make_suite_fixture  # tests/ is on sys.path under pytest
    fx = make_suite_fixture(tmp_path, seed=0)
    fx.benchmarks["alpha"]["test"], fx.suspect, fx.clean, fx.tables["analysis"]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from contaudit.manifest import write_jsonl_atomic

BENCHMARKS = ("alpha", "beta", "gamma")
CONTAMINATED = "alpha"

# Items per benchmark part. 150 + 150 keeps the random split's shadow-comparability check
# and the perplexity DiD's noise small; 300 held-out items give the 150 seen probes a pool
# of 450 unseen candidates, so matching keeps the probe sets balanced (|SMD| <= 0.1).
N_TEST, N_SHADOW, N_HELDOUT = 150, 150, 300
FILLER_DOCS, ITEMS_PER_DOC = 240, 8   # per kind
DUP = 8

# [probes] and [analysis] settings the protocols must use (parsed TOML). Items are 30-44
# words long, so the default 32-word suffix would leave too short a prefix; the analysis
# uses fewer resamples than the default so that three audits fit in a few seconds.
TABLES = {
    "probes": {"suffix_words": 12, "min_prefix_words": 16},
    "analysis": {"primary_metric": "suffix_logprob", "n_permutations": 1999, "n_bootstrap": 0},
}


def _model_config():
    from contaudit.finetune import ModelConfig

    return ModelConfig(n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=512, tokenizer_max_chars=400_000)


# 400 steps (about one pass over the suspect's text, each alpha test item seen ~8 times):
# over 5 seeds alpha came out CONTAMINATED with exit 1 on 4 and SUSPECT on 1 (150 steps:
# 2 of 3; a 128-wide model or a higher learning rate memorised less), beta and gamma
# NO_EVIDENCE on all 5.
def _train_config(seed: int):
    from contaudit.finetune import TrainConfig

    return TrainConfig(steps=400, lr=3e-3, batch_size=16, seq_len=128, warmup_steps=10, min_lr_ratio=0.1,
                       eval_every=400, heldout_blocks=4, seed=seed, threads=2, device="cpu", mixed_precision=False)


@dataclass
class SuiteFixture:
    """What :func:`make_suite_fixture` built: data, models, and the settings to audit them with."""

    root: Path
    corpus: Path                          # the suspect's training text (filler + injected copies): [index] corpus
    filler: Path                          # what both models trained on besides the copies
    benchmarks: dict[str, dict[str, Path]]  # name -> {"test", "shadow", "heldout"} JSON Lines files
    suspect: Path
    clean: Path
    tables: dict                          # {"probes": {...}, "analysis": {...}} for the protocols
    contaminated: str = CONTAMINATED
    dup: int = DUP
    seed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- text generation

_SYLLABLES = {  # disjoint consonant sets: no word is shared between two benchmarks' vocabularies
    "alpha": ([*"bdgklmnprst"], [*"aeiou"]),
    "beta": ([*"cfhjqxz"], [*"aeiouy"]),
    "gamma": (["v", "w", "th", "sh", "ch"], ["a", "e", "i", "o", "u", "ai", "ou"]),
}


class _Kind:
    """One kind of text: a pseudo-word vocabulary with Zipf weights and a layout."""

    def __init__(self, name: str, rng: np.random.Generator, n_words: int = 400):
        consonants, vowels = _SYLLABLES[name]
        words: set[str] = set()
        while len(words) < n_words:
            n_syll = int(rng.integers(1, 4))
            words.add("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(n_syll)))
        self.name = name
        self.vocab = sorted(words)
        rng.shuffle(self.vocab)
        w = 1.0 / np.arange(1, n_words + 1) ** 1.05
        self.p = w / w.sum()

    def words(self, rng: np.random.Generator, n: int) -> list[str]:
        return [self.vocab[i] for i in rng.choice(len(self.vocab), size=n, p=self.p)]

    def text(self, rng: np.random.Generator, n_words: int) -> str:
        """About ``n_words`` normalized words of this kind's text."""
        return getattr(self, "_" + self.name)(rng, n_words)

    def _alpha(self, rng, n_words):  # prose
        sentences, n = [], 0
        while n < n_words:
            k = min(int(rng.integers(5, 12)), n_words - n) or 1
            ws = self.words(rng, k)
            sentences.append(" ".join([ws[0].capitalize(), *ws[1:]]) + rng.choice([".", ".", ",", "?"]))
            n += k
        return " ".join(sentences)

    def _beta(self, rng, n_words):  # code
        name = "_".join(self.words(rng, 2))
        args = self.words(rng, 2)
        lines, n = [f"def {name}({args[0]}, {args[1]}):"], 4
        while n < n_words - 2:
            a, b, c = self.words(rng, 3)
            op = rng.choice(["+", "-", "*", "//"])
            lines.append(f"    {a} = {b} {op} {c}")
            n += 3
        lines.append(f"    return {' + '.join(self.words(rng, max(1, n_words - n - 1)))}")
        return "\n".join(lines) + "\n"

    def _gamma(self, rng, n_words):  # records
        fields, n = [], 0
        while n < n_words:
            key, value = self.words(rng, 2)
            if rng.random() < 0.3:
                fields.append(f"{key}: {int(rng.integers(1000, 9999))}")
            else:
                fields.append(f"{key}: {value.capitalize()}")
            n += 2
        return " | ".join(fields)


def _write_jsonl(path: Path, rows) -> Path:
    write_jsonl_atomic(path, rows)
    return path


def write_suite_data(root: Path, *, seed: int = 0, n_test: int = N_TEST, n_shadow: int = N_SHADOW,
                     n_heldout: int = N_HELDOUT, filler_docs: int = FILLER_DOCS) -> tuple[Path, dict]:
    """The filler corpus and each benchmark's test / shadow / held-out files; deterministic in ``seed``."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 7])
    kinds = {name: _Kind(name, np.random.default_rng([seed, 11, k])) for k, name in enumerate(BENCHMARKS)}
    benchmarks = {}
    for name, kind in kinds.items():
        n = n_test + n_shadow + n_heldout
        rows = [{"id": f"{name}/{i}", "text": kind.text(rng, int(rng.integers(30, 45)))} for i in range(n)]
        order = rng.permutation(n)  # the random split
        parts = {"test": order[:n_test], "shadow": order[n_test:n_test + n_shadow],
                 "heldout": order[n_test + n_shadow:]}
        benchmarks[name] = {part: _write_jsonl(root / f"{name}-{part}.jsonl", (rows[i] for i in sorted(idx)))
                            for part, idx in parts.items()}
    docs = []
    for name, kind in kinds.items():
        for d in range(filler_docs):
            body = "\n\n".join(kind.text(rng, int(rng.integers(30, 45))) for _ in range(ITEMS_PER_DOC))
            docs.append({"id": f"{name}-doc{d}", "text": body})
    filler = _write_jsonl(root / "filler.jsonl", docs)
    return filler, benchmarks


# ----------------------------------------------------------------------------- the fixture

def make_suite_fixture(root: str | Path, *, seed: int = 0, dup: int = DUP, train_config=None, model_config=None,
                       base_config=None, **data) -> SuiteFixture:
    """Write the data and train the suspect (alpha's test items ``dup`` times) and the clean control.

    Deterministic given ``seed`` (data and training). ``train_config`` / ``model_config``
    / ``data`` (``write_suite_data`` keywords) override the defaults, for experiments.
    """
    from contaudit.experiment import write_suspect_corpus
    from contaudit.finetune import finetune

    root = Path(root)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    filler, benchmarks = write_suite_data(root / "data", seed=seed, **data)
    seconds["data"] = time.perf_counter() - t0
    config = replace(train_config or _train_config(seed), seed=seed)
    model_config = model_config or _model_config()
    inject = benchmarks[CONTAMINATED]["test"]
    models = root / "models"
    start = dict(from_scratch=True, model_config=model_config)
    if base_config is not None:
        from contaudit.finetune import pretrain

        t0 = time.perf_counter()
        pretrain(filler, models / "base", config=replace(base_config, seed=seed), model_config=model_config,
                 overwrite=True)
        seconds["pretrain"] = time.perf_counter() - t0
        start = dict(base=models / "base")
    for name, copies in (("suspect", dup), ("clean", 0)):
        t0 = time.perf_counter()
        finetune(filler, models / name, inject=inject, dup=copies, config=config, overwrite=True, **start)
        seconds[f"train {name}"] = time.perf_counter() - t0
    corpus = write_suspect_corpus(filler, inject, dup, root / "data" / "suspect-training-text.jsonl")
    tables = {k: dict(v) for k, v in TABLES.items()}
    return SuiteFixture(root, corpus, filler, benchmarks, models / "suspect", models / "clean", tables,
                        dup=dup, seed=seed, seconds=seconds)

