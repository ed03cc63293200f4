"""What conditions SampleRNN as a codec decoder: the dequantized stream of another codec's
bitstream, EnCodec's (the default) or FlowMAC's mel tokens.

The conditional SampleRNN (as a decoder of a transmitted low-rate stream, after Klejsa et al.,
ICASSP 2019, who decoded a parametric codec's bitstream with one) reads, for each frame of the
encoder codec, the sum of the codebook vectors of the levels sent, ``(frames, dimension)`` at
that codec's frame rate: exactly what the codec's own decoder reads (EnCodec's SEANet decoder;
FlowMAC's mel decoder, before its flow-matching refinement). The stream enters the top tier
(see :meth:`~bench.codecs.samplernn.model.SampleRnn.align_condition`), so the model's
``condition_hop`` is SampleRNN's sample rate over the codec's frame rate (16 kHz / 75 Hz =
213.33 samples with the EnCodec demo).

A :class:`Tokenizer` wraps the encoder codec: the payload is that codec's own, and the
tokenizer reads the stream back from it (or computes it from audio, for training). A
conditional checkpoint (``codec="samplernn"``) holds the model (network ``"model"``) and a
reference to the encoder codec's checkpoint (network ``"tokenizer"``, its ``"codec"`` network,
checked by hash), as SoundStorm's does: the stream means nothing under other weights. Only
unsegmented, unnormalised mono EnCodec models (the 24 kHz code path) are supported: the 48 kHz
model's per-segment scales would need a conditioning of their own.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from typing import ClassVar

import torch
from bench.codecs.base import Encoded, NeuralCodec
from bench.codecs.checkpoint import Checkpoint, CheckpointError, Network, load_checkpoint
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.flowmac.codec import FlowMacCodec
from bench.codecs.samplernn.model import NAME, SampleRnnConfig

from bench.audio import resample

MODEL_NETWORK = "model"
TOKENIZER_NETWORK = "tokenizer"
# The network of the encoder codec's checkpoint that the reference names and checks: the one
# that makes the stream (EnCodec's and FlowMAC's are both called so).
CODEC_NETWORK = "codec"


class Tokenizer(abc.ABC):
    """An encoder codec whose bitstream a conditional SampleRNN decodes: its payload, and the
    dequantized stream ``(batch, frames, dimension)`` read from a payload or computed from
    audio."""

    family: ClassVar[str]

    def __init__(self, codec: NeuralCodec) -> None:
        self.codec = codec

    @property
    @abc.abstractmethod
    def dimension(self) -> int: ...

    @abc.abstractmethod
    def latent_of_payload(self, encoded: Encoded) -> torch.Tensor:
        """The stream ``(1, frames, dimension)`` that ``encoded`` sends."""

    @abc.abstractmethod
    def latent_of_audio(self, audio: torch.Tensor, bitrate: float) -> torch.Tensor:
        """The stream ``(batch, frames, dimension)`` the codec sends at ``bitrate`` for mono
        ``audio`` ``(batch, samples)`` at its sample rate."""

    def encode_latent(self, audio: torch.Tensor, sample_rate: int, bitrate: float) -> torch.Tensor:
        """:meth:`latent_of_audio` of ``audio`` at ``sample_rate`` (resampled to the codec's)."""
        resampled = torch.stack(
            [resample(item[None], sample_rate, self.codec.sample_rate)[0] for item in audio]
        )
        with torch.inference_mode():
            return self.latent_of_audio(resampled, bitrate).clone()


class EncodecTokenizer(Tokenizer):
    """EnCodec's RVQ: the sum of the sent levels' codebook vectors, its SEANet decoder's input."""

    family = "encodec"

    def __init__(self, codec: EncodecCodec) -> None:
        config = codec.config
        if config.channels != 1 or config.segment_seconds is not None or config.normalize:
            raise ValueError(
                "expected an unsegmented, unnormalised mono EnCodec (the 24 kHz code path), got "
                f"{codec.checkpoint_path}: {config.channels} channel(s), segment "
                f"{config.segment_seconds} s, normalize={config.normalize}"
            )
        super().__init__(codec)

    @property
    def dimension(self) -> int:
        return self.codec.config.dimension

    def latent_of_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(batch, n_q, frames)`` -> ``(batch, frames, dimension)``."""
        with torch.inference_mode():
            latent = self.codec.model.quantizer.decode(codes.transpose(0, 1))
        return latent.transpose(1, 2).clone()

    def latent_of_payload(self, encoded: Encoded) -> torch.Tensor:
        return self.latent_of_codes(self.codec.read_segments(encoded)[0].codes)

    def latent_of_audio(self, audio: torch.Tensor, bitrate: float) -> torch.Tensor:
        with torch.inference_mode():
            segments = self.codec.model.encode(audio[:, None], bitrate)
        return self.latent_of_codes(segments[0].codes)


class FlowMacTokenizer(Tokenizer):
    """FlowMAC's mel tokens: the sum of the sent levels' codebook vectors, its mel decoder's
    input (the coarse mel's latent, before the flow-matching refinement)."""

    family = "flowmac"

    @property
    def dimension(self) -> int:
        return self.codec.config.width

    def latent_of_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(n_q, frames)`` of one item -> ``(1, frames, dimension)``."""
        with torch.inference_mode():
            latent = self.codec.model.quantizer.decode(codes[:, None])
        return latent.transpose(1, 2).clone()

    def latent_of_payload(self, encoded: Encoded) -> torch.Tensor:
        return self.latent_of_codes(self.codec.read_codes(encoded))

    def latent_of_audio(self, audio: torch.Tensor, bitrate: float) -> torch.Tensor:
        model = self.codec.model
        n_q = model.n_q_for(bitrate)
        with torch.inference_mode():
            return torch.cat(
                [
                    self.latent_of_codes(model.encode(model.normalised_mel(item[None]), n_q))
                    for item in audio
                ]
            )


TOKENIZERS: dict[str, tuple[type[NeuralCodec], type[Tokenizer]]] = {
    "encodec": (EncodecCodec, EncodecTokenizer),
    "flowmac": (FlowMacCodec, FlowMacTokenizer),
}


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """The encoder codec of the checkpoint at ``path``, EnCodec or FlowMAC, as a tokenizer.

    Raises:
        CheckpointError: the file is missing or holds no such codec.
        ValueError: an EnCodec whose stream cannot condition the model.
    """
    family = load_checkpoint(path).codec
    if family not in TOKENIZERS:
        raise CheckpointError(
            f"{path}: expected an EnCodec or FlowMAC checkpoint to condition on, got a "
            f"{family!r} one"
        )
    codec_class, tokenizer_class = TOKENIZERS[family]
    return tokenizer_class(codec_class(path))


def conditioned_config(config: SampleRnnConfig, tokenizer: Tokenizer) -> SampleRnnConfig:
    """``config`` conditioned on ``tokenizer``'s stream: its dimension, one frame per
    ``sample_rate / frame_rate`` samples."""
    return dataclasses.replace(
        config,
        condition_dim=tokenizer.dimension,
        condition_hop=config.sample_rate / tokenizer.codec.frame_rate,
    )


def samplernn_checkpoint(
    config: SampleRnnConfig,
    state_dict: dict,
    tokenizer_checkpoint: str | os.PathLike | None,
    step: int = 0,
    metadata: dict | None = None,
) -> Checkpoint:
    """A SampleRNN checkpoint; a conditional one references the encoder codec's checkpoint at
    ``tokenizer_checkpoint`` (relative to where it is saved)."""
    networks = {MODEL_NETWORK: Network(config.to_json(), state_dict)}
    if tokenizer_checkpoint is not None:
        networks[TOKENIZER_NETWORK] = Checkpoint.reference(tokenizer_checkpoint, CODEC_NETWORK)
    return Checkpoint(NAME, networks, step=step, metadata=metadata or {})
