"""The ``contaudit`` command line: a thin typer layer over the library.

Each command parses its options, calls one library function, and renders the result
with rich. Library errors (:class:`contaudit.errors.ContauditError`) become a one-line
message and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.markup import escape

from contaudit import __version__
from contaudit.errors import ContauditError

class _Group(TyperGroup):
    """Turns library errors into a one-line ``Error: ...`` and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ContauditError as e:
            if _state["debug"]:
                raise
            console.print(f"[bold red]Error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit language models for benchmark contamination.")
console = Console(stderr=True)
out = Console()
_state = {"debug": False}


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
    app()


# --- commands: each stage adds its command(s) below this line ---


def _progress():
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=console, transient=True)


def _input_bytes(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


@app.command()
def index(
    corpus: list[Path] = typer.Argument(..., help="Corpus inputs: .jsonl(.gz/.zst), .parquet, text/code directories, saved HF datasets."),
    benchmark: Path = typer.Option(..., "--benchmark", "-b", help="Benchmark items (.jsonl or .parquet)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Index directory to write, e.g. indexes/NAME."),
    text_field: str = typer.Option("text", help="Benchmark field holding the item text."),
    template: Optional[str] = typer.Option(None, help="Build item text from fields instead, e.g. '{question}\\n{answer}'."),
    id_field: str = typer.Option("id", help="Benchmark field holding a unique item id."),
    corpus_text_field: str = typer.Option("text", help="Field holding the text in corpus records."),
    n: int = typer.Option(13, "--n", help="Word n-gram length for exact overlap."),
    rule: str = typer.Option("gpt3", help="'gpt3': any matched n-gram marks an item seen; 'palm': n=8 and >= 70% of 8-grams."),
    min_coverage: Optional[float] = typer.Option(None, help="Override the coverage needed to mark an item seen."),
    neardup: bool = typer.Option(True, "--neardup/--no-neardup", help="Search near duplicates with MinHash LSH."),
    neardup_threshold: float = typer.Option(0.8, help="Verified Jaccard at which a near duplicate marks an item seen."),
    include: list[str] = typer.Option([], "--include", help="Glob of files to read in corpus directories (repeatable)."),
    exclude: list[str] = typer.Option([], "--exclude", help="Glob of files to skip in corpus directories (repeatable)."),
    workers: int = typer.Option(1, help="Worker processes."),
    shard_mb: float = typer.Option(64.0, help="Resume granularity: MB of corpus text per shard."),
    max_locations: int = typer.Option(5, help="Corpus locations recorded per item."),
    skip_bad_records: bool = typer.Option(False, help="Skip (and count) malformed records instead of stopping."),
    top: int = typer.Option(10, help="Most contaminated items to list in the summary."),
) -> None:
    """Search a training corpus for every benchmark item (exact n-grams + near duplicates)."""
    from rich.table import Table

    from contaudit.errors import InputError
    from contaudit.index import IndexConfig, build_index

    if rule not in ("gpt3", "palm"):
        raise InputError(f"--rule must be 'gpt3' or 'palm', got {rule!r}")
    settings = dict(neardup=neardup, neardup_threshold=neardup_threshold, include=tuple(include),
                    exclude=tuple(exclude), workers=workers, shard_mb=shard_mb, max_locations=max_locations,
                    skip_bad=skip_bad_records, text_field=corpus_text_field)
    config = IndexConfig.palm(**settings) if rule == "palm" else IndexConfig(n=n, **settings)
    if min_coverage is not None:
        config = IndexConfig(**{**config.__dict__, "min_coverage": min_coverage})
    with _progress() as bar:
        task = bar.add_task("indexing corpus", total=_input_bytes(corpus) or None)
        summary = build_index(corpus, benchmark, out_dir, config=config, text_field=None if template else text_field,
                              template=template, id_field=id_field, progress=lambda b: bar.advance(task, b))
    counts = summary.index.manifest["counts"]
    mb = summary.corpus_bytes / 1e6
    out.print(f"[bold]Index written to {out_dir}[/]: {counts['items']} items — [red]{counts['seen']} seen[/], "
              f"[green]{counts['unseen']} unseen[/], {counts['ambiguous']} ambiguous; corpus {mb:.1f} MB in "
              f"{summary.seconds:.1f} s ({mb / max(summary.seconds, 1e-9):.1f} MB/s)"
              + (f", {summary.shards_resumed}/{summary.shards_total} shards resumed" if summary.shards_resumed else ""))
    if summary.stats.skipped:
        out.print(f"[yellow]{summary.stats.skipped} corpus records skipped[/] (first: {summary.stats.examples[0]})")
    ranked = sorted((it for it in summary.index.items if it["status"] == "seen"),
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


@app.command()
def probes(
    index_dir: Path = typer.Argument(..., help="Index directory written by `contaudit index`."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Probe file to write (.jsonl)."),
    suffix_words: int = typer.Option(32, help="Words in the completion target (the item's end)."),
    prefix_words: int = typer.Option(128, help="At most this many words of prompt before the suffix."),
    min_prefix_words: int = typer.Option(16, help="Exclude items with fewer prefix words."),
    match_rarity: bool = typer.Option(False, help="Also match seen and unseen items on word rarity."),
    caliper: float = typer.Option(0.5, help="Maximum pair distance in pooled standard deviations."),
    min_seen: int = typer.Option(10, help="Fewest matched pairs that can support a test."),
) -> None:
    """Build matched seen/unseen probe sets with prefix/suffix splits from an index."""
    from contaudit.probes import ProbeConfig, build_probes

    config = ProbeConfig(suffix_words=suffix_words, prefix_words=prefix_words, min_prefix_words=min_prefix_words,
                         match_on=("length", "rarity") if match_rarity else ("length",), caliper=caliper,
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
