"""bench.audio: loading every bad input gives a clear error or a recorded note."""

from __future__ import annotations

import itertools

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


def _long_silent_flac(path, seconds: float, rate: int = 8000):
    """A FLAC file of ``seconds`` of digital silence (tiny on disk), written in blocks."""
    with soundfile.SoundFile(path, "w", rate, 1, "PCM_16", format="FLAC") as handle:
        block = np.zeros(rate * 60, dtype=np.int16)
        for _ in range(int(seconds // 60)):
            handle.write(block)
        handle.write(np.zeros(int(rate * (seconds % 60)), dtype=np.int16))
    return path


def test_an_item_over_the_duration_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    # An hour-long file at 48 kHz stereo is 1.4 GB per signal in float32: refused with the
    # limit named, before any sample is decoded.
    path = _long_silent_flac(tmp_path / "long.flac", audio.MAX_DURATION_SECONDS + 1)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the samples were read")

    monkeypatch.setattr(soundfile.SoundFile, "read", no_decoding)
    with pytest.raises(audio.AudioError) as refused:
        audio.load_audio(path)
    message = str(refused.value)
    assert "too long: 1201 s" in message
    assert f"at most {audio.MAX_DURATION_SECONDS} s (20 min)" in message
    assert "--max-seconds" in message


def test_a_crop_within_the_limit_reads_only_the_crop(tmp_path):
    path = _long_silent_flac(tmp_path / "long.flac", audio.MAX_DURATION_SECONDS + 1)
    loaded = audio.load_audio(path, max_seconds=2.5)
    assert loaded.audio.shape == (1, 20000)
    assert "cropped to the first 2.5 s" in loaded.notes
    prepared, notes = audio.prepare(loaded, 8000, 1, max_seconds=2.5)
    assert prepared.shape == (1, 20000)
    assert notes.count("cropped to the first 2.5 s") == 1


def test_resampling_in_float32_gives_the_float64_values(tmp_path):
    # Resampling once went through a (samples, channels) float64 copy of the whole signal.
    import soxr

    stereo = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (2, 30000)))
    stereo = stereo.float()
    rates = ((48000, 16000), (44100, 48000), (24000, 44100))
    for signal, (source, target) in itertools.product((stereo, stereo[:1]), rates):
        expected = soxr.resample(signal.numpy().T.astype(np.float64), source, target, "VHQ")
        resampled = audio.resample(signal, source, target)
        assert resampled.dtype == torch.float32
        assert torch.equal(resampled, torch.from_numpy(expected.T.astype(np.float32)))


def test_listening_copies_keep_the_first_listening_seconds(tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "LISTENING_SECONDS", 0.5)
    tone = audio.load_audio(write_tone(tmp_path / "tone.wav")).audio
    audio.save_listening_copy(tmp_path / "copy.flac", tone, 16000)
    assert soundfile.info(str(tmp_path / "copy.flac")).frames == 8000
