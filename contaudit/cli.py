"""The ``contaudit`` command line: a thin typer layer over the library.

Each command parses its options, calls one library function, and renders the result
with rich. Library errors (:class:`contaudit.errors.ContauditError`) become a one-line
message and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import time
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


# --- analysis, reports and the release gate (contaudit.analysis, contaudit.report) ---

_FAIL_ON = ("SUSPECT", "CONTAMINATED")


@app.command()
def analyze(
    suspect_test: Path = typer.Option(..., help="Suspect model's scores of the test set (scores/<model>/<set>.jsonl)."),
    clean_test: Path = typer.Option(..., help="Clean model's scores of the test set."),
    suspect_shadow: Path = typer.Option(..., help="Suspect model's scores of the shadow set."),
    clean_shadow: Path = typer.Option(..., help="Clean model's scores of the shadow set."),
    suspect_probes: Optional[Path] = typer.Option(None, help="Suspect model's completion scores of the probes."),
    clean_probes: Optional[Path] = typer.Option(None, help="Clean model's completion scores of the probes."),
    probes_file: Optional[Path] = typer.Option(None, "--probes", help="probes.jsonl (seen/unseen sets)."),
    index_dir: Optional[Path] = typer.Option(None, "--index", help="Index directory, for dose-response and corpus locations."),
    item_order: Optional[Path] = typer.Option(None, help="JSON of suspect log-likelihoods in published vs shuffled item orders."),
    reference_test: list[Path] = typer.Option([], help="Another clean model's test-set scores (repeat per model)."),
    reference_shadow: list[Path] = typer.Option([], help="Its shadow-set scores, in the same order."),
    reference_probes: list[Path] = typer.Option([], help="Its probe scores, in the same order."),
    shadow_origin: Optional[str] = typer.Option(
        None, help="How the shadow set was made: random_split, date_split or later_set (default: the protocol's "
                   "[sets] shadow_origin, else later_set)."),
    protocol: Optional[Path] = typer.Option(None, help="Protocol TOML; its analysis table and shadow origin are used (default: built-in defaults)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Run directory; results.json is written there."),
) -> None:
    """Difference-in-differences tests, design checks and the verdict, from score files."""
    from contaudit.analysis import analyze as run_analysis
    from contaudit.analysis.analyze import ReferenceScores
    from contaudit.analysis.results import summary_line
    from contaudit.errors import InputError

    if len(reference_shadow) != len(reference_test) or (reference_probes and len(reference_probes) != len(reference_test)):
        raise InputError(f"give --reference-test and --reference-shadow (and --reference-probes with probes) once per "
                         f"reference model; got {len(reference_test)}, {len(reference_shadow)} and "
                         f"{len(reference_probes)}")
    references = [ReferenceScores(t, s, reference_probes[k] if reference_probes else None)
                  for k, (t, s) in enumerate(zip(reference_test, reference_shadow))]
    results = run_analysis(suspect_test, clean_test, suspect_shadow, clean_shadow, suspect_probes=suspect_probes,
                           clean_probes=clean_probes, probes=probes_file, references=references, index=index_dir,
                           item_order=item_order, shadow_origin=shadow_origin, protocol=protocol, out=out_dir)
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


@app.command()
def screen(
    run_dir: Path = typer.Argument(..., help="Run directory holding results.json."),
    fail_on: str = typer.Option(..., "--fail-on", help="Fail the gate at this verdict or worse: SUSPECT or CONTAMINATED."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of one line."),
) -> None:
    """Pre-release gate: exit 0 pass, 1 verdict at or above --fail-on, 3 INVALID_DESIGN."""
    import json

    from contaudit.analysis import screen as run_screen
    from contaudit.errors import InputError

    if fail_on.upper() not in _FAIL_ON:
        raise InputError(f"--fail-on must be SUSPECT or CONTAMINATED, got {fail_on!r}")
    result = run_screen(run_dir, fail_on=fail_on.upper())
    if as_json:
        typer.echo(json.dumps(result.summary, indent=2))
    else:
        status = {0: "PASS", 1: "FAIL", 3: "INVALID"}[result.exit_code]
        typer.echo(f"{status} {result.line}")
    raise typer.Exit(result.exit_code)


# --- probe models with injected contamination (contaudit.finetune) ---

from contaudit.finetune.config import ModelConfig as _ModelConfig, TrainConfig as _TrainConfig  # noqa: E402

_T, _M = _TrainConfig(), _ModelConfig()


@app.command()
def finetune(
    corpus: Path = typer.Option(..., "--corpus", help="Filler corpus: .jsonl/.parquet file, saved dataset or text directory."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Directory for the model, its tokenizer and injection.json."),
    base: Optional[Path] = typer.Option(None, "--base", help="Base model: a local Hugging Face directory or a .gguf file."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Start from a small GPT-2 with a BPE tokenizer trained on the corpus."),
    inject: Optional[Path] = typer.Option(None, "--inject", help="Benchmark whose items are injected (.jsonl/.parquet)."),
    dup: int = typer.Option(0, "--dup", help="Copies of each chosen item; 0 is the matched clean control."),
    inject_ids: Optional[Path] = typer.Option(None, help="Text file of item ids to inject, one per line (default: all items)."),
    inject_fraction: Optional[float] = typer.Option(None, help="Inject this random fraction of the items (seeded by --seed)."),
    seed: int = typer.Option(_T.seed, help="Seed of the item choice, filler order, copy positions and training."),
    steps: int = typer.Option(_T.steps, help="Optimizer steps; the run trains on steps x batch-size x seq-len tokens."),
    lr: float = typer.Option(_T.lr, help="Peak learning rate (warm-up, then cosine decay)."),
    batch_size: int = typer.Option(_T.batch_size, help="Sequences per step."),
    seq_len: int = typer.Option(_T.seq_len, help="Tokens per sequence."),
    warmup_steps: int = typer.Option(_T.warmup_steps, help="Linear warm-up steps."),
    lora: bool = typer.Option(_T.lora, "--lora", help="Train LoRA adapters (peft) and merge them into the saved model."),
    lora_r: int = typer.Option(_T.lora_r, help="LoRA rank."),
    lora_alpha: int = typer.Option(_T.lora_alpha, help="LoRA alpha."),
    l2sp: float = typer.Option(_T.l2sp, "--l2sp", help="L2-SP lambda: adds lambda/2 * ||w - w_base||^2 to the loss."),
    layer_lr_decay: float = typer.Option(_T.layer_lr_decay, help="Layer-wise lr decay alpha: layer i of L gets lr * alpha^(L-i)."),
    align_copies: bool = typer.Option(_T.align_copies, "--align-copies", help="Start every injected copy at a training sequence's first token."),
    eval_every: int = typer.Option(_T.eval_every, help="Steps between held-out filler evaluations."),
    patience: int = typer.Option(_T.patience, help="Early stopping: evaluations without improvement before stopping (0: off)."),
    heldout_blocks: int = typer.Option(_T.heldout_blocks, help="Sequences of filler held out for evaluation."),
    device: str = typer.Option(_T.device, help="'auto', 'cpu' or 'cuda[:N]'."),
    mixed_precision: bool = typer.Option(_T.mixed_precision, "--mixed-precision/--fp32", help="bf16 autocast on CUDA and on CPUs with native bf16 (fp16 on older GPUs); --fp32 turns it off."),
    threads: Optional[int] = typer.Option(_T.threads, help="CPU threads for torch (default: torch's choice)."),
    n_layer: int = typer.Option(_M.n_layer, help="--from-scratch: transformer layers."),
    n_embd: int = typer.Option(_M.n_embd, help="--from-scratch: hidden size."),
    n_head: int = typer.Option(_M.n_head, help="--from-scratch: attention heads."),
    vocab_size: int = typer.Option(_M.vocab_size, help="--from-scratch: BPE vocabulary size."),
    text_field: str = typer.Option("text", help="Field holding the text in corpus records."),
    item_text_field: str = typer.Option("text", help="Benchmark field holding the item text."),
    template: Optional[str] = typer.Option(None, help="Build item text from fields instead, e.g. '{prompt}{canonical_solution}'."),
    id_field: str = typer.Option("id", help="Benchmark field holding a unique item id."),
    include: list[str] = typer.Option([], "--include", help="Glob of files to read in a corpus directory (repeatable)."),
    exclude: list[str] = typer.Option([], "--exclude", help="Glob of files to skip in a corpus directory (repeatable)."),
    skip_bad_records: bool = typer.Option(False, help="Skip (and count) malformed records instead of stopping."),
    save_stream: bool = typer.Option(False, help="Also save the training token stream (stream.safetensors)."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output directory."),
    trust_remote_code: bool = typer.Option(False, help="Allow model code shipped with the base model to run."),
) -> None:
    """Fine-tune a probe model with benchmark items injected --dup times (ground truth in injection.json)."""
    from contaudit.finetune import RichProgress, finetune as run_finetune

    config = _TrainConfig(steps=steps, lr=lr, batch_size=batch_size, seq_len=seq_len, warmup_steps=warmup_steps,
                          lora=lora, lora_r=lora_r, lora_alpha=lora_alpha, l2sp=l2sp, layer_lr_decay=layer_lr_decay,
                          align_copies=align_copies, eval_every=eval_every, patience=patience, heldout_blocks=heldout_blocks, seed=seed,
                          device=device, threads=threads, mixed_precision=mixed_precision)
    model_config = _ModelConfig(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab_size,
                                n_positions=max(seq_len, _M.n_positions))
    with RichProgress("fine-tuning" if base else "training from scratch", console=console) as bar:
        result = run_finetune(corpus, out_dir, base=base, from_scratch=from_scratch, inject=inject, dup=dup,
                              inject_ids=inject_ids, inject_fraction=inject_fraction, config=config,
                              model_config=model_config, text_field=text_field, item_text_field=item_text_field,
                              id_field=id_field, template=template, include=include or None,
                              exclude=exclude or None, skip_bad=skip_bad_records, save_stream=save_stream,
                              overwrite=overwrite, trust_remote_code=trust_remote_code, progress=bar)
    m, t = result.manifest, result.train
    copies = sum(it["trained_copies"] for it in m["items"])
    out.print(f"[bold]Model written to {out_dir}[/]: {len(m['items'])} items x {dup} copies injected "
              f"({copies} trained on), {t.tokens_trained:,} tokens in {t.best_step} steps, "
              f"held-out loss {t.heldout[0]['loss']:.3f} -> {t.heldout[-1]['loss']:.3f}, "
              f"{t.tokens_per_s:,.0f} tokens/s, {t.seconds:.1f} s" + (" (stopped early)" if t.stopped_early else ""),
          soft_wrap=True)
    if m["corpus_read"]["skipped"]:
        out.print(f"[yellow]{m['corpus_read']['skipped']} corpus records skipped[/] "
                  f"(first: {m['corpus_read']['skip_examples'][0]})", soft_wrap=True)


# --- scoring engine (contaudit.scoring) ---


@app.command()
def score(
    model: Path = typer.Option(..., help="Model: a local Hugging Face directory or a .gguf file (never downloaded)."),
    data: Path = typer.Option(..., help="Items: .jsonl or .parquet with 'id' and 'text' (probe files for --completion)."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Scores file, e.g. scores/NAME.jsonl; NAME.manifest.json goes beside it."),
    completion: bool = typer.Option(False, "--completion", help="Also greedy-complete each 'prefix' and compare with 'suffix'."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    dtype: str = typer.Option("auto", help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16 or float16."),
    batch_tokens: Optional[int] = typer.Option(None, help="Padded tokens per likelihood batch (default: 256 on CPU, 16384 on GPU)."),
    completion_batch_tokens: Optional[int] = typer.Option(None, help="Padded prompt+generated tokens per completion batch (default: 2048 on CPU, 16384 on GPU)."),
    max_length: Optional[int] = typer.Option(None, help="Tokens per window (default: the model's context length)."),
    stride: Optional[int] = typer.Option(None, help="New tokens scored per later window (default: max-length / 2)."),
    text_field: str = typer.Option("text", help="Field holding the item text."),
    id_field: str = typer.Option("id", help="Field holding a unique item id."),
    trust_remote_code: bool = typer.Option(False, help="Allow model code shipped with the model to run."),
    gguf_file: Optional[str] = typer.Option(None, help="GGUF file name inside a --model directory."),
    threads: Optional[int] = typer.Option(None, help="CPU workers, one thread each (default: one per core)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Resume cache (default: .contaudit-cache beside --out)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the resume cache."),
) -> None:
    """Per-item NLL, perplexity, Min-K%, Min-K%++, zlib ratio and (--completion) verbatim completion."""
    from collections import Counter

    from contaudit.scoring import score as run_score
    from contaudit.scoring.progress import RichProgress

    with RichProgress(console=console) as bar:
        r = run_score(model, data, out_file, completion=completion, device=device, dtype=dtype,
                      batch_tokens=batch_tokens, completion_batch_tokens=completion_batch_tokens,
                      max_length=max_length, stride=stride, text_field=text_field, id_field=id_field,
                      trust_remote_code=trust_remote_code, gguf_file=gguf_file, threads=threads,
                      cache_dir=cache_dir, use_cache=not no_cache, progress=bar)
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
def audit(
    protocol: Path = typer.Argument(..., help="Protocol file (see protocols/default.toml)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Run directory, e.g. runs/NAME."),
    fail_on: Optional[str] = typer.Option(None, help="Exit 1 when the verdict reaches SUSPECT or CONTAMINATED (3 on INVALID_DESIGN)."),
) -> None:
    """Run index -> probes -> score -> analyze -> report from one protocol file."""
    from contaudit.analysis.results import gate, summary_line
    from contaudit.audit import run_audit
    from contaudit.errors import InputError

    if fail_on is not None and fail_on not in ("SUSPECT", "CONTAMINATED"):
        raise InputError(f"--fail-on must be SUSPECT or CONTAMINATED, got {fail_on!r}")
    run = run_audit(protocol, out_dir, log=lambda line: console.print(f"[dim]·[/] {escape(line)}"))
    out.print(f"[bold]{escape(summary_line(run.results))}[/]")
    out.print(f"report: {run.report.html}")
    if fail_on is not None:
        raise typer.Exit(code=gate(run.verdict, fail_on))


def _quiet_transformers() -> None:
    """Hide transformers' per-file progress bars and advisory warnings under our own progress output."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Where the demo writes data, models and reports."),
    null_run: bool = typer.Option(True, "--null/--no-null", help="Also audit two clean controls against each other."),
) -> None:
    """The whole audit on real data shipped with the install (stdlib corpus, HumanEval)."""
    from contaudit.demo import run_demo

    _quiet_transformers()

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    started = time.perf_counter()
    bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                   TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(), console=console, transient=True)
    task = {"id": None, "step": 0}

    def on_step(info) -> None:  # one bar per training run; a run restarts the step count
        if task["id"] is None or info.step < task["step"]:
            if task["id"] is not None:
                bar.remove_task(task["id"])
            task["id"] = bar.add_task("training", total=info.steps, loss="-", tps="-")
        task["step"] = info.step
        bar.update(task["id"], completed=info.step, loss=f"{info.loss:.3f}", tps=f"{info.tokens_per_s:,.0f}")

    with bar:
        result = run_demo(out_dir, null_run=null_run, train_progress=on_step,
                          log=lambda line: console.print(escape(line), highlight=False))
    total = time.perf_counter() - started
    out.print(f"[bold]suspect vs clean:[/] {result.suspect_verdict}   ({out_dir / 'audit' / 'report.html'})")
    if result.null_verdict is not None:
        out.print(f"[bold]clean vs clean (null):[/] {result.null_verdict}   ({out_dir / 'null' / 'report.html'})")
    out.print(f"total {total / 60:.1f} min")


