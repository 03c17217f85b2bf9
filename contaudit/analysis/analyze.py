"""``contaudit analyze``: score files in, ``results.json`` out.

The analysis in the order it runs, each step in its own module:

* :mod:`~contaudit.analysis.inputs` reads the suspect's and the clean models' score
  files (and probes, item-order files, the index), checks from the manifests that each
  role's files come from one model, and pairs items by id;
* :mod:`~contaudit.analysis.design` says what the design allows (one clean model or a
  reference panel; exchangeable sets or not) and checks that the sets can be compared;
* :mod:`~contaudit.analysis.primary` runs the two primary DiD tests;
* :mod:`~contaudit.analysis.evidence` the supporting evidence;
* :mod:`~contaudit.analysis.verdict` decides, and :mod:`~contaudit.analysis.results`
  writes ``RUN_DIR/results.json`` (schema in ``docs/analysis.md``) with
  ``results.manifest.json`` beside it.

Items not scored by every model are counted and reported (and checked against the
protocol's limit), never dropped silently.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import contaudit.analysis.verdict as _verdict
from contaudit.analysis.design import Design, shift_check
from contaudit.analysis.evidence import item_order_entry, supporting_evidence, swapped_sets_warning
from contaudit.analysis.inputs import (ModelFiles, ReferenceScores, check_expected_models, check_same_models,
                                       index_evidence,
                                       item_lengths, read_scores, score_matrix, set_warnings)
from contaudit.analysis.primary import memorization_part, panel_warnings, perplexity_test, random_streams
from contaudit.analysis.results import AnalysisResults, write_results
from contaudit.analysis.units import choose_units, require_per_byte, tokens_per_byte
from contaudit.analysis.verdict import DesignCheck
from contaudit.errors import InputError
from contaudit.manifest import describe_path
from contaudit.protocol import SHADOW_ORIGINS, AnalysisSettings, Protocol, load_analysis_settings, model_roles
from contaudit.statistics import format_p

__all__ = ["analyze", "ReferenceScores"]


def analyze(suspect_test, clean_test=None, suspect_shadow=None, clean_shadow=None, *, suspect_probes=None,
            clean_probes=None,
            probes=None, references: list[ReferenceScores] | tuple = (), index=None, item_order=None,
            shadow_origin: str | None = None,
            protocol: str | Path | Protocol | AnalysisSettings | None = None, out: str | Path | None = None,
            warnings: list[str] | tuple = (), sets: dict | None = None,
            expected_models: dict[str, str] | None = None, outcomes: dict | None = None, answer_index=None) -> dict:
    """Run the analysis on score files and return the results dict (see ``docs/analysis.md``).

    Parameters
    ----------
    suspect_test, clean_test, suspect_shadow, clean_shadow : path
        Score files (``scores/<model>/<set>.jsonl``), paired by item id. Without a clean
        model (``clean_test`` and ``clean_shadow`` None) the verdict rests on the order
        test (``item_order``, then required) and is at most SUSPECT; Min-K%++ (suspect
        only, test vs shadow) and the index's corpus evidence are reported beside it.
    suspect_probes, clean_probes, probes : path, optional
        Probe score files of both models and ``probes.jsonl``; all three or none.
        Without them there is no memorization test and the verdict is at most SUSPECT.
    references : list of ReferenceScores, optional
        Score files of more clean models. With two or more clean models in all, both
        tests judge the suspect against the spread between clean models, adjusted for
        item covariates (:mod:`contaudit.analysis.panel`).
    index : path, optional
        An index directory (``indexes/NAME``) for the dose-response and corpus locations.
    answer_index : path, optional
        An index of the test items' answers alone (``[sets.*].answer_field``): with ``outcomes``, the
        inflation splits the test items found in the corpus by whether their answer was too.
    item_order : path, optional
        Suspect-model log-likelihoods of the test set in published vs shuffled orders,
        for the Oren et al. test (format in :func:`read_item_order`).
    shadow_origin : {'random_split', 'date_split', 'later_set'}, optional
        How the shadow set was made; default: the protocol's, else ``'later_set'``
        (the conservative assumption). With one clean model and a shadow set that is
        not a random split, the verdict is at most SUSPECT.
    protocol : path, Protocol, AnalysisSettings or None
        ``[analysis]`` (and the shadow origin from ``[sets]``); None means the defaults.
    out : path, optional
        Run directory; ``results.json`` and ``results.manifest.json`` are written there
        atomically.
    warnings : list of str, optional
        Warnings of earlier stages (duplicate texts left out of the sets), reported first.
    outcomes : dict, optional
        Per-item evaluation outcomes by model role (``suspect``, ``clean``, ``reference[1]``, ...), as
        :class:`~contaudit.analysis.inflation.ModelOutcomes`: with them ``results["inflation"]`` says how
        much contamination inflated the suspect's score (:func:`~contaudit.analysis.inflation.score_inflation`).
    sets : dict, optional
        ``{"test": path, "shadow": path}`` of the sets' ``{id, text}`` JSON Lines (as the
        audit writes them), for the blind baseline (:mod:`contaudit.analysis.blind`).
    expected_models : dict, optional
        Role (``suspect``, ``clean``, ``reference[1]``, ...) -> the fingerprint id of the
        model the protocol names for it (an audit passes them): score files whose
        manifests name another model are refused, naming both.

    Examples
    --------
    >>> results = analyze("scores/sus/test.jsonl", "scores/clean/test.jsonl",
    ...                   "scores/sus/shadow.jsonl", "scores/clean/shadow.jsonl",
    ...                   shadow_origin="random_split", out="runs/demo")  # doctest: +SKIP
    >>> results["verdict"]["label"]  # doctest: +SKIP
    'SUSPECT'
    """
    started = time.perf_counter()
    settings, provenance = load_analysis_settings(protocol)
    split_spec = provenance.pop("random_split", None)
    cutoffs = provenance.pop("cutoffs", None)
    origin = shadow_origin or provenance.get("shadow_origin") or "later_set"
    if origin not in SHADOW_ORIGINS:
        raise InputError(f"`shadow_origin` must be one of {', '.join(SHADOW_ORIGINS)}; got {origin!r}")
    references = [r if isinstance(r, ReferenceScores) else ReferenceScores(*r) for r in references]
    probe_args = {"suspect_probes": suspect_probes, "clean_probes": clean_probes, "probes": probes}
    given = [k for k, v in probe_args.items() if v is not None]
    if given and len(given) != 3 and given != ["probes"]:
        missing = [f"--{k.replace('_', '-')}" for k, v in probe_args.items() if v is None]
        raise InputError(f"the memorization test needs --suspect-probes, --clean-probes and --probes together; "
                         f"missing {', '.join(missing)}")
    if suspect_probes is not None and any(r.probes is None for r in references):
        raise InputError("the memorization test needs every reference model's probe scores (--reference-probes)")
    if suspect_shadow is None:
        raise InputError("the suspect's shadow-set scores are needed (--suspect-shadow)")
    if (clean_test is None) != (clean_shadow is None):
        raise InputError("give the clean model's scores of both sets (--clean-test and --clean-shadow), or neither "
                         "for an audit without a clean model")
    no_clean = clean_test is None
    if no_clean and (references or suspect_probes is not None or clean_probes is not None):
        raise InputError("reference models and probe scores need a clean model: give --clean-test and "
                         "--clean-shadow, or leave them out for an order-test audit")
    design = Design(origin, 0 if no_clean else 1 + len(references))
    common = {"design": design, "settings": settings, "provenance": provenance, "index": index,
              "item_order": item_order, "sets": sets, "minkpp": f"minkpp_{settings.minkpp_k}",
              "streams": random_streams(settings.seed), "warnings": [str(w) for w in warnings],
              "expected_models": expected_models or {}}
    if no_clean:
        analysis = _suspect_alone(suspect_test, suspect_shadow, probes=probes, **common)
    else:
        analysis = _with_clean_models(suspect_test, clean_test, suspect_shadow, clean_shadow, probe_args=probe_args,
                                      references=references, split_spec=split_spec, cutoffs=cutoffs, **common)
    if outcomes:
        analysis.inflation = _inflation(outcomes, analysis, settings, common["streams"]["inflation"], answer_index)
        analysis.inputs.update(_inputs(answer_index=answer_index))
        analysis.inputs.update({f"{role.replace('[', '').replace(']', '')}_outcomes": describe_path(o.source["path"])
                                for role, o in outcomes.items() if (o.source or {}).get("path")})
    analysis.timing_s = round(time.perf_counter() - started, 3)
    results = analysis.to_dict()
    if out is not None:
        write_results(results, out)
    return results


def _inflation(outcomes: dict, analysis: AnalysisResults, settings: AnalysisSettings, rng, answer_index=None) -> dict:
    """The score inflation from the models' outcomes on the analysed test and shadow items."""
    from contaudit.analysis.inflation import score_inflation

    roles = [m.role for m in analysis.models]
    unknown = sorted(set(outcomes) - set(roles))
    if unknown or "suspect" not in outcomes:
        raise InputError(f"outcomes must be given for the suspect, and only for this audit's models "
                         f"({', '.join(roles)}); got {', '.join(sorted(outcomes))}")
    status = {i: r.get("status") for i, r in analysis.index_by_id.items()}
    return score_inflation(outcomes["suspect"], analysis.test.ids, analysis.shadow.ids, clean=outcomes.get("clean"),
                           references=[outcomes[r] for r in roles[2:] if r in outcomes],
                           index_status=status or None, n_resamples=settings.n_permutations,
                           answer_status=(answer_statuses(answer_index, analysis.test.ids)
                                          if answer_index is not None else None),
                           n_bootstrap=settings.n_bootstrap, confidence_level=settings.confidence_level, rng=rng)


