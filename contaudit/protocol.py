"""Audit protocols: one typed object, loaded from a TOML file and validated up front.

A protocol fixes an audit before its results exist: the suspect and clean models, the
test and shadow sets (or one set split by a date field at a cutoff), the corpus index,
n-gram and probe settings, the primary metric, alpha, minimum effects, resampling
counts and the seed. Its SHA-256 (of the file's bytes) goes into ``results.json`` and
every report, so a protocol can be published before the audit is run.

Each stage's table *is* that stage's config (:mod:`contaudit.config`): ``[index]`` an
:class:`IndexConfig` plus its paths, ``[probes]`` a :class:`ProbeConfig`, ``[scoring]`` a
:class:`ScoreSettings`, ``[analysis]`` an :class:`AnalysisSettings`, ``[item_order]`` (optional) an
:class:`ItemOrderConfig`. A key absent from the
file takes that field's default (the value ``protocols/default.toml`` spells out).
Relative paths are resolved against the directory of the protocol file; a set's ``path`` may
instead name a split of a dataset in the local Hugging Face cache, ``hf:DATASET[:CONFIG]:SPLIT``
(:mod:`contaudit.hf_sets`), kept as written.

Validation runs before any heavy work and fails with :class:`ProtocolError` naming the
file, the key (``analysis.alpha``) and what is allowed::

    >>> load_protocol("protocols/default.toml", check_paths=False).analysis.alpha
    0.05
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from contaudit.config import (AnalysisSettings, IndexConfig,  # noqa: F401
                              ItemOrderConfig, ProbeConfig, ScoreSettings)
from contaudit.code_eval import CodeEvalConfig
from contaudit.config import between, integer_at_least, required, setting, values
from contaudit.errors import InputError, ProtocolError
from contaudit.hf_sets import is_hf_set, open_hf_set, parse_hf_set


SHADOW_RULES = ("difference", "equivalence")
# How the shadow set was made. Only a random split makes test and shadow exchangeable.
SHADOW_ORIGINS = ("random_split", "date_split", "later_set")


@dataclass(frozen=True)
class ModelSpec:
    """A model to score with: a local Hugging Face directory or a GGUF file."""

    path: Path = required(help="local model directory or .gguf file")
    gguf_file: Optional[str] = setting(None, help="GGUF file name inside `path`")
    trust_remote_code: bool = setting(False, help="run the model repository's own code (off by default)")
    cutoff: Optional[str] = setting(None, help="the last date of the model's training data (ISO 8601), when known")


@dataclass(frozen=True)
class Models:
    """The suspect, its clean control, and optionally more clean reference models.

    ``clean`` and every ``[[models.reference]]`` form the reference panel: with two or
    more, the tests judge the suspect against the spread between clean models. Without
    ``clean`` (most real audits have no clean twin of the suspect) the audit runs the
    order test (``[item_order]``), Min-K%++ and the corpus evidence on the suspect
    alone, and its verdict is at most SUSPECT.
    """

    suspect: ModelSpec = required(help="the model under audit")
    clean: Optional[ModelSpec] = setting(
        None, help="the control whose training data excludes the test set (absent: an audit without a clean "
                   "model, decided by the order test alone, at most SUSPECT)")
    reference: tuple[ModelSpec, ...] = setting((), help="more clean models ([[models.reference]] tables)")

    @property
    def panel(self) -> tuple[ModelSpec, ...]:
        """Every clean model: ``clean`` first, then the references (empty without a clean model)."""
        return () if self.clean is None else (self.clean, *self.reference)

    def roles(self) -> list[ModelRole]:
        """Every model with its role: the suspect, the clean model, the references."""
        return model_roles(clean=self.clean is not None, n_references=len(self.reference),
                           specs=[self.suspect, *self.panel])


@dataclass(frozen=True)
class ModelRole:
    """One model's role in an audit, named one way everywhere (protocol errors, score directories,
    the analysis, results.json and the reports)."""

    name: str  # suspect, clean, reference[1], ...: messages, results.json, reports
    key: str  # where the protocol file declares it: models.reference[0] (TOML arrays count from 0)
    slug: str  # suspect, clean, reference1, ...: score directories (scores/reference1/) and input keys
    spec: ModelSpec | None = None


def model_roles(*, clean: bool, n_references: int, specs: list | None = None) -> list[ModelRole]:
    """The roles of an audit's models in order: the suspect, the clean model (when there is one), then
    ``reference[1]``, ``reference[2]``, ... (``specs``, when given, in the same order)."""
    roles = [ModelRole("suspect", "models.suspect", "suspect")]
    roles += [ModelRole("clean", "models.clean", "clean")] if clean else []
    roles += [ModelRole(f"reference[{k}]", f"models.reference[{k - 1}]", f"reference{k}")
              for k in range(1, n_references + 1)]
    return roles if specs is None else [dataclasses.replace(r, spec=s) for r, s in zip(roles, specs, strict=True)]


# A set's path: a file (resolved against the protocol's directory) or a cached dataset split, hf:DATASET[:CONFIG]:SPLIT
SetPath = typing.NewType("SetPath", Path)


@dataclass(frozen=True)
class SetSpec:
    """One benchmark file (JSON Lines or Parquet) or cached dataset split (``hf:DATASET[:CONFIG]:SPLIT``)."""

    path: SetPath = required(help="benchmark file, or hf:DATASET[:CONFIG]:SPLIT from the local Hugging Face cache")
    text_field: str = setting("text", help="field holding the item text")
    id_field: str = setting("id", help="field holding the item id")
    template: Optional[str] = setting(None, help="format string over fields, e.g. '{prompt}{solution}'")
    answer_field: Optional[str] = setting(
        None, help="field holding each item's answer / label: the corpus is searched for it too (same pass), and "
                   "the score inflation splits the test items found in the corpus by whether their answer was")


@dataclass(frozen=True)
class SplitSpec(SetSpec):
    """One benchmark file split into test (before ``cutoff``) and shadow (on or after)."""

    date_field: str = setting("date", help="field holding each item's creation date (ISO 8601)")
    cutoff: Optional[str] = setting(None, help="the suspect's training-data cutoff date, e.g. 2024-01-01")


@dataclass(frozen=True)
class RandomSplitSpec(SetSpec):
    """One benchmark file that contaudit splits at random into test and shadow.

    The split (:func:`contaudit.splits.split_test_shadow`) depends only on ``seed``,
    ``test_fraction`` and the file's items in order; the analysis re-derives it from the
    file and refuses score files whose sets differ, so the test and shadow sets are
    exchangeable by construction and the item-level tests are exact.
    """

    test_fraction: float = setting(0.5, check=between(0, 1), help="share of the items that form the test set")
    seed: int = setting(0, check=integer_at_least(0), help="seed of the random split")


@dataclass(frozen=True)
class Sets:
    """Either ``test`` and ``shadow``, or ``split``, or ``random_split``."""

    test: Optional[SetSpec] = setting(None, help="items the suspect may have seen")
    shadow: Optional[SetSpec] = setting(None, help="items from the same distribution, made after the cutoff")
    split: Optional[SplitSpec] = setting(None, help="one file split by date into test and shadow")
    random_split: Optional[RandomSplitSpec] = setting(
        None, help="one file split at random by contaudit (seeded; re-derived and verified at analysis)")
    heldout: tuple[SetSpec, ...] = setting(
        (), help="more text the suspect cannot have seen ([[sets.heldout]]): extra candidates for unseen probes")
    shadow_origin: Literal["random_split", "date_split", "later_set"] = setting(
        "later_set", help="how the shadow set was made; only 'random_split' makes the sets exchangeable")
    shadow_from: Optional[str] = setting(
        None, help="the earliest date of the shadow set's items (ISO 8601; a [sets.split] has its cutoff): "
                   "every clean model's training cutoff must precede it")

    @property
    def test_source(self) -> tuple[str, SetSpec] | None:
        """The table the test items come from (``test``, ``split`` or ``random_split``): its name and spec."""
        return next(((n, getattr(self, n)) for n in ("test", "split", "random_split") if getattr(self, n) is not None),
                    None)


@dataclass(frozen=True)
class IndexSettings(IndexConfig):
    """``[index]``: where the suspect's training-corpus index is (built there from ``corpus``
    when given), and the :class:`~contaudit.config.IndexConfig` it is built with.
    Optional: without an index there are no probes."""

    path: Optional[Path] = setting(None, help="index directory (built there from `corpus` when given)")
    corpus: tuple[Path, ...] = setting((), help="corpus files or directories to index")

    @property
    def config(self) -> IndexConfig:
        """The build settings alone (what the index's plan hash covers)."""
        return IndexConfig(**values(self, IndexConfig))


@dataclass(frozen=True, kw_only=True)
class AuditSettings:
    """What an audit protocol and a screening suite (:mod:`contaudit.suite`) share: the models,
    the corpus index and every stage's settings. ``source`` and ``sha256`` identify the file."""

    models: Models = required(help="[models.suspect], and [models.clean] unless the audit has none")
    name: str = setting("audit", help="a short name for reports")
    description: str = setting("", help="free text")
    index: Optional[IndexSettings] = setting(None, help="corpus index (needed for the memorization test)")
    probes: ProbeConfig = setting(ProbeConfig(), help="probe construction")
    scoring: ScoreSettings = setting(ScoreSettings(), help="scoring engine")
    analysis: AnalysisSettings = setting(AnalysisSettings(), help="statistics and verdict")
    item_order: Optional[ItemOrderConfig] = setting(
        None, help="Oren et al.'s order test on the suspect (on by default without [models.clean])")
    source: Optional[Path] = field(default=None, compare=False, metadata={"internal": True})
    sha256: Optional[str] = field(default=None, compare=False, metadata={"internal": True})

    def to_dict(self) -> dict:
        """JSON-ready settings (paths as strings), without ``source``/``sha256``."""
        return _plain({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                       if not f.metadata.get("internal")})


@dataclass(frozen=True)
class OutcomesSpec(CodeEvalConfig):
    """``[outcomes]``: per-item evaluation outcomes of the audit's models, for the score-inflation estimate.

    Either contaudit evaluates every model itself (``harness = "humaneval"``: greedy generation
    checked by execution, :mod:`contaudit.code_eval`), or the user gives each model's outcome file
    (``suspect``, and ``clean`` / ``reference`` when there are those models): JSON Lines of ``id``
    and ``score``, or lm-evaluation-harness ``--log_samples`` output (:mod:`contaudit.outcomes`).
    The harness's settings are :class:`~contaudit.code_eval.CodeEvalConfig`'s (``harness_config``).
    """

    harness: Optional[Literal["humaneval"]] = setting(
        None, help="evaluate every model with this harness (greedy generation checked by execution)")
    suspect: Optional[Path] = setting(None, help="the suspect's outcomes (JSON Lines of id and score, or lm_eval "
                                                 "--log_samples output)")
    clean: Optional[Path] = setting(None, help="the clean model's outcomes")
    reference: tuple[Path, ...] = setting((), help="each reference model's outcomes, in [[models.reference]] order")
    format: Literal["auto", "jsonl", "lm_eval"] = setting("auto", help="the outcome files' format")
    metric: Optional[str] = setting(None, help="which metric of an lm_eval sample file (e.g. 'acc')")
    task: Optional[str] = setting(None, help="which task of an lm_eval output directory holding several")
    text_field: Optional[str] = setting(None, help="match records without an id by this field's text")

    @property
    def harness_config(self) -> CodeEvalConfig:
        """The harness's settings alone (``max_new_tokens``, ``timeout_s``, ...: :class:`CodeEvalConfig`)."""
        return CodeEvalConfig(**values(self, CodeEvalConfig))


@dataclass(frozen=True, kw_only=True)
class Protocol(AuditSettings):
    """A validated audit protocol: one test/shadow pair (``sets``) and everything in :class:`AuditSettings`."""

    sets: Sets = required(help="[sets.test] + [sets.shadow], or [sets.split]")
    outcomes: Optional[OutcomesSpec] = setting(
        None, help="per-item evaluation outcomes of the models, for the score-inflation estimate")


def check_outcomes(loader: Loader, outcomes: OutcomesSpec | None, models: Models, key: str = "outcomes") -> None:
    """``[outcomes]`` names a harness or the suspect's file, and files only for the audit's models."""
    if outcomes is None:
        return
    files = outcomes.suspect is not None or outcomes.clean is not None or outcomes.reference
    if outcomes.harness is not None and files:
        raise loader.fail(f"{key}.harness", "contaudit evaluates every model itself with a harness: leave out the "
                                            "outcome files, or the harness to use the files")
    if outcomes.harness is None and outcomes.suspect is None:
        raise loader.fail(f"{key}.suspect", "missing: give the suspect's outcome file, or harness = 'humaneval'")
    if outcomes.clean is not None and models.clean is None:
        raise loader.fail(f"{key}.clean", "there is no [models.clean] whose outcomes these would be")
    if outcomes.reference and len(outcomes.reference) != len(models.reference):
        raise loader.fail(f"{key}.reference", f"gives {len(outcomes.reference)} files for "
                                              f"{len(models.reference)} [[models.reference]] models; give one per model")


def outcome_paths(outcomes: OutcomesSpec | None, key: str = "outcomes") -> list[tuple[str, Path]]:
    """``(key, path)`` of every outcome file ``[outcomes]`` names."""
    if outcomes is None:
        return []
    wanted = [(f"{key}.{name}", getattr(outcomes, name)) for name in ("suspect", "clean")
              if getattr(outcomes, name) is not None]
    return wanted + [(f"{key}.reference[{i}]", p) for i, p in enumerate(outcomes.reference)]


def _plain(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.metadata.get("internal") and f.metadata.get("protocol", True)}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def settings_sha256(settings) -> str:
    """SHA-256 of a settings object's canonical JSON (used when there is no protocol file)."""
    return hashlib.sha256(json.dumps(_plain(settings), sort_keys=True).encode()).hexdigest()


# --- loading and validation -------------------------------------------------------------

_TYPE_NAMES = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string",
               Path: "a path string"}


