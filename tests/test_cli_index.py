"""`contaudit index` and `contaudit probes` through the CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from contaudit.cli import app

from planted import make_planted

runner = CliRunner()


def test_index_then_probes(tmp_path):
    planted = make_planted(tmp_path, n_items=120, n_docs=200)
    out = tmp_path / "idx"
    result = runner.invoke(app, ["index", str(planted.corpus), "-b", str(planted.bench), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "seen" in result.output and "Most contaminated items" in result.output
    assert (out / "manifest.json").exists()
    probes = tmp_path / "probes.jsonl"
    result = runner.invoke(app, ["probes", str(out), "-o", str(probes), "--suffix-words", "16"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in probes.read_text().splitlines()]
    assert {r["probe_set"] for r in rows} == {"seen", "unseen"}
    manifest = json.loads((tmp_path / "probes.manifest.json").read_text())
    assert manifest["n_seen"] == sum(r["probe_set"] == "seen" for r in rows)
    assert "length_smd" in manifest["balance"]


def test_several_benchmarks_are_indexed_in_one_pass_each_into_its_own_index(tmp_path):
    planted = make_planted(tmp_path, n_items=90, n_docs=100)
    rows = planted.bench.read_text().splitlines()
    (tmp_path / "first.jsonl").write_text("\n".join(rows[:45]) + "\n")
    (tmp_path / "second.jsonl").write_text("\n".join(rows[45:]) + "\n")
    out = tmp_path / "indexes"
    result = runner.invoke(app, ["index", str(planted.corpus), "-b", str(tmp_path / "first.jsonl"),
                                 "-b", str(tmp_path / "second.jsonl"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.count("scanned once") == 1 and result.output.count("Index written to") == 2
    alone = tmp_path / "alone"
    assert runner.invoke(app, ["index", str(planted.corpus), "-b", str(tmp_path / "second.jsonl"),
                               "-o", str(alone)]).exit_code == 0
    assert (out / "second" / "items.jsonl").read_bytes() == (alone / "items.jsonl").read_bytes()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "first.jsonl").write_text(rows[0] + "\n")
    clash = runner.invoke(app, ["index", str(planted.corpus), "-b", str(tmp_path / "first.jsonl"),
                                "-b", str(tmp_path / "b" / "first.jsonl"), "-o", str(tmp_path / "x")])
    assert clash.exit_code == 2 and "would share the index" in clash.output


def test_bad_benchmark_fails_cleanly_without_an_index(tmp_path):
    planted = make_planted(tmp_path, n_items=20, n_docs=20)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": "y"\n')
    out = tmp_path / "idx"
    result = runner.invoke(app, ["index", str(planted.corpus), "-b", str(bad), "-o", str(out)])
    assert result.exit_code == 2
    assert "bad.jsonl, record 2: malformed JSON" in result.output
    assert not out.exists()


def test_bad_corpus_record_is_skipped_and_counted_on_request(tmp_path):
    planted = make_planted(tmp_path, n_items=20, n_docs=20)
    with open(planted.corpus, "a") as f:
        f.write("{oops\n")
    out = tmp_path / "idx"
    result = runner.invoke(app, ["index", str(planted.corpus), "-b", str(planted.bench), "-o", str(out)])
    assert result.exit_code == 2 and "corpus.jsonl, record 21: malformed JSON" in result.output
    assert not out.exists()
    result = runner.invoke(app, ["index", str(planted.corpus), "-b", str(planted.bench), "-o", str(out),
                                 "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "1 corpus records skipped" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["corpus"]["documents"]["skipped"] == 1


def test_version_and_help():
    assert runner.invoke(app, ["--version"]).output.startswith("contaudit ")
    for cmd in ("index", "probes"):
        result = runner.invoke(app, [cmd, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_missing_index_for_probes(tmp_path):
    result = runner.invoke(app, ["probes", str(tmp_path / "nope"), "-o", str(tmp_path / "p.jsonl")])
    assert result.exit_code == 2 and "not an index directory" in result.output


def test_probes_on_a_folder_that_was_never_an_index_says_so(tmp_path):
    """It said the index 'was not finished (rerun contaudit index to resume)' (issue 25)."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("x")
    result = runner.invoke(app, ["probes", str(folder), "-o", str(tmp_path / "p.jsonl")])
    assert result.exit_code == 2 and "not an index directory: no manifest.json" in result.output
    assert "not finished" not in result.output
    (tmp_path / "notes.partial").mkdir()
    result = runner.invoke(app, ["probes", str(folder), "-o", str(tmp_path / "p.jsonl")])
    assert result.exit_code == 2 and "the index was not finished (notes.partial holds its build)" in result.output


def test_settings_take_the_protocols_names_and_the_old_flags_still_work_with_a_note(tmp_path):
    """One name per setting (issue 25): --skip-bad is the protocol's skip_bad, --match-on its match_on;
    --skip-bad-records and --match-rarity/--no-match-rarity keep working and say what they are now."""
    planted = make_planted(tmp_path, n_items=60, n_docs=80)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(planted.corpus.read_text() + "{broken\n")
    manifests = {}
    for name, flags in (("new", ["--skip-bad"]), ("old", ["--skip-bad-records"])):
        result = runner.invoke(app, ["index", str(corpus), "-b", str(planted.bench), "-o", str(tmp_path / name), *flags])
        assert result.exit_code == 0, result.output
        assert ("--skip-bad-records is now --skip-bad" in result.output) == (name == "old")
        manifests[name] = json.loads((tmp_path / name / "manifest.json").read_text())
        assert manifests[name]["parameters"]["skip_bad"] is True
    result = runner.invoke(app, ["index", str(corpus), "-b", str(planted.bench), "-o", str(tmp_path / "strict")])
    assert result.exit_code == 2 and "malformed JSON" in result.output  # without the flag: stop at the bad record
    for name, flags, wanted in (("length", ["--match-on", "length"], ["length"]),
                                ("old-length", ["--no-match-rarity"], ["length"]),
                                ("both", [], ["length", "rarity"]),
                                ("old-both", ["--match-rarity"], ["length", "rarity"])):
        out = tmp_path / f"{name}.jsonl"
        result = runner.invoke(app, ["probes", str(tmp_path / "new"), "-o", str(out), "--suffix-words", "16",
                                     "--min-seen", "1", *flags])
        assert result.exit_code == 0, result.output
        assert ("is now --match-on" in result.output) == name.startswith("old")
        assert json.loads((tmp_path / f"{name}.manifest.json").read_text())["parameters"]["match_on"] == wanted
    result = runner.invoke(app, ["probes", str(tmp_path / "new"), "-o", str(tmp_path / "x.jsonl"), "--match-on", "colour"])
    assert result.exit_code == 2 and "match_on" in result.output
