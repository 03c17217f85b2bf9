"""A transformer encoder as the semantic stage's model (``--semantic-model DIR`` on a Hugging Face or
sentence-transformers folder): contextual window vectors, for users with GPUs.

A static model's window vector is the mean of its token vectors, two rows of a cumulative
sum. An encoder's costs a forward pass: every window of every size goes through the model,
in batches (on the GPU when torch sees one, in half precision), and its vector is the
pooled last hidden state (mean over tokens, or the first token's where the folder's
``1_Pooling/config.json`` says ``cls``). Items are embedded the same way, cut to the
model's length. A candidate's score is the best cosine between the item's vector and the
candidate span's windows as long as the item (every quarter of the item's length), so the
verification shares the retrieval's geometry; the threshold is calibrated as for static
models. The tokenizer is the folder's ``tokenizer.json``; the special tokens around each
window come from its post-processor. A multilingual encoder (LaBSE, multilingual E5) is
what finds translations; none ships offline, so that was not measured here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contaudit.errors import InputError

BATCH_WINDOWS = 64  # windows per forward pass
SCORE_STEPS = 4  # a candidate's windows start every 1/SCORE_STEPS of the item's length


def is_encoder_folder(root: Path) -> bool:
    """True for a transformers model folder (``config.json`` naming a ``model_type`` other than model2vec's)."""
    config = root / "config.json"
    if not config.is_file():
        return False
    try:
        kind = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return False
    return bool(kind) and kind != "model2vec"


@dataclass(eq=False)
class EncoderParts:
    """What :class:`~contaudit.index.semantic.StaticModel` holds for an encoder besides its tokenizer."""

    module: object  # the torch module (eval mode, on its device)
    device: str
    prefix: list[int]  # special token ids before a window ([CLS])
    suffix: list[int]  # and after it ([SEP])
    max_tokens: int  # the longest window (positions less special tokens)
    pooling: str  # "mean" or "cls"


def load_encoder(root: Path) -> tuple[Path, list[Path], EncoderParts, np.ndarray]:
    """``(tokenizer file, files fingerprinted, encoder parts, input word embeddings (V, d))`` of ``root``."""
    try:
        import torch
        from transformers import AutoModel
    except ImportError:  # pragma: no cover - both are dependencies
        raise InputError("an encoder as `semantic_model` needs torch and transformers") from None
    tok_file = root / "tokenizer.json"
    if not tok_file.is_file():
        raise InputError("an encoder folder as `semantic_model` needs a fast tokenizer's tokenizer.json", path=root)
    weights = sorted([*root.glob("*.safetensors"), *root.glob("pytorch_model*.bin")])
    if not weights:
        raise InputError("the encoder folder holds no weights (model.safetensors or pytorch_model.bin)", path=root)
    from contaudit.progress import quiet_transformers

    quiet_transformers()
    try:
        module = AutoModel.from_pretrained(str(root), local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load the encoder ({str(e).splitlines()[0]})", path=root) from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = module.to(device).eval()
    if device == "cuda":
        module = module.half()
    pooling_file = root / "1_Pooling" / "config.json"
    pooling = "mean"
    if pooling_file.is_file():
        conf = json.loads(pooling_file.read_text(encoding="utf-8"))
        pooling = "cls" if conf.get("pooling_mode_cls_token") else "mean"
    prefix, suffix = _special_tokens(json.loads(tok_file.read_text(encoding="utf-8")).get("post_processor"))
    positions = getattr(module.config, "max_position_embeddings", 512) or 512
    offset = 2 if getattr(module.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
    max_tokens = max(8, min(positions - offset, 512) - len(prefix) - len(suffix))
    embeddings = module.get_input_embeddings().weight.detach().float().cpu().numpy()
    files = [root / "config.json", tok_file, *weights] + ([pooling_file] if pooling_file.is_file() else [])
    return tok_file, files, EncoderParts(module, device, prefix, suffix, max_tokens, pooling), embeddings


def _special_tokens(post: dict | None) -> tuple[list[int], list[int]]:
    """The special token ids a tokenizer's post-processor puts before and after a single sequence."""
    if not post:
        return [], []
    kind = post.get("type")
    if kind in ("BertProcessing", "RobertaProcessing"):
        return [post["cls"][1]], [post["sep"][1]]
    if kind == "TemplateProcessing":
        ids = {name: tok["ids"] for name, tok in (post.get("special_tokens") or {}).items()}
        before, after, seen_sequence = [], [], False
        for piece in post.get("single") or []:
            if "Sequence" in piece:
                seen_sequence = True
            elif "SpecialToken" in piece:
                (after if seen_sequence else before).extend(ids.get(piece["SpecialToken"]["id"], []))
        return before, after
    if kind == "Sequence":
        for step in post.get("processors") or []:
            found = _special_tokens(step)
            if found != ([], []):
                return found
    return [], []


def embed(parts: EncoderParts, windows: list[np.ndarray]) -> np.ndarray:
    """Unit vectors ``(n, d)`` float32 of token-id ``windows`` (each cut to ``parts.max_tokens``)."""
    import torch

    out = []
    for b in range(0, len(windows), BATCH_WINDOWS):
        batch = [list(parts.prefix) + w[: parts.max_tokens].tolist() + list(parts.suffix)
                 for w in windows[b:b + BATCH_WINDOWS]]
        width = max(len(w) for w in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, w in enumerate(batch):
            ids[i, : len(w)] = torch.tensor(w, dtype=torch.long)
            mask[i, : len(w)] = 1
        with torch.inference_mode():
            hidden = parts.module(input_ids=ids.to(parts.device),
                                  attention_mask=mask.to(parts.device)).last_hidden_state.float()
        if parts.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            m = mask.to(parts.device).unsqueeze(-1).float()
            pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        pooled = torch.nn.functional.normalize(pooled, dim=1)
        out.append(pooled.cpu().numpy().astype(np.float32))
    dim = parts.module.config.hidden_size
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def window_score(parts: EncoderParts, item_vector: np.ndarray, item_len: int,
                 span_ids: np.ndarray) -> tuple[float, int, int]:
    """The best cosine between ``item_vector`` and ``span_ids``'s windows as long as the item, starting every
    ``1/SCORE_STEPS`` of it (and one at the span's end): ``(score, start, end)`` in the span's tokens."""
    m = len(span_ids)
    if m == 0 or item_len == 0:
        return 0.0, 0, 0
    width = min(item_len, m, parts.max_tokens)
    step = max(1, width // SCORE_STEPS)
    starts = list(range(0, m - width + 1, step))
    if starts[-1] != m - width:
        starts.append(m - width)
    sims = embed(parts, [span_ids[s:s + width] for s in starts]) @ item_vector
    best = int(np.argmax(sims))
    return float(sims[best]), starts[best], starts[best] + width