def _type_name(value) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", dict: "table", list: "array"}.get(
        type(value), type(value).__name__)


class Loader:
    """Builds typed dataclasses from parsed TOML, naming the file and key on every error."""

    def __init__(self, file: Path):
        self.file = file

    def fail(self, key: str, message: str) -> ProtocolError:
        return ProtocolError(f"{self.file}: key `{key}`: {message}")

    def build(self, cls, table, key: str):
        if not isinstance(table, dict):
            raise self.fail(key, f"must be a table ([{key}]), got {_type_name(table)} {table!r}")
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls)
                  if not f.metadata.get("internal") and f.metadata.get("protocol", True)]
        names = {f.name for f in fields}
        for name in table:
            if name not in names:
                where = f"[{key}]" if key else "the top level"
                raise ProtocolError(f"{self.file}: unknown key `{_join(key, name)}`; allowed keys in {where} are: "
                                    f"{', '.join(sorted(names))}")
        values = {}
        for f in fields:
            sub = _join(key, f.name)
            if f.name not in table:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    help_ = f.metadata.get("help")
                    raise self.fail(sub, f"missing; it is required ({help_})" if help_ else "missing; it is required")
                continue
            value = self.convert(hints[f.name], table[f.name], sub)
            check = f.metadata.get("check")
            if check is not None and (wanted := check(value)) is not None:
                raise self.fail(sub, f"must be {wanted}; got {value!r}")
            values[f.name] = value
        built = cls(**values)
        try:  # the checks that relate two fields (e.g. scoring.stride < scoring.max_length)
            getattr(built, "validate", lambda: None)()
        except InputError as e:
            raise ProtocolError(f"{self.file}: [{key}]: {e}") from None
        return built

    def convert(self, tp, value, key: str):
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):  # Optional[X]: TOML has no null, so absence is the None
            inner = [a for a in args if a is not type(None)][0]
            return self.convert(inner, value, key)
        if origin is Literal:
            if value not in args or type(value) is not type(args[0]):
                raise self.fail(key, f"must be one of {', '.join(repr(a) for a in args)}; got {value!r}")
            return value
        if origin is tuple:
            if not isinstance(value, list):
                what = _TYPE_NAMES.get(args[0], "allowed value") if typing.get_origin(args[0]) is not Literal else \
                    "one of " + ", ".join(repr(a) for a in typing.get_args(args[0]))
                raise self.fail(key, f"must be an array (each {what}); got {_type_name(value)} {value!r}")
            return tuple(self.convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise self.fail(key, f"must be a table ([{key}]); got {_type_name(value)} {value!r}")
            return self.build(tp, value, key)
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if tp is SetPath and isinstance(value, str) and is_hf_set(value):
            try:
                return SetPath(Path(parse_hf_set(value).source))  # a cached dataset split, kept as written
            except InputError as e:
                raise self.fail(key, str(e)) from None
        if tp in (Path, SetPath):
            if not isinstance(value, str) or not value:
                raise self.fail(key, f"must be a non-empty path string; got {_type_name(value)} {value!r}")
            return (self.file.parent / value).resolve()
        if tp is str and isinstance(value, (_dt.date, _dt.datetime)):
            return value.isoformat()  # TOML dates (cutoff = 2024-01-01) are kept as ISO strings
        if type(value) is not tp:
            raise self.fail(key, f"must be {_TYPE_NAMES.get(tp, tp.__name__)}; got {_type_name(value)} {value!r}")
        return value


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def check_answer_field(loader: Loader, sets: Sets, outcomes: OutcomesSpec | None, index: IndexSettings | None,
                       key: str = "sets") -> None:
    """``answer_field`` only where the test items come from, and only with what reads it: the corpus to search
    (``[index].corpus``) and the outcomes whose inflation it splits (``[outcomes]``)."""
    others = [(f"{key}.shadow", sets.shadow)] + [(f"{key}.heldout[{i}]", h) for i, h in enumerate(sets.heldout)]
    for where, spec in others:
        if spec is not None and spec.answer_field is not None:
            raise loader.fail(f"{where}.answer_field", "only the test items' answers are searched for: give it on "
                                                       "the table the test items come from")
    name, spec = sets.test_source or (None, None)
    if spec is None or spec.answer_field is None:
        return
    if outcomes is None:
        raise loader.fail(f"{key}.{name}.answer_field", "splits the score inflation's seen items by their answer: "
                                                        "it needs [outcomes]")
    if index is None or not index.corpus:
        raise loader.fail(f"{key}.{name}.answer_field", "needs [index].corpus, to search the corpus for the answers "
                                                        "(a prebuilt index holds whole items only)")


def check_sets(loader: Loader, sets: Sets, key: str = "sets") -> None:
    """Either a split, a random split or a test + shadow pair, with a valid cutoff; ``key`` names the table in errors."""
    if sets.random_split is not None:
        others = [f"[{key}.{n}]" for n in ("test", "shadow", "split") if getattr(sets, n) is not None]
        if others:
            raise loader.fail(f"{key}.random_split", f"give either [{key}.random_split] or {' + '.join(others)}, "
                                                     "not both")
        if sets.shadow_origin not in ("later_set", "random_split"):  # later_set: the default, left out
            raise loader.fail(f"{key}.shadow_origin", f"a [{key}.random_split] is a random split; leave shadow_origin "
                                                      "out or set it to 'random_split'")
        return
    if sets.split is not None:
        if sets.test is not None or sets.shadow is not None:
            raise loader.fail(f"{key}.split", f"give either [{key}.split] or [{key}.test] + [{key}.shadow], not both")
        if sets.shadow_origin == "random_split":
            raise loader.fail(f"{key}.shadow_origin", f"a [{key}.split] is split by date; leave shadow_origin out or "
                                                      "set it to 'date_split'")
        if sets.split.cutoff is None:
            raise loader.fail(f"{key}.split.cutoff", "missing; a split needs the cutoff date (e.g. 2024-01-01)")
        try:
            _dt.date.fromisoformat(sets.split.cutoff[:10])
        except ValueError:
            raise loader.fail(f"{key}.split.cutoff",
                              f"must be a date like 2024-01-01; got {sets.split.cutoff!r}") from None
        return
    for name in ("test", "shadow"):
        if getattr(sets, name) is None:
            raise loader.fail(f"{key}.{name}", f"missing; give [{key}.test] and [{key}.shadow], or [{key}.split]")


def check_models(loader: Loader, models: Models) -> None:
    """No model may play two roles: a repeated reference would shrink the spread the panel
    measures, and a clean model that is the suspect makes every difference zero."""
    if models.clean is None and models.reference:
        raise loader.fail("models.reference", "needs [models.clean]: the clean control comes first in the panel; "
                                              "name one of the reference models [models.clean] instead")
    seen: dict[tuple, str] = {}
    for role in models.roles():
        key, spec = role.key, role.spec
        ident = (spec.path, spec.gguf_file)
        if ident in seen and key != "models.suspect":
            raise loader.fail(key, f"is the same model as `{seen[ident]}` ({spec.path}); each model must differ")
        seen[ident] = key


def _date(loader: Loader, key: str, value: str) -> _dt.date:
    try:
        return _dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise loader.fail(key, f"must be a date like 2024-01-01; got {value!r}") from None


def shadow_start(sets: Sets) -> str | None:
    """The date the shadow set begins: a ``[sets.split]``'s cutoff, else ``[sets] shadow_from`` (None: unknown)."""
    if sets.split is not None and sets.split.cutoff is not None:
        return str(sets.split.cutoff)[:10]
    return str(sets.shadow_from)[:10] if sets.shadow_from is not None else None


def check_cutoffs(loader: Loader, models: Models, sets: Sets, key: str = "sets") -> None:
    """Every clean model's training cutoff must precede the shadow set.

    A reference trained on text from the shadow set's period finds the shadow set familiar,
    which makes a clean suspect's test set look relatively familiar: contamination where
    there is none, and no statistic repairs it. So such a protocol is refused, naming the
    model. (A suspect whose cutoff is later sees the shadow set as familiar too; that only
    hides contamination, and the report says so.)
    """
    dates = {r.key: _date(loader, f"{r.key}.cutoff", r.spec.cutoff) for r in models.roles() if r.spec.cutoff is not None}
    if sets.shadow_from is not None:
        _date(loader, f"{key}.shadow_from", sets.shadow_from)
    start = shadow_start(sets)
    if start is None:
        return
    start_date = _dt.date.fromisoformat(start)
    for k, when in dates.items():
        if k != "models.suspect" and when >= start_date:
            raise loader.fail(f"{k}.cutoff", f"{when} is not before the shadow set's start ({start}): a clean model "
                                             f"trained on the shadow period sees the shadow set as familiar and makes "
                                             f"a clean suspect look contaminated; drop it, or use a later shadow set")


def cutoff_record(models: Models, sets: Sets) -> dict:
    """Each model's recorded training cutoff against the shadow set's start, for the results and the report."""
    start = shadow_start(sets)
    rows = []
    for role in models.roles():
        spec = role.spec
        when = None if spec.cutoff is None else _dt.date.fromisoformat(str(spec.cutoff)[:10])
        before = None if when is None or start is None else when < _dt.date.fromisoformat(start)
        rows.append({"role": role.name, "cutoff": None if when is None else when.isoformat(), "precedes_shadow": before})
    return {"shadow_from": start, "models": rows,
            "checked": start is not None and all(r["cutoff"] is not None for r in rows[1:])}


def effective_shadow_origin(sets: Sets) -> str:
    """``date_split`` for a ``[sets.split]``, ``random_split`` for a ``[sets.random_split]``, else the
    protocol's ``shadow_origin``."""
    if sets.random_split is not None:
        return "random_split"
    return "date_split" if sets.split is not None else sets.shadow_origin


def effective_item_order(protocol: Protocol) -> ItemOrderConfig | None:
    """The order test the audit runs: ``[item_order]`` when given, its defaults when there is no
    clean model (the test is then what decides), else None; the seed defaults to ``[analysis] seed``."""
    config = protocol.item_order
    if config is None and protocol.models.clean is None:
        config = ItemOrderConfig()
    if config is not None and config.seed is None:
        config = dataclasses.replace(config, seed=protocol.analysis.seed)
    return config


def input_paths(settings: AuditSettings) -> list[tuple[str, Path]]:
    """``(key, path)`` of every model and corpus input ``settings`` names (an index path only when
    there is no corpus to build it from)."""
    wanted: list[tuple[str, Path]] = []
    for role in settings.models.roles():
        key, spec = role.key, role.spec
        wanted.append((f"{key}.path", spec.path))
        if spec.gguf_file is not None:
            wanted.append((f"{key}.gguf_file", spec.path / spec.gguf_file))
    if settings.index is not None:
        for i, p in enumerate(settings.index.corpus):
            wanted.append((f"index.corpus[{i}]", p))
        if settings.index.path is not None and not settings.index.corpus:
            wanted.append(("index.path", settings.index.path))
    return wanted


def set_paths(sets: Sets, key: str = "sets") -> list[tuple[str, Path]]:
    """``(key, path)`` of every set file (test, shadow or split, held-out text)."""
    wanted = [(f"{key}.{name}.path", getattr(sets, name).path) for name in ("test", "shadow", "split", "random_split")
              if getattr(sets, name) is not None]
    return wanted + [(f"{key}.heldout[{i}].path", spec.path) for i, spec in enumerate(sets.heldout)]


def check_paths_exist(loader: Loader, wanted: list[tuple[str, Path]]) -> None:
    """Every named input must exist (a cached dataset split: in the local cache, with that split); the error
    names the key."""
    for key, path in wanted:
        if is_hf_set(path):  # only a set's path can be one (Loader.convert)
            try:
                open_hf_set(path)
            except InputError as e:
                raise loader.fail(key, str(e)) from None
        elif not path.exists():
            raise loader.fail(key, f"no such file or directory: {path}")


def read_toml(path: Path, what: str = "protocol") -> tuple[bytes, dict]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProtocolError(f"{path}: {what} file not found") from None
    except OSError as e:
        raise ProtocolError(f"{path}: cannot read {what} file ({e.strerror})") from None
    try:
        return raw, tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError(f"{path}: {what} file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ProtocolError(f"{path}: invalid TOML: {e}") from None


def load_setting_tables(path: str | Path, names: tuple[str, ...] = ("probes", "analysis")) -> dict[str, dict]:
    """The named tables of a protocol file, each validated as its stage's config, as parsed TOML.

    For tools that take only some settings from a protocol (``calibrate --protocol``): the
    file need not name models or sets, and its other tables are ignored.
    """
    path = Path(path)
    _, table = read_toml(path)
    loader = Loader(path)
    hints = typing.get_type_hints(Protocol)
    out = {}
    for name in names:
        cls = hints.get(name)
        if typing.get_origin(cls) in (typing.Union, types.UnionType):  # an optional table, e.g. [item_order]
            cls = next(a for a in typing.get_args(cls) if a is not type(None))
        if not dataclasses.is_dataclass(cls):
            raise ValueError(f"{name!r} is not a settings table of a protocol")
        if name in table:
            loader.build(cls, table[name], name)
            out[name] = table[name]
    return out


def load_protocol(path: str | Path, *, check_paths: bool = True) -> Protocol:
    """Read and validate a protocol TOML file.

    Parameters
    ----------
    path : str or Path
        The protocol file.
    check_paths : bool
        Also require every model, set and corpus path it names to exist. ``analyze``
        reads only ``[analysis]`` and passes False; ``audit`` keeps True.

    Raises
    ------
    ProtocolError
        Unreadable TOML, a missing required key, an unknown key, a value of the wrong
        type or out of range, an unknown metric, or (with ``check_paths``) a missing
        file. The message names the file and the key.
    """
    path = Path(path)
    raw, table = read_toml(path)
    loader = Loader(path)
    protocol = loader.build(Protocol, table, "")
    check_sets(loader, protocol.sets)
    check_models(loader, protocol.models)
    check_cutoffs(loader, protocol.models, protocol.sets)
    check_outcomes(loader, protocol.outcomes, protocol.models)
    check_answer_field(loader, protocol.sets, protocol.outcomes, protocol.index)
    if check_paths:
        check_paths_exist(loader, input_paths(protocol) + set_paths(protocol.sets) + outcome_paths(protocol.outcomes))
    return dataclasses.replace(protocol, source=path, sha256=hashlib.sha256(raw).hexdigest())


def load_analysis_settings(protocol: str | Path | Protocol | AnalysisSettings | None) -> tuple[AnalysisSettings, dict]:
    """The analysis settings and a provenance record ``{"source", "sha256", "name"}``.

    Accepts a protocol path (paths inside are not checked), a loaded :class:`Protocol`,
    bare :class:`AnalysisSettings`, or None for the built-in defaults (whose hash is
    that of their canonical JSON).
    """
    if protocol is None:
        protocol = AnalysisSettings()
    if isinstance(protocol, AnalysisSettings):
        return protocol, {"source": None, "name": "built-in defaults", "sha256": settings_sha256(protocol),
                          "sha256_of": "settings", "shadow_origin": None}
    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol, check_paths=False)
    sha = protocol.sha256 or settings_sha256(protocol)
    return protocol.analysis, {"source": str(protocol.source) if protocol.source else None, "name": protocol.name,
                               "sha256": sha, "sha256_of": "file" if protocol.sha256 else "settings",
                               "shadow_origin": effective_shadow_origin(protocol.sets),
                               "random_split": protocol.sets.random_split,
                               "cutoffs": cutoff_record(protocol.models, protocol.sets)}
