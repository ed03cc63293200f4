"""Running a study: every variant × seed trained as an independent task on the executor
layer (:mod:`bench.executors`), then one evaluation sweep (:func:`bench.sweep.run_sweep`)
over held-out data, all resumable.

The study folder holds ``study.json`` (the study as run, its training data, every command
that ran it with versions and git state, and each trained model's hash), ``train/VARIANT/
seed-S/`` (a ``bench train`` run folder each) and ``evaluation/`` (a ``bench run`` folder).
A model counts as trained only when its export records this variant's settings and the
full step count; otherwise its run resumes from ``last.pt``, whose settings the training
loop checks. The evaluation is resumed only while every model it scored is unchanged; a
model retrained since then sends the old evaluation to ``evaluation.stale-N``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from bench.ablate.study import Study
from bench.audio import file_sha256
from bench.executors import create_executor
from bench.provenance import backend_versions, git_state
from bench.store import RunStore, writable_folder, write_atomically

STUDY_FILE = "study.json"
EVALUATION_DIR = "evaluation"


@dataclass(frozen=True)
class TrainingTask:
    """One variant × seed: its settings (as JSON, to cross process boundaries) and folder."""

    recipe: str
    variant: str
    seed: int
    settings: dict
    folder: str


@dataclass(frozen=True)
class TrainedModel:
    """A finished variant × seed: its exported model and what the training did."""

    variant: str
    seed: int
    model: str
    sha256: str
    steps: int
    wall_seconds: float
    # False when the model was found finished and left as it was.
    trained_now: bool


@dataclass(frozen=True)
class StudyRun:
    """What ``run_study`` made: the trained models by label and the evaluation run."""

    folder: Path
    trained: dict[str, TrainedModel]
    evaluation_dir: Path


def _settings_of(task: TrainingTask):
    from bench.registry import SOLVERS, load_target

    settings_class = load_target(SOLVERS.factory(task.recipe).settings)
    return settings_class.from_json(task.settings)


def _finished(model_path: Path, settings) -> dict | None:
    """The export's metadata if ``model_path`` is this variant's finished model."""
    from bench.codecs.checkpoint import CheckpointError, load_checkpoint

    if not model_path.is_file():
        return None
    try:
        checkpoint = load_checkpoint(model_path)
    except CheckpointError:
        return None  # damaged: retrained from its last state
    saved = checkpoint.metadata.get("train_settings")
    # Compared as JSON: tuples in the settings are lists in the file.
    if _as_json(settings.to_json()) != _as_json(saved) or checkpoint.step != settings.steps:
        return None
    return checkpoint.metadata


def _as_json(value: object) -> object:
    """``value`` as JSON gives it back: tuples as lists (a checkpoint keeps them as tuples)."""
    return json.loads(json.dumps(value))


def train_variant(task: TrainingTask) -> TrainedModel:
    """Train ``task`` to its step count, resuming a run its folder holds; a finished model
    is left as it is. Runs in an executor's worker."""
    from bench.train.loop import solver_class, train

    settings = _settings_of(task)
    folder = Path(task.folder)
    solver = solver_class(settings)
    model_path = folder / solver.model_checkpoint
    metadata = _finished(model_path, settings)
    trained_now = metadata is None
    if trained_now:
        resume = (folder / solver.last_checkpoint).exists()
        train(settings, folder, resume=resume, progress=False)
        metadata = _finished(model_path, settings)
        if metadata is None:
            raise RuntimeError(f"{model_path}: the training ended without the finished model")
    return TrainedModel(
        variant=task.variant,
        seed=task.seed,
        model=str(model_path),
        sha256=file_sha256(model_path),
        steps=settings.steps,
        wall_seconds=float(metadata.get("wall_seconds", float("nan"))),
        trained_now=trained_now,
    )


# What decides a study's numbers, and so must not change between the runs of one study
# folder. The budget (steps and seeds) is not part of it: a rerun with more steps continues
# each model from its last state, one with more seeds trains the new seeds alone, and each
# run's budget is kept in the record's ``runs``. The presentation (baseline, comparisons,
# published rows) may change: the tables are rebuilt from the same models and rows.
IDENTITY_KEYS = ("recipe", "base", "variants", "evaluation", "training_data")


