"""The training loop: layer-wise learning rates, L2-SP, LoRA, early stopping, stream order."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from contaudit.errors import InputError
from contaudit.finetune import train as train_mod
from contaudit.finetune.config import TrainConfig
from contaudit.finetune.train import L2SP, layer_depth, lr_lambda, param_groups, train, weight_distance

VOCAB = 64


def _gpt2(n_layer: int = 3, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=n_layer, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def _config(**kw) -> TrainConfig:
    base = dict(steps=12, lr=1e-2, batch_size=2, seq_len=16, warmup_steps=0, eval_every=4, threads=1, device="cpu",
                mixed_precision=False)
    return TrainConfig(**{**base, **kw})


def _data(config: TrainConfig, seed: int = 0):
    rng = np.random.default_rng(seed)
    stream = rng.integers(1, VOCAB, size=config.tokens).astype(np.int32)
    heldout = rng.integers(1, VOCAB, size=2 * config.seq_len).astype(np.int32)
    return stream, heldout


def _base_state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --- layer-wise learning rates -----------------------------------------------------------------------------------

def test_layer_lr_decay_gives_one_group_per_depth_with_specified_rates():
    model = _gpt2(n_layer=3)
    groups = param_groups(model, lr=1.0, layer_lr_decay=0.5)
    assert [g["depth"] for g in groups] == [0, 1, 2, 3, 4]
    assert [g["lr"] for g in groups] == pytest.approx([0.5 ** 4, 0.5 ** 3, 0.5 ** 2, 0.5, 1.0])
    names = [set(g["names"]) for g in groups]
    assert names[0] == {"transformer.wte.weight", "transformer.wpe.weight"}
    for i in range(3):
        assert names[i + 1] and all(n.startswith(f"transformer.h.{i}.") for n in names[i + 1])
    assert names[4] == {"transformer.ln_f.weight", "transformer.ln_f.bias"}
    # every trainable parameter is in exactly one group
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_no_decay_means_one_learning_rate():
    groups = param_groups(_gpt2(), lr=3e-4, layer_lr_decay=1.0)
    assert {g["lr"] for g in groups} == {3e-4}


def test_layer_depth_of_llama_style_names():
    assert layer_depth("model.embed_tokens.weight", 2) == 0
    assert layer_depth("model.layers.0.self_attn.q_proj.weight", 2) == 1
    assert layer_depth("model.layers.1.mlp.up_proj.weight", 2) == 2
    assert layer_depth("model.norm.weight", 2) == 3
    assert layer_depth("lm_head.weight", 2) == 3
    assert layer_depth("base_model.model.transformer.h.1.attn.c_attn.lora_A.default.weight", 2) == 2


def test_optimizer_keeps_the_layer_ratios_through_the_schedule():
    config = _config(steps=6, warmup_steps=2, layer_lr_decay=0.5, lr=1e-3)
    seen = []
    original = torch.optim.AdamW.step

    def spy(self, *a, **kw):
        seen.append([g["lr"] for g in self.param_groups])
        return original(self, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.AdamW, "step", spy)
        train(_gpt2(), *_data(config), config)
    for lrs in seen:
        assert np.allclose(np.asarray(lrs) / lrs[-1], [0.5 ** 4, 0.5 ** 3, 0.5 ** 2, 0.5, 1.0])
    assert seen[0][-1] == pytest.approx(1e-3 * lr_lambda(config)(0))


def test_schedule_warms_up_then_decays_to_the_floor():
    f = lr_lambda(TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.1)
    assert f(55) == pytest.approx(0.55)


# --- L2-SP -------------------------------------------------------------------------------------------------------

def test_l2sp_keeps_weights_closer_to_the_base_than_plain_finetuning():
    base = _gpt2()
    start = _base_state(base)
    plain = train(copy.deepcopy(base), *_data(_config()), _config()).model
    l2sp = train(copy.deepcopy(base), *_data(_config()), _config(l2sp=50.0)).model
    d_plain, d_l2sp = weight_distance(plain, start), weight_distance(l2sp, start)
    assert d_plain > 0
    assert d_l2sp < 0.5 * d_plain


def test_l2sp_distance_is_zero_at_the_base_and_grows_with_changes():
    model = _gpt2()
    reg = L2SP(model)
    with torch.no_grad():
        assert float(reg.distance(model)) == 0.0
        model.transformer.wte.weight[0, 0] += 3.0
        assert float(reg.distance(model)) == pytest.approx(9.0)


def test_l2sp_with_lora_keeps_the_merged_delta_smaller():
    base = _gpt2()
    start = _base_state(base)
    config = _config(lora=True, lora_r=4, lr=3e-2)
    plain = train(copy.deepcopy(base), *_data(config), config).model
    l2sp = train(copy.deepcopy(base), *_data(config), TrainConfig(**{**config.__dict__, "l2sp": 50.0})).model
    d_plain, d_l2sp = weight_distance(plain, start), weight_distance(l2sp, start)
    assert d_plain > 0 and d_l2sp < 0.5 * d_plain


# --- LoRA --------------------------------------------------------------------------------------------------------

def test_lora_trains_adapters_only_and_returns_a_plain_merged_model():
    base = _gpt2()
    start = _base_state(base)
    model = train(copy.deepcopy(base), *_data(_config(lora=True)), _config(lora=True)).model
    assert type(model).__name__ == "GPT2LMHeadModel"
    names = {n for n, _ in model.named_parameters()}
    assert names == set(start) and not any("lora" in n for n in names)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, start[n])}
    assert changed and all(n.endswith("c_attn.weight") for n in changed)  # peft's default target for GPT-2


# --- the loop ----------------------------------------------------------------------------------------------------

def test_training_reads_the_stream_in_order():
    config = _config(steps=5)
    stream, heldout = _data(config)
    model = _gpt2()
    fed = []

    def hook(module, args, kwargs):
        if module.training:
            fed.append(kwargs["input_ids"].clone())

    model.register_forward_pre_hook(hook, with_kwargs=True)
    train(model, stream, heldout, config)
    assert np.array_equal(torch.cat(fed).flatten().numpy(), stream)


def test_early_stopping_restores_the_best_weights(monkeypatch):
    # held-out losses after steps 0, 2, 4, 6, ...: the best is at step 4, patience 2 stops at step 8
    losses = iter([5.0, 4.0, 3.0, 3.5, 3.6, 9.0, 9.0])
    monkeypatch.setattr(train_mod, "heldout_loss", lambda *a, **kw: next(losses))
    config = _config(steps=20, eval_every=2, patience=2)
    stream, heldout = _data(config)
    model = _gpt2()
    snapshots = {}

    def progress(info):
        snapshots[info.step] = {n: p.detach().clone() for n, p in model.named_parameters()}

    result = train(model, stream, heldout, config, progress=progress)
    assert result.stopped_early and result.steps_run == 8 and result.best_step == 4
    assert result.tokens_trained == 4 * config.batch_size * config.seq_len
    for name, p in result.model.named_parameters():
        assert torch.equal(p, snapshots[4][name]), name
    assert any(not torch.equal(p, snapshots[8][n]) for n, p in result.model.named_parameters())


def test_early_stopping_without_any_improvement_is_an_error(monkeypatch):
    monkeypatch.setattr(train_mod, "heldout_loss", lambda *a, **kw: 1.0)
    config = _config(steps=10, eval_every=2, patience=1)
    with pytest.raises(InputError, match="never improved"):
        train(_gpt2(), *_data(config), config)


def test_heldout_loss_is_recorded_and_training_lowers_it():
    config = _config(steps=30, lr=1e-2, eval_every=10)
    stream = np.tile(np.arange(1, 17, dtype=np.int32), config.tokens // 16)  # a learnable pattern
    result = train(_gpt2(), stream, stream[:32].copy(), config)
    assert [h["step"] for h in result.heldout] == [0, 10, 20, 30]
    assert result.heldout[-1]["loss"] < 0.5 * result.heldout[0]["loss"]
    assert len(result.train_loss) == 30 and result.tokens_per_s > 0


def test_stream_of_the_wrong_length_is_an_error():
    config = _config()
    stream, heldout = _data(config)
    with pytest.raises(InputError, match="steps x batch_size x seq_len"):
        train(_gpt2(), stream[:-1], heldout, config)


def test_seq_len_beyond_the_context_is_an_error():
    config = _config(seq_len=64)
    with pytest.raises(InputError, match="exceeds the model's context length"):
        train(_gpt2(), *_data(config), config)


def test_cpu_mixed_precision_uses_bf16_only_with_native_support(monkeypatch):
    monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda: False)
    assert train_mod.autocast_dtype(torch.device("cpu"), True) is None
    monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda: True)
    assert train_mod.autocast_dtype(torch.device("cpu"), True) == torch.bfloat16
    assert train_mod.autocast_dtype(torch.device("cpu"), False) is None
    config = _config(mixed_precision=True)
    result = train(_gpt2(), *_data(config), config)
    assert result.precision == "bfloat16" and math.isfinite(result.final_loss)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


@pytest.mark.parametrize("field,value,message", [
    ("steps", 0, "`steps` must be an integer >= 1"),
    ("lr", -1.0, "`lr` must be a finite number > 0"),
    ("layer_lr_decay", 1.5, r"`layer_lr_decay` must be a number in \(0, 1\]"),
    ("l2sp", -0.1, "`l2sp` must be a finite number >= 0"),
    ("device", "tpu", "`device` must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
])
def test_bad_settings_name_the_parameter(field, value, message):
    config = _config(**{field: value})
    with pytest.raises(InputError, match=message):
        train(_gpt2(), *_data(_config()), config)



def test_training_threads_do_not_leak_into_the_rest_of_the_process():
    before = torch.get_num_threads()
    config = _config(threads=1 if before > 1 else 2)
    train(_gpt2(), *_data(config), config)
    assert torch.get_num_threads() == before


def test_a_loss_mask_puts_the_loss_on_the_marked_tokens_alone():
    config = _config(steps=1, batch_size=2, lr=1e-2)
    stream, heldout = _data(config)
    mask = np.zeros(len(stream), dtype=bool)
    mask[[3, 4, 9, 20, 31]] = True  # targets 3, 4, 9 of the first sequence; 4 and 15 of the second
    model = _gpt2()
    start = copy.deepcopy(model)
    result = train(model, stream, heldout, config, loss_mask=mask)
    ids = torch.from_numpy(stream.astype(np.int64)).view(2, 16)
    with torch.no_grad():
        logp = torch.log_softmax(start(input_ids=ids).logits.float(), -1)
    by_hand = -torch.stack([logp[b, t - 1, ids[b, t]] for b, t in ((0, 3), (0, 4), (0, 9), (1, 4), (1, 15))]).mean()
    assert result.train_loss[0]["loss"] == pytest.approx(float(by_hand), rel=1e-5)
    plain = train(copy.deepcopy(start), stream, heldout, config)  # without the mask: every target counts
    assert plain.train_loss[0]["loss"] != pytest.approx(float(by_hand), rel=1e-3)


def test_a_batch_whose_targets_are_all_masked_changes_nothing():
    config = _config(steps=2, batch_size=2, warmup_steps=0)
    stream, heldout = _data(config)
    mask = np.ones(len(stream), dtype=bool)
    mask[:2 * 16] = False  # the first step's batch: prompt tokens only
    model = _gpt2()
    start = copy.deepcopy(model)
    # step 1 has no target; it must leave the weights as they were (step 2 then trains)
    one = train(copy.deepcopy(start), stream[:2 * 16 * 1].copy(), heldout, _config(steps=1, batch_size=2),
                loss_mask=mask[:32].copy())
    assert one.train_loss == [{"step": 1, "loss": None}] and one.final_loss is None
    weights = {n: p.detach().clone() for n, p in start.named_parameters()}
    assert weight_distance(one.model, weights) == 0
    both = train(model, stream, heldout, config, loss_mask=mask)
    assert both.train_loss[0]["loss"] is None and math.isfinite(both.train_loss[1]["loss"])
    assert weight_distance(both.model, weights) > 0
