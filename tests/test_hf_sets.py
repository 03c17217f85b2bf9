"""Benchmarks from the local Hugging Face datasets cache (contaudit.hf_sets), read offline.

Each test builds a real cache entry in a temporary HF_HOME, the way ``datasets.load_dataset``
leaves one after a download (``HF_HOME/datasets/ORG___NAME/CONFIG/0.0.0/HASH/`` with
``dataset_info.json`` and ``NAME-SPLIT.arrow``), or a hub snapshot as ``huggingface-cli
download`` leaves one; nothing is ever fetched.
"""

from __future__ import annotations

import json
import shutil
import socket
import uuid
from pathlib import Path

import pytest

from contaudit.errors import InputError, ProtocolError
from contaudit.hf_sets import describe_hf_set, iter_hf_records, open_hf_set, parse_hf_set, records_sha256
from contaudit.io import corpus_units, iter_records, load_items
from contaudit.manifest import describe_path
from contaudit.protocol import load_protocol

from cli_helpers import cli, one_line_error

TEST_ROWS = [{"task_id": f"HumanEval/{i}", "prompt": f"def f{i}(x):\n    \"\"\"Return x plus {i}.\"\"\"\n",
              "canonical_solution": f"    return x + {i}\n", "entry_point": f"f{i}", "n": i} for i in range(6)]
