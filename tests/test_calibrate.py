"""Calibration summaries: detection rates, false-positive rate, smallest detected k, plot."""

import json

import pytest

from contaudit.errors import InputError

from contaudit.calibrate import detection_rates, plot_power_curve, calibration_markdown, summarize
from contaudit.calibrate.rates import run_record as _run_record


def runs(table):
    return [{"k": k, "seed": s, "verdict": v} for k, verdicts in table.items() for s, v in enumerate(verdicts)]


def test_summary_counts_only_contaminated_as_detected():
    table = {0: ["NO_EVIDENCE", "SUSPECT", "NO_EVIDENCE", "CONTAMINATED", "NO_EVIDENCE"],
             1: ["SUSPECT", "CONTAMINATED", "NO_EVIDENCE", "NO_EVIDENCE", "NO_EVIDENCE"],
             4: ["CONTAMINATED"] * 4 + ["SUSPECT"],
             8: ["CONTAMINATED"] * 5}
    detection, fpr, smallest = summarize(runs(table))
    assert detection == {0: 0.2, 1: 0.2, 4: 0.8, 8: 1.0}
    assert fpr == 0.2 and smallest == 4
    assert summarize(runs({2: ["SUSPECT"]}))[1:] == (None, None)


def test_rates_per_outcome():
    rows = [{"k": 0, "verdict": "NO_EVIDENCE", "perplexity_counts": False, "memorization_counts": False},
            {"k": 0, "verdict": "SUSPECT", "perplexity_counts": True, "memorization_counts": False},
            {"k": 4, "verdict": "SUSPECT", "perplexity_counts": False, "memorization_counts": True},
            {"k": 4, "verdict": "CONTAMINATED", "perplexity_counts": True, "memorization_counts": True},
            {"k": 0, "verdict": "INCONCLUSIVE", "perplexity_counts": True, "memorization_counts": False},
            {"k": 0, "verdict": "NO_EVIDENCE", "perplexity_counts": False, "memorization_counts": False}]
    assert detection_rates(rows) == {"contaminated": {0: 0.0, 4: 0.5}, "suspect_or_higher": {0: 0.25, 4: 1.0},
                                     "perplexity_test": {0: 0.5, 4: 0.5}, "memorization_test": {0: 0.0, 4: 1.0},
                                     "inconclusive": {0: 0.25, 4: 0.0}}


def test_plot_and_markdown(tmp_path):
    detection = {0: 0.0, 2: 0.4, 8: 1.0}
    rates = {"suspect_or_higher": {0: 0.2, 2: 0.6, 8: 1.0}, "perplexity_test": {0: 0.2, 2: 0.6, 8: 1.0}}
    path = plot_power_curve(detection, 5, tmp_path / "curve.png", rates)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = calibration_markdown(detection, 0.0, 8, 5, rates)
    assert "| 2 | 0.40 | 0.60 | 0.60 |" in md and "False-positive rate at k = 0: 0.00" in md and "Smallest k" in md
    assert "| 2 | 0.40 |" in calibration_markdown(detection, 0.0, 8, 5)


def test_run_record_reads_results_schema():
    results = {"verdict": {"label": "SUSPECT", "tests": [{"name": "perplexity_did", "counts": True},
                                                         {"name": "memorization_did", "counts": False}]},
               "perplexity_did": {"estimate": -0.2, "pvalue": 0.001},
               "memorization_did": {"primary_metric": "exact_match", "exact_match": {"estimate": 0.1, "pvalue": 0.3}}}
    rec = _run_record(4, 2, results)
    assert rec == {"k": 4, "seed": 2, "verdict": "SUSPECT", "perplexity_did": -0.2, "perplexity_p": 0.001,
                   "memorization_did": 0.1, "memorization_p": 0.3, "perplexity_counts": True,
                   "memorization_counts": False}


def test_bad_grid_is_rejected(tmp_path):
    from contaudit.calibrate import calibrate
    from contaudit.errors import InputError

    with pytest.raises(InputError, match="`dups` must be non-negative"):
        calibrate(tmp_path, dups=(-1,))
    with pytest.raises(InputError, match="`seeds` must be at least 1"):
        calibrate(tmp_path, seeds=0)


