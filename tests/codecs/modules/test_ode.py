"""The ODE solvers converge at their order on an analytic field, and take steps as asked."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bench.codecs.modules.ode import SOLVERS, get_solver

STEPS = (16, 32, 64, 128)


def growth_field(x: torch.Tensor, t: float) -> torch.Tensor:
    """dx/dt = cos(t) x, whose solution from x(0) is x(1) = x(0) exp(sin 1)."""
    return math.cos(t) * x


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_the_error_falls_at_the_solver_s_order(name):
    solver = get_solver(name)
    start = torch.tensor([1.0, -0.5], dtype=torch.float64)
    exact = start * math.exp(math.sin(1.0))
    errors = [(solver.integrate(growth_field, start, steps) - exact).abs().max() for steps in STEPS]
    # The slope of log error against log step count is minus the order.
    slope = np.polyfit(np.log(STEPS), np.log([float(error) for error in errors]), 1)[0]
    assert slope == pytest.approx(-solver.order, abs=0.15)


def test_second_order_methods_beat_euler_at_the_same_nfe():
    start = torch.tensor([1.0], dtype=torch.float64)
    exact = start * math.exp(math.sin(1.0))
    nfe = 64
    errors = {
        name: float(
            (
                solver.integrate(growth_field, start, nfe // solver.evaluations_per_step) - exact
            ).abs()
        )
        for name, solver in SOLVERS.items()
    }
    assert errors["midpoint"] < errors["euler"] / 10 and errors["heun"] < errors["euler"] / 10


def test_each_step_calls_the_field_as_declared_and_leaves_the_start_alone():
    for solver in SOLVERS.values():
        calls = []

        def field(x, t, calls=calls):
            calls.append(t)
            return torch.ones_like(x)

        start = torch.zeros(3)
        end = solver.integrate(field, start, 5)
        assert len(calls) == 5 * solver.evaluations_per_step
        assert all(0.0 <= t <= 1.0 for t in calls)
        assert torch.allclose(end, torch.ones(3)) and not start.any()


@pytest.mark.parametrize("steps", [0, -1, 2.5, True, "4"])
def test_a_step_count_that_is_not_a_positive_whole_number_is_refused(steps):
    with pytest.raises(ValueError, match="expected a positive whole number of steps"):
        get_solver("euler").integrate(growth_field, torch.ones(1), steps)


def test_an_unknown_solver_names_the_known_ones():
    with pytest.raises(ValueError, match="euler, midpoint, heun, got 'rk4'"):
        get_solver("rk4")
