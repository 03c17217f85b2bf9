"""``score()``: output format, manifest, skips, long items and settings checks."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest
import torch

from contaudit.errors import InputError
from contaudit.scoring import ScoreSettings, score
from tiny_models import save_tiny_model

LIKELIHOOD_FIELDS = ["id", "n_tokens", "nll_mean", "ppl", "mink_10", "mink_20", "minkpp_10", "minkpp_20", "zlib_ratio",
                     "n_bytes", "nll_per_byte"]
COMPLETION_FIELDS = ["suffix_tokens", "exact_match", "token_match_frac", "lcp_tokens", "edit_similarity",
                     "suffix_logprob", "prefix_tokens"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "llama", arch="llama", n_positions=64)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def probes(tmp_path):
    long_text = "the model said what it had seen and then " * 40  # hundreds of tokens: past max-length 64
    rows = [
        {"id": "a", "probe_set": "seen", "text": "def score(item, 3): return value", "prefix": "def score(item, 3):",
         "suffix": " return value"},
        {"id": "empty", "probe_set": "seen", "text": "   ", "prefix": "x", "suffix": " y"},
        {"id": "long", "probe_set": "unseen", "text": long_text, "prefix": long_text[:-60], "suffix": long_text[-60:]},
        {"id": "no-prefix", "probe_set": "unseen", "text": "new data", "prefix": "", "suffix": "new data"},
        {"id": "huge-suffix", "probe_set": "unseen", "text": long_text, "prefix": "the", "suffix": long_text},
        {"id": "dup-text", "probe_set": "seen", "text": "def score(item, 3): return value",
         "prefix": "def score(item, 3):", "suffix": " return value"},
    ]
    return write_jsonl(tmp_path / "probes.jsonl", rows)


def test_output_rows_fields_order_and_manifest(tmp_path, model_dir, probes):
    out = tmp_path / "scores" / "tiny.jsonl"
    result = score(model_dir, probes, out, completion=True, device="cpu")
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["a", "long", "dup-text"]  # input order, skipped items left out
    for r in rows:
        assert list(r) == LIKELIHOOD_FIELDS + COMPLETION_FIELDS
    assert rows[0] == rows[2] | {"id": "a"}  # the same text scores the same
    long = rows[1]
    assert long["n_tokens"] > 64  # longer than max-length: scored by sliding windows, every token once
    assert long["prefix_tokens"] + long["suffix_tokens"] + 1 <= 64  # prompt truncated from the left to fit
    manifest = json.loads((tmp_path / "scores" / "tiny.manifest.json").read_text())
    assert result.manifest == tmp_path / "scores" / "tiny.manifest.json"
    assert manifest["stage"] == "score"
    assert manifest["counts"] == {"items": 6, "scored": 3, "skipped": 3, "from_cache": 0,
                                  "skip_reasons": {"empty_text": 1, "empty_prefix": 1, "suffix_too_long": 1}}
    assert [(s["id"], s["record"], s["reason"]) for s in manifest["skipped"]] == [
        ("empty", 2, "empty_text"), ("no-prefix", 4, "empty_prefix"), ("huge-suffix", 5, "suffix_too_long")]
    assert manifest["parameters"]["max_length"] == 64 and manifest["parameters"]["stride"] == 32
    assert manifest["model"]["weights"][0]["sha256"] and manifest["model"]["config_sha256"]
    assert manifest["tokenizer"]["context_token_id"] == 1
    assert manifest["device"] == "cpu" and manifest["dtype"] == "float32"
    assert manifest["inputs"][0]["sha256"] and manifest["outputs"][0]["path"] == str(out)
    assert manifest["versions"]["torch"]


def test_stride_changes_only_long_items(tmp_path, model_dir, probes):
    a = read_rows(score(model_dir, probes, tmp_path / "a.jsonl", stride=32, use_cache=False, device="cpu").out)
    b = read_rows(score(model_dir, probes, tmp_path / "b.jsonl", stride=8, use_cache=False, device="cpu").out)
    by_id = {r["id"]: r for r in b}
    for r in a:
        if r["n_tokens"] < 64:
            assert r["nll_mean"] == pytest.approx(by_id[r["id"]]["nll_mean"], abs=1e-5)
        else:  # more context per token: a different (valid) estimate of the same tokens
            assert r["n_tokens"] == by_id[r["id"]]["n_tokens"] and r["nll_mean"] != by_id[r["id"]]["nll_mean"]


def test_likelihood_only_ignores_prefix_rules(tmp_path, model_dir, probes):
    rows = read_rows(score(model_dir, probes, tmp_path / "l.jsonl", device="cpu").out)
    assert [r["id"] for r in rows] == ["a", "long", "no-prefix", "huge-suffix", "dup-text"]
    assert list(rows[0]) == LIKELIHOOD_FIELDS


def test_completion_needs_prefix_and_suffix_fields(tmp_path, model_dir):
    data = write_jsonl(tmp_path / "items.jsonl", [{"id": "a", "text": "x y", "prefix": "x", "suffix": " y"},
                                                  {"id": "b", "text": "no probe fields"}])
    with pytest.raises(InputError, match=r"items.jsonl, record 2: .*'prefix' is missing"):
        score(model_dir, data, tmp_path / "o.jsonl", completion=True, device="cpu")


@pytest.mark.parametrize("options,message", [
    ({"batch_tokens": 0}, "`batch_tokens` must be an integer >= 1"),
    ({"max_length": 1}, "`max_length` must be an integer >= 2"),
    ({"max_length": 16, "stride": 16}, r"`stride` \(16\) must be smaller than `max_length` \(16\)"),
    ({"max_length": 65}, "`max_length` 65 exceeds the model's context length 64"),
    ({"device": "tpu"}, "`device` must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
])
def test_bad_settings_name_the_parameter(tmp_path, model_dir, probes, options, message):
    with pytest.raises(InputError, match=message):
        score(model_dir, probes, tmp_path / "o.jsonl", **options)


def test_output_must_be_jsonl(tmp_path, model_dir, probes):
    with pytest.raises(InputError, match="must end with .jsonl"):
        score(model_dir, probes, tmp_path / "o.json")


def test_unknown_option_is_a_type_error(tmp_path, model_dir, probes):
    with pytest.raises(TypeError):
        score(model_dir, probes, tmp_path / "o.jsonl", batch_size=3)


def test_settings_object_and_overrides(tmp_path, model_dir, probes):
    settings = ScoreSettings(max_length=32, device="cpu")
    result = score(model_dir, probes, tmp_path / "o.jsonl", settings, stride=4)
    assert (result.settings["max_length"], result.settings["stride"]) == (32, 4)


def test_cpu_workers_do_not_change_scores(tmp_path, model_dir, probes):
    one = score(model_dir, probes, tmp_path / "one.jsonl", completion=True, device="cpu", use_cache=False,
                batch_tokens=64, completion_batch_tokens=64)
    two = score(model_dir, probes, tmp_path / "two.jsonl", completion=True, device="cpu", use_cache=False,
                batch_tokens=64, completion_batch_tokens=64, threads=2)
    assert (one.settings["cpu_workers"], one.settings["threads_per_worker"]) == (1, 1)  # a tiny model: one thread
    assert (two.settings["cpu_workers"], two.settings["threads_per_worker"]) == (2, 1)
    assert read_rows(one.out) == read_rows(two.out)  # every batch runs on one thread either way: bit for bit


def test_suffix_logprob_is_the_teacher_forced_mean_over_the_suffix(tmp_path, model_dir, probes):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "s.jsonl"
    score(model_dir, probes, out, completion=True, device="cpu", use_cache=False)
    rows = {r["id"]: r for r in read_rows(out)}
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    context = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    # "def score(item, 3):" + " return value": no whitespace to move across the boundary
    prompt = [context] + tok("def score(item, 3):", add_special_tokens=False)["input_ids"]
    suffix = tok(" return value", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logp = torch.log_softmax(model(torch.tensor([prompt + suffix])).logits[0].double(), -1)
    expected = sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(suffix)) / len(suffix)
    assert rows["a"]["suffix_tokens"] == len(suffix)
    assert rows["a"]["suffix_logprob"] == pytest.approx(expected, abs=1e-4)
    assert rows["long"]["suffix_logprob"] < 0


def test_progress_reports_each_phase_to_its_total(tmp_path, model_dir, probes):
    calls = []
    score(model_dir, probes, tmp_path / "p.jsonl", completion=True, device="cpu", use_cache=False,
          progress=lambda phase, done, total: calls.append((phase, done, total)))
    phases = list(dict.fromkeys(phase for phase, _, _ in calls))
    assert phases == ["likelihood", "suffix log-prob", "completion"]
    for phase in phases:
        last = [c for c in calls if c[0] == phase][-1]
        assert last[1] == last[2] > 0  # each bar ends full


def test_bytes_and_nll_per_byte_of_ascii_non_ascii_and_windowed_items(tmp_path, model_dir):
    from transformers import AutoTokenizer

    texts = {"ascii": "def score(item, 3): return value", "accents": "naïve café, déjà vu — über",
             "cjk": "東京の data 模型 🙂", "long": "the model said what it had seen — café 東京 " * 12}
    data = write_jsonl(tmp_path / "items.jsonl", [{"id": k, "text": t} for k, t in texts.items()])
    rows = {r["id"]: r for r in read_rows(score(model_dir, data, tmp_path / "b.jsonl", device="cpu").out)}
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert rows["long"]["n_tokens"] > 64  # past max-length 64: sliding windows
    for name, text in texts.items():
        r = rows[name]
        assert r["n_bytes"] == len(text.encode("utf-8"))
        assert r["n_tokens"] == len(tok(text, add_special_tokens=False)["input_ids"])  # BOS is context, not scored
        assert r["nll_per_byte"] * r["n_bytes"] == pytest.approx(r["nll_mean"] * r["n_tokens"], rel=1e-6)
    assert rows["cjk"]["n_bytes"] > len(texts["cjk"])  # bytes, not characters


# Two tokenizers of one alphabet: one token per character, or one per pair of characters (a BPE whose merges join
# every pair, after a pre-tokenizer that cuts the text into pairs). Characters of 1, 2 and 3 UTF-8 bytes.
ALPHABET = ["a", "b", "é", "ж", "東"]
BOS = "<|endoftext|>"
NEVER = -1e4  # the logit of tokens a uniform model never predicts


def build_tokenizer(kind: str, *, context: bool = True):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if kind == "bytes":  # every UTF-8 byte one token: byte-level BPE without merges
        tokens = sorted(pre_tokenizers.ByteLevel.alphabet())
        tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate([BOS] + tokens)}, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
    elif kind == "chars":
        tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate([BOS] + ALPHABET)}, merges=[]))
    elif kind == "pairs":
        merges = list(itertools.product(ALPHABET, ALPHABET))
        vocab = [BOS] + ALPHABET + [x + y for x, y in merges]
        tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(vocab)}, merges=merges))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(".."), behavior="isolated")
    else:
        raise ValueError(kind)
    specials = {"bos_token": BOS, "eos_token": BOS} if context else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, **specials)


def save_uniform_model(path, tokenizer, predicted: list[str]):
    """A GPT-2 whose next-token distribution is uniform over the tokens ``predicted``, whatever the input.

    Every weight is zero, so every hidden state is the final layer norm's bias, here e_0, and the logits are
    column 0 of the (untied) output head: 0 for the predicted tokens, NEVER for the others.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=8, n_layer=1, n_head=1,
                        tie_word_embeddings=False)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight[:, 0] = NEVER
        model.lm_head.weight[tokenizer.convert_tokens_to_ids(predicted), 0] = 0.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def alphabet_texts(tmp_path_factory):
    """Random even-length strings over ALPHABET; the longest exceed the 64-token context of both models."""
    rng = random.Random(0)
    rows = [{"id": f"t{n}", "text": "".join(rng.choice(ALPHABET) for _ in range(2 * half))}
            for n, half in enumerate([1, 3, 8, 20, 45, 90])]
    return write_jsonl(tmp_path_factory.mktemp("alpha") / "texts.jsonl", rows), [r["text"] for r in rows]



