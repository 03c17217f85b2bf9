"""Protocol loading and validation (contaudit.protocol), and the shipped protocols."""

from __future__ import annotations

import re
import time
from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contaudit.cli import app
from contaudit.errors import ProtocolError
from contaudit.protocol import AnalysisSettings, ProbeConfig, load_analysis_settings, load_protocol

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["default", "strict", "quick"]

VALID = """
name = "unit"
[models.suspect]
path = "models/suspect"
[models.clean]
path = "models/clean"
[sets.test]
path = "data/test.jsonl"
[sets.shadow]
path = "data/shadow.jsonl"
[analysis]
alpha = 0.05
primary_metric = "exact_match"
n_permutations = 2000
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for d in ("models/suspect", "models/clean"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "data").mkdir()
    for f in ("test", "shadow"):
        (tmp_path / "data" / f"{f}.jsonl").write_text('{"id": 1, "text": "x"}\n')
    return tmp_path


def write(workdir: Path, text: str, name: str = "protocol.toml") -> Path:
    path = workdir / name
    path.write_text(text)
    return path


def fails_fast(path: Path, match: str, **kw) -> ProtocolError:
    start = time.perf_counter()
    with pytest.raises(ProtocolError, match=match) as info:
        load_protocol(path, **kw)
    assert time.perf_counter() - start < 1.0
    assert str(path) in str(info.value)  # every error names the file
    return info.value


def test_a_valid_protocol_loads_typed_with_defaults_and_resolved_paths(workdir):
    p = load_protocol(write(workdir, VALID))
    assert p.name == "unit"
    assert p.models.suspect.path == (workdir / "models/suspect").resolve()
    assert p.sets.test.text_field == "text"
    assert p.analysis.n_permutations == 2000 and p.analysis.n_bootstrap == 10_000
    assert isinstance(p.analysis.alpha, float)
    assert p.index is None and p.probes == ProbeConfig()
    assert re.fullmatch(r"[0-9a-f]{64}", p.sha256)


def test_the_hash_is_of_the_file_bytes(workdir):
    a = load_protocol(write(workdir, VALID, "a.toml"))
    b = load_protocol(write(workdir, VALID, "b.toml"))
    c = load_protocol(write(workdir, VALID + "# a comment changes the published file\n", "c.toml"))
    assert a.sha256 == b.sha256 != c.sha256


def test_missing_key_names_the_key_and_the_file(workdir):
    text = VALID.replace('[models.clean]\npath = "models/clean"\n', '[models.clean]\ntrust_remote_code = false\n')
    fails_fast(write(workdir, text), r"key `models.clean.path`: missing; it is required")


def test_missing_section_names_the_key(workdir):
    text = VALID.replace('[sets.shadow]\npath = "data/shadow.jsonl"\n', "")
    fails_fast(write(workdir, text), r"key `sets.shadow`: missing; give \[sets.test\] and \[sets.shadow\]")


BAD_VALUES = [
    # wrong types
    ("alpha = 0.05", 'alpha = "0.05"', r"key `analysis.alpha`: must be a number; got string '0.05'"),
    ("n_permutations = 2000", "n_permutations = 2000.5",
     r"key `analysis.n_permutations`: must be an integer; got float 2000.5"),
    ("n_permutations = 2000", "n_permutations = true",
     r"key `analysis.n_permutations`: must be an integer; got boolean True"),
    ('path = "models/suspect"', "path = 3", r"key `models.suspect.path`: must be a non-empty path string; got integer 3"),
    ("[analysis]", '[probes]\nmatch_on = "length"\n[analysis]', r"key `probes.match_on`: must be an array"),
    # unknown metric
    ('primary_metric = "exact_match"', 'primary_metric = "bleu"',
     r"key `analysis.primary_metric`: must be one of 'exact_match', 'token_match_frac', 'suffix_logprob'; got 'bleu'"),
    # out of range
    ("alpha = 0.05", "alpha = 0.7", r"key `analysis.alpha`: must be a number in \(0, 0.5\]; got 0.7"),
    ("[analysis]", '[probes]\nmatch_on = ["rarity"]\n[analysis]',
     r"key `probes.match_on`: must be a list that includes 'length'"),
    ("[analysis]", '[probes]\nmatch_on = ["length", "colour"]\n[analysis]',
     r"key `probes.match_on\[1\]`: must be one of 'length', 'rarity'; got 'colour'"),
    # unknown keys: an error, not a silent default
    ("alpha = 0.05", "alpah = 0.05", r"unknown key `analysis.alpah`; allowed keys in \[analysis\] are: adjust_for, alpha, "),
    ('name = "unit"', 'name = "unit"\n[extras]\nx = 1', r"unknown key `extras`; allowed keys in the top level"),
    # not TOML at all
    ("alpha = 0.05", "alpha = = 0.05", r"invalid TOML"),
]


@pytest.mark.parametrize("old, new, match", BAD_VALUES)
def test_bad_value_names_the_key_the_rule_and_the_file(workdir, old, new, match):
    assert old in VALID
    fails_fast(write(workdir, VALID.replace(old, new, 1)), match)


def test_nonexistent_file_names_the_key_and_the_path(workdir):
    text = VALID.replace("data/test.jsonl", "data/missing.jsonl")
    err = fails_fast(write(workdir, text), r"key `sets.test.path`: no such file or directory: ")
    assert "missing.jsonl" in str(err)
    text = VALID.replace('path = "models/clean"', 'path = "models/nowhere"')
    fails_fast(write(workdir, text), r"key `models.clean.path`: no such file or directory")


def test_paths_are_not_checked_when_only_the_analysis_is_needed(workdir):
    text = VALID.replace("data/test.jsonl", "data/missing.jsonl")
    assert load_protocol(write(workdir, text), check_paths=False).analysis.n_permutations == 2000


def test_missing_protocol_file(workdir):
    fails_fast(workdir / "nope.toml", r"protocol file not found")


def test_split_sets_by_date(workdir):
    text = VALID.replace('[sets.test]\npath = "data/test.jsonl"\n[sets.shadow]\npath = "data/shadow.jsonl"\n',
                         '[sets.split]\npath = "data/test.jsonl"\ndate_field = "created"\ncutoff = 2024-01-01\n')
    p = load_protocol(write(workdir, text))
    assert p.sets.split.cutoff == "2024-01-01" and p.sets.test is None
    fails_fast(write(workdir, text.replace("cutoff = 2024-01-01\n", "")), r"key `sets.split.cutoff`: missing")
    fails_fast(write(workdir, text.replace("cutoff = 2024-01-01", 'cutoff = "last year"')),
               r"key `sets.split.cutoff`: must be a date like 2024-01-01")
    both = text + '[sets.test]\npath = "data/test.jsonl"\n'
    fails_fast(write(workdir, both), r"key `sets.split`: give either \[sets.split\] or \[sets.test\]")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_protocols_validate_and_spell_out_every_analysis_setting(name):
    path = ROOT / "protocols" / f"{name}.toml"
    p = load_protocol(path, check_paths=False)
    assert p.name == name
    text = path.read_text()
    for f in fields(AnalysisSettings):
        assert re.search(rf"^{f.name} = ", text, re.M), f"{name}.toml does not spell out analysis.{f.name}"
    comments = sum(line.lstrip().startswith("#") or " # " in line for line in text.splitlines())
    assert comments >= 60, "shipped protocols are fully commented"


def test_default_protocol_equals_the_built_in_defaults():
    p = load_protocol(ROOT / "protocols" / "default.toml", check_paths=False)
    assert p.analysis == AnalysisSettings()
    assert p.probes == ProbeConfig()


def test_strict_is_stricter_and_quick_is_quicker_than_default():
    d, s, q = (load_protocol(ROOT / "protocols" / f"{n}.toml", check_paths=False).analysis for n in SHIPPED)
    assert s.alpha < d.alpha and s.min_items > d.min_items and s.min_probes > d.min_probes
    assert s.n_permutations > d.n_permutations
    assert q.n_permutations < d.n_permutations and q.min_items < d.min_items


def test_analysis_settings_provenance():
    settings, prov = load_analysis_settings(None)
    assert settings == AnalysisSettings() and prov["source"] is None and prov["sha256_of"] == "settings"
    settings, prov = load_analysis_settings(ROOT / "protocols" / "quick.toml")
    assert settings.n_permutations == 2000 and prov["sha256_of"] == "file" and prov["name"] == "quick"


def test_cli_reports_a_bad_protocol_with_exit_code_2(workdir):
    bad = write(workdir, VALID.replace('primary_metric = "exact_match"', 'primary_metric = "bleu"'))
    f = workdir / "data" / "test.jsonl"
    result = CliRunner().invoke(app, ["analyze", "--suspect-test", str(f), "--clean-test", str(f),
                                      "--suspect-shadow", str(f), "--clean-shadow", str(f),
                                      "--protocol", str(bad), "--out", str(workdir / "run")])
    assert result.exit_code == 2
    assert "analysis.primary_metric" in result.output and str(bad) in result.output.replace("\n", "")
    assert not (workdir / "run" / "results.json").exists()


def test_reference_models_and_shadow_origin(workdir):
    (workdir / "models" / "ref1").mkdir()
    text = VALID.replace("[sets.test]", '[[models.reference]]\npath = "models/ref1"\n[sets]\nshadow_origin = '
                                        '"random_split"\n[sets.test]')
    p = load_protocol(write(workdir, text))
    assert [m.path.name for m in p.models.panel] == ["clean", "ref1"]
    assert p.sets.shadow_origin == "random_split"
    assert load_protocol(write(workdir, VALID)).sets.shadow_origin == "later_set"  # the conservative default
    fails_fast(write(workdir, text.replace("models/ref1", "models/missing")),
               r"key `models.reference\[0\].path`: no such file or directory")
    fails_fast(write(workdir, text.replace('path = "models/ref1"', 'path = "models/clean"')),
               r"key `models.reference\[0\]`: is the same model as `models.clean`")
    fails_fast(write(workdir, VALID.replace('path = "models/clean"', 'path = "models/suspect"')),
               r"key `models.clean`: is the same model as `models.suspect`")
    fails_fast(write(workdir, text.replace('"random_split"', '"coin_flip"')),
               r"key `sets.shadow_origin`: must be one of 'random_split', 'date_split', 'later_set'")


def test_a_date_split_cannot_claim_to_be_random(workdir):
    text = VALID.replace('[sets.test]\npath = "data/test.jsonl"\n[sets.shadow]\npath = "data/shadow.jsonl"\n',
                         '[sets]\nshadow_origin = "random_split"\n[sets.split]\npath = "data/test.jsonl"\n'
                         'date_field = "created"\ncutoff = 2024-01-01\n')
    fails_fast(write(workdir, text), r"key `sets.shadow_origin`: a \[sets.split\] is split by date")


def test_reference_test_and_adjustment_settings(workdir):
    text = VALID.replace("[analysis]", '[analysis]\nreference_test = "rank"\nadjust_for = ["length"]\n'
                                       'min_overlap = 0.9')
    a = load_protocol(write(workdir, text)).analysis
    assert (a.reference_test, a.adjust_for, a.min_overlap) == ("rank", ("length",), 0.9)
    fails_fast(write(workdir, text.replace('["length"]', '["age"]')),
               r"key `analysis.adjust_for\[0\]`: must be one of 'difficulty', 'length', 'rarity'")


def test_infinite_values_and_unknown_devices_fail_before_any_work(workdir):
    fails_fast(write(workdir, VALID.replace("alpha = 0.05", "alpha = 0.05\nmin_effect_perplexity = inf")),
               r"key `analysis.min_effect_perplexity`: must be a finite number >= 0; got inf")
    fails_fast(write(workdir, VALID.replace("alpha = 0.05", "alpha = nan")),
               r"key `analysis.alpha`: must be a finite number in \(0, 0.5\]")
    fails_fast(write(workdir, VALID + '[scoring]\ndevice = "tpu"\n'),
               r"key `scoring.device`: must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got 'tpu'")
    assert load_protocol(write(workdir, VALID + '[scoring]\ndevice = "cuda:1"\n')).scoring.device == "cuda:1"


def test_a_bad_protocol_fails_before_any_heavy_import(tmp_path):
    """`contaudit audit` on a bad protocol answers from the protocol loader alone: no torch, scipy or numpy."""
    import subprocess
    import sys
    import time

    bad = tmp_path / "bad.toml"
    bad.write_text('[models.suspect]\npath = "x"\n')
    probe = ("import sys\nfrom contaudit.cli import app\n"
             "try:\n    app(['audit', sys.argv[1], '--out', sys.argv[2]])\nexcept SystemExit as e:\n    code = e.code\n"
             "heavy = sorted(m for m in ('torch', 'transformers', 'scipy', 'numpy') if m in sys.modules)\n"
             "print('EXIT', code, 'HEAVY', ','.join(heavy) or '-')\n")
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", probe, str(bad), str(tmp_path / "run")], capture_output=True,
                         text=True, timeout=60)
    seconds = time.perf_counter() - started
    assert "EXIT 2 HEAVY -" in run.stdout, run.stdout + run.stderr
    assert "key `sets`: missing" in run.stdout + run.stderr  # [models.clean] is optional (the order test)
    assert seconds < 3.0  # about 0.2 s here; the import check above is what keeps it fast
    assert not (tmp_path / "run").exists()


def test_setting_tables_alone_are_validated_without_models_or_sets(tmp_path):
    from contaudit.errors import ProtocolError
    from contaudit.protocol import load_setting_tables

    path = tmp_path / "settings.toml"
    path.write_text("[probes]\nmin_seen = 3\n[analysis]\nalpha = 0.01\n")
    assert load_setting_tables(path) == {"probes": {"min_seen": 3}, "analysis": {"alpha": 0.01}}
    path.write_text("[probes]\nmin_seen = 0\n")
    with pytest.raises(ProtocolError, match=r"settings.toml: key `probes.min_seen`: must be an integer >= 1; got 0"):
        load_setting_tables(path)


def test_a_clean_model_trained_on_the_shadow_period_is_refused(workdir):
    text = VALID.replace('path = "models/clean"', 'path = "models/clean"\ncutoff = 2024-03-01')
    text = text.replace("[sets.test]", "[sets]\nshadow_from = 2024-01-01\n[sets.test]")
    fails_fast(write(workdir, text), r"key `models.clean.cutoff`: 2024-03-01 is not before the shadow set's start "
                                     r"\(2024-01-01\): a clean model trained on the shadow period")
    fine = load_protocol(write(workdir, text.replace("cutoff = 2024-03-01", "cutoff = 2023-06-30")))
    from contaudit.protocol import cutoff_record

    record = cutoff_record(fine.models, fine.sets)
    assert record["shadow_from"] == "2024-01-01" and record["checked"]
    assert record["models"][1] == {"role": "clean", "cutoff": "2023-06-30", "precedes_shadow": True}
    fails_fast(write(workdir, text.replace("cutoff = 2024-03-01", 'cutoff = "last spring"')),
               r"key `models.clean.cutoff`: must be a date like 2024-01-01")


def test_the_removed_t_panel_test_and_unknown_units_are_refused_by_name(workdir):
    t = VALID.replace("[analysis]", '[analysis]\nreference_test = "t"') if "[analysis]" in VALID else \
        VALID + '[analysis]\nreference_test = "t"\n'
    fails_fast(write(workdir, t), r"key `analysis.reference_test`: must be 'robust' or 'rank' \('t' was removed")
    u = VALID + '[analysis]\nunit = "words"\n' if "[analysis]" not in VALID else \
        VALID.replace("[analysis]", '[analysis]\nunit = "words"')
    fails_fast(write(workdir, u), r"key `analysis.unit`: must be one of 'auto', 'token', 'byte'")
    r = VALID + '[analysis]\nreferences = "cousins"\n' if "[analysis]" not in VALID else \
        VALID.replace("[analysis]", '[analysis]\nreferences = "cousins"')
    fails_fast(write(workdir, r), r"key `analysis.references`: must be one of 'families', 'siblings'")