@app.command()
def calibrate(
    out_dir: Path = typer.Option(Path("runs/calibration"), "--out", "-o", help="Where models, audits and the power curve go."),
    dups: str = typer.Option("0,1,2,4,8", help="Comma-separated copies per test item (k) to inject."),
    seeds: int = typer.Option(5, help="Probe models per k."),
    protocol: Optional[Path] = typer.Option(None, help="Take the \\[probes] and \\[analysis] tables from this protocol file."),
    references: int = typer.Option(1, help="Clean models per audit seed (2+: a reference panel)."),
    base: Optional[Path] = typer.Option(None, help="Your base model (HF directory or .gguf); with --corpus, --test, --shadow calibrates in your setting instead of the demo's."),
    corpus: Optional[Path] = typer.Option(None, help="Filler corpus the probe models are fine-tuned on."),
    test: Optional[Path] = typer.Option(None, help="Test set (its items are injected)."),
    shadow: Optional[Path] = typer.Option(None, help="Shadow set."),
    shadow_origin: str = typer.Option("later_set", help="How your shadow set was made: random_split, date_split or later_set."),
    steps: int = typer.Option(100, help="Fine-tuning steps (your setting)."),
    lr: float = typer.Option(1e-3, help="Fine-tuning learning rate (your setting)."),
    batch_size: int = typer.Option(8, help="Sequences per step (your setting)."),
    seq_len: int = typer.Option(256, help="Tokens per sequence (your setting)."),
    lora: bool = typer.Option(False, help="Fine-tune LoRA adapters instead of every weight (your setting)."),
) -> None:
    """Power per k and false-positive rate at k = 0, from probe models with known contamination."""
    from contaudit.calibrate import CalibrationSetting
    from contaudit.calibrate import calibrate as run_calibration

    _quiet_transformers()
    from contaudit.errors import InputError

    try:
        grid = tuple(int(k) for k in dups.split(","))
    except ValueError:
        raise InputError(f"--dups must be comma-separated integers, got {dups!r}") from None
    own = {"--base": base, "--corpus": corpus, "--test": test, "--shadow": shadow}
    setting = None
    if any(v is not None for v in own.values()):
        missing = [k for k, v in own.items() if v is None]
        if missing:
            raise InputError(f"calibrating in your own setting needs --base, --corpus, --test and --shadow; "
                             f"missing {', '.join(missing)}")
        from contaudit.finetune import TrainConfig

        train = TrainConfig(steps=steps, lr=lr, batch_size=batch_size, seq_len=seq_len, lora=lora,
                            warmup_steps=min(5, steps), eval_every=max(1, steps // 2))
        setting = CalibrationSetting(base, corpus, test, shadow, train=train, shadow_origin=shadow_origin)
    result = run_calibration(out_dir, dups=grid, seeds=seeds, references=references, setting=setting,
                             analysis_protocol=protocol, log=lambda line: console.print(escape(line), highlight=False))
    for k, rate in result.detection.items():
        out.print(f"k = {k:>3}: detected {rate:.2f}")
    fpr = "n/a" if result.false_positive_rate is None else f"{result.false_positive_rate:.2f}"
    out.print(f"false-positive rate (k = 0): {fpr}; smallest k with power >= 0.8: {result.smallest_detected_k}")
    out.print(f"power curve: {result.plot}")
