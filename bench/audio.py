"""Audio loading, validation, resampling and channel conversion for the harness.

This is the only module that touches sample rates: datasets hand over paths, codecs and
metrics declare the rate they work at, and everything in between goes through here.
Resampling uses libsoxr (``soxr``, VHQ quality); every conversion applied to an item is
returned as a human-readable note so that it is recorded next to the results.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

from bench.store import write_atomically

MIN_DURATION_SECONDS = 0.25
# The longest item the harness evaluates, checked from the file's header before decoding.
# A task holds the reference and the decoded audio whole, in float32 at the codec's rate
# (a 10-minute 48 kHz stereo item takes 230 MB per signal), plus the metrics' working
# copies: benchmarks/long_item_memory.py measures the peak. Longer items are refused
# with this limit named; --max-seconds crops them (only the crop is read).
MAX_DURATION_SECONDS = 20 * 60
# Listening copies (the report's players and spectrograms) keep the first this many
# seconds: a report plays examples, and a whole hour-long item would fill the run folder.
LISTENING_SECONDS = 30.0
RESAMPLER = f"soxr {soxr.__version__} VHQ"
# Samples this close to full scale are counted as clipped; 16-bit full scale is
# 32767/32768 = 0.99997, so anything above 0.999 sat on the rails of some format.
CLIP_LEVEL = 0.999
# Files are read, and whole signals checked, this many samples at a time: an elementwise
# test or a transposed copy of a long item at once would take as much memory as the item.
BLOCK_SAMPLES = 1 << 20


class AudioError(ValueError):
    """Audio that cannot be evaluated: missing, empty, corrupt, too short or non-finite."""


@dataclass(frozen=True)
class LoadedAudio:
    """Audio as read from a file: ``(channels, samples)`` float32 plus how it was read."""

    audio: torch.Tensor
    sample_rate: int
    subtype: str
    notes: tuple[str, ...] = ()
    # Whether only the first part of the file was read (``load_audio``'s ``max_seconds``):
    # the audio is then shorter than the file, and a transcript of the file does not apply.
    cropped: bool = False

    @property
    def duration_seconds(self) -> float:
        return self.audio.shape[-1] / self.sample_rate


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, used as its content address."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require_regular_file(path: str | os.PathLike) -> None:
    """Raise :class:`AudioError` unless ``path`` is, after links, a regular file.

    Reading a FIFO blocks until a writer comes and a device such as ``/dev/zero`` never
    ends, so either would hang the run; a symbolic link loop is named as one.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise AudioError(f"symbolic link loop: {path}") from None
        if error.errno == errno.ENOENT:
            raise AudioError(f"no such file: {path}") from None
        raise AudioError(f"cannot read {path}: {error.strerror}") from None
    if stat.S_ISDIR(mode):
        raise AudioError(f"expected an audio file, got a directory: {path}")
    if not stat.S_ISREG(mode):
        kind = "FIFO" if stat.S_ISFIFO(mode) else "device or socket"
        raise AudioError(f"expected a regular file, got a {kind}: {path}")


def check_samples(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, list[str]]:
    """Validate samples ``(channels, samples)``: reject what cannot be scored, note the rest.

    Rejects non-finite samples and signals shorter than ``MIN_DURATION_SECONDS``. Float
    data beyond full scale is clipped to [-1, 1] (the project's audio convention) and
    noted; samples at full scale in the file itself are noted as clipping.
    """
    notes: list[str] = []
    if audio.shape[-1] == 0:
        raise AudioError("the file holds no samples")
    non_finite = _count(audio, lambda block: ~np.isfinite(block))
    if non_finite:
        raise AudioError(f"{non_finite} NaN or infinite sample(s); expected finite audio")
    duration = audio.shape[-1] / sample_rate
    if duration < MIN_DURATION_SECONDS:
        raise AudioError(f"too short: {duration:.3f} s, expected at least {MIN_DURATION_SECONDS} s")
    over_full_scale = _count(audio, lambda block: np.abs(block) > 1.0)
    if over_full_scale:
        audio = np.clip(audio, -1.0, 1.0)
        notes.append(f"clipped {over_full_scale} sample(s) beyond full scale to [-1, 1]")
    at_full_scale = _count(audio, lambda block: np.abs(block) >= CLIP_LEVEL)
    if at_full_scale and not over_full_scale:
        notes.append(f"clipping: {at_full_scale} sample(s) at full scale")
    if not np.any(audio):
        notes.append("silent: every sample is zero")
    return audio, notes


