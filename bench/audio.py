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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

from bench.store import write_atomically

MIN_DURATION_SECONDS = 0.25
RESAMPLER = f"soxr {soxr.__version__} VHQ"
# Samples this close to full scale are counted as clipped; 16-bit full scale is
# 32767/32768 = 0.99997, so anything above 0.999 sat on the rails of some format.
CLIP_LEVEL = 0.999


class AudioError(ValueError):
    """Audio that cannot be evaluated: missing, empty, corrupt, too short or non-finite."""


@dataclass(frozen=True)
class LoadedAudio:
    """Audio as read from a file: ``(channels, samples)`` float32 plus how it was read."""

    audio: torch.Tensor
    sample_rate: int
    subtype: str
    notes: tuple[str, ...] = ()

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
    non_finite = int(np.size(audio) - np.count_nonzero(np.isfinite(audio)))
    if non_finite:
        raise AudioError(f"{non_finite} NaN or infinite sample(s); expected finite audio")
    duration = audio.shape[-1] / sample_rate
    if duration < MIN_DURATION_SECONDS:
        raise AudioError(f"too short: {duration:.3f} s, expected at least {MIN_DURATION_SECONDS} s")
    over_full_scale = int(np.count_nonzero(np.abs(audio) > 1.0))
    if over_full_scale:
        audio = np.clip(audio, -1.0, 1.0)
        notes.append(f"clipped {over_full_scale} sample(s) beyond full scale to [-1, 1]")
    at_full_scale = int(np.count_nonzero(np.abs(audio) >= CLIP_LEVEL))
    if at_full_scale and not over_full_scale:
        notes.append(f"clipping: {at_full_scale} sample(s) at full scale")
    if not np.any(audio):
        notes.append("silent: every sample is zero")
    return audio, notes


def load_audio(path: str | os.PathLike) -> LoadedAudio:
    """Read any format libsndfile reads (WAV 8/16/24/32-bit, float, FLAC, MP3, Ogg).

    Raises :class:`AudioError` naming the problem for a missing, empty, corrupt,
    non-finite or too-short file.
    """
    path = Path(path)
    require_regular_file(path)
    if path.stat().st_size == 0:
        raise AudioError(f"empty file (0 bytes): {path}")
    try:
        with soundfile.SoundFile(path) as handle:
            sample_rate = handle.samplerate
            subtype = handle.subtype
            data = handle.read(dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(f"cannot decode {path.name}: {error}") from error
    samples, notes = check_samples(np.ascontiguousarray(data.T), sample_rate)
    return LoadedAudio(torch.from_numpy(samples), sample_rate, subtype, tuple(notes))


def save_audio(path: str | os.PathLike, audio: torch.Tensor, sample_rate: int) -> None:
    """Write ``(channels, samples)`` audio; the format follows the file extension."""
    soundfile.write(str(path), audio.detach().cpu().numpy().T, sample_rate)


def save_listening_copy(path: str | os.PathLike, audio: torch.Tensor, sample_rate: int) -> bool:
    """Write ``(channels, samples)`` audio as 24-bit FLAC for people to listen to.

    Browsers play FLAC, and it is a third of the size of float WAV. FLAC holds integers,
    so samples beyond full scale are clipped; returns whether any were. The file appears
    whole or not at all (written to a temporary name, then renamed).
    """
    samples = audio.detach().cpu().numpy().T
    clipped = bool(np.abs(samples).max(initial=0.0) > 1.0)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(samples, -1.0, 1.0), sample_rate, "PCM_24", format="FLAC")
    write_atomically(Path(path), buffer.getvalue())
    return clipped


def resample(audio: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Resample ``(channels, samples)`` audio with libsoxr (VHQ); a no-op at equal rates."""
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate:
        return audio
    resampled = soxr.resample(
        audio.detach().cpu().numpy().T.astype(np.float64), from_rate, to_rate, quality="VHQ"
    )
    return torch.from_numpy(np.ascontiguousarray(resampled.T, dtype=np.float32))


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


def crops(duration_seconds: float, max_seconds: float | None) -> bool:
    """Whether :func:`prepare` crops audio of ``duration_seconds`` to ``max_seconds``."""
    return max_seconds is not None and duration_seconds > max_seconds


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
    if crops(loaded.duration_seconds, max_seconds):
        audio = audio[:, : int(round(max_seconds * loaded.sample_rate))]
        notes.append(f"cropped to the first {max_seconds:g} s")
    audio, channel_note = convert_channels(audio, channels)
    if channel_note:
        notes.append(channel_note)
    if loaded.sample_rate != sample_rate:
        audio = resample(audio, loaded.sample_rate, sample_rate)
        notes.append(f"resampled {loaded.sample_rate} -> {sample_rate} Hz ({RESAMPLER})")
    return audio, tuple(notes)
