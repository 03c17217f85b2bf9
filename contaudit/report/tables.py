"""The content of a report as tables, built once from ``results.json``.

``markdown.py`` and ``html.py`` only render these; neither computes anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from contaudit.statistics import format_p
from contaudit.metrics import METRICS

TEST_NAMES = {"perplexity_did": "Perplexity DiD", "memorization_did": "Memorization DiD",
              "item_order": "Order test (Oren et al. 2023)"}
LABEL_TEXT = {
    "CONTAMINATED": "Contamination detected: both primary tests agree.",
    "SUSPECT": "Suspect: one primary test shows contamination, the other does not confirm it.",
    "NO_EVIDENCE": "No evidence of contamination (which is not proof of a clean model).",
    "INVALID_DESIGN": "Invalid design: this audit cannot support a verdict.",
    "INCONCLUSIVE": "Inconclusive: this design cannot hold its false-positive rate, so the tests decide nothing; "
                    "the reasons say what would make it decidable.",
}
ORDER_ONLY_LABEL_TEXT = {
    "SUSPECT": "Suspect: the suspect prefers the benchmark's published item order; with no clean model the "
               "verdict goes no higher.",
    "NO_EVIDENCE": "No evidence from the order test (which is not proof of a clean model).",
}


def order_only(results: dict) -> bool:
    """True for an audit without a clean model (the order test decides)."""
    return (results.get("design") or {}).get("n_clean_models") == 0


def label_text(results: dict) -> str:
    """The verdict's one-line meaning, for this design."""
    label = results["verdict"]["label"]
    if order_only(results):
        return ORDER_ONLY_LABEL_TEXT.get(label, LABEL_TEXT[label])
    return LABEL_TEXT[label]


def _test_result(results: dict, name: str) -> dict:
    """The results entry of a primary test."""
    if name == "perplexity_did":
        return results["perplexity_did"]
    if name == "item_order":
        return results["supporting"]["item_order"]
    return results["memorization_did"][results["memorization_did"]["primary_metric"]]


@dataclass
class Table:
    """A titled table of already formatted cells; ``align`` per column: 'l' or 'r'."""

    title: str
    headers: list[str]
    rows: list[list[str | list[str]]]  # a list cell holds several lines (e.g. corpus locations)
    align: str = ""  # per column: 'l' left, 'r' right, 'w' left and wrapped (long text)
    note: str = ""
    marks: list[str] = field(default_factory=list)  # per row: "" / "pass" / "fail" / "hit" (for HTML styling)

    def __post_init__(self):
        if not self.align:
            self.align = "l" * len(self.headers)
        if not self.marks:
            self.marks = [""] * len(self.rows)


def nll_unit(results: dict) -> str:
    """The unit the NLL comparison ran in (``nats/token`` or ``nats/byte``)."""
    return (results.get("units") or {}).get("perplexity") or "nats/token"


def suffix_unit(results: dict) -> str:
    """The unit of the suffix log-prob comparison."""
    return (results.get("units") or {}).get("suffix_logprob") or "nats/token"


