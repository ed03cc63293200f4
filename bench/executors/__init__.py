"""Where a sweep's tasks run: one :class:`Executor` protocol, implemented inline (in the
calling process), as a local process pool and on a Ray cluster (``ray_cluster``, an
optional dependency imported only when used); a third-party executor is one more
implementation registered under its name. Resume, caching and writing stay with the caller,
so every executor inherits them."""

from bench.executors.base import Executor, WorkerSetup, create_executor

__all__ = ["Executor", "WorkerSetup", "create_executor"]
