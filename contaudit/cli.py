"""The ``contaudit`` command line: a thin typer layer over the library.

Each command parses its options, calls one library function, and renders the result
with rich. Option defaults and help come from the stage configs in
:mod:`contaudit.config` (and :mod:`contaudit.finetune.config`), so each default is
written once. Library errors (:class:`contaudit.errors.ContauditError`) become a
one-line message and exit code 2, an unexpected exception one line and exit code 5 (never a
gate's 1), Ctrl-C a line saying how to resume and 130; ``--debug`` shows the traceback instead. Commands
appear in pipeline order: index, probes, score, order, analyze, report, export (to the field's
databases), audit, screen, then the probe-model tools finetune, calibrate and demo.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from contaudit import __version__
from contaudit.config import (
    AnalysisSettings,
    IndexConfig,
    ItemOrderConfig,
    ProbeConfig,
    ScoreSettings,
    default_of,
    help_of,
)
from contaudit.errors import EXIT_BAD_INPUT, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, ContauditError, InputError
from contaudit.finetune.config import (
    CorpusReading,
    ItemSelection,
    ModelConfig,
    TrainConfig,
)
from contaudit.code_eval import CodeEvalConfig
from contaudit.progress import quiet_transformers


class _Group(TyperGroup):
    """The one boundary where errors become exit codes (``contaudit.errors``); lists commands in pipeline order."""

    def list_commands(self, ctx):
        return list(self.commands)

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            for param in command.params:
                _flag_without_value(param)
            make_help = command.get_help_option
            command.get_help_option = lambda ctx: _flag_without_value(make_help(ctx))
        return command

    def get_help_option(self, ctx):
        for param in self.params:  # the root's own flags (--version, --debug)
            _flag_without_value(param)
        return _flag_without_value(super().get_help_option(ctx))


    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ContauditError as e:
            if _state["debug"]:
                raise
            console.print(f"[bold red]Error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            console.print("Interrupted; rerun the same command to resume (finished work is kept).", highlight=False)
            raise typer.Exit(code=EXIT_INTERRUPTED) from None
        except Exception as e:  # not raised on purpose: never let it read as a gate's "fail" (1)
            if _state["debug"] or type(e).__module__.split(".")[0] in ("click", "typer"):
                raise  # the CLI framework's own: usage errors (exit 2), typer.Exit, Abort
            console.print(f"[bold red]Internal error:[/] {escape(type(e).__name__)}: {escape(str(e))} (not a verdict; "
                          f"rerun with --debug for the traceback)", highlight=False, soft_wrap=True)
            raise typer.Exit(code=EXIT_INTERNAL_ERROR) from None


def _flag_without_value(param):
    """A flag takes no value: no ``<bool>`` beside it in the help."""
    if getattr(param, "is_flag", False) and not param.metavar:
        param.metavar = ""
    return param


class _PipeSafeStdout:
    """Standard output that survives a reader closing the pipe (``contaudit screen RUN | head``):
    the rest of the output is dropped, and the command still exits with its own code (a gate's
    PASS must not turn into an error exit because ``head`` stopped reading)."""

    def __init__(self, stream):
        self._stream = stream
        self._dropped = False

    def write(self, text: str) -> int:
        if not self._dropped:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop_the_rest()
        return len(text)

    def flush(self) -> None:
        if not self._dropped:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop_the_rest()

    def _drop_the_rest(self) -> None:
        self._dropped = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())  # so the interpreter's last flush at exit succeeds too
        os.close(devnull)

    def __getattr__(self, name):
        return getattr(self._stream, name)


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,  # help texts name protocol tables such as [sets]: no markup to swallow them
                  help="Audit language models for benchmark contamination.")
console = Console(stderr=True)
out = Console()
_state = {"debug": False}
_FAIL_ON = ("SUSPECT", "CONTAMINATED")


_TRUST_HELP = ("Allow models whose protocol sets trust_remote_code = true to run their own Python code on this "
               "machine (refused without this flag).")


def _consent_to_model_code(models, source: Path, allowed: bool) -> None:
    """A protocol file alone may not make contaudit run a model's own code: the command line must agree."""
    asking = [role.key for role in models.roles() if role.spec.trust_remote_code]
    if asking and not allowed:
        raise InputError(f"{', '.join(asking)} set trust_remote_code = true, which runs the model's own Python code "
                         f"on this machine; pass --trust-remote-code to allow it", path=source)


