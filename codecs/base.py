"""The codec interface every model and baseline implements, and its bitstream type.

Follows the project's ARCHITECTURE.md: ``encode(audio, bitrate) -> Encoded`` and
``decode(encoded, nfe, seed) -> audio``, with audio shaped ``(channels, samples)``,
float32 in [-1, 1]. Input checks live here once, so every codec rejects bad input the
same way, with a ``ValueError`` naming what was expected and what came.
"""

from __future__ import annotations

import abc
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True, eq=False)
class Encoded:
    """A real bitstream plus what is needed to account for it.

    ``payload`` holds every byte a receiver needs to decode the signal (headers and
    framing included), so ``actual_kbps`` is an honest rate. The exact sample count, used
    to trim the decoder's padding, travels beside it as ``num_samples``, as a container
    format's length field would. ``codes`` is an optional view of the
    discrete tokens, ``(num_codebooks, frames)``, for token models and analysis; it is
    never needed to decode. ``codebook_size`` is how many codes each level of ``codes``
    draws from (``None``: not stated), for token statistics such as codebook usage; like
    ``codes`` it describes the payload and is no part of it.
    """

    payload: bytes
    num_samples: int
    sample_rate: int
    nominal_kbps: float
    codes: torch.Tensor | None = field(default=None, repr=False)
    codebook_size: int | None = None

    @property
    def duration_seconds(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def actual_kbps(self) -> float:
        """Bitrate measured from ``len(payload)`` over the audio duration, in kbps."""
        if self.num_samples <= 0:
            raise ValueError(f"cannot compute a bitrate for {self.num_samples} samples")
        return len(self.payload) * 8 / self.duration_seconds / 1000.0


# How far a requested bitrate may lie from a listed one and still mean it (floating-point
# noise in typed or computed values, far below any real difference between bitrates).
BITRATE_TOLERANCE_KBPS = 1e-6


def _format_choices(values: tuple) -> str:
    return ", ".join(f"{value:g}" if isinstance(value, float) else str(value) for value in values)


def _match_bitrate(name: str, bitrates: tuple[float, ...], bitrate: float) -> float:
    """The listed bitrate that ``bitrate`` means, within a small tolerance; see
    :meth:`Codec.check_bitrate`."""
    bitrate = float(bitrate)
    for supported in bitrates:
        if abs(bitrate - supported) <= BITRATE_TOLERANCE_KBPS:
            return float(supported)
    # repr, not :g, which would print 6.00001 as 6 beside a supported 6.
    given = repr(bitrate).removesuffix(".0")
    raise ValueError(
        f"codec '{name}' does not support {given} kbps; "
        f"supported bitrates (kbps): {_format_choices(bitrates)}"
    )


def _match_nfe(name: str, nfe_options: tuple[int, ...] | None, nfe: int | None) -> int | None:
    """``nfe`` if the decoder takes it; see :meth:`Codec.check_nfe`."""
    if nfe is None:
        return None
    if nfe_options is None:
        raise ValueError(
            f"codec '{name}' is a one-shot decoder and takes no NFE; got nfe={nfe}. Pass nfe=None."
        )
    if int(nfe) not in nfe_options:
        raise ValueError(
            f"codec '{name}' does not support nfe={nfe}; supported: {_format_choices(nfe_options)}"
        )
    return int(nfe)


@dataclass(frozen=True)
class CodecInfo:
    """What a harness knows of a codec before running it: enough to plan a sweep, key its
    cache and describe it in a run's provenance, read without building its networks (see
    :meth:`Codec.info`)."""

    name: str
    bitrates: tuple[float, ...]
    nfe_options: tuple[int, ...] | None
    checkpoint_hash: str
    # What Codec.describe() gives: the codec's identity and settings.
    description: dict = field(default_factory=dict)

    @classmethod
    def of(cls, codec: Codec) -> CodecInfo:
        """The info of a codec object (built, or a shell holding only its configuration)."""
        return cls(
            name=codec.name,
            bitrates=tuple(float(bitrate) for bitrate in codec.bitrates),
            nfe_options=tuple(codec.nfe_options) if codec.nfe_options else None,
            checkpoint_hash=codec.checkpoint_hash,
            description=codec.describe(),
        )

    def check_bitrate(self, bitrate: float) -> float:
        return _match_bitrate(self.name, self.bitrates, bitrate)

    def check_nfe(self, nfe: int | None) -> int | None:
        return _match_nfe(self.name, self.nfe_options, nfe)


class Codec(abc.ABC):
    """Base class of every codec: validates input, then calls ``_encode`` / ``_decode``.

    Subclasses set the class attributes below (or properties of the same names) and
    implement ``_encode`` and ``_decode``. ``decode`` guarantees the output has exactly
    ``encoded.num_samples`` samples.
    """

    name: str
    sample_rate: int
    channels: int
    bitrates: tuple[float, ...]
    frame_rate: float
    num_codebooks: int | None = None
    codebook_size: int | None = None
    nfe_options: tuple[int, ...] | None = None
    """Allowed NFE counts for iterative decoders; ``None`` for one-shot decoders."""

    @classmethod
    def info(cls, **options: Any) -> CodecInfo:
        """What a harness needs to know of the codec built with ``options`` (its bitrates,
        NFE options, checkpoint hash and description), without building its networks.

        This default builds the codec, which is right for codecs that load no weights (the
        classic ones build in microseconds); a codec with weights overrides it to read only
        its checkpoint's configuration and hash.
        """
        return CodecInfo.of(cls(**options))

    @property
    def checkpoint_hash(self) -> str:
        """Identifies the weights (or, for classic codecs, the backend build) for caching.

        The default hashes :meth:`describe`; codecs with weights override it with the
        checkpoint's own hash.
        """
        text = repr(sorted(self.describe().items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> dict:
        """The codec's identity and settings, recorded in every run's provenance."""
        return {
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "bitrates": list(self.bitrates),
            "frame_rate": self.frame_rate,
            "num_codebooks": self.num_codebooks,
            "codebook_size": self.codebook_size,
            "nfe_options": list(self.nfe_options) if self.nfe_options else None,
            "backend_versions": self.backend_versions(),
        }

    def backend_versions(self) -> dict[str, str]:
        """Versions of the libraries that produce this codec's bytes."""
        return {"torch": torch.__version__}

    def check_bitrate(self, bitrate: float) -> float:
        """The codec's own listed bitrate that ``bitrate`` means, within a small tolerance.

        A bitrate typed or computed as 6.0000001 or 0.1 * 60 means the listed 6; the listed
        value is returned so that rows and cache keys carry one value per bitrate.
        """
        return _match_bitrate(self.name, self.bitrates, bitrate)

    def check_nfe(self, nfe: int | None) -> int | None:
        return _match_nfe(self.name, self.nfe_options, nfe)

    def check_audio(self, audio: torch.Tensor) -> torch.Tensor:
        if not isinstance(audio, torch.Tensor):
            raise TypeError(f"expected audio as a torch.Tensor, got {type(audio).__name__}")
        if not audio.is_floating_point():
            # Integer PCM cast as it is would be thousands of times full scale; a codec cannot
            # know its scale, so the caller converts (bench.audio loads float32).
            raise ValueError(f"expected floating-point audio in [-1, 1], got {audio.dtype}")
        if audio.dim() != 2:
            raise ValueError(
                f"expected audio shaped (channels, samples), got shape {tuple(audio.shape)}"
            )
        if audio.shape[0] != self.channels:
            raise ValueError(
                f"codec '{self.name}' expects {self.channels} channel(s), got {audio.shape[0]}"
            )
        if audio.shape[1] == 0:
            raise ValueError("expected at least one sample, got an empty signal")
        # aminmax meets every NaN (it propagates) and both infinities (they are the ends)
        # without a temporary the size of the signal: isfinite().all() peaked at 7 bytes a
        # sample above the signal, 200 MB for ten minutes at 48 kHz.
        if not all(map(math.isfinite, torch.aminmax(audio))):
            raise ValueError("audio contains NaN or infinite samples")
        return audio.to(torch.float32)

    def encode(self, audio: torch.Tensor, bitrate: float) -> Encoded:
        """Encode ``audio`` ``(channels, samples)`` at ``sample_rate`` to a bitstream."""
        bitrate = self.check_bitrate(bitrate)
        audio = self.check_audio(audio)
        return self._encode(audio, bitrate)

    def decode(
        self, encoded: Encoded, nfe: int | None = None, seed: int | None = None
    ) -> torch.Tensor:
        """Decode to ``(channels, encoded.num_samples)`` audio at ``sample_rate``."""
        if encoded.sample_rate != self.sample_rate:
            raise ValueError(
                f"codec '{self.name}' decodes {self.sample_rate} Hz bitstreams, "
                f"got one at {encoded.sample_rate} Hz"
            )
        nfe = self.check_nfe(nfe)
        audio = self._decode(encoded, nfe, seed)
        if audio.shape != (self.channels, encoded.num_samples):
            # An internal invariant: every codec must trim or pad to the input length.
            raise AssertionError(
                f"codec '{self.name}' returned shape {tuple(audio.shape)}, "
                f"expected {(self.channels, encoded.num_samples)}"
            )
        return audio

    @abc.abstractmethod
    def _encode(self, audio: torch.Tensor, bitrate: float) -> Encoded: ...

    @abc.abstractmethod
    def _decode(self, encoded: Encoded, nfe: int | None, seed: int | None) -> torch.Tensor: ...


class NeuralCodec(Codec):
    """A codec that runs on a checkpoint: its ``describe()`` adds the model configuration and
    the checkpoint (path, kind, hash and the note shown beside its results).

    Subclasses set ``config`` (with ``name`` and ``to_json()``), ``checkpoint_path``,
    ``checkpoint_kind`` (``"demo"``, ``"user"`` or ``"official"``) and ``model_note``.
    """

    config: Any
    checkpoint_path: Path | str
    checkpoint_kind: str
    model_note: str

    def describe(self) -> dict:
        return {
            **super().describe(),
            "config": self.config.name,
            "model_config": self.config.to_json(),
            "checkpoint": str(self.checkpoint_path),
            "checkpoint_kind": self.checkpoint_kind,
            "checkpoint_hash": self.checkpoint_hash,
            "model_note": self.model_note,
        }


def fit_length(audio: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Trim or zero-pad ``(channels, samples)`` audio to exactly ``num_samples``."""
    if audio.shape[-1] >= num_samples:
        return audio[..., :num_samples]
    return torch.nn.functional.pad(audio, (0, num_samples - audio.shape[-1]))