def answer_statuses(answer_index, test_ids: list[str]) -> dict[str, str]:
    """Each test item's answer: ``seen`` / ``unseen`` as the answers' index says, or ``ambiguous`` when it is too
    short to tell (fewer words than the index's unseen rule needs: a one-word answer such as "B" or "4" occurs
    whole almost anywhere, so finding it says nothing of a leak). The index must hold every test item's answer."""
    from contaudit.index.scan import UNSEEN_N
    from contaudit.index.store import load_index

    statuses = {r["id"]: r.get("status") if (r.get("n_words") or 0) >= UNSEEN_N else "ambiguous"
                for r in load_index(answer_index).items}
    missing = [i for i in test_ids if i not in statuses]
    if missing:
        raise InputError(f"the answers' index holds no answer for {len(missing)} of the {len(test_ids)} test items "
                         f"(first: {missing[0]!r}); it is another benchmark's: index this test set's answers",
                         path=answer_index)
    return statuses


def _inputs(**paths) -> dict:
    """The input files as results.json records them (path, size, hash), left out when not given."""
    return {k: describe_path(v) for k, v in paths.items() if v is not None}


def _with_clean_models(suspect_test, clean_test, suspect_shadow, clean_shadow, *, probe_args: dict,
                       references: list[ReferenceScores], split_spec: dict | None, cutoffs: dict | None,
                       design: Design, settings: AnalysisSettings, provenance: dict, index, item_order, sets,
                       minkpp: str, streams: dict, warnings: list[str], expected_models: dict) -> AnalysisResults:
    """The analysis with one clean model or a panel: the two DiD tests decide."""
    def read(p):
        return read_scores(p, optional=(minkpp, "n_tokens", "n_bytes", "nll_per_byte"))

    roles = model_roles(clean=True, n_references=len(references))
    paths = [(suspect_test, suspect_shadow), (clean_test, clean_shadow), *((r.test, r.shadow) for r in references)]
    models = [ModelFiles(role.name, {"test": read(test), "shadow": read(shadow)})
              for role, (test, shadow) in zip(roles, paths)]
    score_files = [f for m in models for f in m.files.values()]
    units = choose_units([m.files["test"].manifest for m in models], settings.unit,
                         per_byte_available=all(f.rows and all("nll_per_byte" in r for r in f.rows.values())
                                                for f in score_files))
    if units.per_byte:
        require_per_byte(score_files)
        units = replace(units, tokens_per_byte=tokens_per_byte([models[0].files["test"], models[0].files["shadow"]]))
    test = score_matrix("test", [m.files["test"] for m in models], units.perplexity_metric)
    shadow = score_matrix("shadow", [m.files["shadow"] for m in models], units.perplexity_metric)
    lengths = item_lengths([[m.files[s] for m in models] for s in ("test", "shadow")])
    if split_spec is not None and design.shadow_origin == "random_split":
        from contaudit.splits import verify_random_split

        provenance["split"] = verify_random_split(split_spec, test.ids, shadow.ids)
        design = replace(design, split_verified=True)
    warnings += set_warnings(models, test, shadow)

    checks = _verdict.check_sample_sizes({"test": len(test.ids), "shadow": len(shadow.ids)},
                                         {"test": settings.min_items, "shadow": settings.min_items})
    checks += [_verdict.check_pairing(p.name, len(p.ids), p.n_unpaired, max_fraction=settings.max_unpaired_fraction)
               for p in (test, shadow)]
    shift = shift_check(test, shadow, design, settings, lengths, units.perplexity_unit)
    if shift.name == "shadow_comparability" and design.split_verified:
        # contaudit drew this split itself: any difference the check finds is chance, by construction.
        shift.detail += (" Reported, not judged: contaudit made this split at random and re-derived it here, so a "
                         "difference between the sets can only be chance, which the exact tests allow for.")
        shift.passed = None
    elif shift.name == "shadow_comparability" and shift.passed is False:
        # Under a true randomisation this fires only by chance; so either it is chance or the split was not
        # random. Neither makes the design invalid: the sets are treated as not exchangeable.
        design = replace(design, refuted="the clean model sees them as different distributions "
                                         "(shadow_comparability check)")
        shift.passed = None
        shift.detail += (" A genuine random split fails this check only by chance, so the sets are treated as "
                         "not exchangeable rather than the design as invalid.")
    checks.append(shift)
    inconclusive = design.inconclusive_reason
    if design.panel and settings.references == "families" and design.n_clean < 3:
        inconclusive = (f"INCONCLUSIVE: the cross-family test (references = 'families') fits the clean models' "
                        f"shadow-to-test relation, which needs at least 3 clean models; there are {design.n_clean}. "
                        f"Add [[models.reference]] models, or set references = 'siblings' if they share the "
                        f"suspect's recipe and differ only by seed.")
    if design.panel and settings.reference_test == "rank":
        inconclusive = inconclusive or _verdict.panel_too_small(design.n_clean, alpha=settings.alpha, n_tests=2)
    ppl = perplexity_test(test, shadow, design, settings, streams["perplexity"], lengths=lengths)

    probes = probe_args["probes"]
    mem = None
    if probes is not None:
        probe_paths = [probe_args["suspect_probes"], probe_args["clean_probes"], *(r.probes for r in references)]
        mem = memorization_part(probes, probe_paths, models, design, settings, streams, units=units)
        checks += mem.checks
        warnings += mem.warnings
    memorization = mem.results.get(settings.primary_metric) if mem else None  # None: < 2 probes (check failed)

    warnings += check_same_models(models)
    check_expected_models(models, expected_models)
    unchecked = [str(f.path) for m in models for f in m.files.values() if not (f.manifest or {}).get("model")]
    if unchecked:
        warnings.append(f"{len(unchecked)} score files have no manifest naming their model (e.g. {unchecked[0]}), "
                        f"so they could not be checked to belong to the models they stand for.")
    if design.panel:
        warnings += panel_warnings("perplexity", ppl) + panel_warnings("memorization", memorization)

    index_by_id, index_data = index_evidence(index, test.ids)
    warnings += swapped_sets_warning(test.ids, shadow.ids, index_by_id)
    supporting = supporting_evidence(test, shadow, models, minkpp=minkpp, index_by_id=index_by_id,
                                     order_entry=item_order_entry(item_order, settings)[0], sets=sets,
                                     settings=settings, rng=streams["supporting"])
    warnings += supporting["item_order"].get("order_warnings", [])
    not_run = mem.not_run if mem else None
    if mem is not None and mem.suffix_tokens_per_byte:
        units = replace(units, suffix_tokens_per_byte=mem.suffix_tokens_per_byte)
    decided = _verdict.decide(ppl, memorization, checks, units.min_effects(settings),
                              memorization_metric=settings.primary_metric if probes is not None and not not_run else None,
                              cap_reason=design.cap_reason, n_clean=design.n_clean, memorization_not_run=not_run,
                              inconclusive_reason=inconclusive, units=units)
    inputs = {"suspect_test": suspect_test, "clean_test": clean_test, "suspect_shadow": suspect_shadow,
              "clean_shadow": clean_shadow, **probe_args, "index": index, "item_order": item_order}
    for role, r in zip(roles[2:], references):
        inputs.update({f"{role.slug}_test": r.test, f"{role.slug}_shadow": r.shadow, f"{role.slug}_probes": r.probes})
    warnings += _cutoff_warnings(cutoffs, design)
    return AnalysisResults(settings, provenance, design, models, decided, ppl, mem, checks, supporting, test, shadow,
                           index_by_id, index_data, warnings, _inputs(**inputs), units=units, cutoffs=cutoffs)


