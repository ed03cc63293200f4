"""Labelled conditions: one run holds two variants of one codec, each under its label, from
`bench run --codec LABEL=NAME:...` or a run-config file; rows carry label and codec, and
tables, compare, the report's listening copies and the MUSHRA export use the label."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from bench.codecs.encodec.codec import DEMO_CHECKPOINT
from helpers import write_tone

from bench.cli import EXIT_OK, EXIT_USAGE, main
from bench.registry import UnknownNameError
from bench.store import RunStore
from bench.sweep import SweepSettings
from bench.sweep.plan import CodecChoice, parse_codec_argument


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("opus", [CodecChoice("opus", "opus")]),
        ("opus,mp3", [CodecChoice("opus", "opus"), CodecChoice("mp3", "mp3")]),
        ("opus:6,12", [CodecChoice("opus", "opus", (6.0, 12.0))]),
        ("ours=encodec", [CodecChoice("ours", "encodec")]),
        (
            # A value keeps its ',' and '=': only ':' separates parts.
            "ours=encodec:1.5,3:checkpoint=runs/a,b=c.pt",
            [CodecChoice("ours", "encodec", (1.5, 3.0), {"checkpoint": "runs/a,b=c.pt"})],
        ),
        (
            "lm=encodec:entropy-coding=true",
            [CodecChoice("lm", "encodec", None, {"entropy_coding": True})],
        ),
        (
            "ref16=identity:sample_rate=16000",
            [CodecChoice("ref16", "identity", None, {"sample_rate": 16000})],
        ),
        (
            # A number whose default is None takes its type from the annotation (int | None).
            "greedy=soundstorm:3:top_k=1:temperature=0.5",
            [CodecChoice("greedy", "soundstorm", (3.0,), {"top_k": 1, "temperature": 0.5})],
        ),
    ],
)
def test_the_codec_grammar_parses_names_bitrates_labels_and_options(value, expected):
    assert parse_codec_argument(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a,b=opus", "expected one codec before ':'"),
        ("opus,encodec:6", "expected one codec before ':'"),
        ("ours=encodec:1.5:3", "expected one list of bitrates, got two"),
        ("ours=encodec:checkpoint=a:checkpoint=b", "expected option 'checkpoint' once"),
        ("ours=encodec:bogus=1", "takes no option 'bogus'; expected one of: checkpoint, entropy"),
        ("ours=encodec:entropy_coding=maybe", "entropy_coding: expected true or false"),
        ("ref=identity:sample_rate=fast", "expected comma-separated int values, got 'fast'"),
        ("s=soundstorm:top_k=many", "expected comma-separated int values, got 'many'"),
        ("our codec=opus", "expected a condition label of letters, digits"),
        ("=opus", "expected a condition label"),
        ("ours=", "expected one codec before ':'"),
    ],
)
def test_the_codec_grammar_refuses_what_it_would_have_to_guess(value, message):
    with pytest.raises(ValueError, match=message):
        parse_codec_argument(value)


def test_an_unknown_codec_under_a_label_gets_a_suggestion():
    with pytest.raises(UnknownNameError, match="unknown codec 'opsu'; did you mean 'opus'"):
        parse_codec_argument("low=opsu:6")


def test_settings_refuse_labels_they_cannot_use():
    with pytest.raises(ValueError, match=r"labels not in the sweep: \['mine'\]"):
        SweepSettings(codecs=("opus",), label_codecs={"mine": "opus"})
    with pytest.raises(ValueError, match="expected a condition label"):
        SweepSettings(codecs=("a b",), label_codecs={"a b": "opus"})


@pytest.fixture
def data(tmp_path):
    for index in range(2):
        write_tone(tmp_path / "data" / f"tone{index}.wav", 2.0, frequency=300 + 200 * index)
    return tmp_path / "data"


def _run(tmp_path, data, *codecs: str, metrics: str = "si_sdr,mel_distance,kbps_actual"):
    arguments = ["run", *(part for codec in codecs for part in ("--codec", codec))]
    arguments += ["--data", f"folder:{data}", "--metrics", metrics, "--workers", "1"]
    arguments += ["--out", str(tmp_path / "runs"), "--cache", str(tmp_path / "cache")]
    return main([*arguments, "--quiet"])


def test_two_checkpoints_of_one_codec_run_side_by_side_under_their_labels(tmp_path, data, capsys):
    code = _run(
        tmp_path,
        data,
        "encodec:1.5",
        f"ours=encodec:1.5:checkpoint={DEMO_CHECKPOINT}",
        "low=opus:6",
        "high=opus:12",
        metrics="si_sdr,kbps_actual",
    )
    assert code == EXIT_OK
    printed = capsys.readouterr().out
    for label in ("encodec", "ours", "low", "high"):
        assert f"| {label} " in printed, label
    (run_dir,) = (tmp_path / "runs").iterdir()
    store = RunStore(run_dir)
    rows = list(store.rows())
    pairs = {(row["label"], row["codec"], row["bitrate"]) for row in rows}
    assert pairs == {
        ("encodec", "encodec", 1.5),
        ("ours", "encodec", 1.5),
        ("low", "opus", 6.0),
        ("high", "opus", 12.0),
    }
    config = store.read_config()
    assert config["settings"]["codecs"] == ["encodec", "ours", "low", "high"]
    assert config["settings"]["label_codecs"] == {"ours": "encodec", "low": "opus", "high": "opus"}
    assert config["settings"]["codec_options"] == {"ours": {"checkpoint": str(DEMO_CHECKPOINT)}}
    assert set(config["codecs"]) == {"encodec", "ours", "low", "high"}
    # Same weights under two labels: the same audio, decoded once and shared by the cache.
    values = {(row["label"], row["item"], row["metric"]): row["value"] for row in rows}
    assert all(
        values[("ours", *key[1:])] == value for key, value in values.items() if key[0] == "encodec"
    )
    # Tasks run in order (one worker), so "ours" of each item came after "encodec" of it.
    assert all(row["decoded_from_cache"] for row in rows if row["label"] == "ours")
    # The report's tables and listening copies are named by label.
    table = pd.read_csv(run_dir / "report" / "tables" / "summary.csv")
    assert list(table["codec"]) == ["encodec", "ours", "low", "high"]
    listening = {path.name for path in (run_dir / "listening").iterdir()}
    assert {"ours_1.5kbps", "encodec_1.5kbps", "low_6kbps", "high_12kbps"} <= listening


def test_labels_of_one_codec_with_other_options_do_not_share_cached_audio(tmp_path, data):
    """Euler and Heun at the same NFE decode different audio from the same weights: the
    cache must not hand one label the other's (it did, with exit 0)."""
    arguments = ["run", "--codec", "e=flowmac:3:solver=euler", "--codec", "h=flowmac:3:solver=heun"]
    arguments += ["--nfe", "2", "--data", f"folder:{data}", "--metrics", "mel_distance"]
    arguments += ["--workers", "1", "--out", str(tmp_path / "runs")]
    arguments += ["--cache", str(tmp_path / "cache"), "--no-report", "--quiet"]
    assert main(arguments) == EXIT_OK
    (run_dir,) = (tmp_path / "runs").iterdir()
    rows = list(RunStore(run_dir).rows())
    assert not any(row["decoded_from_cache"] for row in rows)
    values = {(row["label"], row["item"]): row["value"] for row in rows}
    for item in {item for _, item in values}:
        assert values[("e", item)] != values[("h", item)]


