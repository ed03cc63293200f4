"""The EnCodec model: streaming decode equals offline decode for the causal configurations,
and is refused where the decoder needs the whole segment."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from bench.codecs.encodec.model import CONFIGS, EncodecModel

TINY = CONFIGS["tiny"]

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny() -> EncodecModel:
    """The tiny model at random init with seeded codebooks (zeros would decode to a constant)."""
    torch.manual_seed(0)
    model = EncodecModel(TINY).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in model.quantizer.vq.layers:
            embed = layer._codebook.embed
            embed.copy_(torch.randn(embed.shape, generator=generator))
    return model


@pytest.mark.parametrize("chunk_frames", [1, 3, 7])
def test_streaming_decode_equals_offline(tiny, chunk_frames):
    generator = torch.Generator().manual_seed(chunk_frames)
    codes = torch.randint(TINY.bins, (2, 4, 23), generator=generator)
    with torch.no_grad():
        offline = tiny.decoder(tiny.quantizer.decode(codes.transpose(0, 1)))
    chunks = list(tiny.decode_streaming(codes, chunk_frames))
    # One chunk per group of frames, then the flush.
    assert len(chunks) == -(-23 // chunk_frames) + 1
    streamed = torch.cat(chunks, dim=-1)
    assert streamed.shape == offline.shape == (2, 1, 23 * TINY.hop_length)
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)
    # The decoder is offline again afterwards.
    assert not tiny.decoder.is_streaming


def test_streaming_decode_matches_the_model_decode(tiny):
    audio = 0.1 * torch.randn(1, 1, 5000, generator=torch.Generator().manual_seed(4))
    (segment,) = tiny.encode(audio, 3.0)
    streamed = torch.cat(list(tiny.decode_streaming(segment.codes, 5)), dim=-1)
    offline = tiny.decode([segment], 5000)
    torch.testing.assert_close(streamed[..., :5000], offline, atol=1e-5, rtol=0)


def test_streaming_decode_is_refused_where_it_cannot_stream(tiny):
    codes = torch.zeros(1, 2, 5, dtype=torch.long)
    non_causal = EncodecModel(
        dataclasses.replace(TINY, name="tiny-noncausal", causal=False, norm="time_group_norm")
    )
    with pytest.raises(ValueError, match="causal=False"):
        next(non_causal.decode_streaming(codes, 2))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="chunk_frames"):
            next(tiny.decode_streaming(codes, bad))
    with pytest.raises(ValueError, match="batch, n_q, frames"):
        next(tiny.decode_streaming(codes[0], 2))
