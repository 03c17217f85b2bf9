"""Per-item evaluation outcomes (contaudit/outcomes.py): plain JSONL, hand-written
lm-evaluation-harness samples for each matching rule and error, and a real lm_eval run
on a tiny model over a local-file task."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from contaudit.errors import InputError
from contaudit.io import Item, load_items
from contaudit.outcomes import Outcomes, find_samples_files, read_outcomes

STAMP = "2026-01-02T03-04-05.678901"


def items_of(*pairs: tuple[str, str]) -> list[Item]:
    return [Item(i, text, n + 1, {"id": i, "text": text}) for n, (i, text) in enumerate(pairs)]


ITEMS = items_of(("a", "alpha question"), ("b", "beta question"), ("c", "gamma question"))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def sample(doc: dict, doc_id: int = 0, *, filter: str | None = "none", **metrics) -> dict:
    """One record as ``lm_eval --log_samples`` writes it (lm_eval/evaluator.py, loggers/evaluation_tracker.py)."""
    rec = {"doc_id": doc_id, "doc": doc, "target": "0", "arguments": {"gen_args_0": {"arg_0": "q", "arg_1": " a"}},
           "resps": [[["-1.0", "False"]]], "filtered_resps": [["-1.0", "False"]]}
    if filter is not None:  # files of lm_eval < 0.4.5 have neither 'filter' nor 'metrics'
        rec |= {"filter": filter, "metrics": list(metrics)}
    rec |= {"doc_hash": "0" * 64, "prompt_hash": "1" * 64, "target_hash": "2" * 64}
    return rec | metrics


def samples_file(directory: Path, task: str, records: list[dict], stamp: str = STAMP) -> Path:
    return write_jsonl(directory / "model__dir" / f"samples_{task}_{stamp}.jsonl", records)


def accounted(out: Outcomes) -> bool:
    return out.n_records == out.n_matched + out.unmatched + out.skipped


# ----------------------------------------------------------------------------- plain JSONL


def test_jsonl_scores_by_id_zero_one_bool_and_real(tmp_path):
    path = write_jsonl(tmp_path / "scores.jsonl", [{"id": "a", "score": 1}, {"id": "b", "score": False},
                                                  {"id": "c", "score": 0.25}])
    out = read_outcomes(path, ITEMS)
    assert out.scores == {"a": 1.0, "b": 0.0, "c": 0.25}
    assert (out.format, out.metric, out.task, out.filter) == ("jsonl", "score", None, None)
    assert out.path == str(path) and out.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (out.n_records, out.n_matched, out.unmatched, out.skipped, out.missing) == (3, 3, 0, 0, 0)
    assert json.loads(json.dumps(out.summary()))["n_matched"] == 3 and "scores" not in out.summary()


def test_jsonl_field_names_are_configurable_and_integer_ids_match(tmp_path):
    items = items_of(("7", "seven"), ("8", "eight"))
    path = write_jsonl(tmp_path / "pass.jsonl", [{"task_id": 7, "pass@1": 1.0}, {"task_id": 8, "pass@1": 0.0}])
    out = read_outcomes(path, items, id_field="task_id", metric="pass@1")
    assert out.scores == {"7": 1.0, "8": 0.0} and out.metric == "pass@1"


def test_jsonl_ids_not_among_the_items_are_counted_and_items_without_outcome_too(tmp_path):
    path = write_jsonl(tmp_path / "scores.jsonl", [{"id": "a", "score": 1}, {"id": "zz", "score": 0}])
    out = read_outcomes(path, ITEMS)
    assert out.scores == {"a": 1.0}
    assert (out.unmatched, out.missing) == (1, 2) and accounted(out)
    assert any("id 'zz' is no item of the audit" in e for e in out.examples)
    assert any("item 'b' has no outcome" in e for e in out.examples)


def test_jsonl_duplicate_id_is_an_error_naming_both_lines(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "score": 1}, {"id": "b", "score": 1},
                                               {"id": "a", "score": 0}])
    with pytest.raises(InputError, match=r"dup\.jsonl, record 3: a second outcome for item 'a' \(the first is at "
                                         r"record 1\)"):
        read_outcomes(path, ITEMS)


def test_jsonl_malformed_score_is_an_error_naming_file_and_line_or_a_counted_skip(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "score": 1}, {"id": "b", "score": "high"}])
    with pytest.raises(InputError, match=r"bad\.jsonl, record 2: score field 'score' must be a finite number "
                                         r".*got \"high\""):
        read_outcomes(path, ITEMS)
    out = read_outcomes(path, ITEMS, skip_bad=True)
    assert out.scores == {"a": 1.0} and out.skipped == 1 and accounted(out)
    assert "bad.jsonl:2: score field 'score' must be a finite number" in out.examples[0]


def test_jsonl_nan_and_null_scores_are_malformed(tmp_path):
    (tmp_path / "nan.jsonl").write_text('{"id": "a", "score": NaN}\n')
    with pytest.raises(InputError, match=r"record 1: score field 'score' must be a finite number.*got NaN"):
        read_outcomes(tmp_path / "nan.jsonl", ITEMS)
    path = write_jsonl(tmp_path / "null.jsonl", [{"id": "a", "score": None}])
    with pytest.raises(InputError, match=r"record 1: .*got null"):
        read_outcomes(path, ITEMS)


def test_jsonl_record_without_the_score_field_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "noscore.jsonl", [{"id": "a", "acc": 1}])
    with pytest.raises(InputError, match=r"record 1: no score field 'score'; fields are \['acc', 'id'\]"):
        read_outcomes(path, ITEMS)


def test_jsonl_bad_id_value_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "nullid.jsonl", [{"id": None, "score": 1}])
    with pytest.raises(InputError, match=r"nullid\.jsonl, record 1: id field 'id' must be a non-empty string or an "
                                         r"integer; got null"):
        read_outcomes(path, ITEMS)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(InputError, match=r"nope\.jsonl: no such file or directory; expected per-item outcomes"):
        read_outcomes(tmp_path / "nope.jsonl", ITEMS)


def test_a_file_where_nothing_matches_is_an_error_that_names_the_id_field(tmp_path):
    path = write_jsonl(tmp_path / "other.jsonl", [{"task_id": "a", "score": 1}])
    with pytest.raises(InputError, match=r"other\.jsonl: no record matched an item of the audit \(1 unmatched, "
                                         r"0 skipped; first: .*no id field 'id'.*check id_field \('id'\)"):
        read_outcomes(path, ITEMS)


def test_an_empty_file_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match=r"empty\.jsonl: holds no records"):
        read_outcomes(tmp_path / "empty.jsonl", ITEMS)


def test_items_must_be_given_and_distinct(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"id": "a", "score": 1}])
    with pytest.raises(InputError, match=r"no items given"):
        read_outcomes(path, [])
    with pytest.raises(InputError, match=r"items: id 'a' is given twice"):
        read_outcomes(path, items_of(("a", "x"), ("a", "y")))


def test_bad_format_arguments_are_errors(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"id": "a", "score": 1}])
    with pytest.raises(InputError, match=r"format must be one of auto, jsonl, lm_eval; got 'csv'"):
        read_outcomes(path, ITEMS, format="csv")
    with pytest.raises(InputError, match=r"task='t' applies to lm_eval samples only"):
        read_outcomes(path, ITEMS, task="t")
    with pytest.raises(InputError, match=r"is a directory; a jsonl outcomes file is one file"):
        read_outcomes(tmp_path, ITEMS, format="jsonl")
    (tmp_path / "scores.csv").write_text("id,score\na,1\n")
    with pytest.raises(InputError, match=r"scores\.csv: expected a JSON Lines file"):
        read_outcomes(tmp_path / "scores.csv", ITEMS)


# ----------------------------------------------------------------------------- lm_eval samples: matching


def test_lm_eval_samples_match_by_doc_id(tmp_path):
    path = samples_file(tmp_path, "mytask", [sample({"id": "b", "q": "?"}, 0, acc=1.0),
                                             sample({"id": "a", "q": "?"}, 1, acc=0.0)])
    out = read_outcomes(path, ITEMS, metric="acc")
    assert out.scores == {"b": 1.0, "a": 0.0}
    assert (out.format, out.task, out.filter, out.metric, out.missing) == ("lm_eval", "mytask", "none", "acc", 1)


def test_lm_eval_format_is_detected_from_the_first_record_whatever_the_name(tmp_path):
    path = write_jsonl(tmp_path / "renamed.jsonl", [sample({"id": "a"}, acc=1)])
    out = read_outcomes(path, ITEMS)
    assert (out.format, out.task, out.scores) == ("lm_eval", None, {"a": 1.0})


def test_lm_eval_samples_without_id_match_by_the_text_field(tmp_path):
    path = samples_file(tmp_path, "t", [sample({"question": "beta question", "answer": "x"}, exact_match=1.0),
                                        sample({"question": "no such item", "answer": "y"}, 1, exact_match=0.0)])
    out = read_outcomes(path, ITEMS, text_field="question")
    assert out.scores == {"b": 1.0} and out.unmatched == 1 and accounted(out)
    assert any("no id field 'id', and its field 'question' is no item's text" in e for e in out.examples)


def test_lm_eval_samples_without_id_match_by_any_field_equal_to_an_item_text(tmp_path):
    path = samples_file(tmp_path, "t", [sample({"prompt": "  gamma\nquestion ", "label": 2}, acc=1)])
    out = read_outcomes(path, ITEMS)  # whitespace collapsed, as contaudit.splits.text_key
    assert out.scores == {"c": 1.0}


def test_a_missing_text_field_is_an_error(tmp_path):
    path = samples_file(tmp_path, "t", [sample({"prompt": "alpha question"}, acc=1)])
    with pytest.raises(InputError, match=r"record 1: has neither the id field 'id' nor the text field 'question'; "
                                         r"fields are \['prompt'\]"):
        read_outcomes(path, ITEMS, text_field="question")


def test_a_text_shared_by_several_items_is_ambiguous(tmp_path):
    items = items_of(("a", "same text"), ("b", "same  text"))
    path = samples_file(tmp_path, "t", [sample({"prompt": "same text"}, acc=1)])
    with pytest.raises(InputError, match=r"record 1: field 'prompt' equals the text of several items \(a, b\); "
                                         r"match by id"):
        read_outcomes(path, items)


def test_fields_equal_to_different_items_texts_are_ambiguous(tmp_path):
    path = samples_file(tmp_path, "t", [sample({"q": "alpha question", "r": "beta question"}, acc=1)])
    with pytest.raises(InputError, match=r"record 1: fields \['q', 'r'\] equal the texts of different items; "
                                         r"name the one to match with \[outcomes\] text_field"):
        read_outcomes(path, ITEMS)
    assert read_outcomes(path, ITEMS, text_field="r").scores == {"b": 1.0}


def test_lm_eval_two_samples_of_one_item_are_an_error(tmp_path):
    path = samples_file(tmp_path, "t", [sample({"id": "a"}, 0, acc=1), sample({"id": "a"}, 1, acc=0)])
    with pytest.raises(InputError, match=r"record 2: a second outcome for item 'a' \(the first is at record 1\)"):
        read_outcomes(path, ITEMS)


def test_lm_eval_record_without_doc_is_an_error_or_a_counted_skip(tmp_path):
    path = samples_file(tmp_path, "t", [sample({"id": "a"}, acc=1), {"doc_id": 1, "acc": 1}])
    with pytest.raises(InputError, match=r"record 2: no 'doc' object; expected an lm-evaluation-harness sample"):
        read_outcomes(path, ITEMS)
    out = read_outcomes(path, ITEMS, skip_bad=True)
    assert out.scores == {"a": 1.0} and out.skipped == 1 and accounted(out)


# ----------------------------------------------------------------------------- lm_eval samples: metrics and filters


def test_several_metrics_need_a_choice_listing_them(tmp_path):
    path = samples_file(tmp_path, "mc", [sample({"id": "a"}, acc=1.0, acc_norm=0.0)])
    with pytest.raises(InputError, match=r"holds several metrics \(acc,none, acc_norm,none\); choose one with "
                                         r"\[outcomes\] metric"):
        read_outcomes(path, ITEMS)
    assert read_outcomes(path, ITEMS, metric="acc_norm").scores == {"a": 0.0}
    assert read_outcomes(path, ITEMS, metric="acc,none").scores == {"a": 1.0}


def test_a_metric_under_several_filters_needs_the_filter_and_the_others_are_counted(tmp_path):
    recs = [sample({"id": "a"}, 0, filter="strict-match", exact_match=0.0),
            sample({"id": "a"}, 0, filter="flexible-extract", exact_match=1.0),
            sample({"id": "b"}, 1, filter="strict-match", exact_match=1.0),
            sample({"id": "b"}, 1, filter="flexible-extract", exact_match=1.0)]
    path = samples_file(tmp_path, "gsm", recs)
    with pytest.raises(InputError, match=r"holds metric 'exact_match' under several filters \(exact_match,strict-"
                                         r"match, exact_match,flexible-extract\).*'exact_match,strict-match'"):
        read_outcomes(path, ITEMS, metric="exact_match")
    out = read_outcomes(path, ITEMS, metric="exact_match,flexible-extract")
    assert out.scores == {"a": 1.0, "b": 1.0} and out.filter == "flexible-extract"
    assert (out.n_records, out.n_matched, out.skipped) == (4, 2, 2) and accounted(out)
    assert any("2 record(s) of filter 'strict-match' set aside" in e for e in out.examples)


def test_a_metric_not_in_the_samples_is_an_error_listing_those_there(tmp_path):
    path = samples_file(tmp_path, "mc", [sample({"id": "a"}, acc=1.0, acc_norm=0.0)])
    with pytest.raises(InputError, match=r"no metric 'exact_match' in these samples; they hold acc,none, "
                                         r"acc_norm,none"):
        read_outcomes(path, ITEMS, metric="exact_match")


def test_a_metric_without_a_number_per_sample_is_an_error(tmp_path):
    path = samples_file(tmp_path, "mt", [sample({"id": "a"}, bleu=["reference", "prediction"])])
    with pytest.raises(InputError, match=r"record 1: metric 'bleu' is not a per-item score: its per-sample value "
                                         r"is \[\"reference\", \"prediction\"\]"):
        read_outcomes(path, ITEMS)


def test_samples_of_old_lm_eval_without_filter_and_metrics_keys(tmp_path):
    path = samples_file(tmp_path, "old", [sample({"id": "a"}, filter=None, acc=1), sample({"id": "b"}, 1,
                                                                                          filter=None, acc=0)])
    out = read_outcomes(path, ITEMS)
    assert out.scores == {"a": 1.0, "b": 0.0} and (out.metric, out.filter) == ("acc", "none")


# ----------------------------------------------------------------------------- lm_eval output directories


def test_a_directory_with_one_task_is_read_whole(tmp_path):
    samples_file(tmp_path, "only_task", [sample({"id": "a"}, acc=1)])
    write_jsonl(tmp_path / "model__dir" / f"results_{STAMP}.json", [{"results": {}}])  # not a samples file
    out = read_outcomes(tmp_path, ITEMS)
    assert out.task == "only_task" and out.path.endswith(f"samples_only_task_{STAMP}.jsonl")


def test_a_directory_with_two_tasks_needs_the_task(tmp_path):
    samples_file(tmp_path, "task_one", [sample({"id": "a"}, acc=1)])
    samples_file(tmp_path, "task_two", [sample({"id": "a"}, acc=0)])
    assert sorted(find_samples_files(tmp_path)) == ["task_one", "task_two"]
    with pytest.raises(InputError, match=r"holds samples of several tasks \(task_one, task_two\); choose one with "
                                         r"\[outcomes\] task"):
        read_outcomes(tmp_path, ITEMS)
    assert read_outcomes(tmp_path, ITEMS, task="task_two").scores == {"a": 0.0}
    with pytest.raises(InputError, match=r"holds no samples of task 'task_three'; its tasks are task_one, task_two"):
        read_outcomes(tmp_path, ITEMS, task="task_three")


def test_a_directory_with_two_runs_of_one_task_needs_the_file(tmp_path):
    samples_file(tmp_path, "t", [sample({"id": "a"}, acc=1)])
    samples_file(tmp_path, "t", [sample({"id": "a"}, acc=0)], stamp="2026-02-02T03-04-05.678901")
    with pytest.raises(InputError, match=r"holds 2 samples files of task 't' \(several runs or models: .*\); pass "
                                         r"the file to read"):
        read_outcomes(tmp_path, ITEMS)


def test_a_directory_without_samples_files_is_an_error(tmp_path):
    with pytest.raises(InputError, match=r"no lm-evaluation-harness samples files .* run lm_eval with --log_samples"):
        read_outcomes(tmp_path, ITEMS)


def test_a_samples_file_of_another_task_is_an_error(tmp_path):
    path = samples_file(tmp_path, "task_one", [sample({"id": "a"}, acc=1)])
    with pytest.raises(InputError, match=r"holds samples of task 'task_one', not of task 'task_two'"):
        read_outcomes(path, ITEMS, task="task_two")


# ----------------------------------------------------------------------------- a real lm-evaluation-harness run

MC_TASK, GEN_TASK = "contaudit_tiny_mc", "contaudit_tiny_gen"
WORDS = ("the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "his",
         "her", "they", "this", "which")


def _import_lm_eval():
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        import lm_eval  # CI installs the lmeval extra (scripts/install.sh): missing is a failure there

        return lm_eval
    return pytest.importorskip("lm_eval", reason="lm_eval is not installed (pip install -e '.[lmeval]'); CI "
                                                 "installs it and runs this test")


def _benchmark(root: Path) -> tuple[Path, Path]:
    """20 items (test + shadow): a question, four choices, a label, and an answer that the 'never' filter gets
    right on even items only (its regex never matches, so every filtered response is its fallback '[none]')."""
    import random

    rng = random.Random(0)
    rows = [{"id": f"q{i}", "text": " ".join(rng.choice(WORDS) for _ in range(6)),
             "choices": rng.sample(WORDS, 4), "label": i % 4, "answer": "[none]" if i % 2 == 0 else "[some]"}
            for i in range(20)]
    return write_jsonl(root / "test.jsonl", rows[:10]), write_jsonl(root / "shadow.jsonl", rows[10:])


def _task_yamls(root: Path, test: Path, shadow: Path) -> Path:
    """Two local-file tasks: multiple choice over the items (docs keep their id), and greedy generation over the
    same texts without ids (matched by text) with two filters."""
    rows = [json.loads(line) for f in (test, shadow) for line in f.read_text().splitlines()]
    noid = write_jsonl(root / "noid.jsonl", [{k: v for k, v in rec.items() if k != "id"} for rec in rows])
    tasks, cache = root / "tasks", root / "hf_datasets_cache"
    tasks.mkdir()
    (tasks / "mc.yaml").write_text(f"""task: {MC_TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: ["{test}", "{shadow}"]
  cache_dir: "{cache}"
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{text}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""")
    (tasks / "gen.yaml").write_text(f"""task: {GEN_TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: "{noid}"
  cache_dir: "{cache}"
test_split: test
output_type: generate_until
doc_to_text: "{{{{text}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
filter_list:
  - name: whole
    filter:
      - function: take_first
  - name: never
    filter:
      - function: regex
        regex_pattern: "(ZZZ_NEVER_ZZZ)"
        fallback: "[none]"
      - function: take_first
""")
    return tasks


@pytest.fixture(scope="module")
def lm_eval_run(tmp_path_factory):
    """Run lm_eval once, offline, on a tiny GPT-2, writing its samples as ``lm_eval --log_samples`` does."""
    lm_eval = _import_lm_eval()
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager
    from tiny_models import save_tiny_model

    root = tmp_path_factory.mktemp("lm_eval_run")
    model = save_tiny_model(root / "tiny-gpt2")
    test, shadow = _benchmark(root)
    tasks = _task_yamls(root, test, shadow)
    out_dir = root / "out"
    tracker = EvaluationTracker(output_path=str(out_dir))  # what the CLI builds from --output_path
    results = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model},device=cpu",
                                      tasks=[MC_TASK, GEN_TASK], task_manager=TaskManager(include_path=str(tasks)),
                                      batch_size=8, log_samples=True, evaluation_tracker=tracker)
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)  # as lm_eval/_cli/run.py does
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    written, = out_dir.glob("*/results_*.json")  # the scores lm_eval aggregated, as it wrote them
    items = load_items(test) + load_items(shadow)
    return {"out": out_dir, "results": json.loads(written.read_text())["results"], "items": items,
            "samples": samples}


def _mean(out: Outcomes) -> float:
    return sum(out.scores.values()) / len(out.scores)


def test_lm_eval_run_directory_holds_both_tasks(lm_eval_run):
    assert sorted(find_samples_files(lm_eval_run["out"])) == sorted([MC_TASK, GEN_TASK])
    with pytest.raises(InputError, match=rf"holds samples of several tasks \({GEN_TASK}, {MC_TASK}\)"):
        read_outcomes(lm_eval_run["out"], lm_eval_run["items"])


@pytest.mark.parametrize("metric", ["acc", "acc_norm"])
def test_lm_eval_run_multiple_choice_outcomes_match_every_item_and_lm_evals_score(lm_eval_run, metric):
    items = lm_eval_run["items"]
    out = read_outcomes(lm_eval_run["out"], items, task=MC_TASK, metric=metric)
    assert (out.format, out.task, out.filter) == ("lm_eval", MC_TASK, "none")
    assert (out.n_records, out.n_matched, out.unmatched, out.skipped, out.missing) == (20, 20, 0, 0, 0)
    assert set(out.scores) == {it.id for it in items}
    by_doc = {s["doc"]["id"]: float(s[metric]) for s in lm_eval_run["samples"][MC_TASK]}
    assert out.scores == by_doc
    assert _mean(out) == pytest.approx(lm_eval_run["results"][MC_TASK][f"{metric},none"], abs=1e-12)


def test_lm_eval_run_generation_matched_by_text_under_the_chosen_filter(lm_eval_run):
    items = lm_eval_run["items"]
    with pytest.raises(InputError, match=r"metric 'exact_match' under several filters \(exact_match,whole, "
                                         r"exact_match,never\)"):
        read_outcomes(lm_eval_run["out"], items, task=GEN_TASK, metric="exact_match")
    out = read_outcomes(lm_eval_run["out"], items, task=GEN_TASK, metric="exact_match,never", text_field="text")
    expected = {it.id: float(it.fields["answer"] == "[none]") for it in items}  # known by construction
    assert out.scores == expected and (out.n_records, out.skipped, out.missing) == (40, 20, 0) and accounted(out)
    assert _mean(out) == pytest.approx(lm_eval_run["results"][GEN_TASK]["exact_match,never"], abs=1e-12)
    whole = read_outcomes(lm_eval_run["out"], items, task=GEN_TASK, metric="exact_match,whole")  # any field
    assert whole.n_matched == 20
    assert _mean(whole) == pytest.approx(lm_eval_run["results"][GEN_TASK]["exact_match,whole"], abs=1e-12)