def study_record(study: Study, data: str) -> dict:
    """The study as run, with its training data (``IDENTITY_KEYS`` identify it)."""
    return {
        "name": study.name,
        "source": study.source,
        "recipe": study.recipe,
        "baseline": study.baseline,
        "comparisons": [list(pair) for pair in study.comparisons],
        "base": {name: value for name, value in study.base.items() if name != "steps"},
        "variants": study.variants,
        "evaluation": study.evaluation,
        "published_table": study.published_table,
        "published_models": study.published_models,
        "training_data": data,
    }


def _read_record(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path}: expected the study's JSON record, got invalid JSON ({error})"
        ) from None
    if not isinstance(record, dict) or "study" not in record:
        raise ValueError(f"{path}: expected the study's JSON record, got {str(record)[:80]!r}")
    return record


def _write_record(path: Path, record: dict) -> None:
    write_atomically(path, json.dumps(record, indent=2).encode() + b"\n")


def check_held_out(study: Study, data: str) -> None:
    """Refuse an evaluation set that shares audio with the training data (by content hash)."""
    from bench.data import load_dataset
    from bench.sweep.plan import input_hashes

    evaluation = _evaluation_dataset(study)
    training = load_dataset(data)
    trained_on = {digest: item for item, digest in input_hashes(training.items).items()}
    shared = sorted(
        f"{item} (= {trained_on[digest]})"
        for item, digest in input_hashes(evaluation.items).items()
        if digest in trained_on
    )
    if shared:
        raise ValueError(
            f"the evaluation data {study.evaluation['data']!r} is not held out: "
            f"{len(shared)} of its items are in the training data {data!r}: "
            f"{', '.join(shared[:5])}"
        )


def _evaluation_dataset(study: Study):
    from bench.data import load_dataset

    evaluation = study.evaluation
    return load_dataset(
        evaluation["data"],
        limit=evaluation.get("limit"),
        tags=evaluation.get("tags") or None,
        exclude_tags=evaluation.get("exclude_tags") or None,
        item_ids=evaluation.get("items"),
    )


def evaluation_settings(study: Study, trained: dict[str, TrainedModel]):
    """The sweep over the held-out data: one condition per variant × seed, each the recipe's
    codec on that model, at the study's bitrates."""
    from bench.registry import SOLVERS
    from bench.sweep import SweepSettings

    codec = SOLVERS.factory(study.recipe).defaults["codec"]
    labels = list(study.labels())
    evaluation = dict(study.evaluation)
    for key in ("bitrates", "metrics", "tags", "exclude_tags", "items"):
        if evaluation.get(key) is not None:
            evaluation[key] = tuple(evaluation[key])
    return SweepSettings(
        codecs=tuple(labels),
        label_codecs=dict.fromkeys(labels, codec),
        codec_options={label: {"checkpoint": trained[label].model} for label in labels},
        seeds=(0,),
        listening_items=0,
        **evaluation,
    )


