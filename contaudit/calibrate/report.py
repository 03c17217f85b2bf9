"""What a calibration writes for readers: the power curves and the markdown summaries."""

from __future__ import annotations

from pathlib import Path

from contaudit.calibrate.rates import LEAK_LABELS, RATE_LABELS, clopper_pearson, rate_label


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


def format_rate_p(p) -> str:
    return "n/a" if p is None else f"{p:.3g}"


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
