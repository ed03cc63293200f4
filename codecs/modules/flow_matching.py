"""Optimal-transport conditional flow matching (Lipman et al., "Flow Matching for Generative
Modeling", ICLR 2023), as FlowMAC (Pia et al., ICASSP 2025) trains and samples its mel
decoder: the path, the training loss with condition dropout for classifier-free guidance, and
sampling at an exact number of network function evaluations (NFE).

- Path: ``x_t = (1 - (1 - sigma_min) t) x0 + t x1`` from noise ``x0`` to data ``x1``, target
  ``u = x1 - (1 - sigma_min) x0``; ``sigma_min = 1e-4`` (the community default, unverified).
- Times: logit-normal, ``t = sigmoid(n)`` with ``n ~ N(0, 1)`` (the paper's per the secondary
  sources; location 0 and scale 1 are unverified choices), or uniform.
- Condition dropout: the condition is zeroed with probability 0.2 per example, so one network
  learns both fields.
- Guidance: ``v = v_u + s (v_c - v_u)`` with ``v_c`` the conditional field, ``v_u`` the field
  with the condition zeroed and ``s`` the guidance scale. ``s = 1`` is the conditional field
  and ``s = 0`` the unconditional one, each one network pass; any other scale costs two. The
  other common convention, ``v = v_c + w (v_c - v_u)`` (Voicebox; FlowMAC's "CFG factor 1,
  64 NFE for 32 Euler steps" reads as this), is ``s = 1 + w``.
- NFE: network passes per batch, conditional and unconditional counted apart:
  ``steps x solver.evaluations_per_step x guidance passes``. An NFE that cannot be spent
  exactly is refused with the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from bench.codecs.modules.ode import OdeSolver, VectorField

SIGMA_MIN = 1e-4
CONDITION_DROP = 0.2
TIME_SAMPLINGS = ("logit-normal", "uniform")

# (x_t, t of shape (batch,), condition) -> velocity, shaped like x_t.
VelocityNetwork = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _per_example(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` of shape ``(batch,)`` broadcast over the other dimensions of ``like``."""
    return t.reshape(-1, *([1] * (like.dim() - 1)))


def ot_path(
    noise: torch.Tensor, data: torch.Tensor, t: torch.Tensor, sigma_min: float = SIGMA_MIN
) -> tuple[torch.Tensor, torch.Tensor]:
    """The point ``x_t`` of each example's path at its time ``t`` ``(batch,)``, and the
    target velocity ``u``, which does not depend on ``t``."""
    t = _per_example(t, data)
    x_t = (1 - (1 - sigma_min) * t) * noise + t * data
    return x_t, data - (1 - sigma_min) * noise


def sample_times(
    batch: int, generator: torch.Generator, sampling: str = "logit-normal"
) -> torch.Tensor:
    """Training times in (0, 1), ``(batch,)``."""
    if sampling == "logit-normal":
        return torch.sigmoid(torch.randn(batch, generator=generator))
    if sampling == "uniform":
        return torch.rand(batch, generator=generator)
    raise ValueError(
        f"expected a time sampling among {', '.join(TIME_SAMPLINGS)}, got {sampling!r}"
    )


def cfm_loss(
    network: VelocityNetwork,
    data: torch.Tensor,
    condition: torch.Tensor,
    generator: torch.Generator,
    *,
    sigma_min: float = SIGMA_MIN,
    condition_drop: float = CONDITION_DROP,
    time_sampling: str = "logit-normal",
) -> torch.Tensor:
    """The mean squared error of the network's velocity against the OT target, on a batch
    ``data`` ``(batch, ...)`` with its ``condition`` ``(batch, ...)``, each example's
    condition zeroed with probability ``condition_drop``."""
    if not 0 <= condition_drop < 1:
        raise ValueError(f"expected a condition drop probability in [0, 1), got {condition_drop}")
    batch = data.shape[0]
    noise = torch.randn(data.shape, generator=generator, dtype=data.dtype)
    t = sample_times(batch, generator, time_sampling).to(data.dtype)
    kept = (torch.rand(batch, generator=generator) >= condition_drop).to(condition.dtype)
    x_t, target = ot_path(noise, data, t, sigma_min)
    velocity = network(x_t, t, condition * _per_example(kept, condition))
    return F.mse_loss(velocity, target)


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance at ``scale`` (see the module docstring for the formula)."""

    scale: float = 1.0

    @property
    def passes(self) -> int:
        """Network passes per vector-field call: one at scale 0 or 1, two otherwise."""
        return 1 if self.scale in (0.0, 1.0) else 2

    def field(self, network: VelocityNetwork, condition: torch.Tensor) -> VectorField:
        """The guided vector field ``(x, t) -> v`` of ``network`` under ``condition``."""
        unconditional = torch.zeros_like(condition)

        def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
            times = torch.full((x.shape[0],), t, dtype=x.dtype)
            if self.scale == 1.0:
                return network(x, times, condition)
            if self.scale == 0.0:
                return network(x, times, unconditional)
            guided = network(x, times, condition)
            base = network(x, times, unconditional)
            return base + self.scale * (guided - base)

        return velocity


def nfe_per_step(solver: OdeSolver, guidance: Guidance) -> int:
    return solver.evaluations_per_step * guidance.passes


def steps_for_nfe(nfe: int, solver: OdeSolver, guidance: Guidance) -> int:
    """The number of solver steps that spends exactly ``nfe`` network passes; ``ValueError``
    naming the valid counts when there is none."""
    per_step = nfe_per_step(solver, guidance)
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < per_step or nfe % per_step:
        valid = ", ".join(str(per_step * steps) for steps in range(1, 5))
        raise ValueError(
            f"expected an NFE that {solver.name} with guidance scale {guidance.scale:g} can "
            f"spend exactly, a multiple of {per_step} ({valid}, ...): each step makes "
            f"{solver.evaluations_per_step} vector-field call(s) of {guidance.passes} network "
            f"pass(es); got {nfe!r}"
        )
    return nfe // per_step


def sample(
    network: VelocityNetwork,
    condition: torch.Tensor,
    noise: torch.Tensor,
    nfe: int,
    solver: OdeSolver,
    guidance: Guidance,
) -> torch.Tensor:
    """Integrate the guided field from ``noise`` (t = 0) to data (t = 1) in exactly ``nfe``
    network passes."""
    steps = steps_for_nfe(nfe, solver, guidance)
    return solver.integrate(guidance.field(network, condition), noise, steps)
