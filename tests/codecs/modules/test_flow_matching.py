"""Conditional flow matching: the path and its target, guidance by the documented formula,
NFE spent exactly as counted, and a toy conditional distribution learnt and sampled."""

from __future__ import annotations

import pytest
import torch
from bench.codecs.modules.flow_matching import (
    Guidance,
    cfm_loss,
    ot_path,
    sample,
    sample_times,
    steps_for_nfe,
)
from bench.codecs.modules.ode import SOLVERS, get_solver
from torch import nn


def test_the_path_runs_from_noise_to_data_at_the_target_velocity():
    generator = torch.Generator().manual_seed(0)
    noise, data = (
        torch.randn(4, 3, 5, generator=generator),
        torch.randn(4, 3, 5, generator=generator),
    )
    start, target = ot_path(noise, data, torch.zeros(4), sigma_min=1e-4)
    end, _ = ot_path(noise, data, torch.ones(4), sigma_min=1e-4)
    assert torch.equal(start, noise)
    assert torch.allclose(end, data + 1e-4 * noise, atol=1e-6)
    # The target is the path's time derivative, at every time.
    t = torch.tensor([0.1, 0.4, 0.7, 0.9])
    ahead, _ = ot_path(noise, data, t + 1e-3, sigma_min=1e-4)
    here, _ = ot_path(noise, data, t, sigma_min=1e-4)
    assert torch.allclose((ahead - here) / 1e-3, target, atol=1e-3)


def test_logit_normal_times_lie_inside_the_interval_around_one_half():
    times = sample_times(20_000, torch.Generator().manual_seed(0))
    assert 0 < times.min() and times.max() < 1
    assert times.median() == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="logit-normal, uniform, got 'beta'"):
        sample_times(4, torch.Generator(), "beta")


class CountingNetwork:
    """A velocity that remembers the conditions it was called with."""

    def __init__(self) -> None:
        self.conditions: list[torch.Tensor] = []

    def __call__(self, x, t, condition):
        self.conditions.append(condition)
        return condition.sum() * torch.ones_like(x) + t.reshape(-1, 1)


def test_guidance_zero_and_one_are_the_unconditional_and_conditional_fields_in_one_pass():
    x, condition = torch.zeros(2, 3), torch.full((2, 3), 0.5)
    for scale, expected_sum in ((1.0, 3.0), (0.0, 0.0)):
        network = CountingNetwork()
        velocity = Guidance(scale).field(network, condition)(x, 0.25)
        assert len(network.conditions) == 1
        assert torch.allclose(velocity, torch.full((2, 3), expected_sum + 0.25))
    # Any other scale: v_u + s (v_c - v_u), two passes.
    network = CountingNetwork()
    velocity = Guidance(2.5).field(network, condition)(x, 0.25)
    assert len(network.conditions) == 2
    assert torch.allclose(velocity, torch.full((2, 3), 0.25 + 2.5 * 3.0))


@pytest.mark.parametrize("solver_name", sorted(SOLVERS))
@pytest.mark.parametrize("scale", [0.0, 1.0, 2.0])
def test_the_network_is_called_exactly_nfe_times(solver_name, scale):
    solver, guidance = get_solver(solver_name), Guidance(scale)
    per_step = solver.evaluations_per_step * (1 if scale in (0.0, 1.0) else 2)
    for nfe in (per_step, 4 * per_step):
        network = CountingNetwork()
        sample(network, torch.ones(1, 2), torch.zeros(1, 2), nfe, solver, guidance)
        assert len(network.conditions) == nfe
    with (
        pytest.raises(ValueError, match=f"a multiple of {per_step}")
        if per_step > 1
        else (pytest.raises(ValueError, match="got 0"))
    ):
        steps_for_nfe(per_step + 1 if per_step > 1 else 0, solver, guidance)


def test_an_nfe_the_solver_cannot_spend_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"a multiple of 4 \(4, 8, 12, 16, \.\.\.\).* got 6"):
        steps_for_nfe(6, get_solver("heun"), Guidance(1.5))


class ToyVelocity(nn.Module):
    """An MLP velocity for 2-D points under a 2-way one-hot condition."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(5, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 2)
        )

    def forward(self, x, t, condition):
        return self.layers(torch.cat([x, t[:, None], condition], dim=1))


def _toy_batch(size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of points: N((2, 0), 0.3^2) and N((-2, 0), 0.3^2), with one-hot labels."""
    labels = torch.randint(0, 2, (size,), generator=generator)
    centres = torch.stack([2.0 - 4.0 * labels.float(), torch.zeros(size)], dim=1)
    points = centres + 0.3 * torch.randn(size, 2, generator=generator)
    return points, nn.functional.one_hot(labels, 2).float()


def test_a_toy_conditional_distribution_is_learnt_and_sampled():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    network = ToyVelocity()
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    losses = []
    for _ in range(600):
        points, labels = _toy_batch(256, generator)
        loss = cfm_loss(network, points, labels, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert sum(losses[-50:]) < 0.6 * sum(losses[:50])
    noise = torch.randn(2000, 2, generator=generator)
    with torch.no_grad():
        first_class = torch.tensor([[1.0, 0.0]]).expand(2000, 2)
        conditional = sample(network, first_class, noise, 32, get_solver("euler"), Guidance(1.0))
        unconditional = sample(network, first_class, noise, 32, get_solver("euler"), Guidance(0.0))
    # Conditioned on the first class, the samples gather around (2, 0) with its spread.
    assert conditional.mean(dim=0).tolist() == pytest.approx([2.0, 0.0], abs=0.25)
    assert 0.15 < conditional[:, 0].std().item() < 0.6
    # Without the condition (the 20 % of training with it zeroed), both classes come back.
    assert 0.3 < (unconditional[:, 0] > 0).float().mean().item() < 0.7
