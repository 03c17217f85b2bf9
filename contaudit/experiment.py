"""Experiments with probe models whose contamination is known: what ``demo`` and ``calibrate`` share.

* :func:`prepare`: the demo's data (stdlib corpus, HumanEval split) and pretrained base;
* :func:`train_unless_done`: train a model unless one trained the same way is there;
* :func:`finetune_from_base`: a suspect or clean model fine-tuned from that base;
* :func:`write_suspect_corpus`: the text a suspect trained on (corpus + injected copies);
* :func:`write_protocol`: an audit protocol for a suspect, its clean models and the sets,
  written with a real TOML writer;
* :func:`timed`: run a stage, record its wall time and log it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from contaudit import progress
from contaudit.errors import InputError
from contaudit.io import contaudit_manifest
from contaudit.manifest import write_text_atomic

# The memorization test's score in the demo and calibration: each seen/unseen suffix's
# mean log-probability given the prefix. The demo's 4-million-parameter models never
# reproduce a 32-word suffix verbatim (exact match stays 0 even at 64 copies,
# docs/finetune.md), while the calibration in this setting (README, "Calibration") shows
# the log-prob test has power at k >= 4 copies with no false positive at k = 0.
DEMO_PRIMARY_METRIC = "suffix_logprob"
# The analysis seed of the demo's audits; calibration audit seed s uses DEMO_SEED + s.
DEMO_SEED = 20240601


def timed(seconds: dict, log: Callable[[str], None], name: str, fn, /, *args, **kwargs):
    """Run ``fn``, record (in ``seconds[name]``) and log how long it took."""
    result = progress.timed(seconds, name, fn, *args, **kwargs)
    overall = f"  {seconds.overall()}" if isinstance(seconds, progress.StageClock) else ""
    log(f"{name}: {seconds[name]:.1f} s{overall}")
    return result


def write_protocol(path: Path, *, name: str, description: str, suspect: Path, clean: Path, test: Path,
                   shadow: Path, index: Path, corpus: Path, seed: int = DEMO_SEED, references: tuple[Path, ...] = (),
                   shadow_origin: str = "random_split", tables: dict | None = None,
                   random_split: dict | None = None) -> Path:
    """Write an audit protocol for these models and sets; return its path.

    ``tables`` holds ``[probes]`` / ``[analysis]`` settings (parsed TOML) to use instead of
    the defaults, and ``[outcomes]`` when the audit is to estimate the score inflation; the ``[analysis]`` seed is always ``seed``, so each caller sets it in
    one place. The HumanEval halves of the demo are a random split (``shadow_origin``);
    ``references`` are more clean models (``[[models.reference]]``). With ``random_split``
    (``{"path", "seed", "test_fraction"}``) the sets are that ``[sets.random_split]``, which
    contaudit re-derives and verifies, instead of ``test`` and ``shadow``. Paths are written
    absolute, since a protocol's paths resolve against its own folder.
    """
    import tomli_w

    tables = tables or {}
    protocol = {
        "name": name, "description": description,
        "models": {"suspect": {"path": _abs(suspect)}, "clean": {"path": _abs(clean)},
                   **({"reference": [{"path": _abs(r)} for r in references]} if references else {})},
        "sets": ({"random_split": {**random_split, "path": _abs(random_split["path"])}} if random_split else
                 {"shadow_origin": shadow_origin, "test": {"path": _abs(test)}, "shadow": {"path": _abs(shadow)}}),
        "index": {"path": _abs(index), "corpus": [_abs(corpus)]},
        **({"probes": dict(tables["probes"])} if tables.get("probes") else {}),
        "analysis": {"primary_metric": DEMO_PRIMARY_METRIC, **tables.get("analysis", {}), "seed": seed},
        **({"outcomes": dict(tables["outcomes"])} if tables.get("outcomes") else {}),
    }
    write_text_atomic(path, "# Written by contaudit (demo / calibrate).\n" + tomli_w.dumps(protocol))
    return path


def _abs(path) -> str:
    return str(Path(path).resolve())


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


def train_unless_done(path: Path, manifest_name: str, wanted: dict, log, fn, *args, **kwargs) -> bool:
    """Run a training function unless ``path`` already holds a model trained as ``wanted`` says.

    Returns True when it trained.
    ``wanted`` maps manifest sections to the values they must hold (training settings,
    base model fingerprint; ``inputs`` maps a role to its file's SHA-256), so a model
    left by an earlier run with other settings, other data or another base is
    retrained rather than silently reused.
    """
    manifest = path / manifest_name
    if path.is_dir() and any(path.iterdir()) and contaudit_manifest(manifest) is None:
        # Training replaces the directory: never one contaudit did not write (a user's model, say).
        raise InputError(f"holds files contaudit did not write (no {manifest_name} of a contaudit training); "
                         f"training here would replace them: move them, or choose another output folder", path=path)
    if manifest.exists():
        try:
            recorded = json.loads(manifest.read_text())
            recorded["inputs"] = {i.get("role"): i.get("sha256") for i in recorded.get("inputs") or []}
        except (OSError, ValueError, AttributeError, TypeError):
            recorded = {}
        if _holds(recorded, wanted):
            log(f"  reusing {path}")
            return False
        log(f"  {path} was trained with other settings or data: training it again")
    fn(*args, **kwargs)
    return True


def _holds(recorded, wanted) -> bool:
    """Whether a recorded manifest value holds what is wanted: a wanted dict only its own keys (a base
    model wanted by its fingerprint's ``id`` matches wherever that model lay), anything else equal."""
    if isinstance(wanted, dict):
        return isinstance(recorded, dict) and all(_holds(recorded.get(k), v) for k, v in wanted.items())
    return recorded == wanted


def input_hashes(**paths: Path) -> dict[str, str]:
    """SHA-256 of each file by its manifest role, for :func:`train_unless_done`."""
    from contaudit.manifest import describe_path

    return {role: describe_path(p)["sha256"] for role, p in paths.items()}


def finetune_from_base(name: str, path: Path, *, prepared: PreparedData, config, dup: int, seed: int, seconds: dict,
                       log=print, train_progress=None) -> None:
    """Fine-tune ``prepared.base`` on the corpus with the test items injected ``dup`` times (unless done).

    ``prepared`` is what :func:`prepare` returned; ``config`` a ``DemoTrainingConfig``.
    A model already at ``path`` trained the same way (settings, base, data) is reused.
    """
    from contaudit.finetune import finetune
    from contaudit.finetune.api import INJECTION_FILE
    from contaudit.finetune.config import ItemSelection, config_dict

    base = prepared.base
    suspect = dup > 0 and config.suspect_finetune is not None
    cfg = with_seed(config.suspect_finetune if suspect else config.finetune, seed, config.threads)
    answer_field = config.answer_field if dup > 0 else None
    wanted = {"parameters": {"dup": dup, "train": config_dict(cfg), "answer_field": answer_field},
              **prepared.finetune_from}
    timed(seconds, log, name, train_unless_done, path, INJECTION_FILE, wanted, log, finetune, prepared.corpus,
          path, base=base, inject=prepared.test, dup=dup, items=ItemSelection(answer_field=answer_field),
          config=cfg, overwrite=True, progress=train_progress)


def with_seed(train_config, seed: int, threads: int | None):
    """``train_config`` with this training seed and thread count."""
    return replace(train_config, seed=seed, threads=threads)


@dataclass(frozen=True)
class PreparedData:
    """The data and base model every probe-model experiment starts from (:func:`prepare`)."""

    corpus: Path  # the stdlib corpus (filler of every fine-tune)
    test: Path  # the HumanEval test split
    shadow: Path  # and its shadow split
    base: Path  # the pretrained base model
    n_test: int
    n_shadow: int
    finetune_from: dict  # the base's fingerprint and the data's hashes, as a fine-tune's manifest records them
    random_split: dict  # the [sets.random_split] that re-derives test and shadow


def prepare(out: Path, config, *, log=print, seconds: dict | None = None, train_progress=None) -> PreparedData:
    """The demo's data and base model: stdlib corpus, HumanEval split, pretrained base (each reused
    when present); the fingerprint and hashes a fine-tune records are computed once here."""
    from contaudit.corpora import write_humaneval_split, write_stdlib_corpus
    from contaudit.finetune import pretrain
    from contaudit.finetune.api import PRETRAIN_FILE
    from contaudit.finetune.config import config_dict
    from contaudit.models import fingerprint

    seconds = seconds if seconds is not None else {}
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)

    def stage(name: str, fn, /, *args, **kwargs):
        return timed(seconds, log, name, fn, *args, **kwargs)

    corpus = data / "stdlib.jsonl"
    stats = stage("corpus", write_stdlib_corpus, corpus)
    log(f"  stdlib corpus: {stats.read} files ({stats.skipped} skipped), {corpus.stat().st_size / 1e6:.1f} MB")
    split = stage("benchmark", write_humaneval_split, data, seed=config.split_seed)
    log(f"  HumanEval: {split['n_test']} test / {split['n_shadow']} shadow items (split seed {config.split_seed})")
    base = out / "models" / "base"
    pretrain_config = with_seed(config.pretrain, 0, config.threads)
    wanted = {"parameters": {"train": config_dict(pretrain_config)}, "base": {"model_config": config_dict(config.model)},
              "inputs": input_hashes(corpus=corpus)}
    stage("pretrain", train_unless_done, base, PRETRAIN_FILE, wanted, log, pretrain,
          corpus, base, config=pretrain_config, model_config=config.model, overwrite=True, progress=train_progress)
    finetune_from = {"base": {"fingerprint": {"id": fingerprint(base)["id"]}},  # its content, not its folder
                     "inputs": input_hashes(corpus=corpus, benchmark=split["test"])}
    return PreparedData(corpus=corpus, test=split["test"], shadow=split["shadow"], base=base,
                        n_test=split["n_test"], n_shadow=split["n_shadow"], finetune_from=finetune_from,
                        random_split={"path": split["all"], "seed": split["seed"],
                                      "test_fraction": split["test_fraction"]})
