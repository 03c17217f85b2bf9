"""The training loop of probe models.

* Full fine-tuning, or LoRA adapters (peft) merged into the weights at the end.
* L2-SP (Li et al. 2018): ``loss + lambda/2 * ||theta - theta_base||^2`` over the
  trained weights; with LoRA the distance is that of the merged weights, i.e. the
  adapters' delta ``||B A * scaling||^2``.
* Layer-wise learning-rate decay: with ``L`` layers and decay ``alpha``, layer ``i``
  (0-based, from the input) gets ``lr * alpha**(L - i)``, embeddings
  ``lr * alpha**(L + 1)`` and the final norm / output head ``lr``.
* Warm-up then cosine decay; gradient clipping; held-out loss every ``eval_every``
  steps with early stopping (best weights restored); mixed precision: bf16 (fp16
  with loss scaling where bf16 is missing) autocast on CUDA, bf16 autocast on CPUs
  with native bf16 instructions; weights and optimizer state stay float32.

The stream is consumed in order: step ``s`` trains on rows ``s*B .. (s+1)*B`` of the
stream viewed as ``(n_tokens / T, T)``.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from contaudit.errors import InputError
from contaudit.finetune.config import TrainConfig
from contaudit.models import resolve_device, resolve_dtype

_LAYER_RE = re.compile(r"\.(?:h|layers|layer|blocks|block)\.(\d+)\.")
_EMBED_KEYS = ("wte", "wpe", "embed", "tok_embeddings")


# --- parameter groups --------------------------------------------------------------------------------------------

def num_layers(model) -> int:
    """The number of transformer blocks, from the config or else from parameter names."""
    config = getattr(model, "config", None)
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    found = [int(m.group(1)) for name, _ in model.named_parameters() if (m := _LAYER_RE.search(name))]
    if not found:
        raise InputError("cannot find the model's transformer layers (parameter names like `h.0.` or `layers.0.`); "
                         "layer-wise learning rates need them")
    return max(found) + 1


def layer_depth(name: str, n_layers: int) -> int:
    """0 for embeddings, ``i + 1`` for block ``i``, ``n_layers + 1`` for the final norm and head."""
    if m := _LAYER_RE.search(name):
        return int(m.group(1)) + 1
    if any(key in name for key in _EMBED_KEYS):
        return 0
    return n_layers + 1


def param_groups(model, *, lr: float, layer_lr_decay: float = 1.0, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups, one per depth, with layer-wise decayed learning rates.

    Only parameters with ``requires_grad`` are included. Each group carries its
    ``depth`` and parameter ``names`` besides ``params``, ``lr`` and
    ``weight_decay``. With ``layer_lr_decay = 1`` all groups share ``lr``.
    """
    n_layers = num_layers(model)
    by_depth: dict[int, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            by_depth.setdefault(layer_depth(name, n_layers), []).append((name, p))
    groups = []
    for depth in sorted(by_depth):
        named = by_depth[depth]
        groups.append({"params": [p for _, p in named], "names": [n for n, _ in named], "depth": depth,
                       "lr": lr * layer_lr_decay ** (n_layers + 1 - depth), "weight_decay": weight_decay})
    if not groups:
        raise InputError("the model has no trainable parameters")
    return groups


# --- L2-SP and LoRA ----------------------------------------------------------------------------------------------

class L2SP:
    """Squared distance of the trained weights from their starting (base) values.

    For LoRA layers the distance is that of the merged weight, ``||delta W||^2``.
    """

    def __init__(self, model):
        from peft.tuners.lora import LoraLayer

        self.lora_layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        self.base = {} if self.lora_layers else {
            name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    def distance(self, model) -> torch.Tensor:
        """``sum ||theta - theta_base||^2`` (differentiable)."""
        if self.lora_layers:
            return sum(sum((m.get_delta_weight(a).float() ** 2).sum() for a in m.active_adapters)
                       for m in self.lora_layers)
        params = dict(model.named_parameters())
        return sum(((params[name].float() - base.float()) ** 2).sum() for name, base in self.base.items())


def apply_lora(model, config: TrainConfig):
    """Wrap ``model`` with LoRA adapters (peft); only the adapters train."""
    from peft import LoraConfig, get_peft_model

    target = list(config.lora_target_modules) if config.lora_target_modules else None
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=target,
                      task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lora)
    except ValueError as e:
        raise InputError(f"cannot add LoRA adapters ({e}); name the layers with `lora_target_modules`") from None


def weight_distance(model, base_state: dict) -> float:
    """``sqrt(sum ||theta - theta_base||^2)`` over the parameters named in ``base_state``."""
    params = dict(model.named_parameters())
    total = sum(float(((params[n].detach().float() - b.float()) ** 2).sum()) for n, b in base_state.items())
    return math.sqrt(total)


# --- the loop ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepInfo:
    """What the progress callback receives after every step."""

    step: int            # steps completed
    steps: int
    loss: float | None   # training cross-entropy of this step (nats/token); None: no target (all masked)
    lr: float            # learning rate of the last (output-side) group
    tokens_per_s: float  # since the start of training
    heldout_loss: float | None = None  # set on evaluation steps


@dataclass
class TrainResult:
    """The trained (plain, merged) model and what happened while training."""

    model: object
    steps_run: int
    best_step: int                  # steps behind the returned weights
    tokens_trained: int             # best_step * batch_size * seq_len
    stopped_early: bool
    seconds: float
    tokens_per_s: float
    final_loss: float | None  # the last step's loss (None when that batch had no target)
    precision: str                  # "float32" or the autocast dtype, e.g. "bfloat16"
    heldout: list[dict] = field(default_factory=list)  # [{"step", "loss"}]
    train_loss: list[dict] = field(default_factory=list)  # [{"step", "loss"}], every step


def lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_ratio``."""
    def f(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        span = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


@torch.inference_mode()
def heldout_loss(model, blocks: torch.Tensor, *, batch_size: int, device: torch.device, autocast) -> float:
    """Mean next-token cross-entropy (nats/token) over held-out blocks ``(N, T)``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        x = blocks[start:start + batch_size].to(device)  # (B, T)
        with autocast():
            logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits  # (B, T, V)
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), x[:, 1:].flatten(),
                                                reduction="sum")
        total += float(nll)
        count += x[:, 1:].numel()
    model.train(was_training)
    return total / count


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 matrix products natively (AVX512-BF16 or AMX)."""
    cpu = torch.cpu
    return any(getattr(cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported",
                                                                   "_is_amx_tile_supported"))


def autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype of mixed-precision training, or None for float32.

    CUDA: the ``auto`` dtype of :func:`contaudit.models.resolve_dtype` (bfloat16, else
    float16, with loss scaling). CPU: bfloat16 only where the CPU has native bf16
    instructions (there it trains 2-3x faster); elsewhere float32.
    """
    if not enabled:
        return None
    if device.type == "cuda":
        return resolve_dtype("auto", device)
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def _amp(device: torch.device, enabled: bool):
    """``(autocast factory, GradScaler)`` for the device (see :func:`autocast_dtype`)."""
    import contextlib
    import functools

    dtype = autocast_dtype(device, enabled)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    if dtype is None:
        return contextlib.nullcontext, scaler
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype), scaler


