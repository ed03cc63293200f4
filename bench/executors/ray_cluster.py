"""The Ray executor: a sweep's tasks on a Ray cluster (https://docs.ray.io), or on a Ray
instance started on this machine.

Each worker is a Ray actor holding one CPU. It runs the executor's :class:`WorkerSetup`
once, so a codec's weights and a metric's models load once per actor, not once per task;
tasks go to idle actors and come back in completion order (``ray.util.ActorPool``). An
actor whose process dies (killed, out of memory, a lost node) is restarted by Ray and its
task in flight retried under the same object reference, so the driver receives each task's
result exactly once. The driver alone writes the run (see :mod:`bench.sweep.run`).

A cluster must share the driver's filesystem: actors work in the driver's folder, so the
item paths, checkpoints and the ``--cache`` folder a run names resolve on every node.
Ray is an optional dependency (``pip install -e '.[ray]'``).
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType, TracebackType

from bench.executors.base import Result, Task, WorkerSetup
from bench.parallel import pin_threads

LOCAL = "local"  # ray.init's address for a new instance on this machine, never a running one
# A worker process that dies is restarted, and its task retried, this many times; a task
# that kills every process it runs on (a codec crashing on one item) then fails the run.
RESTARTS = 3
INSTALL_HINT = "pip install -e '.[ray]' (or pip install 'codec-bench[ray]')"


def import_ray() -> ModuleType:
    """The ``ray`` package, or a ``ValueError`` saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError as error:
        raise ValueError(
            f"--executor ray needs Ray, which is not installed ({error}); install it with "
            f"{INSTALL_HINT}"
        ) from None


class RayWorker:
    """One actor: works in the driver's folder, pinned to one thread, set up once."""

    def __init__(self, setup: WorkerSetup | None, folder: str) -> None:
        try:
            os.chdir(folder)
        except OSError as error:
            raise RuntimeError(
                f"node {socket.gethostname()} cannot enter the driver's folder {folder} "
                f"({error}); bench on Ray needs a filesystem shared by every node"
            ) from None
        pin_threads()  # as a process-pool worker: one thread, parallelism from the actors
        if setup is not None:
            setup.start(*setup.args)

    def run(self, function: Callable[[Task], Result], task: Task) -> Result:
        return function(task)

    def pid(self) -> int:
        return os.getpid()


class RayExecutor:
    """Runs tasks on ``workers`` Ray actors (default: one per CPU of the cluster).

    ``address`` is ``"local"`` (the default) for a new Ray instance on this machine, shut
    down on leaving; ``"auto"`` or ``HOST:PORT`` for a running cluster, from which the
    driver only disconnects. A Ray session the caller already started is used as it is.
    ``use_gpus`` gives each actor one GPU where the cluster has GPUs (a training task, such
    as a study's variant, then runs on it); without GPUs in the cluster it changes nothing.
    """

    def __init__(
        self,
        workers: int | None = None,
        setup: WorkerSetup | None = None,
        address: str = LOCAL,
        use_gpus: bool = False,
    ) -> None:
        self.ray = import_ray()
        self.requested_workers = workers
        self.workers = workers
        self.setup = setup
        self.address = address
        self.use_gpus = use_gpus
        self._connected_here = False
        self._actors: list = []
        self._pool = None

    def __enter__(self) -> RayExecutor:
        ray = self.ray
        if not ray.is_initialized():
            # No telemetry on the user's behalf; RAY_USAGE_STATS_ENABLED=1 turns it back on.
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            local = self.address == LOCAL
            ray.init(
                address=self.address,
                num_cpus=self.requested_workers if local else None,
                include_dashboard=False,
                logging_level=logging.WARNING,
                # Workers' library warnings would interleave with the progress bar; task
                # errors still reach the driver as exceptions.
                log_to_driver=False,
            )
            self._connected_here = True
        try:
            self._start_actors()
        except BaseException:
            self._disconnect()
            raise
        return self

    def _start_actors(self) -> None:
        ray = self.ray
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if self.workers is None:
            self.workers = cpus
        if not 1 <= self.workers <= cpus:
            # Actors asking for more CPUs than exist would wait for them for ever.
            raise ValueError(
                f"expected --workers between 1 and the Ray cluster's {cpus} CPUs, got "
                f"{self.workers}"
            )
        gpus = int(ray.cluster_resources().get("GPU", 0)) if self.use_gpus else 0
        if gpus:
            # An actor holding a GPU waits for a free one: no more actors than GPUs.
            self.workers = min(self.workers, gpus)
        actor = ray.remote(RayWorker).options(
            num_cpus=1, num_gpus=1 if gpus else 0, max_restarts=RESTARTS, max_task_retries=RESTARTS
        )
        self._actors = [actor.remote(self.setup, os.getcwd()) for _ in range(self.workers)]
        try:  # every actor's setup, so that a failing one fails here, with its cause
            ray.get([worker.pid.remote() for worker in self._actors])
        except ray.exceptions.RayActorError as error:
            # Ray's message ends with the worker's own exception, after its traceback.
            cause = str(error).strip().splitlines()[-1]
            raise ValueError(f"a Ray worker could not start: {cause}") from None
        self._pool = ray.util.ActorPool(self._actors)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for worker in self._actors:
            # Also ends a task in flight after an error or Ctrl-C, rather than waiting.
            self.ray.kill(worker, no_restart=True)
        self._actors, self._pool = [], None
        self._disconnect()

    def _disconnect(self) -> None:
        if self._connected_here:
            self.ray.shutdown()  # a local instance stops; a cluster only loses this driver
            self._connected_here = False

    def execution(self) -> dict:
        ray = self.ray
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        return {
            "workers": self.workers,
            "ray": {
                "version": ray.__version__,
                "address": self.address,
                "nodes": len(nodes),
                "cpus": int(ray.cluster_resources().get("CPU", 0)),
            },
        }

    def map(self, function: Callable[[Task], Result], tasks: Iterable[Task]) -> Iterator[Result]:
        if self._pool is None:
            raise RuntimeError("the Ray executor is not started: use it in a `with` block")
        yield from self._pool.map_unordered(
            lambda worker, task: worker.run.remote(function, task), list(tasks)
        )
