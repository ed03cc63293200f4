"""The Conformer: its convolution module sees the past only when causal and both sides when
not, rotary embeddings make attention scores depend on the distance between frames alone, and
the blocks keep shapes; bad sizes are refused."""

from __future__ import annotations

import pytest
import torch
from bench.codecs.modules.conformer import (
    Conformer,
    ConformerConfig,
    ConvolutionModule,
    rotary_embedding,
)

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ConformerConfig(dim=16, heads=2, layers=2, feedforward=32, conv_kernel=5)


def frames_changed(config: ConformerConfig, frame: int, frames: int = 20) -> list[int]:
    """The output frames of a random convolution module that change when input ``frame``
    does."""
    torch.manual_seed(0)
    module = ConvolutionModule(config).eval()
    x = torch.randn(1, frames, config.dim)
    nudged = x.clone()
    # Not a constant: the module's LayerNorm would take it away.
    nudged[0, frame] += torch.randn(config.dim)
    with torch.no_grad():
        difference = (module(nudged) - module(x)).abs().amax(dim=-1)[0]
    return [index for index in range(frames) if difference[index] > 1e-6]


def test_the_causal_convolution_sees_only_the_past():
    causal = ConformerConfig(**{**TINY.to_json(), "causal": True})
    # Frame 10 reaches itself and the kernel's 4 next frames, none before it.
    assert frames_changed(causal, 10) == [10, 11, 12, 13, 14]


def test_the_centred_convolution_sees_both_sides():
    assert frames_changed(TINY, 10) == [8, 9, 10, 11, 12]


def test_rotary_attention_scores_depend_only_on_the_distance_between_frames():
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 12, 8, generator=generator)
    key = torch.randn(2, 12, 8, generator=generator)
    positions = torch.arange(12)

    def scores(shift: int) -> torch.Tensor:
        rotated_query = rotary_embedding(query, positions + shift, 10_000.0)
        rotated_key = rotary_embedding(key, positions + shift, 10_000.0)
        return rotated_query @ rotated_key.transpose(-1, -2)

    for shift in (1, 37, 1000):
        torch.testing.assert_close(scores(shift), scores(0), atol=1e-4, rtol=1e-4)
    # The positions matter: the same query and key score differently at other distances.
    same = query[:, :1].expand(2, 12, 8)
    rotated = rotary_embedding(same, positions, 10_000.0)
    by_distance = (rotated[:, :1] * rotated).sum(-1)
    assert (by_distance[:, 1:] - by_distance[:, :1]).abs().amax() > 1e-2
    # A rotation keeps lengths.
    torch.testing.assert_close(rotated.norm(dim=-1), same.norm(dim=-1))


def test_the_conformer_keeps_the_shape_and_mixes_every_frame():
    torch.manual_seed(0)
    model = Conformer(TINY).eval()
    x = torch.randn(2, 30, TINY.dim)
    nudged = x.clone()
    nudged[:, 0] += torch.randn(TINY.dim)
    with torch.no_grad():
        out, out_nudged = model(x), model(nudged)
    assert out.shape == x.shape
    # Bidirectional attention: the first frame reaches the last one.
    assert (out_nudged[:, -1] - out[:, -1]).abs().amax() > 1e-4


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({"dim": 18, "heads": 4}, "dim must split into 4 heads of an even width, got dim=18"),
        ({"conv_kernel": 4}, "odd unless causal .*got 4"),
        ({"conv_kernel": 0, "causal": True}, "expected a positive kernel"),
    ],
)
def test_bad_sizes_are_refused(sizes, message):
    with pytest.raises(ValueError, match=message):
        ConformerConfig(**{**TINY.to_json(), **sizes})
