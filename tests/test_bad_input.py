"""Every kind of bad input gives a clear error or a NaN with a reason, and never stops
the other items of the run."""

from __future__ import annotations

import json
import math

import numpy as np
import soundfile
from helpers import write_tone

from bench.cli import EXIT_FAILURES, main
from bench.store import RunStore
from bench.sweep import SweepSettings, run_sweep

# The harness's behaviour is under test here, so the cheap signal metrics suffice.
METRICS = "mel_distance,si_sdr,kbps_actual,rtf_encode,rtf_decode"


def _make_bad_inputs(folder):
    write_tone(folder / "good.wav")
    soundfile.write(folder / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    nan = np.full(16000, 0.1, dtype=np.float32)
    nan[5], nan[6] = np.nan, np.inf
    soundfile.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    rails = np.clip(3 * np.sin(np.linspace(0, 400, 16000)), -1, 1).astype(np.float32)
    soundfile.write(folder / "clipped.wav", rails, 16000, subtype="PCM_16")
    write_tone(folder / "short.wav", seconds=0.1)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(64)))
    (folder / "empty.wav").write_bytes(b"")
    for subtype in ("PCM_U8", "PCM_24", "PCM_32"):
        write_tone(folder / f"{subtype.lower()}.wav", subtype=subtype)
    write_tone(folder / "stereo.wav", channels=2)
    write_tone(folder / "rate22k.wav", sample_rate=22050)
    entries = [{"path": path.name} for path in sorted(folder.glob("*.wav"))]
    entries.append({"path": "missing.wav"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    return manifest


def test_bad_inputs_fail_alone_with_reasons(tmp_path, capsys):
    manifest = _make_bad_inputs(tmp_path / "data")
    code = main(
        [
            "run",
            "--codec",
            "test-quantizer",
            "--data",
            f"manifest:{manifest}",
            "--metrics",
            METRICS,
            "--workers",
            "1",
            "--out",
            str(tmp_path / "runs"),
            "--no-cache",
            "--quiet",
        ]
    )
    assert code == EXIT_FAILURES
    printed = capsys.readouterr().out
    run_dir = next((tmp_path / "runs").iterdir())
    rows = list(RunStore(run_dir).rows())
    by_item: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_item.setdefault(row["item"], {})[row["metric"]] = row

    def failures(item):
        return {metric: row["failure"] for metric, row in by_item[item].items() if row["failure"]}

    def notes(item):
        return " ".join(next(iter(by_item[item].values()))["input_notes"])

    for item in ("good", "pcm_u8", "pcm_24", "pcm_32", "clipped", "stereo", "rate22k"):
        assert failures(item) == {}, item
        assert all(math.isfinite(row["value"]) for row in by_item[item].values()), item
    assert "clipping" in notes("clipped")
    assert "downmixed 2 channels to mono" in notes("stereo")
    assert "resampled 22050 -> 16000 Hz" in notes("rate22k")

    assert failures("silent") == {
        "si_sdr": "reference is silent (zero energy after removing the mean)"
    }
    assert "silent" in notes("silent")
    expected_reasons = {
        "nan": "2 NaN or infinite sample(s)",
        "short": "too short",
        "corrupt": "cannot decode",
        "empty": "empty file",
        "missing": "no such file",
    }
    for item, reason in expected_reasons.items():
        reasons = failures(item)
        assert len(reasons) == len(METRICS.split(",")) and all(
            reason in text for text in reasons.values()
        ), item
        assert all(row["value"] is None for row in by_item[item].values())
    # The table counts failures next to the means, and lists the reasons.
    assert "failed" in printed and "no such file" in printed


def test_a_six_channel_item_for_a_stereo_codec_fails_alone_with_the_reason(tmp_path):
    # It once raised out of the run ("cannot convert 6 channels to 2") and stopped it.
    write_tone(tmp_path / "data" / "good.wav", channels=2)
    write_tone(tmp_path / "data" / "surround.wav", channels=6)
    settings = SweepSettings(
        codecs=("identity",),
        codec_options={"identity": {"sample_rate": 16000, "channels": 2}},
        data=f"folder:{tmp_path / 'data'}",
        metrics=("si_sdr",),
    )
    summary = run_sweep(
        settings, workers=1, out_root=tmp_path / "runs", cache_dir=None, progress=False
    )
    rows = {row["item"]: row for row in RunStore(summary.run_dir).rows()}
    assert rows["good"]["failure"] is None and math.isfinite(rows["good"]["value"])
    assert "cannot convert 6 channels to 2" in rows["surround"]["failure"]
