"""``finetune`` and ``pretrain``: read the inputs, build the stream, train, save.

The output directory holds the model (``model.safetensors`` + ``config.json``), its
tokenizer, and the ground truth: ``injection.json`` (fine-tuning) or
``pretrain.json`` (pretraining), a manifest that lists the injected items with their
copies and token positions, the stream's hash, the training settings and results,
the base model's fingerprint and the saved weights' fingerprint. When items were
injected, ``injected.jsonl`` holds one record per copy (``id``, ``item_id``,
``position``, ``text``): with the filler corpus it is the text the model trained on,
ready for ``contaudit index``. ``stream.safetensors`` (the token stream itself) is
written on request. The directory is
built beside its destination and renamed into place, so it is never half-written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contaudit import models as base_model
from contaudit.errors import InputError
from contaudit.finetune.config import CorpusReading, ItemSelection, ModelConfig, TrainConfig, config_dict
from contaudit.finetune.scratch import init_model, train_tokenizer
from contaudit.finetune.stream import (Stream, answer_loss_mask, build_filler, build_stream, encode_ordered_file,
                                       encode_texts, prompt_token_counts, read_corpus, read_id_list, select_items)
from contaudit.finetune.train import StepInfo, TrainResult, train
from contaudit.io import ReadStats, check_output_apart, load_items
from contaudit.manifest import (INJECTION_MANIFEST, PRETRAIN_MANIFEST, current_umask, describe_path, make_manifest,
                               replace_dir, write_json_atomic, write_jsonl_atomic)

INJECTION_FILE = INJECTION_MANIFEST
PRETRAIN_FILE = PRETRAIN_MANIFEST
STREAM_FILE = "stream.safetensors"
INJECTED_FILE = "injected.jsonl"


@dataclass
class FinetuneResult:
    """Where the model was written, the manifest written with it, and the training record."""

    out: Path
    manifest: dict
    train: TrainResult
    stream: Stream


@dataclass(frozen=True)
class TrainingJob:
    """One training run's inputs and settings, as :func:`finetune` and :func:`pretrain` pass them on."""

    stage: str  # "finetune" or "pretrain": which manifest is written
    corpus: Path
    out: Path
    base: Path | None = None
    inject: Path | None = None
    dup: int = 0
    items: ItemSelection = ItemSelection()
    config: TrainConfig = TrainConfig()
    model_config: ModelConfig = ModelConfig()
    reading: CorpusReading = CorpusReading()
    save_stream: bool = False
    overwrite: bool = False
    trust_remote_code: bool = False


def finetune(corpus: str | Path, out: str | Path, *, base: str | Path | None = None, from_scratch: bool = False,
             inject: str | Path | None = None, dup: int = 0, items: ItemSelection = ItemSelection(),
             config: TrainConfig = TrainConfig(), model_config: ModelConfig = ModelConfig(),
             reading: CorpusReading = CorpusReading(), save_stream: bool = False, overwrite: bool = False,
             trust_remote_code: bool = False, progress: Callable[[StepInfo], None] | None = None) -> FinetuneResult:
    """Train a probe model on ``corpus`` with benchmark items injected ``dup`` times.

    ``items.leak = "ordered"`` injects ``dup`` copies of the whole benchmark file instead
    (the chosen items joined with ``items.separator`` in published order).

    Start from ``base`` (a local HF model directory or ``.gguf`` file) or, with
    ``from_scratch``, from a fresh small GPT-2 (``model_config``) with a BPE tokenizer
    trained on the corpus. The items are read from ``inject`` (JSON Lines / Parquet);
    ``items`` chooses which are injected (named ids, a seeded fraction, or all) and how
    they are read; ``reading`` how the corpus is read. ``dup = 0`` is the matched clean
    control: same filler in the same order, same steps, same seed.

    Example::

        finetune("filler.jsonl", "models/suspect", base="models/base", inject="test.jsonl", dup=8,
                 config=TrainConfig(steps=100, lr=1e-3))
    """
    if inject is None and (items.ids is not None or items.fraction is not None):
        raise InputError("`items.ids` / `items.fraction` choose items from `inject`; give the benchmark file too")
    if inject is None and dup:
        raise InputError(f"`dup` is {dup} but no benchmark to inject was given (`inject`)")
    if (base is None) == (not from_scratch):
        raise InputError("give exactly one of a base model (`base`) and `from_scratch`")
    job = TrainingJob("finetune", Path(corpus), Path(out), base=None if base is None else Path(base),
                      inject=None if inject is None else Path(inject), dup=dup, items=items, config=config,
                      model_config=model_config, reading=reading, save_stream=save_stream, overwrite=overwrite,
                      trust_remote_code=trust_remote_code)
    return _run(job, progress)


