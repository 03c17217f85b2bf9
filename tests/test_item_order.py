"""The item-order statistic (Oren et al. 2023): shards, seeded orders, log-likelihoods, the test,
the audit without a clean model, and its report."""

from __future__ import annotations

import itertools
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from contaudit.analysis.did import item_order_mde, item_order_test
from contaudit.cli import app
from contaudit.config import AnalysisSettings, ItemOrderConfig, ScoreSettings
from contaudit.errors import InputError, ProtocolError
from contaudit.io import Item
from contaudit.scoring.item_order import (PublishedOrderWarning, build_shards, draw_permutations, item_order_scores,
                                         shard_bounds, sorted_ids, sorted_order_warning)

runner = CliRunner()
FAST = AnalysisSettings(n_permutations=500, n_bootstrap=0, min_items=10)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny GPT-2 and 12 short items, in their published order."""
    from tiny_models import save_tiny_model, tiny_corpus

    root = tmp_path_factory.mktemp("order")
    model = save_tiny_model(root / "model", seed=0)
    lines = tiny_corpus(12, seed=3)
    data = root / "items.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(lines)))
    return root, model, data


def _items(n: int) -> list[Item]:
    return [Item(f"i{k}", f"text {k}", {}, k + 1) for k in range(n)]


# --- shards and orders ------------------------------------------------------------------------


def test_shards_are_consecutive_runs_of_nearly_equal_size():
    assert shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard_bounds(82, 10)[0] == (0, 9) and shard_bounds(82, 10)[-1] == (74, 82)
    with pytest.raises(InputError, match=r"`shards` \(6\) must be at most half the number of items \(11\).*at most 5"):
        shard_bounds(11, 6)


def test_permutations_are_reproducible_from_the_seed_and_change_with_it():
    a = draw_permutations([4, 5, 4], 6, seed=7)
    assert a == draw_permutations([4, 5, 4], 6, seed=7)
    assert a != draw_permutations([4, 5, 4], 6, seed=8)
    assert [len(p) for p in a] == [6, 6, 6] and sorted(a[1][0]) == list(range(5))
    # a shard's orders depend on the seed and its index only, not on the other shards
    assert draw_permutations([4, 9], 6, seed=7)[0] == a[0]
    with pytest.raises(InputError, match="`permutations` must be a positive integer"):
        draw_permutations([3], 0, seed=1)


def test_shard_texts_join_items_in_published_and_permuted_orders():
    items = _items(7)
    shards = build_shards(items, ItemOrderConfig(shards=2, permutations=3, separator=" | "), seed=5)
    assert [s.ids for s in shards] == [("i0", "i1", "i2", "i3"), ("i4", "i5", "i6")]
    assert shards[0].canonical == "text 0 | text 1 | text 2 | text 3"
    for shard in shards:
        for order, text in zip(shard.permutations, shard.shuffled):
            assert text == " | ".join(f"text {shard.ids[i][1:]}" for i in order)
    assert build_shards(items, ItemOrderConfig(shards=2, permutations=3, separator=" | "), seed=5) == shards


# --- the exact test -----------------------------------------------------------------------------


def _skewed_null(rng, n_runs: int, shards: int, perms: int) -> np.ndarray:
    """``(n_runs, shards, perms + 1)`` order log-likelihoods under the null, column 0 published.

    Long left tail (an order is sometimes much less likely, never much more), shard
    sizes that differ: what makes a t-test over shards reject too often.
    """
    scale = rng.lognormal(1.0, 0.5, size=(n_runs, shards, 1))
    return -1000.0 - scale * rng.exponential(size=(n_runs, shards, perms + 1))


@pytest.mark.parametrize(("shards", "perms", "n_resamples", "method"), [
    (3, 9, 100_000, "stratified randomisation (exact)"),  # 10 ** 3 assignments, all enumerated
    (10, 10, 999, "stratified randomisation (Monte Carlo)"),  # the 10 x 10
])
def test_skewed_null_rejects_at_alpha_against_theory(shards, perms, n_resamples, method):
    rng = np.random.default_rng(2024)
    n_runs = 3000
    runs = _skewed_null(rng, n_runs, shards, perms)
    results = [item_order_test(r[:, 0], r[:, 1:], n_resamples=n_resamples, rng=k) for k, r in enumerate(runs)]
    assert {r.method for r in results} == {method}
    p = np.array([r.pvalue for r in results])
    se = math.sqrt(0.05 * 0.95 / n_runs)
    for level in (0.05, 0.1):  # exact: P(p <= level) = level, up to binomial error
        assert abs(np.mean(p <= level) - level) <= 3 * math.sqrt(level * (1 - level) / n_runs), level
    assert abs(np.mean(p <= 0.05) - 0.05) <= 3 * se


def test_enumeration_and_monte_carlo_agree():
    rng = np.random.default_rng(7)
    run = _skewed_null(rng, 1, 6, 6)[0]  # 7 ** 6 = 117,649 assignments
    canonical, shuffled = run[:, 0] + 0.5, run[:, 1:]
    exact = item_order_test(canonical, shuffled, n_resamples=200_000)
    mc = item_order_test(canonical, shuffled, n_resamples=100_000, rng=3)
    assert exact.method.endswith("(exact)") and exact.null_distribution.size == 7**6
    assert mc.method.endswith("(Monte Carlo)") and mc.null_distribution.size == 100_000
    assert 0.01 < exact.pvalue < 0.5 and mc.statistic == exact.statistic
    assert mc.pvalue == pytest.approx(exact.pvalue, abs=4 * math.sqrt(exact.pvalue / 100_000) + 1e-5)
    assert mc.null_distribution.std() == pytest.approx(exact.null_distribution.std(), rel=0.01)
    for alternative in ("less", "two-sided"):
        e = item_order_test(canonical, shuffled, alternative=alternative, n_resamples=200_000).pvalue
        m = item_order_test(canonical, shuffled, alternative=alternative, n_resamples=100_000, rng=3).pvalue
        assert m == pytest.approx(e, abs=0.01)
    assert mc.confidence_interval.low == pytest.approx(exact.confidence_interval.low, abs=0.2)
    assert mc.confidence_interval.high == pytest.approx(exact.confidence_interval.high, abs=0.2)
    # the same data and seed give the same draws; no seed: one derived from the data
    assert item_order_test(canonical, shuffled, n_resamples=1000, rng=3).pvalue == \
        item_order_test(canonical, shuffled, n_resamples=1000, rng=3).pvalue
    assert item_order_test(canonical, shuffled, n_resamples=1000).pvalue == \
        item_order_test(canonical, shuffled, n_resamples=1000).pvalue


def test_two_shards_one_permutation_against_hand_enumeration():
    # shard 1: published -10, shuffled -13 -> gaps +3 (published) / -3 (shuffled plays published)
    # shard 2: published -21, shuffled -20 -> gaps -1 / +1
    # the 4 assignments: (+3 - 1)/2 = 1 (observed), (+3 + 1)/2 = 2, (-3 - 1)/2 = -2, (-3 + 1)/2 = -1
    res = item_order_test([-10.0, -21.0], [[-13.0], [-20.0]])
    assert res.statistic == 1.0 and sorted(res.null_distribution.tolist()) == [-2.0, -1.0, 1.0, 2.0]
    assert res.pvalue == 2 / 4  # 1 and 2 are >= 1
    assert item_order_test([-10.0, -21.0], [[-13.0], [-20.0]], alternative="less").pvalue == 3 / 4
    assert item_order_test([-10.0, -21.0], [[-13.0], [-20.0]], alternative="two-sided").pvalue == 1.0
    top = item_order_test([-10.0, -20.0], [[-13.0], [-21.0]])  # observed (3 + 1)/2 = 2, the largest
    assert (top.statistic, top.pvalue, top.method) == (2.0, 1 / 4, "stratified randomisation (exact)")
    assert item_order_test([-10.0, -20.0], [[-13.0], [-21.0]], alternative="two-sided").pvalue == 1 / 2
    # 4 assignments cannot reject at 0.025 per side: the CI is unbounded (None in JSON)
    assert top.to_dict()["confidence_interval"] == [None, None]
    assert top.to_dict()["n_shards"] == 2 and top.to_dict()["n_permutations"] == 1


def test_one_shard_keeps_the_permutation_p_value():
    shuffled = np.array([-1005.0, -1002.0, -1000.0, -999.0, -1001.0])
    for alternative, expected in (("greater", 3 / 6), ("less", 5 / 6), ("two-sided", 1.0)):
        res = item_order_test([-1000.0], shuffled, alternative=alternative)  # ties count on both sides
        assert res.pvalue == pytest.approx(expected) and res.method == "permutation"


def test_confidence_interval_inverts_the_test():
    rng = np.random.default_rng(11)
    run = _skewed_null(rng, 1, 3, 4)[0]  # 125 assignments: ends at level 0.9 are reachable
    canonical, shuffled = run[:, 0] + 2.0, run[:, 1:]
    res = item_order_test(canonical, shuffled, confidence_level=0.9)
    low, high = res.confidence_interval
    assert low < res.statistic < high
    eps = 1e-6
    # just inside an end the one-sided test at 0.05 does not reject the shifted data; just outside it does
    assert item_order_test(canonical - (low + eps), shuffled).pvalue > 0.05
    assert item_order_test(canonical - (low - eps), shuffled).pvalue <= 0.05
    assert item_order_test(canonical - (high - eps), shuffled, alternative="less").pvalue > 0.05
    assert item_order_test(canonical - (high + eps), shuffled, alternative="less").pvalue <= 0.05


def test_minimum_detectable_effect_has_its_power_against_simulation():
    rng = np.random.default_rng(5)
    shards, perms, n_runs = 20, 10, 400
    null = rng.normal(-1000, 3, size=(shards, perms + 1))
    mde = item_order_mde(null[:, 0], null[:, 1:], alpha=0.05, power=0.8)
    runs = rng.normal(-1000, 3, size=(n_runs, shards, perms + 1))
    hits = [item_order_test(r[:, 0] + mde, r[:, 1:], n_resamples=999, rng=k).pvalue <= 0.05
            for k, r in enumerate(runs)]
    assert 0.8 - 0.08 <= np.mean(hits) <= 0.8 + 0.08


def test_order_test_errors_name_the_parameter():
    with pytest.raises(InputError, match=r"`shuffled` must have shape \(n_shards, n_permutations\) with n_shards = "
                                         r"len\(canonical\) = 2; got \(3, 4\)"):
        item_order_test([1.0, 2.0], np.ones((3, 4)))
    with pytest.raises(InputError, match=r"`shuffled` needs at least one shuffled ordering per shard"):
        item_order_test([1.0, 2.0], np.ones((2, 0)))
    with pytest.raises(InputError, match=r"`canonical` and `shuffled` log-likelihoods must be finite; found 1 nan"):
        item_order_test([1.0, np.nan], np.ones((2, 3)))
    with pytest.raises(InputError, match=r"`n_resamples` must be a positive integer; got 0"):
        item_order_test([1.0, 2.0], np.ones((2, 3)), n_resamples=0)
    with pytest.raises(InputError, match=r"`alternative` must be one of \['less', 'greater', 'two-sided'\]"):
        item_order_test([1.0, 2.0], np.ones((2, 3)), alternative="bigger")
    with pytest.raises(InputError, match=r"`confidence_level` must be a number strictly between 0 and 1; got 1.5"):
        item_order_test([1.0, 2.0], np.ones((2, 3)), confidence_level=1.5)
    with pytest.raises(InputError, match=r"`power` must be a number strictly between 0 and 1; got 0"):
        item_order_mde([1.0, 2.0], np.ones((2, 3)), power=0)


def test_exact_and_monte_carlo_are_fast_at_oren_et_al_sizes():
    import time

    rng = np.random.default_rng(0)
    run = _skewed_null(rng, 1, 50, 250)[0]
    t0 = time.perf_counter()
    res = item_order_test(run[:, 0], run[:, 1:])  # 100,000 resamples of 50 shards
    assert time.perf_counter() - t0 < 2.0 and res.null_distribution.size == 100_000


# --- a sorted published order ----------------------------------------------------------------------


def test_sorted_ids_are_recognised_and_shuffled_ones_are_not():
    assert sorted_ids(["1", "2", "10", "11"]) == "ascending (as integers)"  # not sorted as strings
    assert sorted_ids(["problem/0", "problem/1", "problem/2", "problem/10"]) == "ascending (digit runs as numbers)"
    assert sorted_ids(["apple", "banana", "cherry"]) == "ascending (as strings)"
    assert sorted_ids(["30", "20", "10"]) == "descending (as integers)"
    assert sorted_ids(["problem/2", "problem/10", "problem/0", "problem/1"]) is None
    assert sorted_ids(["10", "2", "11", "1"]) is None
    assert sorted_ids(["b", "a"]) is None  # two ids are sorted by chance half the time
    ids = [f"task-{i}" for i in np.random.default_rng(1).permutation(40)]
    assert sorted_ids(ids) is None and sorted_order_warning(ids) is None
    sentence = sorted_order_warning([f"task-{i}" for i in range(40)])
    assert "sorted in the published order (ascending (digit runs as numbers): 'task-0', 'task-1', 'task-2'" in sentence
    assert "reasons other than contamination" in sentence


def test_order_stage_warns_for_sorted_ids_only(tiny, tmp_path):
    from tiny_models import tiny_corpus

    root, model, _ = tiny
    lines = tiny_corpus(12, seed=3)
    ids = [f"q{i}" for i in np.random.default_rng(0).permutation(12)]
    shuffled_ids = tmp_path / "shuffled.jsonl"
    shuffled_ids.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, lines)))
    config = ItemOrderConfig(shards=2, permutations=2, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PublishedOrderWarning)
        quiet = item_order_scores(model, shuffled_ids, tmp_path / "quiet.json", config)
    manifest = json.loads(quiet.manifest.read_text())
    assert not quiet.published_order_sorted and quiet.warnings == []
    assert manifest["published_order_sorted"] is False and manifest["warnings"] == []
    sorted_data = tmp_path / "sorted.jsonl"
    sorted_data.write_text("".join(json.dumps({"id": str(k), "text": t}) + "\n" for k, t in enumerate(lines)))
    with pytest.warns(PublishedOrderWarning, match=r"sorted in the published order \(ascending \(as integers\)"):
        loud = item_order_scores(model, sorted_data, tmp_path / "loud.json", config)
    assert json.loads(loud.manifest.read_text())["published_order_sorted"] is True
    assert json.loads(loud.out.read_text())["warnings"] == loud.warnings and len(loud.warnings) == 1
    # ids that are record numbers (no id field) say nothing about the file's order
    with warnings.catch_warnings():
        warnings.simplefilter("error", PublishedOrderWarning)
        item_order_scores(model, sorted_data, tmp_path / "numbers.json", config, ScoreSettings(id_field=None))


# --- the statistic on a model -------------------------------------------------------------------


def _direct_logprob(model_dir: Path, text: str, *, max_length: int | None = None, stride: int | None = None) -> float:
    """Sum of log p(token | context) computed directly from the model's logits, windows written out by hand."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    max_length = max_length or len(ids)
    stride = stride or max_length // 2
    total, scored = 0.0, 1  # position 0 is context only
    end = min(len(ids), max_length)
    windows = [(0, end, 1)]
    while end < len(ids):
        new_end = min(len(ids), end + stride)
        windows.append((new_end - max_length, new_end, end))
        end = new_end
    with torch.no_grad():
        for start, stop, first in windows:
            window = torch.tensor([ids[start:stop]])
            logp = torch.log_softmax(model(window).logits[0].double(), -1)
            for t in range(first, stop):
                total += float(logp[t - start - 1, ids[t]])
                scored += 1
    assert scored == len(ids)
    return total


