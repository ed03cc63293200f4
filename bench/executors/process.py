"""The process executor: a local pool of single-threaded worker processes.

Built on :func:`bench.parallel.process_pool`: workers are forked on Linux, pinned to one
thread, die with their parent and ignore Ctrl-C, which stops the pool at once. Create the
executor before running torch work in the calling process (see :mod:`bench.parallel`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from types import TracebackType

from bench.executors.base import Result, Task, WorkerSetup
from bench.parallel import process_pool


class ProcessExecutor:
    """Runs tasks on ``workers`` processes (default: one per core); results come in
    completion order."""

    def __init__(self, workers: int | None = None, setup: WorkerSetup | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.setup = setup
        self._stack = ExitStack()
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ProcessExecutor:
        start, args = (None, ()) if self.setup is None else (self.setup.start, self.setup.args)
        self._pool = self._stack.enter_context(process_pool(self.workers, start, args))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._pool = None
        # An exception (Ctrl-C included) reaches process_pool, which stops the workers now.
        self._stack.__exit__(kind, error, traceback)

    def execution(self) -> dict:
        return {"workers": self.workers}

    def map(self, function: Callable[[Task], Result], tasks: Iterable[Task]) -> Iterator[Result]:
        if self._pool is None:
            raise RuntimeError("the process executor is not started: use it in a `with` block")
        futures = [self._pool.submit(function, task) for task in tasks]
        for future in as_completed(futures):
            yield future.result()