def run_study(
    study: Study,
    data: str,
    out_dir: str | os.PathLike,
    *,
    executor: str = "process",
    workers: int | None = None,
    executor_options: dict | None = None,
    progress: bool = True,
    command: list[str] | None = None,
) -> StudyRun:
    """Train every variant × seed of ``study`` on ``data`` and evaluate them; resumes the
    study in ``out_dir``. ``executor`` and ``workers`` say where tasks run (one thread each),
    never what they compute. Raises ``ValueError`` for a folder holding another study, a
    folder in use, or evaluation data that is not held out."""
    out_dir = writable_folder(out_dir, "--out")
    record_path = out_dir / STUDY_FILE
    with RunStore(out_dir).locked():
        current = _as_json(study_record(study, data))
        record = _read_record(record_path)
        if record is not None:
            changed = [key for key in IDENTITY_KEYS if record["study"].get(key) != current[key]]
            if changed:
                raise ValueError(
                    f"{out_dir} holds a run of another study or other settings "
                    f"({record['study'].get('name')}: {', '.join(changed)} differ); give another "
                    "--out to start a new one"
                )
        check_held_out(study, data)
        record = record or {"runs": [], "trained": {}}
        record["study"] = current
        record["runs"].append(
            {
                "command": shlex.join(command or sys.argv),
                "started": datetime.now(UTC).isoformat(),
                "steps": study.base.get("steps"),
                "seeds": list(study.seeds),
                "executor": executor,
                "workers": workers,
                "versions": backend_versions(),
                "git": git_state(),
            }
        )
        _write_record(record_path, record)
        trained = _train_all(study, data, out_dir, executor, workers, executor_options, progress)
        record["trained"] = {
            label: {name: value for name, value in asdict(model).items() if name != "trained_now"}
            for label, model in trained.items()
        }
        _write_record(record_path, record)
        evaluation_dir = _evaluate(
            study, trained, out_dir, record, executor, workers, executor_options, progress
        )
    return StudyRun(out_dir, trained, evaluation_dir)


def _train_all(
    study: Study,
    data: str,
    out_dir: Path,
    executor: str,
    workers: int | None,
    executor_options: dict | None,
    progress: bool,
) -> dict[str, TrainedModel]:
    tasks = [
        TrainingTask(
            recipe=study.recipe,
            variant=variant,
            seed=seed,
            settings=study.settings(variant, seed, data).to_json(),
            folder=str(out_dir / "train" / variant / f"seed-{seed}"),
        )
        for label, (variant, seed) in study.labels().items()
    ]
    options = dict(executor_options or {})
    if executor == "ray":
        options.setdefault("use_gpus", True)  # one GPU per training task where the cluster has them
    trained = {}
    pool = create_executor(executor, workers, **options)
    with (
        pool,
        tqdm(
            total=len(tasks), desc=f"bench ablate {study.name}: train", disable=not progress
        ) as bar,
    ):
        for model in pool.map(train_variant, tasks):
            trained[f"{model.variant}-s{model.seed}"] = model
            how = "trained" if model.trained_now else "already trained"
            bar.write(
                f"{model.variant} seed {model.seed}: {how}, {model.steps} steps, "
                f"{model.wall_seconds:.0f} s",
                file=sys.stderr,
            )
            bar.update(1)
    return {label: trained[label] for label in study.labels()}


def _evaluate(
    study: Study,
    trained: dict[str, TrainedModel],
    out_dir: Path,
    record: dict,
    executor: str,
    workers: int | None,
    executor_options: dict | None,
    progress: bool,
) -> Path:
    from bench.sweep import run_sweep

    evaluation_dir = out_dir / EVALUATION_DIR
    models = {label: model.sha256 for label, model in trained.items()}
    resumable = (evaluation_dir / "config.json").exists()
    if resumable and record.get("evaluated_models") != models:
        # Scored on models that have changed since: kept aside, never mixed with new rows.
        stale = _free_name(out_dir, f"{EVALUATION_DIR}.stale")
        evaluation_dir.rename(stale)
        resumable = False
    elif evaluation_dir.exists() and not resumable:
        # Killed before its configuration was written: nothing in it to keep.
        evaluation_dir.rename(_free_name(out_dir, f"{EVALUATION_DIR}.incomplete"))
    record["evaluated_models"] = models
    _write_record(out_dir / STUDY_FILE, record)
    options = dict(executor_options or {})
    run_sweep(
        None if resumable else evaluation_settings(study, trained),
        workers=workers,
        executor=executor,
        executor_options=options,
        run_dir=None if resumable else evaluation_dir,
        resume=evaluation_dir if resumable else None,
        cache_dir=None,
        progress=progress,
    )
    return evaluation_dir


def _free_name(folder: Path, stem: str) -> Path:
    number = 1
    while (folder / f"{stem}-{number}").exists():
        number += 1
    return folder / f"{stem}-{number}"