@pytest.mark.filterwarnings("ignore::contaudit.scoring.item_order.PublishedOrderWarning")  # ids q0, q1, ...
def test_statistic_matches_a_direct_computation_on_a_tiny_model(tiny):
    root, model, data = tiny
    config = ItemOrderConfig(shards=3, permutations=4, seed=11)
    r = item_order_scores(model, data, root / "full.json", config, ScoreSettings(use_cache=False))
    from contaudit.io import load_items

    shards = build_shards(load_items(data), config, 11)
    assert r.canonical.shape == (3,) and r.shuffled.shape == (3, 4)
    for s, shard in enumerate(shards):
        assert r.canonical[s] == pytest.approx(_direct_logprob(model, shard.canonical), rel=1e-5)
        assert r.shuffled[s, 1] == pytest.approx(_direct_logprob(model, shard.shuffled[1]), rel=1e-5)
    # a sliding window over shards longer than the context scores every token once, as written out by hand
    w = item_order_scores(model, data, root / "windows.json", config,
                          ScoreSettings(max_length=16, stride=8, use_cache=False))
    assert w.canonical[0] == pytest.approx(_direct_logprob(model, shards[0].canonical, max_length=16, stride=8),
                                           rel=1e-5)
    assert w.canonical[0] < r.canonical[0]  # less context: less likely


