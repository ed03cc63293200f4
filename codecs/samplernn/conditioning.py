"""What conditions SampleRNN as a codec decoder: the dequantized latent of an EnCodec bitstream.

The conditional SampleRNN (as a decoder of a transmitted low-rate stream, after Klejsa et al.,
ICASSP 2019, who decoded a parametric codec's bitstream with one) reads, for each EnCodec
frame, the sum of the codebook vectors of the levels sent, ``(frames, dimension)`` at
EnCodec's frame rate: exactly what EnCodec's own decoder reads. The stream enters the top
tier (see :meth:`~bench.codecs.samplernn.model.SampleRnn.align_condition`), so the model's
``condition_hop`` is SampleRNN's sample rate over EnCodec's frame rate (16 kHz / 75 Hz =
213.33 samples with the EnCodec demo).

A conditional checkpoint (``codec="samplernn"``) holds the model (network ``"model"``) and a
reference to the EnCodec checkpoint whose bitstream it decodes (network ``"tokenizer"``,
checked by hash), as SoundStorm's does: the latent means nothing under other EnCodec weights.
Only unsegmented, unnormalised mono EnCodec models (the 24 kHz code path) are supported: the
48 kHz model's per-segment scales would need a conditioning of their own.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from bench.codecs.checkpoint import Checkpoint, Network
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.samplernn.model import NAME, SampleRnnConfig

from bench.audio import resample

MODEL_NETWORK = "model"
TOKENIZER_NETWORK = "tokenizer"


def check_tokenizer(tokenizer: EncodecCodec) -> None:
    """Refuse (``ValueError``) an EnCodec whose latent cannot condition the model."""
    config = tokenizer.config
    if config.channels != 1 or config.segment_seconds is not None or config.normalize:
        raise ValueError(
            "expected an unsegmented, unnormalised mono EnCodec (the 24 kHz code path), got "
            f"{tokenizer.checkpoint_path}: {config.channels} channel(s), segment "
            f"{config.segment_seconds} s, normalize={config.normalize}"
        )


def load_tokenizer(path: str | os.PathLike) -> EncodecCodec:
    """The EnCodec checkpoint at ``path``, checked to be one whose latent can condition."""
    tokenizer = EncodecCodec(path)
    check_tokenizer(tokenizer)
    return tokenizer


def conditioned_config(config: SampleRnnConfig, tokenizer: EncodecCodec) -> SampleRnnConfig:
    """``config`` conditioned on ``tokenizer``'s latent: its dimension, one frame per
    ``sample_rate / frame_rate`` samples."""
    return dataclasses.replace(
        config,
        condition_dim=tokenizer.config.dimension,
        condition_hop=config.sample_rate / tokenizer.frame_rate,
    )


def latent_of_codes(tokenizer: EncodecCodec, codes: torch.Tensor) -> torch.Tensor:
    """Codes ``(batch, n_q, frames)`` -> their dequantized latent ``(batch, frames, dim)``, the
    sum of the ``n_q`` levels' codebook vectors (what EnCodec's decoder reads)."""
    with torch.inference_mode():
        latent = tokenizer.model.quantizer.decode(codes.transpose(0, 1))
    return latent.transpose(1, 2).clone()


def encode_latent(
    tokenizer: EncodecCodec, audio: torch.Tensor, sample_rate: int, bandwidth: float
) -> torch.Tensor:
    """The latent ``(batch, frames, dim)`` that ``tokenizer`` transmits at ``bandwidth`` kbps
    for mono ``audio`` ``(batch, samples)`` at ``sample_rate`` (resampled to its rate)."""
    resampled = torch.stack(
        [resample(item[None], sample_rate, tokenizer.sample_rate)[0] for item in audio]
    )
    with torch.inference_mode():
        segments = tokenizer.model.encode(resampled[:, None], bandwidth)
    return latent_of_codes(tokenizer, segments[0].codes)


def samplernn_checkpoint(
    config: SampleRnnConfig,
    state_dict: dict,
    tokenizer_checkpoint: str | os.PathLike | None,
    step: int = 0,
    metadata: dict | None = None,
) -> Checkpoint:
    """A SampleRNN checkpoint; a conditional one references the EnCodec checkpoint at
    ``tokenizer_checkpoint`` (relative to where it is saved)."""
    networks = {MODEL_NETWORK: Network(config.to_json(), state_dict)}
    if tokenizer_checkpoint is not None:
        networks[TOKENIZER_NETWORK] = Checkpoint.reference(tokenizer_checkpoint, "codec")
    return Checkpoint(NAME, networks, step=step, metadata=metadata or {})
