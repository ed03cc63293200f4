"""The result schema: rows are versioned records, readers accept the current version, convert
the unversioned rows of earlier runs and refuse any other version naming file and versions."""

from __future__ import annotations

import json
import re

import pytest
from helpers import make_record, write_tone

from bench.report.stats import results_frame
from bench.store import RunStore
from bench.sweep import SweepSettings, run_sweep
from bench.sweep.records import DECODING_FIELDS, RESULTS_SCHEMA_VERSION, Record


def _store(tmp_path) -> RunStore:
    store = RunStore(tmp_path / "run")
    store.create({"run_id": "run", "settings": {"codecs": ["test-quantizer"]}, "metrics": {}})
    return store


def test_a_record_is_written_with_its_version_and_read_back_equal(tmp_path):
    store = _store(tmp_path)
    scored = make_record(label="ours", codec="encodec", metric_counts={"edits": 1})
    no_decoding = dict.fromkeys(DECODING_FIELDS)
    failed = make_record(item="tone1", value=None, failure="input: empty", **no_decoding)
    store.append([scored, failed])
    rows = [json.loads(line) for line in store.results_path.read_text().splitlines()]
    assert [row["schema_version"] for row in rows] == [RESULTS_SCHEMA_VERSION] * 2
    assert (rows[0]["label"], rows[0]["codec"]) == ("ours", "encodec")
    # A task that failed before its codec ran has no coding fields, as before versions.
    assert "kbps_nominal" not in rows[1] and "decoded_from_cache" not in rows[1]
    assert list(store.records()) == [scored, failed]
    assert list(store.rows()) == rows


def test_unversioned_rows_of_earlier_runs_read_as_their_codec_s_label(tmp_path):
    store = _store(tmp_path)
    row = make_record().to_json()
    del row["schema_version"], row["label"]  # a row as bench wrote it before versions
    store.results_path.write_text(json.dumps(row) + "\n")
    (record,) = store.records()
    assert (record.label, record.codec, record.schema_version) == (
        "test-quantizer",
        "test-quantizer",
        RESULTS_SCHEMA_VERSION,
    )
    assert results_frame(store.run_dir)["label"].tolist() == ["test-quantizer"]


@pytest.mark.parametrize("version", [3, 0, "2", None])
def test_another_schema_version_is_refused_naming_file_line_and_versions(tmp_path, version):
    store = _store(tmp_path)
    store.append([make_record()])
    with open(store.results_path, "a") as handle:
        handle.write(json.dumps({**make_record().to_json(), "schema_version": version}) + "\n")
    message = (
        rf"{re.escape(str(store.results_path))}: line 2: expected a result row of schema "
        rf"version 2 .*got version {re.escape(repr(version))}"
    )
    with pytest.raises(ValueError, match=message):
        list(store.rows())
    with pytest.raises(ValueError, match=message):  # every reader goes through the store
        results_frame(store.run_dir)


def test_a_row_missing_a_field_is_named():
    row = make_record().to_json()
    del row["metric_family"]
    with pytest.raises(ValueError, match="expected a result row, got one with a missing"):
        Record.from_json(row)
    with pytest.raises(ValueError, match="malformed"):
        Record.from_json({**make_record().to_json(), "seed": "zero"})
    with pytest.raises(ValueError, match="all of the decoding fields .* or none"):
        Record.from_json({**make_record().to_json(), "kbps_actual": None})


def test_a_run_written_before_versions_resumes_and_reads_as_one_run(tmp_path):
    for index in range(2):
        write_tone(tmp_path / "data" / f"tone{index}.wav", frequency=300 + 200 * index)
    settings = SweepSettings(
        codecs=("test-quantizer",), data=f"folder:{tmp_path / 'data'}", metrics=("si_sdr",)
    )
    summary = run_sweep(
        settings, workers=1, out_root=tmp_path / "runs", cache_dir=None, progress=False
    )
    store = RunStore(summary.run_dir)
    # As the bench before versions left it, killed after its first item: unversioned rows
    # without labels, and the worker count among the settings.
    (first, _) = [row for row in store.rows()]
    del first["schema_version"], first["label"]
    store.results_path.write_text(json.dumps(first) + "\n")
    config = store.read_config()
    del config["settings"]["label_codecs"], config["execution"]
    config["settings"]["workers"] = 2
    store.config_path.write_text(json.dumps(config))
    resumed = run_sweep(resume=summary.run_dir, workers=1, progress=False)
    assert (resumed.tasks_resumed, resumed.tasks_computed) == (1, 1)
    records = list(store.records())
    assert [record.label for record in records] == ["test-quantizer"] * 2
    assert {record.item for record in records} == {"tone0", "tone1"}


@pytest.mark.parametrize(
    ("field", "edited", "reason"),
    [
        ("value", "0.9", "value must be a finite number or null"),
        ("value", float("nan"), "value must be a finite number or null"),
        ("value", True, "value must be a finite number or null"),
        ("value", None, "a row without a value must say why in 'failure'"),
        ("bitrate", "6", "bitrate must be a finite number"),
        ("kbps_actual", None, "expected all of the decoding fields"),
        ("kbps_actual", [6.1], "kbps_actual must be a finite number"),
        ("metric_seconds", "fast", "metric_seconds must be a finite number"),
    ],
)
def test_a_row_whose_numbers_are_not_numbers_is_refused_naming_file_line_and_field(
    tmp_path, field, edited, reason
):
    """An edited or damaged row that still parses as JSON would otherwise be read: a string
    value became a NaN "failed" item in the table, with exit 0."""
    store = _store(tmp_path)
    store.append([make_record(), make_record(item="tone1")])
    rows = store.results_path.read_text().splitlines()
    damaged = json.loads(rows[1])
    damaged[field] = edited
    rows[1] = json.dumps(damaged)
    store.results_path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=rf"line 2: .*{re.escape(reason)}"):
        list(store.records())
