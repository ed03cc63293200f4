"""`bench listen export` on a real run: every stimulus at one loudness and length, anchors
band-limited, a complete manifest, a webMUSHRA configuration whose files all exist, a zip,
and an offline page that loads and plays in headless chromium; then `bench listen analyze`
on ratings for that package joins the run's objective metrics."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import browser
import numpy as np
import pandas as pd
import pyloudnorm
import pytest
import soundfile
import yaml
from helpers import write_tone
from scipy import signal, stats

from bench.cli import EXIT_OK, EXIT_USAGE, main
from bench.listen.export import ExportSettings, export_package, package_objective_means
from bench.sweep import SweepSettings, run_sweep

ITEMS = "cards_005,librivox_0880,flite_slt_2,music_chords"
CONDITIONS = {"reference", "anchor35", "anchor70", "opus_6kbps", "opus_12kbps"}
MAX_SECONDS = 3.0


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A run of Opus at two bitrates beside the MUSHRA baselines (the reference and the
    anchors, which the analysis joins as such), exported as a 3-trial package."""
    folder = tmp_path_factory.mktemp("listen")
    settings = SweepSettings(
        codecs=("identity", "lowpass3k5", "lowpass7k", "opus"),
        codec_bitrates={"opus": (6.0, 12.0)},
        items=tuple(ITEMS.split(",")),
        metrics=("mel_distance", "si_sdr"),
        listening_items=0,
    )
    run_sweep(settings, workers=1, run_dir=folder / "run", cache_dir=None, progress=False)
    export = ["listen", "export", str(folder / "run"), "--out", str(folder / "pkg")]
    assert main([*export, "--items", "3", "--max-seconds", str(MAX_SECONDS)]) == EXIT_OK
    return folder / "pkg"


def manifest(package) -> pd.DataFrame:
    return pd.read_csv(package / "manifest.csv")


def test_every_stimulus_has_the_target_loudness_and_the_trial_length(package):
    table = manifest(package)
    assert set(table["condition"]) == {
        "reference",
        "anchor35",
        "anchor70",
        "opus_6kbps",
        "opus_12kbps",
    }
    description = json.loads((package / "package.json").read_text())
    assert len(description["items"]) == 3 == table["item"].nunique()
    for _, trial in table.groupby("item"):
        assert set(trial["condition"]) == CONDITIONS
        lengths = set()
        for row in trial.itertuples():
            audio, rate = soundfile.read(package / row.file)
            lengths.add(len(audio))
            loudness = pyloudnorm.Meter(rate).integrated_loudness(audio)
            assert abs(loudness - (-23.0)) < 0.5 or trial["gain_db"].notna().all()
            assert np.abs(audio).max() < 1.0
        assert len(lengths) == 1 and lengths.pop() <= MAX_SECONDS * 48_000
    # Integer shifts recorded for the codecs; the references are not shifted.
    assert (table.loc[table["condition"] == "reference", "shift_samples"] == 0).all()


def test_loudness_is_equal_within_half_a_lu_of_the_effective_target(package):
    for _, trial in manifest(package).groupby("item"):
        measured = []
        for row in trial.itertuples():
            audio, rate = soundfile.read(package / row.file)
            measured.append(pyloudnorm.Meter(rate).integrated_loudness(audio))
        # Every stimulus of a trial at one loudness; -23 LUFS unless lowered against clipping.
        assert max(measured) - min(measured) < 0.5
        assert all(-23.5 < value < -22.5 for value in measured) or max(measured) < -23.0


def test_anchors_are_at_least_40_db_down_above_their_cut_off(package):
    table = manifest(package)
    checked = 0
    for _, trial in table.groupby("item"):
        files = dict(zip(trial["condition"], trial["file"], strict=True))
        reference, rate = soundfile.read(package / files["reference"])
        frequencies, reference_psd = signal.welch(reference, rate, nperseg=2048)
        for anchor, cut_off in (("anchor35", 3500), ("anchor70", 7000)):
            audio, _ = soundfile.read(package / files[anchor])
            _, anchor_psd = signal.welch(audio, rate, nperseg=2048)
            # Above the filters' transition band (BS.1534-3 anchors are steep, not brick
            # walls) and below the edge of the item's own band.
            band = (frequencies > cut_off + 1000) & (frequencies < 0.95 * rate / 2)
            if not band.any():
                continue  # a 16 kHz item has no band left above the 7 kHz anchor's
            level = 10 * np.log10(anchor_psd[band].sum() / reference_psd[band].sum())
            assert level < -40, (anchor, level)
            checked += 1
    assert checked >= table["item"].nunique()


