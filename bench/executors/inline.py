"""The inline executor: tasks run one after another in the calling process.

No process is started, so it suits one worker, debugging (a breakpoint in a metric stops
where it should) and codecs registered at run time that other processes would not see.
Torch runs on one thread, as in a pool worker, so timings compare between executors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType

from bench.executors.base import Result, Task, WorkerSetup
from bench.parallel import pinned_threads


class InlineExecutor:
    """Runs each task in this process, in order; results come as they are computed."""

    def __init__(self, workers: int | None = 1, setup: WorkerSetup | None = None) -> None:
        if workers not in (None, 1):
            raise ValueError(
                f"the inline executor runs one task at a time; expected --workers 1, got "
                f"{workers} (use the process executor for more)"
            )
        self.workers = 1
        self.setup = setup

    def __enter__(self) -> InlineExecutor:
        if self.setup is not None:
            self.setup.start(*self.setup.args)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.setup is not None and self.setup.stop is not None:
            self.setup.stop()

    def execution(self) -> dict:
        return {"workers": self.workers}

    def map(self, function: Callable[[Task], Result], tasks: Iterable[Task]) -> Iterator[Result]:
        with pinned_threads():
            for task in tasks:
                yield function(task)