def _count(audio: np.ndarray, test: Callable[[np.ndarray], np.ndarray]) -> int:
    """How many samples of ``(channels, samples)`` audio pass ``test``, block by block."""
    return sum(
        int(np.count_nonzero(test(audio[:, start : start + BLOCK_SAMPLES])))
        for start in range(0, audio.shape[-1], BLOCK_SAMPLES)
    )


def _read_channels_first(handle: soundfile.SoundFile, frames: int) -> np.ndarray:
    """Up to ``frames`` frames as ``(channels, frames)`` float32, read block by block."""
    samples = np.empty((handle.channels, frames), dtype=np.float32)
    done = 0
    while done < frames:
        block = handle.read(min(BLOCK_SAMPLES, frames - done), dtype="float32", always_2d=True)
        if not len(block):
            break  # the header promised more than the file holds
        samples[:, done : done + len(block)] = block.T
        done += len(block)
    return samples if done == frames else samples[:, :done].copy()


def load_audio(path: str | os.PathLike, max_seconds: float | None = None) -> LoadedAudio:
    """Read any format libsndfile reads (WAV 8/16/24/32-bit, float, FLAC, MP3, Ogg).

    ``max_seconds`` reads only the first that many seconds (noted). Raises
    :class:`AudioError` naming the problem for a missing, empty, corrupt, non-finite or
    too-short file, and, before decoding anything, for one whose header says it is longer
    than ``MAX_DURATION_SECONDS`` (after the crop).
    """
    path = Path(path)
    require_regular_file(path)
    if path.stat().st_size == 0:
        raise AudioError(f"empty file (0 bytes): {path}")
    try:
        with soundfile.SoundFile(path) as handle:
            sample_rate = handle.samplerate
            subtype = handle.subtype
            frames, crop_note = _frames_to_read(handle.frames, sample_rate, max_seconds)
            data = _read_channels_first(handle, frames)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(f"cannot decode {path.name}: {error}") from error
    samples, notes = check_samples(data, sample_rate)
    if crop_note:
        notes.append(crop_note)
    return LoadedAudio(
        torch.from_numpy(samples), sample_rate, subtype, tuple(notes), cropped=bool(crop_note)
    )


def _frames_to_read(
    frames: int, sample_rate: int, max_seconds: float | None
) -> tuple[int, str | None]:
    """How many frames of a file to read, and the note on cropping, if it is cropped.

    Raises :class:`AudioError` for more than ``MAX_DURATION_SECONDS``, from the header alone.
    """
    note = None
    if max_seconds is not None and frames > round(max_seconds * sample_rate):
        frames = int(round(max_seconds * sample_rate))
        note = f"cropped to the first {max_seconds:g} s"
    if frames > MAX_DURATION_SECONDS * sample_rate:
        raise AudioError(
            f"too long: {frames / sample_rate:.0f} s, the harness evaluates items of at most "
            f"{MAX_DURATION_SECONDS} s ({MAX_DURATION_SECONDS / 60:g} min); crop them with "
            "--max-seconds or split them"
        )
    return frames, note


def save_listening_copy(path: str | os.PathLike, audio: torch.Tensor, sample_rate: int) -> bool:
    """Write the first ``LISTENING_SECONDS`` of ``(channels, samples)`` audio as 24-bit
    FLAC for people to listen to.

    Browsers play FLAC, and it is a third of the size of float WAV. FLAC holds integers,
    so samples beyond full scale are clipped; returns whether any were. The file appears
    whole or not at all (written to a temporary name, then renamed).
    """
    samples = audio[:, : int(LISTENING_SECONDS * sample_rate)].detach().cpu().numpy().T
    clipped = bool(np.abs(samples).max(initial=0.0) > 1.0)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(samples, -1.0, 1.0), sample_rate, "PCM_24", format="FLAC")
    write_atomically(Path(path), buffer.getvalue())
    return clipped


