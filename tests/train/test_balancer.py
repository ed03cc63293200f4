"""LossBalancer: analytic cases of EnCodec's gradient balancing (paper Eq. 5)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from bench.train import balancer as balancer_module
from bench.train.balancer import LossBalancer


def _output(values) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """A leaf "model input", the "model output" x_hat made from it, and x_hat's received grads.

    The hook also sees the per-loss gradients of autograd.grad; the last entry is what the
    balancer finally sent back.
    """
    source = torch.tensor(values, dtype=torch.float32, requires_grad=True)
    output = source * 1.0
    received: list[torch.Tensor] = []
    output.register_hook(received.append)
    return source, output, received


def test_raw_gradient_of_99_passes_unchanged_without_rescaling():
    source, output, received = _output([[[0.0]]])
    metrics = LossBalancer({"loss": 1.0}, rescale_grads=False).backward(
        {"loss": 99 * output.sum()}, output
    )
    assert received[-1].item() == pytest.approx(99.0)
    assert source.grad.item() == pytest.approx(99.0)
    assert metrics == pytest.approx(
        {"grad_norm/loss": 99.0, "avg_grad_norm/loss": 99.0, "scale/loss": 1.0}
    )


def test_raw_gradient_of_99_is_normalised_to_total_norm_with_rescaling():
    for total_norm in (1.0, 2.5):
        source, output, _ = _output([[[0.0]]])
        balancer = LossBalancer({"loss": 1.0}, total_norm=total_norm)
        metrics = balancer.backward({"loss": 99 * output.sum()}, output)
        # R * (1 / 1) / (eps + 99) * 99
        assert source.grad.item() == pytest.approx(total_norm * 99 / (1e-12 + 99))
        assert metrics["scale/loss"] == pytest.approx(total_norm / 99)


def test_encodec_opposing_losses_sum_to_99_raw_and_cancel_balanced():
    # Gradients -1 and +100: their plain sum is 99; balanced with equal weights, each is
    # brought to norm 1/2 and they cancel.
    for rescale, expected in ((False, 99.0), (True, 0.0)):
        source, output, _ = _output([0.0])
        losses = {
            "a": F.l1_loss(output, torch.ones(1)),
            "b": 100 * F.l1_loss(output, -torch.ones(1)),
        }
        LossBalancer({"a": 1.0, "b": 1.0}, rescale_grads=rescale).backward(losses, output)
        assert source.grad.item() == pytest.approx(expected, abs=1e-6)


def test_weights_1_and_3_give_quarter_and_three_quarters_of_the_gradient():
    g_a = torch.tensor([1.2, 1.6, 0.0, 0.0])  # norm 2
    g_b = torch.tensor([0.0, 0.0, 3.0, 4.0])  # norm 5
    source, output, received = _output([[[0.1, -0.2, 0.3, 0.4]]])
    losses = {"a": (g_a * output).sum(), "b": (g_b * output).sum()}
    metrics = LossBalancer({"a": 1.0, "b": 3.0}).backward(losses, output)
    assert metrics["grad_norm/a"] == pytest.approx(2.0)
    assert metrics["grad_norm/b"] == pytest.approx(5.0)
    assert metrics["scale/a"] == pytest.approx(0.25 / 2)
    assert metrics["scale/b"] == pytest.approx(0.75 / 5)
    torch.testing.assert_close(received[-1], (0.25 / 2 * g_a + 0.75 / 5 * g_b).reshape(1, 1, 4))
    # Without rescaling: the plain weighted sum.
    source, output, received = _output([[[0.1, -0.2, 0.3, 0.4]]])
    losses = {"a": (g_a * output).sum(), "b": (g_b * output).sum()}
    metrics = LossBalancer({"a": 1.0, "b": 3.0}, rescale_grads=False).backward(losses, output)
    assert (metrics["scale/a"], metrics["scale/b"]) == (1.0, 3.0)
    torch.testing.assert_close(received[-1], (g_a + 3 * g_b).reshape(1, 1, 4))


def test_ema_of_norms_is_bias_corrected():
    decay = 0.9
    balancer = LossBalancer({"loss": 1.0}, ema_decay=decay)
    expected_averages = [
        1.0,  # the first step is the norm itself, not (1 - decay) * norm
        (decay * 1 + 4) / (decay + 1),  # 4.9 / 1.9
        (decay**2 * 1 + decay * 4 + 10) / (decay**2 + decay + 1),  # 14.41 / 2.71
    ]
    for coefficient, expected in zip((1.0, 4.0, 10.0), expected_averages, strict=True):
        source, output, _ = _output([[[0.0]]])
        metrics = balancer.backward({"loss": coefficient * output.sum()}, output)
        assert metrics["grad_norm/loss"] == pytest.approx(coefficient)
        assert metrics["avg_grad_norm/loss"] == pytest.approx(expected)
        assert source.grad.item() == pytest.approx(coefficient / expected)
    assert expected_averages[-1] == pytest.approx(14.41 / 2.71)


def test_norm_is_per_example_and_averaged_over_the_batch():
    # Example 0 has gradient norm 3, example 1 norm 5.
    coefficients = torch.tensor([[[3.0, 0.0]], [[0.0, 5.0]]])
    for per_batch_item, expected_norm in ((True, 4.0), (False, 34**0.5)):
        source, output, received = _output(torch.zeros(2, 1, 2).tolist())
        balancer = LossBalancer({"loss": 1.0}, per_batch_item=per_batch_item)
        metrics = balancer.backward({"loss": (coefficients * output).sum()}, output)
        assert metrics["grad_norm/loss"] == pytest.approx(expected_norm)
        torch.testing.assert_close(received[-1], coefficients / expected_norm)


def test_gradient_reaches_the_parameters_through_the_output():
    weight = torch.tensor(2.0, requires_grad=True)
    audio = torch.tensor([[[1.0, -3.0]]])
    output = weight * audio
    LossBalancer({"loss": 1.0}, rescale_grads=False).backward(
        {"loss": 0.5 * output.pow(2).sum()}, output
    )
    # d/dw 0.5 * sum((w a)^2) = w * sum(a^2) = 2 * 10
    assert weight.grad.item() == pytest.approx(20.0)


def test_state_dict_resumes_exactly():
    def step(balancer, coefficient):
        _, output, _ = _output([[[0.0, 0.0]], [[0.0, 0.0]]])
        target = torch.tensor([[[coefficient, 1.0]], [[2.0, -coefficient]]])
        return balancer.backward(
            {
                "l1": (target * output).sum(),
                "l2": (coefficient * output).pow(2).sum() + output.sum(),
            },
            output,
        )

    original = LossBalancer({"l1": 1.0, "l2": 2.0}, ema_decay=0.5)
    for coefficient in (1.0, 3.0, 0.5):
        step(original, coefficient)
    resumed = LossBalancer({"l1": 1.0, "l2": 2.0}, ema_decay=0.5)
    resumed.load_state_dict(json.loads(json.dumps(original.state_dict())))
    assert step(resumed, 7.0) == step(original, 7.0)
    fresh = step(LossBalancer({"l1": 1.0, "l2": 2.0}, ema_decay=0.5), 7.0)
    assert fresh != step(original, 7.0)


def test_bad_input_raises_value_error():
    _, output, _ = _output([[[0.0]]])
    balancer = LossBalancer({"a": 1.0})
    with pytest.raises(ValueError, match=r"no weight for losses \['b'\]"):
        balancer.backward({"b": output.sum()}, output)
    with pytest.raises(ValueError, match="requires grad"):
        balancer.backward({"a": output.sum()}, output.detach())
    with pytest.raises(ValueError, match="non-negative"):
        LossBalancer({"a": -1.0})
    with pytest.raises(ValueError, match="ema_decay"):
        LossBalancer({"a": 1.0}, ema_decay=1.0)
    with pytest.raises(ValueError, match="positive sum"):
        LossBalancer({"a": 0.0}).backward({"a": output.sum()}, output)
    with pytest.raises(ValueError, match="ema_total"):
        balancer.load_state_dict({"total": {}})


def test_average_norm_is_averaged_across_workers_weighted_by_batch(monkeypatch):
    # A simulated second worker with batch size 3 and smoothed norm 6; this one has batch 1
    # and norm 2, so both must use (1 * 2 + 3 * 6) / 4 = 5.
    def all_reduce(tensor):
        tensor += torch.tensor([3 * 6.0, 3.0], dtype=tensor.dtype)

    monkeypatch.setattr(balancer_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(balancer_module.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(balancer_module.dist, "all_reduce", all_reduce)
    source, output, _ = _output([[[0.0]]])
    metrics = LossBalancer({"loss": 1.0}).backward({"loss": 2 * output.sum()}, output)
    assert metrics["grad_norm/loss"] == pytest.approx(2.0)
    assert metrics["avg_grad_norm/loss"] == pytest.approx(5.0)
    assert source.grad.item() == pytest.approx(2 / 5)