def _cutoff_warnings(cutoffs: dict | None, design: Design) -> list[str]:
    """What the recorded training cutoffs say: unchecked references, a suspect trained into the shadow period."""
    warnings = []
    if cutoffs and design.panel and not design.exchangeable and not cutoffs["checked"]:
        warnings.append("The training cutoffs of the clean models are not all recorded ([models.*] cutoff) or the "
                        "shadow set's start is not ([sets] shadow_from): a reference trained on the shadow period "
                        "would make a clean suspect look contaminated, and this audit could not check it.")
    suspect_cut = next((m for m in (cutoffs or {}).get("models", []) if m["role"] == "suspect"), None)
    if suspect_cut and suspect_cut["precedes_shadow"] is False:
        warnings.append(f"The suspect's training cutoff ({suspect_cut['cutoff']}) is not before the shadow set's start "
                        f"({cutoffs['shadow_from']}): it may have seen shadow-period text, which makes its shadow set "
                        f"look familiar and can only hide contamination.")
    return warnings


def _suspect_alone(suspect_test, suspect_shadow, *, probes, design: Design, settings: AnalysisSettings,
                   provenance: dict, index, item_order, sets, minkpp: str, streams: dict,
                   warnings: list[str], expected_models: dict) -> AnalysisResults:
    """The analysis of an audit without a clean model: the order test decides, at most SUSPECT.

    Reported beside it: Min-K%++ of the suspect, test vs shadow (a fair comparison only
    when the sets are a random split), and what the corpus index finds of the test items.
    """
    models = [ModelFiles("suspect", {"test": read_scores(suspect_test, optional=(minkpp, "n_tokens")),
                                     "shadow": read_scores(suspect_shadow, optional=(minkpp, "n_tokens"))})]
    check_expected_models(models, expected_models)
    test = score_matrix("test", [models[0].files["test"]], "nll_mean")
    shadow = score_matrix("shadow", [models[0].files["shadow"]], "nll_mean")
    warnings += set_warnings(models, test, shadow)
    n = len(test.ids)
    checks = [DesignCheck("sample_size_test", n >= settings.min_items,
                          f"{n} test items scored (at least {settings.min_items} needed)" if n >= settings.min_items
                          else f"Too few test items: {n} scored, the protocol needs at least {settings.min_items}.",
                          value=n, threshold=settings.min_items)]
    order_entry, order = item_order_entry(item_order, settings)
    warnings += order_entry.get("order_warnings", [])
    if order is None:
        checks.append(DesignCheck("order_test", False, "Without a clean model the order test is the only test that "
                                  "can decide, and no item-order log-likelihoods were given; compute them with "
                                  "`contaudit order` (or give [models.clean])."))
    else:
        checks.append(DesignCheck("order_test", True, f"Order test on {order.n_shards} shard(s) of consecutive test "
                                  f"items, {order.n_permutations} shuffled orders each ({order.method}).",
                                  value=order.n_shards, numbers={"n_permutations": order.n_permutations}))
        recorded = order_entry.get("model_id")
        suspect_ids = {fp for fp, _ in models[0].model_ids().values()}
        if recorded and suspect_ids and recorded not in suspect_ids:
            warnings.append(f"The item-order file {item_order} was computed with another model (fingerprint "
                            f"{recorded[:12]}) than the suspect's score files ({sorted(suspect_ids)[0][:12]}).")
    if probes is not None:
        warnings.append("Probes were given but there is no clean model: the memorization DiD needs one, so they "
                        "were not used.")

    index_by_id, index_data = index_evidence(index, test.ids)
    warnings += swapped_sets_warning(test.ids, shadow.ids, index_by_id)
    caveat = (None if design.exchangeable else
              f"the shadow set is a {design.shadow_origin.replace('_', ' ')}: without a clean model a difference "
              f"in Min-K%++ may be the shift between the sets, not contamination")
    supporting = supporting_evidence(test, shadow, models, minkpp=minkpp, index_by_id=index_by_id,
                                     order_entry=order_entry, sets=sets, settings=settings, rng=streams["supporting"],
                                     minkpp_caveat=caveat)
    notes = []
    mk = supporting["minkpp_did"]
    if mk.get("available") and mk["pvalue"] is not None and mk["pvalue"] <= settings.alpha and mk["estimate"] > 0:
        why = ("the sets are a random split, so this points at the test items having leaked, in whatever order"
               if design.exchangeable else "the sets differ in origin, so this may be the shift between them")
        notes.append(f"Supporting evidence, not deciding: the suspect's Min-K%++ ranks test items as more "
                     f"member-like than shadow items ({mk['estimate']:+.3g}, {format_p(mk['pvalue'], named=True)}); "
                     f"{why}.")
    if order_entry.get("published_order_sorted"):
        notes.append("The published order is the items' ids sorted: the order test is valid only if that order "
                     "carries nothing a model could know without the file; a small p-value may then be a preference "
                     "for sorted ids (or content that drifts with them), not the file.")
    decided = _verdict.decide_order_only(order, checks, settings, cap_reason=design.cap_reason,
                                         mde=order_entry.get("minimum_detectable_effect"), notes=tuple(notes))
    return AnalysisResults(settings, provenance, design, models, decided, None, None, checks, supporting, test,
                           shadow, index_by_id, index_data, warnings,
                           _inputs(suspect_test=suspect_test, suspect_shadow=suspect_shadow, index=index,
                                   item_order=item_order))
