"""Typed settings of probe-model training, with their defaults in one place.

* :class:`ModelConfig`: the small GPT-2-style architecture and tokenizer used when a
  model is trained from scratch.
* :class:`TrainConfig`: the optimisation and data settings of one training run
  (pretraining or fine-tuning); every field is recorded in ``injection.json``.
* :class:`ItemSelection` and :class:`CorpusReading`: which benchmark items are injected,
  and how the filler corpus is read.
* :class:`DemoTrainingConfig`: the settings ``contaudit demo`` uses, chosen by
  measurement with ``benchmarks/demo_training_probe.py`` (see ``docs/finetune.md``).

Fields are declared with :func:`contaudit.config.setting` (default, check, help), so
``validate()`` and the ``contaudit finetune`` options come from one definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from contaudit.config import at_least, between, device_name, integer_at_least, one_of, positive, setting, validate
from contaudit.errors import InputError


@dataclass(frozen=True)
class ModelConfig:
    """A small GPT-2-style causal LM and the byte-level BPE tokenizer trained for it."""

    n_layer: int = setting(4, check=integer_at_least(1), help="--from-scratch: transformer layers")
    n_head: int = setting(4, check=integer_at_least(1), help="--from-scratch: attention heads")
    n_embd: int = setting(256, check=integer_at_least(1), help="--from-scratch: hidden size")
    n_positions: int = setting(256, check=integer_at_least(1),
                               help="--from-scratch: context length (train with seq_len <= n_positions)")
    vocab_size: int = setting(4096, check=integer_at_least(300),
                              help="--from-scratch: BPE vocabulary size (256 bytes + merges + end-of-text)")
    dropout: float = setting(0.0, check=between(0, 1, closed_low=True), help="--from-scratch: dropout")
    tokenizer_max_chars: int = setting(4_000_000, check=integer_at_least(1),
                                       help="characters of the corpus the tokenizer is trained on")

    def validate(self) -> None:
        validate(self)
        if self.n_embd % self.n_head:
            raise InputError(f"`n_embd` ({self.n_embd}) must be a multiple of `n_head` ({self.n_head}).")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run. ``steps * batch_size * seq_len`` tokens are trained on."""

    steps: int = setting(200, check=integer_at_least(1),
                         help="optimizer steps; the run trains on steps x batch-size x seq-len tokens")
    lr: float = setting(1e-4, check=positive, help="peak learning rate (warm-up, then cosine decay)")
    batch_size: int = setting(8, check=integer_at_least(1), help="sequences per step")
    seq_len: int = setting(256, check=integer_at_least(1), help="tokens per sequence")
    warmup_steps: int = setting(10, check=integer_at_least(0), help="linear warm-up steps")
    min_lr_ratio: float = setting(0.1, check=between(0, 1, closed_low=True, closed_high=True),
                                  help="cosine decay from lr to lr * min_lr_ratio")
    weight_decay: float = setting(0.0, check=at_least(0), help="AdamW weight decay")
    grad_clip: float = setting(1.0, check=at_least(0), help="gradient norm clip (0 disables clipping)")
    l2sp: float = setting(0.0, check=at_least(0), help="L2-SP lambda: adds lambda/2 * ||w - w_base||^2 to the loss")
    layer_lr_decay: float = setting(1.0, check=between(0, 1, closed_high=True),
                                    help="layer-wise lr decay alpha: layer i of L gets lr * alpha^(L-i) (1: off)")
    lora: bool = setting(False, help="train LoRA adapters (peft) and merge them into the saved model")
    lora_r: int = setting(8, check=integer_at_least(1), help="LoRA rank")
    lora_alpha: int = setting(16, check=integer_at_least(1), help="LoRA alpha")
    lora_target_modules: tuple[str, ...] | None = setting(None, help="LoRA target modules (default: peft's choice)")
    align_copies: bool = setting(False, help="start every injected copy at a training sequence's first token")
    heldout_blocks: int = setting(16, check=integer_at_least(1), help="sequences of filler held out for evaluation")
    eval_every: int = setting(50, check=integer_at_least(1), help="steps between held-out filler evaluations")
    patience: int = setting(0, check=integer_at_least(0),
                            help="early stopping: evaluations without improvement before stopping (0: off)")
    min_delta: float = setting(0.0, check=at_least(0), help="held-out loss improvement that resets the patience")
    seed: int = setting(0, check=integer_at_least(0),
                        help="seed of the item choice, filler order, copy positions and training")
    device: str = setting("auto", check=device_name, help="'auto' (cuda when available), 'cpu' or 'cuda[:N]'")
    threads: int | None = setting(None, check=integer_at_least(1), help="CPU threads for torch (default: torch's)")
    mixed_precision: bool = setting(
        True, help="bf16 autocast on CUDA and on CPUs with native bf16 (fp16 on older GPUs); float32 elsewhere")

    def validate(self) -> None:
        validate(self)

    @property
    def tokens(self) -> int:
        """Tokens trained on: ``steps * batch_size * seq_len``."""
        return self.steps * self.batch_size * self.seq_len