def fmt(x, digits: int = 3, *, sign: bool = False) -> str:
    """A number with ``digits`` significant digits; '—' for None/nan."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if x == 0:
        return "0"  # a true zero carries no sign ("+0 [+0, +0]" read like a rounding)
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:+d}" if sign else f"{x:d}"
    if (abs(x) < 10 ** -(digits + 1) or abs(x) >= 10 ** (digits + 3)):
        return f"{x:+.{digits - 1}e}" if sign else f"{x:.{digits - 1}e}"
    return f"{x:+.{digits}g}" if sign else f"{x:.{digits}g}"


def fmt_ci(ci) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "—"
    return f"[{fmt(ci[0], sign=True)}, {fmt(ci[1], sign=True)}]"


def primary_table(results: dict) -> Table:
    v = results["verdict"]
    level = results["protocol"]["analysis"]["confidence_level"]
    rows, marks = [], []
    diagnosis_only = v["label"] in ("INCONCLUSIVE", "INVALID_DESIGN")
    for t in v["tests"]:
        did = _test_result(results, t["name"])
        expect = "< 0" if t["direction"] == "negative" else "> 0"
        bound = f"CI beyond {'-' if t['direction'] == 'negative' else '+'}{fmt(t['min_effect'])}"
        counts = "yes" if t["counts"] else "no"
        rows.append([TEST_NAMES[t["name"]], t["unit"], fmt(t["estimate"], sign=True), fmt_ci(t["confidence_interval"]),
                     format_p(t["pvalue"]), format_p(t["pvalue_holm"]),
                     fmt(did.get("hedges_g", did.get("effect_in_reference_sd")), 2, sign=True),
                     f"{expect}, {bound}" if t["min_effect"] else expect,
                     f"{counts} (diagnosis only)" if diagnosis_only else counts])
        marks.append("hit" if t["counts"] and not diagnosis_only else "")
    design = results.get("design") or {}
    analysis = results["protocol"]["analysis"]
    if order_only(results):
        io = results["supporting"]["item_order"]
        note = (f"No clean model: the order test alone decides, at alpha = {v['alpha']} (no correction: one test). "
                f"Estimate: the mean over {io.get('n_shards')} shards of consecutive test items of the suspect's "
                f"log-likelihood of the shard in its published order minus the mean over "
                f"{io.get('n_permutations')} shuffled orders; one-sided {io.get('method')}.")
        size = "Effect size"
    elif design.get("test") == "reference panel" and analysis.get("references") == "families":
        parts = []
        for t in v["tests"]:
            did = _test_result(results, t["name"])
            rel = did.get("relation") or {}
            if rel:
                parts.append(f"{TEST_NAMES[t['name']]}: slope {fmt(rel.get('slope'))}, R² {fmt(rel.get('r_squared'), 2)}, "
                             f"spread about it {fmt(did.get('reference_sd'))} {t['unit']}; the suspect sits "
                             f"{fmt(did.get('effect_in_reference_sd'), 2, sign=True)} SDs off it (the result holds for "
                             f"a recipe offset of up to {fmt(did.get('robust_to_offset_sd'), 2)} SDs); conformal p "
                             f"{format_p(did.get('pvalue_conformal'))}"
                             + ("; extrapolated" if did.get("extrapolation") else ""))
        note = (f"Cross-family panel of {design['n_clean_models']} clean models: across them, each model's "
                f"test-set score is fitted on its shadow-set score, and the suspect's test score is judged against "
                f"what the fit predicts from its own shadow score (estimate: the suspect's residual). One-sided "
                f"p-values: the prediction pivot, the larger of its normal and Student-t(2) tails; Holm correction "
                f"over the primary tests at alpha = {v['alpha']}. " + " ".join(f"{p}." for p in parts))
        size = "Off the relation (SDs)"
    elif design.get("test") == "reference panel":
        how = {"t": "t prediction interval", "rank": "rank among the models"}.get(
            analysis.get("reference_test", "t"), "prediction pivot, the larger of its normal and Student-t(2) tails")
        spreads = []
        for t in v["tests"]:
            did = results["perplexity_did"] if t["name"] == "perplexity_did" else \
                results["memorization_did"][results["memorization_did"]["primary_metric"]]
            if did.get("reference_sd") is not None:
                spreads.append(f"{TEST_NAMES[t['name']]} SD {fmt(did['reference_sd'])} {t['unit']} (adjusted for "
                               f"{', '.join(did.get('covariates') or ['nothing'])}; rank p {format_p(did.get('pvalue_rank'))})")
        note = (f"Reference panel of {design['n_clean_models']} clean models: the suspect's effect against the "
                f"clean models' effects; one-sided p-values from the {how}, intervals from the models' spread "
                f"(effect size in units of it), Holm correction over the primary tests at alpha = {v['alpha']}. "
                f"Spread of the clean models' effects: {'; '.join(spreads)}.")
        size = "Effect (model SDs)"
    else:
        note = (f"One-sided permutation p-values ({analysis['n_permutations']:,} resamples), BCa bootstrap CIs, "
                f"Holm correction over the primary tests at alpha = {v['alpha']}.")
        size = "Hedges' g"
    units = results.get("units")
    if units:
        note += f" Unit: {units['reason']}"
    return Table("Primary tests", ["Test", "Unit", "Estimate", f"{level:.0%} CI", "p", "Holm p", size,
                                   "Counts if", "Counts"], rows, "llrrrrrll", marks=marks, note=note)


def checks_table(results: dict) -> Table:
    rows, marks = [], []
    for c in results["design_checks"]:
        state = {True: "pass", False: "FAIL", None: "n/a"}[c["passed"]]
        rows.append([c["name"].replace("_", " "), state, c["detail"]])
        marks.append({True: "pass", False: "fail", None: ""}[c["passed"]])
    return Table("Design checks", ["Check", "Result", "Detail"], rows, "lll", marks=marks)


def _evidence(label: str, entry: dict | None, note: str, *, key: str = "estimate") -> list[str]:
    """One supporting-evidence row, or why it is not available."""
    if not entry or entry.get("available") is False:
        return [label, "—", "—", "—", f"not available: {(entry or {}).get('reason', 'not computed')}"]
    return [label, fmt(entry[key], sign=True), fmt_ci(entry["confidence_interval"]), format_p(entry["pvalue"]), note]


def supporting_table(results: dict) -> Table:
    sup = results["supporting"]
    rows = []
    mem = results.get("memorization_did")
    if mem:
        for other in METRICS:
            if other != mem["primary_metric"]:
                rows.append(_evidence(f"Memorization DiD ({other}, secondary)", mem.get(other),
                                      "> 0 under contamination"))
    dr = sup.get("dose_response", {})
    rows.append(_evidence("Dose-response (Spearman ρ, occurrences vs d)", dr,
                          f"< 0 under contamination; n = {dr.get('n')}", key="rho"))
    mk = sup.get("minkpp_did", {})
    if mk.get("suspect_only"):
        rows.append(_evidence(f"Min-K%++, suspect only: test − shadow ({mk.get('metric')})", mk,
                              "> 0 under contamination" + (f"; {mk['caveat']}" if mk.get("caveat") else
                                                           "; sets are a random split")))
    else:
        rows.append(_evidence(f"Min-K%++ DiD ({mk.get('metric', 'minkpp')})", mk, "> 0 under contamination"))
    io = sup.get("item_order", {})
    if not order_only(results):  # without a clean model it is the primary test
        rows.append(_evidence("Item order (Oren et al. 2023), nats", io,
                              f"> 0 under contamination; {io.get('method')}, {io.get('n_shards')} shard(s)"))
    blind = sup.get("blind_baseline")
    if blind is not None:
        if blind.get("available"):
            rows.append(["Blind baseline: text-only classifier, test vs shadow (AUC)", fmt(blind["auc"]), "—",
                         format_p(blind["pvalue"]), "0.5: the sets read alike; well above: a shift a model-based "
                         "test can ride on (Das et al. 2024)"])
        else:
            rows.append(["Blind baseline: text-only classifier (AUC)", "—", "—", "—",
                         f"not available: {blind.get('reason', 'not computed')}"])
    corpus = sup.get("corpus")
    if corpus is not None:
        if corpus.get("available"):
            rows.append(["Corpus index: test items seen", f"{corpus['n_seen']} / {corpus['n_in_index']}", "—", "—",
                         f"{corpus['n_ambiguous']} ambiguous, {corpus['n_unseen']} unseen"
                         + (f", {corpus['n_paraphrased']} paraphrased (semantic stage)" if "n_paraphrased" in corpus
                            else "") + f"; {corpus['total_occurrences']} occurrences in all"])
        else:
            rows.append(["Corpus index: test items seen", "—", "—", "—",
                         f"not available: {corpus.get('reason', 'not computed')}"])
    return Table("Supporting evidence (shown, not deciding)", ["Evidence", "Estimate", "CI", "p", "Note"], rows,
                 "lrrrl")


def inflation_table(results: dict) -> Table | None:
    """The score inflation: each model's score on all test items, the ones the corpus holds and the rest, and
    on the shadow set; then the inflation estimate and the suspect's score without the leak."""
    inf = results.get("inflation")
    if not inf:
        return None
    from contaudit.analysis.inflation import SCORE_GROUPS

    rows = []
    for role, by_group in inf["scores"].items():
        for key, label, _ in SCORE_GROUPS:
            g = by_group.get(key)
            if g is not None:
                rows.append([f"{role}: {label}", fixed(g["mean"]), fmt_ci(g["confidence_interval"]), "—", str(g["n"])])
    rows.append([f"Inflation: {inf['design']}", fixed(inf["estimate"], sign=True), fmt_ci(inf["confidence_interval"]),
                 format_p(inf["pvalue"]), f"{inf['n']['test']} / {inf['n']['shadow']}"])
    clean = inf["clean_score"]
    rows.append(["Suspect's test score without the leak (test score minus the inflation)",
                 fixed(clean["estimate"]), fmt_ci(clean["confidence_interval"]), "—", str(inf["n"]["test"])])
    unseen = inf.get("unseen_items_score")
    if unseen and unseen["n"]:
        how = "reweighted to the test set's difficulty" if unseen["reweighted"] else "not reweighted"
        rows.append([f"Suspect's score on the test items not found in the corpus ({how})", fixed(unseen["mean"]),
                     fmt_ci(unseen["confidence_interval"]), "—", str(unseen["n"])])
    return Table(f"Score inflation ({inf['metric']})", ["Score", "Estimate", "CI", "p (one-sided)", "Items"], rows,
                 "lrrrr", note="Inflation: (suspect test - shadow) - (comparison test - shadow), > 0 when the leak "
                               "raised the score; shown, not deciding the verdict.")


