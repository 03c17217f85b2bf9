"""Tiny random-initialized causal LMs built in code, for the tests (and benchmarks).

Nothing here downloads anything: the tokenizer is a byte-level BPE trained in
milliseconds on a built-in word list, the models are GPT-2 and Llama configurations a
few thousand parameters large, and :func:`write_tiny_gguf` writes a Llama model as a
float32 GGUF file that transformers can load back (``gguf_file=``).

Example::

    from tiny_models import save_tiny_model  # tests/ is on sys.path under pytest
    path = save_tiny_model("/tmp/tiny-gpt2", arch="gpt2")
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

WORDS = (
    "the of and to in is was for on that with as by at from his her they this which be or are had not but "
    "what all were when we there can an your more if no out so said up its about into than them only other "
    "new some could time these two may then first any my now such like our over man me even most made after "
    "also did many before must through back years where much way well down should because each just those "
    "def return import class self print value list dict index item model score token data test seen unseen"
).split()
SPECIAL_TOKENS = ("<|endoftext|>", "<s>", "</s>", "<pad>")


def tiny_corpus(n_lines: int = 400, seed: int = 0) -> list[str]:
    """Deterministic lines of words and code-like text to train the tiny tokenizer on."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 16))]
        if rng.random() < 0.3:
            words = [f"{words[0]}({words[1]}, {rng.randint(0, 99)}):"] + words[2:]
        lines.append(" ".join(words) + rng.choice([".", "!", "?", ""]))
    return lines


def build_tiny_tokenizer(vocab_size: int = 384):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with GPT-2 style special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(tiny_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def build_tiny_model(arch: str = "gpt2", *, vocab_size: int, seed: int = 0, n_positions: int = 128):
    """A random-initialized causal LM (``"gpt2"`` or ``"llama"``) with peaked logits.

    The initializer range is large so next-token distributions are far from uniform:
    greedy decoding then has clear winners and Min-K%++ variances are not tiny.
    """
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "gpt2":
        config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                            initializer_range=0.3, bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel(config)
    elif arch == "llama":
        config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=n_positions,
                             initializer_range=0.3, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                             rms_norm_eps=1e-6)
        model = LlamaForCausalLM(config)
    else:
        raise ValueError(f"arch must be 'gpt2' or 'llama', got {arch!r}")
    return model.eval()


def save_tiny_model(path: str | Path, *, arch: str = "gpt2", seed: int = 0, n_positions: int = 128) -> Path:
    """Build a tiny model and its tokenizer and ``save_pretrained`` both into ``path``."""
    path = Path(path)
    tokenizer = build_tiny_tokenizer()
    if arch == "gpt2":
        tokenizer.bos_token = tokenizer.eos_token = "<|endoftext|>"
    else:
        tokenizer.bos_token, tokenizer.eos_token = "<s>", "</s>"
    model = build_tiny_model(arch, vocab_size=len(tokenizer), seed=seed, n_positions=n_positions)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _permute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rotary permutation of q/k projection rows (transformers undoes it)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_tiny_gguf(path: str | Path, *, seed: int = 0, n_positions: int = 128):
    """Write a tiny Llama model with a byte-level BPE tokenizer as a float32 GGUF file.

    Returns ``(model, tokenizer)``: the in-memory model the file was written from, so a
    test can check that scores of the loaded file match it.
    """
    import gguf

    path = Path(path)
    tokenizer = build_tiny_tokenizer()
    tokenizer.bos_token, tokenizer.eos_token = "<s>", "</s>"
    model = build_tiny_model("llama", vocab_size=len(tokenizer), seed=seed, n_positions=n_positions)
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("contaudit-tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]) if getattr(cfg, "rope_parameters", None)
                              else float(getattr(cfg, "rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = tokenizer.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    specials = set(SPECIAL_TOKENS)
    merges = tokenizer.backend_tokenizer.model.__getstate__()
    import json

    merges = [" ".join(m) if isinstance(m, list) else m for m in json.loads(merges)["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab["<s>"])
    writer.add_eos_token_id(vocab["</s>"])
    writer.add_add_bos_token(True)

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        base, suffix = hf_name.rsplit(".", 1)
        gguf_name = name_map.get_name(base)
        if gguf_name is None:
            raise ValueError(f"no GGUF name for tensor {hf_name}")
        data = tensor.detach().float().numpy().copy()
        if gguf_name.endswith("attn_q"):
            data = _permute_qk(data, cfg.num_attention_heads)
        elif gguf_name.endswith("attn_k"):
            data = _permute_qk(data, cfg.num_key_value_heads)
        writer.add_tensor(f"{gguf_name}.{suffix}", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model, tokenizer


def save_refused_pickle(source: str | Path, path: str | Path) -> Path:
    """Copy the model directory ``source`` to ``path`` with its weights as a ``pytorch_model.bin``
    that torch's weights-only loading refuses: the pickle also holds a numpy array.
    """
    import shutil

    from safetensors.torch import load_file

    source, path = Path(source), Path(path)
    shutil.copytree(source, path, ignore=shutil.ignore_patterns("*.safetensors"))
    state = load_file(str(source / "model.safetensors"))
    torch.save({**state, "extra": np.zeros(3)}, path / "pytorch_model.bin")
    return path


def save_mismatched_tokenizer(path: str | Path, *, vocab_size: int = 256) -> Path:
    """A GPT-2 with ``vocab_size`` embedding rows saved with the tiny tokenizer (384 ids): a
    tokenizer that yields ids beyond the model's embedding."""
    path = Path(path)
    tokenizer = build_tiny_tokenizer()
    tokenizer.bos_token = tokenizer.eos_token = "<|endoftext|>"
    assert len(tokenizer) > vocab_size
    build_tiny_model("gpt2", vocab_size=vocab_size).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
