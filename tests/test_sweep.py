"""The sweep: planning, the content-addressed cache, provenance and the store."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from bench.codecs.base import CodecInfo
from helpers import QuantizingCodec, make_record, write_tone

from bench import audio as bench_audio
from bench.data import load_dataset
from bench.registry import CODECS, UnknownNameError, create_codec
from bench.store import Cache, RunStore
from bench.sweep import (
    Evaluator,
    SweepSettings,
    Task,
    listening_selection,
    parse_list,
    run_sweep,
)
from bench.sweep.plan import plan


@pytest.fixture
def folder(tmp_path):
    for index in range(3):
        write_tone(tmp_path / "data" / f"tone{index}.wav", frequency=300 + 100 * index)
    return tmp_path / "data"


def _settings(folder, **overrides) -> SweepSettings:
    return SweepSettings(codecs=("test-quantizer",), data=f"folder:{folder}", **overrides)


def test_second_identical_run_only_reads_the_cache(tmp_path, folder):
    first = run_sweep(
        _settings(folder),
        workers=1,
        out_root=tmp_path / "runs",
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    second = run_sweep(
        _settings(folder),
        workers=1,
        out_root=tmp_path / "runs",
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert (first.tasks_computed, first.tasks_from_cache) == (3, 0)
    assert (second.tasks_computed, second.tasks_from_cache) == (0, 3)
    assert second.codec_seconds == 0 and second.metric_seconds == 0
    assert first.run_dir != second.run_dir
    first_rows = list(RunStore(first.run_dir).rows())
    second_rows = list(RunStore(second.run_dir).rows())
    assert [(r["item"], r["metric"], r["value"]) for r in first_rows] == [
        (r["item"], r["metric"], r["value"]) for r in second_rows
    ]
    assert all(row["decoded_from_cache"] for row in second_rows)


def test_adding_a_metric_never_re_decodes(tmp_path, folder):
    cache = tmp_path / "cache"
    run_sweep(
        _settings(folder, metrics=("mel_distance",)),
        workers=1,
        out_root=tmp_path / "runs",
        cache_dir=cache,
        progress=False,
    )
    more = run_sweep(
        _settings(folder, metrics=("mel_distance", "si_sdr")),
        workers=1,
        out_root=tmp_path / "runs",
        cache_dir=cache,
        progress=False,
    )
    assert more.codec_seconds == 0 and more.metric_seconds > 0
    rows = list(RunStore(more.run_dir).rows())
    assert {row["metric"] for row in rows} == {"mel_distance", "si_sdr"}
    assert all(row["decoded_from_cache"] for row in rows)


def test_cached_audio_is_keyed_by_content_not_by_name(tmp_path, folder):
    cache = tmp_path / "cache"
    first = run_sweep(
        _settings(folder), workers=1, out_root=tmp_path / "runs", cache_dir=cache, progress=False
    )
    write_tone(folder / "tone1.wav", frequency=1234)  # same name, new content
    second = run_sweep(
        _settings(folder), workers=1, out_root=tmp_path / "runs", cache_dir=cache, progress=False
    )
    assert (second.tasks_computed, second.tasks_from_cache) == (1, 2)
    changed = {row["decoded_key"] for row in RunStore(second.run_dir).rows()} - {
        row["decoded_key"] for row in RunStore(first.run_dir).rows()
    }
    assert len(changed) == 1
    audio, meta = Cache(cache).get_decoded(changed.pop())
    assert audio.shape == (1, 16000) and meta["kbps_nominal"] == 128.0


def test_config_records_settings_versions_git_and_device(tmp_path, folder):
    summary = run_sweep(
        _settings(folder, seeds=(3,)),
        workers=1,
        out_root=tmp_path / "runs",
        cache_dir=None,
        progress=False,
    )
    config = json.loads((summary.run_dir / "config.json").read_text())
    assert config["settings"]["seeds"] == [3]
    assert config["settings"]["codecs"] == ["test-quantizer"]
    for library in ("torch", "numpy", "soundfile", "libsndfile", "soxr", "av", "python"):
        assert config["versions"][library]
    assert set(config["device"]) >= {"cpu_model", "cpu_count", "torch_threads", "torch_version"}
    assert "commit" in config["git"]
    assert config["codecs"]["test-quantizer"]["checkpoint_hash"]
    assert config["metrics"]["si_sdr"]["higher_is_better"] is True
    assert len(config["dataset"]["items"]) == 3
    assert all(len(item["input_hash"]) == 64 for item in config["dataset"]["items"])
    rows = list(RunStore(summary.run_dir).rows())
    assert {row["run_id"] for row in rows} == {config["run_id"]}
    assert all(row["kbps_nominal"] == 128.0 and row["kbps_actual"] == 128.0 for row in rows)
    assert all(row["encode_seconds"] > 0 and row["audio_seconds"] == 1.0 for row in rows)


def test_plan_rejects_what_the_codec_cannot_do(folder):
    codecs = {"test-quantizer": QuantizingCodec()}
    with pytest.raises(ValueError, match="supported bitrates \\(kbps\\): 128"):
        plan(_settings(folder, bitrates=(6.0,)), codecs)
    with pytest.raises(ValueError, match="--nfe applies to iterative decoders only"):
        plan(_settings(folder, nfes=(8,)), codecs)
    assert len(plan(_settings(folder, seeds=(0, 1)), codecs).conditions) == 2
    with pytest.raises(UnknownNameError, match="did you mean 'mel_distance'"):
        run_sweep(
            _settings(folder, metrics=("mel_distanse",)), workers=1, cache_dir=None, progress=False
        )


def test_parse_list_names_the_option():
    assert parse_list("1.5, 3,6", float, "--bitrates") == (1.5, 3.0, 6.0)
    with pytest.raises(
        ValueError, match="--bitrates: expected comma-separated float values, got 'x'"
    ):
        parse_list("1.5,x", float, "--bitrates")


def test_repeated_list_values_are_refused(folder):
    # --bitrates 6,6 and --metrics si_sdr,si_sdr once wrote every row twice.
    with pytest.raises(ValueError, match="--bitrates: expected each value once, got 6.0"):
        parse_list("6,6", float, "--bitrates")
    for name, value in [
        ("codecs", ("test-quantizer", "test-quantizer")),
        ("bitrates", (128.0, 128.0)),
        ("nfes", (8, 8)),
        ("seeds", (0, 0)),
        ("metrics", ("si_sdr", "si_sdr")),
        ("items", ("a", "a")),
        ("tags", ("speech", "speech")),
        ("exclude_tags", ("music", "music")),
    ]:
        with pytest.raises(ValueError, match=f"{name}: expected each value once"):
            SweepSettings(**{"codecs": ("test-quantizer",), name: value})
    # Two values that both mean the codec's one bitrate are one condition, twice.
    codecs = {"test-quantizer": QuantizingCodec()}
    with pytest.raises(ValueError, match="128, 128.0000001 both match test-quantizer's 128"):
        plan(_settings(folder, bitrates=(128.0, 128.0000001)), codecs)


def test_parse_list_refuses_non_finite_numbers():
    for text in ("nan", "inf", "6,-inf"):
        with pytest.raises(ValueError, match="--bitrates: expected finite numbers"):
            parse_list(text, float, "--bitrates")


def test_a_bitrate_within_tolerance_means_the_codec_s_own(folder):
    codecs = {"test-quantizer": QuantizingCodec()}
    conditions = plan(_settings(folder, bitrates=(128.0000001,)), codecs).conditions
    assert [condition.bitrate for condition in conditions] == [128.0]
    assert codecs["test-quantizer"].check_bitrate(0.1 * 1280) == 128.0
    # Off by more than noise: refused, with a number that shows the difference.
    with pytest.raises(ValueError, match=r"does not support 128\.00001 kbps"):
        codecs["test-quantizer"].check_bitrate(128.00001)


@pytest.mark.parametrize("max_seconds", [0.1, 0.0, -1.0, float("nan"), float("inf")])
def test_max_seconds_below_the_minimum_or_not_finite_is_refused(folder, max_seconds):
    # 0.1 s was scored (kbps_actual 10.4 at nominal 6); nan cropped nothing.
    with pytest.raises(ValueError, match="--max-seconds .* at least 0.25 s"):
        _settings(folder, max_seconds=max_seconds)
    assert _settings(folder, max_seconds=0.25).max_seconds == 0.25


class SixAndTwelve(QuantizingCodec):
    name = "six-and-twelve"
    bitrates = (6.0, 12.0)


def test_each_codec_runs_the_requested_bitrates_it_supports(folder):
    codecs = {"test-quantizer": QuantizingCodec(), "six-and-twelve": SixAndTwelve()}
    settings = SweepSettings(codecs=tuple(codecs), bitrates=(6.0, 128.0), data=f"folder:{folder}")
    sweep_plan = plan(settings, codecs)
    assert [(c.codec, c.bitrate) for c in sweep_plan.conditions] == [
        ("test-quantizer", 128.0),
        ("six-and-twelve", 6.0),
    ]
    assert [(s["codec"], s["bitrate"]) for s in sweep_plan.skipped] == [
        ("test-quantizer", 6.0),
        ("six-and-twelve", 128.0),
    ]
    # A codec given none of its bitrates is an error that says how to give it its own.
    with pytest.raises(ValueError, match=r"supports none .*\(1.5, 3, 128 kbps\).*six-and-twelve:6"):
        plan(SweepSettings(codecs=tuple(codecs), bitrates=(1.5, 3.0, 128.0)), codecs)
    # Bitrates of a codec's own must all be supported: nothing is skipped silently.
    own = SweepSettings(
        codecs=tuple(codecs), bitrates=(128.0,), codec_bitrates={"six-and-twelve": (6.0, 24.0)}
    )
    with pytest.raises(ValueError, match="'six-and-twelve' does not support 24 kbps"):
        plan(own, codecs)


class EveryNfe(QuantizingCodec):
    name = "every-nfe"
    nfe_options = (1, 2, 4, 8)


class EvenNfe(QuantizingCodec):
    """A second-order solver's NFEs: two network calls per step."""

    name = "even-nfe"
    nfe_options = (2, 4, 8)