def _enumerated_p(canonical, shuffled) -> float:
    """The exact 'greater' p-value written out: every choice of one "published" order per shard."""
    orders = np.column_stack([canonical, shuffled])
    gap = [[row[j] - np.delete(row, j).mean() for j in range(row.size)] for row in orders]
    combos = [np.mean([gap[s][j] for s, j in enumerate(pick)])
              for pick in itertools.product(range(orders.shape[1]), repeat=len(orders))]
    observed = np.mean([g[0] for g in gap])
    return float(np.mean(np.array(combos) >= observed - 1e-9))


def test_file_manifest_cache_and_p_value_against_enumeration(tiny):
    from contaudit.analysis.inputs import read_item_order

    root, model, data = tiny
    out = root / "run" / "item_order.json"
    config = ItemOrderConfig(shards=3, permutations=5, separator="\n", seed=2)
    with pytest.warns(PublishedOrderWarning, match=r"ids are sorted in the published order \(ascending \(digit"):
        first = item_order_scores(model, data, out, config)  # ids q0, q1, ..., q11
    written = json.loads(out.read_text())
    canonical, shuffled = read_item_order(out)
    assert np.allclose(canonical, first.canonical) and np.allclose(shuffled, first.shuffled)
    assert written["settings"]["separator"] == "\n" and written["settings"]["seed"] == 2
    assert [s["n_items"] for s in written["shards"]] == [4, 4, 4] and len(written["permutations"][0]) == 5
    manifest = json.loads((root / "run" / "item_order.manifest.json").read_text())
    assert manifest["stage"] == "item_order" and manifest["model"]["id"] == first.model_id
    assert manifest["parameters"]["seed"] == 2 and manifest["parameters"]["separator"] == "\n"
    assert manifest["published_order_sorted"] is True and written["published_order_sorted"] is True
    assert manifest["warnings"] == written["warnings"] == first.warnings and "'q0', 'q1', 'q2'" in first.warnings[0]
    expected = _enumerated_p(first.canonical, first.shuffled)  # 6 ** 3 = 216 assignments
    assert first.test().method == "stratified randomisation (exact)"
    assert first.test().pvalue == pytest.approx(expected) and written["test"]["pvalue"] == pytest.approx(expected)
    with pytest.warns(PublishedOrderWarning):
        again = item_order_scores(model, data, out, config)  # every order from the cache
    assert again.tokens_computed == 0 and again.from_cache == manifest["counts"]["texts"] > 3  # distinct orders
    assert np.array_equal(again.shuffled, first.shuffled)


