"""``contaudit probes``: seen/unseen probe sets for the memorization test.

Seen probes are benchmark items the index found in the corpus; unseen probes are
items with no 8-gram in the corpus and no near duplicate. Each seen item is paired
with a distinct unseen item of similar length (optionally also similar word rarity)
by optimal matching (``scipy.optimize.linear_sum_assignment``) within a caliper.
Membership studies (MIMIR; Duan et al. 2024) show unmatched non-member sets make
detection look better than it is, so the balance is measured and stored.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from contaudit.statistics import standardized_mean_difference
from contaudit.config import AnalysisSettings, ProbeConfig, default_of
from contaudit.errors import InputError
from contaudit.index.store import CorpusIndex, load_index
from contaudit.manifest import (INDEX_MANIFEST, check_can_create, describe_path, make_manifest, manifest_beside,
                               write_json_atomic, write_jsonl_atomic)
from contaudit.text import first_words_start, normalize, split_at_word


@dataclass
class ProbeSet:
    """The result of probe construction."""

    probes: list[dict]
    balance: dict[str, float]
    counts: dict[str, int]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def word_rarity(texts: list[str]) -> list[float]:
    """Mean inverse document frequency of each text's words, within ``texts``."""
    docs = [set(normalize(t).split()) for t in texts]
    df = Counter(w for d in docs for w in d)
    n = len(docs)
    out = []
    for t in texts:
        ws = normalize(t).split()
        out.append(float(np.mean([math.log(n / df[w]) for w in ws])) if ws else 0.0)
    return out


def split_probe(text: str, config: ProbeConfig) -> tuple[str, str] | None:
    """(prefix, suffix) for the completion test, or None if the item is too short."""
    parts = split_at_word(text, config.suffix_words)
    if parts is None:
        return None
    head, suffix = parts
    if len(normalize(head).split()) < config.min_prefix_words:
        return None
    prefix = head[first_words_start(head, config.prefix_words):]
    return prefix, suffix


def match_pairs(seen_x: np.ndarray, unseen_x: np.ndarray, caliper: float) -> list[tuple[int, int]]:
    """Optimal one-to-one pairs (seen index, unseen index) within ``caliper``.

    Covariates (columns of ``*_x``) are scaled by their pooled standard deviation;
    the total Euclidean distance over pairs is minimized; pairs farther apart than
    ``caliper`` are dropped.
    """
    if not len(seen_x) or not len(unseen_x):
        return []
    pooled = np.vstack([seen_x, unseen_x])
    scale = pooled.std(axis=0, ddof=1) if len(pooled) > 1 else np.ones(pooled.shape[1])
    scale[~(scale > 0)] = 1.0
    s, u = seen_x / scale, unseen_x / scale
    cost = np.sqrt(((s[:, None, :] - u[None, :, :]) ** 2).sum(axis=2))  # (n_seen, n_unseen)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if cost[r, c] <= caliper]


