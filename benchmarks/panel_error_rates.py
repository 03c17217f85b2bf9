"""Error rates of the reference-panel verdict at the levels where it is decided.

Independent clean audits (fresh suspect and references every audit; ``simulate_model_panel``
under a 0.5 SD test/shadow shift), for normal, heavy-tailed (t3) and outlier-ridden (one model
in eight with 5x the hidden seed effect) spreads between models and R = 3 to 39 references.
Prints, for the normal-theory t test used before issue 22 and for the robust test that replaced
it: the perplexity test's rejection rate at alpha, alpha/2 and alpha/(2K) for K = 5, 10; the
share of audits labelled SUSPECT-or-worse and CONTAMINATED at alpha; and the share of suites of
K clean benchmarks that fail the Holm suite gate (fail_on SUSPECT). Rates are printed as
multiples of their nominal level, so 1.0 is exact and anything above ~1.2 is an inflated error.

Run: ``python benchmarks/panel_error_rates.py [--audits 4000] [--alpha 0.05] [--spreads t3] [--references 5,19]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from contaudit.analysis.simulate import panel_null_pvalues

SPREADS = {"normal": {}, "t3": {"heavy_tails": True}, "outliers 1/8 x5": {"outlier_share": 0.125}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audits", type=int, default=4000, help="independent null audits per cell")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--references", default="3,5,9,19,39")
    parser.add_argument("--spreads", default=",".join(SPREADS), help="which spreads, comma-separated")
    args = parser.parse_args()
    alpha = args.alpha
    levels = {"a": alpha, "a/2": alpha / 2, "a/10": alpha / 10, "a/20": alpha / 20}
    print(f"{args.audits} independent null audits per cell; alpha = {alpha}; rates / nominal level")
    print("| spread | R | test | p<=a | p<=a/2 | p<=a/(2*5) | p<=a/(2*10) | SUSPECT+ / a | CONTAMINATED / (a/2) "
          "| suite K=5 fails / a | suite K=10 fails / a |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for spread, kw in ((name, SPREADS[name]) for name in args.spreads.split(",")):
        for r in (int(x) for x in args.references.split(",")):
            t0 = time.perf_counter()
            sim = panel_null_pvalues(n_audits=args.audits, n_references=r, rng=[20261207, r], **kw)
            labels = sim.label_rates(alpha)
            for method in ("t", "robust"):
                p = sim.pvalues[method][:, 0]
                tail = " | ".join(f"{np.mean(p <= lv) / lv:.2f}" for lv in levels.values())
                lab = labels[method]
                suites = [sim.suite_fail_rate(method, k=k, alpha=alpha, fail_on="SUSPECT") / alpha for k in (5, 10)]
                print(f"| {spread} | {r} | {method} | {tail} | {lab['SUSPECT_or_worse'] / alpha:.2f} | "
                      f"{lab['CONTAMINATED'] / (alpha / 2):.2f} | {suites[0]:.2f} | {suites[1]:.2f} |", flush=True)
            print(f"<!-- {spread}, R = {r}: {time.perf_counter() - t0:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