def test_each_iterative_codec_runs_the_requested_nfes_it_can_spend(folder):
    codecs = {"every-nfe": EveryNfe(), "even-nfe": EvenNfe()}
    settings = SweepSettings(codecs=tuple(codecs), bitrates=(128.0,), nfes=(1, 2, 8))
    sweep_plan = plan(settings, codecs)
    assert [(c.codec, c.nfe) for c in sweep_plan.conditions] == [
        ("every-nfe", 1),
        ("every-nfe", 2),
        ("every-nfe", 8),
        ("even-nfe", 2),
        ("even-nfe", 8),
    ]
    assert sweep_plan.skipped == [
        {"label": "even-nfe", "codec": "even-nfe", "nfe": 1, "supported": [2, 4, 8]}
    ]
    # None of them, or the only iterative codec lacking one: an error naming the valid NFEs.
    with pytest.raises(ValueError, match="'even-nfe' does not support nfe=1; supported: 2, 4, 8"):
        plan(replace(settings, nfes=(1,)), codecs)
    with pytest.raises(ValueError, match="'even-nfe' does not support nfe=1"):
        plan(replace(settings, codecs=("even-nfe",)), {"even-nfe": EvenNfe()})


def test_a_run_records_the_skipped_pairs_in_its_config(tmp_path, folder):
    settings = SweepSettings(
        codecs=("test-quantizer", "opus"),
        bitrates=(6.0, 128.0),
        data=f"folder:{folder}",
        metrics=("si_sdr",),
    )
    summary = run_sweep(
        settings, workers=1, out_root=tmp_path / "runs", cache_dir=None, progress=False
    )
    store = RunStore(summary.run_dir)
    assert {(row["codec"], row["bitrate"]) for row in store.rows()} == {
        ("test-quantizer", 128.0),
        ("opus", 6.0),
    }
    skipped = store.read_config()["skipped_conditions"]
    assert [(entry["codec"], entry["bitrate"]) for entry in skipped] == [
        ("test-quantizer", 6.0),
        ("opus", 128.0),
    ]