def test_per_byte_nll_agrees_across_tokenizers_against_theory(tmp_path, alphabet_texts):
    """Uniform over characters, or uniform over pairs of characters: the same distribution over even-length texts,
    p(text) = 5^-n_chars. Per token the two differ twofold (log 5 against log 25 nats); per byte both give
    n_chars * log 5 / n_bytes, what theory says for each text, and therefore agree."""
    data, texts = alphabet_texts
    pairs = [x + y for x, y in itertools.product(ALPHABET, ALPHABET)]
    rows = {}
    for kind, predicted in (("chars", ALPHABET), ("pairs", pairs)):
        path = save_uniform_model(tmp_path / kind, build_tokenizer(kind), predicted)
        rows[kind] = read_rows(score(path, data, tmp_path / f"{kind}.jsonl", device="cpu", use_cache=False).out)
    for text, c, p in zip(texts, rows["chars"], rows["pairs"]):
        n_chars, n_bytes = len(text), len(text.encode("utf-8"))
        assert n_bytes > n_chars  # characters of 2 and 3 bytes: a per-character count would fail below
        assert (c["n_tokens"], p["n_tokens"]) == (n_chars, n_chars // 2)  # every token scored after the BOS
        assert c["nll_mean"] == pytest.approx(math.log(5), rel=1e-6)
        assert p["nll_mean"] == pytest.approx(math.log(25), rel=1e-6)  # per token: twice as much
        assert c["n_bytes"] == p["n_bytes"] == n_bytes
        theory = n_chars * math.log(5) / n_bytes
        assert c["nll_per_byte"] == pytest.approx(theory, rel=1e-6)
        assert p["nll_per_byte"] == pytest.approx(theory, rel=1e-6)
    assert rows["chars"][-1]["n_tokens"] > 64 and rows["pairs"][-1]["n_tokens"] > 64  # windows on both


def test_uniform_byte_model_scores_log_256_nats_per_byte(tmp_path):
    """Uniform over the 256 byte values under a byte tokenizer: exactly log 256 nats per byte, for any text."""
    texts = ["plain ascii text.", "naïve café — déjà vu", "東京の模型 🙂 data", "ж" * 100]
    data = write_jsonl(tmp_path / "texts.jsonl", [{"id": f"t{n}", "text": t} for n, t in enumerate(texts)])
    tokenizer = build_tokenizer("bytes")
    path = save_uniform_model(tmp_path / "bytes", tokenizer, sorted(set(tokenizer.get_vocab()) - {BOS}))
    rows = read_rows(score(path, data, tmp_path / "bytes.jsonl", device="cpu", use_cache=False).out)
    for text, r in zip(texts, rows):
        assert r["n_tokens"] == r["n_bytes"] == len(text.encode("utf-8"))
        assert r["nll_mean"] == pytest.approx(math.log(256), rel=1e-6)
        assert r["nll_per_byte"] == pytest.approx(math.log(256), rel=1e-6)


def test_without_a_context_token_the_first_token_is_unscored_but_its_bytes_count(tmp_path, alphabet_texts):
    """The documented caveat: no BOS and no EOS, so the first character is context only."""
    data, texts = alphabet_texts
    path = save_uniform_model(tmp_path / "chars", build_tokenizer("chars", context=False), ALPHABET)
    rows = read_rows(score(path, data, tmp_path / "c.jsonl", device="cpu", use_cache=False).out)
    for text, r in zip(texts, rows):
        assert r["n_tokens"] == len(text) - 1 and r["n_bytes"] == len(text.encode("utf-8"))
        assert r["nll_per_byte"] == pytest.approx((len(text) - 1) * math.log(5) / r["n_bytes"], rel=1e-6)
