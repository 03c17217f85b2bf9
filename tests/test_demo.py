"""The demo's stage logic: trained models are reused only when trained as asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contaudit.experiment import train_unless_done


MANIFEST = {"stage": "finetune", "contaudit_version": "test"}  # what makes a manifest contaudit's own


def _train_into(path, calls):
    def train(**settings):
        calls.append(settings)
        path.mkdir(parents=True, exist_ok=True)
        (path / "injection.json").write_text(json.dumps({**MANIFEST, "parameters": settings, "base": {"sha256": "b1"}}))
    return train


def test_a_model_trained_with_the_same_settings_is_reused(tmp_path):
    path, calls, log = tmp_path / "suspect", [], []
    wanted = {"parameters": {"dup": 8, "train": {"steps": 100}}, "base": {"sha256": "b1"}}
    train = _train_into(path, calls)
    train_unless_done(path, "injection.json", wanted, log.append, train, dup=8, train={"steps": 100})
    train_unless_done(path, "injection.json", wanted, log.append, train, dup=8, train={"steps": 100})
    assert len(calls) == 1
    assert log == [f"  reusing {path}"]


def test_other_settings_or_another_base_retrain(tmp_path):
    path, calls, log = tmp_path / "suspect", [], []
    train = _train_into(path, calls)
    train_unless_done(path, "injection.json", {"parameters": {"dup": 8}}, log.append, train, dup=8)
    train_unless_done(path, "injection.json", {"parameters": {"dup": 4}}, log.append, train, dup=4)  # another dup
    train_unless_done(path, "injection.json", {"parameters": {"dup": 4}, "base": {"sha256": "b2"}}, log.append,
             train, dup=4)  # the base model was retrained
    assert [c["dup"] for c in calls] == [8, 4, 4]
    assert all("trained with other settings" in line for line in log)


def test_other_input_data_retrains(tmp_path):
    path, calls, log = tmp_path / "suspect", [], []

    def train(benchmark):
        calls.append(benchmark)
        path.mkdir(parents=True, exist_ok=True)
        (path / "injection.json").write_text(json.dumps({**MANIFEST, "parameters": {"dup": 8}, "inputs": [
            {"role": "corpus", "sha256": "c1"}, {"role": "benchmark", "sha256": benchmark}]}))

    def wanted(benchmark):
        return {"parameters": {"dup": 8}, "inputs": {"corpus": "c1", "benchmark": benchmark}}

    train_unless_done(path, "injection.json", wanted("t1"), log.append, train, "t1")
    train_unless_done(path, "injection.json", wanted("t1"), log.append, train, "t1")  # same data: reused
    train_unless_done(path, "injection.json", wanted("t2"), log.append, train, "t2")  # another test split
    assert calls == ["t1", "t2"]
    assert log == [f"  reusing {path}", f"  {path} was trained with other settings or data: training it again"]


def test_a_stale_manifest_of_contaudit_retrains(tmp_path):
    path, calls = tmp_path / "clean", []
    path.mkdir()
    (path / "injection.json").write_text(json.dumps({**MANIFEST, "parameters": "not a table"}))
    train_unless_done(path, "injection.json", {"parameters": {"dup": 0}}, lambda s: None, _train_into(path, calls), dup=0)
    assert len(calls) == 1


@pytest.mark.parametrize("manifest", ["{not json", json.dumps({"parameters": {"dup": 0}})])
def test_a_folder_contaudit_did_not_write_is_never_replaced(tmp_path, manifest):
    """An unreadable or foreign manifest: the folder may be a user's model, so training refuses to replace it."""
    from contaudit.errors import InputError

    path, calls = tmp_path / "clean", []
    path.mkdir()
    (path / "injection.json").write_text(manifest)
    with pytest.raises(InputError, match="contaudit did not write"):
        train_unless_done(path, "injection.json", {"parameters": {"dup": 0}}, lambda s: None,
                          _train_into(path, calls), dup=0)
    assert calls == [] and (path / "injection.json").read_text() == manifest