def make_probes(index: CorpusIndex, config: ProbeConfig = ProbeConfig(), *,
                balance_threshold: float = default_of(AnalysisSettings, "balance_threshold")) -> ProbeSet:
    """Build matched seen/unseen probes from an index (no files written).

    A matching covariate whose |SMD| exceeds ``balance_threshold`` (the ``[analysis]``
    setting the verdict judges balance by) is listed in ``ProbeSet.problems``.
    """
    config.validate()
    items = index.items
    rarity = word_rarity([it["text"] for it in items])
    pools: dict[str, list[int]] = {"seen": [], "unseen": []}
    splits: dict[int, tuple[str, str]] = {}
    counts = Counter()
    for i, it in enumerate(items):
        counts[f"{it['status']}_items"] += 1
        if it["status"] not in pools:
            continue
        split = split_probe(it["text"], config)
        if split is None:
            counts[f"{it['status']}_too_short"] += 1
            continue
        splits[i] = split
        pools[it["status"]].append(i)

    def covariates(idx: list[int]) -> np.ndarray:
        cols = {"length": [items[i]["n_words"] for i in idx], "rarity": [rarity[i] for i in idx]}
        return np.asarray([cols[c] for c in config.match_on], dtype=float).T.reshape(len(idx), len(config.match_on))

    seen, unseen = pools["seen"], pools["unseen"]
    pairs = match_pairs(covariates(seen), covariates(unseen), config.caliper)
    counts["seen_unmatched"] = len(seen) - len(pairs)
    counts["n_seen"] = counts["n_unseen"] = len(pairs)

    probes = []
    for probe_set, pick in (("seen", lambda p: seen[p[0]]), ("unseen", lambda p: unseen[p[1]])):
        for pair in pairs:
            i = pick(pair)
            partner = unseen[pair[1]] if probe_set == "seen" else seen[pair[0]]
            it = items[i]
            prefix, suffix = splits[i]
            probes.append({
                "id": it["id"], "probe_set": probe_set, "pair": items[partner]["id"],
                "text": it["text"], "prefix": prefix, "suffix": suffix, "n_words": it["n_words"],
                "rarity": round(rarity[i], 6), "coverage8": it.get("coverage8", 0.0),
                "occurrences": it.get("occurrences", 0), "longest_match": it.get("longest_match", 0),
            })

    s_idx = [seen[a] for a, _ in pairs]
    u_idx = [unseen[b] for _, b in pairs]
    balance = {
        "length_smd": standardized_mean_difference([items[i]["n_words"] for i in s_idx], [items[i]["n_words"] for i in u_idx]),
        "rarity_smd": standardized_mean_difference([rarity[i] for i in s_idx], [rarity[i] for i in u_idx]),
        "coverage8_smd": standardized_mean_difference([items[i].get("coverage8", 0.0) for i in s_idx],
                                                      [items[i].get("coverage8", 0.0) for i in u_idx]),
    }
    problems = []
    if len(pairs) < config.min_seen:
        problems.append(f"only {len(pairs)} matched seen/unseen pairs (need at least {config.min_seen}): "
                        f"{len(seen)} seen and {len(unseen)} unseen items are long enough "
                        f"({counts['seen_too_short']} seen and {counts['unseen_too_short']} unseen are too short for "
                        f"a {config.suffix_words}-word suffix after {config.min_prefix_words} prefix words)")
    for cov in config.match_on:
        smd = balance[f"{cov}_smd"]
        if not math.isnan(smd) and abs(smd) > balance_threshold:
            problems.append(f"probe sets out of balance on {cov}: |SMD| = {abs(smd):.3f} > {balance_threshold}")
    return ProbeSet(probes, balance, dict(counts), problems)


def probes_manifest_path(out: str | Path) -> Path:
    """``probes.jsonl`` -> ``probes.manifest.json``."""
    return manifest_beside(out)


def build_probes(index_path: str | Path, out: str | Path, config: ProbeConfig = ProbeConfig(), *,
                 balance_threshold: float = default_of(AnalysisSettings, "balance_threshold")) -> ProbeSet:
    """Build probes from the index at ``index_path`` and write ``out`` (+ manifest).

    The probes file is written even when the design has problems (they are listed in
    ``ProbeSet.problems`` and in the manifest), so analysis can report them.
    """
    for target in (Path(out), probes_manifest_path(out)):
        if target.is_dir():
            raise InputError("is a directory; --out must be a .jsonl file path, e.g. NAME/probes.jsonl", path=target)
    check_can_create(out)
    index = load_index(index_path)
    probe_set = make_probes(index, config, balance_threshold=balance_threshold)
    write_jsonl_atomic(out, probe_set.probes)
    manifest = make_manifest(
        "probes", inputs=[describe_path(Path(index_path) / INDEX_MANIFEST)],
        parameters={**asdict(config), "match_on": list(config.match_on), "balance_threshold": balance_threshold},
        index=str(index_path), balance=probe_set.balance, counts=probe_set.counts,
        n_seen=probe_set.counts["n_seen"], n_unseen=probe_set.counts["n_unseen"], problems=probe_set.problems)
    write_json_atomic(probes_manifest_path(out), manifest)
    return probe_set