def data_table(results: dict) -> Table:
    if order_only(results):
        rows = [[name, str(results["data"][name].get("n_paired", 0))] for name in ("test", "shadow")
                if results["data"].get(name) is not None]
        io = results["supporting"].get("item_order") or {}
        if io.get("available"):
            rows.append(["test, in shards for the order test", f"{io['n_shards']} x {io['n_permutations'] + 1} orders"])
        return Table("Items scored", ["Set", "Scored by the suspect"], rows, "lr",
                     note="No clean model: only the suspect is scored.")
    rows = []
    for name in ("test", "shadow", "probes"):
        d = results["data"].get(name)
        if d is None:
            continue
        # an empty probe set (no pairs built) has no pairing counts
        rows.append([name, *(str(d.get(k, 0)) for k in ("n_paired", "n_only_suspect", "n_only_clean"))])
    return Table("Items scored", ["Set", "Paired", "Only suspect", "Only clean"], rows, "lrrr",
                 note="Items scored by only one model are left out of the tests and counted here.")


def common_folder(paths: list[str]) -> str | None:
    """The folder all ``paths`` lie under (tables show corpus locations relative to it), or None."""
    import os

    folders = [os.path.dirname(p) for p in paths if isinstance(p, str) and os.path.isabs(p)]
    if not folders or len(folders) < len([p for p in paths if isinstance(p, str)]):
        return None
    root = os.path.commonpath(folders)
    return root if root not in ("", "/") else None