def resample(audio: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Resample ``(channels, samples)`` audio with libsoxr (VHQ); a no-op at equal rates."""
    _check_rates(from_rate, to_rate)
    if from_rate == to_rate:
        return audio
    # Channel by channel, in float32, into one output array: a (samples, channels) float64
    # copy of a long item would take four times the result's memory.
    channels = audio.detach().cpu().numpy().astype(np.float32, copy=False)
    first = resample_channel(channels[0], from_rate, to_rate)
    if channels.shape[0] == 1:
        return torch.from_numpy(first[None])
    resampled = np.empty((channels.shape[0], first.size), dtype=np.float32)
    resampled[0] = first
    del first
    for index in range(1, channels.shape[0]):
        resampled[index] = resample_channel(channels[index], from_rate, to_rate)
    return torch.from_numpy(resampled)


def resample_channel(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample one channel, ``(samples,)`` float32, with libsoxr (VHQ), to float32.

    libsoxr's VHQ works in double precision whatever the sample format, so the values are
    bit-identical to those of a float64 call rounded to float32. At equal rates the input
    itself is returned.
    """
    _check_rates(from_rate, to_rate)
    if from_rate == to_rate:
        return samples
    return soxr.resample(samples, from_rate, to_rate, quality="VHQ")


def _check_rates(from_rate: int, to_rate: int) -> None:
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")


def mono_float64(audio: torch.Tensor) -> np.ndarray:
    """The channel mean of ``(channels, samples)`` audio as a float64 numpy array.

    The values of ``audio.double().mean(dim=0)`` (float32 samples sum exactly in float64)
    without a float64 copy of every channel, and without torch's thread pool.
    """
    return audio.detach().cpu().numpy().mean(axis=0, dtype=np.float64)


def convert_channels(audio: torch.Tensor, channels: int) -> tuple[torch.Tensor, str | None]:
    """Downmix by averaging, or upmix mono by copying; returns the audio and a note."""
    have = audio.shape[0]
    if have == channels:
        return audio, None
    if channels == 1:
        return audio.mean(dim=0, keepdim=True), f"downmixed {have} channels to mono (mean)"
    if have == 1:
        return audio.expand(channels, -1).clone(), f"upmixed mono to {channels} channels"
    raise AudioError(f"cannot convert {have} channels to {channels}; expected mono or {channels}")


def crops(loaded: LoadedAudio, max_seconds: float | None) -> bool:
    """Whether the audio ``prepare`` makes of ``loaded`` is shorter than its file: read
    cropped already, or cropped by :func:`prepare` to ``max_seconds``."""
    return loaded.cropped or _longer_than(loaded, max_seconds)


def _longer_than(loaded: LoadedAudio, max_seconds: float | None) -> bool:
    # In samples, as the crop is made: a crop read by load_audio is never cropped again.
    return max_seconds is not None and loaded.audio.shape[-1] > round(
        max_seconds * loaded.sample_rate
    )


def prepare(
    loaded: LoadedAudio,
    sample_rate: int,
    channels: int,
    max_seconds: float | None = None,
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """Turn loaded audio into what a codec takes: its rate, its channel count, cropped.

    Returns the audio and every note on how it was changed (loading notes included).
    """
    notes = list(loaded.notes)
    audio = loaded.audio
    if _longer_than(loaded, max_seconds):
        audio = audio[:, : int(round(max_seconds * loaded.sample_rate))]
        notes.append(f"cropped to the first {max_seconds:g} s")
    audio, channel_note = convert_channels(audio, channels)
    if channel_note:
        notes.append(channel_note)
    if loaded.sample_rate != sample_rate:
        audio = resample(audio, loaded.sample_rate, sample_rate)
        notes.append(f"resampled {loaded.sample_rate} -> {sample_rate} Hz ({RESAMPLER})")
    return audio, tuple(notes)