@pytest.mark.filterwarnings("ignore::contaudit.scoring.item_order.PublishedOrderWarning")  # ids q0, q1, ...
def test_replicas_give_the_file_of_one_process_and_a_replica_session_is_used(tiny, tmp_path, monkeypatch):
    from contaudit.scoring import engine, open_model

    root, model, data = tiny
    config = ItemOrderConfig(shards=3, permutations=4, seed=11)
    one = item_order_scores(model, data, tmp_path / "one.json", config, ScoreSettings(device="cpu", use_cache=False))
    monkeypatch.setattr(engine, "load_model", lambda *a, **k: pytest.fail("the driver loaded the model"))
    replicas = ScoreSettings(device="cpu", use_cache=False, replicas=2)
    item_order_scores(model, data, tmp_path / "two.json", config, replicas)
    with open_model(model, replicas) as session:  # as an audit passes the suspect's session
        reused = item_order_scores(model, data, tmp_path / "session.json", config, replicas, session=session)
        assert session.runner.facts["replicas"] == 2
    assert np.array_equal(reused.canonical, one.canonical) and np.array_equal(reused.shuffled, one.shuffled)
    assert (tmp_path / "two.json").read_bytes() == (tmp_path / "session.json").read_bytes() \
        == (tmp_path / "one.json").read_bytes()


