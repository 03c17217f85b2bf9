"""The training token stream: filler documents with benchmark items injected K times.

The stream is exactly what the model trains on, in order: step ``s`` reads the
``batch_size`` blocks of ``seq_len`` tokens that start at token
``s * batch_size * seq_len``. It is built deterministically from the seed:

1. Filler documents are tokenized, each followed by the end-of-text token, and
   concatenated in a seeded random order (lazily: only as many documents as the run
   needs). The first ``heldout_blocks * seq_len`` tokens are held out (for early
   stopping); the rest is the training filler, repeated in the same order when the
   run needs more tokens than the corpus holds.
2. Each chosen item is tokenized once; ``dup`` copies of it, each wrapped in
   end-of-text tokens, are spliced into the training filler at uniformly random token
   offsets, copies of all items in a random interleaving. With ``align_copies`` each
   copy instead starts a randomly chosen training sequence. An *ordered* leak (the way
   a benchmark leaks as a file, :class:`OrderedFile`) injects instead ``dup`` copies of
   the whole benchmark: its items joined with a separator in published order and
   tokenized as one text, each copy wrapped in end-of-text tokens like an item.
3. The filler is cut so that filler plus copies is exactly ``steps * batch_size *
   seq_len`` tokens. With ``dup = 0`` (the clean control) the stream is the same
   filler in the same order; the suspect's stream is that filler with the copies
   spliced in and its tail shortened by their length.

``Stream.injections`` records where every copy starts; :func:`find_occurrences`
re-reads a stream to check it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contaudit.errors import InputError
from contaudit.io import Document, Item, ReadStats, corpus_units, iter_corpus_documents

TOKEN_DTYPE = np.int32


def read_corpus(path: str | Path, *, text_field: str = "text", include: list[str] | None = None,
                exclude: list[str] | None = None, skip_bad: bool = False,
                stats: ReadStats | None = None) -> list[Document]:
    """All non-empty documents of a filler corpus, read exactly as ``contaudit index`` reads it
    (:func:`contaudit.io.corpus_units`): a JSON Lines / Parquet file or saved dataset (one document per
    record), a directory (``include`` / ``exclude`` globs; ``.jsonl`` / ``.parquet`` files in it read
    record by record, other files as one document each), or a single text file (one document).

    Empty documents are skipped and counted; a corpus with no document left is an error.
    """
    stats = stats if stats is not None else ReadStats()
    units = corpus_units([path], include=include, exclude=exclude)
    return list(iter_corpus_documents(units, text_field=text_field, skip_bad=skip_bad, stats=stats))


def read_id_list(path: str | Path) -> list[str]:
    """Item ids from a text file, one per line (blank lines and ``#`` comments ignored)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file; expected a text file with one item id per line", path=path)
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            ids.append(line)
    if not ids:
        raise InputError("no item ids found; expected one id per line", path=path)
    return ids


def select_items(items: Sequence[Item], *, ids: Sequence[str] | None = None, fraction: float | None = None,
                 seed: int = 0, ids_source: str | Path | None = None) -> list[Item]:
    """The items to inject: those named in ``ids``, a seeded random ``fraction``, or all.

    Unknown or repeated ids are errors. The result keeps the benchmark's order.
    """
    if ids is not None and fraction is not None:
        raise InputError("give either the ids to inject or `inject_fraction`, not both")
    if ids is not None:
        by_id = {it.id: it for it in items}
        seen = set()
        for n, item_id in enumerate(ids, start=1):
            if item_id not in by_id:
                raise InputError(f"item id {item_id!r} is not in the benchmark", path=ids_source, record=n)
            if item_id in seen:
                raise InputError(f"item id {item_id!r} is listed twice", path=ids_source, record=n)
            seen.add(item_id)
        return [it for it in items if it.id in seen]
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise InputError(f"`inject_fraction` must be in (0, 1], got {fraction}.")
        n = max(1, round(fraction * len(items)))
        chosen = set(np.random.default_rng(seed).permutation(len(items))[:n].tolist())
        return [it for i, it in enumerate(items) if i in chosen]
    return list(items)


def encode_texts(tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
    """Token ids of each text, without special tokens (batched, fast tokenizer when available)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        encodings = backend.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=TOKEN_DTYPE) for e in encodings]
    return [np.asarray(tokenizer.encode(t, add_special_tokens=False), dtype=TOKEN_DTYPE) for t in texts]


def prompt_token_counts(tokenizer, texts: Sequence[str], answers: Sequence[str]) -> list[int]:
    """How many leading tokens of each text (tokenized as :func:`encode_texts` does) are its prompt: the text
    before its answer, which must end it. The prompt's trailing whitespace counts to the answer, since a
    model asked the prompt writes it (code evaluation strips it from the prompt); a token that spans the
    prompt's end counts to the answer too."""
    cuts = []
    for text, answer in zip(texts, answers):
        if not text.endswith(answer):
            raise ValueError("each text must end with its answer")
        cuts.append(len(text[:len(text) - len(answer)].rstrip()))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        encodings = backend.encode_batch(list(texts), add_special_tokens=False)
        return [sum(1 for _, end in e.offsets if end <= cut) for e, cut in zip(encodings, cuts)]
    return [len(tokenizer.encode(text[:cut], add_special_tokens=False)) for text, cut in zip(texts, cuts)]


def answer_loss_mask(stream: "Stream", prompt_tokens: dict[str, int]) -> np.ndarray:
    """Which stream tokens the loss is on when the copies train on their answers alone: the answer tokens
    of every injected copy (its tokens after the first ``prompt_tokens[id]``) and the end-of-text token
    that closes it, so the model learns to stop after an answer, as in supervised fine-tuning; prompts
    and filler are context only."""
    mask = np.zeros(len(stream.tokens), dtype=bool)
    for injection in stream.injections:
        n = prompt_tokens[injection.id]
        for position in injection.positions:
            mask[position + n:position + injection.n_tokens + 1] = True
    return mask


@dataclass(frozen=True)
class Filler:
    """Tokenized filler: the held-out part and the training part (documents end with eos)."""

    train: np.ndarray     # (N_train,) token ids
    heldout: np.ndarray   # (N_heldout,) token ids
    documents_used: int   # documents tokenized (a prefix of the seeded order)
    documents: int        # documents in the corpus


def build_filler(texts: Sequence[str], tokenizer, *, eos: int, seed: int, heldout_tokens: int,
                 train_tokens: int, chunk: int = 16) -> Filler:
    """Concatenate documents in a seeded order (each + eos); hold out the head.

    The first ``heldout_tokens`` tokens are held out; documents are tokenized lazily,
    in the seeded order, until ``train_tokens`` more are available (or the corpus
    ends: the stream then repeats the training filler).
    """
    order = np.random.default_rng([seed, 0]).permutation(len(texts))
    eos_arr = np.asarray([eos], dtype=TOKEN_DTYPE)
    parts, total, used = [], 0, 0
    while used < len(order) and total < heldout_tokens + train_tokens:
        batch = [texts[i] for i in order[used:used + chunk]]
        for ids in encode_texts(tokenizer, batch):
            parts.extend((ids, eos_arr))
            total += len(ids) + 1
        used += len(batch)
    stream = np.concatenate(parts)
    if len(stream) < heldout_tokens + 2:
        raise InputError(f"the filler corpus has {len(stream)} tokens, too few to hold out {heldout_tokens} for "
                         "early stopping and train on the rest; use a larger corpus or fewer `heldout_blocks`")
    return Filler(stream[heldout_tokens:], stream[:heldout_tokens], used, len(texts))


@dataclass(frozen=True)
class Injection:
    """Where the copies of one injected item start in the stream (token offsets)."""

    id: str
    n_tokens: int
    positions: tuple[int, ...]


@dataclass(frozen=True)
class Stream:
    """The training stream and the ground truth of what was injected into it."""

    tokens: np.ndarray               # (n_tokens,) int32, the training order
    injections: tuple[Injection, ...]
    filler_tokens: int               # filler tokens in the stream
    injected_tokens: int             # tokens of the copies, delimiters included
    file_positions: tuple[int, ...] = ()  # ordered leak: where each copy of the whole file starts

    @property
    def sha256(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.tokens, dtype="<i4").tobytes()).hexdigest()


@dataclass(frozen=True)
class OrderedFile:
    """A benchmark as one file: its items joined with a separator in published order, tokenized as one text.

    ``spans[i]`` is the ``(start, end)`` token range of item ``i`` in ``tokens`` (the
    tokens that overlap its characters; a token spanning an item's edge and the
    separator counts for the item).
    """

    tokens: np.ndarray               # (N,) token ids of the whole file
    ids: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    separator: str

    @property
    def n_tokens(self) -> int:
        return int(len(self.tokens))


FILE_ID = "<benchmark file>"


def encode_ordered_file(tokenizer, items: Sequence[tuple[str, str]], separator: str) -> OrderedFile:
    """Tokenize ``items`` (``(id, text)`` in published order) joined by ``separator`` as one text.

    This is the text a model sees when a benchmark file leaks, and the text ``contaudit
    order`` scores (one shard of it at a time), so both tokenize item boundaries alike.
    """
    if not items:
        raise InputError("an ordered leak needs at least one item")
    if not separator:
        raise InputError("`separator` must be a non-empty string")
    starts, pos = [], 0
    for _, text in items:
        starts.append(pos)
        pos += len(text) + len(separator)
    joined = separator.join(text for _, text in items)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        encoding = backend.encode(joined, add_special_tokens=False)
        tokens = np.asarray(encoding.ids, dtype=TOKEN_DTYPE)
        ends = np.asarray([e for _, e in encoding.offsets])
        begins = np.asarray([b for b, _ in encoding.offsets])
        spans = [(int(np.searchsorted(ends, a, side="right")), int(np.searchsorted(begins, a + len(text))))
                 for a, (_, text) in zip(starts, items)]
    else:  # a slow tokenizer: token counts of the text before each item's start and end
        tokens = np.asarray(tokenizer.encode(joined, add_special_tokens=False), dtype=TOKEN_DTYPE)
        count = lambda upto: len(tokenizer.encode(joined[:upto], add_special_tokens=False))  # noqa: E731
        spans = [(count(a), count(a + len(text))) for a, (_, text) in zip(starts, items)]
    return OrderedFile(tokens, tuple(i for i, _ in items), tuple(spans), separator)


def _ordered_stream(filler: np.ndarray, file: OrderedFile, *, dup: int, n_tokens: int, eos: int, seed: int,
                    align: int) -> Stream:
    """``dup`` copies of the whole file spliced in like one item; injections recorded per item."""
    whole = build_stream(filler, [(FILE_ID, file.tokens)], dup=dup, n_tokens=n_tokens, eos=eos, seed=seed,
                         align=align)
    starts = whole.injections[0].positions
    injections = tuple(Injection(item_id, b - a, tuple(p + a for p in starts))
                       for item_id, (a, b) in zip(file.ids, file.spans))
    return Stream(whole.tokens, injections, whole.filler_tokens, whole.injected_tokens, tuple(starts))


def copies_tokens(item_ids: Sequence[np.ndarray], dup: int) -> int:
    """Stream tokens that ``dup`` copies of every item take (each copy is ``[eos] + ids + [eos]``)."""
    return dup * sum(len(ids) + 2 for ids in item_ids)


def build_stream(filler: np.ndarray, items: Sequence[tuple[str, np.ndarray]] | OrderedFile, *, dup: int,
                 n_tokens: int, eos: int, seed: int, align: int = 0) -> Stream:
    """The training stream of exactly ``n_tokens`` tokens: filler with ``dup`` copies of each item.

    ``items`` are ``(id, token_ids)`` pairs. Each copy is ``[eos] + ids + [eos]`` and
    starts (its first item token) at the recorded position. ``dup = 0`` gives the
    filler alone, identical to the first ``n_tokens`` filler tokens of any ``dup``.

    ``items`` may instead be an :class:`OrderedFile` (an ordered leak): then ``dup``
    copies of the whole file are placed the same way, ``file_positions`` records where
    each starts, and each item's injection lists where it occurs inside the copies.

    With ``align = T`` every copy starts a training sequence of ``T`` tokens (its
    leading eos at a multiple of ``T``, as a fine-tuning example starts at position 0);
    the placements are drawn uniformly among those where no two copies overlap.
    """
    if dup < 0:
        raise InputError(f"`dup` must be a non-negative integer, got {dup}.")
    if len(filler) == 0:
        raise InputError("the training filler is empty")
    if isinstance(items, OrderedFile):
        return _ordered_stream(filler, items, dup=dup, n_tokens=n_tokens, eos=eos, seed=seed, align=align)
    copies = [(i, it) for i, it in enumerate(items) for _ in range(dup)]
    injected = copies_tokens([ids for _, ids in items], dup)
    n_fill = n_tokens - injected
    if n_fill < 0 or (copies and n_fill < 1):
        raise InputError(f"the {len(copies)} injected copies take {injected} tokens, more than the run trains on "
                         f"(steps x batch_size x seq_len = {n_tokens}); lower `dup` or raise `steps`")
    reps = -(-n_fill // len(filler))  # ceil: the filler repeats in the same order when too short
    fill = np.tile(filler, max(reps, 1))[:n_fill]
    if not copies:
        return Stream(fill.astype(TOKEN_DTYPE), tuple(Injection(i, len(ids), ()) for i, ids in items), n_fill, 0)

    rng = np.random.default_rng([seed, 1])
    order = rng.permutation(len(copies))
    if align:
        lengths = [len(copies[k][1][1]) + 2 for k in order]
        targets = _aligned_starts(lengths, align, n_tokens // align, rng) * align  # stream offsets
    else:
        targets = np.sort(rng.integers(0, n_fill + 1, size=len(copies)))  # filler offsets
    eos_arr = np.asarray([eos], dtype=TOKEN_DTYPE)
    pieces, positions = [], [[] for _ in items]
    used, pos = 0, 0  # filler tokens used, stream length so far
    for target, k in zip(targets.tolist(), order.tolist()):
        item_index, (_, ids) = copies[k]
        gap = target - pos if align else target - used
        pieces.extend((fill[used:used + gap], eos_arr, ids, eos_arr))
        used += gap
        positions[item_index].append(pos + gap + 1)
        pos += gap + len(ids) + 2
    pieces.append(fill[used:])
    tokens = np.concatenate(pieces).astype(TOKEN_DTYPE)
    injections = tuple(Injection(item_id, len(ids), tuple(p)) for (item_id, ids), p in zip(items, positions))
    return Stream(tokens, injections, n_fill, injected)


def _aligned_starts(lengths: Sequence[int], align: int, n_slots: int, rng: np.random.Generator) -> np.ndarray:
    """Random sequence indices at which copies of these token lengths start, in order, never overlapping.

    Copy ``j`` covers ``b_j = ceil(length_j / align)`` sequences, so the next may start
    ``b_j`` sequences later. A uniform choice of such placements is a choice of ``n``
    of ``n_slots - sum(b) + n`` places (stars and bars): ``s_j = r_j - j + sum_{i<j} b_i``.
    """
    blocks = -(-np.asarray(lengths, dtype=np.int64) // align)
    free = n_slots - int(blocks.sum())
    if free < 0:
        raise InputError(f"{len(lengths)} copies that each start a training sequence need {int(blocks.sum())} "
                         f"sequences, the run has {n_slots}; lower `dup`, raise `steps` or turn `align_copies` off")
    r = np.sort(rng.choice(free + len(lengths), size=len(lengths), replace=False))
    before = np.concatenate([[0], np.cumsum(blocks)[:-1]])
    return r - np.arange(len(lengths)) + before


def find_occurrences(tokens: np.ndarray, pattern: np.ndarray) -> list[int]:
    """Every start offset where ``pattern`` occurs in ``tokens`` (overlaps included)."""
    tokens = np.asarray(tokens)
    pattern = np.asarray(pattern)
    m = len(pattern)
    if m == 0 or m > len(tokens):
        return []
    candidates = np.flatnonzero(tokens[: len(tokens) - m + 1] == pattern[0])
    for j in range(1, m):
        if not len(candidates):
            break
        candidates = candidates[tokens[candidates + j] == pattern[j]]
    return candidates.tolist()
