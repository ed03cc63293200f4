"""EnCodec's loss balancer (Défossez et al., 2022, Section 3.4, Eq. 5).

Each loss is given a share of the gradient that reaches the model output instead of a share
of the loss value, so a weight means the same whatever the scale of its loss: with weights
lambda_i, loss i contributes ``lambda_i / sum(lambda)`` of a gradient of norm ``total_norm``.
Gradient norms are smoothed by a bias-corrected exponential moving average, as in the paper's
code, so one noisy batch does not swing the scales.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist


class LossBalancer:
    """Backpropagates a weighted set of losses through the model output ``x_hat``.

    For every loss ``l_i`` in ``backward``: ``g_i = d l_i / d x_hat`` (only the gradient with
    respect to the output, not the parameters); ``norm_i`` is the L2 norm of ``g_i`` per example
    averaged over the batch (``per_batch_item``), or over the whole batch otherwise;
    ``avg_i`` is its bias-corrected EMA (``total = decay * total + norm``,
    ``weight = decay * weight + 1``, ``avg = total / weight``); then
    ``x_hat.backward(sum_i scale_i * g_i)`` with
    ``scale_i = total_norm * (lambda_i / sum_j lambda_j) / (epsilon + avg_i)``, the sum of the
    weights running over the losses passed. With ``rescale_grads=False``, ``scale_i = lambda_i``
    and the balancer is a plain weighted sum of the losses.

    Losses that should not be balanced, such as EnCodec's commitment loss (which does not
    depend on the output), are backpropagated by the caller separately, before or after.

    Under ``torch.distributed``, ``avg_i`` is averaged across workers (weighted by their batch
    sizes) so that every worker applies the same scales; all workers must then pass the same
    loss names at every step. The EMA state is per worker and saved by :meth:`state_dict`.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        rescale_grads: bool = True,
        total_norm: float = 1.0,
        ema_decay: float = 0.999,
        per_batch_item: bool = True,
        epsilon: float = 1e-12,
    ) -> None:
        if not weights:
            raise ValueError("expected at least one loss weight, got none")
        invalid = {name: w for name, w in weights.items() if not (math.isfinite(w) and w >= 0)}
        if invalid:
            raise ValueError(f"expected finite non-negative weights, got {invalid}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"expected 0 <= ema_decay < 1, got {ema_decay}")
        self.weights = dict(weights)
        self.rescale_grads = rescale_grads
        self.total_norm = total_norm
        self.ema_decay = ema_decay
        self.per_batch_item = per_batch_item
        self.epsilon = epsilon
        # Python floats (float64) rather than tensors: exact to save and device-independent.
        self._ema_total: dict[str, float] = {}
        self._ema_weight: dict[str, float] = {}

    def backward(
        self, losses: Mapping[str, torch.Tensor], output: torch.Tensor
    ) -> dict[str, float]:
        """Backpropagates the balanced losses through ``output`` (the model output ``x_hat``).

        Returns, per loss name, ``grad_norm/<name>`` (this batch), ``avg_grad_norm/<name>``
        (the smoothed norm used) and ``scale/<name>`` (the factor applied to its gradient).
        """
        combined, metrics = self.balanced_gradient(losses, output)
        output.backward(combined)
        return metrics

    def balanced_gradient(
        self, losses: Mapping[str, torch.Tensor], output: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The gradient :meth:`backward` would send into ``output``, and its metrics.

        For callers that must run one backward pass for everything (DistributedDataParallel
        allows one per forward): ``torch.autograd.backward([output, ...], [gradient, ...])``.
        """
        unknown = sorted(set(losses) - set(self.weights))
        if unknown:
            raise ValueError(f"no weight for losses {unknown}; weighted: {sorted(self.weights)}")
        if not losses:
            raise ValueError("expected at least one loss, got none")
        if not output.requires_grad:
            raise ValueError("expected an output that requires grad (the model output x_hat)")
        if self.per_batch_item and output.dim() == 0:
            raise ValueError("per_batch_item needs an output with a batch dimension, got a scalar")
        weight_sum = sum(self.weights[name] for name in losses)
        if weight_sum <= 0:
            raise ValueError(f"expected a positive sum of weights for {sorted(losses)}, got 0")

        names = sorted(losses)
        grads = {}
        norms = {}
        for name in names:
            # retain_graph: the graph behind `output` is traversed again by the final backward.
            (grads[name],) = torch.autograd.grad(losses[name], output, retain_graph=True)
            norms[name] = self._grad_norm(grads[name])
        averages = {name: self._update_ema(name, norms[name]) for name in names}
        batch_size = output.shape[0] if self.per_batch_item else 1
        averages = _average_across_workers(averages, batch_size, output.device)

        combined = torch.zeros_like(output)
        metrics = {}
        for name in names:
            if self.rescale_grads:
                share = self.weights[name] / weight_sum
                scale = self.total_norm * share / (self.epsilon + averages[name])
            else:
                scale = self.weights[name]
            combined.add_(grads[name], alpha=scale)
            metrics[f"grad_norm/{name}"] = norms[name]
            metrics[f"avg_grad_norm/{name}"] = averages[name]
            metrics[f"scale/{name}"] = scale
        return combined, metrics

    def _grad_norm(self, grad: torch.Tensor) -> float:
        if self.per_batch_item:
            return float(grad.reshape(grad.shape[0], -1).norm(dim=1).mean())
        return float(grad.norm())

    def _update_ema(self, name: str, norm: float) -> float:
        total = self.ema_decay * self._ema_total.get(name, 0.0) + norm
        weight = self.ema_decay * self._ema_weight.get(name, 0.0) + 1.0
        self._ema_total[name], self._ema_weight[name] = total, weight
        return total / weight

    def state_dict(self) -> dict[str, Any]:
        """The EMA state, for an exact resume of training."""
        return {"ema_total": dict(self._ema_total), "ema_weight": dict(self._ema_weight)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state) != {"ema_total", "ema_weight"}:
            raise ValueError(
                f"expected a balancer state with keys ['ema_total', 'ema_weight'], "
                f"got {sorted(state)}"
            )
        if set(state["ema_total"]) != set(state["ema_weight"]):
            raise ValueError("expected the same loss names in ema_total and ema_weight")
        self._ema_total = {name: float(v) for name, v in state["ema_total"].items()}
        self._ema_weight = {name: float(v) for name, v in state["ema_weight"].items()}


def _average_across_workers(
    values: dict[str, float], count: int, device: torch.device
) -> dict[str, float]:
    """Mean of ``values`` over the workers, each counted ``count`` times; unchanged if alone."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return values
    names = sorted(values)
    # One float64 all_reduce for all losses plus the count: sum(count * value) / sum(count).
    packed = torch.tensor([values[n] for n in names] + [1.0], dtype=torch.float64, device=device)
    packed *= count
    dist.all_reduce(packed)
    averaged = (packed[:-1] / packed[-1]).tolist()
    return dict(zip(names, averaged, strict=True))
