"""The item-order statistic (Oren et al. 2023): shards, seeded orders, log-likelihoods, the test,
the audit without a clean model, and its report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from contaudit.cli import app
from contaudit.config import AnalysisSettings, ItemOrderConfig, ScoreSettings
from contaudit.errors import InputError, ProtocolError
from contaudit.io import Item
from contaudit.scoring.item_order import build_shards, draw_permutations, item_order_scores, shard_bounds

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


def test_file_manifest_cache_and_p_value_against_scipy(tiny):
    from contaudit.analysis.analyze import read_item_order

    root, model, data = tiny
    out = root / "run" / "item_order.json"
    config = ItemOrderConfig(shards=3, permutations=5, separator="\n", seed=2)
    first = item_order_scores(model, data, out, config)
    written = json.loads(out.read_text())
    canonical, shuffled = read_item_order(out)
    assert np.allclose(canonical, first.canonical) and np.allclose(shuffled, first.shuffled)
    assert written["settings"]["separator"] == "\n" and written["settings"]["seed"] == 2
    assert [s["n_items"] for s in written["shards"]] == [4, 4, 4] and len(written["permutations"][0]) == 5
    manifest = json.loads((root / "run" / "item_order.manifest.json").read_text())
    assert manifest["stage"] == "item_order" and manifest["model"]["id"] == first.model_id
    assert manifest["parameters"]["seed"] == 2 and manifest["parameters"]["separator"] == "\n"
    gaps = first.canonical - first.shuffled.mean(axis=1)
    expected = stats.ttest_1samp(gaps, 0.0, alternative="greater")
    assert first.test().pvalue == pytest.approx(expected.pvalue) and written["test"]["pvalue"] == pytest.approx(
        expected.pvalue)
    again = item_order_scores(model, data, out, config)  # every order from the cache
    assert again.tokens_computed == 0 and again.from_cache == manifest["counts"]["texts"] > 3  # distinct orders
    assert np.array_equal(again.shuffled, first.shuffled)


def test_bad_inputs_name_the_setting(tiny, tmp_path):
    root, model, data = tiny
    with pytest.raises(InputError, match=r"`shards` \(7\) must be at most half the number of items \(12\)"):
        item_order_scores(model, data, tmp_path / "o.json", ItemOrderConfig(shards=7))
    with pytest.raises(InputError, match="must be a .json file path"):
        item_order_scores(model, data, tmp_path / "o.jsonl", ItemOrderConfig(shards=2))
    with pytest.raises(InputError, match=r"`permutations` must be an integer >= 1; got 0"):
        item_order_scores(model, data, tmp_path / "o.json", ItemOrderConfig(shards=2, permutations=0))


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
