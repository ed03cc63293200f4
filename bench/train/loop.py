"""The one training loop: steps, resume, the JSONL log, progress, periodic checkpoints, Ctrl-C
export and DistributedDataParallel, for every solver (:mod:`bench.train.solvers`).

The solver of a run is the one its settings name. A run folder gets the solver's resumable state
(``last.pt`` for the codecs; networks, optimisers and step, with the settings and provenance),
its log (one JSON line per step), and the exported model once the loop ends, stops at Ctrl-C or
SIGTERM (after the step in progress, whose state is saved first) or reaches ``steps``.
``resume=True`` continues a run whose settings equal these but for ``steps``: since a solver
draws every random number from (seed, step), the result equals an uninterrupted run's.

Where the process was started by ``torchrun`` with several workers, each worker draws its own
batches, the solver averages gradients with DistributedDataParallel, and rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from bench.codecs.checkpoint import Checkpoint, Network, load_checkpoint, load_strictly
from bench.provenance import backend_versions, git_state
from bench.registry import load_target
from bench.train.data import SegmentSampler
from bench.train.settings import SolverSettings
from bench.train.solvers.base import Solver


@dataclass(frozen=True)
class Distributed:
    """This process's place among the training workers: ``torchrun`` sets the environment."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> Distributed:
        """Joins the process group when started by ``torchrun`` with several workers.

        One worker per GPU (NCCL) where there are GPUs, else CPU workers over Gloo.
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cpu")
        if torch.cuda.is_available():
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if world_size == 1:
            return cls(device=device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), device)


def solver_class(settings: SolverSettings) -> type[Solver]:
    """The solver that trains with ``settings`` (its class's ``solver``)."""
    return load_target(type(settings).solver)


def save_state(solver: Solver, step: int, path: Path, metadata: dict) -> None:
    """The resumable state: networks (each hashed), training state, step and settings."""
    Checkpoint(
        codec=solver.name,
        networks={
            name: Network(config, module.state_dict())
            for name, (config, module) in solver.networks().items()
        },
        step=step,
        training_state=solver.training_state(),
        metadata={**metadata, "train_settings": solver.settings.to_json()},
    ).save(path)


def saved_state(path: Path, settings: SolverSettings, name: str) -> Checkpoint:
    """The state at ``path``, if a run with ``settings`` may continue from it."""
    checkpoint = load_checkpoint(path, name)
    saved = checkpoint.metadata.get("train_settings")
    if not isinstance(saved, dict):
        raise ValueError(f"--resume: {path} records no training settings to continue with")
    if not settings.resumes(type(settings).from_json(saved)):
        raise ValueError(
            f"--resume: {path} was trained with other settings; only --steps may change. "
            f"Saved: {saved}"
        )
    return checkpoint


def load_state(solver: Solver, checkpoint: Checkpoint) -> int:
    """Restore ``solver`` from ``checkpoint`` (networks key by key); returns its step."""
    expected = solver.networks()
    if set(checkpoint.networks) != set(expected):
        raise ValueError(
            f"--resume: {checkpoint.path} holds the networks {sorted(checkpoint.networks)}, "
            f"expected {sorted(expected)}"
        )
    solver.check_resumable(checkpoint)
    for name, (_, module) in expected.items():
        load_strictly(module, checkpoint.network(name).state_dict, f"{checkpoint.path} ({name})")
    solver.load_training_state(checkpoint.training_state)
    return checkpoint.step


def resume_log(log_path: Path, step: int) -> float:
    """Drop log lines past ``step`` (written after the last save); the wall time until then.

    A resumed run repeats those steps, so its log then equals an uninterrupted run's.
    """
    lines = log_path.read_text().splitlines() if log_path.exists() else []
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    log_path.write_text("".join(line + "\n" for line in kept))
    return json.loads(kept[-1])["wall_seconds"] if kept else 0.0


class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM (``kill``, a scheduler's preemption) ask the loop to stop
    once the step in progress has finished, so the saved state lies on a step boundary and
    ``--resume`` continues exactly; a second signal stops at once, inside a step
    (``in_step``), but waits while a finished step is being counted and logged: cut there,
    the saved state was a step ahead of the log. The handlers are installed for the loop alone.
    A signal the process was started ignoring stays ignored: a shell starts a background job
    with SIGINT ignored, and a SIGINT reaching it (a terminal's Ctrl-C, meant for the
    foreground) must not count as the first of two signals, which would make the SIGTERM
    that follows cut a step short."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.received: str | None = None
        self.in_step = False
        self.previous: dict[int, object] = {}

    def _handle(self, number: int, frame: object) -> None:
        if self.received is not None and self.in_step:
            raise KeyboardInterrupt(f"a second {signal.Signals(number).name}")
        self.received = self.received or signal.Signals(number).name

    def __enter__(self) -> StopRequest:
        # Signal handlers can only be set from the main thread (a test may train in another).
        if self.enabled and threading.current_thread() is threading.main_thread():
            self.previous = {
                number: signal.signal(number, self._handle)
                for number in self.SIGNALS
                if signal.getsignal(number) is not signal.SIG_IGN
            }
        return self

    def __exit__(self, *exception: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def train(
    settings: SolverSettings,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    sampler: SegmentSampler | None = None,
) -> Path:
    """Train to ``settings.steps``; returns the path of the exported model.

    ``sampler`` replaces the segments of ``settings.data`` (tests draw from one in memory).
    """
    distributed = Distributed.from_environment()
    solver_type = solver_class(settings)
    out_dir = Path(out_dir)
    last = out_dir / solver_type.last_checkpoint
    if resume and not last.exists():
        raise ValueError(f"--resume: expected {last} from an earlier run, found none")
    if not resume and last.exists():
        raise ValueError(f"{out_dir} already holds a training run; pass --resume to continue")
    solver = solver_type(settings, distributed.device)
    step = load_state(solver, saved_state(last, settings, solver.name)) if resume else 0
    solver.wrap_for_workers(distributed.rank, distributed.world_size)
    solver.use_data(sampler, progress=progress and distributed.is_main)
    if distributed.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    metadata = {
        **solver.metadata(),
        "data": settings.data,
        "data_seconds": solver.sampler.seconds,
        "workers": distributed.world_size,
        "device": str(distributed.device),
        "versions": backend_versions(),
        "git": git_state(),
    }
    log_path = out_dir / solver.log_file
    started = time.perf_counter()
    # Rank 0 alone keeps the log (and the wall time the exported model records).
    elapsed_before = resume_log(log_path, step) if resume and distributed.is_main else 0.0

    def wall_seconds() -> float:
        return elapsed_before + time.perf_counter() - started

    bar = tqdm(
        total=settings.steps,
        initial=step,
        desc=f"bench train {solver.name}",
        disable=not (progress and distributed.is_main),
    )
    log_file = (
        open(log_path, "a", encoding="utf-8") if distributed.is_main else contextlib.nullcontext()
    )
    interrupted = False
    # Rank 0 alone stops at a step boundary; the other workers keep the default handlers.
    with bar, log_file, StopRequest(enabled=distributed.is_main) as stop:
        try:
            while step < settings.steps:
                stop.in_step = True
                log = solver.run_step(step)
                stop.in_step = False
                step += 1
                if not distributed.is_main:
                    continue
                log.update(step=step, wall_seconds=wall_seconds())
                log_file.write(json.dumps(log) + "\n")
                log_file.flush()
                bar.update(1)
                bar.set_postfix(solver.progress(log))
                if step % settings.checkpoint_every == 0 or step == settings.steps:
                    save_state(
                        solver, step, last, {**metadata, "wall_seconds": log["wall_seconds"]}
                    )
                if stop.received is not None:
                    raise KeyboardInterrupt(stop.received)
        except KeyboardInterrupt:
            # Stopping early keeps every finished step: the state is saved where it stands
            # and the model exported; `--resume` continues from here.
            interrupted = True
            if distributed.is_main:
                save_state(solver, step, last, {**metadata, "wall_seconds": wall_seconds()})
    model_path = out_dir / solver.model_checkpoint
    if distributed.is_main:
        solver.export(model_path, step, {**metadata, "wall_seconds": wall_seconds()})
        solver.finish(out_dir)
    if distributed.world_size > 1 and not interrupted:
        # Every worker returns only once the model is written.
        dist.barrier()
    if interrupted:
        raise KeyboardInterrupt(f"stopped at step {step}; model exported to {model_path}")
    return model_path
