"""The cache serves only what it wrote, and a run directory is checked before it is trusted:
corrupted cache entries are recomputed and counted, damaged results name their line, a
resumed run refuses changed inputs and a second process on one run."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import write_tone

from bench.store import CACHE_LAYOUT, Cache, RunStore
from bench.sweep import SweepSettings, run_sweep


@pytest.fixture
def folder(tmp_path):
    for index in range(2):
        write_tone(tmp_path / "data" / f"tone{index}.wav", frequency=300 + 100 * index)
    return tmp_path / "data"


def _run(folder: Path, cache: Path | None, metrics: tuple[str, ...], **overrides):
    settings = SweepSettings(
        codecs=("test-quantizer",),
        data=f"folder:{folder}",
        metrics=metrics,
        **overrides,
    )
    out = folder.parent / "runs"
    return run_sweep(settings, workers=1, out_root=out, cache_dir=cache, progress=False)


def _values(summary) -> dict[tuple[str, str], float]:
    return {(row["item"], row["metric"]): row["value"] for row in RunStore(summary.run_dir).rows()}


def _failures(summary) -> list[str]:
    return [row["failure"] for row in RunStore(summary.run_dir).rows() if row["failure"]]


def _entries(cache: Path, kind: str, suffix: str) -> list[Path]:
    return sorted((cache / CACHE_LAYOUT / kind).glob(f"*/*{suffix}"))


def test_an_edited_cached_metric_value_is_recomputed_not_served(tmp_path, folder):
    cache = tmp_path / "cache"
    first = _run(folder, cache, ("si_sdr",))
    for path in _entries(cache, "metrics", ".json"):
        edited = re.sub(rb'("si_sdr": )-?[0-9.e+-]+', rb"\g<1>20.3", path.read_bytes())
        path.write_bytes(edited)

    second = _run(folder, cache, ("si_sdr",))
    assert _values(second) == _values(first)
    assert 20.3 not in _values(second).values()
    assert second.bad_cache_entries == 2  # one si_sdr entry per item
    # The bad entries were replaced: a third run serves them from the cache, all good.
    third = _run(folder, cache, ("si_sdr",))
    assert (third.tasks_from_cache, third.bad_cache_entries) == (2, 0)
    assert _values(third) == _values(first)


@pytest.mark.parametrize("listening_items", [0, 3])
def test_damaged_cached_audio_is_decoded_again_when_a_metric_is_added(
    tmp_path, folder, listening_items
):
    cache = tmp_path / "cache"
    _run(folder, cache, ("si_sdr",), listening_items=listening_items)
    flipped, truncated = _entries(cache, "decoded", ".npy")
    data = bytearray(flipped.read_bytes())
    data[200::97] = bytes(byte ^ 0x5A for byte in data[200::97])  # past the .npy header
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:1000])

    more = _run(folder, cache, ("si_sdr", "mel_distance"), listening_items=listening_items)
    fresh = _run(folder, None, ("si_sdr", "mel_distance"), listening_items=listening_items)
    assert _failures(more) == []  # the codec is not blamed for the cache's damage
    assert _values(more) == _values(fresh)
    assert more.bad_cache_entries == 2 and more.tasks_computed == 2
    rows = list(RunStore(more.run_dir).rows())
    assert not any(row["decoded_from_cache"] for row in rows)


def test_a_truncated_metric_entry_is_a_miss_not_an_error(tmp_path, folder):
    cache = tmp_path / "cache"
    first = _run(folder, cache, ("si_sdr",))
    for path in _entries(cache, "metrics", ".json"):
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])

    second = _run(folder, cache, ("si_sdr",))
    assert _values(second) == _values(first)
    assert second.bad_cache_entries == 2


def test_entries_without_a_digest_and_damaged_payloads_are_misses(tmp_path):
    cache = Cache(tmp_path)
    old_format = tmp_path / CACHE_LAYOUT / "metrics" / "ab" / "ab12.json"
    old_format.parent.mkdir(parents=True)
    old_format.write_text(json.dumps({"values": {"si_sdr": 3.0}, "failure": None, "seconds": 0}))
    assert cache.get_metric("ab12") is None
    assert not old_format.exists() and cache.discarded == {"metrics/ab12"}

    audio = np.linspace(-1, 1, 64, dtype=np.float32)[None]
    cache.put_decoded("cd34", audio, b"payload", {"sample_rate": 16000})
    decoded, meta = cache.get_decoded("cd34")
    assert np.array_equal(decoded, audio) and meta == {"sample_rate": 16000}
    assert cache.payload("cd34") == b"payload"
    (tmp_path / CACHE_LAYOUT / "decoded" / "cd" / "cd34.bin").write_bytes(b"paYload")
    assert cache.payload("cd34") is None
    assert cache.get_decoded("cd34") is None  # the whole entry went with its bad payload
    assert cache.discarded == {"metrics/ab12", "decoded/cd34"}


def test_a_cache_path_that_is_a_file_is_refused_up_front(tmp_path, folder):
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("")
    with pytest.raises(ValueError, match="--cache: expected a folder that can be written"):
        _run(folder, not_a_folder, ("si_sdr",))
    assert not (tmp_path / "runs").exists()


def _killed_run(folder: Path, cache: Path | None) -> Path:
    """A finished run cut back to its first item's rows, as a kill would leave it."""
    summary = _run(folder, cache, ("si_sdr",))
    store = RunStore(summary.run_dir)
    first = next(store.rows())["item"]
    lines = store.results_path.read_text().splitlines(keepends=True)
    store.results_path.write_text("".join(line for line in lines if f'"{first}"' in line))
    return summary.run_dir


