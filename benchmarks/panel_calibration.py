"""False-positive rate and power of the item permutation test vs the reference-panel tests,
on simulated clean models whose seed effects interact with a test/shadow shift.

Every audit draws fresh models (independent nulls). Prints one table per setting and writes
``docs/panel_simulation.png``. Run: ``python benchmarks/panel_calibration.py [--audits 1000]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from contaudit.analysis.simulate import panel_error_rates  # noqa: E402

TESTS = {"item_permutation": "item permutation (today, 1 clean model)", "panel_t": "panel t, adjusted",
         "panel_t_unadjusted": "panel t, unadjusted", "panel_rank": "panel rank, adjusted"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audits", type=int, default=1000, help="simulated audits per effect and setting")
    parser.add_argument("--effects", default="0,0.02,0.04,0.06,0.08,0.1", help="planted NLL drops (nats/token)")
    parser.add_argument("--plot", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "panel_simulation.png")
    args = parser.parse_args()
    effects = tuple(float(e) for e in args.effects.split(","))
    settings = {"normal seed effects, R = 5": dict(n_references=5),
                "heavy-tailed (t3) seed effects, R = 5": dict(n_references=5, heavy_tails=True),
                "heavy-tailed (t3) seed effects, R = 19": dict(n_references=19, heavy_tails=True),
                "1 model in 8 an outlier (5x), R = 5": dict(n_references=5, outlier_share=0.125),
                "1 model in 8 an outlier (5x), R = 19": dict(n_references=19, outlier_share=0.125)}
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.6), sharey=True)
    axes = axes.ravel()
    axes[-1].axis("off")
    for ax, (name, kw) in zip(axes, settings.items()):
        t0 = time.perf_counter()
        rates = panel_error_rates(n_audits=args.audits, effects=effects, rng=20240601, **kw)
        print(f"\n{name} ({args.audits} audits per effect, {time.perf_counter() - t0:.0f} s)")
        print(f"{'effect':>8} " + " ".join(f"{t:>22}" for t in TESTS))
        for e in effects:
            print(f"{e:8.2f} " + " ".join(f"{rates[e][t]:22.3f}" for t in TESTS))
        for t, label in TESTS.items():
            ax.plot(effects, [rates[e][t] for e in effects], marker="o", label=label)
        ax.axhline(0.05, color="grey", lw=0.8, ls="--")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("planted NLL drop on test items (nats/token)")
    axes[0].set_ylabel("share of audits with p <= 0.05")
    axes[3].set_ylabel("share of audits with p <= 0.05")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
