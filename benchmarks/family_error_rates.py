"""False-positive rates of the sibling panel test and the cross-family test when the suspect is
not exchangeable with the references (issue 28).

Independent simulated audits (``contaudit.analysis.simulate.simulate_family_panel``: every
family its own strength, test scores ``0.2 + 1.3 x`` of shadow scores plus a scatter, fresh
models every audit) with a clean suspect moved ``along`` the references' relation by 0, 1
and 2 SDs of the references' effects (a stronger or weaker model: the sibling test's
exchangeability fails, the relation still holds) or ``off`` it by 1 and 2 scatter SDs (a
recipe that changes how the model sees the shift: no test can tell it from contamination;
the sensitivity figure is there for it). Prints rejection rates at alpha, alpha/2 and
alpha/(2K) for K = 5, normal and heavy-tailed (t3) scatter, R = 3 to 19.

Run: ``python benchmarks/family_error_rates.py [--audits 1000]``.
"""

from __future__ import annotations

import argparse
import time

from contaudit.analysis.simulate import family_error_rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audits", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--references", default="3,5,9,19")
    parser.add_argument("--offsets", default="along=0,along=1,along=2,off=1,off=2")
    args = parser.parse_args()
    a = args.alpha
    levels = (a, a / 2, a / 10)
    print(f"{args.audits} independent audits per row; rejection rates at alpha = {a}, alpha/2, alpha/(2*5)")
    print("| scatter | suspect | R | sibling panel (robust) | cross-family (robust) | cross-family (conformal) |")
    print("|---|---|---|---|---|---|")
    for heavy in (False, True):
        for offset in args.offsets.split(","):
            kind, value = offset.split("=")
            for r in (int(x) for x in args.references.split(",")):
                t0 = time.perf_counter()
                rates = family_error_rates(n_audits=args.audits, n_references=r, levels=levels, rng=[20261207, r],
                                           heavy_tails=heavy, **{kind: float(value)})
                cells = [" / ".join(f"{rates[t][lv]:.3f}" for lv in levels)
                         for t in ("siblings", "families", "families_conformal")]
                print(f"| {'t3' if heavy else 'normal'} | {kind} {value} SD | {r} | " + " | ".join(cells) +
                      f" |  <!-- {time.perf_counter() - t0:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
