"""The `bench` command: listings, errors with "did you mean", exit codes, reports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import write_tone

from bench.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, build_parser, main
from bench.cli.listen import export_settings
from bench.cli.run import SUITE_FIXED, settings_from_arguments
from bench.listen.settings import ExportSettings
from bench.store import RunStore
from bench.suites import load_suite
from bench.sweep import RunInterrupted, SweepSettings


def test_unknown_codec_and_metric_exit_2_with_suggestions(capsys):
    assert main(["run", "--codec", "opsu"]) == EXIT_USAGE
    assert "unknown codec 'opsu'; did you mean 'opus'?" in capsys.readouterr().err
    assert main(["run", "--codec", "opus", "--metrics", "si_sdrr", "--no-cache"]) == EXIT_USAGE
    assert (
        "unknown metric 'si_sdrr'; did you mean 'si_sdr' or 'si_sdr_aligned'?"
        in capsys.readouterr().err
    )


def test_bad_options_exit_2_naming_what_was_expected(capsys, tmp_path):
    assert main(["run"]) == EXIT_USAGE
    assert "--codec is required" in capsys.readouterr().err
    assert main(["run", "--codec", "opus", "--bitrates", "7"]) == EXIT_USAGE
    assert "supported bitrates (kbps): 6, 8, 12" in capsys.readouterr().err
    assert main(["run", "--codec", "opus", "--nfe", "8"]) == EXIT_USAGE
    assert "--nfe applies to iterative decoders only" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "nowhere")]) == EXIT_USAGE
    assert "--resume: expected a run directory" in capsys.readouterr().err
    assert main(["run", "--codec", "opus", "--data", "folder:/no/such/folder"]) == EXIT_USAGE
    assert "/no/such/folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == EXIT_USAGE


def test_listings_show_bitrates_nfe_and_metadata(capsys):
    assert main(["codecs"]) == EXIT_OK
    listing = capsys.readouterr().out
    for name in ("opus", "mp3", "identity", "lowpass3k5", "lowpass7k"):
        assert f"\n{name} " in listing
    assert "one-shot" in listing
    assert main(["metrics"]) == EXIT_OK
    metrics = capsys.readouterr().out
    assert "mel_distance" in metrics and "lower" in metrics and "24000" in metrics
    assert "si_sdr" in metrics and "higher" in metrics


def test_run_prints_a_table_and_report_rebuilds_it(tmp_path, capsys):
    arguments = _quantizer_run(tmp_path, "--out", str(tmp_path / "runs"), "--no-cache")
    assert main(arguments) == EXIT_OK
    printed = capsys.readouterr().out
    assert "si_sdr ↑" in printed and "mel_distance ↓" in printed and "test-quantizer" in printed
    run_dir = next((tmp_path / "runs").iterdir())
    assert main(["report", str(run_dir)]) == EXIT_OK
    assert capsys.readouterr().out.strip() == printed.split("\n\nrun:")[0].strip()


def test_console_script_is_installed():
    completed = subprocess.run(
        [sys.executable, "-m", "bench.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "exit codes" in completed.stdout
    from importlib.metadata import entry_points

    scripts = {script.name: script.value for script in entry_points(group="console_scripts")}
    assert scripts.get("bench") == "bench.cli:main"


def test_a_reader_that_leaves_the_pipe_ends_the_command_quietly():
    listing = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "weights", "list", "--urls"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    listing.stdout.close()  # gone before the first line is written, as `| head -0` would be
    _, errors = listing.communicate(timeout=120)
    assert listing.returncode == 141
    assert "Traceback" not in errors and "BrokenPipeError" not in errors


def test_suite_fixes_the_sweep(tmp_path, capsys):
    assert main(["run", "--suite", "ci", "--codec", "opus", "--out", str(tmp_path)]) == EXIT_USAGE
    assert "--suite ci fixes the sweep; expected no --codec" in capsys.readouterr().err
    assert main(["run", "--suite", "cii", "--out", str(tmp_path)]) == EXIT_USAGE
    assert "unknown suite 'cii'; did you mean 'ci'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing ran"


def test_the_run_defaults_are_the_sweep_settings_defaults():
    """Defaults are stated once: in SweepSettings, and how a run executes in run_sweep."""
    arguments = build_parser().parse_args(["run", "--codec", "opus"])
    assert settings_from_arguments(arguments) == SweepSettings(codecs=("opus",))
    assert arguments.workers is None and arguments.executor is None
    # What a suite fixes defaults as the parser does, so that only a given option clashes.
    unset = vars(build_parser().parse_args(["run"]))
    assert {name: unset[name] for name in SUITE_FIXED} == SUITE_FIXED
    given_at_default = build_parser().parse_args(["run", "--suite", "ci", "--seed", "0"])
    assert settings_from_arguments(given_at_default) == load_suite("ci")


def test_the_listen_export_defaults_are_the_export_settings_defaults():
    arguments = build_parser().parse_args(["listen", "export", "RUN", "--out", "PKG"])
    assert export_settings(arguments) == ExportSettings()


@pytest.mark.parametrize(
    ("handler", "interrupt", "command", "continue_with"),
    [
        ("run.run_command", RunInterrupted("runs/a b"), "run", "`bench run --resume 'runs/a b'`"),
        ("run.run_command", KeyboardInterrupt(), "run", "the same command"),
        (
            "train.train_command",
            KeyboardInterrupt(),
            "train encodec --out X --data embedded --steps 1",
            "the same `bench train` command with --resume (the state was saved)",
        ),
        ("score.score_command", KeyboardInterrupt(), "score A B", "the same command"),
    ],
)
def test_ctrl_c_exits_130_saying_how_to_continue(
    monkeypatch, capsys, handler, interrupt, command, continue_with
):
    def interrupted(arguments):
        raise interrupt

    monkeypatch.setattr(f"bench.cli.{handler}", interrupted)
    assert main(command.split()) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == f"interrupted; continue with {continue_with}\n"


def _quantizer_run(tmp_path, *more: str) -> list[str]:
    write_tone(tmp_path / "data" / "a.wav")
    return [
        "run",
        "--codec",
        "test-quantizer",
        "--data",
        f"folder:{tmp_path / 'data'}",
        "--metrics",
        "mel_distance,si_sdr,kbps_actual",
        "--workers",
        "1",
        "--no-report",
        "--quiet",
        *more,
    ]


def test_paths_that_cannot_hold_a_run_or_a_cache_exit_2_without_a_traceback(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("")
    empty = tmp_path / "empty"
    empty.mkdir()
    # A path under a regular file cannot be created, even by root (who ignores permission bits).
    cases = {
        "--out": (["--out", str(a_file), "--no-cache"], "--out: expected a folder"),
        "--out under a file": (["--out", str(a_file / "runs"), "--no-cache"], "--out: expected"),
        "--run-dir": (["--run-dir", str(a_file), "--no-cache"], "run directory: expected"),
        "--cache": (["--cache", str(a_file), "--out", str(empty)], "--cache: expected a folder"),
    }
    for name, (options, message) in cases.items():
        assert main(_quantizer_run(tmp_path, *options)) == EXIT_USAGE, name
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error, (name, error)
    assert main(["run", "--resume", str(empty)]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert "expected a run directory with config.json" in error and "Traceback" not in error
    assert not any(empty.iterdir()), "nothing was written"


def test_a_damaged_results_line_is_named_wherever_results_are_read(tmp_path, capsys):
    assert main(_quantizer_run(tmp_path, "--out", str(tmp_path / "runs"), "--no-cache")) == EXIT_OK
    run_dir = next((tmp_path / "runs").iterdir())
    results = run_dir / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    assert len(lines) == 3
    lines[1] = lines[1][:14] + "\x01" + lines[1][15:]  # as in the issue: a control character
    results.write_text("".join(lines))
    for command in (["report", str(run_dir)], ["compare", str(run_dir), str(run_dir)]):
        assert main(command) == EXIT_USAGE, command
        assert f"{results}: line 2: expected a JSON result row" in capsys.readouterr().err
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == EXIT_USAGE
    assert f"{results}: line 2" in capsys.readouterr().err


def _run_arguments(tmp_path, *options: str) -> list[str]:
    write_tone(tmp_path / "data" / "a.wav")
    return [
        "run",
        *options,
        "--data",
        f"folder:{tmp_path / 'data'}",
        "--metrics",
        "si_sdr",
        "--workers",
        "1",
        "--out",
        str(tmp_path / "runs"),
        "--no-cache",
        "--no-report",
        "--quiet",
    ]


def _rows(tmp_path) -> list[tuple[str, float]]:
    (run_dir,) = (tmp_path / "runs").iterdir()
    return sorted((row["codec"], row["bitrate"]) for row in RunStore(run_dir).rows())


def test_repeated_values_of_a_list_option_exit_2(tmp_path, capsys):
    for option, value in [
        ("--codec", "test-quantizer,test-quantizer"),
        ("--bitrates", "128,128"),
        ("--metrics", "si_sdr,si_sdr"),
        ("--items", "a,a"),
        ("--tags", "speech,speech"),
        ("--seed", "0,0"),
    ]:
        # The last of two --metrics counts; --codec adds up.
        arguments = [*_run_arguments(tmp_path, "--codec", "test-quantizer"), option, value]
        assert main(arguments) == EXIT_USAGE, option
        assert f"{option}: expected each value once" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists(), "nothing ran"


def test_a_bitrate_off_by_float_noise_runs_at_the_codec_s_own(tmp_path, capsys):
    arguments = _run_arguments(tmp_path, "--codec", "test-quantizer", "--bitrates", "128.0000001")
    assert main(arguments) == EXIT_OK
    assert _rows(tmp_path) == [("test-quantizer", 128.0)]


@pytest.mark.parametrize("max_seconds", ["0.1", "nan", "inf", "-1"])
def test_max_seconds_below_the_minimum_exits_2_naming_it(tmp_path, capsys, max_seconds):
    arguments = _run_arguments(
        tmp_path, "--codec", "test-quantizer", f"--max-seconds={max_seconds}"
    )
    assert main(arguments) == EXIT_USAGE
    assert "--max-seconds to be a finite number of at least 0.25 s" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists(), "no config.json with NaN in it"


@pytest.mark.parametrize(
    "arguments",
    [
        ["listen", "export", "RUN", "--out", "PKG", "--loudness", "nan"],
        ["listen", "export", "RUN", "--out", "PKG", "--max-seconds", "inf"],
        "train encodec --data embedded --steps 1 --out X --learning-rate nan".split(),
        "train encodec --data embedded --steps 1 --out X --segment-seconds=-inf".split(),
    ],
)
def test_float_options_refuse_nan_and_inf(arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == EXIT_USAGE
    assert "expected a finite number, got" in capsys.readouterr().err


def test_loss_weights_refuse_nan(capsys):
    arguments = ["train", "encodec", "--data", "embedded", "--steps", "1", "--out", "X"]
    assert main([*arguments, "--weights", "time=nan"]) == EXIT_USAGE
    assert "--weights 'time=nan': expected a finite number" in capsys.readouterr().err


def test_several_codecs_run_the_bitrates_each_supports_and_say_what_was_skipped(tmp_path, capsys):
    arguments = _run_arguments(tmp_path, "--codec", "test-quantizer,opus", "--bitrates", "6,128")
    assert main(arguments) == EXIT_OK
    printed = capsys.readouterr().out
    assert _rows(tmp_path) == [("opus", 6.0), ("test-quantizer", 128.0)]
    assert "note: skipped test-quantizer at 6 kbps: not among its bitrates (128)" in printed
    assert "note: skipped opus at 128 kbps: not among its bitrates (6, 8, 12," in printed


def test_each_codec_can_have_bitrates_of_its_own(tmp_path, capsys):
    arguments = _run_arguments(tmp_path, "--codec", "test-quantizer", "--codec", "opus:6,12")
    assert main(arguments) == EXIT_OK
    assert _rows(tmp_path) == [("opus", 6.0), ("opus", 12.0), ("test-quantizer", 128.0)]


@pytest.mark.parametrize(
    ("codecs", "message"),
    [
        (["opus:6,encodec"], "got 'encodec'; expected --codec NAME:KBPS[,KBPS...], one codec per"),
        (["opus,encodec:6"], "--codec 'opus,encodec:6': expected one codec before ':'"),
        (["opus:"], "--codec opus:KBPS: expected at least one value"),
        (["opus:6", "--codec", "opus:12"], "--codec: expected each value once, got 'opus'"),
        (["opus:6", "--bitrates", "6"], "--bitrates 6: applies to no codec"),
        (["opus:7"], "codec 'opus' does not support 7 kbps"),
    ],
)
def test_ambiguous_per_codec_bitrates_exit_2(tmp_path, capsys, codecs, message):
    assert main(["run", "--codec", *codecs, "--out", str(tmp_path), "--no-cache"]) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing ran"


def test_config_runs_a_suite_file_from_any_path(tmp_path, capsys):
    write_tone(tmp_path / "data" / "a.wav")
    config = tmp_path / "elsewhere" / "mine.toml"
    config.parent.mkdir()
    config.write_text(
        'codecs = ["test-quantizer", "opus"]\n'
        f'data = "folder:{tmp_path / "data"}"\n'
        'metrics = ["si_sdr"]\n'
        "[codec_bitrates]\n"
        "opus = [6]\n"
    )
    common = ["--out", str(tmp_path / "runs"), "--no-cache", "--no-report", "--quiet"]
    assert main(["run", "--config", str(config), "--codec", "opus", *common]) == EXIT_USAGE
    assert f"--config {config} fixes the sweep; expected no --codec" in capsys.readouterr().err
    assert main(["run", "--config", str(config), "--suite", "ci", *common]) == EXIT_USAGE
    assert "expected one of them, got both" in capsys.readouterr().err
    assert main(["run", "--config", str(config), "--workers", "1", *common]) == EXIT_OK
    assert _rows(tmp_path) == [("opus", 6.0), ("test-quantizer", 128.0)]
    (run_dir,) = (tmp_path / "runs").iterdir()
    settings = json.loads((run_dir / "config.json").read_text())["settings"]
    assert settings["codec_bitrates"] == {"opus": [6.0]}
    config.write_text('codecs = ["opus"]\nbitrate = [6]\n')
    assert main(["run", "--config", str(config), *common]) == EXIT_USAGE
    assert f"suite file {str(config)!r}: unknown keys ['bitrate']" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "none.toml"), *common]) == EXIT_USAGE
    assert "none.toml': cannot read it" in capsys.readouterr().err
