"""Fixed-step ODE solvers for flow-matching decoders, integrating ``dx/dt = v(x, t)`` from
t = 0 (noise) to t = 1 (data), with the cost of each step counted in network function
evaluations (NFE).

Euler is what FlowMAC (Pia et al., ICASSP 2025) and Matcha-TTS (Mehta et al., ICASSP 2024)
integrate with; the explicit midpoint and Heun methods are the second-order Runge-Kutta
methods (Hairer, Norsett and Wanner, "Solving Ordinary Differential Equations I", II.1),
offered because quality per NFE is what users compare. A solver spends
``evaluations_per_step`` calls of the vector field per step; how many network passes one
call costs (two under classifier-free guidance) is the field's business, see
``bench.codecs.modules.flow_matching``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# (x, t) -> dx/dt, with t a float in [0, 1].
VectorField = Callable[[torch.Tensor, float], torch.Tensor]


def _euler_step(field: VectorField, x: torch.Tensor, t: float, dt: float) -> torch.Tensor:
    return x + dt * field(x, t)


def _midpoint_step(field: VectorField, x: torch.Tensor, t: float, dt: float) -> torch.Tensor:
    half = x + 0.5 * dt * field(x, t)
    return x + dt * field(half, t + 0.5 * dt)


def _heun_step(field: VectorField, x: torch.Tensor, t: float, dt: float) -> torch.Tensor:
    slope = field(x, t)
    predicted = x + dt * slope
    return x + 0.5 * dt * (slope + field(predicted, t + dt))


@dataclass(frozen=True)
class OdeSolver:
    """A fixed-step explicit method: its name, its order of accuracy and the vector-field
    calls each step makes."""

    name: str
    order: int
    evaluations_per_step: int
    step: Callable[[VectorField, torch.Tensor, float, float], torch.Tensor]

    def integrate(self, field: VectorField, start: torch.Tensor, steps: int) -> torch.Tensor:
        """``x(1)`` from ``x(0) = start`` in ``steps`` equal steps; ``start`` is not modified."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"expected a positive whole number of steps, got {steps!r}")
        x, dt = start, 1.0 / steps
        for index in range(steps):
            x = self.step(field, x, index * dt, dt)
        return x


SOLVERS = {
    solver.name: solver
    for solver in (
        OdeSolver("euler", order=1, evaluations_per_step=1, step=_euler_step),
        OdeSolver("midpoint", order=2, evaluations_per_step=2, step=_midpoint_step),
        OdeSolver("heun", order=2, evaluations_per_step=2, step=_heun_step),
    )
}


def get_solver(name: str) -> OdeSolver:
    """The solver called ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in SOLVERS:
        raise ValueError(f"expected an ODE solver among {', '.join(SOLVERS)}, got {name!r}")
    return SOLVERS[name]
