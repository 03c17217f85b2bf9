"""Synthetic audits with a planted effect, for testing the statistics and the reports.

The generative model mirrors what the DiD is built to cancel:

* every item has a difficulty ``b_i ~ N(2.0, 0.5)`` nats/token that both models share
  (the shadow set may be shifted by ``shadow_shift`` for both);
* the suspect is a stronger model: ``y_sus = b - 0.15 + noise``, ``y_clean = b + noise``;
* a fraction ``contaminated_fraction`` of test items occur in the suspect's corpus
  (1 + geometric occurrences); their NLL drops by ``ppl_effect`` on average, more
  for items that occur more often (a dose-response);
* probes: both models complete 5 % (clean) / 8 % (suspect) of suffixes exactly; the
  suspect completes ``mem_effect`` more of the seen ones. A suffix's mean log-prob is
  ``N(-2.0, 0.3)`` nats/token (suspect ``+0.15``), raised by ``mem_effect`` nats/token
  on the seen probes of the suspect. Unseen probe lengths can be
  shifted by ``imbalance`` standard deviations.

With ``ppl_effect = mem_effect = 0`` every null hypothesis holds, which is what the
false-positive tests need. :func:`write_audit` writes the arrays in the real file
formats (score files, probes.jsonl with its manifest, an index directory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import math

import numpy as np

from contaudit.metrics import METRICS
from contaudit.statistics import standardized_mean_difference
from contaudit.manifest import INDEX_MANIFEST, make_manifest, manifest_beside, write_json_atomic, write_jsonl_atomic


@dataclass
class SimulatedSet:
    ids: list[str]
    y_sus: np.ndarray
    y_clean: np.ndarray
    minkpp_sus: np.ndarray
    minkpp_clean: np.ndarray
    occurrences: np.ndarray


@dataclass
class SimulatedProbes:
    ids: list[str]
    probe_set: np.ndarray  # "seen" / "unseen"
    n_words: np.ndarray
    exact_sus: np.ndarray
    exact_clean: np.ndarray
    frac_sus: np.ndarray
    frac_clean: np.ndarray
    logprob_sus: np.ndarray
    logprob_clean: np.ndarray

    def split(self, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(sus_seen, clean_seen, sus_unseen, clean_unseen)`` for ``metric``."""
        key = METRICS[metric].item_key
        sus, clean = getattr(self, f"{key}_sus"), getattr(self, f"{key}_clean")
        seen = self.probe_set == "seen"
        return sus[seen], clean[seen], sus[~seen], clean[~seen]


@dataclass
class SimulatedAudit:
    test: SimulatedSet
    shadow: SimulatedSet
    probes: SimulatedProbes


def _set(prefix: str, n: int, rng, *, shift: float, effect: float, contaminated_fraction: float,
         noise: float) -> SimulatedSet:
    b = rng.normal(2.0 + shift, 0.5, n)
    y_clean = b + rng.normal(0, noise, n)
    y_sus = b - 0.15 + rng.normal(0, noise, n)
    occ = np.zeros(n, dtype=int)
    hit = rng.random(n) < contaminated_fraction if effect else np.zeros(n, dtype=bool)
    occ[hit] = rng.geometric(0.3, hit.sum())
    if hit.any():
        weight = np.log1p(occ[hit]) / np.log1p(occ[hit]).mean()
        y_sus[hit] -= effect * weight
    minkpp_clean = 1.0 - 0.8 * y_clean + rng.normal(0, 0.2, n)
    minkpp_sus = 1.0 - 0.8 * y_sus + rng.normal(0, 0.2, n)
    return SimulatedSet([f"{prefix}-{i}" for i in range(n)], y_sus, y_clean, minkpp_sus, minkpp_clean, occ)


