"""Clean audits on random splits that contaudit made itself: no refusals, false-positive rate at alpha (issue 22).

Each audit draws one benchmark file of ``2n`` items, a ``[sets.random_split]`` with its own
seed splits it, and a clean "suspect" and a clean control are simulated on its items
(``contaudit.analysis.simulate.simulate_audit`` with no planted effect: shared item
difficulty, a stronger suspect, item noise). The analysis re-derives and verifies the
split, keeps the exact item permutation test and reports the comparability check without
judging it. Beside it the same scores *declared* a random split (``shadow_origin``
only, no provenance), where a failed comparability check (by chance, under a true
randomisation) makes the design INCONCLUSIVE. Prints refusals (INVALID_DESIGN or
INCONCLUSIVE) and the SUSPECT-or-worse rate (perplexity test only: one test at alpha).

Run: ``python benchmarks/random_split_nulls.py [--audits 1000]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


from contaudit.analysis import analyze
from contaudit.analysis.simulate import simulate_audit
from contaudit.calibrate import clopper_pearson
from contaudit.manifest import make_manifest, write_json_atomic, write_jsonl_atomic
from contaudit.protocol import load_protocol
from contaudit.splits import random_split_items


def one_audit(root: Path, seed: int, n: int, permutations: int) -> tuple[str, str]:
    write_jsonl_atomic(root / "all.jsonl", [{"id": f"q{i}", "text": f"item {i} of audit {seed}"} for i in range(2 * n)])
    for name in ("sus", "clean"):
        (root / name).mkdir(exist_ok=True)
    (root / "p.toml").write_text(f'[models.suspect]\npath = "sus"\n[models.clean]\npath = "clean"\n'
                                 f'[sets.random_split]\npath = "all.jsonl"\nseed = {seed}\n'
                                 f'[analysis]\nn_permutations = {permutations}\nn_bootstrap = 0\nmin_items = 10\n')
    test, shadow = random_split_items(load_protocol(root / "p.toml").sets.random_split)
    sim = simulate_audit(n_test=len(test), n_shadow=len(shadow), rng=seed)
    files = {}
    for model, attr in (("suspect", "y_sus"), ("clean", "y_clean")):
        for name, items, part in (("test", test, sim.test), ("shadow", shadow, sim.shadow)):
            path = root / "scores" / model / f"{name}.jsonl"
            write_jsonl_atomic(path, [{"id": it.id, "nll_mean": float(y), "n_tokens": 64}
                                      for it, y in zip(items, getattr(part, attr))])
            write_json_atomic(path.with_name(f"{name}.manifest.json"),
                              make_manifest("score", inputs=[], parameters={"model": model}))
            files[f"{model}_{name}"] = path
    verified = analyze(**files, protocol=root / "p.toml")["verdict"]["label"]
    declared = analyze(**files, shadow_origin="random_split",
                       protocol=load_protocol(root / "p.toml").analysis)["verdict"]["label"]
    return verified, declared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audits", type=int, default=1000)
    parser.add_argument("--items", type=int, default=100, help="items per set")
    parser.add_argument("--permutations", type=int, default=999)
    args = parser.parse_args()
    t0 = time.perf_counter()
    labels = {"verified": [], "declared": []}
    with tempfile.TemporaryDirectory() as tmp:
        for a in range(args.audits):
            root = Path(tmp) / f"a{a}"
            root.mkdir()
            v, d = one_audit(root, 1000 + a, args.items, args.permutations)
            labels["verified"].append(v)
            labels["declared"].append(d)
    n = args.audits
    print(f"{n} independent clean audits, {args.items} + {args.items} items, {args.permutations} permutations "
          f"({time.perf_counter() - t0:.0f} s)")
    print("| split | refused (INVALID_DESIGN or INCONCLUSIVE) | SUSPECT or worse [95 % CI] |")
    print("|---|---:|---:|")
    for name, rows in labels.items():
        refused = sum(x in ("INVALID_DESIGN", "INCONCLUSIVE") for x in rows)
        flagged = sum(x in ("SUSPECT", "CONTAMINATED") for x in rows)
        low, high = clopper_pearson(flagged, n)
        what = "made by contaudit, verified" if name == "verified" else "declared random (no provenance)"
        print(f"| {what} | {refused}/{n} | {flagged}/{n} = {flagged / n:.3f} [{low:.3f}, {high:.3f}] |")


if __name__ == "__main__":
    main()
