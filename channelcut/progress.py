"""Progress of a cut on stderr: a rich display on a terminal, plain lines elsewhere (-v)."""

from __future__ import annotations

from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID,
                           TextColumn, TimeElapsedColumn)


class TerminalProgress:
    """One line per stage on stderr: a spinner while it runs (a bar when it has steps), its
    time once done. A stage that runs again (the weight guard and the `ort-cpu` guard redo
    analyse/decide/rewrite) reuses its line, which counts the runs. Use it as a context
    manager around the work."""

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(SpinnerColumn(finished_text="[green]done[/green]"),
                                 TextColumn("{task.description:<12}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=console or Console(stderr=True))
        self.tasks: dict[str, TaskID] = {}
        self.runs: dict[str, int] = {}

    def __enter__(self) -> TerminalProgress:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.progress.stop()

    def start(self, stage: str, total: int | None) -> None:
        self.runs[stage] = self.runs.get(stage, 0) + 1
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total or 1)
            return
        self.progress.reset(self.tasks[stage], total=total or 1,
                            description=f"{stage} x{self.runs[stage]}")

    def advance(self, stage: str, done: int) -> None:
        self.progress.update(self.tasks[stage], completed=done)

    def end(self, stage: str, seconds: float) -> None:
        task = self.tasks[stage]
        self.progress.update(task, completed=self.progress.tasks[task].total)


class LineProgress:
    """`channelcut: <stage> done in 0.123 s` lines, for stderr that is not a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def start(self, stage: str, total: int | None) -> None:
        pass

    def advance(self, stage: str, done: int) -> None:
        pass

    def end(self, stage: str, seconds: float) -> None:
        print(f"channelcut: {stage} done in {seconds:.3f} s", file=self.stream, flush=True)