@pytest.mark.filterwarnings("ignore::contaudit.scoring.item_order.PublishedOrderWarning")  # ids q0, q1, ...
def test_bad_inputs_name_the_setting(tiny, tmp_path):
    root, model, data = tiny
    with pytest.raises(InputError, match=r"`shards` \(7\) must be at most half the number of items \(12\)"):
        item_order_scores(model, data, tmp_path / "o.json", ItemOrderConfig(shards=7))
    with pytest.raises(InputError, match="must be a .json file path"):
        item_order_scores(model, data, tmp_path / "o.jsonl", ItemOrderConfig(shards=2))
    with pytest.raises(InputError, match=r"`permutations` must be an integer >= 1; got 0"):
        item_order_scores(model, data, tmp_path / "o.json", ItemOrderConfig(shards=2, permutations=0))


@pytest.mark.filterwarnings("ignore::contaudit.scoring.item_order.PublishedOrderWarning")  # ids q0, q1, ...
def test_cli_order_writes_the_file_analyze_reads(tiny, tmp_path):
    root, model, data = tiny
    out = tmp_path / "order.json"
    result = runner.invoke(app, ["order", "--model", str(model), "--data", str(data), "--out", str(out),
                                 "--shards", "3", "--permutations", "4", "--separator", "\\n---\\n", "--seed", "9"])
    assert result.exit_code == 0, result.output
    assert "order test: gap" in result.output and "3 shards x 4 shuffled orders" in result.output
    assert json.loads(out.read_text())["settings"]["separator"] == "\n---\n"
    bad = runner.invoke(app, ["order", "--model", str(model), "--data", str(data), "--out", str(out),
                              "--shards", "9"])
    assert bad.exit_code == 2 and "at most half the number of items" in bad.output


