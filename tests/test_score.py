"""`bench score`: file pairs and folders, alignment recorded, JSON output, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from helpers import write_tone

from bench import audio
from bench.cli import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, main
from bench.data.embedded import EMBEDDED_DIR
from bench.data.item import Item
from bench.scoring import (
    ItemSignals,
    bind_metrics,
    length_tolerance,
    pair_paths,
    score_metric,
    score_pair,
)

METRICS = "mel_distance,si_sdr"


def _refuse(constant: str):
    raise AssertionError(f"not JSON: {constant}")


def _strict_json(text: str) -> dict:
    """``text`` parsed as JSON proper: no NaN or Infinity, and no Python None, NaN or inf
    written as a string in any field."""
    document = json.loads(text, parse_constant=_refuse)

    def check(value):
        if isinstance(value, dict):
            for key, item in value.items():
                check(key)
                check(item)
        elif isinstance(value, list):
            for item in value:
                check(item)
        elif isinstance(value, str):
            assert value.lower() not in {"none", "nan", "inf", "-inf", "infinity"}, value

    check(document)
    return document


def test_identical_files_score_best_and_print_json(tmp_path, capsys):
    reference = write_tone(tmp_path / "ref.wav")
    assert main(["score", str(reference), str(reference), "--metrics", METRICS, "--json"]) == 0
    printed = _strict_json(capsys.readouterr().out)
    assert printed["values"]["mel_distance"] == 0.0
    assert printed["values"]["si_sdr"] > 100
    assert printed["failures"] == {} and printed["notes"] == []


def test_rates_are_converted_and_a_length_within_tolerance_trimmed_with_a_note(tmp_path):
    reference = write_tone(tmp_path / "ref.wav", seconds=1.0)
    # 15 ms longer, under the 20 ms tolerance of a 1 s reference.
    longer = write_tone(tmp_path / "longer.wav", seconds=1.015, sample_rate=22050)
    scores = score_pair(reference, longer, bind_metrics(("si_sdr",)))
    assert "degraded: resampled 22050 -> 16000 Hz" in " ".join(scores.notes)
    assert any(
        "within the tolerance of 320 samples" in note
        and "si_sdr scored both trimmed to the shorter, 16000" in note
        for note in scores.notes
    )
    # The same tone, aligned after trimming; only the added noise differs (about 25 dB down).
    assert scores.values["si_sdr"] > 20


def test_length_tolerance_is_20_ms_or_1_percent_whichever_is_larger():
    assert length_tolerance(16_000, 16_000) == 320  # 1 s: 20 ms
    assert length_tolerance(960_000, 48_000) == 9_600  # 20 s: 1 %


@pytest.mark.parametrize("extra, scored", [(320, True), (321, False)])
def test_a_length_difference_just_beyond_the_tolerance_is_refused(tmp_path, extra, scored):
    reference = write_tone(tmp_path / "ref.wav", seconds=1.0)
    signal, rate = soundfile.read(reference, dtype="float32")
    degraded = tmp_path / "deg.wav"
    soundfile.write(degraded, np.concatenate([signal, signal[:extra]]), rate)
    scores = score_pair(reference, degraded, bind_metrics(("si_sdr",)))
    assert (scores.values["si_sdr"] is not None) == scored
    assert ("si_sdr" in scores.failures) != scored


@pytest.fixture
def half_file(tmp_path) -> tuple[Path, Path]:
    """A speech clip, and a degraded file holding only its first half."""
    speech, rate = soundfile.read(EMBEDDED_DIR / "librivox_0880.flac", dtype="float32")
    reference, half = tmp_path / "ref.wav", tmp_path / "half.wav"
    soundfile.write(reference, speech, rate)
    soundfile.write(half, speech[: len(speech) // 2], rate)
    return reference, half


def test_a_degraded_file_of_half_the_length_is_nan_with_the_reason_exit_3(half_file, capsys):
    # It scored PESQ 4.64 and STOI 1.0 (both trimmed to the first half), exit 0.
    reference, half = half_file
    metrics = "pesq_wb,stoi,si_sdr,mel_distance"
    assert main(["score", str(reference), str(half), "--metrics", metrics, "--json"]) == 3
    printed = _strict_json(capsys.readouterr().out)
    assert printed["values"] == dict.fromkeys(metrics.split(","))
    for reason in printed["failures"].values():
        assert "lengths differ: reference 47840, degraded 23920 samples" in reason
        assert "beyond the tolerance of 478 samples" in reason and "--trim" in reason


def test_trim_scores_the_common_part_but_gives_pesq_the_files_as_they_are(half_file, capsys):
    reference, half = half_file
    code = main(["score", str(reference), str(half), "--metrics", "pesq_wb,si_sdr", "--trim"])
    assert code == EXIT_OK
    printed = capsys.readouterr().out
    assert "si_sdr scored both trimmed to the shorter, 23920; pesq_wb scored the files" in printed
    loaded = [audio.load_audio(path).audio for path in (reference, half)]
    (pesq,) = bind_metrics(("pesq_wb",))
    whole = score_metric(pesq, Item(id="half", path=half), ItemSignals(*loaded, 16_000))
    # PESQ aligns the pair itself: the untrimmed pair, not the trimmed one (4.64).
    assert whole.values["pesq_wb"] < 2
    assert f"pesq_wb              {whole.values['pesq_wb']:.4f}" in printed


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
    # The missing side of an unpaired file was written as the string "None".
    printed = _strict_json(capsys.readouterr().out)
    assert len(printed["pairs"]) == 4
    unpaired = printed["pairs"][1]
    assert unpaired["reference"] is None and unpaired["degraded"].endswith("only_degraded.wav")
    assert printed["pairs"][2]["degraded"] is None
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