class Hover(str):
    """A cell's text with the fuller text a browser shows on hover (``full``): a corpus location
    shortened relative to the table's common folder keeps its absolute path there."""

    full: str

    def __new__(cls, text: str, full: str):
        cell = super().__new__(cls, text)
        cell.full = full
        return cell


def location_text(loc, root: str | None = None) -> str:
    """A corpus location ``[file, record, offset]`` as ``file:record@offset``, the file relative to ``root``
    (a :class:`Hover` holding the absolute form)."""
    import os

    if not isinstance(loc, (list, tuple)) or len(loc) < 2:
        return str(loc)
    where = f":{loc[1]}" + (f"@{loc[2]}" if len(loc) > 2 and loc[2] is not None else "")
    path = os.path.relpath(loc[0], root) if root else loc[0]
    return Hover(path + where, full=loc[0] + where) if root else path + where


def _item_locations(index: dict | None) -> list:
    if not index:
        return []
    locs = index.get("locations") or []
    return locs or ([index["neardup_location"]] if index.get("neardup_location") else [])


def items_root(items: list[dict]) -> str | None:
    """The common folder of the corpus locations of ``items`` (their ``index`` records)."""
    return common_folder([loc[0] for it in items for loc in _item_locations(it.get("index"))
                          if isinstance(loc, (list, tuple)) and loc])


def _locations(index: dict | None, root: str | None = None) -> list[str]:
    """Corpus locations as ``file:record@offset`` strings (a list: renderers decide how many to show)."""
    return [location_text(loc, root) for loc in _item_locations(index)]