def _results(ppl_p, mem, *, design_ok=True):
    return {"verdict": {"label": "SUSPECT", "tests": []},
            "protocol": {"analysis": {"alpha": 0.05, "min_effect_perplexity": 0.01, "min_effect_memorization": 0.02}},
            "design_checks": [{"name": "balance", "passed": design_ok}],
            "perplexity_did": {"estimate": -0.2, "pvalue": ppl_p},
            "memorization_did": {"primary_metric": "exact_match", **mem}}


def test_each_metric_as_if_primary_applies_holm_direction_and_minimum_effect():
    from contaudit.calibrate import if_primary

    mem = {"exact_match": {"estimate": 0.0, "pvalue": 1.0},
           "token_match_frac": {"estimate": 0.01, "pvalue": 0.001},  # significant but below the 0.02 minimum
           "suffix_logprob": {"estimate": 0.17, "pvalue": 0.04}}
    # Holm with perplexity p 0.001: the larger p (0.04) is compared with alpha as is, the smaller doubled
    got = if_primary(_results(0.001, mem))
    assert {m: (r["memorization_counts"], r["contaminated"]) for m, r in got.items()} == {
        "exact_match": (False, False), "token_match_frac": (False, False), "suffix_logprob": (True, True)}
    # perplexity p 0.03 is then the smaller one, doubled to 0.06; step-down keeps 0.04 at 0.06 too
    assert if_primary(_results(0.03, mem))["suffix_logprob"] == {"memorization_counts": False, "contaminated": False,
                                                                 "did": 0.17, "p": 0.04}
    assert not if_primary(_results(0.001, mem, design_ok=False))["suffix_logprob"]["contaminated"]
    rows = [{"k": 0, "verdict": "SUSPECT", **{"if_primary": if_primary(_results(0.5, mem))}},
            {"k": 8, "verdict": "SUSPECT", **{"if_primary": got}}]
    rates = detection_rates(rows)
    assert rates["contaminated[suffix_logprob]"] == {0: 0.0, 8: 1.0}
    assert rates["memorization_test[exact_match]"] == {0: 0.0, 8: 0.0}
    md = calibration_markdown({0: 0.0, 8: 0.0}, 0.0, None, 1, rates)
    assert "CONTAMINATED with suffix_logprob primary" in md and "| 8 | 0.00 | 0.00 | 0.00 | 0.00 | 1.00 | 1.00 |" in md


def test_an_audit_is_reused_only_when_its_results_carry_every_metric(tmp_path):
    import json

    from contaudit.calibrate.audits import _has_every_metric

    path = tmp_path / "results.json"
    assert not _has_every_metric(path)  # no audit yet
    path.write_text("{not json")
    assert not _has_every_metric(path)
    mem = {"primary_metric": "exact_match", "exact_match": {}, "token_match_frac": {}, "suffix_logprob": None}
    path.write_text(json.dumps({"memorization_did": mem}))
    assert not _has_every_metric(path)  # scored before suffix_logprob existed
    path.write_text(json.dumps({"memorization_did": {**mem, "suffix_logprob": {"estimate": 0.1}}}))
    assert _has_every_metric(path)


def test_clopper_pearson_against_known_values():
    from contaudit.calibrate import clopper_pearson

    low, high = clopper_pearson(0, 20)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 20))  # closed form at zero hits
    low, high = clopper_pearson(20, 20)
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 20))
    assert clopper_pearson(0, 0) == (0.0, 1.0)


def test_every_audit_seed_has_its_own_models():
    from contaudit.calibrate import seed_of

    seeds = {seed_of(s, m) for s in range(20) for m in range(6)}
    assert len(seeds) == 120


