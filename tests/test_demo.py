"""The demo's stage logic: trained models are reused only when trained as asked."""

from __future__ import annotations

import json

from contaudit.demo import _trained


def _train_into(path, calls):
    def train(**settings):
        calls.append(settings)
        path.mkdir(parents=True, exist_ok=True)
        (path / "injection.json").write_text(json.dumps({"parameters": settings, "base": {"sha256": "b1"}}))
    return train


def test_a_model_trained_with_the_same_settings_is_reused(tmp_path):
    path, calls, log = tmp_path / "suspect", [], []
    wanted = {"parameters": {"dup": 8, "train": {"steps": 100}}, "base": {"sha256": "b1"}}
    train = _train_into(path, calls)
    _trained(path, "injection.json", wanted, log.append, train, dup=8, train={"steps": 100})
    _trained(path, "injection.json", wanted, log.append, train, dup=8, train={"steps": 100})
    assert len(calls) == 1
    assert log == [f"  reusing {path}"]


def test_other_settings_or_another_base_retrain(tmp_path):
    path, calls, log = tmp_path / "suspect", [], []
    train = _train_into(path, calls)
    _trained(path, "injection.json", {"parameters": {"dup": 8}}, log.append, train, dup=8)
    _trained(path, "injection.json", {"parameters": {"dup": 4}}, log.append, train, dup=4)  # another dup
    _trained(path, "injection.json", {"parameters": {"dup": 4}, "base": {"sha256": "b2"}}, log.append,
             train, dup=4)  # the base model was retrained
    assert [c["dup"] for c in calls] == [8, 4, 4]
    assert all("trained with other settings" in line for line in log)


def test_an_unreadable_manifest_retrains(tmp_path):
    path, calls = tmp_path / "clean", []
    path.mkdir()
    (path / "injection.json").write_text("{not json")
    _trained(path, "injection.json", {"parameters": {"dup": 0}}, lambda s: None, _train_into(path, calls), dup=0)
    assert len(calls) == 1