def fixed(x, decimals: int = 3, *, sign: bool = False) -> str:
    """A number with a fixed number of decimals (so a column lines up); '—' for None/nan."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:+.{decimals}f}" if sign else f"{x:.{decimals}f}"


def suspicious_items_table(results: dict, top: int | None = None) -> Table:
    """Test items whose suspect-minus-clean NLL difference is most negative, against the shadow spread."""
    top = top or results["protocol"]["analysis"]["top_items"]
    if order_only(results):
        return _suspect_only_items_table(results, top)
    shadow = [it["d"] for it in results["items"]["shadow"]]
    mean = sum(shadow) / len(shadow) if shadow else 0.0
    sd = math.sqrt(sum((x - mean) ** 2 for x in shadow) / (len(shadow) - 1)) if len(shadow) > 1 else 0.0
    has_index = any("index" in it for it in results["items"]["test"])
    listed = sorted(results["items"]["test"], key=lambda it: it["d"])[:top]
    root = items_root(listed)
    rows = []
    for k, it in enumerate(listed, 1):
        z = (it["d"] - mean) / sd if sd else None
        row = [str(k), str(it["id"]), fixed(it["d"], sign=True), fixed(z, 2, sign=True), fixed(it["y_sus"]),
               fixed(it["y_clean"])]
        if has_index:
            row += _index_cells(it, root)
        rows.append(row)
    headers = ["#", "Item", "d (sus − clean)", "z vs shadow", "NLL sus", "NLL clean"]
    align = "rlrrrr"
    if has_index:
        headers += INDEX_HEADERS
        align += "rrl"
    return Table("Most suspicious test items", headers, rows, align,
                 note=f"d is the suspect's mean NLL minus the clean model's ({nll_unit(results)}); z compares it with the "
                      "shadow items' d. Items first in this list are where the suspect is most unusually familiar."
                      + _root_note(root))


def paraphrased_table(results: dict) -> Table | None:
    """The test items the semantic stage found only rephrased: each beside the corpus text it matched."""
    corpus = (results.get("supporting") or {}).get("corpus") or {}
    listed = corpus.get("paraphrased")
    if not listed:
        return None
    root = common_folder([p["location"][0] for p in listed if isinstance(p.get("location"), list) and p["location"]])
    rows = [[str(p["id"]), fixed(p.get("score")), location_text(p["location"], root) if p.get("location") else "—",
             p["item_text"], p["corpus_text"]] for p in listed]
    more = corpus.get("n_paraphrased", len(listed)) - len(listed)
    return Table("Test items found only rephrased (semantic stage)",
                 ["Item", "Score", "Corpus location", "Benchmark text", "Corpus text"], rows, "lrlww",
                 note="Alignment score of the item with the corpus span (the index's threshold is in its manifest). "
                      "Shown, not deciding: probes and verdicts use exact and near-duplicate matches only."
                      + (f" {more} more are in the index." if more > 0 else ""))


def _root_note(root: str | None) -> str:
    return f" Corpus locations are relative to {root}." if root else ""


INDEX_HEADERS = ["Occurrences", "Coverage", "Corpus locations (file:record@offset)"]


def _index_cells(item: dict, root: str | None = None) -> list[str]:
    """An item's corpus evidence as table cells (under :data:`INDEX_HEADERS`)."""
    idx = item.get("index") or {}
    occ = idx.get("occurrences")
    return [str(occ) if occ is not None else "—", fixed(idx.get("coverage"), 2),
            _locations(item.get("index"), root) or "—"]


def _suspect_only_items_table(results: dict, top: int) -> Table:
    """Without a clean model: the test items the suspect finds easiest, against its shadow items."""
    has_index = any("index" in it for it in results["items"]["test"])
    listed = sorted(results["items"]["test"], key=lambda it: it["y_sus"])[:top]
    root = items_root(listed)
    rows = []
    for k, it in enumerate(listed, 1):
        row = [str(k), str(it["id"]), fixed(it["y_sus"]), fixed(it.get("z_vs_shadow"), 2, sign=True)]
        if has_index:
            row += _index_cells(it, root)
        rows.append(row)
    headers = ["#", "Item", "NLL sus", "z vs shadow"]
    align = "rlrr"
    if has_index:
        headers += INDEX_HEADERS
        align += "rrl"
    return Table("Test items the suspect finds easiest", headers, rows, align,
                 note="Mean NLL of the suspect (nats/token) and its z against the suspect's shadow items. Without a "
                      "clean model an easy item may simply be an easy item: this lists where to look, it is not "
                      "evidence." + _root_note(root))


def probe_table(results: dict, top: int | None = None) -> Table | None:
    """Seen probes that carry the memorization evidence of the primary metric.

    With ``suffix_logprob`` primary: the seen probes whose suffix log-prob the suspect
    raised most over the clean model; otherwise those the suspect completes exactly
    and the clean model does not.
    """
    probes = results["items"].get("probes") or []
    if not probes:
        return None
    top = top or results["protocol"]["analysis"]["top_items"]
    mem = results.get("memorization_did") or {}
    if mem.get("primary_metric") == "suffix_logprob" and all(p.get("logprob_sus") is not None for p in probes):
        return _logprob_probe_table(probes, top, unit=suffix_unit(results))
    hits = [p for p in probes if p["probe_set"] == "seen" and p["exact_sus"] and not p["exact_clean"]]
    hits.sort(key=lambda p: -(p["frac_sus"] or 0) + (p["frac_clean"] or 0))
    rows = [[str(p["id"]), str(p["n_words"]) if p.get("n_words") is not None else "—", fixed(p["frac_sus"], 2),
             fixed(p["frac_clean"], 2)] for p in hits[:top]]
    return Table("Seen probes reproduced verbatim by the suspect only",
                 ["Probe", "Words", "Token match (suspect)", "Token match (clean)"], rows, "lrrr", note=f"{len(hits)} seen probes in all; the first {min(top, len(hits))} shown.")