SHADOW_ROWS = [{**r, "task_id": f"Later/{i}", "canonical_solution": f"    return x - {i}\n"}
               for i, r in enumerate(TEST_ROWS)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def cache_dataset(home: Path, repo_id: str, splits: dict[str, list[dict]], *, config: str | None = None) -> Path:
    """Put ``splits`` into HF_HOME's datasets cache as ``repo_id`` (config ``config``, else ``default``), exactly
    as ``load_dataset`` lays out a downloaded hub dataset; returns the config's cache directory."""
    import datasets

    name = repo_id.split("/")[-1]
    src = home.parent / "sources" / uuid.uuid4().hex / name
    for split, rows in splits.items():
        write_jsonl(src / f"{split}.jsonl", rows)
    if config is not None:  # a hub repo with named configs declares them in its README
        files = "".join(f"  - split: {split}\n    path: {split}.jsonl\n" for split in splits)
        (src / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n{files}---\n")
    scratch = home.parent / "scratch" / uuid.uuid4().hex
    datasets.load_dataset(str(src), config, cache_dir=str(scratch))
    entry = home / "datasets" / "___".join(repo_id.split("/")) / (config or "default")
    if entry.exists():
        shutil.rmtree(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(scratch / name / (config or "default"), entry)
    return entry


@pytest.fixture
def hf_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    for var in ("HF_DATASETS_CACHE", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def humaneval(hf_home, tmp_path):
    """``openai/humaneval`` cached with a test and a validation split, and the same rows as JSON Lines files."""
    cache_dataset(hf_home, "openai/humaneval", {"test": TEST_ROWS, "validation": SHADOW_ROWS})
    return write_jsonl(tmp_path / "test.jsonl", TEST_ROWS), write_jsonl(tmp_path / "shadow.jsonl", SHADOW_ROWS)


# --- the name --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, dataset, config, split", [
    ("hf:openai_humaneval:test", "openai_humaneval", None, "test"),
    ("hf:openai/gsm8k:main:test", "openai/gsm8k", "main", "test"),
    ("hf:cais/mmlu:abstract_algebra:validation", "cais/mmlu", "abstract_algebra", "validation"),
    ("hf:wikimedia/wikipedia:20231101.en:train", "wikimedia/wikipedia", "20231101.en", "train"),
])
def test_the_name_gives_dataset_config_and_split(text, dataset, config, split):
    hs = parse_hf_set(text)
    assert (hs.dataset, hs.config, hs.split) == (dataset, config, split)
    assert hs.source == text


@pytest.mark.parametrize("text, match", [
    ("hf:openai_humaneval", r"expected hf:DATASET:SPLIT or hf:DATASET:CONFIG:SPLIT"),
    ("hf:a:b:c:d", r"expected hf:DATASET:SPLIT or hf:DATASET:CONFIG:SPLIT"),
    ("hf:openai_humaneval:test[:10]", r"split slices are not supported"),
    ("hf:a/b/c:test", r"dataset 'a/b/c' is not a hub id"),
    ("hf::test", r"dataset '' is not a hub id"),
    ("hf:openai_humaneval:", r"split '' is not a split name"),
    ("hf:x:main:te-st", r"split 'te-st' is not a split name"),
])
def test_a_malformed_name_says_the_syntax(text, match):
    with pytest.raises(InputError, match=match) as info:
        parse_hf_set(text)
    assert str(info.value).startswith(text + ": ") and "\n" not in str(info.value)


# --- records equal the JSON Lines file's ---------------------------------------------------------------


def test_a_cached_split_reads_as_the_jsonl_file_of_the_same_records(humaneval):
    jsonl, _ = humaneval
    assert list(iter_records("hf:openai/humaneval:test")) == list(iter_records(jsonl))
    for kwargs in ({"id_field": "task_id", "text_field": None, "template": "{prompt}{canonical_solution}"},
                   {"id_field": "n", "text_field": "prompt"}, {"id_field": None, "text_field": "entry_point"}):
        assert load_items("hf:openai/humaneval:test", **kwargs) == load_items(jsonl, **kwargs)
    assert [it.id for it in load_items("hf:openai/humaneval:test", id_field="task_id", text_field="prompt")] == \
        [r["task_id"] for r in TEST_ROWS]


def test_a_name_without_org_reads_the_cache_not_a_local_directory_of_that_name(hf_home, tmp_path, monkeypatch):
    cache_dataset(hf_home, "humaneval", {"test": TEST_ROWS})
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "humaneval" / "test.jsonl", SHADOW_ROWS)  # what load_dataset("humaneval") would read
    rows = [rec for _, rec in iter_hf_records("hf:humaneval:test")]
    assert rows == TEST_ROWS


def test_configs_are_named_and_an_ambiguous_or_unknown_one_is_refused(hf_home):
    cache_dataset(hf_home, "openai/gsm", {"test": TEST_ROWS}, config="main")
    cache_dataset(hf_home, "openai/gsm", {"test": SHADOW_ROWS}, config="socratic")
    assert [r for _, r in iter_records("hf:openai/gsm:main:test")] == TEST_ROWS
    assert [r for _, r in iter_records("hf:openai/gsm:socratic:test")] == SHADOW_ROWS
    with pytest.raises(InputError, match=r"^hf:openai/gsm:test: dataset 'openai/gsm' has several configs "
                                         r"\(main, socratic\); name one, e.g. hf:openai/gsm:main:test$"):
        open_hf_set("hf:openai/gsm:test")
    with pytest.raises(InputError, match=r"^hf:openai/gsm:nope:test: config 'nope' of dataset 'openai/gsm' is not "
                                         r"in the local cache; configs there: main, socratic$"):
        open_hf_set("hf:openai/gsm:nope:test")


def test_a_snapshot_from_huggingface_cli_download_is_read_when_the_datasets_cache_lacks_it(hf_home):
    repo = hf_home / "hub" / "datasets--someorg--later"
    snapshot = repo / "snapshots" / ("ab" * 20)
    write_jsonl(snapshot / "data" / "test.jsonl", SHADOW_ROWS)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("ab" * 20)
    assert [r for _, r in iter_records("hf:someorg/later:test")] == SHADOW_ROWS
    with pytest.raises(InputError, match=r"no split 'validation' in the cached dataset 'someorg/later'; "
                                         r"splits there: test$"):
        open_hf_set("hf:someorg/later:validation")


# --- what is missing, in one line ---------------------------------------------------------------------


def test_a_dataset_not_in_the_cache_is_one_line_saying_nothing_is_downloaded_and_how_to_fetch_it(hf_home):
    with pytest.raises(InputError) as info:
        open_hf_set("hf:openai_humaneval:test")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("hf:openai_humaneval:test: dataset 'openai_humaneval' is not in the local Hugging "
                              "Face cache")
    assert "contaudit downloads nothing" in message
    assert "python -c \"import datasets; datasets.load_dataset('openai_humaneval', split='test')\"" in message
    assert "huggingface-cli download --repo-type dataset openai_humaneval" in message
    assert str(hf_home / "datasets") in message and "HF_DATASETS_CACHE" in message and "HF_HOME" in message
    with pytest.raises(InputError, match=r"load_dataset\('openai/gsm8k', 'main', split='test'\)"):
        open_hf_set("hf:openai/gsm8k:main:test")


def test_a_missing_split_names_the_splits_there(humaneval):
    with pytest.raises(InputError, match=r"^hf:openai/humaneval:train: no split 'train' in the cached dataset "
                                         r"'openai/humaneval'; splits there: (test, validation|validation, test)$"):
        load_items("hf:openai/humaneval:train")


def test_a_missing_text_or_id_field_names_the_fields(humaneval):
    fields = r"\['canonical_solution', 'entry_point', 'n', 'prompt', 'task_id'\]"
    with pytest.raises(InputError, match=rf"^hf:openai/humaneval:test, record 1: missing text field 'text'; "
                                         rf"fields are {fields}$"):
        load_items("hf:openai/humaneval:test")
    with pytest.raises(InputError, match=rf"^hf:openai/humaneval:test, record 1: missing id field 'id'; "
                                         rf"fields are {fields}$"):
        load_items("hf:openai/humaneval:test", text_field="prompt")
    with pytest.raises(InputError, match=r"template field 'solution' missing; fields are"):
        load_items("hf:openai/humaneval:test", text_field=None, template="{prompt}{solution}", id_field="task_id")


def test_the_cli_gives_one_line_and_exit_2_for_a_dataset_not_in_the_cache(hf_home, tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": "some corpus text"}])
    code, output = cli("index", corpus, "-b", "hf:openai_humaneval:test", "-o", tmp_path / "idx")
    one_line_error(code, output, "hf:openai_humaneval:test", "contaudit downloads nothing")
    assert not (tmp_path / "idx").exists()


def test_a_cached_dataset_is_refused_as_a_corpus_by_name(hf_home):
    with pytest.raises(InputError, match=r"^hf:openai/humaneval:test: a dataset in the Hugging Face cache is read "
                                         r"as a benchmark, not as a corpus"):
        corpus_units(["hf:openai/humaneval:test"])


# --- offline, whatever the environment says -----------------------------------------------------------


def test_no_network_access_is_attempted_even_when_offline_mode_is_not_set(humaneval, monkeypatch):
    import urllib.error
    import urllib.request

    import datasets
    import huggingface_hub.constants as hub_constants

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(urllib.error.URLError):  # the trap works: a real request is caught
        urllib.request.urlopen("https://huggingface.co/api/datasets/openai/humaneval", timeout=1)
    assert attempts
    attempts.clear()

    assert len(load_items("hf:openai/humaneval:test", text_field="prompt", id_field="task_id")) == len(TEST_ROWS)
    assert describe_path("hf:openai/humaneval:validation")["rows"] == len(SHADOW_ROWS)
    for missing in ("hf:openai_humaneval:test", "hf:openai/humaneval:train", "hf:openai/humaneval:main:test"):
        with pytest.raises(InputError):
            open_hf_set(missing)
    assert attempts == []
    assert datasets.config.HF_HUB_OFFLINE is False and hub_constants.HF_HUB_OFFLINE is False  # restored


# --- identity -------------------------------------------------------------------------------------------


def test_the_identity_hash_is_of_the_records_and_changes_with_the_cached_data(hf_home, humaneval):
    jsonl, _ = humaneval
    first = describe_path("hf:openai/humaneval:test")
    assert first == describe_hf_set("hf:openai/humaneval:test")
    assert first["kind"] == "hf-dataset" and first["rows"] == len(TEST_ROWS) and first["split"] == "test"
    assert first["config"] == "default" and first["size"] > 0
    assert first["sha256"] == records_sha256(rec for _, rec in iter_records(jsonl))

    cache_dataset(hf_home, "openai/humaneval", {"test": TEST_ROWS, "validation": SHADOW_ROWS})  # the same data again
    assert describe_path("hf:openai/humaneval:test")["sha256"] == first["sha256"]
    changed = [dict(r) for r in TEST_ROWS]
    changed[3]["canonical_solution"] = "    return x * 3\n"
    cache_dataset(hf_home, "openai/humaneval", {"test": changed, "validation": SHADOW_ROWS})
    assert describe_path("hf:openai/humaneval:test")["sha256"] != first["sha256"]
    assert describe_path("hf:openai/humaneval:test")["sha256"] == records_sha256(changed)


# --- protocols ------------------------------------------------------------------------------------------


def _protocol(tmp_path: Path, sets: str) -> Path:
    for d in ("m", "c"):
        (tmp_path / d).mkdir(exist_ok=True)
    path = tmp_path / f"p-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(f'[models.suspect]\npath = "m"\n[models.clean]\npath = "c"\n{sets}')
    return path


def test_a_protocol_with_hf_sets_validates_and_its_sets_equal_the_jsonl_protocols(humaneval, tmp_path):
    from contaudit.audit import materialize_sets

    fields = 'id_field = "task_id"\ntemplate = "{prompt}{canonical_solution}"\n'
    from_hf = load_protocol(_protocol(tmp_path, f'[sets.test]\npath = "hf:openai/humaneval:test"\n{fields}'
                                                f'[sets.shadow]\npath = "hf:openai/humaneval:validation"\n{fields}'))
    assert str(from_hf.sets.test.path) == "hf:openai/humaneval:test"
    from_files = load_protocol(_protocol(tmp_path, f'[sets.test]\npath = "test.jsonl"\n{fields}'
                                                   f'[sets.shadow]\npath = "shadow.jsonl"\n{fields}'))
    hf_sets, _ = materialize_sets(from_hf, tmp_path / "run-hf")
    file_sets, _ = materialize_sets(from_files, tmp_path / "run-files")
    for name in ("test", "shadow", "benchmark"):
        assert hf_sets[name].read_bytes() == file_sets[name].read_bytes()
    assert from_hf.to_dict()["sets"]["test"]["path"] == "hf:openai/humaneval:test"


def test_a_random_split_of_a_cached_dataset_records_its_identity(humaneval, tmp_path):
    from contaudit.audit import materialize_sets

    protocol = load_protocol(_protocol(tmp_path, '[sets.random_split]\npath = "hf:openai/humaneval:test"\n'
                                                 'id_field = "task_id"\ntext_field = "prompt"\n'))
    materialize_sets(protocol, tmp_path / "run")
    split = json.loads((tmp_path / "run" / "sets" / "split.json").read_text())
    assert split["input"]["path"] == "hf:openai/humaneval:test"
    assert split["input"]["sha256"] == records_sha256(TEST_ROWS)


def test_a_suite_benchmark_from_the_cache_validates_and_a_missing_one_names_its_key(humaneval, tmp_path):
    from contaudit.suite.spec import load_suite

    for d in ("m", "c"):
        (tmp_path / d).mkdir()
    suite = tmp_path / "suite.toml"
    body = ('[models.suspect]\npath = "m"\n[models.clean]\npath = "c"\n'
            '[[benchmarks]]\nname = "humaneval"\n[benchmarks.test]\npath = "hf:openai/humaneval:test"\n'
            '[benchmarks.shadow]\npath = "hf:openai/humaneval:validation"\n')
    suite.write_text(body)
    loaded = load_suite(suite)
    assert str(loaded.protocol(loaded.benchmarks[0]).sets.shadow.path) == "hf:openai/humaneval:validation"
    suite.write_text(body.replace("hf:openai/humaneval:validation", "hf:openai/humaneval:later"))
    with pytest.raises(ProtocolError, match=r"key `benchmarks\[0\].shadow.path`: hf:openai/humaneval:later: no "
                                            r"split 'later'"):
        load_suite(suite)


@pytest.mark.parametrize("path, match", [
    ("hf:openai_humaneval:test", (r"key `sets.test.path`: hf:openai_humaneval:test: dataset 'openai_humaneval' is "
                                  r"not in the local Hugging Face cache")),
    ("hf:openai/humaneval:train", r"key `sets.test.path`: hf:openai/humaneval:train: no split 'train'"),
    ("hf:openai/humaneval", r"key `sets.test.path`: hf:openai/humaneval: expected hf:DATASET:SPLIT"),
])
def test_a_protocol_naming_a_missing_dataset_or_split_fails_on_the_key(humaneval, tmp_path, path, match):
    protocol = _protocol(tmp_path, f'[sets.test]\npath = "{path}"\n[sets.shadow]\npath = "shadow.jsonl"\n')
    with pytest.raises(ProtocolError, match=match) as info:
        load_protocol(protocol)
    assert str(info.value).startswith(str(protocol)) and "\n" not in str(info.value)


def test_contaudit_index_on_a_cached_split_writes_the_index_of_its_jsonl_file(humaneval, tmp_path):
    jsonl, _ = humaneval
    corpus = write_jsonl(tmp_path / "corpus" / "docs.jsonl",
                         [{"text": "filler " * 20 + TEST_ROWS[2]["prompt"] + TEST_ROWS[2]["canonical_solution"]}])
    options = ["--template", "{prompt}{canonical_solution}", "--id-field", "task_id", "--n", "5"]
    code, output = cli("index", corpus, "-b", "hf:openai/humaneval:test", "-o", tmp_path / "from-hf", *options)
    assert code == 0, output
    code, output = cli("index", corpus, "-b", jsonl, "-o", tmp_path / "from-file", *options)
    assert code == 0, output
    items = [(tmp_path / d / "items.jsonl").read_text() for d in ("from-hf", "from-file")]
    assert items[0] == items[1] and '"status": "seen"' in items[0]
    benchmark = json.loads((tmp_path / "from-hf" / "manifest.json").read_text())["benchmark"]
    assert benchmark["path"] == "hf:openai/humaneval:test" and benchmark["sha256"] == records_sha256(TEST_ROWS)


def test_contaudit_score_on_a_cached_split_gives_the_scores_of_its_jsonl_file(humaneval, tmp_path):
    from tiny_models import save_tiny_model

    jsonl, _ = humaneval
    model = save_tiny_model(tmp_path / "tiny", arch="gpt2")
    rows = {}
    for name, data in (("hf", "hf:openai/humaneval:test"), ("file", jsonl)):
        out = tmp_path / name / "scores.jsonl"
        code, output = cli("score", "--model", model, "--data", data, "--out", out, "--text-field", "prompt",
                           "--id-field", "task_id", "--device", "cpu", "--no-cache")
        assert code == 0, output
        rows[name] = out.read_text()
    assert rows["hf"] == rows["file"] and rows["hf"].count("\n") == len(TEST_ROWS)
    manifest = json.loads((tmp_path / "hf" / "scores.manifest.json").read_text())
    assert manifest["inputs"][0]["path"] == "hf:openai/humaneval:test"
    assert manifest["inputs"][0]["sha256"] == records_sha256(TEST_ROWS)
