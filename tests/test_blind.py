"""The blind baseline (contaudit.analysis.blind) against known answers and on data where the truth is known."""

import numpy as np
import pytest
from scipy import stats

from contaudit.analysis.blind import _auc, blind_baseline
from contaudit.errors import InputError


def test_auc_against_the_mann_whitney_statistic():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=50), 1)  # ties on purpose
    y = rng.random(50) < 0.4
    u = stats.mannwhitneyu(scores[y], scores[~y]).statistic
    assert _auc(scores, y) == pytest.approx(u / (y.sum() * (~y).sum()))


def test_sets_that_read_differently_are_separated():
    old = [f"fixed bug {i} in the build system of package {i % 5}" for i in range(30)]
    new = [f"ported crate {i} to rust and updated package {i % 5}" for i in range(30)]
    res = blind_baseline(old, new, n_permutations=99, rng=1)
    assert res.statistic == 1.0 and res.pvalue == pytest.approx(1 / 100)
    assert res.to_dict()["auc"] == 1.0 and res.n == (30, 30)


def test_a_random_split_of_one_source_is_not_separated_beyond_chance():
    """Null: texts drawn from one distribution, split at random; p <= 0.1 in about 10 % of independent draws."""
    rng = np.random.default_rng(2)
    vocab = [f"w{k}" for k in range(60)]
    hits, n = 0, 60
    for _ in range(n):
        texts = [" ".join(rng.choice(vocab, 12)) for _ in range(40)]
        res = blind_baseline(texts[:20], texts[20:], n_permutations=39, rng=rng)
        hits += res.pvalue <= 0.1
    assert hits / n <= 0.1 + 3 * np.sqrt(0.1 * 0.9 / n)


def test_blind_baseline_errors():
    with pytest.raises(InputError, match="at least `n_folds` = 5 items in each set"):
        blind_baseline(["a b"] * 3, ["c d"] * 10)
    with pytest.raises(InputError, match="`n_folds` must be at least 2"):
        blind_baseline(["a b"] * 3, ["c d"] * 10, n_folds=1)


def test_cli_analyze_reports_the_blind_baseline_with_the_sets(tmp_path):
    from typer.testing import CliRunner

    from contaudit.analysis.simulate import simulate_audit, write_audit
    from contaudit.cli import app
    from contaudit.manifest import write_jsonl_atomic

    files = write_audit(simulate_audit(n_test=40, n_shadow=40, rng=3), tmp_path, index=False)
    sim_ids = {"test": [f"test-{i}" for i in range(40)], "shadow": [f"shadow-{i}" for i in range(40)]}
    for name, ids in sim_ids.items():  # old text vs new text: the shift is there to see
        words = "fixed crash in the build" if name == "test" else "ported the crate to rust"
        write_jsonl_atomic(tmp_path / f"{name}-set.jsonl", [{"id": i, "text": f"{words} {k}"} for k, i in enumerate(ids)])
    args = ["analyze", "--suspect-test", str(files["suspect_test"]), "--clean-test", str(files["clean_test"]),
            "--suspect-shadow", str(files["suspect_shadow"]), "--clean-shadow", str(files["clean_shadow"]),
            "--shadow-origin", "random_split", "--test-set", str(tmp_path / "test-set.jsonl"),
            "--shadow-set", str(tmp_path / "shadow-set.jsonl"), "--out", str(tmp_path / "run")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    import json

    blind = json.loads((tmp_path / "run" / "results.json").read_text())["supporting"]["blind_baseline"]
    assert blind["available"] and blind["auc"] == 1.0 and blind["pvalue"] < 0.01
    res = CliRunner().invoke(app, args[:-4] + args[-2:])  # without --shadow-set
    assert res.exit_code == 2 and "--test-set and --shadow-set together" in res.output