def test_manifest_is_complete_and_the_zip_holds_the_package(package):
    table = manifest(package)
    on_disk = {str(path.relative_to(package)) for path in package.rglob("*.wav")}
    assert set(table["file"]) == on_disk
    for column in ("item", "condition", "codec", "bitrate", "nfe", "gain_db", "shift_samples"):
        assert column in table
    assert table.loc[table["codec"] == "opus", "bitrate"].notna().all()
    names = set(zipfile.ZipFile(f"{package}.zip").namelist())
    for relative in [*on_disk, "webmushra.yaml", "index.html", "README.md", "manifest.json"]:
        assert f"{package.name}/{relative}" in names


def test_webmushra_configuration_parses_and_every_file_resolves(package):
    config = yaml.safe_load((package / "webmushra.yaml").read_text())
    training, randomised, finish = config["pages"]
    assert training["id"] == "training" and finish["type"] == "finish"
    assert randomised[0] == "random" and len(randomised) == 4
    prefix = f"configs/{package.name}/"
    for page in [training, *randomised[1:]]:
        assert page["type"] == "mushra" and page["randomize"] is True
        assert set(page["stimuli"]) == CONDITIONS - {"reference"}
        for path in [page["reference"], *page["stimuli"].values()]:
            assert path.startswith(prefix) and (package / path[len(prefix) :]).is_file()
    description = json.loads((package / "package.json").read_text())
    assert description["codecs"]["opus"]["name"] == "opus" and description["exported_with"]["git"]
    readme = (package / "README.md").read_text()
    assert "webMUSHRA" in readme and "stratified" in readme.lower()


@pytest.mark.slow
def test_offline_page_loads_and_every_audio_plays_in_chromium(package, tmp_path):
    check = browser.check_page(package / "index.html", tmp_path / "page.png")
    assert check.problems == {}


def test_analyze_joins_the_runs_objective_metrics(package, tmp_path, capsys):
    """The run's objective means per condition correlate with the MUSHRA means."""
    table = manifest(package)
    means = {"reference": 98, "opus_12kbps": 80, "opus_6kbps": 60, "anchor70": 45, "anchor35": 25}
    generator = np.random.default_rng(0)
    rows = [
        {"listener": f"L{index}", "trial": item, "condition": condition, "score": score}
        for index in range(6)
        for item in table["item"].unique()
        for condition, mean in means.items()
        for score in [float(np.clip(mean + generator.normal(0, 4), 0, 100))]
    ]
    # The training page's ratings do not count: here every listener rated the hidden
    # reference 10 on it, which would screen out all of them (1 trial in 4 > 15 %).
    rows += [
        {"listener": f"L{index}", "trial": "training", "condition": condition, "score": 10.0}
        for index in range(6)
        for condition in means
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "ratings.csv", index=False)
    out = tmp_path / "analysis"
    assert (
        main(
            [
                "listen",
                "analyze",
                str(tmp_path / "ratings.csv"),
                "--package",
                str(package),
                "--out",
                str(out),
            ]
        )
        == EXIT_OK
    )
    correlations = pd.read_csv(out / "correlations.csv")
    mel = correlations[correlations["metric"] == "mel_distance"].iloc[0]
    # The run's identity and low-pass conditions joined as the hidden reference and anchors.
    objective = package_objective_means(package)
    assert set(objective.index) == set(means) and objective.loc["reference", "mel_distance"] == 0
    assert mel["conditions"] == 5
    summary = pd.read_csv(out / "summary.csv").set_index("condition")["mean"]
    expected = stats.pearsonr(summary[list(means)], objective.loc[list(means), "mel_distance"])
    assert mel["pearson_r"] == pytest.approx(expected.statistic)
    assert "metric: mel_distance" in (out / "summary.md").read_text()
    assert "reference" in capsys.readouterr().out