def test_compare_and_the_listening_export_key_conditions_by_label(tmp_path, data, capsys):
    assert _run(tmp_path, data, "identity", "low=opus:6", "high=opus:12") == EXIT_OK
    capsys.readouterr()
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = tmp_path / "summary.json"
    assert main(["compare", str(summary), str(run_dir), "--update-baseline"]) == EXIT_OK
    conditions = json.loads(summary.read_text())["conditions"]
    assert {(row["label"], row["codec"]) for row in conditions} == {
        ("identity", "identity"),
        ("low", "opus"),
        ("high", "opus"),
    }
    junit = tmp_path / "compare.xml"
    assert main(["compare", str(summary), str(run_dir), "--junit", str(junit)]) == EXIT_OK
    assert re.search(r"\|\s*high\s*\|\s*12\s*\|", capsys.readouterr().out)
    assert 'classname="low.6kbps"' in junit.read_text()
    package = tmp_path / "package"
    export = ["listen", "export", str(run_dir), "--out", str(package), "--items", "2"]
    assert main([*export, "--conditions", "low_6kbps,high_12kbps"]) == EXIT_OK
    manifest = pd.read_csv(package / "manifest.csv")
    tested = manifest[manifest["codec"] == "opus"]
    assert set(tested["condition"]) == {"low_6kbps", "high_12kbps"}
    other = ["listen", "export", str(run_dir), "--out", str(tmp_path / "other")]
    assert main([*other, "--conditions", "opus_6kbps"]) == EXIT_USAGE
    assert "expected labels among low_6kbps, high_12kbps" in capsys.readouterr().err


def test_a_run_config_file_names_variants_with_their_codecs(tmp_path, data, capsys):
    config = tmp_path / "variants.toml"
    config.write_text(
        'codecs = ["low", "high"]\n'
        f'data = "folder:{data}"\n'
        'metrics = ["si_sdr"]\n'
        "[label_codecs]\n"
        'low = "opus"\n'
        'high = "opus"\n'
        "[codec_bitrates]\n"
        "low = [6]\n"
        "high = [12]\n"
    )
    common = ["--out", str(tmp_path / "runs"), "--no-cache", "--no-report", "--quiet"]
    assert main(["run", "--config", str(config), "--workers", "1", *common]) == EXIT_OK
    (run_dir,) = (tmp_path / "runs").iterdir()
    rows = {(row["label"], row["codec"], row["bitrate"]) for row in RunStore(run_dir).rows()}
    assert rows == {("low", "opus", 6.0), ("high", "opus", 12.0)}


@pytest.mark.parametrize(
    ("codecs", "message"),
    [
        (["a=opus:6", "a=mp3:32"], "--codec: expected each value once, got 'a'"),
        (["encodec", "encodec:1.5"], "--codec: expected each value once, got 'encodec'"),
        (["mp3=opus:6"], "label 'mp3' for codec 'opus': expected a label that is not another"),
        (["ours=encodec:bogus=1"], "codec 'encodec' takes no option 'bogus'"),
    ],
)
def test_duplicate_labels_and_labels_naming_other_codecs_exit_2(tmp_path, capsys, codecs, message):
    arguments = ["run", *(part for codec in codecs for part in ("--codec", codec))]
    assert main([*arguments, "--out", str(tmp_path / "runs"), "--no-cache"]) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists(), "nothing ran"
