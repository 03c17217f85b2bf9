"""Readers: every supported format, and a clear error for every kind of bad input."""

from __future__ import annotations

import gzip
import json

import pytest

from contaudit.errors import InputError
from contaudit.io import ReadStats, iter_documents, iter_records, list_text_files, load_items


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_jsonl_gz_zst_parquet_and_saved_dataset_read_the_same(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    rows = [{"id": f"r{i}", "text": f"text number {i}"} for i in range(5)]
    payload = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (tmp_path / "a.jsonl").write_bytes(payload)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(payload))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(payload))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    for name in ("a.jsonl", "a.jsonl.gz", "a.jsonl.zst", "a.parquet", "saved"):
        got = [rec for _, rec in iter_records(tmp_path / name)]
        assert got == rows, name


def test_template_joins_fields(tmp_path):
    path = write_lines(tmp_path / "b.jsonl", [json.dumps({"qid": 7, "question": "Q?", "answer": "A."})])
    items = load_items(path, template="{question}\n{answer}", id_field="qid")
    assert items[0].id == "7" and items[0].text == "Q?\nA."


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "b.jsonl", ['{"id": 1, "text": "ok"}', '{"id": 2, "text": '])
    with pytest.raises(InputError, match=r"b\.jsonl, record 2: malformed JSON"):
        load_items(path)


def test_skip_bad_records_counts_what_it_skips(tmp_path):
    path = write_lines(tmp_path / "b.jsonl", ['{"id": 1, "text": "ok"}', "not json", '{"id": 3}', "[1, 2]"])
    stats = ReadStats()
    items = load_items(path, skip_bad=True, stats=stats)
    assert [it.id for it in items] == ["1"]
    assert stats.read == 1 and stats.skipped == 3
    assert any("record 3" in ex and "missing text field" in ex for ex in stats.examples)


def test_missing_text_field(tmp_path):
    path = write_lines(tmp_path / "b.jsonl", ['{"id": 1, "body": "x"}'])
    with pytest.raises(InputError, match=r"record 1: missing text field 'text'; fields are \['body', 'id'\]"):
        load_items(path)


def test_missing_template_field(tmp_path):
    path = write_lines(tmp_path / "b.jsonl", ['{"id": 1, "question": "x"}'])
    with pytest.raises(InputError, match=r"record 1: template field 'answer' missing"):
        load_items(path, template="{question} {answer}")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(InputError, match=r"empty\.jsonl: no items found"):
        load_items(path)


def test_non_utf8_jsonl(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"id": 1, "text": "ok"}\n{"id": 2, "text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"latin\.jsonl, record 2: not valid UTF-8 at byte 22"):
        load_items(path)


def test_non_utf8_text_file_in_corpus_directory(tmp_path):
    from contaudit.index import IndexConfig
    from contaudit.index.scan import CorpusUnit, iter_unit_documents

    (tmp_path / "good.py").write_text("x = 1\n")
    (tmp_path / "bad.py").write_bytes(b"s = 'caf\xe9'\n")
    unit = CorpusUnit(tmp_path, tuple(list_text_files(tmp_path)))
    with pytest.raises(InputError, match=r"bad\.py: not valid UTF-8 at byte 8"):
        list(iter_unit_documents(unit, IndexConfig(), ReadStats()))
    stats = ReadStats()
    docs = list(iter_unit_documents(unit, IndexConfig(skip_bad=True), stats))
    assert [d.source.endswith("good.py") for d in docs] == [True] and stats.skipped == 1


def test_duplicate_ids_are_an_error_even_when_skipping(tmp_path):
    path = write_lines(tmp_path / "b.jsonl", ['{"id": "a", "text": "x"}', '{"id": "a", "text": "y"}'])
    with pytest.raises(InputError, match=r"record 2: duplicate id 'a' \(first seen at record 1\)"):
        load_items(path, skip_bad=True)


def test_nonexistent_path(tmp_path):
    with pytest.raises(InputError, match=r"nope\.jsonl: no such file or directory"):
        load_items(tmp_path / "nope.jsonl")


def test_unknown_format(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n")
    with pytest.raises(InputError, match=r"data\.csv: unknown record format"):
        list(iter_records(path))


def test_missing_parquet_column_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"id": 1, "body": "x"}]), tmp_path / "c.parquet")
    with pytest.raises(InputError, match=r"c\.parquet, record 1: missing text field 'text'"):
        list(iter_documents(tmp_path / "c.parquet"))


def test_text_dir_globs_and_hidden_dirs(tmp_path):
    for rel in ("a.py", "sub/b.py", "sub/c.txt", ".git/d.py", "__pycache__/e.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    names = [p.relative_to(tmp_path).as_posix() for p in list_text_files(tmp_path, ["*.py"], ["sub/*"])]
    assert names == ["a.py"]


@pytest.mark.parametrize("value", ["null", "true", "1.5", '{"a": 1}', '""'])
def test_ids_that_are_not_strings_or_integers_are_refused(tmp_path, value):
    from contaudit.io import load_items

    path = tmp_path / "bench.jsonl"
    path.write_text('{"id": "ok", "text": "a"}\n{"id": ' + value + ', "text": "b"}\n')
    with pytest.raises(InputError, match=r"bench.jsonl.*record 2.*id field 'id' must be a non-empty string or an "
                                         r"integer; got "):
        load_items(path)


def test_integer_ids_stay_accepted(tmp_path):
    from contaudit.io import load_items

    path = tmp_path / "bench.jsonl"
    path.write_text('{"id": 7, "text": "a"}\n')
    assert load_items(path)[0].id == "7"


@pytest.mark.parametrize("template", ["{text", "{0}", "{text.upper}", "{text[0]}"])
def test_a_bad_template_is_one_line_naming_the_file(tmp_path, template):
    from contaudit.io import load_items

    path = tmp_path / "bench.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n')
    with pytest.raises(InputError, match=r"bench.jsonl.*bad template .*use named fields"):
        load_items(path, text_field=None, template=template)
