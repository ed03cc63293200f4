"""The executor protocol: ``map(function, tasks)`` yields results in completion order.

An executor is a context manager: entering starts its workers, each of which first runs
the :class:`WorkerSetup` it was created with (loading per-worker state, such as a cache
handle, into that process's globals); leaving waits for nothing more and stops them. A
worker returns what it computed; only the caller writes results. Executors are found by
name in :data:`bench.registry.EXECUTORS`, and every factory takes the same arguments,
``(workers, setup)``, plus the options of its own (the Ray executor's ``address``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypeVar

from bench.registry import EXECUTORS

Task = TypeVar("Task")
Result = TypeVar("Result")


@dataclass(frozen=True)
class WorkerSetup:
    """What each worker runs once before its first task, and what an in-process worker
    runs when the executor stops (a separate process frees its state by exiting).

    ``start`` and ``stop`` must be importable module-level functions, so that a worker
    process can be sent them.
    """

    start: Callable[..., None]
    args: tuple = ()
    stop: Callable[[], None] | None = None


class Executor(Protocol):
    """Runs ``function(task)`` for every task and yields each result as it completes.

    ``function`` and the tasks must be picklable for executors that run them in other
    processes. A result should say which task it belongs to, since results come in
    completion order. An exception raised by ``function`` propagates from ``map``.
    """

    workers: int | None  # how many tasks run at once; None until started picks a default

    def __enter__(self) -> Executor: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    def map(
        self, function: Callable[[Task], Result], tasks: Iterable[Task]
    ) -> Iterator[Result]: ...

    def execution(self) -> dict:
        """How the started executor runs tasks, for a run's ``config.json``: at least
        ``{"workers": count}``."""
        ...


def create_executor(
    name: str, workers: int | None, setup: WorkerSetup | None = None, **options: object
) -> Executor:
    """The executor registered as ``name`` with ``workers`` workers (``None``: its default,
    such as the number of cores), not yet started; ``options`` are its own settings.

    Raises :class:`bench.registry.UnknownNameError` (a ``ValueError``) for an unknown name
    and ``ValueError`` for a worker count the executor cannot use.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"expected --workers >= 1, got {workers}")
    return EXECUTORS.create(name, workers=workers, setup=setup, **options)
