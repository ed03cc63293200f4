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
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
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


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple) -> None:
    pin_threads()  # for the worker's whole life
    if initializer is not None:
        initializer(*initargs)


def process_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()
) -> ProcessPoolExecutor:
    """A pool of ``workers`` single-threaded processes, all started before returning."""
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(start_method()),
        initializer=_start_worker,
        initargs=(initializer, initargs),
    )
    pool.submit(os.getpid)  # launches every worker now, before the caller does more
    return pool
