"""``contaudit audit``: run the whole protocol from one protocol file.

index -> probes -> score (both models, test / shadow / probes) -> item order -> analyze -> report.
Every stage writes its artifact under the run directory and is reused when its inputs
have not changed: the index when its build plan matches, scores through the scoring
engine's per-item cache. The run directory layout::

    RUN/sets/{test,shadow,benchmark}.jsonl   the sets as scored (id + text)
    RUN/index/ (unless the protocol names an index path)
    RUN/probes.jsonl, RUN/probes.manifest.json
    RUN/scores/{suspect,clean}/{test,shadow,probes}.jsonl (+ manifests)
    RUN/item_order.json (+ manifest), with [item_order] or without [models.clean]
    RUN/outcomes/{suspect,clean,...}.jsonl (+ manifests), with [outcomes] harness = "humaneval"
    RUN/results.json, RUN/report.md, RUN/report.html, RUN/report.json, RUN/plots/

Without ``[models.clean]`` only the suspect is scored, no probes are built (the
memorization DiD needs a clean model), and Oren et al.'s order test decides: the verdict
is at most SUSPECT and the report says why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from contaudit.errors import InputError
from contaudit.io import load_items
from contaudit.manifest import write_json_atomic, write_jsonl_atomic
from contaudit.progress import timed
from contaudit.protocol import Protocol, SetSpec, effective_item_order, load_protocol


@dataclass
class AuditRun:
    """What an audit produced."""

    out: Path
    results: dict
    report: object
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return self.results["verdict"]["label"]


def _rows(spec: SetSpec) -> list[dict]:
    items = load_items(spec.path, text_field=None if spec.template else spec.text_field, template=spec.template,
                       id_field=spec.id_field)
    return [{"id": it.id, "text": it.text, "_fields": it.fields} for it in items]


def _answers(rows: list[dict], field_name: str, path) -> list[dict]:
    """``{id, text}`` of each test item's answer (its ``field_name``), what the answer index searches for."""
    answers = []
    for row in rows:
        value = row["_fields"].get(field_name)
        if not isinstance(value, str) or not value.strip():
            got = "no such field" if field_name not in row["_fields"] else f"{type(value).__name__} {value!r:.40}"
            raise InputError(f"item {row['id']!r}: `answer_field` {field_name!r} must hold a non-empty text "
                             f"(got {got})", path=path)
        answers.append({"id": row["id"], "text": value})
    return answers


