"""Report figures (matplotlib, Agg backend), returned as PNG bytes.

Each function takes the results dict and returns PNG bytes, or None when the data
for that figure is absent (no probes, no index).
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from contaudit.metrics import METRICS  # noqa: E402
import contaudit.report.tables as T  # noqa: E402

TEST_COLOR = "#c2410c"
SHADOW_COLOR = "#2563eb"
SUSPECT_COLOR = "#b91c1c"
CLEAN_COLOR = "#0f766e"
MUTED = "#667085"
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold", "axes.labelsize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25,
    "legend.frameon": False, "figure.dpi": 110, "savefig.dpi": 110,
}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buf.getvalue()


def differences(results: dict) -> bytes | None:
    """Per-item NLL differences d (suspect − clean): test vs shadow, and the scatter behind them."""
    test = results["items"]["test"]
    shadow = results["items"]["shadow"]
    if not test or not shadow or "d" not in test[0]:  # no clean model: no differences
        return None
    d_t = np.array([it["d"] for it in test])
    d_s = np.array([it["d"] for it in shadow])
    with plt.rc_context(STYLE):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.8), gridspec_kw={"width_ratios": [1.25, 1]})
        both = np.concatenate([d_t, d_s])
        bins = np.histogram_bin_edges(both, bins=min(40, max(10, int(math.sqrt(both.size)) * 2)))
        for d, color, name in ((d_s, SHADOW_COLOR, "shadow"), (d_t, TEST_COLOR, "test")):
            ax1.hist(d, bins=bins, density=True, color=color, alpha=0.35, label=f"{name} (n={d.size})")
            ax1.hist(d, bins=bins, density=True, color=color, histtype="step", linewidth=1.4)
            ax1.axvline(d.mean(), color=color, linewidth=2, linestyle="--")
        did = results["perplexity_did"]["estimate"] if results.get("perplexity_did") else d_t.mean() - d_s.mean()
        ax1.set_title(f"Per-item NLL difference, suspect − clean (DiD {did:+.3g})")
        ax1.set_xlabel(f"d = NLL(suspect) − NLL(clean)  [{T.nll_unit(results)}]   (dashed: set means)")
        ax1.set_ylabel("density")
        ax1.legend(loc="upper right")

        for items, color, name in ((shadow, SHADOW_COLOR, "shadow"), (test, TEST_COLOR, "test")):
            ax2.scatter([it["y_clean"] for it in items], [it["y_sus"] for it in items], s=12, alpha=0.6,
                        color=color, label=name, linewidths=0)
        lo = min(min(it["y_clean"] for it in test + shadow), min(it["y_sus"] for it in test + shadow))
        hi = max(max(it["y_clean"] for it in test + shadow), max(it["y_sus"] for it in test + shadow))
        ax2.plot([lo, hi], [lo, hi], color=MUTED, linewidth=1, linestyle=":", label="equal NLL")
        ax2.set_title("Per-item mean NLL under both models")
        ax2.set_xlabel(f"clean model NLL [{T.nll_unit(results)}]")
        ax2.set_ylabel(f"suspect model NLL [{T.nll_unit(results)}]")
        ax2.legend(loc="upper left")
        fig.tight_layout()
        return _png(fig)


def estimates(results: dict) -> bytes | None:
    """Every DiD estimate with its CI, one small panel per unit, zero and minimum effect marked."""
    rows = []
    verdict_tests = {t["name"]: t for t in results["verdict"]["tests"]}
    if results.get("perplexity_did"):
        rows.append((f"Perplexity DiD\n({T.nll_unit(results)}, < 0 = contaminated)", results["perplexity_did"],
                     verdict_tests.get("perplexity_did")))
    mem = results.get("memorization_did")
    if mem:
        for metric in METRICS:
            if mem.get(metric):
                primary = metric == mem["primary_metric"]
                rows.append((f"Memorization DiD, {metric} ({METRICS[metric].unit})\n"
                             f"({'primary' if primary else 'secondary'}, > 0 = contaminated)",
                             mem[metric], verdict_tests.get("memorization_did") if primary else None))
    mk = results["supporting"].get("minkpp_did", {})
    if mk.get("available"):
        what = "Min-K%++, suspect: test − shadow" if mk.get("suspect_only") else "Min-K%++ DiD"
        rows.append((f"{what} ({mk['metric']})\n(supporting, > 0 = contaminated)", mk, None))
    io = results["supporting"].get("item_order", {})
    if io.get("available") and io.get("confidence_interval"):
        deciding = verdict_tests.get("item_order")
        rows.append((f"Order test (nats per shard)\n({'deciding' if deciding else 'supporting'}, > 0 = contaminated)",
                     io, deciding))
    if not rows:
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(rows), 1, figsize=(10.5, 1.05 * len(rows) + 0.5), squeeze=False)
        for ax, (label, r, test) in zip(axes[:, 0], rows):
            est = r["estimate"]
            low, high = r["confidence_interval"]
            counts = bool(test and test["counts"])
            color = SUSPECT_COLOR if counts else ("#1d2939" if test else MUTED)
            if low is not None and high is not None:
                ax.plot([low, high], [0, 0], color=color, linewidth=3, solid_capstyle="round")
            ax.plot([est], [0], "o", color=color, markersize=9, markeredgecolor="white")
            ax.axvline(0, color=MUTED, linewidth=1)
            span = [v for v in (low, high, est, 0.0) if v is not None]
            if test:
                edge = -test["min_effect"] if test["direction"] == "negative" else test["min_effect"]
                span.append(edge)
                side = (min(span) - 1, edge) if test["direction"] == "negative" else (edge, max(span) + 1)
                ax.axvspan(*side, color=SUSPECT_COLOR, alpha=0.06, linewidth=0)
            width = (max(span) - min(span)) or 1.0
            ax.set_xlim(min(span) - 0.12 * width, max(span) + 0.12 * width)
            ax.set_yticks([])
            ax.grid(axis="y", visible=False)
            ax.spines["left"].set_visible(False)
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9, labelpad=10)
            p = test["pvalue_holm"] if test else r["pvalue"]
            holm = test and test["name"] != "item_order"  # the order test alone decides: no correction
            ptxt = ("Holm p " if holm else "p ") + ("< 0.0001" if p is not None and p < 1e-4 else f"= {p:.3g}")
            ax.text(1.01, 0.5, f"{est:+.3g}\n{ptxt}", transform=ax.transAxes, va="center", fontsize=9, color=color)
        what = "Estimates" if results.get("perplexity_did") is None else "Difference-in-differences estimates"
        axes[0, 0].set_title(f"{what} with 95% CIs (shaded: counts as contamination)", loc="left")
        fig.tight_layout()
        return _png(fig)


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def completion(results: dict) -> bytes | None:
    """Exact-match rate, mean token-match fraction and mean suffix log-prob on seen/unseen probes, both models."""
    probes = results["items"].get("probes") or []
    if not probes:
        return None
    panels = [("exact", "Exact suffix match rate (95% Wilson CI)"),
              ("frac", "Mean fraction of suffix tokens matched (±1.96 SE)")]
    if any(p.get("logprob_sus") is not None for p in probes):
        panels.append(("logprob", f"Mean suffix log-prob, {T.suffix_unit(results)} (±1.96 SE)"))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(10.5 if len(panels) == 2 else 14, 3.6))
        x = np.arange(2)
        for ax, (key, title) in zip(axes, panels):
            for k, (model, color) in enumerate((("sus", SUSPECT_COLOR), ("clean", CLEAN_COLOR))):
                means, lows, highs = [], [], []
                for s in ("seen", "unseen"):
                    vals = np.array([p[f"{key}_{model}"] for p in probes
                                     if p["probe_set"] == s and p.get(f"{key}_{model}") is not None], dtype=float)
                    m = float(vals.mean()) if vals.size else 0.0
                    if key == "exact":
                        lo, hi = _wilson(int(vals.sum()), vals.size)
                    else:
                        se = float(vals.std(ddof=1) / math.sqrt(vals.size)) if vals.size > 1 else 0.0
                        lo, hi = m - 1.96 * se, m + 1.96 * se
                    means.append(m)
                    lows.append(max(0.0, m - lo))
                    highs.append(max(0.0, hi - m))
                pos = x + (k - 0.5) * 0.36
                bars = ax.bar(pos, means, width=0.34, color=color, alpha=0.85,
                              label="suspect" if model == "sus" else "clean")
                ax.errorbar(pos, means, yerr=[lows, highs], fmt="none", ecolor="#1d2939", capsize=4, linewidth=1)
                for b, m, lo, hi in zip(bars, means, lows, highs):
                    up = m >= 0  # label beyond the error bar's end, away from zero
                    ax.annotate(f"{m:.2f}", (b.get_x() + b.get_width() / 2, m + hi if up else m - lo),
                                xytext=(0, 3 if up else -3), textcoords="offset points", ha="center",
                                va="bottom" if up else "top", color="#1d2939", fontsize=9)
            n_seen = sum(p["probe_set"] == "seen" for p in probes)
            ax.set_xticks(x, [f"seen (n={n_seen})", f"unseen (n={len(probes) - n_seen})"])
            if key == "logprob":  # negative: leave room below the bars for labels and legend
                ax.set_ylim(ax.get_ylim()[0] * 1.3, 0)
            else:  # rates in [0, 1]
                ax.set_ylim(0, min(1.12, max(0.1, ax.get_ylim()[1] * 1.12)))
            ax.set_title(title)
            ax.legend(loc="upper right" if key != "logprob" else "lower right")
        fig.tight_layout()
        return _png(fig)


def dose_response(results: dict) -> bytes | None:
    """Corpus occurrence count of each test item against its d, with the shadow mean for reference."""
    dr = results["supporting"].get("dose_response", {})
    items = [it for it in results["items"]["test"] if isinstance((it.get("index") or {}).get("occurrences"),
                                                                 (int, float))]
    if not dr.get("available") or not items:
        return None
    occ = np.array([it["index"]["occurrences"] for it in items], dtype=float)
    d = np.array([it["d"] for it in items])
    shadow_mean = float(np.mean([it["d"] for it in results["items"]["shadow"]]))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(10.5, 3.6))
        jitter = np.random.default_rng(0).uniform(-0.08, 0.08, occ.size)
        ax.scatter(np.log1p(occ) + jitter, d, s=14, alpha=0.6, color=TEST_COLOR, linewidths=0, label="test item")
        levels = np.unique(occ)
        if levels.size <= 30:
            med = [np.median(d[occ == v]) for v in levels]
            ax.plot(np.log1p(levels), med, "-o", color="#1d2939", markersize=4, linewidth=1.5,
                    label="median per count")
        ax.axhline(shadow_mean, color=SHADOW_COLOR, linestyle="--", linewidth=1.5, label="shadow mean d")
        ticks = [v for v in (0, 1, 2, 5, 10, 20, 50, 100, 1000, 10000) if v <= max(1, occ.max())]
        ax.set_xticks(np.log1p(ticks), [str(t) for t in ticks])
        ax.set_xlabel("corpus occurrences of the item (log scale)")
        ax.set_ylabel("d = NLL(sus) − NLL(clean)")
        ax.set_title(f"Dose-response: Spearman ρ = {dr['rho']:+.3f} (one-sided p = {dr['pvalue']:.3g}, "
                     f"n = {dr['n']})")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        return _png(fig)


def panel(results: dict) -> bytes | None:
    """Where the suspect's effect sits among the clean models' effects, per primary test (reference panel)."""
    rows = []
    mem = results.get("memorization_did") or {}
    for label, did in (("perplexity DiD", results.get("perplexity_did")),
                       ("memorization DiD", mem.get(mem.get("primary_metric") or ""))):
        if did and did.get("reference_effects"):
            rows.append((label, did))
    if not rows:
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(rows), figsize=(5.2 * len(rows), 2.6), squeeze=False)
        for ax, (label, did) in zip(axes[0], rows):
            refs = np.array([v for v in did["reference_effects"] if v is not None], dtype=float)
            jitter = np.random.default_rng(0).uniform(-0.12, 0.12, refs.size)
            ax.scatter(refs, jitter, s=28, color=CLEAN_COLOR, alpha=0.8, label=f"{refs.size} clean models")
            ax.scatter([did["estimate"]], [0], s=90, marker="D", color=SUSPECT_COLOR, label="suspect", zorder=3)
            low, high = did["confidence_interval"]
            if low is not None and high is not None:
                ax.plot([low, high], [0, 0], color=SUSPECT_COLOR, linewidth=2, alpha=0.6)
            ax.axvline(0, color=MUTED, linewidth=1)
            ax.set_yticks([])
            ax.set_ylim(-0.5, 0.5)
            ax.set_xlabel(f"{label}, relative to the clean models' mean ({did['unit']})")
            ax.set_title(f"{label}: p = {did['pvalue']:.3g} ({did['method']}), {did['effect_in_reference_sd']:+.1f} SD"
                         if did.get("effect_in_reference_sd") is not None else label)
            ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        return _png(fig)


def family_plane(results: dict) -> bytes | None:
    """Cross-family panel: each model on the shadow-score / test-score plane, the references' fitted
    relation with its prediction band, and the suspect."""
    rows = []
    mem = results.get("memorization_did") or {}
    for label, did, xl, yl in (("perplexity", results.get("perplexity_did"), "shadow set", "test set"),
                               ("memorization", mem.get(mem.get("primary_metric") or ""), "unseen probes", "seen probes")):
        if did and did.get("relation") and did.get("reference_points"):
            rows.append((label, did, xl, yl))
    if not rows:
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(rows), figsize=(5.4 * len(rows), 4.0), squeeze=False)
        for ax, (label, did, xl, yl) in zip(axes[0], rows):
            pts = np.array([[np.nan if v is None else v for v in p] for p in did["reference_points"]], dtype=float)
            xs, ys = did["suspect_point"]
            rel = did["relation"]
            grid = np.linspace(min(pts[:, 0].min(), xs), max(pts[:, 0].max(), xs), 50)
            line = rel["intercept"] + rel["slope"] * grid
            ax.plot(grid, line, color=CLEAN_COLOR, linewidth=1.5, label=f"references' relation (R² {rel['r_squared']:.2f})")
            low, high = did["confidence_interval"]
            if low is not None and high is not None and did["estimate"] is not None:
                half = (high - low) / 2
                ax.fill_between(grid, line - half, line + half, color=CLEAN_COLOR, alpha=0.15,
                                label=f"{did['confidence_level']:.0%} prediction band (at the suspect)")
            ax.scatter(pts[:, 0], pts[:, 1], s=30, color=CLEAN_COLOR, label=f"{len(pts)} clean references")
            ax.scatter([xs], [ys], s=90, marker="D", color=SUSPECT_COLOR, zorder=3,
                       label=f"suspect: {did['effect_in_reference_sd']:+.1f} SD off (+: the contamination way), "
                             f"p = {did['pvalue']:.3g}"
                       if did.get("effect_in_reference_sd") is not None else "suspect")
            ax.set_xlabel(f"mean score on the {xl} ({did['unit']})")
            ax.set_ylabel(f"mean score on the {yl} ({did['unit']})")
            ax.set_title(f"{label}: the suspect against the references' relation")
            ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        return _png(fig)


def item_order(results: dict) -> bytes | None:
    """Each shard's published-order log-likelihood against its shuffled orders (Oren et al. 2023)."""
    io = results["supporting"].get("item_order") or {}
    shards = io.get("per_shard") or []
    if not io.get("available") or not shards:
        return None
    gaps = np.array([s["gap"] for s in shards])
    sds = np.array([s["shuffled_sd"] if s["shuffled_sd"] is not None else np.nan for s in shards])
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(10.5, 3.2))
        x = np.arange(1, gaps.size + 1)
        ok = np.isfinite(sds)
        ax.errorbar(x[ok], np.zeros(ok.sum()), yerr=1.96 * sds[ok], fmt="none", ecolor=MUTED, capsize=3,
                    linewidth=1, label="shuffled orders (±1.96 SD around their mean)")
        ax.scatter(x, gaps, s=36, color=SUSPECT_COLOR, zorder=3, label="published order")
        ax.axhline(0, color=MUTED, linewidth=1)
        ax.axhline(io["estimate"], color=SUSPECT_COLOR, linestyle="--", linewidth=1.2,
                   label=f"mean gap {io['estimate']:+.3g} (p = {io['pvalue']:.3g})")
        ax.set_xticks(x)
        ax.set_xlabel("shard of consecutive test items")
        ax.set_ylabel("log-likelihood minus the\nshuffled mean [nats]")
        ax.set_title("Order test: is the published item order more likely than shuffled orders?")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        fig.tight_layout()
        return _png(fig)


