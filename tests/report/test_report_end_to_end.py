"""`bench run` then `bench report`: every artefact rebuilt from the run directory alone,
and the page checked in headless chromium; plus the CI suite and its committed baseline."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import browser
import pandas as pd
import pytest
import soundfile
from bench.codecs.checkpoint import CheckpointError
from helpers import REPO_ROOT

from bench.cli import EXIT_OK, EXIT_USAGE, main
from bench.registry import CODECS, create_codec
from bench.report.compare import load_summary
from bench.store import item_file_stem
from bench.suites import SUITES_DIR, load_suite

ITEMS = ["librivox_0880", "cards_005", "music_chords"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    code = main(
        [
            "run",
            "--codec",
            "opus",
            "--bitrates",
            "6,12",
            "--data",
            "embedded",
            "--items",
            ",".join(ITEMS),
            "--max-seconds",
            "2",
            "--metrics",
            "mel_distance,si_sdr,stoi,kbps_actual,rtf_decode",
            "--workers",
            "1",
            "--no-cache",
            "--quiet",
            "--run-dir",
            str(run_dir),
        ]
    )
    assert code == EXIT_OK
    return run_dir


def test_run_keeps_listening_audio_for_a_few_items(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    items = [item["id"] for item in config["dataset"]["items"]]
    kept = sorted(path.stem for path in (run_dir / "listening" / "reference").glob("*.flac"))
    assert len(kept) == config["settings"]["listening_items"] == 3
    assert set(kept) == {item_file_stem(item) for item in items}
    assert set(items) == set(ITEMS)
    for condition in ("opus_6kbps", "opus_12kbps"):
        decoded = sorted(path.stem for path in (run_dir / "listening" / condition).iterdir())
        assert decoded == kept
    info = soundfile.info(run_dir / "listening" / "opus_6kbps" / f"{kept[0]}.flac")
    assert info.samplerate == 48000 and info.subtype == "PCM_24"
    assert info.duration == pytest.approx(2.0, abs=0.01), "cropped as the codec got it"


def test_report_holds_every_artefact(run_dir):
    report = run_dir / "report"
    for name in ("summary.md", "summary.csv", "summary.tex"):
        assert (report / "tables" / name).stat().st_size > 0
    # The run mixes speech and music, so each gets a table of its own.
    assert (report / "tables" / "summary_music.md").exists()
    assert (report / "tables" / "summary_speech.csv").exists()
    assert (report / "tables" / "summary_synthetic.md").exists(), "music_chords is synthetic"
    assert not (report / "tables" / "summary_noisy.md").exists()
    for metric in ("mel_distance", "si_sdr", "stoi"):
        for suffix in (".png", ".svg"):
            assert (report / "figures" / f"rate_quality_{metric}{suffix}").exists()
    assert not list((report / "figures").glob("rate_quality_rtf_decode*"))
    table = pd.read_csv(report / "tables" / "summary.csv")
    assert list(table["kbps_nominal"]) == [6.0, 12.0]
    assert (table["stoi_n"] + table["stoi_failed"]).tolist() == [2, 2], "STOI: speech only"
    summary = load_summary(report / "summary.json")
    assert summary["run_id"] == "run" and summary["git"]["commit"]
    assert {row["metric"] for row in summary["conditions"]} >= {"si_sdr", "rtf_decode"}
    html = (report / "index.html").read_text()
    assert html.count("<audio") == 3 + 2 * 3, "a reference per item, then each condition"


def test_fractional_bitrates_keep_their_spectrograms(tmp_path):
    """A 1.5 kbps condition: its file stems hold a dot, which must not be taken for a suffix."""
    run_dir = tmp_path / "run"
    arguments = ["run", "--codec", "encodec", "--bitrates", "1.5", "--data", "embedded"]
    options = ["--items", "cards_005", "--max-seconds", "1", "--metrics", "mel_distance"]
    flags = ["--workers", "1", "--no-cache", "--quiet", "--run-dir", str(run_dir)]
    assert main([*arguments, *options, *flags]) == EXIT_OK
    html = (run_dir / "report" / "index.html").read_text()
    assert "spectrograms/encodec_1.5" in html
    for image in re.findall(r'src="(spectrograms/[^"]+)"', html):
        assert (run_dir / "report" / image).is_file(), image


def test_report_rebuilds_from_the_run_directory_alone(run_dir, tmp_path):
    copy = tmp_path / "moved"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "report")
    assert main(["report", str(copy)]) == EXIT_OK
    for name in ("summary.md", "summary.csv", "summary.tex"):
        rebuilt = (copy / "report" / "tables" / name).read_text()
        assert rebuilt == (run_dir / "report" / "tables" / name).read_text()
    assert main(["report", str(copy), "--out", str(tmp_path / "elsewhere")]) == EXIT_OK
    assert (tmp_path / "elsewhere" / "index.html").exists()
    assert main(["report", str(tmp_path / "not-a-run")]) == EXIT_USAGE


@pytest.mark.slow
def test_report_page_loads_cleanly_in_chromium(run_dir, tmp_path):
    check = browser.check_page(run_dir / "report" / "index.html", tmp_path / "report.png")
    assert check.problems == {}
    assert check.screenshot is not None and check.screenshot.stat().st_size > 50_000


def test_ci_suite_covers_every_built_in_codec_that_runs_by_default():
    settings = load_suite("ci")
    built_in = {name for name in CODECS.names() if CODECS.source(name) == "built-in"}
    runnable = set()
    for name in built_in:
        try:
            create_codec(name)
        except CheckpointError:
            continue  # a neural codec whose demo weights are not shipped yet
        runnable.add(name)
    assert runnable <= set(settings.codecs), "add new codecs to bench/suites/ci.toml"
    assert {"opus", "mp3", "encodec", "hificodec"} <= runnable, "neural codecs run on demo weights"
    assert not {"rtf_encode", "rtf_decode"} & set(settings.metrics), "timings are not gated"
    with open(SUITES_DIR / "ci.toml", "rb") as handle:
        assert "description" in tomllib.load(handle)


def test_committed_baseline_matches_the_ci_suite():
    baseline = load_summary(REPO_ROOT / "reports" / "ci" / "baseline.json")
    settings = load_suite("ci")
    assert baseline["settings"]["codecs"] == list(settings.codecs)
    assert baseline["settings"]["items"] == list(settings.items)
    assert baseline["settings"]["metrics"] == list(settings.metrics)
    # The gate checks that a CI run scored the same audio, by each item's input hash.
    assert {item["id"] for item in baseline["items"]} == set(settings.items)
    assert all(item["input_hash"] for item in baseline["items"])
    conditions = {(row["codec"], row["bitrate"]) for row in baseline["conditions"]}
    assert ("opus", 6.0) in conditions and ("mp3", 64.0) in conditions
    assert all(row["failed"] == 0 for row in baseline["conditions"])