def _as_date(value, *, path: Path, item_id: str, key: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise InputError(f"item {item_id!r}: {key} {value!r} is not an ISO date (YYYY-MM-DD)", path=path) from None


def drop_empty_texts(test: list[dict], shadow: list[dict]) -> tuple[list[dict], list[dict], list[str]]:
    """Leave out items whose text is empty (or only whitespace): nothing of them can be scored. Returns
    the kept test and shadow rows and one warning line per set that had any (reported with the verdict)."""
    warnings = []
    kept = []
    for name, rows in (("test", test), ("shadow", shadow)):
        empty = [r["id"] for r in rows if not r["text"].strip()]
        if empty:
            warnings.append(f"{len(empty)} {name} items have an empty text (e.g. {empty[0]!r}) and were left out: "
                            f"nothing of them can be scored.")
        kept.append([r for r in rows if r["text"].strip()])
    return kept[0], kept[1], warnings


def drop_duplicate_texts(test: list[dict], shadow: list[dict]) -> tuple[list[dict], list[dict], list[str]]:
    """Keep the first item of every text (the same after :func:`contaudit.splits.text_key`), test first.

    A text repeated under several ids would count as several independent items and shrink
    every p-value (test and shadow repeated 16 times took p from 0.25 to 0.004). Returns the
    kept test and shadow rows and one warning line per set with duplicates (empty when none).
    """
    from contaudit.splits import text_key

    first: dict[str, str] = {}
    kept: dict[str, list[dict]] = {"test": [], "shadow": []}
    dropped: dict[str, list[tuple[str, str]]] = {"test": [], "shadow": []}
    for name, rows in (("test", test), ("shadow", shadow)):
        for row in rows:
            key = text_key(row["text"])
            if key in first:
                dropped[name].append((row["id"], first[key]))
            else:
                first[key] = row["id"]
                kept[name].append(row)
    warnings = [f"{len(d)} {name} items repeat the text of an earlier item (e.g. {d[0][0]!r} repeats {d[0][1]!r}) "
                f"and were left out, so that no text counts twice." for name, d in dropped.items() if d]
    return kept["test"], kept["shadow"], warnings


def materialize_sets(protocol: Protocol, out: Path) -> tuple[dict[str, Path], list[str]]:
    """Write the test and shadow sets as ``{id, text}`` JSON Lines, and ``benchmark``: both together
    with any ``[[sets.heldout]]`` text (indexed with them, so unseen probes can come from it).

    Items with an empty text (:func:`drop_empty_texts`) or one that repeats an earlier item's
    (:func:`drop_duplicate_texts`) are left out;
    returns the paths and the warnings that say so."""
    sets = protocol.sets
    split_info = None
    if sets.random_split is not None:
        from contaudit.splits import random_split_items, split_record

        test_items, shadow_items = random_split_items(sets.random_split)
        split_info = split_record(sets.random_split, test_items, shadow_items)
        test, shadow = ([{"id": it.id, "text": it.text, "_fields": it.fields} for it in part]
                        for part in (test_items, shadow_items))
    elif sets.split is not None:
        spec = sets.split
        cutoff = _as_date(spec.cutoff, path=protocol.source or spec.path, item_id="(cutoff)", key="sets.split.cutoff")
        test, shadow = [], []
        dates = []
        for row in _rows(spec):
            if spec.date_field not in row["_fields"]:
                raise InputError(f"item {row['id']!r} has no date field {spec.date_field!r}", path=spec.path)
            when = _as_date(row["_fields"][spec.date_field], path=spec.path, item_id=row["id"], key=spec.date_field)
            dates.append(when)
            (test if when < cutoff else shadow).append(row)
        for name, rows in (("test", test), ("shadow", shadow)):
            if not rows:
                where = "before" if name == "test" else "on or after"
                raise InputError(f"no item is dated {where} the cutoff {cutoff} ({spec.date_field} runs from "
                                 f"{min(dates)} to {max(dates)}), so the {name} set would be empty; choose a cutoff "
                                 f"inside that range", path=spec.path)
    else:
        test, shadow = _rows(sets.test), _rows(sets.shadow)
    clash = {r["id"] for r in test} & {r["id"] for r in shadow}
    if clash:
        raise InputError(f"ids appear in both the test and shadow sets (e.g. {sorted(clash)[:3]}); ids must be unique "
                         "across the two sets", path=protocol.source)
    test, shadow, warnings = drop_empty_texts(test, shadow)
    test, shadow, repeated = drop_duplicate_texts(test, shadow)
    warnings += repeated
    heldout = []
    for spec in sets.heldout:
        rows = _rows(spec)
        clash = {r["id"] for r in rows} & {r["id"] for r in test + shadow + heldout}
        if clash:
            raise InputError(f"held-out ids also appear in another set (e.g. {sorted(clash)[:3]}); ids must be unique "
                             "across all sets", path=spec.path)
        heldout += rows
    paths = {}
    for name, rows in (("test", test), ("shadow", shadow), ("benchmark", test + shadow + heldout)):
        paths[name] = out / "sets" / f"{name}.jsonl"
        write_jsonl_atomic(paths[name], ({"id": r["id"], "text": r["text"]} for r in rows))
    _, source = sets.test_source
    if source.answer_field is not None:
        paths["answers"] = out / "sets" / "answers.jsonl"
        write_jsonl_atomic(paths["answers"], _answers(test, source.answer_field, source.path))
    if protocol.outcomes is not None and protocol.outcomes.harness is not None:
        # what an evaluation harness needs besides the text (HumanEval: prompt, test, entry_point)
        paths["evaluation"] = out / "sets" / "evaluation.jsonl"
        write_jsonl_atomic(paths["evaluation"], ({**r["_fields"], "id": r["id"], "text": r["text"]}
                                                 for r in test + shadow))
    if split_info is not None:
        write_json_atomic(out / "sets" / "split.json", split_info)
    return paths, warnings


@dataclass
class BenchmarkRun:
    """One benchmark's audit inside a run: its protocol, run directory, and what each stage wrote."""

    name: str
    protocol: Protocol
    out: Path
    index: Path | None = None  # where its index is (built or prebuilt)
    answer_index: Path | None = None  # where its test items' answers are indexed (with `answer_field`)
    sets: dict[str, Path] = field(default_factory=dict)
    probes: Path | None = None
    has_probes: bool = False
    scores: dict[tuple[str, str], Path] = field(default_factory=dict)
    item_order: Path | None = None
    results: dict | None = None
    report: object = None
    warnings: list[str] = field(default_factory=list)  # from stages before the analysis, reported with it
    model_ids: dict[str, str] = field(default_factory=dict)  # role -> fingerprint of the model that scored it
    outcomes: dict | None = None  # role -> ModelOutcomes, with [outcomes]

    def say(self, log: Callable[[str], None], line: str) -> None:
        log(f"{self.name}: {line}" if self.name else line)


def _index_stage(runs: list[BenchmarkRun], staging: Path, log) -> dict:
    """Find every benchmark's items in the corpus, in one pass over it for all the benchmarks
    whose index is missing or stale; return what was done (for the suite's record)."""
    from contaudit.index import build_indexes, load_index
    from contaudit.index.build import stale_targets

    settings = runs[0].protocol.index
    if settings is None:
        log("index: none in the protocol (no memorization test)")
        return {"corpus_passes": 0}
    with_answers = [run for run in runs if "answers" in run.sets]  # only with a corpus (check_answer_field)
    if not settings.corpus:
        for run in runs:
            check_prebuilt_index(load_index(run.index), _read_ids(run.sets["benchmark"]), run.index)
            run.say(log, f"index: using {run.index}")
        return {"corpus_passes": 0, "prebuilt": [str(run.index) for run in runs]}
    for run in with_answers:  # beside the items' index, so a shared index path shares its answers too
        run.answer_index = run.index.with_name(run.index.name + "-answers")
    targets = {run.index: run.sets["benchmark"] for run in runs}
    targets.update({run.answer_index: run.sets["answers"] for run in with_answers})
    corpus, config = list(settings.corpus), settings.config
    rebuild = set(stale_targets(targets, corpus, config))
    stale = [run for run in runs if {run.index, run.answer_index} & rebuild]
    for run in runs:
        if run not in stale:
            run.say(log, f"index: reusing {run.index}")
    if not stale:
        return {"corpus_passes": 0, "reused": [str(run.index) for run in runs]}
    summaries = build_indexes(corpus, {path: bench for path, bench in targets.items() if path in rebuild}, staging,
                              config=config)
    first = summaries[0]
    done = f"index: {first.corpus_bytes / 1e6:.1f} MB of corpus in {first.seconds:.1f} s"
    if len(runs) == 1:
        log(f"{done} -> {runs[0].index}")
    else:
        log(f"{done}, one pass for {len(stale)} benchmarks ({', '.join(run.name for run in stale)})")
    return {"corpus_passes": 1, "corpus_bytes": first.corpus_bytes, "seconds": round(first.seconds, 3),
            "built": [str(path) for path in sorted(rebuild)], "reused": [str(r.index) for r in runs if r not in stale]}


def _probe_stage(runs: list[BenchmarkRun], log) -> None:
    from contaudit.probes import build_probes

    for run in runs:
        if run.index is None:
            continue
        if run.protocol.models.clean is None:
            run.say(log, "probes: none (no clean model: the memorization DiD needs one)")
            continue
        run.probes = run.out / "probes.jsonl"
        probe_set = build_probes(run.index, run.probes, run.protocol.probes,
                                 balance_threshold=run.protocol.analysis.balance_threshold)
        run.has_probes = bool(probe_set.probes)
        run.say(log, f"probes: {probe_set.counts['n_seen']} seen / {probe_set.counts['n_unseen']} unseen pairs"
                + "".join(f"; {problem}" for problem in probe_set.problems))


def _score_stage(runs: list[BenchmarkRun], log, progress, seconds: dict) -> dict[str, int]:
    """Load each model once and score every benchmark's sets with it (and the suspect's item orders);
    return how many times each model was loaded."""
    from dataclasses import replace

    from contaudit.scoring import open_model, prepare_job

    protocol = runs[0].protocol
    loads = {}
    for model in protocol.models.roles():
        role, spec = model.slug, model.spec
        settings = replace(protocol.scoring, trust_remote_code=spec.trust_remote_code, gguf_file=spec.gguf_file)
        jobs = []
        for run in runs:
            wanted = [("test", run.sets["test"], False), ("shadow", run.sets["shadow"], False)]
            wanted += [("probes", run.probes, True)] if run.has_probes else []
            for name, data, completion in wanted:
                target = run.out / "scores" / role / f"{name}.jsonl"
                jobs.append((run, name, prepare_job(data, target, replace(settings, completion=completion))))
        order_runs = [run for run in runs if role == "suspect" and effective_item_order(run.protocol) is not None]
        with open_model(spec.path, settings, hashes_dir=jobs[0][2].cache_dir) as session:
            loads[role] = 1
            for run in runs:
                run.model_ids[model.name] = session.fingerprint["id"]
            for run, name, job in jobs:
                result = session.score(job, progress=progress)
                run.say(log, f"score: {role}/{name}: {result.n_scored} items ({result.from_cache} cached), "
                        f"{result.tokens_per_second:.0f} tokens/s"
                        + (f", {len(result.skipped)} skipped" if result.skipped else ""))
                run.scores[role, name] = job.out
            for run in order_runs:
                run.item_order = timed(seconds, "item_order", _item_order, run, session, log, progress)
    return loads


def _item_order(run: BenchmarkRun, session, log, progress) -> Path:
    """The suspect's item-order log-likelihoods on the test set (its model already loaded in ``session``)."""
    from dataclasses import replace

    from contaudit.scoring.item_order import item_order_scores

    protocol = run.protocol
    config = effective_item_order(protocol)
    spec = protocol.models.suspect
    settings = replace(protocol.scoring, gguf_file=spec.gguf_file, trust_remote_code=spec.trust_remote_code)
    path = run.out / "item_order.json"
    import warnings

    from contaudit.scoring.item_order import PublishedOrderWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PublishedOrderWarning)  # logged below, and repeated by the analysis
        result = item_order_scores(spec.path, run.sets["test"], path, config, settings, progress=progress,
                                   session=session)
    for line in result.warnings:
        run.say(log, f"item order: warning: {line}")
    test_result = result.test(confidence_level=protocol.analysis.confidence_level)
    run.say(log, f"item order: {config.shards} shards x {config.permutations} shuffled orders (seed {config.seed}), "
            f"{result.from_cache} orders cached, {result.compute_seconds:.0f} s; gap {test_result.statistic:+.3g} "
            f"nats/shard, p = {test_result.pvalue:.3g}")
    return path