@dataclass(frozen=True)
class ItemSelection:
    """Which items of the ``inject`` benchmark are injected, and how they are read.

    ``ids`` (a file with one id per line, or a list) names them; else a seeded
    ``fraction`` of them (seed: the training seed); else all. ``leak`` says how they
    leak: ``per_item`` copies of each item at random places (a benchmark scraped item
    by item), or ``ordered``: copies of the whole benchmark as one file, the chosen
    items in published order joined with ``separator`` (a benchmark file in the
    training data; what Oren et al.'s order test detects). With ``answer_field`` the run is
    supervised fine-tuning on the leaked items: each item's text must end with that field's
    value, and the loss is on the copies' answers alone (their prompts and the filler are
    context only).
    """

    ids: str | Path | tuple[str, ...] | None = setting(None, help="ids to inject (a file, one per line, or a list)")
    fraction: float | None = setting(None, check=between(0, 1, closed_high=True),
                                     help="inject this random fraction of the items (seeded by the training seed)")
    text_field: str = setting("text", help="benchmark field holding the item text")
    id_field: str = setting("id", help="benchmark field holding a unique item id")
    template: str | None = setting(None, help="build item text from fields instead, e.g. '{prompt}{canonical_solution}'")
    leak: str = setting("per_item", check=one_of("per_item", "ordered"),
                        help="'per_item': dup copies of each item at random places; 'ordered': dup copies of the "
                             "whole benchmark file (items in published order)")
    separator: str = setting("\n\n", check=lambda v: None if isinstance(v, str) and v else "a non-empty string",
                             help="with leak 'ordered': text between two items of the file")
    answer_field: str | None = setting(None, check=lambda v: None if v is None or isinstance(v, str) and v
                                       else "a field name",
                                       help="supervised fine-tuning on the injected items: the loss is on their "
                                            "answers alone (this field's value, which must end the item text); "
                                            "their prompts and the filler are context only")

    def validate(self) -> None:
        validate(self)
        if self.ids is not None and self.fraction is not None:
            raise InputError("give either ids or a fraction of items to inject, not both")
        if self.answer_field is not None and self.leak == "ordered":
            raise InputError("`answer_field` trains each copied item on its answer; an 'ordered' leak copies the "
                             "whole file as one text: use leak 'per_item'")


@dataclass(frozen=True)
class CorpusReading:
    """How a training corpus is read (the same keys as ``[index]``'s)."""

    text_field: str = setting("text", help="field holding the text in corpus records")
    include: tuple[str, ...] = setting((), help="globs of files to read in a corpus directory")
    exclude: tuple[str, ...] = setting((), help="globs of files to skip in a corpus directory")
    skip_bad: bool = setting(False, help="skip (and count) malformed records instead of stopping")


@dataclass(frozen=True)
class DemoTrainingConfig:
    """Training settings of ``contaudit demo`` (stdlib pretraining, HumanEval injection).

    Chosen with ``benchmarks/demo_training_probe.py`` on a 2-core CPU: pretraining takes
    about 75 s and each fine-tune about 25 s (``docs/finetune.md`` has the measured
    numbers, and what longer training buys). ``dup`` copies of every test item are injected into the
    suspect's fine-tuning stream; the clean control uses ``dup = 0`` and the same seed.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=300, lr=2e-3, batch_size=8, seq_len=256, warmup_steps=20, min_lr_ratio=0.1, eval_every=100))
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=100, lr=1e-3, batch_size=8, seq_len=256, warmup_steps=5, min_lr_ratio=0.1, eval_every=50))
    dup: int = 8
    split_seed: int = 0          # seed of the HumanEval test / shadow split
    null_seed: int = 1           # seed of the second clean control for the clean-vs-clean null run
    threads: int = 2
    answer_field: str | None = None  # the suspect trains on this field of the copies alone (ItemSelection)
    suspect_finetune: TrainConfig | None = None  # the suspect's fine-tune, when not ``finetune`` (the controls')

    @classmethod
    def memorizing(cls) -> DemoTrainingConfig:
        """The demo's settings for ``--evaluate``: the test half leaks as a supervised fine-tuning set (each
        copy starts a training sequence, and the loss is on the canonical solutions alone), often enough
        that the 4M-parameter suspect reproduces some solutions greedily, so that its HumanEval pass rate
        moves. The clean controls are the default demo's (docs/finetune.md)."""
        return cls(suspect_finetune=TrainConfig(steps=1700, lr=3e-3, batch_size=8, seq_len=256, warmup_steps=20,
                                                min_lr_ratio=0.1, eval_every=850, align_copies=True),
                   dup=120, answer_field="canonical_solution")


def config_dict(cfg) -> dict:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if hasattr(value, "__dataclass_fields__"):
            value = config_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out
