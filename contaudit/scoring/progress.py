"""A rich progress display for :func:`contaudit.scoring.score`: one bar per phase, tokens/s."""

from __future__ import annotations

import time


class RichProgress:
    """Progress callback ``(phase, done_tokens, total_tokens)`` drawn with rich; a context manager."""

    def __init__(self, console=None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("tokens  {task.fields[rate]} tok/s"), TimeElapsedColumn(),
                                  console=console, transient=False)
        self._tasks: dict[str, tuple[int, float]] = {}

    def __enter__(self) -> "RichProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self._tasks:
            task = self._progress.add_task(phase, total=max(total, 1) if total else 0, rate="-")
            self._tasks[phase] = (task, time.perf_counter())
        task, started = self._tasks[phase]
        elapsed = time.perf_counter() - started
        rate = f"{done / elapsed:,.0f}" if done and elapsed > 0 else "-"
        self._progress.update(task, completed=done, rate=rate)
