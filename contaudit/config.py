"""The typed settings of every stage: defaults, allowed values and help, written once.

Each stage has one frozen dataclass, and the protocol's table for that stage *is* it:

=================  ==========================  =====================================
protocol table     config                      used by
=================  ==========================  =====================================
``[index]``        :class:`IndexConfig`        ``contaudit index`` (+ ``path``, ``corpus``)
``[probes]``       :class:`ProbeConfig`        ``contaudit probes``
``[scoring]``      :class:`ScoreSettings`      ``contaudit score``
``[analysis]``     :class:`AnalysisSettings`   ``contaudit analyze``
=================  ==========================  =====================================

A field's metadata holds its check (a function returning what was wanted, or None),
a one-line help (the CLI's option help) and ``protocol=False`` for settings that belong
to one call rather than to an audit (which file field holds the text, whether to use
the cache). :func:`validate` runs the checks; the protocol loader runs the same checks
and names the file and key. The CLI takes its option defaults from these classes
(:func:`default_of`, :func:`help_of`), so there is one default per setting.

This module imports nothing heavy: a bad protocol fails before numpy or torch load.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Literal, Optional

from contaudit.errors import InputError
from contaudit.metrics import METRICS

MATCH_COVARIATES = ("length", "rarity")
ADJUSTMENT_COVARIATES = ("difficulty", "length", "rarity")


# --- checks: each returns None when the value is allowed, else what was wanted ---------


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def between(low: float, high: float, *, closed_low: bool = False, closed_high: bool = False):
    """A finite number in the interval, e.g. ``between(0, 1, closed_high=True)`` for (0, 1]."""
    interval = f"{'[' if closed_low else '('}{low}, {high}{']' if closed_high else ')'}"

    def check(v):
        if not _number(v) or not math.isfinite(v):
            return f"a finite number in {interval}"
        ok_low = v >= low if closed_low else v > low
        ok_high = v <= high if closed_high else v < high
        return None if ok_low and ok_high else f"a number in {interval}"
    return check


def at_least(minimum: float):
    """A finite number >= ``minimum``."""
    return lambda v: None if _number(v) and math.isfinite(v) and v >= minimum else f"a finite number >= {minimum}"


def positive(v) -> str | None:
    """A finite number > 0."""
    return None if _number(v) and math.isfinite(v) and v > 0 else "a finite number > 0"


def integer_at_least(minimum: int):
    """An integer >= ``minimum``."""
    return lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= minimum else \
        f"an integer >= {minimum}"


def device_name(v) -> str | None:
    """'auto', 'cpu', 'cuda' or 'cuda:N'."""
    ok = isinstance(v, str) and (v in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", v))
    return None if ok else "'auto', 'cpu', 'cuda' or 'cuda:N'"


def device_list(v) -> str | None:
    """A list of 'cpu' or 'cuda:N' names, all of one kind, no GPU twice ('cpu' may repeat)."""
    wanted = "a list of 'cuda:N' names (each GPU once) or of 'cpu'"
    if not isinstance(v, (tuple, list)) or not all(isinstance(d, str) and re.fullmatch(r"cpu|cuda:\d+", d) for d in v):
        return wanted
    kinds = {d.split(":")[0] for d in v}
    gpus = [d for d in v if d != "cpu"]
    return wanted if len(kinds) > 1 or len(set(gpus)) < len(gpus) else None


def one_of(*allowed):
    """One of ``allowed`` (for a Literal field set from Python rather than from TOML)."""
    return lambda v: None if v in allowed else "one of " + ", ".join(repr(a) for a in allowed)


def _reference_test(v) -> str | None:
    if v == "t":  # the test of contaudit 0.x before issue 22
        return ("'robust' or 'rank' ('t' was removed: its error rate exceeds Holm's alpha / 2 when the clean "
                "models' effects are heavy-tailed; 'robust' keeps it, see docs/analysis.md)")
    return one_of("robust", "rank")(v)


def subset_of(allowed: tuple, *, required: str | None = None):
    """A tuple of values from ``allowed``, including ``required`` when given."""
    def check(v):
        if not isinstance(v, (tuple, list)):
            return f"a list of {', '.join(repr(a) for a in allowed)}"
        if required is not None and required not in v:
            return f"a list that includes {required!r}"
        unknown = [c for c in v if c not in allowed]
        return f"a list of only {', '.join(repr(a) for a in allowed)}" if unknown else None
    return check


def setting(default, *, check=None, help: str = "", protocol: bool = True):
    """A config field: its default, its check, a one-line help; ``protocol=False`` keeps it out of protocol tables."""
    meta = {"check": check, "help": help, "protocol": protocol}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for a sequence default")
    return field(default=default, metadata=meta)


def required(*, check=None, help: str = ""):
    """A config field without a default (a protocol must give it)."""
    return field(metadata={"check": check, "help": help, "protocol": True})


def validate(config) -> None:
    """Run every field's check; raise :class:`InputError` naming the first bad field."""
    for f in dataclasses.fields(config):
        check = f.metadata.get("check")
        value = getattr(config, f.name)
        if check is not None and value is not None and (wanted := check(value)) is not None:
            raise InputError(f"`{f.name}` must be {wanted}; got {value!r}")


