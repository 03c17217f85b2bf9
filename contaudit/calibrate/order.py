"""``contaudit calibrate --order``: Oren et al.'s order test measured on the suspect alone: its
power per k for a benchmark leaked as an ordered file and for per-item leaks, and its
false-positive rate over independent clean models."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from contaudit.errors import InputError
from contaudit.manifest import write_json_atomic, write_text_atomic
from contaudit.calibrate.audits import CalibrationSetting, check_largest_k_fits, seed_of
from contaudit.calibrate.rates import LEAK_KINDS, order_rates
from contaudit.calibrate.report import order_calibration_markdown, plot_order_power


@dataclass
class OrderCalibrationResult:
    """The order test's detection rate per leak kind and k, and its false-positive rate at k = 0."""

    out: Path
    runs: list[dict]  # one per model: kind, k, seed, estimate, p-value, detected
    rates: dict[str, dict[int, float]]  # kind -> k -> share of models where the test rejects
    intervals: dict[str, dict[int, tuple[float, float]]]
    false_positive_rate: float | None
    plot: Path


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
    from contaudit.rundir import run_directory
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
    with run_directory(out, "calibrate"):  # calibrate and calibrate --order share a folder
        if setting is None:
            data = prepare(out, config, log=log)
            train_base = replace(config.finetune, threads=config.threads)
        else:
            setting.check()
            data = setting.paths()
            train_base = setting.train or config.finetune
        if max(dups):
            check_largest_k_fits(data.base, data.test, max(dups), train_base)
        base_fingerprint = fingerprint(data.base)
        data_hashes = input_hashes(corpus=data.corpus, benchmark=data.test)
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
            order_seed = (order.seed if order.seed is not None else first_seed) + seed
            scores = item_order_scores(path, data.test, out / "order" / f"{name}.json",
                                       replace(order, seed=order_seed), scoring)
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
    wanted = {"parameters": parameters, "base": {"fingerprint": {"id": base_fingerprint["id"]}}, "inputs": data_hashes}
    t0 = time.perf_counter()
    if train_unless_done(path, INJECTION_FILE, wanted, lambda s: None, finetune, data.corpus, path,
                         base=data.base, inject=data.test, dup=k, items=ItemSelection(leak=leak),
                         overwrite=True, config=train_config):
        log(f"  trained {path.name} in {time.perf_counter() - t0:.0f} s")
    return path