def pretrain(corpus: str | Path, out: str | Path, *, config: TrainConfig = TrainConfig(),
             model_config: ModelConfig = ModelConfig(), reading: CorpusReading = CorpusReading(),
             overwrite: bool = False, progress: Callable[[StepInfo], None] | None = None) -> FinetuneResult:
    """Pretrain a small GPT-2 from scratch on ``corpus`` (tokenizer included); nothing is injected.

    Writes the model, tokenizer and ``pretrain.json`` to ``out``; use ``out`` as the
    ``base`` of :func:`finetune`.
    """
    job = TrainingJob("pretrain", Path(corpus), Path(out), config=config, model_config=model_config,
                      reading=reading, overwrite=overwrite)
    return _run(job, progress)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError("the output path exists and is not a directory", path=out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError("the output directory is not empty; choose another or pass --overwrite", path=out)


def _items_to_inject(inject: Path, choice: ItemSelection, *, seed: int, skip_bad: bool):
    """``(selected items, selection record, input descriptions)``."""
    choice.validate()
    items = load_items(inject, text_field=choice.text_field, template=choice.template,
                       id_field=choice.id_field, skip_bad=skip_bad)
    inject_ids, inject_fraction = choice.ids, choice.fraction
    inputs = [{"role": "benchmark", **describe_path(inject)}]
    selection = {"n_items": len(items)}
    if isinstance(inject_ids, (str, Path)):
        ids_source = Path(inject_ids)
        ids = read_id_list(ids_source)
        inputs.append({"role": "inject_ids", **describe_path(ids_source)})
        selection.update(method="ids", ids_file=str(ids_source))
    elif inject_ids is not None:
        ids, ids_source = list(inject_ids), None
        selection.update(method="ids")
    elif inject_fraction is not None:
        ids, ids_source = None, None
        selection.update(method="fraction", fraction=inject_fraction, seed=seed)
    else:
        ids, ids_source = None, None
        selection.update(method="all")
    chosen = select_items(items, ids=ids, fraction=inject_fraction, seed=seed, ids_source=ids_source)
    selection["n_selected"] = len(chosen)
    return chosen, selection, inputs


def _run(job: TrainingJob, progress) -> FinetuneResult:
    config, model_config, dup, reading, out = job.config, job.model_config, job.dup, job.reading, job.out
    from_scratch = job.base is None
    config.validate()
    if not isinstance(dup, int) or isinstance(dup, bool) or dup < 0:
        raise InputError(f"`dup` must be a non-negative integer, got {dup!r}.")
    if job.items.answer_field and not (dup and job.inject is not None):
        raise InputError("`answer_field` puts the loss on the injected answers alone, and nothing is injected "
                         "(`dup` 0): the matched clean control of such a run is the base model itself, or a run "
                         "without `answer_field`")
    if from_scratch and config.l2sp:
        raise InputError("`l2sp` pulls weights toward a base model; a from-scratch run has none")
    _check_out(out, job.overwrite)
    check_output_apart(out, [job.corpus], {"benchmark": job.inject, "base model": job.base})

    stats = ReadStats()
    docs = read_corpus(job.corpus, text_field=reading.text_field, include=list(reading.include) or None,
                       exclude=list(reading.exclude) or None, skip_bad=reading.skip_bad, stats=stats)
    inputs = [{"role": "corpus", **describe_path(job.corpus)}]
    chosen, selection = [], None
    if job.inject is not None:
        chosen, selection, item_inputs = _items_to_inject(job.inject, job.items, seed=config.seed,
                                                          skip_bad=reading.skip_bad)
        inputs += item_inputs

    if from_scratch:
        model_config.validate()
        if config.seq_len > model_config.n_positions:
            raise InputError(f"`seq_len` ({config.seq_len}) exceeds the model's `n_positions` "
                             f"({model_config.n_positions}).")
        order = np.random.default_rng([config.seed, 0]).permutation(len(docs))
        tokenizer = train_tokenizer((docs[i].text for i in order), model_config)
        model = init_model(model_config, tokenizer, seed=config.seed)
        base_record = {"kind": "from_scratch", "model_config": config_dict(model_config), "seed": config.seed}
    else:
        base = job.base
        model, tokenizer, kind = base_model.load_base(base, trust_remote_code=job.trust_remote_code)
        base_record = {"kind": kind, "path": str(base), "fingerprint": base_model.fingerprint(base)}
        inputs.append({"role": "base_model", "path": str(base), "sha256": base_record["fingerprint"]["id"]})
    eos = tokenizer.eos_token_id

    filler = build_filler([d.text for d in docs], tokenizer, eos=eos, seed=config.seed,
                          heldout_tokens=config.heldout_blocks * config.seq_len, train_tokens=config.tokens)
    item_tokens = list(zip([it.id for it in chosen], encode_texts(tokenizer, [it.text for it in chosen])))
    for item_id, ids in item_tokens:
        if len(ids) == 0:
            raise InputError(f"item {item_id!r} has no tokens (empty text)", path=job.inject)
    prompts = _prompt_tokens(chosen, job.items.answer_field, tokenizer, job.inject) if job.items.answer_field else None
    injected = item_tokens
    if job.items.leak == "ordered" and chosen:  # the benchmark as one file, in published order
        injected = encode_ordered_file(tokenizer, [(it.id, it.text) for it in chosen], job.items.separator)
    stream = build_stream(filler.train, injected, dup=dup, n_tokens=config.tokens, eos=eos, seed=config.seed,
                          align=config.seq_len if config.align_copies else 0)
    loss_mask = answer_loss_mask(stream, prompts) if prompts is not None else None

    result = train(model, stream.tokens, filler.heldout, config, progress=progress, loss_mask=loss_mask)

    out.parent.mkdir(parents=True, exist_ok=True)
    with _saving(out):
        return _save(out, result, tokenizer, stream, chosen, job, inputs, reading, base_record, stats, selection,
                     filler, config, eos, dup, prompts, loss_mask)


def _prompt_tokens(items, answer_field: str, tokenizer, source: Path) -> dict[str, int]:
    """Each item's count of prompt tokens (those before its answer, which carry no loss)."""
    answers = []
    for item in items:
        answer = item.fields.get(answer_field)
        if not isinstance(answer, str) or not answer.strip():
            raise InputError(f"item {item.id!r} has no text in its {answer_field!r} field (`answer_field`)",
                             path=source, record=item.record)
        if not item.text.endswith(answer):
            raise InputError(f"item {item.id!r}: its text does not end with its {answer_field!r} field; answer-only "
                             f"training needs the prompt followed by the answer (e.g. a template "
                             f"'{{prompt}}{{{answer_field}}}')", path=source, record=item.record)
        answers.append(answer)
    counts = prompt_token_counts(tokenizer, [it.text for it in items], answers)
    return {it.id: n for it, n in zip(items, counts)}


@contextlib.contextmanager
def _saving(out: Path):
    """Hold ``.NAME.lock`` beside ``out`` while a model is saved there, and first remove what a save killed
    midway left (``.NAME.*.tmp``, ``.NAME.old-*``: names only this function's saves use)."""
    import fcntl

    fd = os.open(out.parent / f".{out.name}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError("another contaudit run is saving a model here; wait for it or choose another out",
                             path=out) from None
        for left in [*out.parent.glob(f".{out.name}.*.tmp"), *out.parent.glob(f".{out.name}.old-*")]:
            if left.is_dir() and not left.is_symlink():
                shutil.rmtree(left, ignore_errors=True)
        yield
    finally:
        os.close(fd)


def _save(out, result, tokenizer, stream, chosen, job, inputs, reading, base_record, stats, selection, filler,
          config, eos, dup, prompts=None, loss_mask=None) -> "FinetuneResult":
    """Write the trained model, its tokenizer and manifest to ``out`` (atomically: a finished directory swapped in)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700 whatever the umask; the model is for sharing
    try:
        result.model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if stream.injected_tokens:
            write_jsonl_atomic(tmp / INJECTED_FILE, _copy_rows(chosen, stream))
        if job.save_stream:
            from safetensors.numpy import save_file

            save_file({"tokens": stream.tokens}, str(tmp / STREAM_FILE))
        manifest = make_manifest(
            job.stage, inputs=inputs,
            parameters={"dup": dup, "train": config_dict(config), "inject_fraction": job.items.fraction,
                        "text_field": reading.text_field, "item_text_field": job.items.text_field,
                        "id_field": job.items.id_field, "template": job.items.template, "leak": job.items.leak,
                        "separator": job.items.separator if job.items.leak == "ordered" else None,
                        "answer_field": job.items.answer_field,
                        "include": list(reading.include) or None, "exclude": list(reading.exclude) or None,
                        "skip_bad": reading.skip_bad},
            base=base_record,
            model={"fingerprint": dict(base_model.fingerprint(tmp), path=str(out.resolve())),  # its final place
                   "n_parameters": sum(p.numel() for p in result.model.parameters()),
                   "architecture": type(result.model).__name__, "vocab_size": len(tokenizer)},
            corpus_read=stats.as_dict(),
            dup=dup,
            selection=selection,
            items=[_item_record(inj, result.tokens_trained, prompts) for inj in stream.injections],
            stream=_stream_record(stream, filler, config, eos, job.save_stream, loss_mask),
            training=_training_record(result),
        )
        write_json_atomic(tmp / (INJECTION_FILE if job.stage == "finetune" else PRETRAIN_FILE), manifest)
        replace_dir(tmp, out, Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent)))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return FinetuneResult(out, manifest, result, stream)


def _copy_rows(items, stream: Stream):
    """One corpus record per injected copy, in stream order: what an index of the training data would hold."""
    text = {it.id: it.text for it in items}
    copies = sorted((p, inj.id) for inj in stream.injections for p in inj.positions)
    for n, (position, item_id) in enumerate(copies):
        yield {"id": f"injected-{n}", "item_id": item_id, "position": position, "text": text[item_id]}


def _item_record(inj, tokens_trained: int, prompts: dict[str, int] | None) -> dict:
    trained = sum(1 for p in inj.positions if p + inj.n_tokens <= tokens_trained)
    return {"id": inj.id, "n_tokens": inj.n_tokens, **({"prompt_tokens": prompts[inj.id]} if prompts else {}),
            "copies": len(inj.positions), "trained_copies": trained, "positions": list(inj.positions)}


def _stream_record(stream: Stream, filler, config: TrainConfig, eos: int, saved: bool,
                   loss_mask: np.ndarray | None) -> dict:
    return {"n_tokens": int(len(stream.tokens)), "sha256": stream.sha256, "filler_tokens": stream.filler_tokens,
            "injected_tokens": stream.injected_tokens, "filler_documents": filler.documents,
            "filler_documents_used": filler.documents_used,
            "filler_train_tokens": int(len(filler.train)), "heldout_tokens": int(len(filler.heldout)),
            "eos_token_id": int(eos), "seq_len": config.seq_len, "batch_size": config.batch_size,
            "tokens_per_step": config.batch_size * config.seq_len, "saved_as": STREAM_FILE if saved else None,
            "layout": "step s (1-based) trains on tokens [(s-1)*tokens_per_step, s*tokens_per_step); each copy is "
                      "eos + item tokens + eos and `positions` are the offsets of its first item token",
            **({"file_positions": list(stream.file_positions),
                "file_layout": "ordered leak: each copy is eos + the items joined by the separator in published "
                               "order, tokenized as one text + eos; `file_positions` are the offsets of its first "
                               "token and each item's `positions` where it occurs inside the copies"}
               if stream.file_positions else {}),
            **({"loss_tokens": int(loss_mask.sum()),
                "loss_layout": "answer-only: the loss is on each copy's item tokens after its first `prompt_tokens` "
                               "and on the eos that closes it; prompts and filler are context only"}
               if loss_mask is not None else {})}


def _training_record(result: TrainResult) -> dict:
    return {"steps_run": result.steps_run, "best_step": result.best_step, "tokens_trained": result.tokens_trained,
            "stopped_early": result.stopped_early, "seconds": round(result.seconds, 3),
            "tokens_per_s": round(result.tokens_per_s, 1), "precision": result.precision,
            "final_train_loss": result.final_loss,
            "heldout_loss": result.heldout}