def _own_setting_data(tmp_path, steps: int):
    """A tiny user setting: planted corpus, test and shadow halves, fine-tuning settings, the analysis protocol."""
    from contaudit.finetune import TrainConfig

    from planted import make_planted

    planted = make_planted(tmp_path, n_items=40, n_docs=60, doc_words=200)
    rows = [json.loads(line) for line in planted.bench.read_text().splitlines()]
    for name, part in (("test", rows[0::2]), ("shadow", rows[1::2])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    train = TrainConfig(steps=steps, lr=5e-3, batch_size=4, seq_len=128, warmup_steps=1, eval_every=steps,
                        heldout_blocks=1, threads=1, device="cpu", mixed_precision=False)
    protocol = tmp_path / "analysis.toml"
    protocol.write_text('[models.suspect]\npath = "x"\n[models.clean]\npath = "y"\n[sets.test]\npath = "t"\n'
                        '[sets.shadow]\npath = "s"\n[probes]\nsuffix_words = 12\nmin_seen = 3\n'
                        '[analysis]\nn_permutations = 199\nn_bootstrap = 0\nmin_items = 10\nmin_probes = 3\n')
    return planted, train, protocol


def test_calibrate_in_a_users_own_setting_with_a_reference_panel(tmp_path, monkeypatch):
    """Base model, corpus and sets of the user's own (tiny), two clean models per audit seed."""
    from dataclasses import replace

    from contaudit.calibrate import CalibrationSetting, calibrate
    from contaudit.finetune import ModelConfig, pretrain

    planted, train, protocol = _own_setting_data(tmp_path, steps=12)
    pretrain(planted.corpus, tmp_path / "base", config=replace(train, steps=4),
             model_config=ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=128, vocab_size=400,
                                      tokenizer_max_chars=200_000))
    setting = CalibrationSetting(tmp_path / "base", planted.corpus, tmp_path / "test.jsonl", tmp_path / "shadow.jsonl",
                                 train=train, shadow_origin="random_split")
    result = calibrate(tmp_path / "cal", dups=(0, 1), seeds=2, references=2, setting=setting,
                       analysis_protocol=protocol, log=lambda s: None)
    assert len(result.runs) == 4 and {r["verdict"] for r in result.runs} <= {
        "CONTAMINATED", "SUSPECT", "NO_EVIDENCE", "INVALID_DESIGN"}
    models = sorted(p.name for p in (tmp_path / "cal" / "models").iterdir() if not p.name.startswith("."))  # not locks
    assert models == ["clean-seed0-ref1", "clean-seed0-ref2", "clean-seed1-ref1", "clean-seed1-ref2",
                      "k0-seed0", "k0-seed1", "k1-seed0", "k1-seed1"]
    results = json.loads((tmp_path / "cal" / "audits" / "k1-seed1" / "results.json").read_text())
    assert results["design"]["n_clean_models"] == 2 and results["design"]["shadow_origin"] == "random_split"
    saved = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    low, high = saved["intervals_95"]["contaminated"]["0"]
    assert 0.0 <= low <= saved["rates"]["contaminated"]["0"] <= high <= 1.0
    assert "Clopper-Pearson" in (tmp_path / "cal" / "calibration.md").read_text()

    # Killed after models were retrained (new training settings) but before their audits ran: on the rerun
    # the models are current and the audits' protocols (paths only) unchanged, yet the finished audits
    # belong to the old models and must not be reused (issue 23).
    import contaudit.audit
    from contaudit.models import fingerprint

    retrained = replace(setting, train=replace(train, lr=train.lr * 2))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(contaudit.audit, "run_audit", killed)
    with pytest.raises(KeyboardInterrupt):
        calibrate(tmp_path / "cal", dups=(0, 1), seeds=2, references=2, setting=retrained,
                  analysis_protocol=protocol, log=lambda s: None)
    monkeypatch.undo()
    # This tiny setting's audits run no memorization test, which alone makes calibrate redo them (their
    # results lack a metric); count them complete, so that only the models' identity decides.
    import contaudit.calibrate.audits

    monkeypatch.setattr(contaudit.calibrate.audits, "_has_every_metric", lambda path: True)
    calibrate(tmp_path / "cal", dups=(0, 1), seeds=2, references=2, setting=retrained, analysis_protocol=protocol,
              log=lambda s: None)
    redone = json.loads((tmp_path / "cal" / "audits" / "k0-seed0" / "results.json").read_text())
    assert redone["design"]["models"][0]["fingerprints"] == [fingerprint(tmp_path / "cal" / "models" / "k0-seed0")["id"]]