def check_prebuilt_index(index, items: list[dict], path: Path) -> None:
    """Refuse a prebuilt index that is not this benchmark's: every item's id must be there, holding the
    same text (ids such as ``0, 1, ...`` repeat across benchmarks; a stale index holds old texts)."""
    from contaudit.splits import text_key

    by_id = index.by_id()
    missing = sorted({str(r["id"]) for r in items} - set(by_id))
    if missing:
        raise InputError(f"the index does not cover {len(missing)} benchmark items (e.g. {missing[:3]}); "
                         "give [index].corpus to build it for this benchmark", path=path)
    other = [str(r["id"]) for r in items if text_key(by_id[str(r["id"])]["text"]) != text_key(r["text"])]
    if other:
        raise InputError(f"the index was built for other texts: {len(other)} of {len(items)} benchmark items hold "
                         f"another text under the same id (e.g. {other[:3]}); it is another benchmark's index or a "
                         f"stale one: give [index].corpus to build it for this benchmark", path=path)


def _outcome_stage(run: BenchmarkRun, log) -> dict | None:
    """Each model's per-item evaluation outcomes, by role name: evaluated here with the protocol's harness
    (``RUN/outcomes/ROLE.jsonl``, reused when model, items and settings are unchanged) or read from the
    files ``[outcomes]`` names. None without ``[outcomes]``."""
    spec = run.protocol.outcomes
    if spec is None:
        return None
    from contaudit.analysis.inflation import ModelOutcomes
    from contaudit.outcomes import read_outcomes

    items = load_items(run.sets["test"]) + load_items(run.sets["shadow"])
    roles = run.protocol.models.roles()
    if spec.harness is not None:
        from contaudit.code_eval import evaluate_code

        config = spec.harness_config
        files = {}
        for role in roles:
            files[role.name] = run.out / "outcomes" / f"{role.slug}.jsonl"
            evaluate_code(role.spec.path, [run.sets["evaluation"]], files[role.name], config,
                          device=run.protocol.scoring.device, dtype=run.protocol.scoring.dtype,
                          trust_remote_code=role.spec.trust_remote_code, gguf_file=role.spec.gguf_file,
                          log=lambda line: run.say(log, f"evaluate: {line}"))
        options = {"format": "jsonl"}
    else:
        given = [spec.suspect, spec.clean, *spec.reference]
        files = {role.name: path for role, path in zip(roles, given) if path is not None}
        options = {"format": spec.format, "metric": spec.metric, "task": spec.task, "text_field": spec.text_field}
    outcomes = {}
    for name, path in files.items():
        read = read_outcomes(path, items, **options)
        outcomes[name] = ModelOutcomes(name, read.scores, metric="pass@1" if spec.harness else read.metric,
                                       source={"path": read.path, "sha256": read.sha256, "format": read.format,
                                               "n_matched": read.n_matched, "unmatched": read.unmatched})
        run.say(log, f"outcomes: {name}: {read.n_matched} of {len(items)} items, mean {read.metric} "
                f"{sum(read.scores.values()) / max(len(read.scores), 1):.3f}")
    return outcomes