def test_a_suite_file_names_a_string_where_a_list_belongs(tmp_path):
    from bench.suites import load_suite_file

    path = tmp_path / "mine.toml"
    path.write_text('codecs = "opus"\n')
    with pytest.raises(ValueError, match="mine.toml.*codecs: expected a list, got the string"):
        load_suite_file(path)


def test_store_repair_cuts_a_torn_last_line(tmp_path):
    store = RunStore(tmp_path / "run")
    store.create({"run_id": "x"})
    store.append([make_record(item="a1"), make_record(item="a2")])
    with open(store.results_path, "a") as handle:
        handle.write('{"item": "a3", "b"')
    assert [row["item"] for row in store.rows()] == ["a1", "a2"]
    assert store.repair() == len('{"item": "a3", "b"')
    store.append([make_record(item="a4")])
    assert [row["item"] for row in store.rows()] == ["a1", "a2", "a4"]
    with pytest.raises(FileExistsError):
        store.create({"run_id": "y"})


def test_listening_items_cover_each_kind_of_content_first():
    items = load_dataset("embedded").items
    chosen = listening_selection(items, 3)
    assert len(chosen) == 3
    assert len({item.tags for item in chosen}) == 3, "three kinds of content, not three voices"
    assert [item.id for item in chosen] == [item.id for item in items if item in chosen]
    assert listening_selection(items, 0) == []
    assert len(listening_selection(items[:2], 5)) == 2


