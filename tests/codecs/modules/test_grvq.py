"""The group-residual vector quantizer: split and concatenation, equivalence to RVQ at one group,
code order, gradients, codebook updates, bad input and bandwidths.

Each group is checked against a :class:`ResidualVectorQuantizer` run alone on its chunk, and the
one-group quantizer against a residual quantizer with the same state.
"""

from __future__ import annotations

import pytest
import torch
from bench.codecs.modules.grvq import GroupResidualVectorQuantizer
from bench.codecs.modules.rvq import ResidualVectorQuantizer


def _small_grvq(**overrides) -> GroupResidualVectorQuantizer:
    """Two groups of three levels of 8 random codewords over 6 channels, fixed codebooks."""
    settings = dict(
        dimension=6, groups=2, n_q_per_group=3, bins=8, kmeans_init=False, threshold_ema_dead_code=0
    )
    settings.update(overrides)
    torch.manual_seed(0)
    return GroupResidualVectorQuantizer(**settings)


def _latent(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# Split and concatenation


def test_codewords_holding_the_group_vectors_quantize_exactly():
    quantizer = _small_grvq().eval()
    x = _latent(1, 6, 8)
    for group, chunk in zip(quantizer.quantizers, x.chunk(2, dim=1), strict=True):
        group.vq.layers[0]._codebook.embed.copy_(chunk[0].t())
    codes = quantizer.encode(x, 1)
    assert torch.equal(codes, torch.arange(8).expand(2, 1, 8))
    torch.testing.assert_close(quantizer.decode(codes), x, rtol=0, atol=0)
    torch.testing.assert_close(quantizer(x, 1).quantized, x, rtol=0, atol=0)


def test_each_group_is_its_own_rvq_on_its_own_chunk():
    quantizer = _small_grvq().eval()
    x = _latent(2, 6, 5)
    result = quantizer(x)
    chunks = x.chunk(2, dim=1)
    alone = [group(chunk) for group, chunk in zip(quantizer.quantizers, chunks, strict=True)]
    torch.testing.assert_close(result.quantized, torch.cat([r.quantized for r in alone], dim=1))
    assert torch.equal(result.codes, torch.cat([r.codes for r in alone]))
    torch.testing.assert_close(result.layer_losses, torch.cat([r.layer_losses for r in alone]))
    torch.testing.assert_close(result.commitment_loss, sum(r.commitment_loss for r in alone))
    codes = quantizer.encode(x)
    assert torch.equal(codes, result.codes)
    expected = torch.cat(
        [g.decode(g.encode(c)) for g, c in zip(quantizer.quantizers, chunks, strict=True)], dim=1
    )
    torch.testing.assert_close(quantizer.decode(codes), expected, rtol=0, atol=0)
    torch.testing.assert_close(quantizer.decode(codes), result.quantized)


# One group is RVQ


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_one_group_is_exactly_the_residual_quantizer(reduction):
    torch.manual_seed(3)
    reference = ResidualVectorQuantizer(
        dimension=4, n_q=3, bins=8, kmeans_init=False, commitment_reduction=reduction
    ).eval()
    quantizer = GroupResidualVectorQuantizer(
        4, 1, 3, bins=8, kmeans_init=False, commitment_reduction=reduction
    ).eval()
    quantizer.quantizers[0].load_state_dict(reference.state_dict(), strict=True)
    x = _latent(2, 4, 7)
    for n_q in (1, 3):
        got, expected = quantizer(x, n_q), reference(x, n_q)
        assert torch.equal(got.codes, expected.codes)
        assert torch.equal(got.quantized, expected.quantized)
        assert torch.equal(got.commitment_loss, expected.commitment_loss)
        assert torch.equal(got.layer_losses, expected.layer_losses)
        codes = quantizer.encode(x, n_q)
        assert torch.equal(codes, reference.encode(x, n_q))
        assert torch.equal(quantizer.decode(codes), reference.decode(codes))


# Code order and sizes


def test_codes_are_group_major_and_n_q_counts_every_codebook():
    quantizer = _small_grvq()
    assert (quantizer.n_q, quantizer.bins, quantizer.groups) == (6, 8, 2)
    quantizer.eval()
    x = _latent(2, 6, 5)
    for n_q in (1, 2, 3):
        codes = quantizer.encode(x, n_q)
        assert codes.shape == (2 * n_q, 2, 5) and codes.dtype == torch.int64
        assert quantizer(x, n_q).layer_losses.shape == (2 * n_q,)
        for g, (group, chunk) in enumerate(
            zip(quantizer.quantizers, x.chunk(2, dim=1), strict=True)
        ):
            assert torch.equal(codes[g * n_q : (g + 1) * n_q], group.encode(chunk, n_q))
        assert quantizer.decode(codes).shape == x.shape


# Gradients


def test_straight_through_gradient_reaches_every_group_unchanged():
    quantizer = _small_grvq().eval()
    x = _latent(2, 6, 5).requires_grad_()
    weights = _latent(2, 6, 5, seed=7)
    (quantizer(x).quantized * weights).sum().backward()
    torch.testing.assert_close(x.grad, weights, rtol=0, atol=0)


def test_commitment_gradient_of_each_group_reaches_its_chunk():
    quantizer = _small_grvq().eval()
    x = _latent(2, 6, 5).requires_grad_()
    quantizer(x).commitment_loss.backward()
    for group, chunk, grad in zip(
        quantizer.quantizers, x.detach().chunk(2, dim=1), x.grad.chunk(2, dim=1), strict=True
    ):
        alone = chunk.clone().requires_grad_()
        group(alone).commitment_loss.backward()
        torch.testing.assert_close(grad, alone.grad)
        assert grad.abs().min() > 0


# Codebook updates


def test_training_initialises_and_updates_every_groups_codebooks():
    quantizer = _small_grvq(kmeans_init=True, kmeans_iters=3, bins=4).train()
    for group in quantizer.quantizers:
        for layer in group.vq.layers:
            assert layer._codebook.inited.item() == 0
            assert not layer._codebook.embed.any()
    x = _latent(4, 6, 16)
    quantizer(x)
    embeds = []
    for group in quantizer.quantizers:
        for layer in group.vq.layers:
            assert layer._codebook.inited.item() == 1
            assert layer._codebook.embed.abs().sum() > 0
        embeds.append(group.vq.layers[0]._codebook.embed.clone())
    # Each group learned from its own chunk, so their codebooks differ.
    assert not torch.equal(embeds[0], embeds[1])
    before = [g.vq.layers[0]._codebook.embed.clone() for g in quantizer.quantizers]
    quantizer(_latent(4, 6, 16, seed=2))
    for group, old in zip(quantizer.quantizers, before, strict=True):
        assert not torch.equal(group.vq.layers[0]._codebook.embed, old)


def test_encode_never_updates_the_codebooks():
    quantizer = _small_grvq().train()
    state = {k: v.clone() for k, v in quantizer.state_dict().items()}
    quantizer.encode(_latent(2, 6, 5))
    for key, value in quantizer.state_dict().items():
        assert torch.equal(value, state[key]), key


# Bad input


def test_dimension_that_groups_do_not_divide_raises():
    with pytest.raises(ValueError, match="multiple of groups=4"):
        GroupResidualVectorQuantizer(6, 4, 2, bins=8)
    with pytest.raises(ValueError, match="groups must be positive"):
        GroupResidualVectorQuantizer(6, 0, 2, bins=8)
    with pytest.raises(TypeError, match="groups must be an int"):
        GroupResidualVectorQuantizer(6, 2.0, 2, bins=8)


def test_bad_latents_codes_and_levels_raise():
    quantizer = _small_grvq().eval()
    with pytest.raises(ValueError, match=r"\(batch, 6, frames\)"):
        quantizer(_latent(2, 4, 5))
    with pytest.raises(ValueError, match=r"\(batch, 6, frames\)"):
        quantizer.encode(_latent(6, 5))
    with pytest.raises(ValueError, match="n_q_per_group must be in 1..3"):
        quantizer(_latent(2, 6, 5), 4)
    with pytest.raises(TypeError, match="n_q_per_group must be an int"):
        quantizer.encode(_latent(2, 6, 5), 1.0)
    codes = quantizer.encode(_latent(2, 6, 5))
    for count in (0, 3, 5, 8):
        with pytest.raises(ValueError, match="multiple of groups=2"):
            quantizer.decode(torch.zeros(count, 2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="groups \\* n_q"):
        quantizer.decode(codes[0])
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        quantizer.decode(codes + 8)
    with pytest.raises(TypeError, match="integer codes"):
        quantizer.decode(codes.float())