def train(model, stream: np.ndarray, heldout: np.ndarray, config: TrainConfig, *,
          progress: Callable[[StepInfo], None] | None = None, loss_mask: np.ndarray | None = None) -> TrainResult:
    """Train ``model`` on ``stream`` (``config.tokens`` token ids, in training order).

    ``loss_mask`` (bool, one per stream token) marks the tokens the loss is on; the others are
    context only (an injected prompt under answer-only training). Without it every token counts.

    Returns the trained model, merged back into a plain ``transformers`` model when
    LoRA was used, and the loss history. ``config.threads`` applies to this call only.
    """
    threads = torch.get_num_threads()
    try:
        return _train(model, stream, heldout, config, progress=progress, loss_mask=loss_mask)
    finally:
        torch.set_num_threads(threads)  # later work in the process (e.g. scoring) keeps its own default


def _train(model, stream: np.ndarray, heldout: np.ndarray, config: TrainConfig, *,
           progress: Callable[[StepInfo], None] | None, loss_mask: np.ndarray | None) -> TrainResult:
    config.validate()
    T, B = config.seq_len, config.batch_size
    if len(stream) != config.tokens:
        raise InputError(f"the stream has {len(stream)} tokens; steps x batch_size x seq_len = {config.tokens}")
    if loss_mask is not None and loss_mask.shape != stream.shape:
        raise ValueError(f"loss_mask has shape {loss_mask.shape}, the stream {stream.shape}")
    n_positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if n_positions is not None and T > n_positions:
        raise InputError(f"`seq_len` ({T}) exceeds the model's context length ({n_positions}).")
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    autocast, scaler = _amp(device, config.mixed_precision)
    precision = str(autocast_dtype(device, config.mixed_precision) or torch.float32).removeprefix("torch.")
    torch.manual_seed(config.seed)

    model.to(device)
    model.train()
    if config.lora:
        model = apply_lora(model, config)
    l2sp = L2SP(model) if config.l2sp > 0 else None
    groups = param_groups(model, lr=config.lr, layer_lr_decay=config.layer_lr_decay,
                          weight_decay=config.weight_decay)
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    trainable = [p for g in groups for p in g["params"]]

    blocks = torch.from_numpy(np.ascontiguousarray(stream, dtype=np.int64)).view(-1, T)  # (steps*B, T)
    ignored = None if loss_mask is None else torch.from_numpy(~np.asarray(loss_mask, dtype=bool)).view(-1, T)
    n_eval = len(heldout) // T
    if n_eval == 0:
        raise InputError(f"the held-out filler has {len(heldout)} tokens, less than one block of seq_len={T}")
    eval_blocks = torch.from_numpy(np.ascontiguousarray(heldout[: n_eval * T], dtype=np.int64)).view(n_eval, T)

    def evaluate() -> float:
        return heldout_loss(model, eval_blocks, batch_size=B, device=device, autocast=autocast)

    history = [{"step": 0, "loss": evaluate()}]
    best_loss, best_step, best_state, bad_evals = history[0]["loss"], 0, None, 0
    losses: list[dict] = []
    stopped_early = False
    start = time.perf_counter()
    step = 0
    for step in range(1, config.steps + 1):
        x = blocks[(step - 1) * B: step * B].to(device)  # (B, T)
        labels = x if ignored is None else x.masked_fill(ignored[(step - 1) * B: step * B].to(device), -100)
        loss_value = None  # a batch of masked prompt tokens alone has no target: no update
        if ignored is None or bool((labels[:, 1:] != -100).any()):
            with autocast():
                loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=labels).loss
            total = loss if l2sp is None else loss + 0.5 * config.l2sp * l2sp.distance(model)
            scaler.scale(total).backward()
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            loss_value = float(loss.detach())
            scheduler.step()
        else:
            with warnings.catch_warnings():  # a step without an update still counts in the schedule
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
                scheduler.step()
        losses.append({"step": step, "loss": loss_value})

        held = None
        if step % config.eval_every == 0 or step == config.steps:
            held = evaluate()
            history.append({"step": step, "loss": held})
            if held < best_loss - config.min_delta:
                best_loss, best_step, bad_evals = held, step, 0
                if config.patience:
                    best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            else:
                bad_evals += 1
        if progress is not None:
            elapsed = time.perf_counter() - start
            progress(StepInfo(step, config.steps, loss_value, optimizer.param_groups[-1]["lr"],
                              step * B * T / elapsed, held))
        if config.patience and bad_evals >= config.patience:
            stopped_early = True
            break
    seconds = time.perf_counter() - start

    if config.patience:
        if best_state is None:
            raise InputError("with early stopping on, the held-out loss never improved on the starting model, so no "
                             "trained weights are worth keeping; lower `lr`, raise `patience` or set it to 0")
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in best_state.items():
                params[name].copy_(value)
    else:
        best_step = step
    if config.lora:
        model = model.merge_and_unload()
    model.eval()
    return TrainResult(model=model, steps_run=step, best_step=best_step, tokens_trained=best_step * B * T,
                       stopped_early=stopped_early, seconds=seconds, tokens_per_s=step * B * T / seconds,
                       final_loss=losses[-1]["loss"], precision=precision, heldout=history, train_loss=losses)