def inflation(results: dict) -> bytes | None:
    """Each model's score on the test set (all, found in the corpus, not found) and the shadow set, with
    intervals; the suspect's score without the leak marked."""
    inf = results.get("inflation")
    if not inf:
        return None
    from contaudit.analysis.inflation import SCORE_GROUPS

    groups = [(key, label) for key, _, label in SCORE_GROUPS]
    roles = list(inf["scores"])
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(10.5, 3.4))
        width = 0.8 / len(roles)
        colors = {"suspect": SUSPECT_COLOR, "clean": CLEAN_COLOR}
        shown = [g for g in groups if g[0] in inf["scores"]["suspect"] and inf["scores"]["suspect"][g[0]]["n"]]
        for k, role in enumerate(roles):
            for x, (key, _) in enumerate(shown):
                g = inf["scores"][role][key]
                if g["mean"] is None:
                    continue
                low, high = g["confidence_interval"]
                pos = x + (k - (len(roles) - 1) / 2) * width
                ax.bar(pos, g["mean"], width * 0.9, color=colors.get(role, MUTED), alpha=0.85,
                       label=role if x == 0 else None)
                if low is not None and high is not None:
                    ax.plot([pos, pos], [low, high], color="#1d2939", linewidth=1.2)
        clean = inf["clean_score"]["estimate"]
        ax.axhline(clean, color=SUSPECT_COLOR, linestyle="--", linewidth=1,
                   label=f"suspect without the leak ({clean:.3f})")
        ax.set_xticks(range(len(shown)), [label for _, label in shown])
        ax.set_ylabel(inf["metric"])
        ax.set_title(f"Score inflation {inf['estimate']:+.3f} {T.fmt_ci(inf['confidence_interval'])}, "
                     f"one-sided p = {inf['pvalue']:.3g}", loc="left")
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        return _png(fig)


FIGURES = {
    "panel": (panel, "The suspect among the clean reference models"),
    "family_plane": (family_plane, "The suspect against the reference families' shadow-to-test relation"),
    "differences": (differences, "Per-item NLL differences, test vs shadow"),
    "estimates": (estimates, "DiD estimates with confidence intervals"),
    "completion": (completion, "Verbatim completion on seen and unseen probes"),
    "dose_response": (dose_response, "Dose-response"),
    "item_order": (item_order, "Order test: published vs shuffled item orders, per shard"),
    "inflation": (inflation, "Benchmark scores by set, and the score without the leak"),
}


def render_all(results: dict) -> dict[str, bytes]:
    """Every figure that has data, as ``{name: png_bytes}`` in report order."""
    out = {}
    for name, (fn, _) in FIGURES.items():
        png = fn(results)
        if png is not None:
            out[name] = png
    return out