def test_items_whose_ids_differ_only_in_punctuation_get_their_own_files(tmp_path):
    # "a b", "a_b" and "a+b" once shared one slug, so the report played the first one's
    # audio for all three.
    ids = ("a b", "a_b", "a+b")
    lines = []
    for index, item in enumerate(ids):
        path = write_tone(tmp_path / f"tone{index}.wav", frequency=300 + 200 * index)
        lines.append(json.dumps({"path": str(path), "id": item}))
    manifest = tmp_path / "items.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    settings = SweepSettings(
        codecs=("test-quantizer",),
        data=f"manifest:{manifest}",
        metrics=("si_sdr",),
        listening_items=3,
    )
    summary = run_sweep(
        settings, workers=1, out_root=tmp_path / "runs", cache_dir=None, progress=False
    )
    store = RunStore(summary.run_dir)
    references = [store.reference_audio_path(item) for item in ids]
    decoded = [store.decoded_audio_path("test-quantizer", 128, None, item) for item in ids]
    assert len(set(references)) == len(set(decoded)) == 3
    for paths in (references, decoded):
        contents = [path.read_bytes() for path in paths]
        assert len(set(contents)) == 3, "each item's file holds its own audio"


def test_the_issue_s_multi_codec_command_runs_what_each_codec_supports():
    """`--codec identity,opus,encodec --bitrates 1.5,3,6,12` once stopped at opus lacking 1.5.
    The identity reference has one fixed rate and runs at it beside the swept codecs."""
    codecs = {name: create_codec(name) for name in ("identity", "opus", "encodec")}
    settings = SweepSettings(codecs=tuple(codecs), bitrates=(1.5, 3.0, 6.0, 12.0))
    sweep_plan = plan(settings, codecs)
    assert [(c.codec, c.bitrate) for c in sweep_plan.conditions] == [
        ("identity", 1536.0),
        ("opus", 6.0),
        ("opus", 12.0),
        ("encodec", 1.5),
        ("encodec", 3.0),
        ("encodec", 6.0),
        ("encodec", 12.0),
    ]
    skipped = {(entry["codec"], entry["bitrate"]) for entry in sweep_plan.skipped}
    assert skipped == {("identity", b) for b in (1.5, 3.0, 6.0, 12.0)} | {
        ("opus", 1.5),
        ("opus", 3.0),
    }
    # Alone, a fixed-rate codec asked for rates it lacks is still an error.
    with pytest.raises(ValueError, match="supports none of the requested"):
        plan(SweepSettings(codecs=("identity",), bitrates=(6.0,)), codecs)


