"""Progress on long work: rich progress bars for each stage's callback, a stage timer, and quiet third parties.

The library reports progress through plain callbacks (bytes read, tokens scored,
training steps); these classes draw them with rich for the command line. Each is a
context manager and the callback itself.
"""

from __future__ import annotations

import time


def quiet_transformers() -> None:
    """Keep transformers' per-file progress bars and advisory warnings out of our output."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def timed(seconds: dict[str, float], name: str, fn, /, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` and add its wall time to ``seconds[name]`` (a stage run in parts adds up)."""
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - t0, 3)
    return result


class StageClock(dict):
    """Stage times (name -> seconds, as :func:`timed` records them) of a multi-stage command, with the
    overall line a person waits on: stages done, time so far and an estimate of the time left.

    ``plan`` maps each stage the command will run to its expected share of the whole (measured
    once); the estimate scales the remaining shares by this machine's speed on the stages done
    so far. A stage that took under ``reused_below_s`` seconds was reused from an earlier run and
    says nothing about speed.
    """

    def __init__(self, plan: dict[str, float], *, reused_below_s: float = 2.0):
        super().__init__()
        self.plan, self.reused_below_s = dict(plan), reused_below_s
        self.started = time.perf_counter()

    def overall(self) -> str:
        """``[3/8 stages, 1:05 so far, about 2:10 left]`` (without an estimate until a stage did real work)."""
        done = [name for name in self.plan if name in self]
        elapsed = time.perf_counter() - self.started
        worked = [name for name in done if self[name] >= self.reused_below_s]
        line = f"[{len(done)}/{len(self.plan)} stages, {_clock(elapsed)} so far"
        left_share = sum(share for name, share in self.plan.items() if name not in self)
        if worked and left_share > 0:
            per_share = sum(self[name] for name in worked) / sum(self.plan[name] for name in worked)
            line += f", about {_clock(per_share * left_share)} left"
        return line + "]"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


class _Bars:
    """A rich ``Progress`` with the given columns, entered and left with the object."""

    def __init__(self, *columns, console=None, transient: bool = False):
        from rich.console import Console
        from rich.progress import Progress

        console = console or Console(stderr=True)
        # Bars are for a person at a terminal: in a log they were printed after the verdict, frozen at
        # their last refresh ("17109/18178 tokens"); there the stages' own lines say what was done.
        self._progress = Progress(*columns, console=console, transient=transient, disable=not console.is_terminal)

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)


class ByteProgress(_Bars):
    """``progress(n_bytes)`` of ``contaudit index``: bytes read, MB/s, time left."""

    def __init__(self, description: str, total_bytes: int | None, console=None):
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        super().__init__(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                         TimeRemainingColumn(), console=console, transient=True)
        self._task = self._progress.add_task(description, total=total_bytes or None)

    def __call__(self, n_bytes: int) -> None:
        self._progress.advance(self._task, n_bytes)


class TokenProgress(_Bars):
    """``progress(phase, done, total)`` of scoring (tokens) or evaluation (``unit="items"``): one bar per
    phase, with its rate."""

    def __init__(self, console=None, transient: bool = False, unit: str = "tokens"):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        rate = "tok/s" if unit == "tokens" else f"{unit}/s"
        super().__init__(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TextColumn(f"{unit}  {{task.fields[rate]}} {rate}"), TimeElapsedColumn(), console=console,
                         transient=transient)
        self._tasks: dict[str, tuple[int, float]] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self._tasks:
            self._tasks[phase] = (self._progress.add_task(phase, total=max(total, 1), rate="-"), time.perf_counter())
        task, started = self._tasks[phase]
        if done == 0:  # the phase starts again for the next file: its own total, its own clock
            started = time.perf_counter()
            self._tasks[phase] = (task, started)
        elapsed = time.perf_counter() - started
        rate = f"{done / elapsed:,.0f}" if done and elapsed > 0 else "-"
        self._progress.update(task, total=max(total, 1), completed=min(done, total), rate=rate)


class TrainingProgress(_Bars):
    """``progress(StepInfo)`` of training: loss, held-out loss, tokens/s.

    A step count that starts again (the next of several training runs, as in the demo)
    replaces the bar with a new one; with ``transient`` a finished run's bar goes away (so
    the stages after it do not sit under a frozen bar).
    """

    def __init__(self, description: str = "training", console=None, transient: bool = False):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        super().__init__(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TextColumn("loss {task.fields[loss]}"), TextColumn("held-out {task.fields[held]}"),
                         TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(), console=console,
                         transient=transient)
        self._description, self._transient = description, transient
        self._task = None
        self._step = 0

    def __call__(self, info) -> None:
        if self._task is None or info.step < self._step:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(self._description, total=info.steps, loss="-", held="-", tps="-")
        self._step = info.step
        fields = {"loss": "-" if info.loss is None else f"{info.loss:.3f}", "tps": f"{info.tokens_per_s:,.0f}"}
        if info.heldout_loss is not None:
            fields["held"] = f"{info.heldout_loss:.3f}"
        self._progress.update(self._task, completed=info.step, **fields)
        if self._transient and info.step >= info.steps:
            self._progress.remove_task(self._task)
            self._task = None
