"""The EnCodec model (Défossez et al. 2022, "High Fidelity Neural Audio Compression").

SEANet encoder -> residual vector quantizer -> SEANet decoder, in the paper's three
configurations: 24 kHz mono causal with weight norm (1.5-24 kbps, 75 Hz), 48 kHz stereo
non-causal with time group norm, 1 s segments overlapped by 1 % and a per-segment RMS
scale (3-24 kbps, 150 Hz), and a tiny configuration for tests and the CPU demo model
that takes the same code path with smaller sizes. Module names match the official
implementation, so its checkpoints load through :func:`official_state_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from bench.codecs.modules.conv import official_key_mapping
from bench.codecs.modules.rvq import ResidualVectorQuantizer, bandwidth_to_n_q
from bench.codecs.modules.seanet import SEANetDecoder, SEANetEncoder
from torch import nn

# The RMS scale of a segment travels as one float32 (4 bytes) beside its codes.
SCALE_EPSILON = 1e-8


@dataclass(frozen=True)
class EncodecConfig:
    """Everything that determines an EnCodec model's architecture."""

    name: str
    sample_rate: int
    channels: int
    causal: bool
    norm: str
    bandwidths: tuple[float, ...]
    n_filters: int = 32
    ratios: tuple[int, ...] = (8, 5, 4, 2)
    dimension: int = 128
    n_residual_layers: int = 1
    lstm_layers: int = 2
    bins: int = 1024
    # Codes whose EMA usage per batch falls below this are re-seeded from the batch. The
    # paper's 2 assumes 64 x 1 s batches (4800 vectors for 1024 codes); smaller batches
    # need a proportionally smaller threshold or every code counts as dead.
    dead_code_threshold: float = 2.0
    pad_mode: str = "reflect"
    # 48 kHz: segments of ``segment_seconds`` overlapping by ``overlap``, each normalised.
    segment_seconds: float | None = None
    overlap: float = 0.01
    normalize: bool = False

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> int:
        # Integer frame rate as the official code: ceil(sample_rate / hop).
        return math.ceil(self.sample_rate / self.hop_length)

    @property
    def n_q(self) -> int:
        return bandwidth_to_n_q(max(self.bandwidths), self.frame_rate, self.bins)

    @property
    def quantizer(self) -> str:
        """The quantizer type: a residual VQ (HiFi-Codec's configurations may say "grvq")."""
        return "rvq"

    @property
    def quantizers(self) -> tuple[str, ...]:
        """The quantizer types :meth:`with_quantizer` can switch this configuration to."""
        return ("rvq",)

    def with_quantizer(self, quantizer: str) -> EncodecConfig:
        """This configuration quantized by ``quantizer``, one of :attr:`quantizers` (the
        quantizer ablation)."""
        if quantizer not in self.quantizers:
            raise ValueError(
                f"expected a quantizer among {', '.join(self.quantizers)}, got {quantizer!r}"
            )
        return self

    @property
    def quantizer_groups(self) -> int:
        """Channel groups the latent is quantized in; every group spends as many codebooks."""
        return 1

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> EncodecConfig:
        # Checkpoints of format 1 carry an `extra` field that was never read (since removed).
        data = {name: value for name, value in data.items() if name != "extra"}
        return cls(
            **{
                **data,
                "bandwidths": tuple(data["bandwidths"]),
                "ratios": tuple(data["ratios"]),
            }
        )


CONFIGS = {
    "24khz": EncodecConfig(
        name="24khz",
        sample_rate=24000,
        channels=1,
        causal=True,
        norm="weight_norm",
        bandwidths=(1.5, 3.0, 6.0, 12.0, 24.0),
    ),
    "48khz": EncodecConfig(
        name="48khz",
        sample_rate=48000,
        channels=2,
        causal=False,
        norm="time_group_norm",
        bandwidths=(3.0, 6.0, 12.0, 24.0),
        segment_seconds=1.0,
        normalize=True,
    ),
    # The 24 kHz code path at a size a 2-core CPU trains in an hour: 4x fewer filters and
    # a 32-d latent; still 75 Hz, 1024-word codebooks and the paper's bitrates up to 12.
    # Trained with batches of 16 x 1 s (1200 vectors per batch, not 4800).
    "tiny": EncodecConfig(
        name="tiny",
        sample_rate=24000,
        channels=1,
        causal=True,
        norm="weight_norm",
        bandwidths=(1.5, 3.0, 6.0, 12.0),
        n_filters=8,
        dimension=32,
        dead_code_threshold=0.25,
    ),
}