def test_bad_requests_say_what_was_expected(package, tmp_path, capsys):
    run_dir = json.loads((package / "package.json").read_text())["run_dir"]
    assert main(["listen", "export", run_dir, "--out", str(package)]) == EXIT_USAGE
    assert "already holds files" in capsys.readouterr().err
    arguments = [
        "listen",
        "export",
        run_dir,
        "--out",
        str(tmp_path / "p"),
        "--conditions",
        "opus_9kbps",
    ]
    assert main(arguments) == EXIT_USAGE
    assert "opus_6kbps" in capsys.readouterr().err
    assert main(["listen", "analyze", "x.csv", "--package", str(tmp_path)]) == EXIT_USAGE


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    """A run over two ordinary items and three odd ones: 8 kHz, six channels, 0.25 s."""
    folder = tmp_path_factory.mktemp("odd")
    data = folder / "data"
    write_tone(data / "plain_mono.wav", 2.0, 16_000, 1, 440)
    write_tone(data / "plain_stereo.wav", 2.0, 44_100, 2, 660)
    write_tone(data / "narrowband.wav", 2.0, 8_000, 1, 300)
    write_tone(data / "six_channels.wav", 2.0, 48_000, 6, 500)
    write_tone(data / "quarter_second.wav", 0.25, 16_000, 1, 700)
    settings = SweepSettings(
        codecs=("identity", "lowpass3k5", "lowpass7k", "opus"),
        codec_bitrates={"opus": (6.0,)},
        data=f"folder:{data}",
        metrics=("mel_distance",),
        listening_items=0,
    )
    run_sweep(settings, workers=1, run_dir=folder / "run", cache_dir=None, progress=False)
    return folder / "run"


@pytest.fixture(scope="module")
def odd_package(odd_run):
    out = odd_run.parent / "pkg"
    export_package(odd_run, out, ExportSettings(items=10))
    return out


def test_an_8_khz_item_is_left_out_with_the_reason(odd_package):
    description = json.loads((odd_package / "package.json").read_text())
    assert "narrowband" not in description["items"]
    reason = description["skipped_items"]["narrowband"]
    assert "8000 Hz is too low for the anchor35 low-pass anchor" in reason
    assert f"Left out `narrowband`: {reason}" in (odd_package / "README.md").read_text()
    assert "narrowband" not in set(manifest(odd_package)["item"])


def test_a_quarter_second_item_is_left_out_with_the_reason(odd_package):
    description = json.loads((odd_package / "package.json").read_text())
    assert "quarter_second" not in description["items"]
    reason = description["skipped_items"]["quarter_second"]
    assert reason.startswith("0.25 s long, shorter than the 0.4 s block")
    assert f"Left out `quarter_second`: {reason}" in (odd_package / "README.md").read_text()


def test_a_six_channel_item_is_downmixed_to_mono_and_says_so(odd_package):
    description = json.loads((odd_package / "package.json").read_text())
    assert {"six_channels", "plain_mono", "plain_stereo"} == set(description["items"])
    note = "downmixed 6 channels to mono (mean)"
    assert description["item_notes"]["six_channels"] == [note]
    assert f"- `six_channels`: {note}." in (odd_package / "README.md").read_text()
    table = manifest(odd_package)
    trial = table[table["item"] == "six_channels"]
    assert set(trial["condition"]) == CONDITIONS - {"opus_12kbps"}
    assert (trial["item_notes"] == note).all()
    for file in trial["file"]:
        audio, rate = soundfile.read(odd_package / file, always_2d=True)
        assert audio.shape[1] == 1 and rate == 48_000
        assert abs(pyloudnorm.Meter(rate).integrated_loudness(audio) + 23.0) < 0.5
    # Mono and stereo references keep their channels and rates.
    stereo = table[table["item"] == "plain_stereo"]
    assert soundfile.info(odd_package / stereo["file"].iloc[0]).channels == 2
    assert stereo["item_notes"].isna().all()


