"""``contaudit calibrate``: the audit's power and false-positive rate, measured on probe models.

In the demo setting (stdlib corpus, HumanEval test/shadow split, a base model pretrained
on the corpus) or in a user's own (:class:`CalibrationSetting`: base model, filler
corpus, test and shadow sets, fine-tuning settings), probe models are fine-tuned with
every test item injected ``k`` times, for each ``k`` in a grid and each seed, and each
is audited against its seed's own clean models (one clean control, or a reference panel
of several). At ``k = 0`` the "suspect" is itself a fresh clean model, so the share of
CONTAMINATED verdicts there is the false-positive rate over independent nulls. All
audits share one index and probe set: the corpus with the test items present, i.e. the
probes any contaminated model would be tested on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from contaudit.errors import InputError
from contaudit.manifest import write_json_atomic, write_text_atomic
from contaudit.metrics import METRICS
from contaudit.protocol import SHADOW_ORIGINS
from contaudit.calibrate.rates import clopper_pearson, detection_rates, n_at, run_record, summarize
from contaudit.calibrate.report import calibration_markdown, format_rate_p, plot_power_curve


@dataclass
class CalibrationResult:
    """Detection rates per k, the false-positive rate, and where the files are."""

    out: Path
    runs: list[dict]  # one per (k, seed): verdict, p-values, effects
    detection: dict[int, float]  # share of CONTAMINATED verdicts per k
    rates: dict[str, dict[int, float]]  # per k: CONTAMINATED, SUSPECT or higher, each primary test counting
    false_positive_rate: float | None
    smallest_detected_k: int | None  # smallest k > 0 with detection >= power target
    plot: Path


@dataclass(frozen=True)
class CalibrationSetting:
    """A user's own setting to calibrate in; absent, calibrate uses the demo's.

    ``base`` is a local Hugging Face model directory or a ``.gguf`` file; ``corpus`` the
    filler text fine-tuning trains on (any format ``finetune`` reads); ``test`` and
    ``shadow`` the benchmark sets (``test`` items are injected); ``train`` the
    fine-tuning settings (``TrainConfig(lora=True)`` for LoRA). ``reference_bases`` make
    the panel heterogeneous: each audit's clean models are the clean control (from
    ``base``) and one clean fine-tune of each of these bases (other shapes, tokenizers,
    pretraining), judged with ``references = "families"`` in per-byte units when the
    tokenizers differ: the setting of a real audit against public models of other families.
    """

    base: Path
    corpus: Path
    test: Path
    shadow: Path
    train: object = None  # contaudit.finetune.TrainConfig; None: the demo's fine-tuning settings
    shadow_origin: str = "later_set"
    reference_bases: tuple = ()

    def paths(self) -> "CalibrationSetting":
        """This setting with its files as paths (what :func:`calibrate` reads like the demo's prepared data)."""
        return replace(self, base=Path(self.base), corpus=Path(self.corpus), test=Path(self.test),
                       shadow=Path(self.shadow))

    def check(self) -> None:
        for name in ("base", "corpus", "test", "shadow"):
            path = Path(getattr(self, name))
            if not path.exists():
                raise InputError(f"the calibration's {name} does not exist", path=path)
        for path in self.reference_bases:
            if not Path(path).exists():
                raise InputError("the calibration's reference base does not exist", path=path)
        if self.reference_bases and len(self.reference_bases) < 2:
            raise InputError("a heterogeneous panel needs at least 2 reference bases (with the clean control, the "
                             "cross-family test needs 3 clean models); give --reference-base twice or more")
        if self.shadow_origin not in SHADOW_ORIGINS:
            raise InputError(f"`shadow_origin` must be one of {', '.join(SHADOW_ORIGINS)}; got {self.shadow_origin!r}")


def seed_of(seed: int, model: int) -> int:
    """Training seed of model ``model`` (0: the suspect or null suspect, 1..R: its references) of audit seed ``seed``.

    Every audit seed has its own models, so null audits at different seeds share nothing.
    """
    return 1000 * (seed + 1) + model


def calibrate(out: str | Path = "runs/calibration", *, dups: tuple[int, ...] = (0, 1, 2, 4, 8), seeds: int = 5,
              references: int = 1, setting: CalibrationSetting | None = None, config=None,
              analysis_protocol: str | Path | None = None, log: Callable[[str], None] = print) -> CalibrationResult:
    """Fine-tune probe models over ``dups`` x ``seeds``, audit each, and summarize.

    Each audit seed has its own ``references`` clean models (fresh training seeds, see
    :func:`seed_of`); the suspect at ``k = 0`` is one more clean model, so null audits
    are independent across seeds. ``setting`` calibrates in the user's own base model,
    corpus and sets; without it, in the demo's. ``analysis_protocol`` (optional) supplies
    the ``[probes]`` and ``[analysis]`` tables of the audits. Finished audits are reused.
    """
    from contaudit.audit import run_audit
    from contaudit.rundir import run_directory
    from contaudit.experiment import input_hashes, prepare, train_unless_done, write_protocol, write_suspect_corpus
    from contaudit.finetune import DemoTrainingConfig, finetune
    from contaudit.finetune.api import INJECTION_FILE
    from contaudit.models import fingerprint
    from contaudit.finetune.config import config_dict

    if not dups or any(k < 0 for k in dups):
        raise InputError(f"`dups` must be non-negative integers, got {dups}")
    if seeds < 1:
        raise InputError(f"`seeds` must be at least 1, got {seeds}")
    if references < 1:
        raise InputError(f"`references` must be at least 1 (the clean control), got {references}")
    config = config or DemoTrainingConfig()
    out = Path(out)
    tables = _protocol_tables(analysis_protocol)
    reference_bases = tuple(Path(b) for b in (setting.reference_bases if setting is not None else ()))
    if reference_bases and references != 1:
        raise InputError("with reference bases each audit's panel is the clean control plus one clean model per "
                         "base; leave `references` at 1")
    # Clean models from the probe model's base are its seed siblings (one recipe); with reference
    # bases the panel is of other families.
    design = "families" if reference_bases else "siblings"
    tables = {**tables, "analysis": {"references": design, **tables.get("analysis", {})}}
    with run_directory(out, "calibrate"):  # calibrate and calibrate --order share a folder
        if setting is None:
            data = prepare(out, config, log=log)
            train_base = replace(config.finetune, threads=config.threads)
            shadow_origin = "random_split"
        else:
            setting.check()
            data = setting.paths()
            train_base = setting.train or config.finetune
            shadow_origin = setting.shadow_origin
        models = out / "models"
        # One index for every audit: the corpus with the test items in it once.
        corpus_with_items = write_suspect_corpus(data.corpus, data.test, 1, out / "data" / "corpus-with-test.jsonl")

        check_largest_k_fits(data.base, data.test, max(dups), train_base)
        base_fingerprints = {b: fingerprint(b) for b in (data.base, *reference_bases)}
        data_hashes = input_hashes(corpus=data.corpus, benchmark=data.test)

        def model(name: str, k: int, train_seed: int, base: Path = data.base) -> tuple[Path, bool]:
            path = models / name
            train_config = replace(train_base, seed=train_seed)
            wanted = {"parameters": {"dup": k, "train": config_dict(train_config)},
                      "base": {"fingerprint": {"id": base_fingerprints[base]["id"]}}, "inputs": data_hashes}
            t0 = time.perf_counter()
            trained = train_unless_done(path, INJECTION_FILE, wanted, lambda s: None, finetune, data.corpus, path,
                                        base=base, inject=data.test, dup=k, overwrite=True, config=train_config)
            if trained:
                log(f"  trained {path.name} in {time.perf_counter() - t0:.0f} s")
            return path, trained

        runs = []
        for seed in range(seeds):
            refs = [model(f"clean-seed{seed}-ref{r}", 0, seed_of(seed, r)) for r in range(1, references + 1)]
            refs += [model(f"clean-seed{seed}-base{b}", 0, seed_of(seed, references + b), base=path)
                     for b, path in enumerate(reference_bases, 1)]
            refs_trained = any(t for _, t in refs)
            for k in dups:
                run_dir = out / "audits" / f"k{k}-seed{seed}"
                results_path = run_dir / "results.json"
                suspect, suspect_trained = model(f"k{k}-seed{seed}", k, seed_of(seed, 0))
                protocol_path = run_dir.with_suffix(".toml")
                before = protocol_path.read_text() if protocol_path.exists() else None
                protocol = write_protocol(protocol_path, name=f"calibration k={k} seed={seed}",
                                          description="probe model vs clean reference models", suspect=suspect,
                                          clean=refs[0][0], references=tuple(p for p, _ in refs[1:]),
                                          shadow_origin=shadow_origin, test=data.test, shadow=data.shadow,
                                          random_split=data.random_split if setting is None else None,
                                          index=out / "index", corpus=corpus_with_items,
                                          seed=analysis_seed(tables, seed), tables=tables)
                # The protocol names paths only: a model retrained before a kill keeps its path, so the
                # finished audit is reused only when it was made from these very models (fingerprints).
                current = (before == protocol.read_text() and _has_every_metric(results_path)
                           and audited_models_are(results_path, [suspect, *(p for p, _ in refs)]))
                if refs_trained or suspect_trained or not current:  # else reuse the audit
                    run_audit(protocol, run_dir)
                record = run_record(k, seed, json.loads(results_path.read_text()))
                runs.append(record)
                log(f"k={k} seed={seed}: {record['verdict']} (perplexity p={format_rate_p(record['perplexity_p'])}, "
                    f"memorization p={format_rate_p(record['memorization_p'])})")

        detection, fpr, smallest = summarize(runs)
        rates = detection_rates(runs)
        intervals = {name: {k: clopper_pearson(round(rate * n_at(runs, k)), n_at(runs, k)) for k, rate in by_k.items()}
                     for name, by_k in rates.items()}
        plot = plot_power_curve(detection, seeds, out / "power_curve.png", rates)
        write_json_atomic(out / "calibration.json", {
            "dups": list(dups), "seeds": seeds, "clean_models_per_audit": references + len(reference_bases),
            "references": design, "reference_bases": [str(b) for b in reference_bases], "shadow_origin": shadow_origin,
            "setting": None if setting is None else {k: str(v) for k, v in (("base", setting.base),
                                                                              ("corpus", setting.corpus),
                                                                              ("test", setting.test),
                                                                              ("shadow", setting.shadow))},
            "runs": runs, "detection": {str(k): v for k, v in detection.items()},
            "rates": {name: {str(k): v for k, v in by_k.items()} for name, by_k in rates.items()},
            "intervals_95": {name: {str(k): list(v) for k, v in by_k.items()} for name, by_k in intervals.items()},
            "false_positive_rate": fpr, "smallest_detected_k": smallest})
        write_text_atomic(out / "calibration.md",
                          calibration_markdown(detection, fpr, smallest, seeds, rates, intervals))
        return CalibrationResult(out, runs, detection, rates, fpr, smallest, plot)


def check_largest_k_fits(base: Path, test: Path, k: int, train_config) -> None:
    """Fail before any fine-tuning when ``k`` copies of the test items exceed the run's tokens.

    Counts tokens as the training stream does; with ``align_copies`` the stream may
    still refuse a k that passes here (copies must also fit the sequence slots).
    """
    from transformers import AutoTokenizer

    from contaudit.finetune.stream import copies_tokens, encode_texts
    from contaudit.io import load_items

    base = Path(base)
    tokenizer = (AutoTokenizer.from_pretrained(base.parent, gguf_file=base.name) if base.suffix.lower() == ".gguf"
                 else AutoTokenizer.from_pretrained(base))
    items = load_items(test)
    per_copy = copies_tokens(encode_texts(tokenizer, [it.text for it in items]), 1)
    room = train_config.tokens - 1  # the stream keeps at least one filler token
    if k * per_copy > room:
        raise InputError(f"k = {k} copies of the {len(items)} test items take {k * per_copy:,} tokens, more than a "
                         f"fine-tune trains on ({train_config.tokens:,} = steps x batch_size x seq_len); "
                         f"the largest k that fits is {room // per_copy}")


def audited_models_are(results_path: Path, models: list[Path]) -> bool:
    """Whether the audit at ``results_path`` scored exactly ``models`` (suspect, clean, references), by the
    fingerprints its results record; False for a missing or unreadable results file."""
    from contaudit.models import fingerprint

    try:
        recorded = json.loads(results_path.read_text())["design"]["models"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if len(recorded) != len(models):
        return False
    return all(entry.get("fingerprints") == [fingerprint(path)["id"]] for entry, path in zip(recorded, models))


def _has_every_metric(results_path: Path) -> bool:
    """True when an earlier audit's results carry every completion metric of this version."""
    try:
        mem = json.loads(results_path.read_text()).get("memorization_did") or {}
    except (OSError, ValueError):
        return False
    return all(mem.get(m) is not None for m in METRICS)


def _protocol_tables(path: str | Path | None) -> dict:
    """The [probes] and [analysis] tables of a protocol file (validated before any training), as parsed TOML."""
    from contaudit.protocol import load_setting_tables

    return {} if path is None else load_setting_tables(path, ("probes", "analysis"))


def analysis_seed(tables: dict, seed: int) -> int:
    """The analysis seed of audit seed ``seed``: the protocol's own seed (default
    :data:`~contaudit.experiment.DEMO_SEED`) plus ``seed``, so audits at different seeds draw apart."""
    from contaudit.experiment import DEMO_SEED

    return int(tables.get("analysis", {}).get("seed", DEMO_SEED)) + seed
