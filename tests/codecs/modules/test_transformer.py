"""The shared streaming transformer: streaming equals offline, the causal window, the official
parameter names, and refused configurations. Its use as EnCodec's entropy LM, against the
official LMModel, is in tests/codecs/encodec/test_entropy.py."""

from __future__ import annotations

import pytest
import torch
from bench.codecs.modules.transformer import StreamingTransformer

# These tensors are tiny: extra threads only contend (badly on a busy CI machine).
pytestmark = pytest.mark.usefixtures("single_thread")

PAST_CONTEXT = 6
NUM_LAYERS = 2


def _transformer(seed: int = 0) -> StreamingTransformer:
    """Toy sizes, and a window shorter than the test sequences."""
    torch.manual_seed(seed)
    return StreamingTransformer(
        dim=32,
        num_heads=4,
        num_layers=NUM_LAYERS,
        hidden_scale=4.0,
        past_context=PAST_CONTEXT,
        max_period=10_000.0,
    ).eval()


def _frames(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_streaming_equals_offline(chunk):
    transformer = _transformer()
    inputs = _frames(2, 20)
    with torch.inference_mode():
        offline, _, offset = transformer(inputs, None, 3)
        states, offset_streamed, pieces = None, 3, []
        for start in range(0, 20, chunk):
            piece, states, offset_streamed = transformer(
                inputs[:, start : start + chunk], states, offset_streamed
            )
            pieces.append(piece)
    assert offline.shape == inputs.shape and offset == offset_streamed == 23
    torch.testing.assert_close(torch.cat(pieces, dim=1), offline, atol=1e-6, rtol=1e-5)
    # The cache holds at most the window.
    assert len(states) == NUM_LAYERS
    assert all(keys.shape[2] <= PAST_CONTEXT for keys, _ in states)


def test_output_sees_only_the_past_window():
    """Each layer looks past_context frames back, so output t depends on inputs
    t - num_layers * past_context .. t and nothing else."""
    transformer = _transformer()
    inputs = _frames(1, 30)
    changed = inputs.clone()
    changed[:, 10] += 1.0
    with torch.inference_mode():
        before, _, _ = transformer(inputs, None, 0)
        after, _, _ = transformer(changed, None, 0)
    differs = (before - after).abs().amax(dim=(0, 2)) > 0
    reach = NUM_LAYERS * PAST_CONTEXT
    assert differs.tolist() == [10 <= t <= 10 + reach for t in range(30)]


def test_parameter_names_are_the_official_ones():
    """The shipped EnCodec LM and the official weights load by these names."""
    names = set(_transformer().state_dict())
    layer = {
        "self_attn.in_proj_weight",
        "self_attn.in_proj_bias",
        "self_attn.out_proj.weight",
        "self_attn.out_proj.bias",
        "linear1.weight",
        "linear1.bias",
        "linear2.weight",
        "linear2.bias",
        "norm1.weight",
        "norm1.bias",
        "norm2.weight",
        "norm2.bias",
    }
    expected = {"norm_in.weight", "norm_in.bias"} | {
        f"layers.{index}.{name}" for index in range(NUM_LAYERS) for name in layer
    }
    assert names == expected


def test_bad_configurations_are_refused():
    settings = dict(num_layers=1, hidden_scale=4.0, max_period=10_000.0)
    with pytest.raises(ValueError, match="divisible by num_heads=8, got 30"):
        StreamingTransformer(dim=30, num_heads=8, past_context=4, **settings)
    with pytest.raises(ValueError, match="past_context must be at least 1 frame, got 0"):
        StreamingTransformer(dim=32, num_heads=4, past_context=0, **settings)
