"""Typed settings of probe-model training, with their defaults in one place.

* :class:`ModelConfig`: the small GPT-2-style architecture and tokenizer used when a
  model is trained from scratch.
* :class:`TrainConfig`: the optimisation and data settings of one training run
  (pretraining or fine-tuning); every field is recorded in ``injection.json``.
* :class:`DemoTrainingConfig`: the settings ``contaudit demo`` uses, chosen by
  measurement with ``benchmarks/demo_training_probe.py`` (see ``docs/finetune.md``).

Precedence: a dataclass default, overridden by a protocol file, overridden by a
command-line flag; the CLI builds the final object with :func:`dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from contaudit.errors import InputError


@dataclass(frozen=True)
class ModelConfig:
    """A small GPT-2-style causal LM and the byte-level BPE tokenizer trained for it."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    n_positions: int = 256        # context length; train with seq_len <= n_positions
    vocab_size: int = 4096        # BPE vocabulary, including the end-of-text token
    dropout: float = 0.0
    tokenizer_max_chars: int = 4_000_000  # characters of the corpus the tokenizer is trained on

    def validate(self) -> None:
        _positive(self, "n_layer", "n_head", "n_embd", "n_positions", "tokenizer_max_chars")
        if self.n_embd % self.n_head:
            raise InputError(f"`n_embd` ({self.n_embd}) must be a multiple of `n_head` ({self.n_head}).")
        if self.vocab_size < 300:
            raise InputError(f"`vocab_size` must be at least 300 (256 bytes + merges + special), got {self.vocab_size}.")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"`dropout` must be in [0, 1), got {self.dropout}.")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run. ``steps * batch_size * seq_len`` tokens are trained on."""

    steps: int = 200
    lr: float = 1e-4
    batch_size: int = 8
    seq_len: int = 256
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1      # cosine decay from lr to lr * min_lr_ratio
    weight_decay: float = 0.0
    grad_clip: float = 1.0         # 0 disables clipping
    l2sp: float = 0.0              # lambda of L2-SP: loss += lambda/2 * ||theta - theta_base||^2
    layer_lr_decay: float = 1.0    # alpha: layer i of L gets lr * alpha**(L - i); embeddings alpha**(L + 1)
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_target_modules: tuple[str, ...] | None = None  # None: peft's default for the architecture
    align_copies: bool = False      # each injected copy starts a training sequence (else: any token offset)
    heldout_blocks: int = 16        # seq_len blocks of filler held out for early stopping (from the start)
    eval_every: int = 50            # steps between held-out evaluations
    patience: int = 0               # evaluations without improvement before stopping; 0: never stop early
    min_delta: float = 0.0          # improvement in held-out loss that resets the patience counter
    seed: int = 0
    device: str = "auto"            # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    threads: int | None = None      # torch CPU threads; None leaves torch's default
    mixed_precision: bool = True    # bf16 autocast on CUDA (fp16 + loss scaling without bf16) and on CPUs with
                                    # native bf16 (AVX512-BF16 / AMX); float32 elsewhere

    def validate(self) -> None:
        _positive(self, "steps", "batch_size", "seq_len", "eval_every", "heldout_blocks", "lora_r", "lora_alpha")
        _non_negative(self, "warmup_steps", "weight_decay", "grad_clip", "l2sp", "patience", "min_delta")
        if self.lr <= 0:
            raise InputError(f"`lr` must be positive, got {self.lr}.")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise InputError(f"`layer_lr_decay` must be in (0, 1], got {self.layer_lr_decay}; 1 turns it off.")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise InputError(f"`min_lr_ratio` must be in [0, 1], got {self.min_lr_ratio}.")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"`threads` must be a positive integer, got {self.threads}.")

    @property
    def tokens(self) -> int:
        """Tokens trained on: ``steps * batch_size * seq_len``."""
        return self.steps * self.batch_size * self.seq_len


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


def _positive(cfg, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"`{name}` must be a positive integer, got {value!r}.")


def _non_negative(cfg, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value < 0:
            raise InputError(f"`{name}` must be non-negative, got {value!r}.")


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