def test_calibrate_with_a_heterogeneous_panel_of_other_bases(tmp_path):
    """Two more bases of other shapes and vocabularies: each audit's panel is the clean control plus one clean
    fine-tune of each, judged as other families in per-byte units."""
    from dataclasses import replace

    from contaudit.calibrate import CalibrationSetting, calibrate
    from contaudit.finetune import ModelConfig, pretrain

    planted, train, protocol = _own_setting_data(tmp_path, steps=6)
    for name, (layers, width, vocab) in {"base": (1, 32, 400), "other1": (2, 24, 300), "other2": (1, 40, 500)}.items():
        pretrain(planted.corpus, tmp_path / name, config=replace(train, steps=3),
                 model_config=ModelConfig(n_layer=layers, n_head=2, n_embd=width, n_positions=128, vocab_size=vocab,
                                          tokenizer_max_chars=200_000))
    setting = CalibrationSetting(tmp_path / "base", planted.corpus, tmp_path / "test.jsonl", tmp_path / "shadow.jsonl",
                                 train=train, shadow_origin="date_split",
                                 reference_bases=(tmp_path / "other1", tmp_path / "other2"))
    result = calibrate(tmp_path / "cal", dups=(0,), seeds=1, setting=setting, analysis_protocol=protocol,
                       log=lambda s: None)
    assert len(result.runs) == 1
    models = sorted(p.name for p in (tmp_path / "cal" / "models").iterdir() if not p.name.startswith("."))  # not locks
    assert models == ["clean-seed0-base1", "clean-seed0-base2", "clean-seed0-ref1", "k0-seed0"]
    results = json.loads((tmp_path / "cal" / "audits" / "k0-seed0" / "results.json").read_text())
    assert results["design"]["n_clean_models"] == 3 and results["protocol"]["analysis"]["references"] == "families"
    assert results["units"]["perplexity"] == "nats/byte" and results["units"]["n_tokenizers"] == 3
    assert json.loads((tmp_path / "cal" / "calibration.json").read_text())["references"] == "families"
    with pytest.raises(InputError, match="at least 2 reference bases"):
        calibrate(tmp_path / "cal2", setting=replace(setting, reference_bases=(tmp_path / "other1",)))


def test_calibrate_in_a_users_setting_names_a_missing_input(tmp_path):
    from contaudit.calibrate import CalibrationSetting, calibrate

    setting = CalibrationSetting(tmp_path / "nope", tmp_path, tmp_path, tmp_path)
    with pytest.raises(InputError, match=r"the calibration's base does not exist"):
        calibrate(tmp_path / "cal", setting=setting)


def test_each_audit_seed_gets_its_own_analysis_seed_with_a_users_protocol(tmp_path):
    from contaudit.calibrate import analysis_seed
    from contaudit.experiment import write_protocol
    from contaudit.protocol import load_protocol

    tables = {"probes": {"min_seen": 3}, "analysis": {"alpha": 0.01, "adjust_for": ["length"]}}
    paths = {k: tmp_path / k for k in ("suspect", "clean", "test", "shadow", "index", "corpus")}
    loaded = [load_protocol(write_protocol(tmp_path / f"p{s}.toml", name="n", description="d", tables=tables,
                                           seed=analysis_seed(tables, s), **paths), check_paths=False)
              for s in (0, 1)]
    assert loaded[0].analysis.seed == 20240601 and loaded[1].analysis.seed == 20240602
    assert loaded[0].analysis.alpha == 0.01 and loaded[0].analysis.adjust_for == ("length",)
    assert loaded[0].probes.min_seen == 3 and loaded[0].models.clean.path == paths["clean"].resolve()
    assert analysis_seed({"analysis": {"seed": 7}}, 3) == 10 and analysis_seed({}, 3) == 20240604


def test_calibrate_cli_own_setting_needs_every_input_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from contaudit.cli import app

    result = CliRunner().invoke(app, ["calibrate", "--out", str(tmp_path / "cal"), "--base", str(tmp_path)])
    assert result.exit_code == 2
    assert "needs --base, --corpus, --test and --shadow; missing --corpus, --test, --shadow" in result.output
    assert not (tmp_path / "cal").exists()  # nothing written