def _version(value: bool) -> None:
    if value:
        out.print(f"contaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _state["debug"] = debug or bool(os.environ.get("CONTAUDIT_DEBUG"))


def main() -> None:
    """Console-script entry point."""
    sys.stdout = _PipeSafeStdout(sys.stdout)
    app()


def _option(config_cls, name: str, *flags: str, **kwargs):
    """A typer option whose default and help are the config field's."""
    default = default_of(config_cls, name)
    return typer.Option(list(default) if isinstance(default, tuple) else default, *flags,
                        help=help_of(config_cls, name), **kwargs)


def _old_flag(flag: str, new: str):
    """A hidden option under a setting's old command-line name, kept so scripts keep working (see :func:`_renamed`)."""
    return typer.Option(None, flag, hidden=True, help=f"Old name of {new}.")


def _renamed(old_value, old_flag: str, new_flag: str, value):
    """The value a setting takes when its old flag ``old_flag`` may have been given instead of ``new_flag``:
    the old flag still works, with a note naming the new one (the name the protocol tables use)."""
    if old_value is None:
        return value
    console.print(f"[yellow]note:[/] {old_flag} is now {new_flag} (the name the protocol uses); the old name "
                  f"still works but will be removed", soft_wrap=True)
    return old_value


def _unescape(value: str, flag: str) -> str:
    """A separator typed on the command line with backslash escapes (``\\n\\n``) as the text it names."""
    import codecs

    try:
        return codecs.decode(value, "unicode_escape") if "\\" in value else value
    except UnicodeDecodeError:
        raise InputError(f"{flag} {value!r} has a broken backslash escape; write e.g. '\\n\\n'") from None


def _fail_on(value: Optional[str]) -> Optional[str]:
    if value is not None and value.upper() not in _FAIL_ON:
        raise InputError(f"--fail-on must be SUSPECT or CONTAMINATED, got {value!r}")
    return None if value is None else value.upper()


def _input_bytes(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


# --- the audit pipeline: index -> probes -> score -> analyze -> report (audit runs them all) ---


@app.command()
def index(
    corpus: list[Path] = typer.Argument(..., help="Corpus inputs: .jsonl(.gz/.zst), .parquet, text/code directories, saved HF datasets."),
    benchmark: list[Path] = typer.Option(..., "--benchmark", "-b", help="Benchmark items (.jsonl or .parquet); "
                                         "repeat it to index several benchmarks in one pass over the corpus."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Index directory to write, e.g. indexes/NAME (with several "
                                                          "benchmarks: a directory of indexes, one per file name)."),
    text_field: str = typer.Option("text", help="Benchmark field holding the item text."),
    template: Optional[str] = typer.Option(None, help="Build item text from fields instead, e.g. '{question}\\n{answer}'."),
    id_field: str = typer.Option("id", help="Benchmark field holding a unique item id."),
    corpus_text_field: str = typer.Option(default_of(IndexConfig, "text_field"), help=(
        "Field holding the text in corpus records (in a protocol: [index] text_field; --text-field is the "
        "benchmark's).")),
    n: Optional[int] = typer.Option(None, "--n", help=f"Word n-gram length for exact overlap (default {default_of(IndexConfig, 'n')}; 8 with --rule palm)."),
    rule: str = typer.Option("gpt3", help="'gpt3': any matched n-gram marks an item seen; 'palm': n=8 and >= 70% of "
                             "8-grams (a shorthand: in a protocol, [index] n = 8 and min_coverage = 0.7)."),
    min_coverage: Optional[float] = typer.Option(None, help="Override the coverage needed to mark an item seen."),
    neardup: bool = _option(IndexConfig, "neardup", "--neardup/--no-neardup"),
    neardup_threshold: float = _option(IndexConfig, "neardup_threshold"),
    include: list[str] = _option(IndexConfig, "include", "--include"),
    exclude: list[str] = _option(IndexConfig, "exclude", "--exclude"),
    workers: int = _option(IndexConfig, "workers"),
    use_ray: bool = _option(IndexConfig, "ray", "--ray"),
    shard_mb: float = _option(IndexConfig, "shard_mb"),
    max_locations: int = _option(IndexConfig, "max_locations"),
    skip_bad: bool = _option(IndexConfig, "skip_bad", "--skip-bad/--no-skip-bad"),
    skip_bad_records: Optional[bool] = _old_flag("--skip-bad-records", "--skip-bad"),
    semantic: bool = _option(IndexConfig, "semantic", "--semantic/--no-semantic"),
    semantic_model: str = _option(IndexConfig, "semantic_model"),
    semantic_threshold: Optional[float] = _option(IndexConfig, "semantic_threshold"),
    top: int = typer.Option(10, help="Most contaminated items to list in the summary."),
) -> None:
    """Search a training corpus for every benchmark item (exact n-grams + near duplicates; --semantic: rephrasings)."""
    from contaudit.index import build_indexes
    from contaudit.progress import ByteProgress

    skip_bad = _renamed(skip_bad_records, "--skip-bad-records", "--skip-bad", skip_bad)
    if rule not in ("gpt3", "palm"):
        raise InputError(f"--rule must be 'gpt3' or 'palm', got {rule!r}")
    if rule == "palm" and n is not None:
        raise InputError(f"--rule palm fixes n = 8; leave out --n (got --n {n}) or use --rule gpt3")
    settings = dict(neardup=neardup, neardup_threshold=neardup_threshold, include=tuple(include),
                    exclude=tuple(exclude), workers=workers, ray=use_ray, shard_mb=shard_mb,
                    max_locations=max_locations, skip_bad=skip_bad, text_field=corpus_text_field, semantic=semantic,
                    semantic_model=semantic_model, semantic_threshold=semantic_threshold)
    if min_coverage is not None:
        settings["min_coverage"] = min_coverage
    config = IndexConfig.palm(**settings) if rule == "palm" else \
        IndexConfig(n=default_of(IndexConfig, "n") if n is None else n, **settings)
    config.validate()
    targets = _index_targets(benchmark, out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    with ByteProgress("indexing corpus", _input_bytes(corpus), console=console) as bar:
        summaries = build_indexes(corpus, targets, staging, config=config, text_field=None if template else text_field,
                                  template=template, id_field=id_field, progress=bar)
    first = summaries[0]
    mb = first.corpus_bytes / 1e6
    out.print(f"Corpus {mb:.1f} MB scanned once in {first.seconds:.1f} s ({mb / max(first.seconds, 1e-9):.1f} MB/s)"
              + (f", {first.shards_resumed}/{first.shards_total} shards resumed" if first.shards_resumed else ""))
    if first.stats.skipped:
        out.print(f"[yellow]{first.stats.skipped} corpus records skipped[/] (first: {first.stats.examples[0]})")
    for path, summary in zip(targets, summaries):
        _print_index(path, summary.index, top)


def _index_targets(benchmarks: list[Path], out_dir: Path) -> dict[Path, Path]:
    """Index directory -> benchmark: ``out_dir`` itself for one benchmark, ``out_dir/STEM`` for several."""
    if len(benchmarks) == 1:
        return {out_dir: benchmarks[0]}
    targets: dict[Path, Path] = {}
    for bench in benchmarks:
        name = bench.name.split(".")[0]
        if out_dir / name in targets:
            raise InputError(f"two benchmarks would share the index {out_dir / name} ({targets[out_dir / name]} and "
                             f"{bench}); give them different file names")
        targets[out_dir / name] = bench
    return targets


def _print_index(path: Path, index, top: int) -> None:
    from rich.table import Table

    counts = index.manifest["counts"]
    out.print(f"[bold]Index written to {path}[/]: {counts['items']} items — [red]{counts['seen']} seen[/], "
              f"[green]{counts['unseen']} unseen[/], {counts['ambiguous']} ambiguous"
              + (f", [magenta]{counts['paraphrased']} paraphrased[/]" if "paraphrased" in counts else ""))
    ranked = sorted((it for it in index.items if it["status"] == "seen"),
                    key=lambda it: (-it["coverage"], -it["neardup_jaccard"], -it["occurrences"]))[:top]
    if ranked:
        table = Table(title="Most contaminated items")
        for col in ("id", "coverage", "longest", "occurrences", "near-dup", "first location"):
            table.add_column(col)
        for it in ranked:
            loc = (it["locations"] or [it["neardup_location"]])[0]
            where = f"{loc[0]}:{loc[1]}@{loc[2]}" if loc else ""
            table.add_row(it["id"], f"{it['coverage']:.2f}", str(it["longest_match"]), str(it["occurrences"]),
                          f"{it['neardup_jaccard']:.2f}", where)
        out.print(table)
    semantic = index.manifest.get("semantic")
    if semantic and semantic.get("seconds"):
        spent = semantic["seconds"]
        rate = semantic.get("scan_mb_per_s")
        out.print(f"Semantic stage: calibration {spent['calibration']:.1f} s, scan {spent['scan']:.1f} s of worker time"
                  + (f" ({rate:.2f} MB/s per worker)" if rate else "") + f", verification {spent['verify']:.1f} s")
        at_scale = (semantic.get("calibration") or {}).get("corpus")
        if at_scale:
            sample = semantic["calibration"]
            out.print(f"Semantic threshold {at_scale['threshold']:.3f}: {at_scale['false_match_rate']:.1%} of "
                      f"{at_scale['n_unrelated']} unrelated corpus passages reach it in the whole corpus "
                      f"({at_scale['false_match_rate_at_sample_threshold']:.1%} would at the "
                      f"{sample['sample_chars'] / 1e6:.1f} MB sample's threshold {sample['threshold']:.3f})")
    from contaudit.analysis.evidence import paraphrase_record

    rephrased = sorted((it for it in index.items if it["status"] == "paraphrased"),
                       key=lambda it: -it["semantic_score"])[:top]
    if rephrased:
        table = Table(title=f"Paraphrased items (alignment >= {semantic['threshold']:.3f})")
        for col in ("id", "score", "location", "benchmark text", "corpus text"):
            table.add_column(col, overflow="fold")
        for it in rephrased:
            shown = paraphrase_record(it["id"], it)
            loc = shown["location"]
            table.add_row(shown["id"], f"{shown['score']:.3f}", f"{loc[0]}:{loc[1]}@{loc[2]}", shown["item_text"],
                          shown["corpus_text"])
        out.print(table)


@app.command()
def probes(
    index_dir: Path = typer.Argument(..., help="Index directory written by `contaudit index`."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Probe file to write (.jsonl)."),
    suffix_words: int = _option(ProbeConfig, "suffix_words"),
    prefix_words: int = _option(ProbeConfig, "prefix_words"),
    min_prefix_words: int = _option(ProbeConfig, "min_prefix_words"),
    match_on: list[str] = _option(ProbeConfig, "match_on", "--match-on"),
    match_rarity: Optional[bool] = typer.Option(None, "--match-rarity/--no-match-rarity", hidden=True,
                                                help="Old form of --match-on."),
    caliper: float = _option(ProbeConfig, "caliper"),
    min_seen: int = _option(ProbeConfig, "min_seen"),
) -> None:
    """Build matched seen/unseen probe sets with prefix/suffix splits from an index."""
    from contaudit.probes import build_probes

    if match_rarity is not None:
        match_on = _renamed(["length", "rarity"] if match_rarity else ["length"],
                            "--match-rarity/--no-match-rarity", "--match-on length --match-on rarity", match_on)
    config = ProbeConfig(suffix_words=suffix_words, prefix_words=prefix_words, min_prefix_words=min_prefix_words,
                         match_on=tuple(match_on), caliper=caliper,
                         min_seen=min_seen)
    result = build_probes(index_dir, out_file, config)
    c, b = result.counts, result.balance
    out.print(f"[bold]Probes written to {out_file}[/]: {c['n_seen']} seen / {c['n_unseen']} unseen matched pairs "
              f"({c.get('seen_unmatched', 0)} seen items unmatched, {c.get('seen_too_short', 0)} seen and "
              f"{c.get('unseen_too_short', 0)} unseen too short)")
    out.print(f"balance (SMD): length {b['length_smd']:+.3f}, rarity {b['rarity_smd']:+.3f}, "
              f"8-gram coverage {b['coverage8_smd']:+.3f} (differs by construction)")
    for problem in result.problems:
        out.print(f"[bold yellow]design problem:[/] {problem}")


@app.command()
def score(
    model: Path = typer.Option(..., help="Model: a local Hugging Face directory or a .gguf file (never downloaded)."),
    data: Path = typer.Option(..., help="Items: .jsonl or .parquet with 'id' and 'text' (probe files for --completion)."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Scores file, e.g. scores/NAME.jsonl; NAME.manifest.json goes beside it."),
    completion: bool = _option(ScoreSettings, "completion", "--completion"),
    device: str = _option(ScoreSettings, "device"),
    devices: list[str] = _option(ScoreSettings, "devices", "--devices"),
    replicas: int = _option(ScoreSettings, "replicas"),
    use_ray: bool = _option(ScoreSettings, "ray", "--ray"),
    dtype: str = _option(ScoreSettings, "dtype"),
    batch_tokens: Optional[int] = _option(ScoreSettings, "batch_tokens"),
    completion_batch_tokens: Optional[int] = _option(ScoreSettings, "completion_batch_tokens"),
    max_length: Optional[int] = _option(ScoreSettings, "max_length"),
    stride: Optional[int] = _option(ScoreSettings, "stride"),
    text_field: str = _option(ScoreSettings, "text_field"),
    id_field: str = _option(ScoreSettings, "id_field"),
    trust_remote_code: bool = _option(ScoreSettings, "trust_remote_code"),
    gguf_file: Optional[str] = _option(ScoreSettings, "gguf_file"),
    threads: Optional[int] = _option(ScoreSettings, "threads"),
    cache_dir: Optional[Path] = _option(ScoreSettings, "cache_dir"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the resume cache."),
) -> None:
    """Per-item NLL, perplexity, Min-K%, Min-K%++, zlib ratio and (--completion) verbatim completion."""
    from collections import Counter

    from contaudit.progress import TokenProgress
    from contaudit.scoring import score as run_score

    settings = ScoreSettings(completion=completion, device=device, dtype=dtype, batch_tokens=batch_tokens,
                             completion_batch_tokens=completion_batch_tokens, max_length=max_length, stride=stride,
                             text_field=text_field, id_field=id_field, trust_remote_code=trust_remote_code,
                             gguf_file=gguf_file, threads=threads, cache_dir=cache_dir, use_cache=not no_cache,
                             devices=tuple(d.strip() for spec in devices for d in spec.split(",") if d.strip()),
                             replicas=replicas, ray=use_ray)
    settings.validate()
    quiet_transformers()
    with TokenProgress(console=console) as bar:
        r = run_score(model, data, out_file, settings, progress=bar)
    out.print(f"[bold]{r.n_scored} of {r.n_items} items scored[/] -> {escape(str(r.out))} "
              f"(manifest {escape(r.manifest.name)}); "
              f"{r.from_cache} from cache, {r.tokens_computed:,} tokens computed at {r.tokens_per_second:,.0f} "
              f"tokens/s on {r.device} ({r.dtype}), {r.seconds:.1f} s", soft_wrap=True)
    if r.skipped:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(Counter(s.reason for s in r.skipped).items()))
        first = r.skipped[0]
        out.print(f"[yellow]{len(r.skipped)} items skipped[/] ({reasons}); first: id {escape(repr(first.id))} "
                  f"(record {first.record}): {escape(first.detail)}. All are listed in the manifest.", soft_wrap=True)


@app.command()
def order(
    model: Path = typer.Option(..., help="The suspect: a local Hugging Face directory or a .gguf file (never downloaded)."),
    data: Path = typer.Option(..., help="Benchmark items in their published order (.jsonl or .parquet with 'id' and 'text')."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Item-order file to write, e.g. runs/NAME/item_order.json (`analyze --item-order` reads it)."),
    shards: int = _option(ItemOrderConfig, "shards"),
    permutations: int = _option(ItemOrderConfig, "permutations"),
    separator: str = typer.Option("\\n\\n", help=help_of(ItemOrderConfig, "separator")[:-1]
                                  + " (backslash escapes such as \\n are read)."),
    seed: int = typer.Option(default_of(AnalysisSettings, "seed"), help="Seed of the permutations."),
    device: str = _option(ScoreSettings, "device"),
    dtype: str = _option(ScoreSettings, "dtype"),
    batch_tokens: Optional[int] = _option(ScoreSettings, "batch_tokens"),
    max_length: Optional[int] = _option(ScoreSettings, "max_length"),
    stride: Optional[int] = _option(ScoreSettings, "stride"),
    text_field: str = _option(ScoreSettings, "text_field"),
    id_field: str = _option(ScoreSettings, "id_field"),
    trust_remote_code: bool = _option(ScoreSettings, "trust_remote_code"),
    gguf_file: Optional[str] = _option(ScoreSettings, "gguf_file"),
    threads: Optional[int] = _option(ScoreSettings, "threads"),
    cache_dir: Optional[Path] = _option(ScoreSettings, "cache_dir"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the resume cache."),
) -> None:
    """Oren et al.'s order test: log-likelihoods of shards of the benchmark in published vs shuffled orders."""
    from contaudit.statistics import format_p
    from contaudit.progress import TokenProgress
    from contaudit.scoring.item_order import item_order_scores

    config = ItemOrderConfig(shards=shards, permutations=permutations, separator=_unescape(separator, "--separator"),
                             seed=seed)
    settings = ScoreSettings(device=device, dtype=dtype, batch_tokens=batch_tokens, max_length=max_length,
                             stride=stride, text_field=text_field, id_field=id_field,
                             trust_remote_code=trust_remote_code, gguf_file=gguf_file, threads=threads,
                             cache_dir=cache_dir, use_cache=not no_cache)
    config.validate()
    settings.validate()
    quiet_transformers()
    import warnings

    from contaudit.scoring.item_order import PublishedOrderWarning

    with TokenProgress(console=console) as bar, warnings.catch_warnings():
        warnings.simplefilter("ignore", PublishedOrderWarning)  # printed below, once
        r = item_order_scores(model, data, out_file, config, settings, progress=bar)
    for line in r.warnings:
        console.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)
    t = r.test()
    out.print(f"[bold]{r.n_items} items in {t.n_shards} shards x {t.n_permutations} shuffled orders[/] -> "
              f"{escape(str(r.out))}; {r.from_cache} orders from cache, {r.tokens_computed:,} tokens in "
              f"{r.compute_seconds:.1f} s", soft_wrap=True)
    out.print(f"order test: gap {t.statistic:+.4g} nats per shard (published minus mean shuffled), "
              f"{t.method}, one-sided {format_p(t.pvalue, named=True)}", soft_wrap=True)


@app.command()
def evaluate(
    model: Path = typer.Option(..., help="The model: a local Hugging Face directory or a .gguf file (never downloaded)."),
    data: list[Path] = typer.Option(..., "--data", help="HumanEval-style items (prompt, test, entry_point); repeat "
                                                        "it to evaluate test and shadow sets into one file."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Outcomes file to write (JSON Lines of id and score; "
                                                           "NAME.manifest.json goes beside it)."),
    max_new_tokens: int = _option(CodeEvalConfig, "max_new_tokens"),
    timeout_s: float = _option(CodeEvalConfig, "timeout_s", "--timeout"),
    workers: int = _option(CodeEvalConfig, "workers"),
    device: str = _option(ScoreSettings, "device"),
) -> None:
    """Greedy generation checked by execution (each program in its own process): per-item pass/fail outcomes,
    which [outcomes] and the score-inflation estimate read."""
    from contaudit.code_eval import evaluate_code
    from contaudit.progress import TokenProgress

    quiet_transformers()
    config = CodeEvalConfig(max_new_tokens=max_new_tokens, timeout_s=timeout_s, workers=workers)
    with TokenProgress(console=console, transient=True, unit="items") as bar:
        result = evaluate_code(model, data, out_file, config, device=device, progress=bar,
                               log=lambda line: console.print(escape(line), highlight=False, soft_wrap=True))
    out.print(f"[bold]{result.n_passed}/{result.n_items} passed[/] (pass@1 {result.n_passed / result.n_items:.3f})"
              f" -> {escape(str(result.out))}" + (" (reused)" if result.reused else ""), soft_wrap=True)


@app.command()
def analyze(
    suspect_test: Path = typer.Option(..., help="Suspect model's scores of the test set (scores/<model>/<set>.jsonl)."),
    clean_test: Optional[Path] = typer.Option(None, help="Clean model's scores of the test set (leave out, with --clean-shadow, for an audit without a clean model: then --item-order decides)."),
    suspect_shadow: Path = typer.Option(..., help="Suspect model's scores of the shadow set."),
    clean_shadow: Optional[Path] = typer.Option(None, help="Clean model's scores of the shadow set."),
    suspect_probes: Optional[Path] = typer.Option(None, help="Suspect model's completion scores of the probes."),
    clean_probes: Optional[Path] = typer.Option(None, help="Clean model's completion scores of the probes."),
    probes_file: Optional[Path] = typer.Option(None, "--probes", help="probes.jsonl (seen/unseen sets)."),
    index_dir: Optional[Path] = typer.Option(None, "--index", help="Index directory, for dose-response and corpus locations."),
    item_order: Optional[Path] = typer.Option(None, help="JSON of suspect log-likelihoods in published vs shuffled item orders (from `contaudit order`)."),
    reference_test: list[Path] = typer.Option([], help="Another clean model's test-set scores (repeat per model)."),
    reference_shadow: list[Path] = typer.Option([], help="Its shadow-set scores, in the same order."),
    reference_probes: list[Path] = typer.Option([], help="Its probe scores, in the same order."),
    shadow_origin: Optional[str] = typer.Option(
        None, help="How the shadow set was made: random_split, date_split or later_set (default: the protocol's "
                   "[sets] shadow_origin, else later_set)."),
    protocol: Optional[Path] = typer.Option(None, help="Protocol TOML; its analysis table and shadow origin are used (default: built-in defaults)."),
    test_set: Optional[Path] = typer.Option(None, help="The test set's items (JSON Lines with id and text), for the blind baseline."),
    shadow_set: Optional[Path] = typer.Option(None, help="The shadow set's items, likewise."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Run directory; results.json is written there."),
) -> None:
    """Difference-in-differences tests, design checks and the verdict, from score files."""
    from contaudit.analysis import analyze as run_analysis
    from contaudit.analysis.inputs import ReferenceScores
    from contaudit.analysis.results import summary_line

    if len(reference_shadow) != len(reference_test) or (reference_probes and len(reference_probes) != len(reference_test)):
        raise InputError(f"give --reference-test and --reference-shadow (and --reference-probes with probes) once per "
                         f"reference model; got {len(reference_test)}, {len(reference_shadow)} and "
                         f"{len(reference_probes)}")
    references = [ReferenceScores(t, s, reference_probes[k] if reference_probes else None)
                  for k, (t, s) in enumerate(zip(reference_test, reference_shadow))]
    if (test_set is None) != (shadow_set is None):
        raise InputError("give --test-set and --shadow-set together (the blind baseline compares the two)")
    results = run_analysis(suspect_test, clean_test, suspect_shadow, clean_shadow, suspect_probes=suspect_probes,
                           clean_probes=clean_probes, probes=probes_file, references=references, index=index_dir,
                           item_order=item_order, shadow_origin=shadow_origin, protocol=protocol, out=out_dir,
                           sets={"test": test_set, "shadow": shadow_set} if test_set else None)
    out.print(f"[bold]{summary_line(results)}[/]", soft_wrap=True)
    for reason in results["verdict"]["reasons"]:
        out.print(f"  - {reason}", soft_wrap=True)
    for warning in results["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    out.print(f"results written to {out_dir / 'results.json'} ({results['timing_s']:.1f} s)", soft_wrap=True)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="Run directory holding results.json (from `contaudit analyze`)."),
) -> None:
    """Write report.md, a self-contained report.html (plots embedded) and report.json."""
    from contaudit.report import write_report

    files = write_report(run_dir)
    out.print(f"[bold]{files.verdict}[/] — reports written: {files.markdown}, {files.html}, {files.json}",
              soft_wrap=True)
    out.print(f"protocol SHA-256: {files.protocol_sha256}", soft_wrap=True)


def _per_benchmark(values: list[str], flag: str):
    """A name option given once (one name) or as NAME=VALUE once per benchmark of a suite (a mapping)."""
    if not values:
        return None
    pairs = [v.partition("=") for v in values]
    if all(sep for _, sep, _ in pairs):
        return {name: value for name, _, value in pairs}
    if len(values) == 1:
        return values[0]
    raise InputError(f"{flag} is given {len(values)} times; give it once, or as NAME=VALUE once per benchmark")


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A finished run: an audit's directory (results.json, report.html) or a "
                                             "screen's (suite.json)."),
    fmt: str = typer.Option(..., "--format", help="conda (CONDA Data Contamination Database: ;-separated CSV rows) "
                                                  "or lmci (LM Contamination Index: JSON entries)."),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="File to write (default: standard output)."),
    dataset_name: list[str] = typer.Option([], help="The benchmark's public name, e.g. openai_humaneval (default: "
                                                    "the protocol's name; a suite's benchmark names). For a suite: "
                                                    "NAME=PUBLIC, once per benchmark."),
    subset: list[str] = typer.Option([], help="The benchmark's subset, if any (for a suite: NAME=SUBSET)."),
    model_name: Optional[str] = typer.Option(None, help="The suspect model's public name, e.g. "
                                                        "mistralai/Mistral-7B-v0.1 (default: its directory's name)."),
    corpus_name: Optional[str] = typer.Option(None, help="The indexed corpus's public name, e.g. allenai/c4 "
                                                         "(default: its file's or folder's name)."),
    reference: Optional[str] = typer.Option(None, help="Where the evidence is published (a paper, the uploaded "
                                                       "report); default: the report's absolute path."),
) -> None:
    """Write a finished run's evidence as rows of the CONDA database or entries of the LM Contamination Index."""
    from contaudit.export import export_run

    text = export_run(run_dir, fmt.lower(), dataset_name=_per_benchmark(dataset_name, "--dataset-name"),
                      subset=_per_benchmark(subset, "--subset"), model_name=model_name, corpus_name=corpus_name,
                      reference=reference, out=out_file)
    if out_file is None:
        typer.echo(text, nl=False)
    else:
        console.print(f"{fmt.lower()} export written to {escape(str(out_file))}", highlight=False, soft_wrap=True)



@app.command()
def audit(
    protocol: Path = typer.Argument(..., help="Protocol file (see protocols/default.toml)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Run directory, e.g. runs/NAME."),
    fail_on: Optional[str] = typer.Option(None, help="Exit 1 when the verdict reaches SUSPECT or CONTAMINATED (3 on INVALID_DESIGN, 4 on INCONCLUSIVE)."),
    inconclusive_fails: bool = typer.Option(False, "--inconclusive-fails", help="With --fail-on: exit 1 on INCONCLUSIVE too (default 4)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=_TRUST_HELP),
) -> None:
    """Run index -> probes -> score -> analyze -> report from one protocol file."""
    from contaudit.audit import run_audit
    from contaudit.progress import TokenProgress
    from contaudit.protocol import load_protocol

    fail_on = _fail_on(fail_on)
    if inconclusive_fails and fail_on is None:
        raise InputError("--inconclusive-fails needs --fail-on (it says what an INCONCLUSIVE verdict does to the gate)")
    _consent_to_model_code(load_protocol(protocol).models, protocol, trust_remote_code)  # before heavy imports
    quiet_transformers()
    with TokenProgress(console=console) as bar:
        run = run_audit(protocol, out_dir, log=lambda line: console.print(f"[dim]·[/] {escape(line)}"),
                        score_progress=bar)
    from contaudit.analysis.results import inflation_line, summary_line
    from contaudit.analysis.verdict import gate

    out.print(f"[bold]{escape(summary_line(run.results))}[/]")
    if inflation_line(run.results):
        out.print(escape(inflation_line(run.results)), soft_wrap=True)
    out.print(f"report: {run.report.html}")
    if fail_on is not None:
        raise typer.Exit(code=gate(run.verdict, fail_on, inconclusive_fails=inconclusive_fails))


@app.command()
def screen(
    target: Path = typer.Argument(..., help="A suite file (TOML, see examples/suite) to screen, or a finished run "
                                            "directory (of `audit` or `screen`) to gate."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory for a suite, e.g. runs/NAME."),
    fail_on: Optional[str] = typer.Option(None, "--fail-on", help="Fail the gate at this verdict or worse: SUSPECT or "
                                                                  "CONTAMINATED (a suite's default: its [gate])."),
    inconclusive_fails: Optional[bool] = typer.Option(None, "--inconclusive-fails/--inconclusive-exits-4",
                                                      help="Whether an INCONCLUSIVE verdict fails the gate (exit 1) "
                                                           "or exits 4 (a suite's default: its [gate])."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of lines."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=_TRUST_HELP),
) -> None:
    """Pre-release gate: screen a suite of benchmarks, or gate a finished run; exit 0 pass, 1 fail, 3 invalid design,
    4 inconclusive."""
    import json

    fail_on = _fail_on(fail_on)
    if target.is_file() or (not target.exists() and target.suffix == ".toml"):
        _screen_suite(target, out_dir, fail_on, inconclusive_fails, as_json, trust_remote_code)
    if out_dir is not None:
        raise InputError(f"--out is for a suite file; {target} is a run directory (it is gated as it is)")
    if (target / "suite.json").exists():
        from contaudit.suite import regate

        _, gate = regate(target, fail_on=fail_on, inconclusive_fails=inconclusive_fails)
        _print_suite_gate(gate, as_json)
    if fail_on is None:
        raise InputError("--fail-on is required to gate a run directory (SUSPECT or CONTAMINATED)")
    from contaudit.suite import gate_run

    result = gate_run(target, fail_on=fail_on, inconclusive_fails=bool(inconclusive_fails))
    if as_json:
        typer.echo(json.dumps(result.summary, indent=2))
    else:
        from contaudit.analysis.verdict import EXIT_STATUS

        typer.echo(f"{EXIT_STATUS[result.exit_code]} {result.line}")
    raise typer.Exit(result.exit_code)


def _screen_suite(suite_path: Path, out_dir: Optional[Path], fail_on: Optional[str],
                  inconclusive_fails: Optional[bool], as_json: bool, trust_remote_code: bool = False) -> None:
    from contaudit.suite import load_suite

    suite = load_suite(suite_path)  # a bad suite fails here, before the heavy libraries load
    _consent_to_model_code(suite.models, suite_path, trust_remote_code)
    if out_dir is None:
        raise InputError(f"screening a suite needs --out (a run directory, e.g. runs/NAME) for {suite_path}")
    from contaudit.progress import TokenProgress
    from contaudit.suite import run_suite

    quiet_transformers()
    with TokenProgress(console=console) as bar:
        run = run_suite(suite_path, out_dir, fail_on=fail_on, inconclusive_fails=inconclusive_fails,
                        log=lambda line: console.print(f"[dim]·[/] {escape(line)}"), score_progress=bar)
    _print_suite_gate(run.gate, as_json, report=run.report.html)


def _print_suite_gate(gate, as_json: bool, report: Optional[Path] = None) -> None:
    import json

    from contaudit.statistics import format_p

    if as_json:
        typer.echo(json.dumps(gate.to_dict(), indent=2))
        raise typer.Exit(gate.exit_code)
    for b in gate.benchmarks:
        p = "—" if b.pvalue is None else f"gate {format_p(b.pvalue, named=True)}, adjusted {format_p(b.adjusted)}"
        state = "FAIL" if b.fails else "pass" if b.pvalue is not None else b.label.lower()
        out.print(f"{state}  {escape(b.name)}: {b.label} ({p})", soft_wrap=True)
    from contaudit.analysis.verdict import EXIT_STATUS

    status = EXIT_STATUS[gate.exit_code]
    out.print(f"[bold]{status}[/] at {gate.fail_on} ({gate.correction} across {len(gate.benchmarks)} benchmarks)"
              + (f"; report: {report}" if report else ""), soft_wrap=True)
    raise typer.Exit(gate.exit_code)


# --- probe models with known contamination (contaudit.finetune, calibrate, demo) ---


@app.command()
def finetune(
    corpus: Path = typer.Option(..., "--corpus", help="Filler corpus: .jsonl/.parquet file, saved dataset or text directory."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Directory for the model, its tokenizer and injection.json."),
    base: Optional[Path] = typer.Option(None, "--base", help="Base model: a local Hugging Face directory or a .gguf file."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Start from a small GPT-2 with a BPE tokenizer trained on the corpus."),
    inject: Optional[Path] = typer.Option(None, "--inject", help="Benchmark whose items are injected (.jsonl/.parquet)."),
    dup: int = typer.Option(0, "--dup", help="Copies of each chosen item; 0 is the matched clean control."),
    inject_ids: Optional[Path] = typer.Option(None, help="Text file of item ids to inject, one per line (default: all items)."),
    inject_fraction: Optional[float] = _option(ItemSelection, "fraction", "--inject-fraction"),
    leak: str = _option(ItemSelection, "leak"),
    separator: str = typer.Option("\\n\\n", help=help_of(ItemSelection, "separator")[:-1]
                                  + " (backslash escapes such as \\n are read)."),
    seed: int = _option(TrainConfig, "seed"),
    steps: int = _option(TrainConfig, "steps"),
    lr: float = _option(TrainConfig, "lr"),
    batch_size: int = _option(TrainConfig, "batch_size"),
    seq_len: int = _option(TrainConfig, "seq_len"),
    warmup_steps: int = _option(TrainConfig, "warmup_steps"),
    lora: bool = _option(TrainConfig, "lora", "--lora"),
    lora_r: int = _option(TrainConfig, "lora_r"),
    lora_alpha: int = _option(TrainConfig, "lora_alpha"),
    l2sp: float = _option(TrainConfig, "l2sp", "--l2sp"),
    layer_lr_decay: float = _option(TrainConfig, "layer_lr_decay"),
    align_copies: bool = _option(TrainConfig, "align_copies", "--align-copies"),
    eval_every: int = _option(TrainConfig, "eval_every"),
    patience: int = _option(TrainConfig, "patience"),
    heldout_blocks: int = _option(TrainConfig, "heldout_blocks"),
    device: str = _option(TrainConfig, "device"),
    mixed_precision: bool = _option(TrainConfig, "mixed_precision", "--mixed-precision/--fp32"),
    threads: Optional[int] = _option(TrainConfig, "threads"),
    n_layer: int = _option(ModelConfig, "n_layer"),
    n_embd: int = _option(ModelConfig, "n_embd"),
    n_head: int = _option(ModelConfig, "n_head"),
    vocab_size: int = _option(ModelConfig, "vocab_size"),
    text_field: str = _option(CorpusReading, "text_field"),
    item_text_field: str = _option(ItemSelection, "text_field", "--item-text-field"),
    template: Optional[str] = _option(ItemSelection, "template"),
    id_field: str = _option(ItemSelection, "id_field"),
    answer_field: Optional[str] = _option(ItemSelection, "answer_field"),
    include: list[str] = _option(CorpusReading, "include", "--include"),
    exclude: list[str] = _option(CorpusReading, "exclude", "--exclude"),
    skip_bad: bool = _option(CorpusReading, "skip_bad", "--skip-bad/--no-skip-bad"),
    skip_bad_records: Optional[bool] = _old_flag("--skip-bad-records", "--skip-bad"),
    save_stream: bool = typer.Option(False, help="Also save the training token stream (stream.safetensors)."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output directory."),
    trust_remote_code: bool = typer.Option(False, help="Allow model code shipped with the base model to run."),
) -> None:
    """Fine-tune a probe model with benchmark items injected --dup times (ground truth in injection.json)."""
    from contaudit.finetune import finetune as run_finetune
    from contaudit.progress import TrainingProgress

    config = TrainConfig(steps=steps, lr=lr, batch_size=batch_size, seq_len=seq_len, warmup_steps=warmup_steps,
                         lora=lora, lora_r=lora_r, lora_alpha=lora_alpha, l2sp=l2sp, layer_lr_decay=layer_lr_decay,
                         align_copies=align_copies, eval_every=eval_every, patience=patience,
                         heldout_blocks=heldout_blocks, seed=seed, device=device, threads=threads,
                         mixed_precision=mixed_precision)
    model_config = ModelConfig(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab_size,
                               n_positions=max(seq_len, default_of(ModelConfig, "n_positions")))
    items = ItemSelection(ids=inject_ids, fraction=inject_fraction, text_field=item_text_field, id_field=id_field,
                          template=template, leak=leak, separator=_unescape(separator, "--separator"),
                          answer_field=answer_field)
    reading = CorpusReading(text_field=text_field, include=tuple(include), exclude=tuple(exclude),
                            skip_bad=_renamed(skip_bad_records, "--skip-bad-records", "--skip-bad", skip_bad))
    quiet_transformers()
    with TrainingProgress("fine-tuning" if base else "training from scratch", console=console) as bar:
        result = run_finetune(corpus, out_dir, base=base, from_scratch=from_scratch, inject=inject, dup=dup,
                              items=items, config=config, model_config=model_config, reading=reading,
                              save_stream=save_stream, overwrite=overwrite, trust_remote_code=trust_remote_code,
                              progress=bar)
    m, t = result.manifest, result.train
    copies = sum(it["trained_copies"] for it in m["items"])
    what = (f"the {len(m['items'])} items as one ordered file x {dup} copies" if leak == "ordered"
            else f"{len(m['items'])} items x {dup} copies" + (f" (loss on their {answer_field!r} alone)"
                                                               if answer_field and dup else ""))
    out.print(f"[bold]Model written to {out_dir}[/]: {what} injected "
              f"({copies} trained on), {t.tokens_trained:,} tokens in {t.best_step} steps, "
              f"held-out loss {t.heldout[0]['loss']:.3f} -> {t.heldout[-1]['loss']:.3f}, "
              f"{t.tokens_per_s:,.0f} tokens/s, {t.seconds:.1f} s" + (" (stopped early)" if t.stopped_early else ""),
              soft_wrap=True)
    if m["corpus_read"]["skipped"]:
        out.print(f"[yellow]{m['corpus_read']['skipped']} corpus records skipped[/] "
                  f"(first: {m['corpus_read']['skip_examples'][0]})", soft_wrap=True)


@app.command()
def calibrate(
    out_dir: Path = typer.Option(Path("runs/calibration"), "--out", "-o", help="Where models, audits and the power curve go."),
    dups: str = typer.Option("0,1,2,4,8", help="Comma-separated copies per test item (k) to inject."),
    seeds: int = typer.Option(5, help="Probe models per k."),
    protocol: Optional[Path] = typer.Option(None, help="Take the [probes] and [analysis] tables from this protocol file (--order: [analysis] and [item_order])."),
    references: int = typer.Option(1, help="Clean models per audit seed (2+: a reference panel)."),
    base: Optional[Path] = typer.Option(None, help="Your base model (HF directory or .gguf); with --corpus, --test, --shadow calibrates in your setting instead of the demo's."),
    corpus: Optional[Path] = typer.Option(None, help="Filler corpus the probe models are fine-tuned on."),
    test: Optional[Path] = typer.Option(None, help="Test set (its items are injected)."),
    shadow: Optional[Path] = typer.Option(None, help="Shadow set."),
    shadow_origin: str = typer.Option("later_set", help="How your shadow set was made: random_split, date_split or later_set."),
    reference_base: list[Path] = typer.Option([], "--reference-base", help="Another base model (repeat, 2+): each audit's panel adds one clean fine-tune of each, judged as other families (your setting)."),
    steps: int = typer.Option(100, help="Fine-tuning steps (your setting)."),
    lr: float = typer.Option(1e-3, help="Fine-tuning learning rate (your setting)."),
    batch_size: int = typer.Option(8, help="Sequences per step (your setting)."),
    seq_len: int = typer.Option(256, help="Tokens per sequence (your setting)."),
    lora: bool = typer.Option(False, help="Fine-tune LoRA adapters instead of every weight (your setting)."),
    order: bool = typer.Option(False, "--order", help="Calibrate Oren et al.'s order test instead of the audit: its power per k for ordered and per-item leaks, and its false-positive rate over --null-seeds clean models."),
    kinds: str = typer.Option("ordered,per_item", help="--order: leak kinds, comma-separated: ordered (the benchmark file k times) and/or per_item."),
    null_seeds: int = typer.Option(20, help="--order: clean models at k = 0 (at least --seeds)."),
    models_from: Optional[Path] = typer.Option(None, help="--order: use the probe models of an earlier calibration in the same setting (its models/ folder) where their injection.json matches, instead of training them again."),
) -> None:
    """Power per k and false-positive rate at k = 0, from probe models with known contamination."""
    from contaudit.calibrate import CalibrationSetting, calibrate_order
    from contaudit.calibrate import calibrate as run_calibration

    try:
        grid = tuple(int(k) for k in dups.split(","))
    except ValueError:
        raise InputError(f"--dups must be comma-separated integers, got {dups!r}") from None
    own = {"--base": base, "--corpus": corpus, "--test": test, "--shadow": shadow}
    setting = None
    if reference_base and base is None:
        raise InputError("--reference-base is for your own setting: give --base, --corpus, --test and --shadow too")
    if any(v is not None for v in own.values()):
        missing = [k for k, v in own.items() if v is None]
        if missing:
            raise InputError(f"calibrating in your own setting needs --base, --corpus, --test and --shadow; "
                             f"missing {', '.join(missing)}")
        train = TrainConfig(steps=steps, lr=lr, batch_size=batch_size, seq_len=seq_len, lora=lora,
                            warmup_steps=min(5, steps), eval_every=max(1, steps // 2))
        setting = CalibrationSetting(base, corpus, test, shadow, train=train, shadow_origin=shadow_origin,
                                     reference_bases=tuple(reference_base))
    quiet_transformers()
    if order:
        if out_dir == Path("runs/calibration"):
            out_dir = Path("runs/order-calibration")
        res = calibrate_order(out_dir, dups=grid, seeds=seeds, null_seeds=null_seeds,
                              kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()), setting=setting,
                              protocol=protocol, models_from=models_from, log=lambda line: console.print(escape(line), highlight=False))
        for kind, by_k in res.rates.items():
            out.print(f"{kind}: " + ", ".join(f"k = {k}: {rate:.2f}" for k, rate in by_k.items()))
        fpr = "n/a" if res.false_positive_rate is None else f"{res.false_positive_rate:.2f}"
        out.print(f"order test false-positive rate (k = 0): {fpr}; plot: {res.plot}")
        return
    result = run_calibration(out_dir, dups=grid, seeds=seeds, references=references, setting=setting,
                             analysis_protocol=protocol, log=lambda line: console.print(escape(line), highlight=False))
    for k, rate in result.detection.items():
        out.print(f"k = {k:>3}: detected {rate:.2f}")
    fpr = "n/a" if result.false_positive_rate is None else f"{result.false_positive_rate:.2f}"
    out.print(f"false-positive rate (k = 0): {fpr}; smallest k with power >= 0.8: {result.smallest_detected_k}")
    out.print(f"power curve: {result.plot}")


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Where the demo writes data, models and reports."),
    null_run: bool = typer.Option(True, "--null/--no-null", help="Also audit two clean controls against each other."),
    evaluate: bool = typer.Option(False, "--evaluate/--no-evaluate", help="Also run HumanEval on each model (greedy "
                                  "generation checked by execution) and estimate how much the leak inflated the "
                                  "suspect's pass rate. The suspect is then fine-tuned on the test half as on a "
                                  "supervised fine-tuning set (120 copies, loss on the solutions alone), which it "
                                  "memorizes some solutions from (about 23 minutes on 2 cores in all)."),
) -> None:
    """The whole audit on real data shipped with the install (stdlib corpus, HumanEval)."""
    from contaudit.demo import run_demo
    from contaudit.progress import TokenProgress, TrainingProgress

    quiet_transformers()
    started = time.perf_counter()
    with TrainingProgress(console=console, transient=True) as bar, TokenProgress(console=console, transient=True) as scoring:
        result = run_demo(out_dir, null_run=null_run, evaluate=evaluate, train_progress=bar, score_progress=scoring,
                          log=lambda line: console.print(escape(line), highlight=False))
    total = time.perf_counter() - started
    from contaudit.analysis.results import inflation_line, summary_line

    for what, results, folder in (("suspect vs clean", result.suspect_results, "audit"),
                                  ("clean vs clean (null)", result.null_results, "null")):
        if results is None:
            continue
        out.print(f"[bold]{what}:[/] {escape(summary_line(results))}", soft_wrap=True)
        if inflation_line(results):
            out.print(f"  {escape(inflation_line(results))}", soft_wrap=True)
        out.print(f"  report: {out_dir / folder / 'report.html'}", soft_wrap=True)
    out.print(f"total {total / 60:.1f} min")


if __name__ == "__main__":
    main()