def _completion(rng, n: int, rate: float, boost: float, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    exact = (rng.random(n) < min(1.0, rate)).astype(float)
    partial = rng.beta(2 + 10 * boost, 6, n)
    logprob = rng.normal(-2.0 + level + boost, 0.3, n)
    return exact, np.where(exact == 1, 1.0, partial), logprob


def simulate_audit(*, n_test: int = 100, n_shadow: int = 100, n_seen: int = 60, n_unseen: int = 60,
                   ppl_effect: float = 0.0, mem_effect: float = 0.0, contaminated_fraction: float = 1.0,
                   shadow_shift: float = 0.0, imbalance: float = 0.0, noise: float = 0.1,
                   rng=None) -> SimulatedAudit:
    """Draw one synthetic audit (see the module docstring for the model).

    Parameters
    ----------
    ppl_effect : float
        Mean NLL drop (nats/token) of contaminated test items under the suspect.
    mem_effect : float
        Extra exact-match rate of the suspect on seen probes, and the rise (nats/token) of
        its mean suffix log-prob there.
    shadow_shift : float
        Difficulty shift of the shadow set for both models (breaks comparability).
    imbalance : float
        Shift of unseen probe lengths in standard deviations (breaks balance).
    rng : int, numpy.random.Generator or None
    """
    rng = np.random.default_rng(rng)
    test = _set("test", n_test, rng, shift=0.0, effect=ppl_effect, contaminated_fraction=contaminated_fraction,
                noise=noise)
    shadow = _set("shadow", n_shadow, rng, shift=shadow_shift, effect=0.0, contaminated_fraction=0.0, noise=noise)
    seen_clean = _completion(rng, n_seen, 0.05, 0.0, 0.0)
    seen_sus = _completion(rng, n_seen, 0.08 + mem_effect, mem_effect, 0.15)
    unseen_clean = _completion(rng, n_unseen, 0.05, 0.0, 0.0)
    unseen_sus = _completion(rng, n_unseen, 0.08, 0.0, 0.15)
    # Unseen probes are matched to seen ones on length (a near copy of a seen length), then shifted.
    seen_words = rng.normal(120, 30, n_seen)
    unseen_words = rng.choice(seen_words, n_unseen, replace=n_unseen > n_seen) + rng.normal(0, 2, n_unseen)
    n_words = np.concatenate([seen_words, unseen_words + 30 * imbalance])
    probes = SimulatedProbes(
        ids=[f"probe-{i}" for i in range(n_seen + n_unseen)],
        probe_set=np.array(["seen"] * n_seen + ["unseen"] * n_unseen),
        n_words=np.maximum(40, np.round(n_words)).astype(int),
        exact_sus=np.concatenate([seen_sus[0], unseen_sus[0]]),
        exact_clean=np.concatenate([seen_clean[0], unseen_clean[0]]),
        frac_sus=np.concatenate([seen_sus[1], unseen_sus[1]]),
        frac_clean=np.concatenate([seen_clean[1], unseen_clean[1]]),
        logprob_sus=np.concatenate([seen_sus[2], unseen_sus[2]]),
        logprob_clean=np.concatenate([seen_clean[2], unseen_clean[2]]),
    )
    return SimulatedAudit(test, shadow, probes)


def _score_row(item_id: str, y: float, minkpp: float) -> dict:
    return {"id": item_id, "n_tokens": 64, "nll_mean": float(y), "ppl": float(np.exp(y)),
            "mink_10": float(-y - 1.5), "mink_20": float(-y - 1.0), "minkpp_10": float(minkpp - 0.3),
            "minkpp_20": float(minkpp), "zlib_ratio": float(y * 0.1)}


def _write_scores(path: Path, rows: list[dict], model: str) -> Path:
    write_jsonl_atomic(path, rows)
    write_json_atomic(manifest_beside(path),
                      make_manifest("score", inputs=[], parameters={"model": model, "simulated": True}))
    return path


def write_audit(audit: SimulatedAudit, directory: str | Path, *, index: bool = True) -> dict[str, Path]:
    """Write ``audit`` as the files ``contaudit analyze`` reads; return their paths by option name.

    Keys: ``suspect_test``, ``clean_test``, ``suspect_shadow``, ``clean_shadow``,
    ``suspect_probes``, ``clean_probes``, ``probes`` and (with ``index``) ``index``.
    """
    d = Path(directory)
    paths: dict[str, Path] = {}
    for model, role in (("suspect", "sus"), ("clean", "clean")):
        for name in ("test", "shadow"):
            s: SimulatedSet = getattr(audit, name)
            rows = [_score_row(i, y, m) for i, y, m in zip(s.ids, getattr(s, f"y_{role}"), getattr(s, f"minkpp_{role}"))]
            paths[f"{model}_{name}"] = _write_scores(d / "scores" / model / f"{name}.jsonl", rows, model)
        p = audit.probes
        exact, frac, logprob = getattr(p, f"exact_{role}"), getattr(p, f"frac_{role}"), getattr(p, f"logprob_{role}")
        rows = []
        for k, item_id in enumerate(p.ids):
            row = _score_row(item_id, 1.8, 0.0)
            row.update({"suffix_tokens": 32, "exact_match": int(exact[k]), "token_match_frac": float(frac[k]),
                        "lcp_tokens": int(round(32 * frac[k])), "edit_similarity": float(frac[k]),
                        "suffix_logprob": float(logprob[k])})
            rows.append(row)
        paths[f"{model}_probes"] = _write_scores(d / "scores" / model / "probes.jsonl", rows, model)

    p = audit.probes
    seen = p.probe_set == "seen"
    probe_rows = [{"id": i, "probe_set": str(s), "text": f"probe text {i}", "prefix": "prefix", "suffix": "suffix",
                   "n_words": int(n), "rarity": 5.0, "coverage8": 1.0 if s == "seen" else 0.0,
                   "occurrences": 1 if s == "seen" else 0}
                  for i, s, n in zip(p.ids, p.probe_set, p.n_words)]
    paths["probes"] = d / "probes.jsonl"
    write_jsonl_atomic(paths["probes"], probe_rows)
    balance = {"length_smd": standardized_mean_difference(p.n_words[seen].astype(float), p.n_words[~seen].astype(float)),
               "rarity_smd": 0.0, "coverage8_smd": 5.0}
    write_json_atomic(manifest_beside(paths["probes"]),
                      make_manifest("probes", inputs=[], parameters={"simulated": True, "match_on": ["length", "rarity"]},
                                    balance=balance,
                                    n_seen=int(seen.sum()), n_unseen=int((~seen).sum())))
    if index:
        paths["index"] = _write_index(audit, d / "indexes" / "simulated")
    return paths


def _write_index(audit: SimulatedAudit, directory: Path) -> Path:
    """An index directory in the format of contaudit.index (items.jsonl + manifest.json)."""
    from contaudit.index.store import INDEX_FORMAT
    from contaudit.text import NORMALIZATION

    rows = []
    for s in (audit.test, audit.shadow):
        for item_id, occ in zip(s.ids, s.occurrences):
            occ = int(occ)
            rows.append({"id": item_id, "n_words": 80, "n_ngrams": 68, "matched_ngrams": 68 if occ else 0,
                         "coverage": 1.0 if occ else 0.0, "longest_match": 80 if occ else 0, "occurrences": occ,
                         "total_hits": 68 * occ, "matched_8grams": 73 if occ else 0, "coverage8": 1.0 if occ else 0.0,
                         "neardup_jaccard": 1.0 if occ else 0.0, "neardup_copies": occ,
                         "neardup_location": ["corpus/shard-00.jsonl", 17, 0] if occ else None,
                         "locations": [[f"corpus/shard-{k:02d}.jsonl", 100 + k, 2048 * k] for k in range(min(occ, 3))],
                         "status": "seen" if occ else "unseen", "text": f"text of {item_id}"})
    write_jsonl_atomic(directory / "items.jsonl", rows)
    write_json_atomic(directory / INDEX_MANIFEST,
                      make_manifest("index", inputs=[], parameters={"normalization": NORMALIZATION, "simulated": True},
                                    format=INDEX_FORMAT, counts={"items": len(rows)}))
    return directory


# --- model-level variance: a panel of clean models under a real shift ---------------------

@dataclass
class SimulatedPanel:
    """Per-item mean NLL of several models on one test and one shadow set; row 0 is the suspect."""

    scores: np.ndarray  # (models, n_test + n_shadow)
    is_test: np.ndarray  # (n_test + n_shadow,) bool


def simulate_model_panel(*, n_models: int = 6, n_test: int = 100, n_shadow: int = 100, shift: float = 0.5,
                         slope_sd: float = 0.02, hidden_sd: float = 0.05, item_noise: float = 0.05,
                         heavy_tails: bool = False, outlier_share: float = 0.0, outlier_scale: float = 5.0,
                         effect: float = 0.0, suspect_slope: float = 0.0, rng=None) -> SimulatedPanel:
    """Clean models that differ by a seed effect interacting with a test/shadow shift.

    Each item has a difficulty ``x`` (seen by every model, so adjustable) and a hidden
    feature ``z`` (not observable; think of vocabulary that appeared after the cutoff);
    the shadow set is shifted by ``shift`` SDs on both. Model m scores item i as::

        y_m(i) = 2 + 0.5 x_i + u_m + a_m x_i + c_m z_i + e_mi

    with a model strength ``u_m``, seed-by-item slopes ``a_m ~ slope_sd`` and
    ``c_m ~ hidden_sd`` (Student t with 3 df, scaled to the same SD, with
    ``heavy_tails``; a share ``outlier_share`` of models, drawn at random, get
    ``outlier_scale`` times the hidden effect, like a control trained on different data),
    and item noise ``e_mi ~ N(0, item_noise)``. ``c_m`` times the shift
    moves a model's test-minus-shadow gap in a way no item covariate explains: the
    model-to-model variance the item permutation test ignores. The suspect (model 0)
    has its test items' NLL lowered by ``effect``, and ``suspect_slope`` added to its
    difficulty slope ``a_0`` (a suspect trained another way: not exchangeable with the
    references, but in a way the difficulty covariate can explain).
    """
    rng = np.random.default_rng(rng)
    is_test = np.r_[np.ones(n_test, bool), np.zeros(n_shadow, bool)]
    offset = np.where(is_test, 0.0, shift)
    x = rng.normal(0, 1, is_test.size) + offset
    z = rng.normal(0, 1, is_test.size) + offset

    def seed_effects(sd: float) -> np.ndarray:
        if heavy_tails:
            return sd * rng.standard_t(3, n_models) / np.sqrt(3.0)  # t3 has variance 3
        return rng.normal(0, sd, n_models)

    u, a, c = rng.normal(0, 0.1, n_models), seed_effects(slope_sd), seed_effects(hidden_sd)
    c = np.where(rng.random(n_models) < outlier_share, outlier_scale * c, c)
    a[0] += suspect_slope
    scores = (2 + 0.5 * x[None, :] + u[:, None] + a[:, None] * x[None, :] + c[:, None] * z[None, :]
              + rng.normal(0, item_noise, (n_models, is_test.size)))
    scores[0, is_test] -= effect
    return SimulatedPanel(scores, is_test)


def panel_error_rates(*, n_audits: int = 1000, effects=(0.0,), n_references: int = 5, alpha: float = 0.05,
                      n_permutations: int = 999, rng=0, **panel_kw) -> dict:
    """Rejection rates of the item permutation test (suspect vs one clean model) and of the
    reference-panel tests (t and rank), per planted effect, over ``n_audits`` independent audits.

    Every audit draws fresh models (fresh seed effects), so the rates are over independent
    nulls, not repeats against one reference. Returns ``{effect: {test: rate}}``.
    """
    from contaudit.analysis.did import perplexity_did
    from contaudit.analysis.panel import panel_did

    rng = np.random.default_rng(rng)
    out = {}
    for effect in effects:
        hits = {"item_permutation": 0, "panel_robust": 0, "panel_t": 0, "panel_t_unadjusted": 0, "panel_rank": 0}
        for _ in range(n_audits):
            sim = simulate_model_panel(n_models=n_references + 1, effect=effect, rng=rng, **panel_kw)
            s, g = sim.scores, sim.is_test
            old = perplexity_did(s[0, g], s[1, g], s[0, ~g], s[1, ~g], n_resamples=n_permutations, n_bootstrap=0,
                                 rng=rng)
            adjusted = panel_did(s[0], s[1:], g, covariates={"difficulty": s.mean(axis=0)})
            plain = panel_did(s[0], s[1:], g)
            hits["item_permutation"] += old.pvalue <= alpha
            hits["panel_robust"] += adjusted.pvalue <= alpha
            hits["panel_t"] += adjusted.pvalue_t <= alpha
            hits["panel_t_unadjusted"] += plain.pvalue_t <= alpha
            hits["panel_rank"] += adjusted.pvalue_rank <= alpha
        out[effect] = {k: v / n_audits for k, v in hits.items()}
    return out


@dataclass
class PanelPvalues:
    """Per independent null audit, the p-values of both primary tests by panel method.

    ``pvalues[method]`` has shape ``(n_audits, 2)``: perplexity and memorization, each from
    its own simulated panel (fresh models every audit). Methods: ``'t'`` (the normal-theory
    prediction test used before issue 22), ``'robust'`` and ``'rank'``.
    """

    pvalues: dict[str, np.ndarray]

    def label_rates(self, alpha: float) -> dict[str, dict[str, float]]:
        """Per method, the share of audits labelled SUSPECT-or-worse and CONTAMINATED at ``alpha``
        (Holm over the two tests; minimum effects 0, so these are upper bounds)."""
        out = {}
        for method, p in self.pvalues.items():
            low, high = p.min(axis=1), p.max(axis=1)
            first = low <= alpha / 2
            out[method] = {"SUSPECT_or_worse": float(np.mean(first)),
                           "CONTAMINATED": float(np.mean(first & (high <= alpha)))}
        return out

    def gate_pvalues(self, method: str, fail_on: str) -> np.ndarray:
        """Each audit's gate p-value (:func:`contaudit.suite.gate_pvalue`)."""
        p = self.pvalues[method]
        low, high = p.min(axis=1), p.max(axis=1)
        first = np.minimum(1.0, 2 * low)
        return first if fail_on == "SUSPECT" else np.maximum(first, high)

    def suite_fail_rate(self, method: str, *, k: int, alpha: float, fail_on: str) -> float:
        """Share of suites of ``k`` consecutive audits (clean benchmarks) that fail the Holm suite gate."""
        from contaudit.statistics import holm

        gp = self.gate_pvalues(method, fail_on)
        suites = gp[: gp.size // k * k].reshape(-1, k)
        return float(np.mean([np.any(holm(row) <= alpha) for row in suites]))


def panel_null_pvalues(*, n_audits: int = 1000, n_references: int = 5, rng=0, n_probes: int = 40,
                       **panel_kw) -> PanelPvalues:
    """Independent clean audits with a reference panel: both primary tests' p-values per method.

    Each audit draws a perplexity panel (``simulate_model_panel``, the default 100 + 100
    items) and an independent memorization panel (``n_probes`` seen + unseen probes), the
    suspect clean in both, and runs :func:`contaudit.analysis.panel.panel_did` adjusted for
    difficulty as the analysis does.
    """
    from contaudit.analysis.panel import panel_did

    rng = np.random.default_rng(rng)
    out = {m: np.empty((n_audits, 2)) for m in ("t", "robust", "rank")}
    for a in range(n_audits):
        for j, size in enumerate(({}, {"n_test": n_probes, "n_shadow": n_probes})):
            sim = simulate_model_panel(n_models=n_references + 1, rng=rng, **size, **panel_kw)
            res = panel_did(sim.scores[0], sim.scores[1:], sim.is_test,
                            covariates={"difficulty": sim.scores.mean(axis=0)})
            out["t"][a, j], out["robust"][a, j], out["rank"][a, j] = res.pvalue_t, res.pvalue, res.pvalue_rank
    return PanelPvalues(out)


# --- references of other families: the suspect is not exchangeable with them ------------------

def simulate_family_panel(*, n_references: int = 5, slope: float = 1.3, strength_sd: float = 0.3,
                          scatter_sd: float = 0.02, heavy_tails: bool = False, along: float = 0.0,
                          off: float = 0.0, effect: float = 0.0, n_items: int = 40, item_sd: float = 0.5,
                          rng=None) -> SimulatedPanel:
    """Models of different families on a test and a shadow set; row 0 is the suspect.

    Each family has its own strength: model m's mean score on the shadow set is
    ``x_m ~ N(3, strength_sd)`` (nats per byte), and on the test set
    ``y_m = 0.2 + slope * x_m + e_m`` with a scatter ``e_m`` of SD ``scatter_sd`` (Student t
    with 3 df, scaled, with ``heavy_tails``): stronger models gain more or less on old
    text than weaker ones, so test-minus-shadow effects differ with strength and the
    references are not exchangeable with a suspect of another strength. The suspect sits
    at the references' mean strength moved ``along`` SDs of the references' effects
    along the relation, in the direction that makes its test-minus-shadow effect look like
    contamination (a stronger or weaker model, on the relation), ``off`` scatter SDs
    off the relation in the contamination direction (a recipe that changes how the model
    sees the shift: no test can tell that from contamination, which is why the
    sensitivity is reported), and its test items lowered by ``effect``. Its strength is
    drawn like the references' before it is moved, so at ``along = off = 0`` it is one
    more draw of the same population (exchangeable with them). Items: each
    model's scores are its mean plus item difficulties shared by all models (SD
    ``item_sd``), so the item-level structure cancels in every test.
    """
    rng = np.random.default_rng(rng)
    r = n_references

    def scatter(size) -> np.ndarray:
        if heavy_tails:
            return scatter_sd * rng.standard_t(3, size) / np.sqrt(3.0)
        return rng.normal(0, scatter_sd, size)

    x = rng.normal(3.0, strength_sd, r + 1)
    effect_sd = math.sqrt((slope - 1) ** 2 * strength_sd**2 + scatter_sd**2)
    if slope != 1:
        x[0] -= along * effect_sd / (slope - 1)
    y = 0.2 + slope * x + scatter(r + 1)
    y[0] -= off * scatter_sd + effect
    is_test = np.r_[np.ones(n_items, bool), np.zeros(n_items, bool)]
    difficulty = rng.normal(0, item_sd, is_test.size)
    difficulty[is_test] -= difficulty[is_test].mean()
    difficulty[~is_test] -= difficulty[~is_test].mean()
    scores = np.where(is_test[None, :], y[:, None], x[:, None]) + difficulty[None, :]
    return SimulatedPanel(scores, is_test)


def family_error_rates(*, n_audits: int = 2000, n_references: int = 5, levels=(0.05, 0.025, 0.005), rng=0,
                       n_heavy_draws: int = 2**14, **panel_kw) -> dict:
    """Rejection rates at each level of the sibling panel test (robust) and the cross-family test
    (robust and conformal), over independent simulated audits (fresh models every audit)."""
    from contaudit.analysis.families import family_did
    from contaudit.analysis.panel import panel_did

    rng = np.random.default_rng(rng)
    p = {"siblings": np.empty(n_audits), "families": np.empty(n_audits), "families_conformal": np.empty(n_audits)}
    for a in range(n_audits):
        sim = simulate_family_panel(n_references=n_references, rng=rng, **panel_kw)
        s, g = sim.scores, sim.is_test
        p["siblings"][a] = panel_did(s[0], s[1:], g).pvalue
        fam = family_did(s[0], s[1:], g, n_heavy_draws=n_heavy_draws)
        p["families"][a], p["families_conformal"][a] = fam.pvalue, fam.pvalue_conformal
    return {name: {level: float(np.mean(v <= level)) for level in levels} for name, v in p.items()}
