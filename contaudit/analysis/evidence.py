"""Supporting evidence: reported beside the verdict, never deciding it (the order test
decides only without a clean model). Dose-response over the index's occurrence counts,
Min-K%++ test vs shadow, Oren et al.'s order test, the corpus index's findings and the
blind baseline; each entry says why when it is not available.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contaudit.analysis.did import ItemOrderResult, difference_in_means, dose_response, item_order_mde, item_order_test
from contaudit.analysis.inputs import MAX_LISTED_IDS, ModelFiles, ScoreFile, ScoreMatrix, read_item_order, score_matrix
from contaudit.analysis.results import did_dict
from contaudit.errors import InputError
from contaudit.io import iter_jsonl
from contaudit.manifest import read_json
from contaudit.protocol import AnalysisSettings
from contaudit.statistics import json_number

BLIND_BASELINE_KEY = 6  # seeds the blind baseline: default_rng([protocol seed, 6])


def supporting_evidence(test: ScoreMatrix, shadow: ScoreMatrix, models: list[ModelFiles], *, minkpp: str, index_by_id: dict,
                        order_entry: dict, sets: dict | None, settings: AnalysisSettings, rng,
                        minkpp_caveat: str | None = None) -> dict:
    """Dose-response, Min-K%++, the order test, the corpus index and the blind baseline.

    ``models`` are the suspect's score files then the clean models' (the suspect's
    alone in an audit without a clean model: dose-response needs ``d = suspect - clean``,
    and Min-K%++ compares the suspect's own test and shadow sets, with ``minkpp_caveat``).
    """
    out: dict = {"dose_response": dose_response_entry(test, index_by_id, settings),
                 "minkpp_did": minkpp_entry([m.files["test"] for m in models], [m.files["shadow"] for m in models],
                                            minkpp, settings, rng, caveat=minkpp_caveat),
                 "item_order": order_entry,
                 "corpus": corpus_entry(test.ids, index_by_id),
                 "blind_baseline": blind_entry(sets, test.ids, shadow.ids, settings)}
    return out


def dose_response_entry(test: ScoreMatrix, index_by_id: dict, settings: AnalysisSettings) -> dict:
    """Spearman correlation of the index's occurrence counts with ``d = suspect - clean`` over test items."""
    if test.values.shape[0] < 2:
        return {"available": False, "reason": "needs a clean model (d = suspect - clean)"}
    ids = [i for i in test.ids if i in index_by_id and isinstance(index_by_id[i].get("occurrences"), (int, float))]
    if not index_by_id:
        return {"available": False, "reason": "no index given"}
    if len(ids) < 4:
        return {"available": False, "reason": f"only {len(ids)} test items found in the index"}
    pos = {i: k for k, i in enumerate(test.ids)}
    occ = np.array([index_by_id[i]["occurrences"] for i in ids], dtype=float)
    d = np.array([test.suspect[pos[i]] - test.clean[pos[i]] for i in ids])
    res = dose_response(occ, d, alternative="less", confidence_level=settings.confidence_level)
    entry = {"available": True, **res.to_dict(), "n_with_occurrences": int(np.sum(occ > 0))}
    if res.statistic != res.statistic:
        entry.update(available=False, reason="occurrence counts (or differences) are constant")
    return entry


def minkpp_entry(test_files: list[ScoreFile], shadow_files: list[ScoreFile], minkpp: str,
                 settings: AnalysisSettings, rng, *, caveat: str | None = None) -> dict:
    """The Min-K%++ DiD, test vs shadow (higher = more member-like, so positive under contamination).

    With clean models, of ``suspect - clean`` (the panel's mean); with the suspect's files
    alone, its own test-vs-shadow difference (``suspect_only``, with ``caveat``).
    """
    if not all(minkpp in next(iter(f.rows.values())) for f in [*test_files, *shadow_files]):
        return {"available": False, "reason": f"score files lack {minkpp}"}
    t = score_matrix("test", test_files, minkpp)
    s = score_matrix("shadow", shadow_files, minkpp)
    alone = len(test_files) == 1
    if min(len(t.ids), len(s.ids)) < 2:
        return {"available": False, "reason": "fewer than 2 items in a set" if alone else
                "fewer than 2 paired items in a set"}
    x, y = (t.suspect, s.suspect) if alone else (t.suspect - t.clean, s.suspect - s.clean)
    res = difference_in_means(x, y, alternative="greater", n_resamples=settings.n_permutations,
                              n_bootstrap=settings.n_bootstrap, confidence_level=settings.confidence_level, rng=rng)
    entry = did_dict(res, metric=minkpp, unit=minkpp, direction="positive")
    if alone:
        return {"available": True, "suspect_only": True, **entry, "caveat": caveat}
    return {"available": True, **entry}


def blind_entry(sets: dict | None, test_ids: list[str], shadow_ids: list[str], settings: AnalysisSettings) -> dict:
    """The blind baseline's results entry (text-only classifier, test vs shadow), or why it is not available."""
    from contaudit.analysis.blind import blind_baseline

    if not sets or not sets.get("test") or not sets.get("shadow"):
        return {"available": False, "reason": "needs the sets' texts (an audit passes them; analyze: --test-set and --shadow-set)"}
    texts = {str(rec["id"]): rec["text"] for name in ("test", "shadow")
             for _, rec in iter_jsonl(Path(sets[name]))}
    missing = [i for i in test_ids + shadow_ids if i not in texts]
    if missing:
        return {"available": False, "reason": f"{len(missing)} scored items have no text in the sets "
                                              f"(e.g. {missing[0]!r})"}
    if min(len(test_ids), len(shadow_ids)) < 5:
        return {"available": False, "reason": "fewer than 5 items in a set"}
    rng = np.random.default_rng([settings.seed, BLIND_BASELINE_KEY])  # its own stream: the others stay as they were
    res = blind_baseline([texts[i] for i in test_ids], [texts[i] for i in shadow_ids], rng=rng)
    return res.to_dict()


def item_order_entry(item_order, settings: AnalysisSettings) -> tuple[dict, "ItemOrderResult | None"]:
    """The order test's results entry (and result) from an item-order file, or why it is not available.

    Besides the test (:func:`~contaudit.analysis.did.item_order_test`) the entry keeps,
    per shard, the gap ``canonical - mean(shuffled)`` and the spread of the shuffled
    orders, and the settings the file records (``contaudit order`` writes them).
    """
    if item_order is None:
        return {"available": False, "reason": "no item-order log-likelihoods given"}, None
    canonical, shuffled = read_item_order(item_order)
    try:
        res = item_order_test(canonical, shuffled, confidence_level=settings.confidence_level)
    except InputError as e:
        raise InputError(str(e), path=item_order) from None
    if shuffled.ndim == 1:
        shuffled = shuffled[None, :]
    spread = shuffled.std(axis=1, ddof=1) if shuffled.shape[1] > 1 else np.full(len(canonical), np.nan)
    per_shard = [{"gap": float(c - row.mean()), "shuffled_sd": json_number(sd),
                  "share_shuffled_at_least": float(np.mean(row >= c))}
                 for c, row, sd in zip(np.atleast_1d(canonical), shuffled, spread)]
    recorded = read_json(Path(item_order))
    entry = {"available": True, **res.to_dict(), "unit": "nats per shard", "per_shard": per_shard,
             "settings": recorded.get("settings") if isinstance(recorded.get("settings"), dict) else None,
             "model_id": (recorded.get("model") or {}).get("id") if isinstance(recorded.get("model"), dict) else None,
             "published_order_sorted": bool(recorded.get("published_order_sorted")),
             "order_warnings": [str(w) for w in recorded.get("warnings") or []]}
    if len(per_shard) >= 2 and settings.power:
        entry["minimum_detectable_effect"] = item_order_mde(canonical, shuffled, alpha=settings.alpha,
                                                            power=settings.power)
    return entry, res


def swapped_sets_warning(test_ids: list[str], shadow_ids: list[str], index_by_id: dict) -> list[str]:
    """A hint when the corpus holds the shadow set far more than the test set: the files may be swapped."""
    def share(ids):
        found = [index_by_id[i].get("status") for i in ids if i in index_by_id]
        return (found.count("seen") / len(found), len(found)) if found else (None, 0)

    (test_share, n_test), (shadow_share, n_shadow) = share(test_ids), share(shadow_ids)
    if test_share is None or shadow_share is None or shadow_share < 0.5 or shadow_share < 2 * test_share + 0.1:
        return []
    return [f"The corpus index finds {shadow_share:.0%} of the {n_shadow} shadow items but {test_share:.0%} of the "
            f"{n_test} test items: were the test and shadow files swapped? The test set is the one suspected of "
            f"having leaked; the shadow set, text the models cannot have seen."]


def corpus_entry(test_ids: list[str], index_by_id: dict) -> dict:
    """What the corpus index says of the test items: how many it finds seen, ambiguous or unseen."""
    if not index_by_id:
        return {"available": False, "reason": "no index given"}
    found = [index_by_id[i] for i in test_ids if i in index_by_id]
    status = [r.get("status") for r in found]
    seen = [i for i in test_ids if i in index_by_id and index_by_id[i].get("status") == "seen"]
    occurrences = [r.get("occurrences") for r in found if isinstance(r.get("occurrences"), (int, float))]
    entry = {"available": True, "n_test": len(test_ids), "n_in_index": len(found), "n_seen": status.count("seen"),
             "n_ambiguous": status.count("ambiguous"), "n_unseen": status.count("unseen"),
             "share_seen": status.count("seen") / len(found) if found else None,
             "total_occurrences": int(sum(occurrences)) if occurrences else 0, "seen_ids": seen[:MAX_LISTED_IDS]}
    if any("semantic_score" in r for r in found):  # an index with the semantic stage: its rephrased copies
        entry["n_paraphrased"] = status.count("paraphrased")
        paraphrased = [i for i in test_ids if i in index_by_id and index_by_id[i].get("status") == "paraphrased"]
        entry["paraphrased_ids"] = paraphrased[:MAX_LISTED_IDS]
        entry["paraphrased"] = [paraphrase_record(i, index_by_id[i]) for i in paraphrased[:MAX_LISTED_IDS]]
    return entry


PARAPHRASE_CHARS = 400  # of each text a report shows beside the other


def paraphrase_record(item_id: str, rec: dict) -> dict:
    """A paraphrased item as the report lists it: its text and the corpus text it matched, side by side."""
    def cut(text):
        text = " ".join(str(text or "").split())
        return text if len(text) <= PARAPHRASE_CHARS else text[:PARAPHRASE_CHARS - 1] + "…"

    return {"id": item_id, "score": rec.get("semantic_score"), "location": rec.get("semantic_location"),
            "item_text": cut(rec.get("text")), "corpus_text": cut(rec.get("semantic_text"))}
