"""Process pools for the harness, started so that workers come up in milliseconds.

On Linux workers are forked: spawning would re-import torch in each (about 1.5 s per
worker on this project's machines). Forking is safe only while the parent has run no
torch operation and started no thread, so callers create the pool before any such work,
and :func:`process_pool` starts every worker at once rather than lazily. macOS and
Windows cannot fork safely, so they spawn.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor


def start_method() -> str:
    return "fork" if sys.platform.startswith("linux") else "spawn"


def process_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()
) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, all started before this function returns."""
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(start_method()),
        initializer=initializer,
        initargs=initargs,
    )
    pool.submit(os.getpid)  # launches every worker now, before the caller does more
    return pool
