"""Semantic matches: benchmark items rephrased, reordered, reformatted or translated in the corpus.

Items and corpus windows of comparable length are embedded with a static word-embedding
model (default: wordllama's 256-d vectors, which ship inside its wheel: no download).
A window's vector is the mean of its token vectors, so every window of a document costs
two rows of a cumulative sum. Each item's nearest windows are found by exact matrix
search (one BLAS product per batch: the items are few, the windows stream past) and
every candidate is verified with a stricter score, a soft token alignment between the
item and the best-aligned span of the window (:func:`align_score`). The threshold on that
score comes from :func:`calibrate`: planted paraphrases of corpus passages against the
same passages' best matches among unrelated documents. ``ray`` and one-machine scans run
this same code per batch, so they find the same hits.

Needs the optional extra ``semantic`` (``pip install 'contaudit[semantic]'``).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.ndimage import maximum_filter1d

from contaudit.errors import InputError
from contaudit.io import Document
from contaudit.manifest import hash_file
from contaudit.text import words

if TYPE_CHECKING:  # the encoder module needs torch: imported only when an encoder folder is loaded
    from contaudit.index.encoder import EncoderParts

SEMANTIC_STATUS = "paraphrased"  # an item found only by the semantic stage
DEFAULT_MODEL = "wordllama"
CHUNK_TOKENS = 16384  # corpus tokens embedded at a time (bounds memory: about 16 MB of vectors)
PIECE_CHARS = 1 << 20  # a longer text is tokenized in pieces cut at whitespace
SIZE_STEP = 1.25  # window sizes are the grid 8 * 1.25^k tokens nearest each item's length
ENCODER_SIZE_STEP = 2.0  # an encoder's grid is coarser (fewer sizes): every window costs a forward pass
MIN_TOKENS = 8
BLOCK = 8  # windows start and end on blocks of this many tokens (their sums come from block sums)
CALIBRATION_PASSAGES = 200  # prose passages the threshold is calibrated on
PASSAGES_PER_DOC = 3  # calibration passages cut from one document at most
DEFAULT_FLOOR = 0.5  # window cosine below which a candidate is not verified (when the threshold is given)


# ----------------------------------------------------------------------------- embedding model


@dataclass(eq=False)
class StaticModel:
    """The semantic stage's model: a tokenizer and one vector per token (wordllama, or a model2vec-style
    folder), or a transformer encoder (:mod:`contaudit.index.encoder`: its input word embeddings are
    the vectors here, for calibration's word neighbours; windows and items are embedded by the encoder)."""

    name: str
    files: tuple[Path, ...]  # what it was loaded from (their hashes are its fingerprint)
    tokenizer: object  # tokenizers.Tokenizer
    vectors: np.ndarray  # (V, d) float32, raw (their mean is a text's vector)
    unit: np.ndarray  # (V, d) float32, each row of length 1 (for token alignment)
    weight: np.ndarray  # (V,) float32: a token's weight in alignment (its raw vector's norm)
    token_bytes: np.ndarray | None = None  # (V,) UTF-8 bytes of text each token stands for (word-split models)
    encoder: EncoderParts | None = None  # for a transformers encoder's folder

    @classmethod
    def load(cls, spec: str = DEFAULT_MODEL) -> StaticModel:
        """``"wordllama"`` (the vectors in the wordllama wheel), a folder with ``tokenizer.json`` and
        one ``*.safetensors`` file holding a 2-D embedding matrix (model2vec's format; or a
        sentence-transformers static model, whose module folder holds them), or a transformers
        encoder's folder (``config.json``, weights and ``tokenizer.json``)."""
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError:  # pragma: no cover - both come with transformers
            raise InputError("the semantic stage needs `tokenizers` and `safetensors`: "
                             "pip install 'contaudit[semantic]'") from None
        if spec == DEFAULT_MODEL:
            try:
                import wordllama
            except ImportError:
                raise InputError("`semantic_model` 'wordllama' needs the optional extra: "
                                 "pip install 'contaudit[semantic]'") from None
            root = Path(wordllama.__file__).parent
            tok_file = root / "tokenizers" / "l2_supercat_tokenizer_config.json"
            weight_file = root / "weights" / "l2_supercat_256.safetensors"
        else:
            root = Path(spec)
            if not root.is_dir():
                raise InputError(f"`semantic_model` must be 'wordllama' or a model folder; {spec!r} is not a folder")
            from contaudit.index.encoder import is_encoder_folder, load_encoder

            if is_encoder_folder(root):
                tok_file, files, parts, vectors = load_encoder(root)
                return cls._made(spec, tuple(files), Tokenizer.from_file(str(tok_file)), vectors, parts)
            # the folder itself (model2vec), or a module folder in it (sentence-transformers' 0_StaticEmbedding/)
            found = [d for d in (root, *sorted(p for p in root.iterdir() if p.is_dir()))
                     if (d / "tokenizer.json").exists() and len(list(d.glob("*.safetensors"))) == 1]
            if not found:
                raise InputError(f"`semantic_model` {spec!r} is not a static embedding folder (tokenizer.json and "
                                 "one *.safetensors file, in it or in a module folder such as 0_StaticEmbedding/); "
                                 "see docs/index.md, 'Semantic matches'")
            tok_file, weight_file = found[0] / "tokenizer.json", next(found[0].glob("*.safetensors"))
        tensors = load_file(str(weight_file))
        matrices = [v for v in tensors.values() if v.ndim == 2]
        if len(matrices) != 1:
            raise InputError(f"`semantic_model` {spec!r}: {weight_file.name} must hold one 2-D embedding matrix")
        return cls._made(spec, (tok_file, weight_file), Tokenizer.from_file(str(tok_file)), matrices[0])

    @classmethod
    def _made(cls, spec: str, files: tuple, tokenizer, vectors: np.ndarray, encoder=None) -> StaticModel:
        tokenizer.no_padding()
        tokenizer.no_truncation()
        token_bytes = _split_words(tokenizer)
        vectors = vectors.astype(np.float32)  # (V, d)
        norm = np.linalg.norm(vectors, axis=1)
        unit = vectors / np.maximum(norm, 1e-12)[:, None]
        return cls(spec, files, tokenizer, vectors, unit.astype(np.float32), norm.astype(np.float32), token_bytes,
                   encoder)

    def fingerprint(self) -> dict:
        """The model's name and its files' SHA-256 (for the manifest)."""
        found = {"name": self.name, "dim": int(self.vectors.shape[1]),
                 "files": {p.name if self.encoder is None else str(p.relative_to(self.name)): hash_file(p)
                           for p in self.files}}  # an encoder's folder has config.json twice (1_Pooling/)
        if self.encoder is not None:
            found["encoder"] = {"pooling": self.encoder.pooling, "max_tokens": self.encoder.max_tokens}
        return found

    def encode(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Token ids ``(n,)`` and character spans ``(n, 2)`` of each text (int32).

        Texts are tokenized about :data:`PIECE_CHARS` at a time (long ones in pieces cut at
        whitespace), so the tokenizer's own objects never hold more than that.
        """
        out = [([], []) for _ in texts]
        for todo in self._batches(texts):
            encodings = self.tokenizer.encode_batch([piece for _, _, piece in todo], add_special_tokens=False)
            for enc, (t, start, _) in zip(encodings, todo):
                out[t][0].append(np.asarray(enc.ids, dtype=np.int32))
                out[t][1].append(np.asarray(enc.offsets, dtype=np.int32).reshape(-1, 2) + start)
        return [(np.concatenate(ids) if ids else np.zeros(0, np.int32),
                 np.concatenate(spans) if spans else np.zeros((0, 2), np.int32)) for ids, spans in out]

    def encode_ids(self, texts: list[str]) -> list[np.ndarray]:
        """The token ids of :meth:`encode` alone: the scan needs spans only for the few windows it keeps, and
        leaving the character offsets out (in the tokenizer and here) halves the time a corpus takes."""
        fast = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        out = [[] for _ in texts]
        for todo in self._batches(texts):
            encodings = fast([piece for _, _, piece in todo], add_special_tokens=False)
            for enc, (t, _, _) in zip(encodings, todo):
                out[t].append(np.asarray(enc.ids, dtype=np.int32))
        return [np.concatenate(ids) if ids else np.zeros(0, np.int32) for ids in out]

    def spans(self, text: str, ids: np.ndarray) -> np.ndarray:
        """The character spans ``(n, 2)`` of ``text``'s tokens ``ids``, as :meth:`encode` gives them. A word-split
        model needs no tokenizer for this: each token stands for its own bytes of the text (its leading
        space included; the space the normalizer adds before the first is not in the text), so the spans
        are running sums of the tokens' byte lengths, mapped to characters. Else (or when the text holds an
        added token such as ``<s>``) it encodes again."""
        if self.token_bytes is not None and 0 < len(text) <= PIECE_CHARS and len(ids):
            data = np.frombuffer(text.encode("utf-8", "surrogatepass"), np.uint8)
            lengths = self.token_bytes[ids]
            ends = np.cumsum(lengths) - 1
            if ends[-1] == len(data) and lengths.min() >= 0:
                starts = np.maximum(ends - lengths, 0)
                if len(data) != len(text):  # bytes to characters: a token inside a character spans all of it
                    lead = (data & 0xC0) != 0x80  # the first byte of each character
                    chars_before = np.concatenate([[0], np.cumsum(lead)])
                    starts, ends = chars_before[starts + 1] - 1, chars_before[ends]
                spans = np.stack([starts, ends], axis=1).astype(np.int32)
                spans[0, 1] = max(spans[0, 1], 1)  # the added space alone is aligned with the first character
                return spans
        again, spans = self.encode([text])[0]
        assert np.array_equal(again, ids), "the tokenizer gave two encodings of one text"
        return spans

    @staticmethod
    def _batches(texts: list[str]):
        """``[(text index, start, piece)]`` lists of about :data:`PIECE_CHARS` characters, in order."""
        todo, size = [], 0
        for t, text in enumerate(texts):
            for start, piece in _pieces(text):
                if not piece.isascii():  # a lone surrogate (JSON "\ud800") the tokenizer cannot take: U+FFFD, one
                    piece = _SURROGATE.sub("\ufffd", piece)  # character and three bytes for one, so spans hold
                todo.append((t, start, piece))
                size += len(piece)
                if size >= PIECE_CHARS:
                    yield todo
                    todo, size = [], 0
        if todo:
            yield todo

    @property
    def max_window(self) -> int | None:
        """The longest window the model takes (an encoder's positions), or None."""
        return None if self.encoder is None else self.encoder.max_tokens

    def mean_vector(self, ids: np.ndarray) -> np.ndarray:
        """The unit-length mean vector of tokens ``ids`` ``(d,)`` (an encoder's pooled vector of them)."""
        if self.encoder is not None:
            from contaudit.index.encoder import embed

            return embed(self.encoder, [ids])[0]
        v = self.vectors[ids].astype(np.float64).sum(axis=0)
        return (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32)


_METASPACE = "\u2581"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _split_words(tokenizer) -> np.ndarray | None:
    """Give a SentencePiece-style tokenizer without a pre-tokenizer (wordllama's) one that cuts the
    normalized text before each run of ``\u2581`` (an encoded space), when no token of its vocabulary holds
    ``\u2581`` after another character: no merge can then cross the cut, so the ids and offsets are exactly
    those of the whole text, and each word is merged on its own (and cached) instead of the whole text at
    once. Returns each token's length in UTF-8 bytes of the text (a byte token is one), which gives the
    spans of a text's tokens without the tokenizer (:meth:`StaticModel.spans`); None when nothing changed."""
    import json

    from tokenizers import Regex, pre_tokenizers

    config = json.loads(tokenizer.to_str())
    normalizers = (config.get("normalizer") or {}).get("normalizers") or [config.get("normalizer") or {}]
    spaces = any(n.get("type") == "Replace" and n.get("content") == _METASPACE for n in normalizers)
    vocab = (config.get("model") or {}).get("vocab")
    if config.get("pre_tokenizer") is not None or not spaces or not isinstance(vocab, dict):
        return None
    if any(_METASPACE in token.lstrip(_METASPACE) for token in vocab):
        return None
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(f"{_METASPACE}*[^{_METASPACE}]+"), behavior="isolated")
    if [n.get("type") for n in normalizers] != ["Prepend", "Replace"]:
        return None  # another normalizer (NFKC, lowercase) changes lengths: spans come from the tokenizer
    added = config.get("added_tokens") or []
    size = np.zeros(max([*vocab.values(), *(a["id"] for a in added)]) + 1, np.int64)
    for token, i in vocab.items():
        size[i] = 1 if _BYTE_TOKEN.fullmatch(token) else len(token.replace(_METASPACE, " ").encode("utf-8"))
    for token in added:
        size[token["id"]] = -1  # matched in the raw text, before the normalizer: spans from the tokenizer
    return size


_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _pieces(text: str):
    """``(start, piece)``: ``text`` cut at whitespace into pieces of about :data:`PIECE_CHARS`."""
    start = 0
    while len(text) - start > PIECE_CHARS:
        cut = text.rfind(" ", start + PIECE_CHARS // 2, start + PIECE_CHARS)
        cut = start + PIECE_CHARS if cut < 0 else cut
        yield start, text[start:cut]
        start = cut
    yield start, text[start:]


_models: dict[str, StaticModel] = {}


def load_model(spec: str) -> StaticModel:
    """:meth:`StaticModel.load`, once per process."""
    if spec not in _models:
        _models[spec] = StaticModel.load(spec)
    return _models[spec]


# ----------------------------------------------------------------------------- verification


def align_score(model: StaticModel, item_ids: np.ndarray, span_ids: np.ndarray) -> tuple[float, int, int]:
    """The stricter score of a candidate: soft token alignment of the item with its best-aligned sub-span.

    Every sub-span of ``span_ids`` as long as the item (or all of it, if shorter) is
    scored with a weighted F1 of cosine similarities between token vectors (BERTScore's
    rule with static vectors, each token weighted by its raw vector's norm, so function
    words count less): recall = each item token's best match in the sub-span, precision
    = each sub-span token's best match in the item. Returns ``(score, start, end)``: the
    best F1 and its sub-span in ``span_ids``'s token positions.
    """
    n, m = len(item_ids), len(span_ids)
    if n == 0 or m == 0:
        return 0.0, 0, 0
    sim = model.unit[item_ids] @ model.unit[span_ids].T  # (n, m) float32
    np.maximum(sim, 0.0, out=sim)
    wi, ws = model.weight[item_ids].astype(np.float64), model.weight[span_ids].astype(np.float64)
    width = min(n, m)
    if m == width:
        rows = sim.max(axis=1, keepdims=True)  # (n, 1)
    else:  # each item token's best match in every sub-span [j, j + width): a running maximum, O(n m)
        rows = maximum_filter1d(sim, width, axis=1, origin=-(width // 2))[:, : m - width + 1]  # (n, m - width + 1)
    recall = wi @ rows / wi.sum()  # (n_spans,)
    col = sim.max(axis=0) * ws  # (m,) each span token's weighted best match in the item
    csum, wsum = np.concatenate([[0.0], np.cumsum(col)]), np.concatenate([[0.0], np.cumsum(ws)])
    starts = np.arange(m - width + 1)
    precision = (csum[starts + width] - csum[starts]) / np.maximum(wsum[starts + width] - wsum[starts], 1e-12)
    f1 = 2 * recall * precision / np.maximum(recall + precision, 1e-12)
    best = int(np.argmax(f1))
    return float(f1[best]), best, best + width


# ----------------------------------------------------------------------------- items and windows


def window_sizes(lengths: list[int], longest: int | None = None,
                 step: float = SIZE_STEP) -> tuple[np.ndarray, np.ndarray]:
    """The window size (tokens) of each item: the grid ``8 * step^k`` value nearest its length, rounded
    to whole blocks of :data:`BLOCK` tokens (and at most ``longest``, in whole blocks: an encoder's).

    Returns ``(sizes, size_of_item)``: the distinct sizes, and each item's index into them.
    """
    ks = np.round(np.log(np.maximum(np.asarray(lengths, dtype=np.float64), MIN_TOKENS) / MIN_TOKENS)
                  / np.log(step)).astype(np.int64)
    grid = np.maximum(np.round(MIN_TOKENS * step ** ks / BLOCK), 1).astype(np.int64) * BLOCK
    if longest is not None:
        grid = np.minimum(grid, max(longest // BLOCK, 1) * BLOCK)
    sizes, which = np.unique(grid, return_inverse=True)
    return sizes, which


@dataclass(frozen=True)
class SemanticHit:
    """An item's best verified match so far: its score, the window's cosine, where, and the text."""

    score: float
    cosine: float
    location: list  # [source, record, char_offset]
    text: str

    def as_list(self) -> list:
        return [self.score, self.cosine, self.location, self.text]


@dataclass(frozen=True)
class Candidate:
    """A corpus span near an item (by the cosine of mean vectors), waiting for verification: where, and its text."""

    cosine: float
    location: list  # [source, record, char_offset]
    text: str

    def as_list(self) -> list:
        return [self.cosine, self.location, self.text]


@dataclass(eq=False)
class SemanticIndex:
    """The items' token ids and mean vectors grouped by window size, and the search settings.

    Picklable without its model (a worker loads it again by name, once per process).
    """

    model_spec: str
    item_ids: list[np.ndarray]
    sizes: np.ndarray  # (S,) window sizes in tokens
    groups: list[np.ndarray]  # per size: the items searched with windows of that size
    vectors: list[np.ndarray]  # per size: (n_items_of_size, d) unit mean vectors
    floor: float  # candidates with a lower window cosine are not verified
    candidates: int  # windows verified per item per chunk (its nearest)
    exclude_doc: dict[int, tuple] = field(default_factory=dict)  # calibration: item -> (source, record) it skips

    @classmethod
    def build(cls, texts: list[str], model_spec: str, *, floor: float, candidates: int) -> SemanticIndex:
        """The index of items ``texts`` for model ``model_spec``."""
        model = load_model(model_spec)
        item_ids = [ids for ids, _ in model.encode(texts)]
        sizes, which = window_sizes([len(ids) for ids in item_ids], model.max_window,
                                    SIZE_STEP if model.encoder is None else ENCODER_SIZE_STEP)
        groups = [np.nonzero(which == s)[0] for s in range(len(sizes))]
        vectors = [np.stack([model.mean_vector(item_ids[i]) if len(item_ids[i]) else
                             np.zeros(model.vectors.shape[1], np.float32) for i in g]) for g in groups]
        return cls(model_spec, item_ids, sizes, groups, vectors, floor, candidates)

    @property
    def model(self) -> StaticModel:
        return load_model(self.model_spec)


class SemanticScanner:
    """Scans batches of documents for an index's items: each item's nearest corpus spans by window cosine.

    :meth:`scan` leaves in :attr:`candidates` each item's ``index.candidates`` nearest
    spans of the batch (overlapping windows of a document merged into one span, each
    widened by a quarter window on both sides). Merged over the corpus in order
    (:func:`merge_candidates`), they are verified once at the end (:func:`verify`): the
    costly score runs items x candidates times in all, however large the corpus.
    """

    def __init__(self, index: SemanticIndex):
        self.index = index
        self.model = index.model
        self.candidates: dict[int, list[Candidate]] = {}

    def scan(self, docs: list[Document]) -> None:
        """Search ``docs`` (in order), a group of about :data:`CHUNK_TOKENS` tokens at a time.

        BLAS runs single-threaded here: the products are small (threads only contend,
        on a busy machine 40 times slower), and workers are processes or Ray tasks.
        """
        with one_blas_thread():
            self._scan(docs)

    def _scan(self, docs: list[Document]) -> None:
        index = self.index
        k = 2 * index.candidates  # windows kept per item: overlapping ones merge into fewer spans
        self._docs: list[tuple] = []  # (doc, ids) of the batch
        self._doc_spans: dict[int, np.ndarray] = {}  # d -> token spans, for the documents that need them
        self._rows: list[np.ndarray] = []  # the batch's windows: (n, 3) [doc index, start, end] blocks
        self._n_rows = 0
        self._top = [(np.full((k, len(g)), -np.inf, np.float32), np.full((k, len(g)), -1, np.int64))
                     for g in index.groups]  # per size: the k best cosines per item and their windows
        group, size = [], 0
        for doc, ids in zip(docs, self.model.encode_ids([d.text for d in docs])):
            self._docs.append((doc, ids))
            for c0 in range(0, len(ids), CHUNK_TOKENS):
                c1 = min(len(ids), c0 + CHUNK_TOKENS)
                group.append((len(self._docs) - 1, c0, c1))
                size += c1 - c0
                if size >= CHUNK_TOKENS:
                    self._search_group(group)
                    group, size = [], 0
        if group:
            self._search_group(group)
        self._collect()
        self._docs, self._rows, self._doc_spans = [], [], {}

    def _search_group(self, group: list) -> None:
        """Windows of every size starting in each (doc, chunk) of ``group``: keep each item's nearest."""
        index, model = self.index, self.model
        longest = int(index.sizes[-1])
        sums = []  # per (doc, chunk): cumulative sums of its token vectors' block sums, from c0 on
        dim = model.vectors.shape[1]
        for d, c0, c1 in group if model.encoder is None else ():  # c0 is a whole number of blocks
            ids = self._docs[d][1]
            hi = min(len(ids), c1 + longest)
            vecs = np.zeros((-(-(hi - c0) // BLOCK) * BLOCK, dim), np.float32)
            vecs[: hi - c0] = model.vectors[ids[c0:hi]]
            cs = np.zeros((len(vecs) // BLOCK + 1, dim), np.float32)
            np.cumsum(vecs.reshape(-1, BLOCK, dim).sum(axis=1), axis=0, out=cs[1:])
            sums.append(cs)
        for s, size in enumerate(index.sizes):
            size = int(size)
            rows, vecs, windows = [], [], []  # windows: an encoder's, embedded at once (batches across documents)
            for g, (d, c0, c1) in enumerate(group):
                n = len(self._docs[d][1])
                starts = _window_starts(n, size, max(BLOCK, size // 2 // BLOCK * BLOCK), c0, c1)
                if len(starts) == 0:
                    continue
                ends = np.minimum(starts + size, n)
                if model.encoder is not None:
                    windows.extend(self._docs[d][1][a:b] for a, b in zip(starts, ends))
                else:
                    v = sums[g][-(-(ends - c0) // BLOCK)] - sums[g][(starts - c0) // BLOCK]  # (n_windows, d) sums
                    vecs.append(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12))
                rows.append(np.stack([np.full(len(starts), d), starts, ends], axis=1))
            if not rows:
                continue
            if windows:  # a forward pass per window
                from contaudit.index.encoder import embed

                vecs = [embed(model.encoder, windows)]
            rows = np.concatenate(rows)  # (n_windows, 3)
            sims = np.concatenate(vecs) @ index.vectors[s].T  # (n_windows, n_items_of_size)
            if index.exclude_doc:  # calibration: a passage's own document is no candidate
                where = {(doc.source, doc.record): d for d, (doc, _) in enumerate(self._docs)}
                for j, item in enumerate(index.groups[s]):
                    own = where.get(index.exclude_doc.get(int(item)))
                    if own is not None:
                        sims[rows[:, 0] == own, j] = -np.inf
            self._keep_nearest(s, sims, self._n_rows)
            self._rows.append(rows)
            self._n_rows += len(rows)

    def _keep_nearest(self, s: int, sims: np.ndarray, first: int) -> None:
        """Merge the windows ``first...`` (their cosines ``sims``) into each item's ``k`` nearest."""
        cos, row = self._top[s]
        k = cos.shape[0]
        # only items some new window could enter: none below an item's k-th nearest yet, or below the floor
        # (never a candidate), changes what it keeps
        cols = np.nonzero(sims.max(axis=0) >= np.maximum(cos.min(axis=0), self.index.floor))[0]
        if not len(cols):
            return
        sims = sims[:, cols]
        new_rows = np.broadcast_to(np.arange(first, first + len(sims))[:, None], sims.shape)
        all_cos = np.concatenate([cos[:, cols], sims])  # (k + n, live items)
        all_row = np.concatenate([row[:, cols], new_rows])
        order = np.argpartition(-all_cos, k - 1, axis=0)[:k]  # the k nearest (in no order)
        cos[:, cols], row[:, cols] = np.take_along_axis(all_cos, order, 0), np.take_along_axis(all_row, order, 0)

    def _spans(self, d: int) -> np.ndarray:
        """The character spans of document ``d``'s tokens (once, for a document that holds a kept window)."""
        if d not in self._doc_spans:
            doc, ids = self._docs[d]
            self._doc_spans[d] = self.model.spans(doc.text, ids)
        return self._doc_spans[d]

    def _collect(self) -> None:
        """Each item's kept windows above the floor as spans (overlapping ones of a document merged, at most
        twice a window long), the ``index.candidates`` nearest of them, nearest first."""
        index = self.index
        rows = np.concatenate(self._rows) if self._rows else np.zeros((0, 3), np.int64)
        for s, (cos, row) in enumerate(self._top):
            size = int(index.sizes[s])
            for j, item in enumerate(index.groups[s]):
                merged: list[list] = []  # [doc index, lo, hi, best cosine]
                for c, r in sorted(zip(cos[:, j].tolist(), row[:, j].tolist()), key=lambda x: x[1]):
                    if r < 0 or c < index.floor:
                        continue
                    d, a, b = (int(x) for x in rows[r])
                    lo, hi = max(0, a - size // 4), min(len(self._docs[d][1]), b + size // 4)
                    last = merged[-1] if merged else None
                    if last is not None and last[0] == d and lo <= last[2] and hi - last[1] <= 2 * size:
                        last[2], last[3] = max(last[2], hi), max(last[3], c)
                    else:
                        merged.append([d, lo, hi, c])
                merged.sort(key=lambda m: -m[3])  # stable: corpus order among equal cosines
                found = []
                for d, lo, hi, c in merged[:index.candidates]:
                    doc, spans = self._docs[d][0], self._spans(d)
                    c0, c1 = int(spans[lo][0]), int(spans[hi - 1][1])
                    found.append(Candidate(round(c, 6), [doc.source, doc.record, c0], doc.text[c0:c1]))
                if found:
                    self.candidates[int(item)] = found


def merge_candidates(mine: dict[int, list[Candidate]], theirs: dict[int, list[Candidate]], k: int) -> None:
    """Merge candidates that come later in corpus order into ``mine``: each item keeps its ``k`` nearest
    (by cosine; the earlier on ties)."""
    for item, found in theirs.items():
        both = mine.get(int(item), []) + list(found)
        mine[int(item)] = sorted(both, key=lambda c: -c.cosine)[:k]


def verify(model: StaticModel, item_ids: np.ndarray, candidates: list[Candidate], *,
           copy_of: str | None = None) -> SemanticHit | None:
    """The best of ``candidates`` by :func:`align_score` (an encoder's: :func:`~contaudit.index.encoder.window_score`;
    the nearest on ties), with its best-aligned text.

    ``copy_of`` (calibration): skip candidates sharing :data:`COPY_RUN` words in a row with that text.
    """
    best = None
    if model.encoder is not None and candidates:
        from contaudit.index.encoder import window_score

        item_vector = model.mean_vector(item_ids)
    for cand in candidates:
        if copy_of is not None and _shares_run(copy_of, cand.text):
            continue
        ids, spans = model.encode([cand.text])[0]
        if model.encoder is not None:
            score, s0, s1 = window_score(model.encoder, item_vector, len(item_ids), ids)
        else:
            score, s0, s1 = align_score(model, item_ids, ids)
        score = round(score, 6)
        if len(ids) and (best is None or score > best.score):
            c0, c1 = int(spans[s0][0]), int(spans[s1 - 1][1])
            source, record, offset = cand.location
            best = SemanticHit(score, cand.cosine, [source, record, offset + c0], cand.text[c0:c1])
    return best


COPY_RUN = 8  # words in a row shared with a calibration passage make a span related to it (as the index's unseen rule)


def _shares_run(a: str, b: str) -> bool:
    """True when texts ``a`` and ``b`` share :data:`COPY_RUN` normalized words in a row (what the exact stage finds)."""
    wa, wb = words(a), words(b)
    runs = {tuple(wa[i:i + COPY_RUN]) for i in range(len(wa) - COPY_RUN + 1)}
    return any(tuple(wb[i:i + COPY_RUN]) in runs for i in range(len(wb) - COPY_RUN + 1))


def one_blas_thread():
    """A context in which numpy's BLAS uses one thread (threadpoolctl), or nothing without it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - the extra installs it
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _window_starts(n: int, size: int, stride: int, c0: int, c1: int) -> np.ndarray:
    """Starts in ``[c0, c1)`` of a document's windows: every ``stride`` tokens, and one reaching its end
    (the last block start before ``n - size``: all are whole blocks)."""
    last = max(n - size, 0) // BLOCK * BLOCK
    starts = np.arange(-(-c0 // stride) * stride, min(c1, last + 1), stride)
    if last % stride and c0 <= last < c1:
        starts = np.append(starts, last)  # the document's tail
    return starts


# ----------------------------------------------------------------------------- calibration

_SENTENCE = re.compile(r"(?<=[.!?;:])\s+")


def plant_paraphrase(model: StaticModel, text: str, rng: np.random.Generator, *, substitute: float = 0.25) -> str:
    """A planted paraphrase of ``text``: its sentences in another order (when it has several) and about
    ``substitute`` of its longer words replaced by their nearest other word in the model's vocabulary."""
    sentences = [s for s in _SENTENCE.split(text.strip()) if s]
    if len(sentences) > 1:
        order = rng.permutation(len(sentences))
        if (order == np.arange(len(sentences))).all():
            order = np.roll(order, 1)
        sentences = [sentences[i] for i in order]
    words = " ".join(sentences).split()
    for i, w in enumerate(words):
        core = w.strip(".,;:!?()\"'")
        if len(core) >= 5 and core.isalpha() and rng.random() < substitute:
            other = _neighbour(model, core)
            if other:
                words[i] = w.replace(core, other)
    return " ".join(words)


def _neighbour(model: StaticModel, word: str) -> str | None:
    """The vocabulary token nearest ``word`` that is a whole other word (not a case or prefix variant, nor in
    another script)."""
    ids = model.encode_ids([word])[0]
    if len(ids) != 1:
        return None
    sims = model.unit @ model.unit[ids[0]]
    nearest = np.argpartition(-sims, 40)[:40] if len(sims) > 40 else np.arange(len(sims))
    for j in nearest[np.argsort(-sims[nearest])]:
        cand = _word_token(model.tokenizer, int(j))
        if cand and cand.isalpha() and len(cand) >= 3 and cand.lower()[:4] != word.lower()[:4] \
                and (cand.isascii() or not word.isascii()):  # "program" -> "програм" is no rephrasing
            return cand
    return None


def _word_token(tokenizer, token_id: int) -> str | None:
    """The word token ``token_id`` stands for when it starts a word (SentencePiece ``\u2581word``; WordPiece:
    not a ``##`` piece), else None."""
    token = tokenizer.id_to_token(token_id)
    prefix = getattr(tokenizer.model, "continuing_subword_prefix", None)
    if prefix is not None and type(tokenizer.model).__name__ == "WordPiece":
        return None if token.startswith(prefix) else token
    return token[1:] if token.startswith(_METASPACE) and len(token) > 1 else None


@dataclass
class Calibration:
    """The threshold the data gave: planted paraphrases' scores against unrelated passages' best scores."""

    threshold: float
    false_match_rate: float  # share of unrelated passages at or above the threshold
    recall: float  # share of planted paraphrases at or above it
    n_planted: int
    n_unrelated: int
    sample_chars: int
    target_false_match_rate: float
    floor: float  # window cosine below which candidates are not verified: under every planted paraphrase found
    # what the build searches the whole corpus for with the items (:func:`corpus_threshold`); not in as_dict
    passages: list[str] = field(default_factory=list, repr=False)  # the unrelated passages
    homes: list[tuple] = field(default_factory=list, repr=False)  # each one's (source, record)
    planted_scores: list[float] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()
                if k not in ("passages", "homes", "planted_scores")}


def corpus_threshold(calibration: Calibration, scores: list[float], corpus_bytes: int) -> dict:
    """The threshold at the corpus's own scale: ``scores`` are the calibration's unrelated passages' best
    verified scores in the whole corpus (searched with the items, by the same code and settings), so an
    unrelated item meets as many windows as the benchmark's items do. The threshold is the lowest that at
    most the target share of them reach, as in :func:`calibrate`, never below the sample's."""
    nulls = np.asarray(scores, dtype=np.float64)
    k = int(np.floor(calibration.target_false_match_rate * len(nulls)))
    threshold = max(float(np.sort(nulls)[::-1][k]) + 1e-6, calibration.threshold)
    planted = np.asarray(calibration.planted_scores, dtype=np.float64)
    return {"threshold": round(threshold, 6), "false_match_rate": round(float((nulls >= threshold).mean()), 6),
            "false_match_rate_at_sample_threshold": round(float((nulls >= calibration.threshold).mean()), 6),
            "recall": round(float((planted >= threshold).mean()), 6) if len(planted) else None,
            "n_unrelated": len(nulls), "corpus_bytes": corpus_bytes}


def calibrate(docs: list[Document], lengths: list[int], index_settings: dict, *, max_false_rate: float,
              batch_chars: float = 1e6, n_passages: int = CALIBRATION_PASSAGES, seed: int = 0) -> Calibration:
    """Pick the lowest threshold whose false-match rate on unrelated passages is at most ``max_false_rate``.

    Passages are the starts of prose paragraphs of ``docs`` (a sample of the corpus, a few
    MB; up to :data:`PASSAGES_PER_DOC` per document), with token lengths cycling through the items' ``lengths``.
    Planted paraphrases (:func:`plant_paraphrase`) are searched for in their own document;
    each original passage among the other documents, in batches of ``batch_chars`` as the
    index scan reads them, spans sharing :data:`COPY_RUN` words in a row with it aside:
    its best score is what an unrelated item scores.
    """
    with one_blas_thread():
        return _calibrate(docs, lengths, index_settings, max_false_rate=max_false_rate, batch_chars=batch_chars,
                          n_passages=n_passages, seed=seed)


def _calibrate(docs, lengths, index_settings, *, max_false_rate, batch_chars, n_passages, seed) -> Calibration:
    model = load_model(index_settings["model_spec"])
    rng = np.random.default_rng(seed)
    order = sorted(set(lengths)) or [64]
    passages, homes = [], []
    for d, doc in enumerate(docs):
        taken = 0
        for paragraph in prose_paragraphs(doc.text):
            if len(passages) >= n_passages or taken == PASSAGES_PER_DOC:
                break
            want = order[len(passages) % len(order)]
            ids, spans = model.encode([paragraph])[0]
            if len(ids) >= want:
                passages.append(paragraph[:int(spans[want - 1][1])])
                homes.append(d)
                taken += 1
    if len(passages) < 20:
        raise InputError("the semantic stage's calibration found fewer than 20 passages in the corpus sample; "
                         "give `semantic_threshold` or a larger corpus")
    planted = [plant_paraphrase(model, p, rng) for p in passages]
    pos_index = SemanticIndex.build(planted, **{**index_settings, "floor": -1.0})
    null_index = SemanticIndex.build(passages, **{**index_settings, "floor": -1.0})
    null_index.exclude_doc = {i: (docs[h].source, docs[h].record) for i, h in enumerate(homes)}
    positives = []
    for i, h in enumerate(homes):
        one = SemanticIndex(pos_index.model_spec, [pos_index.item_ids[i]], *_single(pos_index, i),
                            floor=-1.0, candidates=pos_index.candidates)
        scanner = SemanticScanner(one)
        scanner.scan([docs[h]])
        hit = verify(model, one.item_ids[0], scanner.candidates.get(0, []))
        positives.append((hit.score, hit.cosine) if hit else (0.0, 0.0))
    found: dict[int, list[Candidate]] = {}
    batch, size = [], 0
    for doc in [*docs, None]:  # in batches as the scan reads them
        if doc is None or size >= batch_chars:
            scanner = SemanticScanner(null_index)
            scanner.scan(batch)
            merge_candidates(found, scanner.candidates, null_index.candidates)
            batch, size = [], 0
        if doc is not None:
            batch.append(doc)
            size += len(doc.text)
    hits = [verify(model, null_index.item_ids[i], found.get(i, []), copy_of=passages[i]) for i in range(len(passages))]
    nulls = np.array([h.score if h else 0.0 for h in hits])
    k = int(np.floor(max_false_rate * len(nulls)))  # at most k nulls may reach the threshold
    threshold = float(np.sort(nulls)[::-1][k]) + 1e-6
    scores, cosines = np.array(positives).T
    found = scores >= threshold
    floor = min(DEFAULT_FLOOR, float(cosines[found].min()) - 0.05) if found.any() else DEFAULT_FLOOR
    return Calibration(round(threshold, 6), float((nulls >= threshold).mean()), float(found.mean()),
                       len(scores), len(nulls), sum(len(d.text) for d in docs), max_false_rate, round(floor, 6),
                       passages, [(docs[h].source, docs[h].record) for h in homes], scores.tolist())


_PARAGRAPH = re.compile(r"\n\s*\n")



def prose_paragraphs(text: str):
    """Paragraphs of ``text`` that read like a benchmark item: mostly words, at least one sentence ending.

    (Calibrating on changelog entries or licence variants would set the threshold by
    their formulaic likeness to one another, not by how unrelated prose scores.)
    """
    for p in _PARAGRAPH.split(text):
        tokens = p.split()
        if len(tokens) >= 20 and sum(t.strip(".,;:!?()'\"").isalpha() for t in tokens) >= 0.75 * len(tokens) \
                and re.search(r"[.!?](\s|$)", p):
            yield " ".join(tokens)


def _single(index: SemanticIndex, i: int) -> tuple:
    """``(sizes, groups, vectors)`` of an index holding only item ``i`` of ``index``."""
    s = next(s for s, g in enumerate(index.groups) if i in g)
    j = int(np.nonzero(index.groups[s] == i)[0][0])
    return index.sizes[s:s + 1], [np.array([0])], [index.vectors[s][j:j + 1]]
