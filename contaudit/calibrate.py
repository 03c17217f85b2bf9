"""``contaudit calibrate``: measure the audit's power and false-positive rate.

In the demo setting (stdlib corpus, HumanEval test/shadow split, a base model pretrained
on the corpus) or in a user's own (:class:`CalibrationSetting`: base model, filler
corpus, test and shadow sets, fine-tuning settings), probe models are fine-tuned with
every test item injected ``k`` times, for each ``k`` in a grid and each seed, and each
is audited against its seed's own clean models (one clean control, or a reference panel
of several). At ``k = 0`` the "suspect" is itself a fresh clean model, so the share of
CONTAMINATED verdicts there is the false-positive rate over independent nulls. Rates
come with exact (Clopper-Pearson) intervals. All audits share one index and probe set:
the corpus with the test items present, i.e. the probes any contaminated model would be
tested on.

:func:`calibrate_order` (``contaudit calibrate --order``) measures Oren et al.'s order test
the same way, on the suspect alone: its power per k for a benchmark leaked as an ordered
file and for per-item leaks, and its false-positive rate over independent clean models.
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


def summarize(runs: list[dict], *, power: float = 0.8) -> tuple[dict[int, float], float | None, int | None]:
    """Detection rate per k, the false-positive rate at k = 0, and the smallest k with power >= ``power``."""
    detection = {}
    for k in sorted({r["k"] for r in runs}):
        verdicts = [r["verdict"] for r in runs if r["k"] == k]
        detection[k] = sum(v == "CONTAMINATED" for v in verdicts) / len(verdicts)
    fpr = detection.get(0)
    detected = [k for k, rate in detection.items() if k > 0 and rate >= power]
    return detection, fpr, (min(detected) if detected else None)


RATE_LABELS = {
    "contaminated": "verdict CONTAMINATED",
    "suspect_or_higher": "verdict SUSPECT or CONTAMINATED",
    "perplexity_test": "perplexity DiD test counts",
    "memorization_test": "memorization DiD test counts",
    "inconclusive": "verdict INCONCLUSIVE (the design cannot hold its error rate)",
}


def detection_rates(runs: list[dict]) -> dict[str, dict[int, float]]:
    """Per k, the share of runs with each outcome in :data:`RATE_LABELS`.

    A primary test "counts" as the verdict rule says: Holm-adjusted significant, in the
    contamination direction and above the protocol's minimum effect.
    """
    hits = {
        "contaminated": lambda r: r["verdict"] == "CONTAMINATED",
        "suspect_or_higher": lambda r: r["verdict"] in ("SUSPECT", "CONTAMINATED"),
        "perplexity_test": lambda r: bool(r.get("perplexity_counts")),
        "memorization_test": lambda r: bool(r.get("memorization_counts")),
        "inconclusive": lambda r: r["verdict"] == "INCONCLUSIVE",
    }
    metrics = sorted({m for r in runs for m in r.get("if_primary", {})}, key=_metric_order)
    for m in metrics:
        hits[f"memorization_test[{m}]"] = lambda r, m=m: bool(r.get("if_primary", {}).get(m, {}).get(
            "memorization_counts"))
        hits[f"contaminated[{m}]"] = lambda r, m=m: bool(r.get("if_primary", {}).get(m, {}).get("contaminated"))
    ks = sorted({r["k"] for r in runs})
    return {name: {k: sum(map(hit, [r for r in runs if r["k"] == k])) / sum(r["k"] == k for r in runs) for k in ks}
            for name, hit in hits.items()}


def _metric_order(metric: str) -> int:
    return list(METRICS).index(metric) if metric in METRICS else len(METRICS)


def rate_label(name: str) -> str:
    """Readable label of a rate from :func:`detection_rates`."""
    if name in RATE_LABELS:
        return RATE_LABELS[name]
    kind, metric = name.rstrip("]").split("[")
    return (f"memorization DiD on {metric} counts" if kind == "memorization_test"
            else f"CONTAMINATED with {metric} primary")


def plot_power_curve(detection: dict[int, float], n_seeds: int, path: Path,
                     rates: dict[str, dict[int, float]] | None = None) -> Path:
    """Detection rate against k (log2 axis), with the false-positive rate at k = 0.

    ``rates`` (from :func:`detection_rates`) adds a line per outcome besides the verdict.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(detection)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    pos = [k if k > 0 else 0.5 for k in ks]
    for name, style in (("suspect_or_higher", "s--"), ("perplexity_test", "^:"), ("memorization_test", "v:")):
        if rates and name in rates:
            ax.plot(pos, [rates[name][k] for k in ks], style, label=RATE_LABELS[name], alpha=0.8)
    ax.plot(pos, [detection[k] for k in ks], marker="o", color="#1f5fa8", label=RATE_LABELS["contaminated"])
    if rates:
        ax.legend(fontsize=7, loc="center right")
    ax.axhline(0.8, color="#999", linestyle="--", linewidth=1)
    ax.text(pos[-1], 0.81, "power 0.8", ha="right", va="bottom", fontsize=8, color="#666")
    ax.set_xscale("log", base=2)
    ax.set_xticks(pos, [str(k) for k in ks])
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("copies of each test item injected (k)")
    ax.set_ylabel("share of audits")
    ax.set_title(f"Audit power by contamination level ({n_seeds} seeds per k)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def if_primary(results: dict) -> dict[str, dict]:
    """For each completion metric: would the verdict be CONTAMINATED were it the primary one?

    Applies the verdict rule to the recorded p-values and estimates: Holm over the
    perplexity test and that metric's memorization test, the contamination direction,
    the protocol's minimum effects, and no failed design check. This compares the
    metrics' power at the same false-positive control, from the same audits.
    """
    from contaudit.statistics import holm
    from contaudit.analysis.verdict import CONTAMINATED, primary_test_counts, rule_label

    settings = results["protocol"]["analysis"]
    ppl = results.get("perplexity_did") or {}
    design_ok = (not any(c.get("passed") is False for c in results.get("design_checks", []))
                 and not (results.get("design") or {}).get("inconclusive"))
    out = {}
    for metric, mem in (results.get("memorization_did") or {}).items():
        if metric == "primary_metric" or not mem or ppl.get("pvalue") is None or mem.get("pvalue") is None:
            continue
        p_ppl, p_mem = holm([ppl["pvalue"], mem["pvalue"]])
        ppl_counts = primary_test_counts(ppl["estimate"], p_ppl, direction="negative",
                                         min_effect=settings["min_effect_perplexity"], alpha=settings["alpha"],
                                         interval=tuple(ppl.get("confidence_interval") or (None, None)))
        mem_counts = primary_test_counts(mem["estimate"], p_mem, direction="positive",
                                         min_effect=settings["min_effect_memorization"], alpha=settings["alpha"],
                                         interval=tuple(mem.get("confidence_interval") or (None, None)))
        contaminated = design_ok and rule_label(ppl_counts + mem_counts, CONTAMINATED) == CONTAMINATED
        out[metric] = {"memorization_counts": mem_counts, "contaminated": contaminated,
                       "did": mem["estimate"], "p": mem["pvalue"]}
    return out


def _run_record(k: int, seed: int, results: dict) -> dict:
    record = {"k": k, "seed": seed, "verdict": results["verdict"]["label"]}
    counts = {t.get("name"): t.get("counts") for t in results["verdict"].get("tests", [])}
    record["perplexity_counts"] = counts.get("perplexity_did")
    record["memorization_counts"] = counts.get("memorization_did")
    mem = results.get("memorization_did") or {}
    primary = mem.get(mem.get("primary_metric") or "", {}) if mem else {}
    for name, test in (("perplexity", results.get("perplexity_did") or {}), ("memorization", primary or {})):
        record[f"{name}_did"] = test.get("estimate")
        record[f"{name}_p"] = test.get("pvalue")
    if "protocol" in results:
        record["if_primary"] = if_primary(results)
    return record


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


def clopper_pearson(hits: int, n: int, confidence_level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a rate; ``(0, 1)`` when ``n`` is 0."""
    from scipy import stats

    if n == 0:
        return 0.0, 1.0
    ci = stats.binomtest(hits, n).proportion_ci(confidence_level=confidence_level, method="exact")
    return float(ci.low), float(ci.high)


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
    if setting is None:
        data = prepare(out, config, log=log)
        train_base = replace(config.finetune, threads=config.threads)
        shadow_origin = "random_split"
    else:
        setting.check()
        data = {"corpus": Path(setting.corpus), "test": Path(setting.test), "shadow": Path(setting.shadow),
                "base": Path(setting.base)}
        train_base = setting.train or config.finetune
        shadow_origin = setting.shadow_origin
    models = out / "models"
    # One index for every audit: the corpus with the test items in it once.
    corpus_with_items = write_suspect_corpus(data["corpus"], data["test"], 1, out / "data" / "corpus-with-test.jsonl")

    _check_largest_k_fits(data, max(dups), train_base)
    base_fingerprints = {b: fingerprint(b) for b in (data["base"], *reference_bases)}
    data_hashes = input_hashes(corpus=data["corpus"], benchmark=data["test"])

    def model(name: str, k: int, train_seed: int, base: Path = data["base"]) -> tuple[Path, bool]:
        path = models / name
        train_config = replace(train_base, seed=train_seed)
        wanted = {"parameters": {"dup": k, "train": config_dict(train_config)},
                  "base": {"fingerprint": base_fingerprints[base]}, "inputs": data_hashes}
        t0 = time.perf_counter()
        trained = train_unless_done(path, INJECTION_FILE, wanted, lambda s: None, finetune, data["corpus"], path,
                                    base=base, inject=data["test"], dup=k, overwrite=True, config=train_config)
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
                                      shadow_origin=shadow_origin, test=data["test"], shadow=data["shadow"],
                                      random_split=data.get("random_split"),
                                      index=out / "index", corpus=corpus_with_items,
                                      seed=analysis_seed(tables, seed), tables=tables)
            current = before == protocol.read_text() and _has_every_metric(results_path)
            if refs_trained or suspect_trained or not current:  # else reuse the audit
                run_audit(protocol, run_dir)
            record = _run_record(k, seed, json.loads(results_path.read_text()))
            runs.append(record)
            log(f"k={k} seed={seed}: {record['verdict']} (perplexity p={_fmt(record['perplexity_p'])}, "
                f"memorization p={_fmt(record['memorization_p'])})")

    detection, fpr, smallest = summarize(runs)
    rates = detection_rates(runs)
    intervals = {name: {k: clopper_pearson(round(rate * _n_at(runs, k)), _n_at(runs, k)) for k, rate in by_k.items()}
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
    write_text_atomic(out / "calibration.md", calibration_markdown(detection, fpr, smallest, seeds, rates, intervals))
    return CalibrationResult(out, runs, detection, rates, fpr, smallest, plot)


def _n_at(runs: list[dict], k: int) -> int:
    return sum(r["k"] == k for r in runs)


def calibration_markdown(detection: dict[int, float], fpr: float | None, smallest: int | None, seeds: int,
                    rates: dict[str, dict[int, float]] | None = None,
                    intervals: dict[str, dict[int, tuple[float, float]]] | None = None) -> str:
    """The calibration table as Markdown (with the plot beside it)."""
    extra = [name for name in ("suspect_or_higher", "perplexity_test", "memorization_test") if rates and name in rates]
    lines = ["# Calibration", "", f"{seeds} seeds per k; verdict CONTAMINATED counts as detected.", "",
             "| k (copies) | detection rate |" + "".join(f" {RATE_LABELS[n]} |" for n in extra),
             "| ---: | ---: |" + " ---: |" * len(extra)]
    def cell(name: str, k: int, rate: float) -> str:
        ci = (intervals or {}).get(name, {}).get(k)
        return f"{rate:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{rate:.2f}"

    lines += [f"| {k} | {cell('contaminated', k, rate)} |" + "".join(f" {cell(n, k, rates[n][k])} |" for n in extra)
              for k, rate in detection.items()]
    if intervals:
        lines += ["", "Brackets: exact (Clopper-Pearson) 95 % intervals of each rate."]
    by_metric = [name for name in (rates or {}) if "[" in name]
    if by_metric:
        lines += ["", "Each completion metric as if it were the primary one (same audits, same Holm correction "
                  "and minimum effects):", "",
                  "| k (copies) |" + "".join(f" {rate_label(n)} |" for n in by_metric),
                  "| ---: |" + " ---: |" * len(by_metric)]
        lines += [f"| {k} |" + "".join(f" {rates[n][k]:.2f} |" for n in by_metric) for k in detection]
    lines += ["", f"False-positive rate at k = 0: {fpr:.2f}" if fpr is not None else "No k = 0 runs.",
              f"Smallest k detected with power >= 0.8: {smallest}" if smallest is not None else
              "No k reached power 0.8.", "", "![power curve](power_curve.png)", ""]
    return "\n".join(lines)


def _check_largest_k_fits(data: dict, k: int, train_config) -> None:
    """Fail before any fine-tuning when ``k`` copies of the test items exceed the run's tokens.

    Counts tokens as the training stream does; with ``align_copies`` the stream may
    still refuse a k that passes here (copies must also fit the sequence slots).
    """
    from transformers import AutoTokenizer

    from contaudit.finetune.stream import copies_tokens, encode_texts
    from contaudit.io import load_items

    base = Path(data["base"])
    tokenizer = (AutoTokenizer.from_pretrained(base.parent, gguf_file=base.name) if base.suffix.lower() == ".gguf"
                 else AutoTokenizer.from_pretrained(base))
    items = load_items(data["test"])
    per_copy = copies_tokens(encode_texts(tokenizer, [it.text for it in items]), 1)
    room = train_config.tokens - 1  # the stream keeps at least one filler token
    if k * per_copy > room:
        raise InputError(f"k = {k} copies of the {len(items)} test items take {k * per_copy:,} tokens, more than a "
                         f"fine-tune trains on ({train_config.tokens:,} = steps x batch_size x seq_len); "
                         f"the largest k that fits is {room // per_copy}")


def _has_every_metric(results_path: Path) -> bool:
    """True when an earlier audit's results carry every completion metric of this version."""
    try:
        mem = json.loads(results_path.read_text()).get("memorization_did") or {}
    except (OSError, ValueError):
        return False
    return all(mem.get(m) is not None for m in METRICS)


def _fmt(p) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def _protocol_tables(path: str | Path | None) -> dict:
    """The [probes] and [analysis] tables of a protocol file (validated before any training), as parsed TOML."""
    from contaudit.protocol import load_setting_tables

    return {} if path is None else load_setting_tables(path, ("probes", "analysis"))


def analysis_seed(tables: dict, seed: int) -> int:
    """The analysis seed of audit seed ``seed``: the protocol's own seed (default
    :data:`~contaudit.experiment.DEMO_SEED`) plus ``seed``, so audits at different seeds draw apart."""
    from contaudit.experiment import DEMO_SEED

    return int(tables.get("analysis", {}).get("seed", DEMO_SEED)) + seed


# --- the order test (Oren et al. 2023): power per k for ordered and per-item leaks ---------

LEAK_KINDS = ("ordered", "per_item")
LEAK_LABELS = {"ordered": "ordered leak (the benchmark file, k copies)",
               "per_item": "per-item leak (each item k times, random places)"}


@dataclass
class OrderCalibrationResult:
    """The order test's detection rate per leak kind and k, and its false-positive rate at k = 0."""

    out: Path
    runs: list[dict]  # one per model: kind, k, seed, estimate, p-value, detected
    rates: dict[str, dict[int, float]]  # kind -> k -> share of models where the test rejects
    intervals: dict[str, dict[int, tuple[float, float]]]
    false_positive_rate: float | None
    plot: Path


def order_rates(runs: list[dict]) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, tuple[float, float]]]]:
    """Per leak kind and k, the share of models where the order test rejects, with exact 95 % intervals.

    The k = 0 runs (clean models: no leak of either kind) are every kind's k = 0.
    """
    rates: dict[str, dict[int, float]] = {}
    intervals: dict[str, dict[int, tuple[float, float]]] = {}
    null = [r for r in runs if r["k"] == 0]
    for kind in [k for k in LEAK_KINDS if any(r["kind"] == k for r in runs)] or ["ordered"]:
        by_k = {0: null} if null else {}
        for r in runs:
            if r["kind"] == kind and r["k"] > 0:
                by_k.setdefault(r["k"], []).append(r)
        rates[kind] = {k: sum(r["detected"] for r in rs) / len(rs) for k, rs in sorted(by_k.items())}
        intervals[kind] = {k: clopper_pearson(sum(r["detected"] for r in rs), len(rs)) for k, rs in sorted(by_k.items())}
    return rates, intervals


