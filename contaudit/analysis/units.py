"""The unit the perplexity and memorization scores are compared in: per token, or per byte.

Nats per token depend on the tokenizer: a model whose tokens are longer has a higher loss
per token for the same text, and the test and shadow sets can tokenize differently (old
and new text). Nats per UTF-8 byte of the scored text do not: every model reads the same
bytes. So when the compared models' tokenizers differ (by the tokenizer files their score
manifests fingerprint), the analysis works in nats per byte (score files' ``nll_per_byte``;
for the memorization test's ``suffix_logprob``, the suffix's summed log-prob over its
bytes); when they share one tokenizer, in nats per token, as before (today's results
reproduce). ``[analysis] unit`` can force either.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from contaudit.errors import InputError
from contaudit.metrics import METRICS
from contaudit.model_files import VOCABULARY_FILES

UNITS = ("auto", "token", "byte")


@dataclass(frozen=True)
class Units:
    """The chosen unit, the score-file column it reads, and why (for the report).

    ``tokens_per_byte`` (the suspect's scored tokens over its scored bytes) converts the
    protocol's minimum effects, stated per token, into the comparison's unit.
    """

    per_byte: bool
    reason: str
    n_tokenizers: int | None  # distinct tokenizers among the models (None: unknown)
    tokens_per_byte: float | None = None
    suffix_tokens_per_byte: float | None = None

    @property
    def perplexity_metric(self) -> str:
        return "nll_per_byte" if self.per_byte else "nll_mean"

    @property
    def perplexity_unit(self) -> str:
        return "nats/byte" if self.per_byte else "nats/token"

    def metric_unit(self, metric: str) -> str:
        """A completion metric's unit in this comparison (a per-token mean becomes nats per byte)."""
        return "nats/byte" if self.per_byte and METRICS[metric].per_token else METRICS[metric].unit

    def min_effects(self, settings):
        """``settings`` with the minimum effects (stated per token) in this comparison's unit."""
        if not self.per_byte:
            return settings
        from dataclasses import replace

        changes = {}
        if self.tokens_per_byte:
            changes["min_effect_perplexity"] = settings.min_effect_perplexity * self.tokens_per_byte
        if METRICS[settings.primary_metric].per_token and self.suffix_tokens_per_byte:
            changes["min_effect_memorization"] = settings.min_effect_memorization * self.suffix_tokens_per_byte
        return replace(settings, **changes)

    def to_dict(self) -> dict:
        return {"perplexity": self.perplexity_unit,
                **{m: self.metric_unit(m) for m, spec in METRICS.items() if spec.per_token},
                "n_tokenizers": self.n_tokenizers, "reason": self.reason, "tokens_per_byte": self.tokens_per_byte,
                "suffix_tokens_per_byte": self.suffix_tokens_per_byte}


# Tokenizers are compared by their vocabulary files (not tokenizer_config.json: a fine-tune that
# adds a chat template does not change the tokenization).

def tokenizer_key(manifest: dict | None) -> str | None:
    """An id of the tokenizer a score file was made with: the hashes of its vocabulary files in the
    model fingerprint of the file's manifest; None when unknown (no manifest, or a GGUF file,
    whose tokenizer is inside the weights)."""
    if not isinstance(manifest, dict):
        return None
    model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    wanted = sorted((f.get("name"), f.get("sha256")) for f in model.get("tokenizer_files") or []
                    if isinstance(f, dict) and f.get("name") in VOCABULARY_FILES)
    if not wanted:
        return None
    return hashlib.sha256(json.dumps(wanted).encode()).hexdigest()[:16]


def choose_units(manifests: list[dict | None], unit: str = "auto", *, per_byte_available: bool = False) -> Units:
    """Per byte when the models' tokenizers differ (``unit='auto'``) or when asked (``'byte'``).

    When some tokenizer is unknown (no manifest, a GGUF file), per byte if every score
    file has ``nll_per_byte`` (it is valid whatever the tokenizers), else per token.

    >>> choose_units([None, None]).per_byte
    False
    """
    if unit not in UNITS:
        raise InputError(f"`unit` must be one of {', '.join(UNITS)}; got {unit!r}.")
    keys = [tokenizer_key(m) for m in manifests]
    known = {k for k in keys if k is not None}
    n = len(known) if len(known) == len(set(keys)) or None not in keys else None
    if unit == "byte":
        return Units(True, "nats per byte, as the protocol asks ([analysis] unit = 'byte').", n)
    if unit == "token":
        why = "nats per token, as the protocol asks ([analysis] unit = 'token')"
        if len(known) > 1:
            why += f", although the models use {len(known)} different tokenizers: per-token scores are not comparable"
        return Units(False, why + ".", n)
    if len(known) > 1:
        return Units(True, f"nats per UTF-8 byte of the scored text: the models use {len(known)} different "
                           f"tokenizers, and per-token NLL is not comparable between tokenizers.", len(known))
    if None in keys and per_byte_available:
        return Units(True, "nats per UTF-8 byte of the scored text: some score files do not say which tokenizer "
                           "made them (no manifest, or a GGUF model), and per byte is comparable whatever they are.",
                     None)
    if None in keys:
        return Units(False, "nats per token: some score files do not say which tokenizer made them (no manifest, or "
                            "a GGUF model) and the files have no per-byte scores, so the models are taken to share "
                            "one.", None)
    return Units(False, "nats per token: every model uses the same tokenizer.", 1)


def tokens_per_byte(files) -> float | None:
    """Scored tokens over scored bytes in ``files`` (rows with both ``n_tokens`` and ``n_bytes``)."""
    tokens = sum(r["n_tokens"] for f in files for r in f.rows.values() if "n_tokens" in r and "n_bytes" in r)
    n_bytes = sum(r["n_bytes"] for f in files for r in f.rows.values() if "n_tokens" in r and "n_bytes" in r)
    return float(tokens / n_bytes) if n_bytes else None


def require_per_byte(files) -> None:
    """Every score file must carry ``nll_per_byte`` on every row (score files written before it do not)."""
    for f in files:
        if f.rows and any("nll_per_byte" not in row for row in f.rows.values()):
            raise InputError("has no 'nll_per_byte' (scored before per-byte units existed); the models' tokenizers "
                             "differ, so the comparison needs it: rescore the file with this version, or set "
                             "[analysis] unit = 'token' to compare per token anyway", path=f.path)


def suffix_mean_per_byte(matrix, probe_files, suffix_bytes: dict[str, int]) -> np.ndarray:
    """A mean over suffix tokens (``suffix_logprob``) as nats per byte of the suffix, for every model and probe.

    Needs each probe score row's ``suffix_tokens`` and each probe's suffix text bytes.
    """
    values = np.empty_like(matrix.values)
    for m, f in enumerate(probe_files):
        for j, item in enumerate(matrix.ids):
            row = f.rows[item]
            if "suffix_tokens" not in row or item not in suffix_bytes or not suffix_bytes[item]:
                raise InputError(f"probe {item!r}: per-byte suffix log-probs need the score row's 'suffix_tokens' "
                                 f"and the probe's 'suffix' text in probes.jsonl: rescore the probes with this version "
                                 f"and `contaudit probes`' own probes.jsonl, or set [analysis] unit = 'token'",
                                 path=f.path)
            values[m, j] = matrix.values[m, j] * row["suffix_tokens"] / suffix_bytes[item]
    return values