def test_calibrate_needs_at_least_the_clean_control(tmp_path):
    from contaudit.calibrate import calibrate

    with pytest.raises(InputError, match=r"`references` must be at least 1 \(the clean control\), got 0"):
        calibrate(tmp_path / "cal", references=0)
    assert not (tmp_path / "cal").exists()


@pytest.mark.parametrize("args,message", [
    (["--dups", "0,x"], "--dups must be comma-separated integers"),
    (["--dups", "0,-1"], "`dups` must be non-negative integers"),
    (["--protocol", "PROTOCOL"], "key `analysis.alpha`: must be a number in (0, 0.5]"),
])
def test_calibrate_checks_its_inputs_before_pretraining(tmp_path, args, message):
    from typer.testing import CliRunner

    from contaudit.cli import app

    bad = tmp_path / "bad.toml"
    bad.write_text("[analysis]\nalpha = 2.0\n")
    args = [str(bad) if a == "PROTOCOL" else a for a in args]
    result = CliRunner().invoke(app, ["calibrate", "--out", str(tmp_path / "cal"), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert not (tmp_path / "cal").exists()  # no corpus written, no base model pretrained


def test_order_rates_share_the_clean_models_and_count_only_rejections(tmp_path):
    from contaudit.calibrate import order_calibration_markdown, order_rates, plot_order_power

    def run(kind, k, seed, p, est=1.0):
        return {"kind": kind, "k": k, "seed": seed, "estimate": est, "pvalue": p, "detected": p <= 0.05 and est > 0}

    runs = [run("none", 0, s, p) for s, p in enumerate([0.5, 0.03, 0.7, 0.2])]
    runs += [run("ordered", 4, s, p) for s, p in enumerate([0.001, 0.01, 0.2])]
    runs += [run("per_item", 4, s, p) for s, p in enumerate([0.6, 0.04, 0.3])]
    runs += [run("ordered", 8, 0, 0.01, est=-2.0)]  # significant the wrong way: not a detection
    rates, intervals = order_rates(runs)
    assert rates == {"ordered": {0: 0.25, 4: 2 / 3, 8: 0.0}, "per_item": {0: 0.25, 4: 1 / 3}}
    assert intervals["ordered"][0] == intervals["per_item"][0] and intervals["ordered"][0][0] > 0
    md = order_calibration_markdown(runs, rates, intervals, alpha=0.05,
                                    settings={"shards": 10, "permutations": 20, "separator": "\n\n"})
    assert "| none (clean) | 0 | 4 | 0.25 [0.01, 0.81] |" in md and "| ordered | 4 | 3 | 0.67" in md
    assert "False-positive rate at k = 0: 1/4 = 0.25" in md
    path = plot_order_power(rates, intervals, {"ordered": {0: 4, 4: 3, 8: 1}, "per_item": {0: 4, 4: 3}},
                            tmp_path / "order.png", alpha=0.05)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_order_calibration_rejects_a_bad_grid_before_training(tmp_path):
    from contaudit.calibrate import calibrate_order

    with pytest.raises(InputError, match="`kinds` must be some of ordered, per_item; got shuffled"):
        calibrate_order(tmp_path, kinds=("shuffled",))
    with pytest.raises(InputError, match="`dups` must be non-negative"):
        calibrate_order(tmp_path, dups=(-2,))
    assert not any(tmp_path.iterdir())


def test_training_never_replaces_a_folder_contaudit_did_not_write(tmp_path):
    """calibrate trains into OUT/models/NAME with overwrite: a user's folder there was deleted (issue 23)."""
    from contaudit.experiment import train_unless_done

    mine = tmp_path / "models" / "k1-seed0"
    mine.mkdir(parents=True)
    (mine / "weights.bin").write_bytes(b"mine")
    trained = []
    with pytest.raises(InputError, match=r"k1-seed0: holds files contaudit did not write \(no injection.json"):
        train_unless_done(mine, "injection.json", {"parameters": {"dup": 1}}, print, lambda: trained.append(1))
    assert trained == [] and (mine / "weights.bin").read_bytes() == b"mine"
    empty = tmp_path / "models" / "new"
    empty.mkdir()
    assert train_unless_done(empty, "injection.json", {}, print, lambda: trained.append(1)) and trained == [1]
