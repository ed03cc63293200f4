"""`bench score`: file pairs and folders, alignment recorded, JSON output, exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
from helpers import write_tone

from bench.cli import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, main
from bench.scoring import bind_metrics, pair_paths, score_pair

METRICS = "mel_distance,si_sdr"


def test_identical_files_score_best_and_print_json(tmp_path, capsys):
    reference = write_tone(tmp_path / "ref.wav")
    assert main(["score", str(reference), str(reference), "--metrics", METRICS, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["values"]["mel_distance"] == 0.0
    assert printed["values"]["si_sdr"] > 100
    assert printed["failures"] == {} and printed["notes"] == []


def test_lengths_and_rates_are_aligned_and_recorded(tmp_path):
    reference = write_tone(tmp_path / "ref.wav", seconds=1.0)
    longer = write_tone(tmp_path / "longer.wav", seconds=1.2, sample_rate=22050)
    scores = score_pair(reference, longer, bind_metrics(("si_sdr",)))
    assert "degraded: resampled 22050 -> 16000 Hz" in " ".join(scores.notes)
    assert any("both trimmed to the shorter, 16000" in note for note in scores.notes)
    # The same tone, aligned after trimming; only the added noise differs (about 25 dB down).
    assert scores.values["si_sdr"] > 20


def test_folders_pair_by_relative_path_across_extensions(tmp_path, capsys):
    for name in ("a", "sub/b", "only_reference"):
        write_tone(tmp_path / "ref" / f"{name}.flac")
    for name in ("a", "sub/b", "only_degraded"):
        write_tone(tmp_path / "deg" / f"{name}.wav", frequency=445)
    (tmp_path / "ref" / "a.txt").write_text("a transcript")
    pairs = pair_paths(tmp_path / "ref", tmp_path / "deg")
    assert [(ref and ref.name, deg and deg.name) for ref, deg in pairs] == [
        ("a.flac", "a.wav"),
        (None, "only_degraded.wav"),
        ("only_reference.flac", None),
        ("b.flac", "b.wav"),
    ]
    code = main(
        [
            "score",
            str(tmp_path / "ref"),
            str(tmp_path / "deg"),
            "--metrics",
            METRICS,
            "--json",
            "--workers",
            "2",
        ]
    )
    assert code == EXIT_FAILURES  # two unpaired files
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["pairs"]) == 4
    unpaired = printed["pairs"][1]
    assert unpaired["values"] == {"mel_distance": None, "si_sdr": None}
    assert unpaired["failures"]["si_sdr"] == "input: no reference file to pair with"
    scored = [pair["values"]["si_sdr"] for pair in printed["pairs"] if pair["values"]["si_sdr"]]
    assert printed["mean"]["si_sdr"] == pytest.approx(np.mean(scored))


def test_bad_paths_and_metrics_exit_2(tmp_path, capsys):
    reference = write_tone(tmp_path / "ref.wav")
    assert main(["score", str(reference), str(tmp_path / "absent.wav")]) == EXIT_USAGE
    assert "missing path" in capsys.readouterr().err
    assert main(["score", str(reference), str(tmp_path)]) == EXIT_USAGE
    assert "two files or two folders" in capsys.readouterr().err
    assert main(["score", str(reference), str(reference), "--metrics", "rtf_encode"]) == 2
    assert "cannot score files" in capsys.readouterr().err


def test_unreadable_degraded_file_is_a_nan_with_reason(tmp_path, capsys):
    reference = write_tone(tmp_path / "ref.wav")
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    (tmp_path / "corrupt.wav").write_bytes(b"not audio at all")
    assert (
        main(["score", str(reference), str(tmp_path / "corrupt.wav"), "--metrics", METRICS])
        == EXIT_FAILURES
    )
    assert "nan (input: cannot decode corrupt.wav" in capsys.readouterr().out
    assert main(["score", str(silent), str(reference), "--metrics", "si_sdr"]) == EXIT_FAILURES
    assert "reference is silent" in capsys.readouterr().out
    assert main(["score", str(reference), str(reference), "--metrics", "si_sdr"]) == EXIT_OK