def _read_ids(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _analyze_stage(run: BenchmarkRun) -> dict:
    from contaudit.analysis import analyze
    from contaudit.analysis.inputs import ReferenceScores

    probe_files = {}
    if run.probes is not None:  # an empty probe set still goes in: analysis says why there is no test
        probe_files = {"probes": run.probes}
        if run.has_probes:
            probe_files.update(suspect_probes=run.scores["suspect", "probes"],
                               clean_probes=run.scores["clean", "probes"])
    roles = [role.slug for role in run.protocol.models.roles()]
    references = [ReferenceScores(run.scores[role, "test"], run.scores[role, "shadow"], run.scores.get((role, "probes")))
                  for role in roles[2:]]
    return analyze(run.scores["suspect", "test"], run.scores.get(("clean", "test")), run.scores["suspect", "shadow"],
                   run.scores.get(("clean", "shadow")), references=references, index=run.index,
                   answer_index=run.answer_index,
                   item_order=run.item_order, protocol=run.protocol, out=run.out, warnings=run.warnings,
                   sets=run.sets, expected_models=run.model_ids, outcomes=run.outcomes, **probe_files)


def audit_benchmarks(runs: list[BenchmarkRun], *, index_staging: Path, log: Callable[[str], None] = lambda s: None,
                     score_progress=None, seconds: dict | None = None) -> dict:
    """Run every stage for benchmarks that share models, index and scoring settings.

    The corpus is scanned once for all of them; each model is loaded once and scores
    every benchmark's sets. Each benchmark's run directory ends up as ``contaudit audit``
    leaves it. Returns what the shared stages did (index passes, model loads, seconds).
    """
    from contaudit.report import write_report

    seconds = seconds if seconds is not None else {}
    for run in runs:
        run.sets, run.warnings = timed(seconds, "sets", materialize_sets, run.protocol, run.out)
        for line in run.warnings:
            run.say(log, f"sets: {line}")
        run.say(log, f"sets: {sum(1 for _ in open(run.sets['test']))} test / "
                f"{sum(1 for _ in open(run.sets['shadow']))} shadow items")
        if run.protocol.outcomes is not None:  # before scoring: a bad outcome file fails at once
            run.outcomes = timed(seconds, "outcomes", _outcome_stage, run, log)
    index = timed(seconds, "index", _index_stage, runs, index_staging, log)
    timed(seconds, "probes", _probe_stage, runs, log)
    before = seconds.get("item_order", 0.0)
    loads = timed(seconds, "score", _score_stage, runs, log, score_progress, seconds)
    seconds["score"] = round(seconds["score"] - (seconds.get("item_order", 0.0) - before), 3)  # item orders apart
    for run in runs:
        run.results = timed(seconds, "analyze", _analyze_stage, run)
        run.report = timed(seconds, "report", write_report, run.out)
        run.say(log, f"verdict: {run.results['verdict']['label']} -> {run.report.html}")
    return {"index": index, "model_loads": loads, "seconds": {k: round(v, 3) for k, v in seconds.items()}}


def run_audit(protocol_path: str | Path, out: str | Path, *, log: Callable[[str], None] = lambda s: None,
              score_progress=None) -> AuditRun:
    """Run every stage of the audit a protocol describes; return verdict and paths.

    Example::

        run = run_audit("protocols/my-audit.toml", "runs/my-audit")
        print(run.verdict, run.report.html)
    """
    from contaudit.rundir import run_directory

    protocol = load_protocol(protocol_path)  # before the heavy imports: a bad protocol fails at once
    with run_directory(out, "audit") as out:
        index = None
        if protocol.index is not None:
            index = Path(protocol.index.path) if protocol.index.path else out / "index"
        run = BenchmarkRun("", protocol, out, index=index)
        seconds: dict[str, float] = {}
        audit_benchmarks([run], index_staging=index.with_name(index.name + ".partial") if index else out,
                         log=log, score_progress=score_progress, seconds=seconds)
    return AuditRun(out, run.results, run.report, seconds)
