"""bench.audio: loading every bad input gives a clear error or a recorded note."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from helpers import write_tone

from bench import audio


@pytest.mark.parametrize(
    ("subtype", "tolerance"),
    [("PCM_U8", 1 / 64), ("PCM_16", 1e-4), ("PCM_24", 1e-6), ("PCM_32", 1e-7), ("FLOAT", 0)],
)
def test_every_bit_depth_loads_at_the_same_scale(tmp_path, subtype, tolerance):
    reference = write_tone(tmp_path / "float.wav", subtype="FLOAT")
    path = write_tone(tmp_path / f"{subtype}.wav", subtype=subtype)
    loaded = audio.load_audio(path)
    assert loaded.subtype == subtype
    assert loaded.audio.dtype == torch.float32 and loaded.audio.shape == (1, 16000)
    expected = audio.load_audio(reference).audio
    assert torch.max(torch.abs(loaded.audio - expected)).item() <= tolerance + 1e-9


def test_missing_empty_and_corrupt_files_raise_audio_error(tmp_path):
    with pytest.raises(audio.AudioError, match="no such file"):
        audio.load_audio(tmp_path / "absent.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(audio.AudioError, match="empty file"):
        audio.load_audio(tmp_path / "empty.wav")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEgarbage" * 10)
    with pytest.raises(audio.AudioError, match="cannot decode"):
        audio.load_audio(tmp_path / "corrupt.wav")


def test_non_finite_and_short_files_raise(tmp_path):
    data = np.zeros(16000, dtype=np.float32)
    data[100] = np.nan
    data[200] = np.inf
    soundfile.write(tmp_path / "nan.wav", data, 16000, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match="2 NaN or infinite"):
        audio.load_audio(tmp_path / "nan.wav")
    write_tone(tmp_path / "short.wav", seconds=0.1)
    with pytest.raises(audio.AudioError, match="too short: 0.100 s, expected at least 0.25"):
        audio.load_audio(tmp_path / "short.wav")


def test_clipping_and_silence_are_noted_not_rejected(tmp_path):
    data = np.full(8000, 0.5, dtype=np.float32)
    data[:10] = 1.7  # a float file beyond full scale
    soundfile.write(tmp_path / "over.wav", data, 16000, subtype="FLOAT")
    loaded = audio.load_audio(tmp_path / "over.wav")
    assert loaded.audio.max().item() == 1.0
    assert any("clipped 10 sample(s)" in note for note in loaded.notes)

    clipped = np.clip(np.sin(np.linspace(0, 200, 8000)) * 3, -1, 1).astype(np.float32)
    soundfile.write(tmp_path / "rails.wav", clipped, 16000, subtype="PCM_16")
    assert any(
        note.startswith("clipping:") for note in audio.load_audio(tmp_path / "rails.wav").notes
    )

    soundfile.write(tmp_path / "silent.wav", np.zeros(8000, dtype=np.float32), 16000)
    assert "silent: every sample is zero" in audio.load_audio(tmp_path / "silent.wav").notes


def test_prepare_resamples_downmixes_crops_and_records_it(tmp_path):
    path = write_tone(tmp_path / "stereo.wav", seconds=2.0, sample_rate=22050, channels=2)
    prepared, notes = audio.prepare(audio.load_audio(path), 16000, 1, max_seconds=1.5)
    assert prepared.shape == (1, 24000)
    assert notes == (
        "cropped to the first 1.5 s",
        "downmixed 2 channels to mono (mean)",
        f"resampled 22050 -> 16000 Hz ({audio.RESAMPLER})",
    )


def test_resampling_preserves_a_tone_in_band():
    rate_in, rate_out = 16000, 48000
    time = torch.arange(rate_in) / rate_in
    tone = torch.sin(2 * torch.pi * 1000 * time).unsqueeze(0)
    upsampled = audio.resample(tone, rate_in, rate_out)
    assert upsampled.shape == (1, rate_out)
    expected = torch.sin(2 * torch.pi * 1000 * torch.arange(rate_out) / rate_out)
    middle = slice(1000, rate_out - 1000)  # the edges carry the filter's transient
    assert torch.max(torch.abs(upsampled[0, middle] - expected[middle])).item() < 1e-3
