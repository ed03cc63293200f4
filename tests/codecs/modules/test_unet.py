"""The flow-matching U-Net: any length in, the same length out; padded frames never reach the
valid ones; time and condition are used; it learns under the CFM loss."""

from __future__ import annotations

import pytest
import torch
from bench.codecs.modules.flow_matching import cfm_loss
from bench.codecs.modules.unet import SnakeBeta, UNet1d, UNetConfig, masked_group_norm
from torch import nn

TINY = UNetConfig(
    in_channels=8, condition_channels=8, channels=(16, 32, 32), num_heads=2, head_dim=8, dropout=0
)


@pytest.fixture(scope="module")
def unet() -> UNet1d:
    torch.manual_seed(0)
    return UNet1d(TINY).eval()


def _inputs(batch: int, frames: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 8, frames, generator=generator)
    condition = torch.randn(batch, 8, frames, generator=generator)
    return x, torch.rand(batch, generator=generator), condition


@pytest.mark.parametrize("frames", [1, 7, 45, 100])
def test_any_length_gives_the_same_length(unet, frames):
    x, t, condition = _inputs(2, frames)
    assert unet(x, t, condition).shape == (2, 8, frames)


def test_padded_frames_never_reach_the_valid_ones(unet):
    x, t, condition = _inputs(1, 45)
    alone = unet(x, t, condition)
    garbage = 100 * torch.randn(1, 8, 19)
    mask = torch.zeros(1, 1, 64)
    mask[..., :45] = 1
    padded = unet(torch.cat([x, garbage], -1), t, torch.cat([condition, garbage], -1), mask)
    assert torch.allclose(padded[..., :45], alone, atol=1e-5)
    assert not padded[..., 45:].any()


def test_the_output_depends_on_the_time_and_the_condition(unet):
    x, t, condition = _inputs(2, 30)
    reference = unet(x, t, condition)
    assert not torch.allclose(unet(x, 1 - t, condition), reference, atol=1e-4)
    assert not torch.allclose(unet(x, t, torch.zeros_like(condition)), reference, atol=1e-4)
    # The two examples of a batch are independent of each other.
    assert torch.allclose(unet(x[:1], t[:1], condition[:1]), reference[:1], atol=1e-5)


def test_bad_shapes_and_sizes_are_refused(unet):
    x, t, condition = _inputs(1, 10)
    with pytest.raises(ValueError, match=r"expected x \(batch, 8, frames > 0\)"):
        unet(x[:, :4], t, condition)
    with pytest.raises(ValueError, match="and a condition"):
        unet(x, t, condition[..., :9])
    with pytest.raises(ValueError, match="frames > 0"):
        unet(x[..., :0], t, condition[..., :0])
    with pytest.raises(ValueError, match="multiple of 8"):
        UNetConfig(in_channels=8, condition_channels=8, channels=(12,))


def test_snake_beta_starts_as_x_plus_sin_squared():
    x = torch.linspace(-3, 3, 50).reshape(1, 2, 25)
    assert torch.allclose(SnakeBeta(2)(x), x + torch.sin(x) ** 2)


def test_the_masked_group_norm_is_group_norm_when_every_frame_is_valid():
    norm = nn.GroupNorm(8, 16)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(3, 16, 20)
    assert torch.allclose(masked_group_norm(x, torch.ones(3, 1, 20), norm), norm(x), atol=1e-5)


@pytest.mark.slow
def test_every_parameter_gets_a_gradient_and_the_flow_matching_loss_falls():
    torch.manual_seed(0)
    network = UNet1d(TINY)
    generator = torch.Generator().manual_seed(0)
    data = torch.sin(torch.linspace(0, 12, 16)).expand(4, 8, 16).clone()
    condition = data + 0.1 * torch.randn(4, 8, 16, generator=generator)
    optimiser = torch.optim.Adam(network.parameters(), lr=5e-3)
    losses = []
    for step in range(40):
        loss = cfm_loss(network, data, condition, generator, condition_drop=0.0)
        optimiser.zero_grad()
        loss.backward()
        if step == 0:  # no branch is left out of the graph (time, condition, every level)
            unused = [name for name, p in network.named_parameters() if p.grad is None]
            assert not unused
        optimiser.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.8 * sum(losses[:10])