def test_an_item_over_the_duration_limit_becomes_nan_rows_naming_the_limit(
    tmp_path, folder, monkeypatch
):
    monkeypatch.setattr(bench_audio, "MAX_DURATION_SECONDS", 0.5)
    summary = run_sweep(
        _settings(folder, metrics=("si_sdr",)),
        workers=1,
        out_root=tmp_path / "runs",
        cache_dir=None,
        progress=False,
    )
    rows = list(RunStore(summary.run_dir).rows())
    assert len(rows) == 3 and all(row["value"] is None for row in rows)
    assert all("too long: 1 s" in row["failure"] for row in rows)
    assert all("at most 0.5 s" in row["failure"] for row in rows)
    cropped = run_sweep(
        _settings(folder, metrics=("si_sdr",), max_seconds=0.4),
        workers=1,
        out_root=tmp_path / "runs",
        cache_dir=None,
        progress=False,
    )
    assert all(row["failure"] is None for row in RunStore(cropped.run_dir).rows())


class DriverCountingCodec(QuantizingCodec):
    """The quantising codec, counting how often this process builds it; like a codec with
    weights it answers planning's questions without being built."""

    name = "driver-counting-quantizer"
    built = 0

    def __init__(self) -> None:
        type(self).built += 1

    @classmethod
    def info(cls) -> CodecInfo:
        return CodecInfo(cls.name, cls.bitrates, None, checkpoint_hash="counting")


def test_planning_builds_no_codec_in_the_driver(tmp_path, folder):
    if DriverCountingCodec.name not in CODECS.names():
        CODECS.register(DriverCountingCodec.name, DriverCountingCodec, source="tests")
    settings = SweepSettings(
        codecs=(DriverCountingCodec.name,), data=f"folder:{folder}", metrics=("si_sdr",)
    )
    summary = run_sweep(
        settings, workers=2, out_root=tmp_path / "runs", cache_dir=None, progress=False
    )
    rows = list(RunStore(summary.run_dir).rows())
    assert len(rows) == 3 and all(row["failure"] is None for row in rows)
    assert DriverCountingCodec.built == 0, "the codec was built only in the workers"
    config = RunStore(summary.run_dir).read_config()
    assert config["codecs"][DriverCountingCodec.name]["checkpoint_hash"] == "counting"


def test_encodec_info_reads_its_checkpoint_without_building_the_network(monkeypatch):
    from bench.codecs.encodec.codec import EncodecCodec

    built = CodecInfo.of(EncodecCodec())

    def refuse(*arguments, **options):
        raise AssertionError("info() built the network")

    monkeypatch.setattr(EncodecCodec, "model_class", refuse)
    info = EncodecCodec.info()
    assert info == built
    assert info.bitrates == (1.5, 3.0, 6.0, 12.0) and len(info.checkpoint_hash) == 16
    assert info.description["checkpoint_kind"] == "demo"


def test_a_worker_returns_the_listening_audio_and_writes_no_file(tmp_path, folder):
    settings = _settings(folder, metrics=("si_sdr",))
    conditions = plan(settings, {"test-quantizer": QuantizingCodec()}).conditions
    item = load_dataset(settings.data).items[0]
    task = Task(conditions[0], item, "hash", "key", ("si_sdr",), None, keep_audio=True)
    before = sorted(tmp_path.rglob("*"))
    result = Evaluator(cache=None).evaluate(task)
    assert sorted(tmp_path.rglob("*")) == before, "the worker wrote nothing"
    assert result.listening.sample_rate == 16000
    assert result.listening.audio.shape == (1, 16000)
    assert result.listening.audio.dtype == np.float32
    expected, _ = bench_audio.prepare(bench_audio.load_audio(item.path), 16000, 1)
    assert np.abs(result.listening.audio - expected.numpy()).max() <= 1 / 127
    assert Evaluator(cache=None).evaluate(replace(task, keep_audio=False)).listening is None
