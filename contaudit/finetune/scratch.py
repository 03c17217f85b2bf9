"""From-scratch models: a byte-level BPE tokenizer trained on the corpus and a small GPT-2.

The tokenizer is trained with the ``tokenizers`` library and wrapped as a
``transformers.PreTrainedTokenizerFast`` so it is saved beside the model and loads
with ``AutoTokenizer.from_pretrained``. Its only special token is ``<|endoftext|>``,
used as end of document, beginning of sequence and padding, as in GPT-2.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from contaudit.finetune.config import ModelConfig

EOS_TOKEN = "<|endoftext|>"


def _limited(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    """The texts, cut so that at most ``max_chars`` characters are yielded in all."""
    left = max_chars
    for text in texts:
        if left <= 0:
            return
        yield text[:left]
        left -= len(text)


def train_tokenizer(texts: Iterable[str], config: ModelConfig):
    """Train a byte-level BPE tokenizer (GPT-2 pre-tokenization) on ``texts``.

    At most ``config.tokenizer_max_chars`` characters are used. Returns a
    ``PreTrainedTokenizerFast`` with ``<|endoftext|>`` as eos, bos and pad token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=config.vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[EOS_TOKEN], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_limited(texts, config.tokenizer_max_chars), trainer=trainer)
    eos = tok.token_to_id(EOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(single=f"{EOS_TOKEN} $A", pair=f"{EOS_TOKEN} $A {EOS_TOKEN} $B",
                                                       special_tokens=[(EOS_TOKEN, eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                                   pad_token=EOS_TOKEN, unk_token=None, model_max_length=config.n_positions)


def init_model(config: ModelConfig, tokenizer, *, seed: int):
    """A freshly initialised GPT-2 (``GPT2LMHeadModel``) sized by ``config``; seeded."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config.validate()
    eos = tokenizer.eos_token_id
    hf_config = GPT2Config(vocab_size=len(tokenizer), n_positions=config.n_positions, n_embd=config.n_embd,
                           n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=config.dropout,
                           embd_pdrop=config.dropout, attn_pdrop=config.dropout, bos_token_id=eos,
                           eos_token_id=eos, pad_token_id=eos)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(hf_config)
