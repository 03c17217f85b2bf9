"""One model split across devices: the placement plan, and scores equal to one device's.

No GPU is needed: the split is tested on two "devices" that are both the CPU, with the
same accelerate hooks that move activations between GPUs.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from contaudit.cli import app
from contaudit.models import ModelError, load_model, plan_placement, resolve_model
from contaudit.scoring import score
from test_scoring_replicas import write_probes
from tiny_models import build_tiny_tokenizer, save_tiny_model

SETTINGS = {"device": "cpu", "max_length": 48, "batch_tokens": 96, "completion_batch_tokens": 96, "completion": True,
            "use_cache": False}


def empty_llama(layers: int, *, tied: bool, vocab: int = 384, hidden: int = 64):
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()
    return model


def layers_on(placement: dict, device: int) -> list[int]:
    return [int(n.rsplit(".", 1)[1]) for n, d in placement.items() if ".layers." in n and d == device]


def test_placement_spreads_layers_in_order_and_keeps_a_tied_head_with_the_embedding():
    model = empty_llama(8, tied=True)
    two = plan_placement(model, 2, dtype=torch.bfloat16)
    assert two["model.embed_tokens"] == two["lm_head"] == 0  # tied weights live once, with the embedding
    assert two["model.norm"] == 1
    assert layers_on(two, 0) == [0, 1, 2, 3] and layers_on(two, 1) == [4, 5, 6, 7]  # balanced by bytes, in order
    four = plan_placement(model, 4, dtype=torch.bfloat16)
    assert [len(layers_on(four, d)) for d in range(4)] == [2, 2, 2, 2]
    uneven = plan_placement(model, 2, dtype=torch.bfloat16, capacities=[3 << 30, 1 << 30])  # shares follow free memory
    assert len(layers_on(uneven, 0)) == 6 and len(layers_on(uneven, 1)) == 2
    with pytest.raises(ModelError, match="do not fit its devices: device 0 would hold"):
        plan_placement(model, 2, dtype=torch.bfloat16, capacities=[10_000, 10_000])
    untied = plan_placement(empty_llama(8, tied=False, vocab=4096), 2, dtype=torch.bfloat16)
    assert untied["lm_head"] == 1 and untied["model.embed_tokens"] == 0  # a large untied head weighs on the last one


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A Llama of four layers (untied head) and the tests' GPT-2 (head tied to the embedding)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("models")
    tokenizer = build_tiny_tokenizer()
    tokenizer.bos_token, tokenizer.eos_token = "<s>", "</s>"
    torch.manual_seed(1)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=64, initializer_range=0.3, tie_word_embeddings=False,
                                         bos_token_id=1, eos_token_id=2))
    llama.save_pretrained(root / "llama4")
    tokenizer.save_pretrained(root / "llama4")
    return {"llama4": root / "llama4", "gpt2": save_tiny_model(root / "gpt2", arch="gpt2", n_positions=64)}


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    return write_probes(tmp_path_factory.mktemp("d") / "probes.jsonl", 12, seed=7)


@pytest.mark.parametrize("name", ["llama4", "gpt2"])
def test_a_model_split_across_two_cpu_devices_scores_as_one(tmp_path, models, probes, name):
    loaded = load_model(resolve_model(models[name]), devices=("cpu", "cpu"))
    placement = loaded.model.contaudit_placement
    assert set(placement.values()) == {0, 1}  # both devices hold part of the model ...
    assert all(hasattr(loaded.model.get_submodule(block), "_hf_hook") for block in placement)  # ... moved by hooks
    one = score(models[name], probes, tmp_path / "one.jsonl", **SETTINGS)
    split = score(models[name], probes, tmp_path / "split.jsonl", devices=("cpu", "cpu"), **SETTINGS)
    assert (tmp_path / "split.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()  # likelihood + completion
    assert all("nll_per_byte" in json.loads(line) for line in split.out.read_text().splitlines())
    assert split.device == "cpu+cpu" and one.device == "cpu"
    assert split.settings["head_on_scored_positions_only"]  # the fast path, across the split
    assert {d for d in split.settings["placement"].values()} == {"cpu#0", "cpu#1"}


def test_cli_splits_a_model_with_devices(tmp_path, models, probes):
    out = tmp_path / "cli.jsonl"
    result = CliRunner().invoke(app, ["score", "--model", str(models["llama4"]), "--data", str(probes), "--out",
                                      str(out), "--device", "cpu", "--devices", "cpu,cpu", "--max-length", "48"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(out.with_name("cli.manifest.json").read_text())
    assert manifest["device"] == "cpu+cpu" and manifest["parameters"]["devices"] == ["cpu", "cpu"]
    bad = CliRunner().invoke(app, ["score", "--model", str(models["llama4"]), "--data", str(probes), "--out",
                                   str(tmp_path / "bad.jsonl"), "--devices", "cuda:0,cpu"])
    assert bad.exit_code == 2 and "`devices` must be a list of 'cuda:N' names" in bad.output