def default_of(cls, name: str):
    """The default of field ``name`` of config class ``cls`` (a CLI option's default)."""
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def help_of(cls, name: str) -> str:
    """The help of field ``name`` as a CLI sentence."""
    text = next(f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def values(config, cls) -> dict:
    """The fields of ``config`` that ``cls`` has (e.g. an :class:`IndexConfig` out of an ``[index]`` table)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)}


# --- the stages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexConfig:
    """Settings of an index build (all recorded in the manifest).

    ``n`` and ``min_coverage`` define "seen" by exact overlap: at least one matched
    n-gram and coverage >= ``min_coverage``. The default (13, 0.0) is GPT-3's rule;
    :meth:`palm` gives PaLM's (8-grams, >= 70 % of them found).
    """

    n: int = setting(13, check=integer_at_least(1), help="word n-gram length for exact overlap")
    min_coverage: float = setting(0.0, check=between(0, 1, closed_low=True, closed_high=True),
                                  help="fraction of an item's n-grams that must occur for it to be seen")
    neardup: bool = setting(True, help="also search near duplicates (verified Jaccard of edited copies)")
    neardup_threshold: float = setting(0.8, check=between(0, 1, closed_high=True),
                                       help="verified Jaccard at which a near duplicate marks an item seen")
    max_locations: int = setting(5, check=integer_at_least(0), help="corpus locations recorded per item")
    text_field: str = setting("text", help="field holding the text in corpus records")
    include: tuple[str, ...] = setting((), help="globs of files to read in corpus directories")
    exclude: tuple[str, ...] = setting((), help="globs of files to skip in corpus directories")
    workers: int = setting(1, check=integer_at_least(1), help="worker processes (with ray: Ray tasks at a time)")
    ray: bool = setting(False, help="scan as Ray tasks, on the cluster at RAY_ADDRESS or else a local Ray instance "
                                    "(same index; needs the optional extra 'ray')")
    shard_mb: float = setting(64.0, check=at_least(1e-6), help="resume granularity: MB of corpus text per shard")
    batch_mb: float = setting(1.0, check=at_least(1e-6), help="MB of corpus text a worker scans at a time")
    skip_bad: bool = setting(False, help="skip (and count) malformed corpus records instead of stopping")
    semantic: bool = setting(False, help="also search rephrased, reordered or translated copies "
                                         "(embedding search; needs the optional extra 'semantic')")
    semantic_model: str = setting("wordllama", help="embedding model: 'wordllama' (in its wheel), a local "
                                                    "static-embedding folder (tokenizer.json + *.safetensors), or "
                                                    "a transformers encoder's folder (for GPUs)")
    semantic_threshold: Optional[float] = setting(None, check=between(0, 1, closed_high=True),
                                                  help="alignment score at which an item is paraphrased "
                                                       "(default: calibrated on the corpus)")
    semantic_max_false_rate: float = setting(0.01, check=between(0, 1),
                                             help="false-match rate the calibrated threshold allows")
    semantic_candidates: int = setting(16, check=integer_at_least(1),
                                       help="nearest corpus spans per item (by embedding cosine) verified at the end")
    semantic_calibration_mb: float = setting(8.0, check=at_least(0.1),
                                             help="MB of corpus text (its first documents) the threshold is "
                                                  "calibrated on")

    @classmethod
    def palm(cls, **overrides) -> "IndexConfig":
        """PaLM's contamination rule: 8-grams, seen when >= 70 % of them occur."""
        return cls(**{"n": 8, "min_coverage": 0.7, **overrides})

    def validate(self) -> None:
        validate(self)
        if self.n > 64:
            raise InputError(f"`n` must be an integer from 1 to 64; got {self.n!r}")


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of seen/unseen probe construction (recorded in the probes manifest)."""

    suffix_words: int = setting(32, check=integer_at_least(1), help="words in the completion target (the item's end)")
    prefix_words: int = setting(128, check=integer_at_least(1),
                                help="at most this many words of prompt before the suffix")
    min_prefix_words: int = setting(16, check=integer_at_least(1), help="items with fewer prefix words are excluded")
    match_on: tuple[Literal["length", "rarity"], ...] = setting(
        ("length", "rarity"), check=subset_of(MATCH_COVARIATES, required="length"),
        help="covariates unseen probes are matched on")
    caliper: float = setting(0.5, check=positive,
                             help="largest pair distance in pooled standard deviations")
    min_seen: int = setting(10, check=integer_at_least(1), help="fewest matched pairs that can support a test")

    def validate(self) -> None:
        validate(self)


@dataclass(frozen=True)
class ScoreSettings:
    """Every option of ``contaudit score``, with its default.

    ``None`` means "derived": ``batch_tokens`` (likelihood) and ``completion_batch_tokens``
    (greedy completion: more rows per batch make decoding cheaper) from the device,
    ``max_length`` from the model's context length, ``stride`` = ``max_length // 2``,
    ``cache_dir`` = ``.contaudit-cache`` beside the output file, and ``threads`` = one per
    core: on CPU that many single-threaded workers, each running whole batches.
    ``devices``, ``replicas`` and ``ray`` describe the hardware (a model split across
    devices, data-parallel copies of it); they change speed, never a score.
    """

    batch_tokens: Optional[int] = setting(None, check=integer_at_least(1),
                                          help="padded tokens per likelihood batch (default: 256 on CPU, 16384 on GPU)")
    completion_batch_tokens: Optional[int] = setting(
        None, check=integer_at_least(1),
        help="padded prompt+generated tokens per completion batch (default: 2048 on CPU, 16384 on GPU)")
    max_length: Optional[int] = setting(None, check=integer_at_least(2),
                                        help="tokens per window (default: the model's context length)")
    stride: Optional[int] = setting(None, check=integer_at_least(1),
                                    help="new tokens scored per later window (default: max_length / 2)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = setting(
        "auto", check=one_of("auto", "float32", "bfloat16", "float16"),
        help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16 or float16")
    device: str = setting("auto", check=device_name, help="auto, cpu, cuda or cuda:N")
    devices: tuple[str, ...] = setting(
        (), check=device_list,
        help="devices one model is split across, layers balanced by memory (e.g. cuda:0,cuda:1); with replicas, "
             "cut into that many equal groups, one per replica; replaces device (default: the whole model on device)")
    replicas: int = setting(1, check=integer_at_least(1),
                            help="model copies scoring batches side by side (data parallel), each in its own process: "
                                 "one per GPU or per group of devices, on CPU the threads split; same scores as one")
    ray: bool = setting(False, help="run the replicas as Ray actors, on the cluster at RAY_ADDRESS or else a local Ray "
                                    "instance (needs the optional extra 'ray')")
    threads: Optional[int] = setting(None, check=integer_at_least(1),
                                     help="CPU workers, one thread each (default: one per core)")
    completion: bool = setting(False, protocol=False, help="also greedy-complete each prefix and compare with its suffix")
    text_field: str = setting("text", protocol=False, help="field holding the item text")
    id_field: str = setting("id", protocol=False, help="field holding a unique item id")
    trust_remote_code: bool = setting(False, protocol=False, help="allow model code shipped with the model to run")
    gguf_file: Optional[str] = setting(None, protocol=False, help="GGUF file name inside a model directory")
    cache_dir: Optional[str] = setting(None, protocol=False,
                                       help="resume cache (default: .contaudit-cache beside the output)")
    use_cache: bool = setting(True, protocol=False, help="read and write the resume cache")

    def validate(self) -> None:
        validate(self)
        if self.max_length is not None and self.stride is not None and self.stride >= self.max_length:
            raise InputError(f"`stride` ({self.stride}) must be smaller than `max_length` ({self.max_length}) "
                             "so each window keeps some context")
        if self.devices and len(self.devices) % self.replicas:
            raise InputError(f"`devices` lists {len(self.devices)} devices, which cannot be cut into `replicas` = "
                             f"{self.replicas} equal groups")


@dataclass(frozen=True)
class AnalysisSettings:
    """Everything ``contaudit analyze`` needs; defaults are those of protocols/default.toml."""

    alpha: float = setting(0.05, check=between(0, 0.5, closed_high=True),
                           help="family-wise significance level (Holm over the two primary tests)")
    primary_metric: str = setting(  # a str checked against the metrics table (contaudit/metrics.py) when used
        "suffix_logprob", check=lambda v: one_of(*METRICS)(v), help="completion score of the primary memorization test")
    min_effect_perplexity: float = setting(0.01, check=at_least(0),
                                           help="smallest |perplexity DiD| (nats/token) that counts")
    min_effect_memorization: float = setting(
        0.02, check=at_least(0), help="smallest memorization DiD that counts, in the primary metric's unit")
    n_permutations: int = setting(10_000, check=integer_at_least(1), help="permutation resamples per test")
    n_bootstrap: int = setting(10_000, check=integer_at_least(0), help="bootstrap resamples per CI (0: no CI)")
    confidence_level: float = setting(0.95, check=between(0, 1), help="level of the CIs")
    seed: int = setting(20240601, check=integer_at_least(0), help="seed of every random draw")
    min_items: int = setting(30, check=integer_at_least(2), help="fewest paired items per test and shadow set")
    min_probes: int = setting(20, check=integer_at_least(2), help="fewest paired probes per seen and unseen set")
    balance_threshold: float = setting(0.1, check=at_least(0),
                                       help="largest |SMD| of probe length / rarity between seen and unseen")
    max_unpaired_fraction: float = setting(0.05, check=between(0, 1, closed_low=True, closed_high=True),
                                           help="largest fraction of a set's items scored by only one model")
    shadow_rule: Literal["difference", "equivalence"] = setting(
        "difference", check=one_of("difference", "equivalence"),
        help="how the clean model's NLL on test vs shadow is judged")
    shadow_margin: float = setting(0.2, check=at_least(0), help="|Hedges' g| of clean NLL, test vs shadow, allowed")
    shadow_alpha: float = setting(0.05, check=between(0, 0.5, closed_high=True),
                                  help="level of the shadow comparability test")
    power: float = setting(0.8, check=between(0, 1), help="power at which the minimum detectable effect is given")
    references: Literal["families", "siblings"] = setting(
        "families", check=one_of("families", "siblings"),
        help="with 2+ clean models: 'families' (other recipes: judged against the references' shadow-to-test "
             "relation) or 'siblings' (the suspect's recipe, other seeds: judged against their mean effect)")
    unit: Literal["auto", "token", "byte"] = setting(
        "auto", check=one_of("auto", "token", "byte"),
        help="unit of the NLL comparison: 'auto' (per byte when the models' tokenizers differ, else per token), "
             "'token' or 'byte'")
    reference_test: str = setting(  # a str, not a Literal: the check names the removed "t"
        "robust", check=_reference_test,
        help="with 2+ clean models: heavy-tail-safe prediction test ('robust') or distribution-free rank test ('rank')")
    adjust_for: tuple[Literal["difficulty", "length", "rarity"], ...] = setting(
        ADJUSTMENT_COVARIATES, check=subset_of(ADJUSTMENT_COVARIATES),
        help="item covariates the shift adjustment conditions on")
    min_overlap: float = setting(0.8, check=between(0, 1, closed_low=True, closed_high=True),
                                 help="least share of items in a covariate's common support for it to be adjusted for")
    minkpp_k: Literal[10, 20] = setting(20, check=one_of(10, 20), help="k of the Min-K%++ supporting DiD")
    top_items: int = setting(20, check=integer_at_least(1), help="rows in the most-suspicious-items tables")

    def validate(self) -> None:
        validate(self)


def _no_empty(v) -> str | None:
    return None if isinstance(v, str) and v else "a non-empty string"


@dataclass(frozen=True)
class ItemOrderConfig:
    """``[item_order]``: Oren et al.'s (2023) order test, computed by ``contaudit order`` and ``audit``.

    The test set, in its published (file) order, is cut into ``shards`` runs of
    consecutive items; each shard's items are joined with ``separator`` and scored as
    one text in the published order and in ``permutations`` seeded random orders. In an
    audit the table turns the test on; without ``[models.clean]`` it is on with these
    defaults. ``seed`` absent: the ``[analysis]`` seed.

    The test is an exact stratified randomisation test over shards (no normality
    assumed), so the defaults are chosen for power per model pass, not for a normal
    approximation. The cost is ``permutations + 1`` passes over the test set, whatever
    ``shards`` is. 25 permutations (26 passes, 2.4 times the former 11) bring the
    statistic's null spread to ``sqrt(1 + 1/25) = 1.02`` times its floor (10: 1.05;
    50: 1.01 for twice the cost again). More shards cost nothing but lose power: each
    shard boundary drops an adjacent pair of items, and short shards have few distinct
    orders (``benchmarks/order_test_null.py --power``: a simulated leak of 0.4 nats per
    adjacent pair in 82 items is detected 0.73 of the time with 10 shards, 0.59 with 20,
    0.36 with 41). 10 shards need 20+ items.
    """

    shards: int = setting(10, check=integer_at_least(1),
                          help="shards of consecutive test items (each needs 2+ items; more shards cost nothing "
                               "but lose power)")
    permutations: int = setting(25, check=integer_at_least(1),
                                help="shuffled orders scored per shard (the cost is permutations + 1 passes over "
                                     "the test set)")
    separator: str = setting("\n\n", check=_no_empty, help="text between two items of a shard")
    seed: Optional[int] = setting(None, check=integer_at_least(0),
                                  help="seed of the permutations (default: the [analysis] seed)")

    def validate(self) -> None:
        validate(self)