# --- protocols without a clean model --------------------------------------------------------------


def _protocol(tmp_path: Path, text: str) -> Path:
    for name in ("suspect", "clean"):
        (tmp_path / name).mkdir(exist_ok=True)
    for name in ("test", "shadow"):
        (tmp_path / f"{name}.jsonl").write_text('{"id": "a", "text": "x"}\n')
    path = tmp_path / "p.toml"
    path.write_text('[models.suspect]\npath = "suspect"\n' + text +
                    '[sets.test]\npath = "test.jsonl"\n[sets.shadow]\npath = "shadow.jsonl"\n')
    return path


def test_a_protocol_without_a_clean_model_runs_the_order_test_by_default(tmp_path):
    from contaudit.protocol import effective_item_order, load_protocol

    p = load_protocol(_protocol(tmp_path, "[analysis]\nseed = 5\n"))
    assert p.models.clean is None and p.models.panel == ()
    assert effective_item_order(p) == ItemOrderConfig(seed=5)
    p = load_protocol(_protocol(tmp_path, '[item_order]\nshards = 4\npermutations = 30\nseparator = "\\n"\n'))
    assert effective_item_order(p) == ItemOrderConfig(shards=4, permutations=30, separator="\n",
                                                      seed=AnalysisSettings().seed)
    with_clean = load_protocol(_protocol(tmp_path, '[models.clean]\npath = "clean"\n'))
    assert effective_item_order(with_clean) is None  # with a clean model: only when [item_order] asks
    assert with_clean.to_dict()["item_order"] is None
    asked = load_protocol(_protocol(tmp_path, '[models.clean]\npath = "clean"\n[item_order]\nseed = 3\n'))
    assert effective_item_order(asked) == ItemOrderConfig(seed=3)


