"""Rates from calibration runs: detection and false-positive rates per k, each outcome's
rate, the as-if-primary rates of every completion metric, exact (Clopper-Pearson) intervals."""

from __future__ import annotations

from contaudit.metrics import METRICS

LEAK_KINDS = ("ordered", "per_item")
LEAK_LABELS = {"ordered": "ordered leak (the benchmark file, k copies)",
               "per_item": "per-item leak (each item k times, random places)"}


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


def run_record(k: int, seed: int, results: dict) -> dict:
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


def clopper_pearson(hits: int, n: int, confidence_level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a rate; ``(0, 1)`` when ``n`` is 0."""
    from scipy import stats

    if n == 0:
        return 0.0, 1.0
    ci = stats.binomtest(hits, n).proportion_ci(confidence_level=confidence_level, method="exact")
    return float(ci.low), float(ci.high)


def n_at(runs: list[dict], k: int) -> int:
    return sum(r["k"] == k for r in runs)


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
