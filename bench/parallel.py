"""Process pools and thread pinning for the harness.

On Linux workers are forked, so they come up in milliseconds: spawning would re-import
torch in each (about 1.5 s per worker on this project's machines). A forked child must
not use an OpenMP thread pool the parent had started (GNU libgomp hangs), so every worker
first pins torch, numba and OpenMP to one thread, as PyTorch's DataLoader workers do;
callers also create pools before running torch work where they can, and
:func:`process_pool` starts every worker at once rather than lazily. macOS and Windows
cannot fork safely, so they spawn.

One thread per worker is also what makes timings honest: parallelism comes from the
worker count, and real-time factors stay comparable between runs.

Workers die with their parent: a ``bench run`` killed with SIGKILL would otherwise leave
its workers (each holding its models, hundreds of MB) running for good. They ignore Ctrl-C,
which the terminal sends to them too: the parent alone decides, and on an interruption it
terminates them instead of waiting for the tasks in flight.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor

import torch

THREADS_PER_WORKER = 1
# numba's default OpenMP threading layer kills any child forked after it ran ("fork()
# called from a process already using GNU OpenMP"); its workqueue layer is fork-safe and,
# with one thread per worker, loses nothing. Set before numba first runs parallel code.
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
if "numba" in sys.modules:
    sys.modules["numba"].config.THREADING_LAYER = os.environ["NUMBA_THREADING_LAYER"]
# Read by OpenMP, numba and BLAS when they start; libraries already loaded are set below.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS")


def start_method() -> str:
    return "fork" if sys.platform.startswith("linux") else "spawn"


def pin_threads(count: int = THREADS_PER_WORKER) -> dict:
    """Limit torch, numba and OpenMP to ``count`` threads; returns what to restore."""
    numba = sys.modules.get("numba")
    previous = {
        "torch": torch.get_num_threads(),
        "numba": numba.get_num_threads() if numba else None,
        "environment": {name: os.environ.get(name) for name in _THREAD_VARIABLES},
    }
    torch.set_num_threads(count)
    os.environ.update({name: str(count) for name in _THREAD_VARIABLES})
    if numba:
        numba.set_num_threads(count)
    return previous


@contextlib.contextmanager
def pinned_threads(count: int = THREADS_PER_WORKER) -> Iterator[None]:
    """Run the block with torch, numba and OpenMP limited to ``count`` threads."""
    previous = pin_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous["torch"])
        for name, value in previous["environment"].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        numba = sys.modules.get("numba")
        if numba and previous["numba"]:
            numba.set_num_threads(previous["numba"])


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PARENT_POLL_SECONDS = 1.0
STOP_SECONDS = 2.0  # how long a terminated worker may take before it is killed


def _watch_parent(parent_pid: int) -> None:
    """Exit as soon as ``parent_pid`` is no longer this process's parent (it died and the
    process was handed to init or a subreaper)."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def exit_with_parent(parent_pid: int) -> None:
    """Make this process die when ``parent_pid``, its parent, dies, however it dies.

    Linux delivers SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``; strictly on
    the death of the parent's thread that started this process, which for a pool is the
    thread that submits to it); elsewhere a daemon thread polls the parent pid.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        # The parent may have died before the prctl call, which then never fires.
        if os.getppid() != parent_pid:
            os._exit(1)
    else:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _start_worker(
    parent_pid: int, initializer: Callable[..., None] | None, initargs: tuple
) -> None:
    exit_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pin_threads()  # for the worker's whole life
    if initializer is not None:
        initializer(*initargs)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop ``pool`` now: cancel the tasks not started and terminate the workers in the
    middle of theirs, rather than wait for them as ``shutdown`` does."""
    # ProcessPoolExecutor has no public way to do this before Python 3.14
    # (terminate_workers); its _processes map has been stable since 3.3.
    workers = list((pool._processes or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.join(STOP_SECONDS)
        if worker.is_alive():  # a library's SIGTERM handler may not end the process
            worker.kill()
            worker.join()


@contextlib.contextmanager
def process_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()
) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` single-threaded processes, all started before the block runs.

    Leaving the block normally waits for the submitted tasks; leaving it by an exception
    (Ctrl-C included) stops the pool at once with :func:`stop_pool`.
    """
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(start_method()),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, initargs),
    )
    try:
        pool.submit(os.getpid)  # launches every worker now, before the caller does more
        yield pool
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown(wait=True)