def test_resume_refuses_inputs_that_changed_naming_them(tmp_path, folder):
    run_dir = _killed_run(folder, tmp_path / "cache")
    write_tone(folder / "tone1.wav", frequency=1234)  # same name, new content
    write_tone(folder / "tone2.wav")
    before = RunStore(run_dir).results_path.read_bytes()
    with pytest.raises(ValueError) as error:
        run_sweep(resume=run_dir, workers=1, progress=False)
    assert "changed or unreadable: 'tone1'; new: 'tone2'" in str(error.value)
    assert RunStore(run_dir).results_path.read_bytes() == before


def test_a_damaged_middle_line_of_the_results_names_the_file_and_line(tmp_path, folder):
    run_dir = _killed_run(folder, None)
    results = RunStore(run_dir).results_path
    lines = results.read_text().splitlines(keepends=True)
    lines[0] = lines[0][:14] + "\x01" + lines[0][15:]
    results.write_text("".join(lines) + '{"torn": ')
    with pytest.raises(ValueError, match=rf"{re.escape(str(results))}: line 1: expected a JSON"):
        list(RunStore(run_dir).rows())
    with pytest.raises(ValueError, match="line 1"):
        run_sweep(resume=run_dir, workers=1, progress=False)


def test_a_torn_last_line_is_still_repaired_on_resume(tmp_path, folder):
    run_dir = _killed_run(folder, None)
    results = RunStore(run_dir).results_path
    with open(results, "a") as handle:
        handle.write('{"codec": "test-quan')
    resumed = run_sweep(resume=run_dir, workers=1, progress=False)
    assert (resumed.tasks_resumed, resumed.tasks_computed) == (1, 1)
    assert len(list(RunStore(run_dir).rows())) == 2


def test_a_run_directory_is_held_by_one_process_at_a_time(tmp_path):
    store = RunStore(tmp_path / "run")
    store.create({"run_id": "x"})
    with store.locked():
        with pytest.raises(ValueError, match=r"in use by another bench process \(pid \d+\)"):
            with RunStore(tmp_path / "run").locked():
                pass
    with store.locked():  # released when the holder is done
        pass


def test_a_row_without_its_fields_and_a_broken_config_are_named_on_resume(tmp_path, folder):
    run_dir = _killed_run(folder, None)
    store = RunStore(run_dir)
    with open(store.results_path, "a") as handle:
        handle.write('{"item": "tone1"}\n')
    with pytest.raises(ValueError, match=r"results.jsonl: line 2: expected a result row"):
        run_sweep(resume=run_dir, workers=1, progress=False)
    store.config_path.write_text("{}")
    with pytest.raises(ValueError, match="expected a run's configuration with its settings"):
        run_sweep(resume=run_dir, workers=1, progress=False)
    store.config_path.write_text('{"settings": ')
    with pytest.raises(ValueError, match=r"config.json: expected the run's JSON configuration"):
        run_sweep(resume=run_dir, workers=1, progress=False)


def test_decoded_entries_of_the_older_metadata_layout_are_decoded_again(tmp_path, folder):
    """Before records had one name per value, the cache kept "nominal_kbps" and
    "actual_kbps" beside the rows' "kbps_nominal" and "kbps_actual"."""
    cache = tmp_path / "cache"
    first = _run(folder, cache, ("si_sdr", "kbps_actual"))
    for path in _entries(cache, "decoded", ".json"):
        document = json.loads(path.read_bytes().partition(b"\n")[2])
        meta = document["meta"]
        meta["nominal_kbps"], meta["actual_kbps"] = (
            meta.pop("kbps_nominal"),
            meta.pop("kbps_actual"),
        )
        body = json.dumps(document).encode()
        path.write_bytes(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
    second = _run(folder, cache, ("si_sdr", "kbps_actual"))
    assert (second.tasks_computed, second.bad_cache_entries) == (2, 2)
    assert _values(second) == _values(first)
    assert _failures(second) == []
    third = _run(folder, cache, ("si_sdr", "kbps_actual"))
    assert (third.tasks_from_cache, third.bad_cache_entries) == (2, 0)
