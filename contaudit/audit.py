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

from contaudit import progress
from contaudit.errors import InputError
from contaudit.io import load_items
from contaudit.manifest import write_jsonl_atomic
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


def _as_date(value, *, path: Path, item_id: str, key: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise InputError(f"item {item_id!r}: {key} {value!r} is not an ISO date (YYYY-MM-DD)", path=path) from None


def materialize_sets(protocol: Protocol, out: Path) -> dict[str, Path]:
    """Write the test and shadow sets as ``{id, text}`` JSON Lines, and ``benchmark``: both together
    with any ``[[sets.heldout]]`` text (indexed with them, so unseen probes can come from it)."""
    sets = protocol.sets
    if sets.split is not None:
        spec = sets.split
        cutoff = _as_date(spec.cutoff, path=protocol.source or spec.path, item_id="(cutoff)", key="sets.split.cutoff")
        test, shadow = [], []
        for row in _rows(spec):
            if spec.date_field not in row["_fields"]:
                raise InputError(f"item {row['id']!r} has no date field {spec.date_field!r}", path=spec.path)
            when = _as_date(row["_fields"][spec.date_field], path=spec.path, item_id=row["id"], key=spec.date_field)
            (test if when < cutoff else shadow).append(row)
    else:
        test, shadow = _rows(sets.test), _rows(sets.shadow)
    clash = {r["id"] for r in test} & {r["id"] for r in shadow}
    if clash:
        raise InputError(f"ids appear in both the test and shadow sets (e.g. {sorted(clash)[:3]}); ids must be unique "
                         "across the two sets", path=protocol.source)
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
    return paths


def _index_stage(protocol: Protocol, benchmark: Path, out: Path, log) -> Path | None:
    from contaudit.index import build_index, load_index
    from contaudit.index.build import plan_matches

    settings = protocol.index
    if settings is None:
        log("index: none in the protocol (no memorization test)")
        return None
    path = Path(settings.path) if settings.path else out / "index"
    if settings.corpus:
        config = settings.config
        if plan_matches(path, list(settings.corpus), benchmark, config):
            log(f"index: reusing {path}")
        else:
            summary = build_index(list(settings.corpus), benchmark, path, config=config)
            log(f"index: {summary.corpus_bytes / 1e6:.1f} MB of corpus in {summary.seconds:.1f} s -> {path}")
    else:
        index = load_index(path)
        missing = {r["id"] for r in _read_ids(benchmark)} - set(index.by_id())
        if missing:
            raise InputError(f"the index does not cover {len(missing)} benchmark items (e.g. {sorted(missing)[:3]}); "
                             "give [index].corpus to build it for this benchmark", path=path)
        log(f"index: using {path}")
    return path


def _score_stage(protocol: Protocol, roles, jobs, out: Path, log, progress) -> dict[tuple[str, str], Path]:
    """Score every (model, set) pair; return the score files by ``(role, set name)``."""
    from contaudit.scoring import score

    scores = {}
    for role, spec in roles:
        for name, data, completion in jobs:
            target = out / "scores" / role / f"{name}.jsonl"
            result = score(spec.path, data, target, protocol.scoring, completion=completion,
                           trust_remote_code=spec.trust_remote_code, gguf_file=spec.gguf_file, progress=progress)
            log(f"score: {role}/{name}: {result.n_scored} items ({result.from_cache} cached), "
                f"{result.tokens_per_second:.0f} tokens/s" + (f", {len(result.skipped)} skipped" if result.skipped else ""))
            scores[role, name] = target
    return scores


def _item_order_stage(protocol: Protocol, test: Path, out: Path, log, progress) -> Path | None:
    """The suspect's item-order log-likelihoods on the test set, when the protocol runs the order test."""
    from dataclasses import replace

    from contaudit.scoring.item_order import item_order_scores

    config = effective_item_order(protocol)
    if config is None:
        return None
    spec = protocol.models.suspect
    settings = replace(protocol.scoring, gguf_file=spec.gguf_file, trust_remote_code=spec.trust_remote_code)
    path = out / "item_order.json"
    result = item_order_scores(spec.path, test, path, config, settings, progress=progress)
    test_result = result.test(confidence_level=protocol.analysis.confidence_level)
    log(f"item order: {config.shards} shards x {config.permutations} shuffled orders (seed {config.seed}), "
        f"{result.from_cache} orders cached, {result.compute_seconds:.0f} s; gap {test_result.statistic:+.3g} "
        f"nats/shard, p = {test_result.pvalue:.3g}")
    return path


def _read_ids(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_audit(protocol_path: str | Path, out: str | Path, *, log: Callable[[str], None] = lambda s: None,
              score_progress=None) -> AuditRun:
    """Run every stage of the audit a protocol describes; return verdict and paths.

    Example::

        run = run_audit("protocols/my-audit.toml", "runs/my-audit")
        print(run.verdict, run.report.html)
    """
    protocol = load_protocol(protocol_path)  # before the heavy imports: a bad protocol fails at once

    from contaudit.analysis import analyze
    from contaudit.analysis.analyze import ReferenceScores
    from contaudit.probes import build_probes
    from contaudit.report import write_report

    out = Path(out)
    seconds: dict[str, float] = {}

    def timed(stage: str, fn, *args, **kwargs):
        return progress.timed(seconds, stage, fn, *args, **kwargs)

    sets = timed("sets", materialize_sets, protocol, out)
    log(f"sets: {sum(1 for _ in open(sets['test']))} test / {sum(1 for _ in open(sets['shadow']))} shadow items")
    index_path = timed("index", _index_stage, protocol, sets["benchmark"], out, log)

    no_clean = protocol.models.clean is None
    probes_path = None
    if index_path is not None and no_clean:
        log("probes: none (no clean model: the memorization DiD needs one)")
        has_probes = False
    elif index_path is not None:
        probes_path = out / "probes.jsonl"
        probe_set = timed("probes", build_probes, index_path, probes_path, protocol.probes,
                          balance_threshold=protocol.analysis.balance_threshold)
        has_probes = bool(probe_set.probes)
        log(f"probes: {probe_set.counts['n_seen']} seen / {probe_set.counts['n_unseen']} unseen pairs"
            + "".join(f"; {problem}" for problem in probe_set.problems))
    else:
        has_probes = False
    roles = [("suspect", protocol.models.suspect)]
    roles += [("clean", protocol.models.clean)] if not no_clean else []
    roles += [(f"reference{k}", spec) for k, spec in enumerate(protocol.models.reference, 1)]
    jobs = [("test", sets["test"], False), ("shadow", sets["shadow"], False)]
    if has_probes:
        jobs.append(("probes", probes_path, True))
    scores = timed("score", _score_stage, protocol, roles, jobs, out, log, score_progress)
    item_order = timed("item_order", _item_order_stage, protocol, sets["test"], out, log, score_progress)

    probe_files = {}
    if probes_path is not None:  # an empty probe set still goes in: analysis reports it as a design failure
        probe_files = {"probes": probes_path}
        if has_probes:
            probe_files.update(suspect_probes=scores["suspect", "probes"], clean_probes=scores["clean", "probes"])
    references = [ReferenceScores(scores[role, "test"], scores[role, "shadow"], scores.get((role, "probes")))
                  for role, _ in roles[2:]]
    results = timed("analyze", analyze, scores["suspect", "test"], scores.get(("clean", "test")),
                    scores["suspect", "shadow"], scores.get(("clean", "shadow")), references=references,
                    index=index_path, item_order=item_order, protocol=protocol, out=out, **probe_files)
    report = timed("report", write_report, out)
    log(f"verdict: {results['verdict']['label']} -> {report.html}")
    return AuditRun(out, results, report, seconds)
