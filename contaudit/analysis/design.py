"""The design of one audit: how many clean models, how the shadow set was made, what that
allows (:class:`Design`), and the check that the test and shadow sets can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import contaudit.analysis.verdict as _verdict
from contaudit.analysis.inputs import ScoreMatrix, log_lengths, stack_sets
from contaudit.analysis.verdict import SUSPECT, DesignCheck
from contaudit.protocol import AnalysisSettings


NO_CLEAN_REASON = (
    "There is no clean model, so the perplexity and memorization DiDs cannot run and nothing separates what "
    "the suspect learned from the benchmark from how hard its items are. The verdict rests on Oren et al.'s "
    "order test, whose p-value needs only the suspect (valid when the published item order is exchangeable "
    "with random orders): it detects a "
    "benchmark that leaked as a file in its published order, and is blind to items leaked one by one, "
    "shuffled, paraphrased or in another format (the calibration in the README finds it at chance for "
    "per-item leaks). It says nothing of how much the suspect gained. So the verdict is at most SUSPECT; add "
    "[models.clean] (and [[models.reference]] models) for the DiD tests and a CONTAMINATED verdict.")


@dataclass(frozen=True)
class Design:
    """What the data allow: a reference panel (2+ clean models) and/or exchangeable sets; or,
    with no clean model at all, only the suspect's own evidence (the order test decides)."""

    shadow_origin: str
    n_clean: int  # the clean control plus the reference models; 0: no clean model
    refuted: str | None = None  # why sets declared a random split are not treated as exchangeable
    split_verified: bool = False  # a random split contaudit made, re-derived from its file at analysis

    @property
    def panel(self) -> bool:
        return self.n_clean >= 2

    @property
    def order_only(self) -> bool:
        """No clean model: the verdict rests on Oren et al.'s order test (at most SUSPECT)."""
        return self.n_clean == 0

    @property
    def exchangeable(self) -> bool:
        return self.shadow_origin == "random_split" and self.refuted is None

    @property
    def cap_reason(self) -> str | None:
        """Why the verdict can be at most SUSPECT, or None."""
        return NO_CLEAN_REASON if self.order_only else None

    @property
    def inconclusive_reason(self) -> str | None:
        """Why this design cannot hold its false-positive rate (the verdict is INCONCLUSIVE), or None."""
        if self.order_only or self.panel or self.exchangeable:
            return None
        what = (f"the test and shadow sets are declared a random split, but {self.refuted}" if self.refuted else
                f"the shadow set is a {self.shadow_origin.replace('_', ' ')}, not a random split")
        return (f"INCONCLUSIVE: {what}, and there is only one clean model. The item-level tests cannot tell contamination from the way two "
                f"clean models differ on shifted sets (on a real date split of Debian changelogs, 21.5 % of "
                f"clean-vs-clean pairs reach p < 0.05; README), so no label here would carry its stated error "
                f"rate. To decide: add [[models.reference]] clean models (a reference panel; docs/analysis.md says "
                f"how many), or make the shadow set a random split of the benchmark.")

    def to_dict(self) -> dict:
        return {"shadow_origin": self.shadow_origin, "n_clean_models": self.n_clean,
                "test": "order test" if self.order_only else "reference panel" if self.panel else "item permutation",
                "exchangeable_sets": self.exchangeable, "verdict_cap": SUSPECT if self.cap_reason else None,
                "random_split_verified": self.split_verified, "exchangeability_refuted": self.refuted,
                "inconclusive": self.inconclusive_reason}


def covariates(matrix: ScoreMatrix, wanted: tuple[str, ...], features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Candidate adjustment covariates: ``difficulty`` is the mean over every model (so no model is singled out)."""
    out = {}
    for name in wanted:
        if name == "difficulty":
            out[name] = matrix.values.mean(axis=0)
        elif name in features and features[name] is not None:
            out[name] = features[name]
    return out


def shift_check(test: ScoreMatrix, shadow: ScoreMatrix, design: Design, settings: AnalysisSettings,
                 lengths: dict[str, float] | None, unit: str = "nats/token") -> DesignCheck:
    """With exchangeable sets and one clean model: today's comparability check. Otherwise the shift is
    expected; it is reported, and the check asks only that the adjustment's covariates overlap."""
    if design.exchangeable and not design.panel:
        return _verdict.check_shadow_comparability(test.clean, shadow.clean, rule=settings.shadow_rule,
                                                   margin=settings.shadow_margin, alpha=settings.shadow_alpha,
                                                   unit=unit)
    if min(len(test.ids), len(shadow.ids)) < 2:
        return DesignCheck("shadow_shift", None, "shadow shift not computed (fewer than 2 items)")
    both = stack_sets(test, shadow)
    group = np.r_[np.ones(len(test.ids), bool), np.zeros(len(shadow.ids), bool)]
    covs = covariates(both, settings.adjust_for, {"length": log_lengths(both.ids, lengths)})
    return _verdict.check_shift_overlap("shadow_shift", "the test and shadow sets", group, covs,
                                        clean_test=test.clean, clean_shadow=shadow.clean,
                                        min_overlap=settings.min_overlap, panel=design.panel, unit=unit,
                                        adjusted=settings.references == "siblings")
