"""The overall line of a multi-stage command (issue 25: the demo had no stage / time-left line)."""

from __future__ import annotations

import pytest

from contaudit import progress
from contaudit.experiment import timed


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    return now


def _stage(now, seconds):
    def run():
        now[0] += seconds
    return run


def test_time_left_scales_the_remaining_shares_by_this_machines_speed(clock):
    stages = progress.StageClock({"prepare": 0.1, "train": 0.5, "audit": 0.4})
    lines = []
    timed(stages, lines.append, "prepare", _stage(clock, 30.0))   # 30 s for a 0.1 share: 300 s a whole
    timed(stages, lines.append, "train", _stage(clock, 120.0))    # 150 s for 0.6: 250 s a whole
    assert lines[0] == "prepare: 30.0 s  [1/3 stages, 0:30 so far, about 4:30 left]"
    assert lines[1] == "train: 120.0 s  [2/3 stages, 2:30 so far, about 1:40 left]"
    timed(stages, lines.append, "audit", _stage(clock, 90.0))
    assert lines[2] == "audit: 90.0 s  [3/3 stages, 4:00 so far]"


def test_reused_stages_give_no_estimate_until_a_stage_does_work(clock):
    stages = progress.StageClock({"pretrain": 0.5, "finetune": 0.2, "audit": 0.3})
    lines = []
    timed(stages, lines.append, "pretrain", _stage(clock, 0.4))   # reused from an earlier run
    assert lines[0] == "pretrain: 0.4 s  [1/3 stages, 0:00 so far]"
    timed(stages, lines.append, "finetune", _stage(clock, 20.0))  # 20 s for 0.2: the audit's 0.3 takes 30 s
    assert lines[1].endswith("[2/3 stages, 0:20 so far, about 0:30 left]")


def test_a_plain_dict_keeps_the_plain_line():
    lines, seconds = [], {}
    timed(seconds, lines.append, "stage", lambda: None)
    assert lines[0].startswith("stage: ") and "[" not in lines[0] and "stage" in seconds


def test_the_demos_bars_show_training_then_scoring_without_a_frozen_training_bar():
    """Issue 25: during the demo's audits the screen showed the last fine-tune's finished bar, frozen, and
    no scoring progress. A finished training run's bar goes away, and scoring gets its own bar beside it."""
    import io

    from rich.console import Console

    from contaudit.finetune.train import StepInfo

    terminal = Console(file=io.StringIO(), force_terminal=True, width=120)
    with progress.TrainingProgress(console=terminal, transient=True) as training, \
            progress.TokenProgress(console=terminal, transient=True) as scoring:
        for step in (1, 2):
            training(StepInfo(step=step, steps=2, loss=3.0, lr=1e-3, tokens_per_s=100.0))
        assert training._progress.tasks == []  # the finished run's bar is gone
        training(StepInfo(step=1, steps=3, loss=3.0, lr=1e-3, tokens_per_s=100.0))  # the next run: a new bar
        assert [t.total for t in training._progress.tasks] == [3]
        scoring("score test", 0, 500)
        scoring("score test", 250, 500)
        assert [(t.description, t.completed, t.total) for t in scoring._progress.tasks] == [("score test", 250, 500)]
    assert "score test" in terminal.file.getvalue()