def test_protocol_errors_name_the_item_order_key(tmp_path):
    with pytest.raises(ProtocolError, match=r"key `item_order.shards`: must be an integer >= 1; got 0"):
        from contaudit.protocol import load_protocol

        load_protocol(_protocol(tmp_path, "[item_order]\nshards = 0\n"))
    with pytest.raises(ProtocolError, match=r"unknown key `item_order.shard`"):
        load_protocol(_protocol(tmp_path, "[item_order]\nshard = 3\n"))
    with pytest.raises(ProtocolError, match=r"key `item_order.separator`: must be a non-empty string"):
        load_protocol(_protocol(tmp_path, '[item_order]\nseparator = ""\n'))
    with pytest.raises(ProtocolError, match=r"key `models.reference`: needs \[models.clean\]"):
        load_protocol(_protocol(tmp_path, '[[models.reference]]\npath = "clean"\n'))


# --- analysis and report without a clean model -------------------------------------------------------


def _suspect_files(directory: Path, n: int = 40) -> dict[str, str]:
    rng = np.random.default_rng(4)
    files = {}
    for name in ("test", "shadow"):
        path = directory / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"id": f"{name}{i}", "nll_mean": float(rng.normal(2, 0.3)),
                                            "minkpp_20": float(rng.normal(-1, 0.2)), "n_tokens": 50}) + "\n"
                                for i in range(n)))
        files[f"suspect_{name}"] = str(path)
    return files