def test_a_failure_mid_export_leaves_no_package_and_a_rerun_works(odd_run, odd_package, capsys):
    """An item whose file changed after the run stops the export at that item: nothing of
    the package stays behind, the error names the item, and once the file is back the same
    command builds the package."""
    description = json.loads((odd_package / "package.json").read_text())
    config = json.loads((odd_run / "config.json").read_text())
    paths = {item["id"]: Path(item["path"]) for item in config["dataset"]["items"]}
    last = paths[description["items"][-1]]  # the trials before it are written by then
    original = last.read_bytes()
    out = odd_run.parent / "failed"
    command = ["listen", "export", str(odd_run), "--out", str(out)]
    try:
        write_tone(last, 2.0, 16_000, 1, 880)
        assert main(command) == EXIT_USAGE
    finally:
        last.write_bytes(original)
    error = capsys.readouterr().err
    assert f"item '{description['items'][-1]}' ({last})" in error and "changed" in error
    assert not out.exists() and not Path(f"{out}.zip").exists()
    assert not list(odd_run.parent.glob(".failed*"))

    assert main(command) == EXIT_OK
    printed = capsys.readouterr().out
    assert "Left out `narrowband`: sample rate 8000 Hz" in printed
    assert "Left out `quarter_second`: 0.25 s long" in printed
    assert (out / "package.json").is_file()
    names = zipfile.ZipFile(f"{out}.zip").namelist()
    assert "failed/package.json" in names
    assert not list(odd_run.parent.glob(".failed*"))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-seconds", "0.3", r"--max-seconds: expected at least 0\.4.*got 0\.3"),
        ("--items", "0", "--items: expected at least 1, got 0"),
    ],
)
def test_export_settings_that_cannot_work_are_refused_up_front(
    odd_run, tmp_path, capsys, option, value, message
):
    out = tmp_path / "pkg"
    assert main(["listen", "export", str(odd_run), "--out", str(out), option, value]) == EXIT_USAGE
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("max_seconds", "--max-seconds: expected at least 0.4.*got nan"),
        ("target_lufs", "--loudness: expected a finite LUFS value, got nan"),
    ],
)
def test_export_settings_refuse_nan_from_library_callers(field, message):
    # The command line refuses nan before (a finite-number option type); the library's
    # settings check their own values for callers that build them directly.
    with pytest.raises(ValueError, match=message):
        ExportSettings(**{field: float("nan")})


def test_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    out = tmp_path / "pkg"
    assert main(["listen", "export", str(tmp_path), "--out", str(out)]) == EXIT_USAGE
    assert f"expected a run directory with config.json, got {tmp_path}" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_an_out_that_is_a_file_is_refused(odd_run, tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("x")
    assert main(["listen", "export", str(odd_run), "--out", str(out)]) == EXIT_USAGE
    assert f"--out {out} already holds files" in capsys.readouterr().err
    assert out.read_text() == "x"


def test_analyze_refuses_ratings_for_a_trial_the_package_does_not_have(package, tmp_path, capsys):
    """One rating on a trial that was never played moved a condition's mean; now the
    ratings are checked against the package's trials and conditions."""
    table = manifest(package)
    rows = [
        {"listener": f"L{index}", "trial": row.item, "condition": row.condition, "score": score}
        for index in range(4)
        for row in table.itertuples()
        for score in [98.0 if row.condition == "reference" else 50.0]
    ]
    stray = {"listener": "L0", "trial": "not_in_package", "condition": "opus_6kbps", "score": 0}
    pd.DataFrame([*rows, stray]).to_csv(tmp_path / "ratings.csv", index=False)
    command = ["listen", "analyze", str(tmp_path / "ratings.csv"), "--package", str(package)]
    assert main([*command, "--out", str(tmp_path / "out")]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert "got 1 rating(s) for trial(s) it does not have: 'not_in_package'" in error
    assert not (tmp_path / "out" / "summary.csv").exists()


def test_a_run_with_no_playable_item_says_why_for_each(tmp_path, capsys):
    data = tmp_path / "data"
    write_tone(data / "narrowband.wav", 2.0, 8_000, 1, 300)
    write_tone(data / "quarter_second.wav", 0.25, 16_000, 1, 700)
    settings = SweepSettings(
        codecs=("opus",),
        codec_bitrates={"opus": (6.0,)},
        data=f"folder:{data}",
        metrics=("mel_distance",),
        listening_items=0,
    )
    run_sweep(settings, workers=1, run_dir=tmp_path / "run", cache_dir=None, progress=False)
    out = tmp_path / "pkg"
    assert main(["listen", "export", str(tmp_path / "run"), "--out", str(out)]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert "no scored item of the run can be played in a listening test" in error
    assert "narrowband: sample rate 8000 Hz" in error and "quarter_second: 0.25 s long" in error
    assert not out.exists() and sorted(path.name for path in tmp_path.iterdir()) == ["data", "run"]