def plot_order_power(rates: dict[str, dict[int, float]], intervals: dict[str, dict[int, tuple[float, float]]],
                     counts: dict[str, dict[int, int]], path: Path, *, alpha: float) -> Path:
    """Detection rate of the order test against k for each leak kind, with exact 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    styles = {"ordered": ("o-", "#b42318"), "per_item": ("s--", "#1f5fa8")}
    for n, (kind, by_k) in enumerate(rates.items()):
        ks = sorted(by_k)
        pos = [(k if k > 0 else 0.5) * (1 + 0.04 * n) for k in ks]
        marker, color = styles.get(kind, ("^:", "#444"))
        lows = [by_k[k] - intervals[kind][k][0] for k in ks]
        highs = [intervals[kind][k][1] - by_k[k] for k in ks]
        ax.errorbar(pos, [by_k[k] for k in ks], yerr=[lows, highs], fmt=marker, color=color, capsize=3,
                    label=LEAK_LABELS.get(kind, kind), alpha=0.9)
    ks = sorted({k for by_k in rates.values() for k in by_k})
    ax.axhline(alpha, color="#999", linestyle=":", linewidth=1)
    ax.text(ks[-1] if ks[-1] > 0 else 0.5, alpha + 0.02, f"alpha = {alpha}", fontsize=8, color="#666", ha="right")
    ax.set_xscale("log", base=2)
    ax.set_xticks([k if k > 0 else 0.5 for k in ks], [str(k) for k in ks])
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("copies leaked (k; k = 0: clean models)")
    ax.set_ylabel("share of models where the test rejects")
    n_null = next((c[0] for c in counts.values() if 0 in c), 0)
    n_leak = max((n for c in counts.values() for k, n in c.items() if k > 0), default=0)
    ax.set_title(f"Order test power ({n_null} clean models at k = 0, {n_leak} per leak k)", fontsize=10)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def order_calibration_markdown(runs: list[dict], rates, intervals, *, alpha: float, settings: dict) -> str:
    """The order-test calibration as Markdown (the plot beside it)."""
    lines = ["# Order-test calibration", "",
             f"Oren et al.'s order test (one-sided exact stratified randomisation test, alpha = {alpha}) on each model; a model counts "
             f"as detected when p <= alpha with the published order more likely. Settings: {settings['shards']} "
             f"shards, {settings['permutations']} permutations, separator {settings['separator']!r}.", "",
             "| leak | k | models | detection rate [95 % CI] | median gap (nats/shard) | median p |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for n, (kind, by_k) in enumerate(rates.items()):
        for k, rate in by_k.items():
            if k == 0 and n:  # the clean models are every kind's k = 0: one row
                continue
            rs = [r for r in runs if r["k"] == k and (k == 0 or r["kind"] == kind)]
            low, high = intervals[kind][k]
            est = sorted(r["estimate"] for r in rs)[len(rs) // 2]
            p = sorted(r["pvalue"] for r in rs)[len(rs) // 2]
            lines.append(f"| {'none (clean)' if k == 0 else kind} | {k} | {len(rs)} | {rate:.2f} [{low:.2f}, "
                         f"{high:.2f}] | {est:+.2f} | {p:.3g} |")
    null = [r for r in runs if r["k"] == 0]
    if null:
        hits = sum(r["detected"] for r in null)
        low, high = clopper_pearson(hits, len(null))
        lines += ["", f"False-positive rate at k = 0: {hits}/{len(null)} = {hits / len(null):.2f} "
                      f"[{low:.2f}, {high:.2f}] (p-values {min(r['pvalue'] for r in null):.3g} to "
                      f"{max(r['pvalue'] for r in null):.3g})."]
    lines += ["", "![order-test power](order_power_curve.png)", ""]
    return "\n".join(lines)


def calibrate_order(out: str | Path = "runs/order-calibration", *, dups: tuple[int, ...] = (0, 1, 2, 4, 8),
                    seeds: int = 5, null_seeds: int = 20, kinds: tuple[str, ...] = LEAK_KINDS,
                    setting: CalibrationSetting | None = None, config=None, order=None, scoring=None,
                    protocol: str | Path | None = None, models_from: str | Path | None = None,
                    log: Callable[[str], None] = print) -> OrderCalibrationResult:
    """Measure the order test's power per k for ordered and per-item leaks, and its false-positive rate.

    For each leak kind in ``kinds`` and each k > 0 in ``dups``, ``seeds`` probe models are
    fine-tuned with the test set leaked k times that way (``ordered``: the whole test
    file in published order; ``per_item``: each item at random places, as
    :func:`calibrate` does); at k = 0, ``max(seeds, null_seeds)`` clean fine-tunes, each
    with its own training seed (independent nulls). Each model's order statistic is
    computed on the test set (:func:`contaudit.scoring.item_order.item_order_scores`,
    permutation seed ``[analysis] seed + seed``) and tested at the protocol's alpha.
    Models and scores are reused on a rerun; per-item and clean models are shared with
    :func:`calibrate` in the same ``out``; ``models_from`` (the ``models`` folder of an
    earlier calibration in the same setting) supplies such models as they are, when
    their ``injection.json`` records the same k, leak kind, training seed, benchmark and
    filler. ``protocol`` supplies ``[analysis]``
    (alpha, seed) and ``[item_order]`` (shards, permutations, separator); ``order`` and
    ``scoring`` (:class:`~contaudit.config.ItemOrderConfig`,
    :class:`~contaudit.config.ScoreSettings`) override them.
    """
    from contaudit.config import AnalysisSettings, ItemOrderConfig, ScoreSettings
    from contaudit.experiment import DEMO_SEED, input_hashes, prepare
    from contaudit.finetune import DemoTrainingConfig
    from contaudit.models import fingerprint
    from contaudit.scoring.item_order import item_order_scores

    if not dups or any(k < 0 for k in dups):
        raise InputError(f"`dups` must be non-negative integers, got {dups}")
    if seeds < 1 or null_seeds < 0:
        raise InputError(f"`seeds` must be at least 1 and `null_seeds` at least 0; got {seeds} and {null_seeds}")
    unknown = [k for k in kinds if k not in LEAK_KINDS]
    if unknown or not kinds:
        raise InputError(f"`kinds` must be some of {', '.join(LEAK_KINDS)}; got {', '.join(kinds) or 'none'}")
    tables = {} if protocol is None else _order_tables(protocol)
    analysis = AnalysisSettings(**{k: v for k, v in tables.get("analysis", {}).items()
                                   if k in ("alpha", "seed", "confidence_level")})
    if order is None:
        order = ItemOrderConfig(**tables.get("item_order", {}))
    order.validate()
    scoring = scoring or ScoreSettings()
    config = config or DemoTrainingConfig()
    out = Path(out)
    if setting is None:
        data = prepare(out, config, log=log)
        train_base = replace(config.finetune, threads=config.threads)
    else:
        setting.check()
        data = {"corpus": Path(setting.corpus), "test": Path(setting.test), "base": Path(setting.base)}
        train_base = setting.train or config.finetune
    if max(dups):
        _check_largest_k_fits(data, max(dups), train_base)
    base_fingerprint = fingerprint(data["base"])
    data_hashes = input_hashes(corpus=data["corpus"], benchmark=data["test"])
    first_seed = tables.get("analysis", {}).get("seed", DEMO_SEED)

    plan = [("none", 0, s) for s in range(max(seeds, null_seeds))] if 0 in dups else []
    plan += [(kind, k, s) for kind in kinds for k in dups if k > 0 for s in range(seeds)]
    runs = []
    for kind, k, seed in plan:
        name = f"k{k}-seed{seed}" if kind in ("none", "per_item") else f"ordered-k{k}-seed{seed}"
        leak = "per_item" if kind == "none" else kind
        path = _trained_earlier(Path(models_from) / name, k, replace(train_base, seed=seed_of(seed, 0)), leak,
                                data_hashes) if models_from is not None else None
        if path is not None:
            log(f"  using {path} as it is")
        else:
            path = _train_probe(out / "models" / name, k, seed_of(seed, 0), leak=leak, data=data,
                                train_base=train_base, base_fingerprint=base_fingerprint, data_hashes=data_hashes,
                                log=log)
        t0 = time.perf_counter()
        scores = item_order_scores(path, data["test"], out / "order" / f"{name}.json",
                                   replace(order, seed=(order.seed if order.seed is not None else first_seed) + seed),
                                   scoring)
        test = scores.test(confidence_level=analysis.confidence_level)
        detected = bool(test.pvalue <= analysis.alpha and test.statistic > 0)
        runs.append({"kind": kind, "k": k, "seed": seed, "model": name, "estimate": test.statistic,
                     "pvalue": test.pvalue, "detected": detected, "n_shards": test.n_shards,
                     "n_permutations": test.n_permutations, "seconds": round(time.perf_counter() - t0, 1)})
        log(f"{kind} k={k} seed={seed}: gap {test.statistic:+.2f} nats/shard, p = {test.pvalue:.3g}"
            f"{' (detected)' if detected else ''}; {scores.from_cache} of the orders cached, "
            f"{scores.compute_seconds:.0f} s")

    rates, intervals = order_rates(runs)
    counts = {kind: {k: sum(1 for r in runs if r["k"] == k and (k == 0 or r["kind"] == kind)) for k in by_k}
              for kind, by_k in rates.items()}
    plot = plot_order_power(rates, intervals, counts, out / "order_power_curve.png", alpha=analysis.alpha)
    null = [r for r in runs if r["k"] == 0]
    fpr = sum(r["detected"] for r in null) / len(null) if null else None
    settings = {"shards": order.shards, "permutations": order.permutations, "separator": order.separator,
                "first_seed": order.seed if order.seed is not None else first_seed, "alpha": analysis.alpha}
    write_json_atomic(out / "order_calibration.json", {
        "dups": list(dups), "seeds": seeds, "null_seeds": max(seeds, null_seeds) if 0 in dups else 0,
        "kinds": list(kinds), "settings": settings, "runs": runs,
        "rates": {kind: {str(k): v for k, v in by_k.items()} for kind, by_k in rates.items()},
        "intervals_95": {kind: {str(k): list(v) for k, v in by_k.items()} for kind, by_k in intervals.items()},
        "false_positive_rate": fpr})
    write_text_atomic(out / "order_calibration.md",
                      order_calibration_markdown(runs, rates, intervals, alpha=analysis.alpha, settings=settings))
    return OrderCalibrationResult(out, runs, rates, intervals, fpr, plot)


def _order_tables(path: str | Path) -> dict:
    from contaudit.protocol import load_setting_tables

    return load_setting_tables(path, ("analysis", "item_order"))


def _trained_earlier(path: Path, k: int, train_config, leak: str, data_hashes: dict) -> Path | None:
    """``path`` when it holds a probe model fine-tuned with k copies of this leak kind, these training settings
    (seed included), this benchmark and this filler (its ``injection.json`` says so); else None."""
    from contaudit.finetune.api import INJECTION_FILE
    from contaudit.finetune.config import config_dict

    try:
        manifest = json.loads((path / INJECTION_FILE).read_text())
    except (OSError, ValueError):
        return None
    parameters = manifest.get("parameters") or {}
    inputs = {i.get("role"): i.get("sha256") for i in manifest.get("inputs") or [] if isinstance(i, dict)}
    same = (parameters.get("dup") == k and parameters.get("leak", "per_item") == leak
            and parameters.get("train") == config_dict(train_config)
            and all(inputs.get(role) == sha for role, sha in data_hashes.items()))
    return path if same else None


def _train_probe(path: Path, k: int, train_seed: int, *, leak: str, data: dict, train_base, base_fingerprint: dict,
                 data_hashes: dict, log: Callable[[str], None]) -> Path:
    """Fine-tune one probe model (the test set leaked k times, ``leak`` kind) unless it is there already."""
    from contaudit.experiment import train_unless_done
    from contaudit.finetune import finetune
    from contaudit.finetune.api import INJECTION_FILE
    from contaudit.finetune.config import ItemSelection, config_dict

    train_config = replace(train_base, seed=train_seed)
    parameters = {"dup": k, "train": config_dict(train_config)}
    if leak == "ordered":
        parameters["leak"] = "ordered"
    wanted = {"parameters": parameters, "base": {"fingerprint": base_fingerprint}, "inputs": data_hashes}
    t0 = time.perf_counter()
    if train_unless_done(path, INJECTION_FILE, wanted, lambda s: None, finetune, data["corpus"], path,
                         base=data["base"], inject=data["test"], dup=k, items=ItemSelection(leak=leak),
                         overwrite=True, config=train_config):
        log(f"  trained {path.name} in {time.perf_counter() - t0:.0f} s")
    return path