@dataclass(frozen=True)
class Segment:
    """The codes of one segment ``(batch, n_q, frames)`` and its RMS scale ``(batch,)``."""

    codes: torch.Tensor
    scale: torch.Tensor | None


@dataclass(frozen=True)
class ModelOutput:
    """A training forward pass: decoded audio, codes and the quantizer's commitment loss."""

    audio: torch.Tensor
    codes: torch.Tensor
    commitment_loss: torch.Tensor


class EncodecModel(nn.Module):
    """Encoder, quantizer and decoder of one :class:`EncodecConfig`."""

    # How errors name the model; HiFi-Codec, which shares this code path, names itself.
    display_name = "EnCodec"

    def __init__(self, config: EncodecConfig) -> None:
        super().__init__()
        self.config = config
        common = dict(
            channels=config.channels,
            dimension=config.dimension,
            n_filters=config.n_filters,
            n_residual_layers=config.n_residual_layers,
            ratios=list(config.ratios),
            norm=config.norm,
            causal=config.causal,
            pad_mode=config.pad_mode,
            lstm=config.lstm_layers,
        )
        self.encoder = SEANetEncoder(**common)
        self.quantizer = self.build_quantizer(config)
        self.decoder = SEANetDecoder(**common)

    def build_quantizer(self, config: EncodecConfig) -> nn.Module:
        """The residual vector quantizer of ``config``, ``config.n_q`` codebooks deep."""
        return ResidualVectorQuantizer(
            dimension=config.dimension,
            n_q=config.n_q,
            bins=config.bins,
            threshold_ema_dead_code=config.dead_code_threshold,
        )

    def quantizer_levels(self, n_q: int) -> int:
        """What the quantizer's ``n_q`` argument is for ``n_q`` codebooks in all: the same
        number for a residual quantizer (a group-residual one takes levels per group)."""
        return n_q

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> int:
        return self.config.frame_rate

    def n_q_for(self, bandwidth: float) -> int:
        """Codebooks for ``bandwidth`` kbps; ``ValueError`` lists the supported ones."""
        if bandwidth not in self.config.bandwidths:
            raise ValueError(
                f"{self.display_name} {self.config.name} supports bandwidths "
                f"{', '.join(f'{value:g}' for value in self.config.bandwidths)} kbps, "
                f"got {bandwidth:g}"
            )
        return bandwidth_to_n_q(bandwidth, self.frame_rate, self.config.bins)

    def forward(self, audio: torch.Tensor, n_q: int | None) -> ModelOutput:
        """Training pass over ``(batch, channels, samples)`` with ``n_q`` codebooks.

        ``n_q=None`` bypasses the quantizer: the decoder gets the continuous latent, the codes
        are empty and the commitment loss is zero (the trainer's quantizer warm-up).
        Training segments are short, so the 48 kHz segmentation does not apply here; the
        per-example RMS normalisation does, as the official training does.
        """
        scale = self._scale(audio)
        normalised = audio / scale.view(-1, 1, 1) if scale is not None else audio
        latent = self.encoder(normalised)
        if n_q is None:
            codes = torch.zeros(audio.shape[0], 0, latent.shape[-1], dtype=torch.long)
            quantized, commitment_loss = latent, latent.new_zeros(())
        else:
            result = self.quantizer(latent, self.quantizer_levels(n_q))
            codes = result.codes.transpose(0, 1)
            quantized, commitment_loss = result.quantized, result.commitment_loss
        decoded = self.decoder(quantized)[..., : audio.shape[-1]]
        if scale is not None:
            decoded = decoded * scale.view(-1, 1, 1)
        return ModelOutput(decoded, codes, commitment_loss)

    def _scale(self, audio: torch.Tensor) -> torch.Tensor | None:
        if not self.config.normalize:
            return None
        mono = audio.mean(dim=1)
        return mono.pow(2).mean(dim=-1).sqrt() + SCALE_EPSILON

    @property
    def segment_length(self) -> int | None:
        if self.config.segment_seconds is None:
            return None
        return int(self.config.segment_seconds * self.sample_rate)

    @property
    def segment_stride(self) -> int | None:
        length = self.segment_length
        return None if length is None else max(1, int((1 - self.config.overlap) * length))

    @torch.no_grad()
    def encode(self, audio: torch.Tensor, bandwidth: float) -> list[Segment]:
        """Codes of ``(batch, channels, samples)`` audio, one :class:`Segment` per segment."""
        if audio.dim() != 3 or audio.shape[1] != self.config.channels:
            raise ValueError(
                f"expected audio shaped (batch, {self.config.channels}, samples), "
                f"got {tuple(audio.shape)}"
            )
        n_q = self.n_q_for(bandwidth)
        length = audio.shape[-1]
        segment = self.segment_length or length
        stride = self.segment_stride or length
        segments = []
        for offset in range(0, length, stride):
            chunk = audio[..., offset : offset + segment]
            scale = self._scale(chunk)
            if scale is not None:
                chunk = chunk / scale.view(-1, 1, 1)
            codes = self.quantizer.encode(self.encoder(chunk), self.quantizer_levels(n_q))
            segments.append(Segment(codes.transpose(0, 1), scale))
        return segments

    @torch.no_grad()
    def decode(self, segments: list[Segment], length: int) -> torch.Tensor:
        """Audio ``(batch, channels, length)`` from the segments of :meth:`encode`."""
        decoded = []
        for segment in segments:
            audio = self.decoder(self.quantizer.decode(segment.codes.transpose(0, 1)))
            if segment.scale is not None:
                audio = audio * segment.scale.view(-1, 1, 1)
            decoded.append(audio)
        if self.segment_stride is None:
            return decoded[0][..., :length]
        return overlap_add(decoded, self.segment_stride)[..., :length]

    @torch.no_grad()
    def decode_streaming(self, codes: torch.Tensor, chunk_frames: int) -> Iterator[torch.Tensor]:
        """Decode ``codes`` ``(batch, n_q, frames)`` ``chunk_frames`` frames at a time.

        Yields audio chunks ``(batch, channels, samples)`` as soon as the causal decoder has
        them, the last one from its flush; concatenated they equal the offline decoder's
        output, ``frames * hop_length`` samples (trimming to a signal length is the caller's).
        Only a causal, unsegmented, unnormalised configuration (24 kHz, tiny) can stream: the
        48 kHz model's group norm and segment scales need the whole segment first.
        """
        config = self.config
        if not config.causal or config.segment_seconds is not None or config.normalize:
            raise ValueError(
                f"decode_streaming needs a causal configuration without segments or "
                f"normalisation; {self.display_name} {config.name} has causal={config.causal}, "
                f"segment_seconds={config.segment_seconds}, normalize={config.normalize}"
            )
        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
            raise ValueError(f"chunk_frames must be a positive int, got {chunk_frames!r}")
        if codes.dim() != 3:
            raise ValueError(
                f"expected codes shaped (batch, n_q, frames), got shape {tuple(codes.shape)}"
            )
        with self.decoder.streaming():
            for start in range(0, codes.shape[-1], chunk_frames):
                chunk = codes[..., start : start + chunk_frames].transpose(0, 1)
                yield self.decoder(self.quantizer.decode(chunk))
            yield self.decoder.flush()


def overlap_add(frames: list[torch.Tensor], stride: int) -> torch.Tensor:
    """Sum segments placed ``stride`` apart, cross-fading where they overlap.

    Each segment is weighted by a triangle peaking at its centre and the sum is divided by
    the summed weights, so a position covered once is unchanged and two overlapping
    segments fade linearly from one to the other (the weighting EnCodec uses at 48 kHz).
    """
    length = frames[0].shape[-1]
    positions = torch.linspace(0, 1, length + 2, dtype=frames[0].dtype)[1:-1]
    weight = 0.5 - (positions - 0.5).abs()
    total = stride * (len(frames) - 1) + frames[-1].shape[-1]
    out = frames[0].new_zeros(*frames[0].shape[:-1], total)
    weights = frames[0].new_zeros(total)
    for index, frame in enumerate(frames):
        start, size = index * stride, frame.shape[-1]
        out[..., start : start + size] += weight[:size] * frame
        weights[start : start + size] += weight[:size]
    return out / weights


def official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official ``encodec`` checkpoint's state dict under our key names.

    Module names are the official ones; only weight norm differs (the parametrization API,
    whose keys are ``parametrizations.weight.original0/1`` instead of ``weight_g/_v``).
    """
    return official_key_mapping(state_dict)
