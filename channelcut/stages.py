"""The stages of a cut, timed, and told to whoever shows progress (the console script's bar)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

# In the order a cut runs them; "save" is the console script's (cut() writes nothing).
STAGES = ("load", "fold shapes", "analyse", "decide", "rewrite", "verify", "save")


class Listener(Protocol):
    """Told when a stage starts, how far a long one is, and when it ends."""

    def start(self, stage: str, total: int | None) -> None: ...

    def advance(self, stage: str, done: int) -> None: ...

    def end(self, stage: str, seconds: float) -> None: ...


class Stages:
    """Wall time per stage (seconds, summed when a stage runs more than once)."""

    def __init__(self, listener: Listener | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.listener = listener

    @contextmanager
    def stage(self, name: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        """Time the block as stage `name`; it gets a function to call with the steps done of
        `total` (a progress bar for a long stage)."""
        if self.listener is not None:
            self.listener.start(name, total)
        start = time.perf_counter()

        def advance(done: int) -> None:
            if self.listener is not None:
                self.listener.advance(name, done)

        try:
            yield advance
        finally:
            seconds = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            if self.listener is not None:
                self.listener.end(name, seconds)