def test_demo_runs_end_to_end_and_reuses_its_models(tmp_path):
    """Every stage on the real stdlib corpus and HumanEval, with a tiny model and a few steps.

    Training this short says nothing about the verdict (the full-length run's verdicts are
    in the README); the test checks the stages, files and reuse on a second run.
    """
    from dataclasses import replace

    from contaudit.demo import run_demo
    from contaudit.finetune import DemoTrainingConfig, ModelConfig, TrainConfig

    pretrain = TrainConfig(steps=3, lr=1e-3, batch_size=2, seq_len=64, warmup_steps=1, heldout_blocks=2, eval_every=3)
    finetune = replace(pretrain, steps=60, batch_size=16)  # room for 2 copies of the 82 test items
    config = DemoTrainingConfig(model=ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=256, vocab_size=1024,
                                                  tokenizer_max_chars=300_000),
                                pretrain=pretrain, finetune=finetune, dup=2, threads=1)
    log = []
    result = run_demo(tmp_path / "demo", config=config, log=log.append)
    assert result.suspect_verdict in {"CONTAMINATED", "SUSPECT", "NO_EVIDENCE", "INVALID_DESIGN"}
    assert result.null_verdict in {"CONTAMINATED", "SUSPECT", "NO_EVIDENCE", "INVALID_DESIGN"}
    for stage in ("pretrain", "finetune suspect", "finetune clean", "finetune clean (null seed)",
                  "audit (suspect vs clean)", "audit (clean vs clean, null)"):
        assert stage in result.stage_seconds
    injection = json.loads((tmp_path / "demo" / "models" / "suspect" / "injection.json").read_text())
    assert injection["dup"] == 2 and len(injection["items"]) == 82  # every test item, twice
    assert (tmp_path / "demo" / "audit" / "report.md").exists() and (tmp_path / "demo" / "null" / "report.md").exists()
    results = json.loads((tmp_path / "demo" / "audit" / "results.json").read_text())
    assert results["protocol"]["analysis"]["primary_metric"] == "suffix_logprob"
    assert all(results["memorization_did"][m] is not None for m in ("exact_match", "token_match_frac", "suffix_logprob"))

    # calibrate's guard: the largest k must fit in one fine-tune's tokens, checked before any training
    from contaudit.calibrate.audits import check_largest_k_fits as _check_largest_k_fits
    from contaudit.errors import InputError

    data = {"base": tmp_path / "demo" / "models" / "base", "test": tmp_path / "demo" / "data" / "test.jsonl"}
    _check_largest_k_fits(data["base"], data["test"], 2, finetune)  # the demo just trained with 2 copies
    per_copy = injection["stream"]["injected_tokens"] // 2
    too_many = finetune.tokens // per_copy + 1
    # counted as the stream counts them: the same tokens per copy as the demo's suspect really trained on
    with pytest.raises(InputError, match=f"k = {too_many} copies of the 82 test items take {too_many * per_copy:,} "
                                         f"tokens.* the largest k that fits is {(finetune.tokens - 1) // per_copy}"):
        _check_largest_k_fits(data["base"], data["test"], too_many, finetune)

    again = []
    run_demo(tmp_path / "demo", config=config, log=again.append)
    reused = [line.split()[-1] for line in again if line.startswith("  reusing")]
    assert [Path(p).name for p in reused] == ["base", "suspect", "clean", "clean-null"]
    assert "index: reusing" in "\n".join(again)


def test_a_model_is_known_by_its_content_not_its_folder_or_how_it_was_saved(tmp_path, monkeypatch):
    """Fine-tunes were retrained after the run folder moved (the base's fingerprint held its path), and
    the same weights got another id when HF_HUB_OFFLINE was set at save time (issue 25)."""
    import json
    import shutil

    from contaudit.experiment import train_unless_done
    from contaudit.models import fingerprint
    from tiny_models import save_tiny_model

    base = save_tiny_model(tmp_path / "base", seed=0)
    config = json.loads((base / "tokenizer_config.json").read_text())
    offline = tmp_path / "offline"
    shutil.copytree(base, offline)
    (offline / "tokenizer_config.json").write_text(json.dumps({**config, "local_files_only": True}))
    assert fingerprint(offline)["id"] == fingerprint(base)["id"]
    changed = tmp_path / "changed"
    shutil.copytree(base, changed)
    (changed / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 7}))
    assert fingerprint(changed)["id"] != fingerprint(base)["id"]

    model = tmp_path / "run" / "models" / "k1"
    model.mkdir(parents=True)
    (model / "injection.json").write_text(json.dumps({"stage": "finetune", "contaudit_version": "x",
                                                      "parameters": {"dup": 1},
                                                      "base": {"fingerprint": fingerprint(base)}}))
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "run", moved)
    shutil.move(base, tmp_path / "base-moved")
    wanted = {"parameters": {"dup": 1}, "base": {"fingerprint": {"id": fingerprint(tmp_path / "base-moved")["id"]}}}
    trained = []
    assert not train_unless_done(moved / "models" / "k1", "injection.json", wanted, print, lambda: trained.append(1))
    assert trained == []