def _order_file(path: Path, gap: float, *, shards: int = 10, perms: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    shuffled = rng.normal(-1000, 3, size=(shards, perms))
    canonical = rng.normal(-1000, 3, size=shards) + gap
    path.write_text(json.dumps({"canonical": canonical.tolist(), "shuffled": shuffled.tolist(),
                                "settings": {"shards": shards, "permutations": perms, "separator": "\n\n", "seed": 1}}))
    return path


def test_without_a_clean_model_the_order_test_decides_and_caps_at_suspect(tmp_path):
    from contaudit.analysis import analyze

    files = _suspect_files(tmp_path)
    leaked = analyze(**files, item_order=_order_file(tmp_path / "leak.json", gap=8.0), protocol=FAST,
                     shadow_origin="random_split")
    v = leaked["verdict"]
    assert v["label"] == "SUSPECT" and [t["name"] for t in v["tests"]] == ["item_order"]
    assert v["tests"][0]["counts"] and "published item order more likely" in " ".join(v["reasons"])
    assert any("There is no clean model" in r and "at most SUSPECT" in r for r in v["reasons"])
    assert leaked["design"]["n_clean_models"] == 0 and leaked["design"]["test"] == "order test"
    assert leaked["perplexity_did"] is None and leaked["memorization_did"] is None
    assert leaked["supporting"]["minkpp_did"]["suspect_only"] and leaked["supporting"]["minkpp_did"]["caveat"] is None
    assert leaked["supporting"]["dose_response"]["available"] is False
    io = leaked["supporting"]["item_order"]
    assert len(io["per_shard"]) == 10 and io["settings"]["shards"] == 10 and io["minimum_detectable_effect"] > 0
    assert "d" not in leaked["items"]["test"][0] and leaked["items"]["test"][0]["z_vs_shadow"] is not None

    null = analyze(**files, item_order=_order_file(tmp_path / "null.json", gap=0.0, seed=3), protocol=FAST)
    assert null["verdict"]["label"] == "NO_EVIDENCE"
    assert any("not proof of a clean model" in r for r in null["verdict"]["reasons"])
    assert "a later set" in null["supporting"]["minkpp_did"]["caveat"]  # sets not exchangeable: Min-K%++ may be shift

    missing = analyze(**files, protocol=FAST)
    assert missing["verdict"]["label"] == "INVALID_DESIGN"
    assert any("no item-order log-likelihoods" in r for r in missing["verdict"]["reasons"])


def test_min_k_plus_plus_is_named_among_the_reasons_but_does_not_decide(tmp_path):
    from contaudit.analysis import analyze

    files = _suspect_files(tmp_path)
    shadow = [json.loads(line) for line in Path(files["suspect_shadow"]).read_text().splitlines()]
    Path(files["suspect_shadow"]).write_text("".join(json.dumps({**r, "minkpp_20": r["minkpp_20"] - 0.5}) + "\n"
                                                     for r in shadow))
    results = analyze(**files, item_order=_order_file(tmp_path / "null.json", gap=0.0, seed=3), protocol=FAST,
                      shadow_origin="random_split")
    assert results["verdict"]["label"] == "NO_EVIDENCE"  # the order test alone decides
    assert any("Min-K%++ ranks test items as more member-like" in r and "random split" in r
               for r in results["verdict"]["reasons"])


def test_analyze_needs_both_clean_files_or_neither(tmp_path):
    from contaudit.analysis import analyze

    files = _suspect_files(tmp_path)
    with pytest.raises(InputError, match="give the clean model's scores of both sets"):
        analyze(**files, clean_test=files["suspect_test"], protocol=FAST)
    result = runner.invoke(app, ["analyze", "--suspect-test", files["suspect_test"], "--suspect-shadow",
                                 files["suspect_shadow"], "--item-order", str(_order_file(tmp_path / "o.json", 8.0)),
                                 "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("SUSPECT: order test +")


def test_report_without_a_clean_model_explains_the_limit(tmp_path):
    from contaudit.analysis import analyze
    from contaudit.report import write_report

    files = _suspect_files(tmp_path)
    analyze(**files, item_order=_order_file(tmp_path / "leak.json", gap=8.0), protocol=FAST, out=tmp_path / "run")
    report = write_report(tmp_path / "run")
    md = report.markdown.read_text()
    assert "**Verdict: SUSPECT** — Suspect: the suspect prefers the benchmark's published item order" in md
    assert "There is no clean model" in md and "Order test (Oren et al. 2023)" in md
    assert "Min-K%++, suspect only" in md and "Test items the suspect finds easiest" in md
    assert sorted(p.name for p in report.plots) == ["estimates.png", "item_order.png"]
    page = report.html.read_text()
    assert ">SUSPECT<" in page and "no clean model" in page.lower()
