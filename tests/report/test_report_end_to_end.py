"""`bench run` then `bench report`: every artefact rebuilt from the run directory alone,
and the page checked in headless chromium; plus the CI suite and its committed baseline."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import browser
import pandas as pd
import pytest
import soundfile
from bench.codecs.checkpoint import CheckpointError
from helpers import REPO_ROOT
from PIL import Image

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
            "opus:6,12",
            "--codec",
            "mp3:32,48",
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
    for condition in ("opus_6kbps", "opus_12kbps", "mp3_32kbps", "mp3_48kbps"):
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
        assert (report / "figures" / f"rate_quality_{metric}.png").exists()
        assert not (report / "figures" / f"rate_quality_{metric}.svg").exists(), "SVG: --svg"
    assert (report / "figures" / "rate_quality.png").exists(), "the small multiples"
    assert not list((report / "figures").glob("rate_quality_rtf_decode*"))
    table = pd.read_csv(report / "tables" / "summary.csv")
    assert list(table["kbps_nominal"]) == [6.0, 12.0, 32.0, 48.0]
    assert (table["stoi_n"] + table["stoi_failed"]).tolist() == [2] * 4, "STOI: speech only"
    bd_rate = pd.read_csv(report / "tables" / "bd_rate.csv")
    assert set(bd_rate["codec"]) == {"mp3"} and set(bd_rate["anchor"]) == {"opus"}
    assert list(bd_rate["metric"]) == ["mel_distance", "si_sdr", "stoi"]
    summary = load_summary(report / "summary.json")
    assert summary["run_id"] == "run" and summary["git"]["commit"]
    assert {row["metric"] for row in summary["conditions"]} >= {"si_sdr", "rtf_decode"}
    html = (report / "index.html").read_text()
    listening = html[html.index('<section id="listening">') :]
    listening = listening[: listening.index("</section>")]
    assert listening.count("<audio") == 3 + 4 * 3, "a reference per item, then each condition"


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


def test_page_opens_on_the_headline_and_ends_on_folded_provenance(run_dir):
    html = (run_dir / "report" / "index.html").read_text()
    order = [
        html.index('id="headline-1"'),
        html.index('src="figures/rate_quality.png"'),
        html.index('id="headline-3"'),
        html.index('<nav class="toc"'),
        html.index('<section id="tables">'),
        html.index('<section id="worst">'),
        html.index('<section id="listening">'),
        html.index('<section id="provenance">'),
    ]
    assert order == sorted(order)
    headline = html[: html.index('<nav class="toc"')]
    assert "Summary over all items" in headline and "BD-rate against opus" in headline
    provenance = html[html.index('<section id="provenance">') :]
    assert "<details>" in provenance and "Git commit" in provenance and "Versions" in provenance


@pytest.mark.slow
def test_first_screen_shows_the_headline_table_and_figure(run_dir, tmp_path):
    screenshot = tmp_path / "first_screen.png"
    boxes = browser.first_screen(
        run_dir / "report" / "index.html",
        ["#headline-1 table", 'img[src="figures/rate_quality.png"]'],
        screenshot,
    )
    table, figure = boxes.values()
    height = browser.VIEWPORT["height"]
    assert table is not None and 0 <= table["top"] < table["bottom"] <= height, table
    # The figure starts on the first screen with at least half of that screen to show it.
    assert figure is not None and figure["loaded"], figure
    assert 0 < table["bottom"] <= figure["top"] < height / 2, figure
    image = Image.open(screenshot)
    assert image.size == (browser.VIEWPORT["width"], height), "the first screen only"
    if os.environ.get("BENCH_SCREENSHOT_DIR"):
        target = Path(os.environ["BENCH_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, target / "report_first_screen.png")


def test_worst_items_of_each_condition_are_kept_and_played(run_dir):
    worst = pd.read_csv(run_dir / "report" / "tables" / "worst_items.csv")
    assert worst.groupby(["label", "bitrate"])["rank"].apply(list).map(len).eq(3).all()
    html = (run_dir / "report" / "index.html").read_text()
    section = html[html.index('<section id="worst">') : html.index('<section id="listening">')]
    for row in worst[worst["rank"] <= 2].itertuples():
        slug = f"{row.label}_{row.bitrate:g}kbps"
        kept = run_dir / "listening" / slug / f"{item_file_stem(row.item)}.flac"
        assert kept.is_file(), kept
        assert f"audio/{slug}/{item_file_stem(row.item)}.flac" in section
    # The spectrogram strips of the worst items are drawn beside their players.
    assert section.count('<img src="worst/') == len(worst[worst["rank"] <= 2])


def test_anchor_and_svg_options(run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert main(["report", str(copy), "--anchor", "mp3", "--svg"]) == EXIT_OK
    bd_rate = pd.read_csv(copy / "report" / "tables" / "bd_rate.csv")
    assert set(bd_rate["anchor"]) == {"mp3"} and set(bd_rate["codec"]) == {"opus"}
    assert (copy / "report" / "figures" / "rate_quality.svg").exists()
    assert main(["report", str(copy), "--anchor", "aac"]) == EXIT_USAGE
    assert "anchor" in capsys.readouterr().err
    new_run = tmp_path / "refused"
    arguments = ["run", "--codec", "opus:6", "--items", "cards_005", "--run-dir", str(new_run)]
    assert main([*arguments, "--anchor", "aac", "--quiet", "--no-cache"]) == EXIT_USAGE
    assert (
        "--anchor: expected one of the run's codecs ['opus'], got 'aac'" in capsys.readouterr().err
    )
    assert not new_run.exists(), "refused before anything ran"


def test_a_rebuild_reuses_the_statistics_only_while_they_check_out(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    derived = copy / "report" / "derived.json"
    summary_md = (copy / "report" / "tables" / "summary.md").read_text()
    # Same key, edited numbers: the digest no longer matches, so they are computed again.
    document = json.loads(derived.read_text())
    document["tables"]["summaries"][""] = document["tables"]["summaries"][""].replace(
        '"mean":0.', '"mean":9.'
    )
    assert '"mean":9.' in document["tables"]["summaries"][""]
    derived.write_text(json.dumps(document))
    assert main(["report", str(copy)]) == EXIT_OK
    assert (copy / "report" / "tables" / "summary.md").read_text() == summary_md
    # A result row more: the key changes, and the new row is in the table.
    rows = (copy / "results.jsonl").read_text().splitlines()
    edited = json.loads(rows[0])
    assert edited["metric"] == "mel_distance"
    edited["value"] = 5.0
    (copy / "results.jsonl").write_text("\n".join([json.dumps(edited), *rows[1:]]) + "\n")
    assert main(["report", str(copy)]) == EXIT_OK
    assert (copy / "report" / "tables" / "summary.md").read_text() != summary_md


def test_token_statistics_get_their_own_table_not_quality_columns(tmp_path):
    run_dir = tmp_path / "run"
    arguments = ["run", "--codec", "encodec:1.5,3", "--codec", "opus:6,12"]
    options = ["--items", "librivox_0880,cards_005", "--max-seconds", "2"]
    metrics = "mel_distance,codebook_usage,token_entropy,kbps_entropy_bound"
    flags = ["--workers", "1", "--no-cache", "--quiet", "--run-dir", str(run_dir)]
    assert main([*arguments, *options, "--metrics", metrics, *flags]) == EXIT_OK
    report = run_dir / "report"
    tokens = pd.read_csv(report / "tables" / "tokens.csv")
    assert list(tokens["codec"]) == ["encodec", "encodec"], "opus has no codes: no rows"
    assert (tokens["kbps_entropy_bound"] < tokens["kbps_actual"]).all()
    summary = pd.read_csv(report / "tables" / "summary.csv")
    assert not [column for column in summary.columns if "codebook" in column or "token" in column]
    figures = sorted(path.name for path in (report / "figures").glob("rate_quality*"))
    assert figures == ["rate_quality.png", "rate_quality_mel_distance.png"]
    assert set(pd.read_csv(report / "tables" / "bd_rate.csv")["metric"]) == {"mel_distance"}
    # The gate still covers them: bench compare reads every metric.
    gated = {row["metric"] for row in load_summary(report / "summary.json")["conditions"]}
    assert {"codebook_usage.overall", "token_entropy.mean", "kbps_entropy_bound"} <= gated
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert not [row for row in rows if row["label"] == "opus" and "token" in row["metric"]]


def test_a_rebuild_with_nothing_changed_loads_neither_torch_nor_matplotlib(run_dir, tmp_path):
    """What keeps `bench report` of an unchanged run fast: every figure and statistic is
    taken from the previous report, so the heavy libraries are never imported."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = (copy / "report" / "figures.json").read_text()
    script = (
        "import sys; from bench.report.build import build_report; "
        f"build_report({str(copy)!r}); "
        "heavy = ('torch', 'matplotlib', 'scipy.stats'); "
        "print(sorted(name for name in heavy if name in sys.modules))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]", completed.stdout
    assert (copy / "report" / "figures.json").read_text() == before