def test_the_demo_summary_prints_the_dids_an_audit_prints(tmp_path, monkeypatch):
    """The demo's last lines gave the verdicts only; `contaudit audit` prints the DiDs too (issue 25)."""
    import contaudit.demo
    from contaudit.analysis import analyze
    from contaudit.analysis.simulate import simulate_audit, write_audit
    from contaudit.demo import DemoResult
    from typer.testing import CliRunner

    from contaudit.cli import app

    f = write_audit(simulate_audit(ppl_effect=0.3, mem_effect=0.3, rng=1), tmp_path / "sim")
    results = analyze(f["suspect_test"], f["clean_test"], f["suspect_shadow"], f["clean_shadow"],
                      suspect_probes=f["suspect_probes"], clean_probes=f["clean_probes"], probes=f["probes"],
                      shadow_origin="random_split")
    monkeypatch.setattr(contaudit.demo, "run_demo", lambda *a, **k: DemoResult(
        tmp_path, results["verdict"]["label"], results["verdict"]["label"], results, results))
    output = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo")]).output
    lines = [line for line in output.splitlines() if line.startswith(("suspect vs clean", "clean vs clean"))]
    assert len(lines) == 2 and all("perplexity DiD" in line and "memorization DiD" in line for line in lines)


def test_the_evaluated_demo_trains_on_the_solutions_and_reports_the_pass_rate_inflation(tmp_path):
    """``demo --evaluate``: the suspect's copies carry loss on their canonical solution alone (each starting a
    sequence), the audit runs HumanEval by execution on both models and both halves, and the inflation is the
    DiD of those pass rates. A tiny model passes nothing; the full run's numbers are in the README."""
    from dataclasses import replace

    from contaudit.demo import run_demo
    from contaudit.finetune import DemoTrainingConfig, ModelConfig, TrainConfig

    pretrain = TrainConfig(steps=3, lr=1e-3, batch_size=2, seq_len=256, warmup_steps=1, heldout_blocks=2, eval_every=3)
    memorizing = DemoTrainingConfig.memorizing()
    assert memorizing.answer_field == "canonical_solution" and memorizing.suspect_finetune.align_copies
    assert memorizing.finetune == DemoTrainingConfig().finetune  # the clean controls are the default demo's
    config = replace(memorizing, model=ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=256, vocab_size=1024,
                                                   tokenizer_max_chars=300_000),
                     pretrain=pretrain, finetune=replace(pretrain, steps=2),
                     suspect_finetune=replace(memorizing.suspect_finetune, steps=40, eval_every=40), dup=2, threads=1)
    result = run_demo(tmp_path / "demo", config=config, null_run=False, evaluate=True, log=lambda _: None)
    injection = json.loads((tmp_path / "demo" / "models" / "suspect" / "injection.json").read_text())
    assert injection["parameters"]["answer_field"] == "canonical_solution"
    assert injection["parameters"]["train"]["steps"] == 40 and injection["parameters"]["train"]["align_copies"]
    assert len(injection["items"]) == 82 and all(0 < it["prompt_tokens"] < it["n_tokens"] for it in injection["items"])
    answers = sum((it["n_tokens"] - it["prompt_tokens"] + 1) * it["copies"] for it in injection["items"])
    assert injection["stream"]["loss_tokens"] == answers  # the solutions (and the eos closing each) alone
    assert all(p % 256 == 1 for it in injection["items"] for p in it["positions"])  # eos at a sequence start
    clean = json.loads((tmp_path / "demo" / "models" / "clean" / "injection.json").read_text())
    assert clean["dup"] == 0 and clean["parameters"]["answer_field"] is None and clean["training"]["steps_run"] == 2
    inflation = result.suspect_results["inflation"]
    scores = inflation["scores"]
    assert scores["suspect"]["test"]["n"] == scores["suspect"]["shadow"]["n"] == 82
    by_hand = ((scores["suspect"]["test"]["mean"] - scores["suspect"]["shadow"]["mean"])
               - (scores["clean"]["test"]["mean"] - scores["clean"]["shadow"]["mean"]))
    assert inflation["estimate"] == pytest.approx(by_hand, abs=1e-12)
    assert "loss on its canonical_solution alone" in (tmp_path / "demo" / "protocol.toml").read_text()
