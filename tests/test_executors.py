"""Executors: one protocol, inline and process implementations giving the same rows, a third
one dropping in through the registry; how a run is executed is no part of its identity."""

from __future__ import annotations

import json

import pytest
from helpers import write_tone

from bench.executors import WorkerSetup, create_executor
from bench.registry import EXECUTORS, UnknownNameError
from bench.report.stats import metric_directions, results_frame
from bench.report.worst import WORST_KEPT, worst_items
from bench.store import RunStore, condition_slug, item_file_stem
from bench.sweep import SweepSettings, run_sweep

# What differs between two runs of the same settings: the run and the measured seconds.
VOLATILE = ("run_id", "encode_seconds", "decode_seconds", "metric_seconds")


class ReversedExecutor:
    """A third executor, as a cluster one would be: it runs every task, then hands the
    results back in the reverse order (completion order is the executor's business)."""

    def __init__(self, workers: int | None, setup: WorkerSetup | None = None) -> None:
        self.workers = 1
        self.setup = setup

    def __enter__(self) -> ReversedExecutor:
        self.setup.start(*self.setup.args)
        return self

    def __exit__(self, *exception) -> None:
        self.setup.stop()

    def execution(self) -> dict:
        return {"workers": self.workers}

    def map(self, function, tasks):
        return reversed([function(task) for task in tasks])


if "test-reversed" not in EXECUTORS.names():
    EXECUTORS.register("test-reversed", ReversedExecutor, source="tests")


@pytest.fixture
def folder(tmp_path):
    for index in range(3):
        write_tone(tmp_path / "data" / f"tone{index}.wav", frequency=300 + 150 * index)
    return tmp_path / "data"


def _settings(folder) -> SweepSettings:
    return SweepSettings(
        codecs=("identity", "opus"),
        codec_bitrates={"opus": (6.0, 12.0)},
        data=f"folder:{folder}",
        metrics=("si_sdr", "mel_distance", "kbps_actual"),
        listening_items=2,
    )


def _stable_rows(run_dir) -> list[dict]:
    rows = [
        {key: value for key, value in row.items() if key not in VOLATILE}
        for row in RunStore(run_dir).rows()
    ]
    return sorted(rows, key=lambda row: json.dumps(row, sort_keys=True))


def _listening_files(run_dir) -> dict[str, bytes]:
    folder = run_dir / "listening"
    return {
        str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*.flac"))
    }


def test_inline_process_and_a_third_executor_give_identical_rows_and_listening_files(
    tmp_path, folder
):
    runs = {
        executor: run_sweep(
            _settings(folder),
            workers=workers,
            executor=executor,
            out_root=tmp_path / executor,
            cache_dir=None,
            progress=False,
        ).run_dir
        for executor, workers in (("inline", 1), ("process", 2), ("test-reversed", 1))
    }
    inline = _stable_rows(runs["inline"])
    assert len(inline) == 3 * 3 * 3  # items x conditions x metrics
    assert all(row["failure"] is None for row in inline)
    for executor in ("process", "test-reversed"):
        assert _stable_rows(runs[executor]) == inline, executor
        # The driver writes the listening copies the workers return: the same files.
        assert _listening_files(runs[executor]) == _listening_files(runs["inline"]), executor
    # The 2 listening items' reference and decoded audio (1 + 3 files each), and the 2
    # worst items of each condition (bench.report.worst) beside them.
    kept = _listening_files(runs["inline"])
    frame = results_frame(runs["inline"])
    worst = worst_items(frame, metric_directions(runs["inline"]), WORST_KEPT)
    expected = {f"reference/{item_file_stem(item)}.flac" for item in ("tone0", "tone1")}
    expected |= {
        f"{condition}/{item_file_stem(item)}.flac"
        for condition in ("identity_1536kbps", "opus_6kbps", "opus_12kbps")
        for item in ("tone0", "tone1")
    }
    for row in worst.itertuples():
        condition = condition_slug(row.label, row.bitrate, None)
        expected |= {
            f"reference/{item_file_stem(row.item)}.flac",
            f"{condition}/{item_file_stem(row.item)}.flac",
        }
    assert set(kept) == expected


def test_workers_and_executor_stay_out_of_the_run_s_identity_and_resume_each_other(
    tmp_path, folder
):
    one = run_sweep(
        _settings(folder), workers=1, out_root=tmp_path / "runs", cache_dir=None, progress=False
    )
    two = run_sweep(
        _settings(folder), workers=2, out_root=tmp_path / "runs", cache_dir=None, progress=False
    )
    configs = [RunStore(summary.run_dir).read_config() for summary in (one, two)]
    assert configs[0]["config_hash"] == configs[1]["config_hash"]
    assert one.run_dir.name.split("-")[2] == two.run_dir.name.split("-")[2]  # the hash part
    assert [config["execution"] for config in configs] == [
        {"workers": 1, "executor": "inline"},
        {"workers": 2, "executor": "process"},
    ]
    assert "workers" not in configs[0]["settings"]
    # A run started inline, killed after its first item, is finished by two processes.
    store = RunStore(one.run_dir)
    first_item = next(store.rows())["item"]
    lines = store.results_path.read_text().splitlines(keepends=True)
    store.results_path.write_text("".join(line for line in lines if f'"{first_item}"' in line))
    resumed = run_sweep(resume=one.run_dir, workers=2, progress=False)
    assert (resumed.tasks_resumed, resumed.tasks_computed) == (3, 6)
    assert _stable_rows(one.run_dir) == _stable_rows(two.run_dir)
    # Resumed the other way round: a process-pool run continued inline.
    finished = run_sweep(resume=two.run_dir, workers=1, progress=False)
    assert (finished.tasks_resumed, finished.tasks_computed) == (9, 0)


def test_unknown_executors_and_impossible_worker_counts_are_refused(tmp_path, folder):
    with pytest.raises(UnknownNameError, match="unknown executor 'proces'; did you mean"):
        create_executor("proces", 2)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="inline executor runs one task at a time"):
        run_sweep(_settings(folder), workers=2, executor="inline", cache_dir=cache)
    with pytest.raises(ValueError, match="expected --workers >= 1, got 0"):
        run_sweep(_settings(folder), workers=0, out_root=tmp_path / "runs", cache_dir=cache)
    assert not (tmp_path / "runs").exists() and not cache.exists(), "nothing ran"
    assert {"inline", "process"} <= set(EXECUTORS.names())