def _logprob_probe_table(probes: list[dict], top: int, *, unit: str) -> Table:
    gain = {p["id"]: p["logprob_sus"] - p["logprob_clean"] for p in probes}
    seen = sorted((p for p in probes if p["probe_set"] == "seen"), key=lambda p: -gain[p["id"]])
    unseen = [gain[p["id"]] for p in probes if p["probe_set"] == "unseen"]
    rows = [[str(p["id"]), str(p["n_words"]) if p.get("n_words") is not None else "—", fixed(p["logprob_sus"], 2),
             fixed(p["logprob_clean"], 2), fixed(gain[p["id"]], 2, sign=True),
             f"{p['exact_sus']} / {p['exact_clean']}"] for p in seen[:top]]
    baseline = f"{sum(unseen) / len(unseen):+.2f}" if unseen else "—"
    return Table("Seen probes the suspect became most likely to reproduce",
                 ["Probe", "Words", "Suffix log-prob (suspect)", "Suffix log-prob (clean)", "Gain", "Exact (sus / clean)"],
                 rows, "lrrrrr",
                 note=f"Mean log-prob of the suffix given the prefix, {unit}; gain = suspect - clean. The mean "
                      f"gain over the {len(unseen)} unseen probes is {baseline}: the memorization DiD is the seen "
                      f"mean minus that. The first {min(top, len(seen))} of {len(seen)} seen probes shown.")


def mde_text(results: dict) -> str:
    mde = results["verdict"].get("minimum_detectable_effect") or {}
    parts = []
    if mde.get("perplexity_did") is not None:
        parts.append(f"perplexity DiD {-mde['perplexity_did']:+.3g} {nll_unit(results)}")
    if mde.get("memorization_did") is not None:
        metric = (results.get("memorization_did") or {}).get("primary_metric")
        parts.append(f"memorization DiD {mde['memorization_did']:+.3g} {METRICS[metric].unit if metric in METRICS else ''}".rstrip())
    if mde.get("item_order") is not None:
        parts.append(f"order-test gap {mde['item_order']:+.3g} nats per shard")
    if not parts:
        return ""
    return (f"Minimum detectable effects at {mde['power']:.0%} power (one-sided, alpha {mde['alpha_per_test']:.3g} "
            f"per test): " + ", ".join(parts) + ".")


def protocol_lines(results: dict) -> list[tuple[str, str]]:
    p = results["protocol"]
    return [("Protocol", f"{p.get('name') or '—'} ({p.get('source') or 'no protocol file'})"),
            (f"Protocol SHA-256 (of the {p.get('sha256_of', 'file')})", p["sha256"]),
            ("Analysis", f"contaudit {results['contaudit_version']}, schema {results['schema_version']}, "
                         f"{results['created']}")] + _cutoff_lines(results) + _split_lines(results)


def _cutoff_lines(results: dict) -> list[tuple[str, str]]:
    """The models' training cutoffs against the shadow set's start, when the protocol records any."""
    cut = (results.get("design") or {}).get("cutoffs")
    if not cut or (cut.get("shadow_from") is None and not any(m["cutoff"] for m in cut["models"])):
        return []
    models = ", ".join(f"{m['role']} {m['cutoff'] or 'unknown'}" for m in cut["models"])
    state = ("every clean model's cutoff precedes it" if cut["checked"] else
             "not every clean model's cutoff is recorded, so this could not be checked")
    return [("Training cutoffs", f"shadow set from {cut.get('shadow_from') or 'unknown'}: {models}; {state}")]


def _split_lines(results: dict) -> list[tuple[str, str]]:
    split = results["protocol"].get("split")
    if not split:
        return []
    return [("Random split", f"made by contaudit from {split['input']['path']} (SHA-256 {split['input']['sha256'][:12]}), "
                             f"seed {split['seed']}, {split['n_test']} test / {split['n_shadow']} shadow items; "
                             f"re-derived and verified")]
