"""The residual vector quantizer: gradients, codebook updates, bandwidths, and the official code.

Gradients are checked against their analytic values on fixed codebooks (eval mode), and the
quantizer against the official ``encodec`` package where it is installed.
"""

from __future__ import annotations

import copy
import types

import pytest
import torch
import torch.nn.functional as F
from bench.codecs.modules import rvq
from bench.codecs.modules.rvq import (
    EuclideanCodebook,
    ResidualVectorQuantizer,
    bandwidth_to_n_q,
    n_q_to_bandwidth,
    restore_codebook_sums,
    sample_n_q,
    strip_codebook_sums,
)
from helpers import assert_codes_equal_up_to_near_ties, official_codebooks, official_encodec


def _small_rvq(**overrides) -> ResidualVectorQuantizer:
    """Three stages of 8 random codewords in 4 dimensions, no dead-code replacement."""
    settings = dict(dimension=4, n_q=3, bins=8, kmeans_init=False, threshold_ema_dead_code=0)
    settings.update(overrides)
    torch.manual_seed(0)
    return ResidualVectorQuantizer(**settings)


def _latent(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# Gradients


def test_commitment_loss_of_every_stage_reaches_the_input():
    quantizer = _small_rvq().eval()
    x = _latent(2, 4, 5).requires_grad_()
    codes = quantizer.encode(x, 3)
    stages = [layer.decode(c) for layer, c in zip(quantizer.vq.layers, codes, strict=True)]
    for k in range(3):
        x.grad = None
        quantizer(x, 3).layer_losses[k].backward()
        # Residual k is x minus the earlier codewords, so d MSE(r_k, e_k) / dx = 2 (r_k - e_k) / N.
        residual = x.detach() - sum(stages[:k])
        expected = 2 * (residual - stages[k]) / x.numel()
        torch.testing.assert_close(x.grad, expected)
        assert x.grad.abs().min() > 0


def test_commitment_gradients_in_training_mode_equal_the_fixed_codebook_ones():
    # Training mode updates the codebooks after the lookup; the gradients use the lookup's.
    quantizer = _small_rvq()
    frozen = copy.deepcopy(quantizer).eval()
    gradients = []
    for model in (quantizer.train(), frozen):
        x = _latent(2, 4, 5).requires_grad_()
        model(x, 3).layer_losses[2].backward()
        gradients.append(x.grad)
    torch.testing.assert_close(gradients[0], gradients[1])
    assert not torch.equal(
        quantizer.vq.layers[2]._codebook.embed, frozen.vq.layers[2]._codebook.embed
    )


def test_straight_through_gradient_is_the_identity():
    for mode in ("train", "eval"):
        quantizer = getattr(_small_rvq(), mode)()
        x = _latent(2, 4, 5).requires_grad_()
        weights = _latent(2, 4, 5, seed=2)
        (quantizer(x, 3).quantized * weights).sum().backward()
        assert torch.equal(x.grad, weights)


def test_projected_stages_pass_gradients_to_input_and_projections():
    quantizer = _small_rvq(codebook_dim=2).eval()
    layers = quantizer.vq.layers
    x = _latent(2, 4, 5).requires_grad_()
    codes = quantizer.encode(x, 3)
    quantizer(x, 3).layer_losses[2].backward()
    residual = x.detach() - layers[0].decode(codes[0]) - layers[1].decode(codes[1])
    project_in = layers[2].project_in
    latent = project_in(residual.transpose(1, 2)).detach()
    codewords = layers[2]._codebook.decode(codes[2])
    expected = (2 * (latent - codewords) / latent.numel()) @ project_in.weight.detach()
    torch.testing.assert_close(x.grad, expected.transpose(1, 2))

    x.grad = None
    quantizer.zero_grad()
    weights = _latent(2, 4, 5, seed=2)
    (quantizer(x, 3).quantized * weights).sum().backward()
    # The estimator acts in each stage's codebook space, so a loss on the output reaches the
    # input through project_out . project_in of every stage (each residual is x minus
    # constants), not as the identity a rank-2 stage cannot be.
    expected = sum(
        weights.transpose(1, 2) @ layer.project_out.weight @ layer.project_in.weight
        for layer in layers
    ).transpose(1, 2)
    torch.testing.assert_close(x.grad, expected.detach())
    for layer in layers:
        # The reconstruction trains both projections of every stage.
        assert layer.project_out.weight.grad.abs().sum() > 0
        assert layer.project_in.weight.grad.abs().sum() > 0


def test_a_projected_quantizer_learns_to_pass_its_input_on():
    """Trained on its own reconstruction, a projected RVQ must carry information: with the
    straight-through identity around each stage, ``project_in`` learnt from the commitment
    loss alone, which discarding the input minimises, and the output stayed uncorrelated with
    the input (the first FlowMAC demo's quantizer)."""
    torch.manual_seed(0)
    quantizer = ResidualVectorQuantizer(
        dimension=8, n_q=2, bins=16, codebook_dim=2, threshold_ema_dead_code=0
    )
    optimiser = torch.optim.Adam(quantizer.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(3)
    mixing = torch.randn(8, 2, generator=generator)
    for _ in range(300):
        # Data on a 2-d subspace of the 8-d latent, which one 2-d stage can represent.
        x = (mixing @ torch.randn(2, 256, generator=generator))[None]
        result = quantizer(x, 2)
        loss = F.mse_loss(result.quantized, x) + result.commitment_loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    quantizer.eval()
    x = (mixing @ torch.randn(2, 512, generator=generator))[None]
    relative_error = (quantizer(x, 2).quantized - x).norm() / x.norm()
    assert relative_error < 0.5


def test_single_stage_has_the_straight_through_gradient_too():
    stage = _small_rvq().vq.layers[0].eval()
    x = _latent(2, 4, 5).requires_grad_()
    weights = _latent(2, 4, 5, seed=2)
    quantized, codes, _ = stage(x)
    assert torch.equal(quantized, stage.decode(codes))
    (quantized * weights).sum().backward()
    assert torch.equal(x.grad, weights)


def test_commitment_reduction():
    x = _latent(2, 4, 5)
    summed = _small_rvq().eval()(x, 3)
    averaged = _small_rvq(commitment_reduction="mean").eval()(x, 3)
    assert summed.layer_losses.shape == (3,)
    torch.testing.assert_close(summed.commitment_loss, summed.layer_losses.sum())
    torch.testing.assert_close(averaged.commitment_loss, summed.layer_losses.mean())
    with pytest.raises(ValueError, match="'sum' or 'mean', got 'max'"):
        _small_rvq(commitment_reduction="max")


# Codebook updates


def _codebook_with(
    embed: torch.Tensor, cluster_size: torch.Tensor, **settings
) -> EuclideanCodebook:
    codebook = EuclideanCodebook(embed.shape[1], embed.shape[0], kmeans_init=False, **settings)
    codebook.embed.copy_(embed)
    codebook.cluster_size.copy_(cluster_size)
    codebook.embed_avg.copy_(embed * cluster_size[:, None])
    return codebook


def test_ema_update_moves_the_codeword_towards_the_data():
    codebook = _codebook_with(
        torch.tensor([[0.0, 0.0], [10.0, 10.0]]),
        torch.tensor([100.0, 100.0]),
        threshold_ema_dead_code=0,
    )
    batch = torch.ones(50, 2)
    codewords, codes = codebook(batch)
    assert torch.equal(codes, torch.zeros(50, dtype=torch.long))
    assert torch.equal(codewords, torch.zeros(50, 2))  # the lookup precedes the update
    size = torch.tensor([0.99 * 100 + 0.01 * 50, 0.99 * 100])
    smoothed = (size + 1e-5) / (size.sum() + 2e-5) * size.sum()
    expected = (
        torch.stack([0.01 * 50 * torch.ones(2), 0.99 * 1000 * torch.ones(2)]) / smoothed[:, None]
    )
    torch.testing.assert_close(codebook.embed, expected)
    distances = [codebook.embed[0].sub(1).norm()]
    for _ in range(20):
        codebook(batch)
        distances.append(codebook.embed[0].sub(1).norm())
    assert all(after < before for before, after in zip(distances, distances[1:], strict=False))


def _four_clusters(offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres ``(4, 2)`` and 30 noisy vectors around each ``(120, 2)``."""
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]]) + offset
    return centres, (centres[:, None] + 0.1 * _latent(4, 30, 2)).reshape(-1, 2)


def test_kmeans_converges_to_a_fixed_point_of_lloyd_iterations():
    centres, vectors = _four_clusters()
    torch.manual_seed(0)
    # Two separated clusters are found from any initial draw.
    centroids, counts = rvq.kmeans(vectors[:60], 2, 50)
    assert torch.cdist(centres[:2], centroids).min(dim=1).values.max() < 0.1
    assert torch.equal(counts, torch.full((2,), 30))
    # With more, random initialisation may leave a local optimum (as in the official code), but
    # always one where each centroid is the mean of the vectors nearest to it.
    centroids, counts = rvq.kmeans(vectors, 4, 50)
    nearest = torch.cdist(vectors, centroids).argmin(dim=1)
    assert torch.equal(counts, torch.bincount(nearest, minlength=4))
    means = torch.zeros(4, 2).index_add_(0, nearest, vectors) / counts.clamp(min=1)[:, None]
    torch.testing.assert_close(centroids[counts > 0], means[counts > 0])


def test_kmeans_initialises_once_on_the_first_training_batch(monkeypatch):
    calls = []
    kmeans = rvq.kmeans

    def counting_kmeans(*args):
        calls.append(args)
        return kmeans(*args)

    monkeypatch.setattr(rvq, "kmeans", counting_kmeans)
    torch.manual_seed(0)
    _, batch = _four_clusters()
    codebook = EuclideanCodebook(2, 4, kmeans_init=True, kmeans_iters=10, threshold_ema_dead_code=0)
    codebook.eval()(batch)
    assert not codebook.inited.item() and not calls  # evaluation never initialises
    codebook.train()(batch)
    assert codebook.inited.item() == 1 and len(calls) == 1 and calls[0][1:] == (4, 10)
    # A later batch far away only pulls the codewords by EMA; a second k-means would jump there.
    centres, far_batch = _four_clusters(offset=100.0)
    for _ in range(2):
        codebook(far_batch)
    assert len(calls) == 1
    assert torch.cdist(centres, codebook.embed).min() > 90


def test_dead_codes_are_replaced_by_batch_vectors_and_stay():
    far = torch.full((2, 2), 100.0)
    codebook = _codebook_with(
        torch.cat([torch.tensor([[0.0, 0.0], [1.0, 1.0]]), far]),
        torch.tensor([100.0, 100.0, 0.5, 0.5]),
    )
    batch = _latent(16, 2)
    torch.manual_seed(0)
    codebook(batch)

    def is_batch_vector(rows: torch.Tensor) -> torch.Tensor:
        return (rows[:, None] == batch[None]).all(dim=-1).any(dim=-1)

    assert not is_batch_vector(codebook.embed[:2]).any()  # live codewords only moved by EMA
    assert is_batch_vector(codebook.embed[2:]).all()
    assert not torch.equal(codebook.embed[2], codebook.embed[3])
    # embed_avg was rescaled with them, so the next renormalisation keeps them in place (up to
    # the Laplace smoothing) while they stay unused.
    replaced = codebook.embed[2:].clone()
    codebook.threshold_ema_dead_code = 0
    codebook(torch.full((16, 2), -0.01))
    torch.testing.assert_close(codebook.embed[2:], replaced)


def test_evaluation_and_encode_leave_the_buffers_alone():
    torch.manual_seed(0)
    quantizer = ResidualVectorQuantizer(dimension=8, n_q=4, bins=16, kmeans_iters=5)
    quantizer.train()(_latent(2, 8, 40), 4)
    before = copy.deepcopy(quantizer.state_dict())
    x = _latent(2, 8, 40, seed=3)
    quantizer.eval()(x, 4)
    codes = quantizer.train().encode(x, 4)
    quantizer.decode(codes)
    for key, value in quantizer.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_codes_shapes_and_round_trip():
    torch.manual_seed(0)
    quantizer = ResidualVectorQuantizer(dimension=8, n_q=4, bins=16, kmeans_iters=5)
    x = _latent(3, 8, 40)
    trained = quantizer(x, 4)
    assert trained.codes.shape == (4, 3, 40) and trained.codes.dtype == torch.int64
    assert 0 <= trained.codes.min() and trained.codes.max() < 16
    quantizer.eval()
    result = quantizer(x, 2)
    codes = quantizer.encode(x, 2)
    assert torch.equal(result.codes, codes) and codes.shape == (2, 3, 40)
    assert torch.equal(result.quantized, quantizer.decode(codes))
    assert quantizer.decode(codes).shape == (3, 8, 40)
    # More codebooks leave a smaller residual.
    errors = [(x - quantizer.decode(quantizer.encode(x, n))).pow(2).mean() for n in (1, 2, 4)]
    assert errors[0] > errors[1] > errors[2]


def test_same_seed_same_codebooks_and_codes():
    def run(seed: int) -> tuple[dict, torch.Tensor]:
        torch.manual_seed(seed)
        quantizer = ResidualVectorQuantizer(dimension=8, n_q=4, bins=32, kmeans_iters=5)
        for step in range(3):
            quantizer(_latent(2, 8, 20, seed=step), 4)
        return quantizer.state_dict(), quantizer.encode(_latent(2, 8, 20, seed=9), 4)

    (state_a, codes_a), (state_b, codes_b), (state_c, _) = run(0), run(0), run(1)
    assert torch.equal(codes_a, codes_b)
    assert all(torch.equal(state_a[key], state_b[key]) for key in state_a)
    assert not all(torch.equal(state_a[key], state_c[key]) for key in state_a)


# Bandwidths, n_q and input checks


def test_bandwidths_of_the_paper():
    assert [bandwidth_to_n_q(bw, 75) for bw in (1.5, 3, 6, 12, 24)] == [2, 4, 8, 16, 32]
    assert [bandwidth_to_n_q(bw, 150) for bw in (3, 6, 12, 24)] == [2, 4, 8, 16]
    assert bandwidth_to_n_q(3.0, 46.875, bins=256) == 8
    assert [n_q_to_bandwidth(n, 75) for n in (2, 8, 32)] == [1.5, 6.0, 24.0]
    with pytest.raises(
        ValueError, match=r"5\.0 kbps is 6\.667 codebooks .* multiple of 0\.75 kbps"
    ):
        bandwidth_to_n_q(5.0, 75)
    with pytest.raises(ValueError, match="positive bandwidth"):
        bandwidth_to_n_q(0.0, 75)
    with pytest.raises(ValueError, match="at least one codebook, got n_q=0"):
        n_q_to_bandwidth(0, 75)


def test_sample_n_q_is_reproducible_and_covers_its_range():
    def draws(seed: int, **options) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        return [sample_n_q(32, generator, **options) for _ in range(400)]

    uniform = draws(0)
    assert uniform == draws(0) and uniform != draws(1)
    assert set(uniform) == set(range(1, 33))
    paper = draws(0, bandwidths=(1.5, 3, 6, 12, 24), frame_rate=75)
    assert set(paper) == {2, 4, 8, 16, 32}
    with pytest.raises(ValueError, match="need up to 64 codebooks at 75 Hz; the quantizer has 32"):
        sample_n_q(32, torch.Generator(), bandwidths=(48,), frame_rate=75)
    with pytest.raises(ValueError, match="needs the frame_rate"):
        sample_n_q(32, torch.Generator(), bandwidths=(6,))


def test_bad_inputs_name_what_was_expected():
    quantizer = _small_rvq()
    x = _latent(2, 4, 5)
    for n_q in (0, 4):
        with pytest.raises(ValueError, match=rf"n_q must be in 1\.\.3, got {n_q}"):
            quantizer.encode(x, n_q)
    for n_q in (True, 2.0):
        with pytest.raises(TypeError, match="n_q must be an int"):
            quantizer(x, n_q)
    with pytest.raises(ValueError, match=r"\(batch, 4, frames\), got shape \(2, 5, 5\)"):
        quantizer(_latent(2, 5, 5), 2)
    with pytest.raises(ValueError, match=r"\(n_q, batch, frames\), got shape \(2, 5\)"):
        quantizer.decode(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"n_q must be in 1\.\.3, got 4"):
        quantizer.decode(torch.zeros(4, 2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 8\), got values in \[8, 8\]"):
        quantizer.decode(torch.full((2, 2, 5), 8))
    with pytest.raises(TypeError, match="integer codes"):
        quantizer.decode(torch.zeros(2, 2, 5))


# The official encodec package


@pytest.fixture(scope="module")
def encodec() -> types.ModuleType:
    return official_encodec()


@pytest.fixture(scope="module")
def official_model(encodec):
    """The official 24 kHz model with random weights, built once (it takes seconds)."""
    return encodec.EncodecModel.encodec_model_24khz(pretrained=False)


@pytest.fixture(scope="module")
def seeded_official(official_model):
    """The official quantizer, its lazily initialised codebooks forced to seeded values.

    Running the official k-means (50 iterations over 1024 x 128 codebooks, 32 times) would take
    far longer than a unit test; what is compared here is everything after initialisation.
    """
    quantizer = copy.deepcopy(official_model.quantizer)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for depth, layer in enumerate(quantizer.vq.layers):
            codebook = layer._codebook
            codebook.embed.copy_(torch.randn(1024, 128, generator=generator) / (depth + 1))
            # Large clusters, so no code is dead: the official dead-code path is a no-op anyway.
            codebook.cluster_size.fill_(10.0)
            codebook.embed_avg.copy_(codebook.embed * 10.0)
            codebook.inited.fill_(1.0)
    return quantizer


@pytest.fixture
def official(seeded_official):
    """A fresh copy of the seeded official quantizer, free to be trained."""
    return copy.deepcopy(seeded_official)


@pytest.fixture
def ours(official) -> ResidualVectorQuantizer:
    """Our quantizer holding the official one's codebooks."""
    quantizer = ResidualVectorQuantizer()
    quantizer.load_state_dict(official.state_dict(), strict=True)
    return quantizer


def test_loads_the_official_quantizer_keys_strictly(official_model):
    prefix = "quantizer."
    state = {
        key[len(prefix) :]: value
        for key, value in official_model.state_dict().items()
        if key.startswith(prefix)
    }
    ours = ResidualVectorQuantizer()
    assert set(ours.state_dict()) == set(state) and len(state) == 4 * 32
    ours.load_state_dict(state, strict=True)
    assert not any(True for _ in ours.parameters())  # codebooks are buffers


def test_encode_decode_match_the_official_quantizer(official, ours):
    official.eval()
    ours.eval()
    x = _latent(2, 128, 30)
    for bandwidth in (1.5, 6.0, 24.0):
        expected = official.encode(x, 75, bandwidth)
        codes = ours.encode(x, bandwidth_to_n_q(bandwidth, 75))
        for batch in range(x.shape[0]):
            assert_codes_equal_up_to_near_ties(
                codes[:, batch], expected[:, batch], x[batch].T, official_codebooks(official.vq)
            )
        torch.testing.assert_close(ours.decode(codes), official.decode(expected), rtol=0, atol=1e-5)
    assert len(torch.unique(codes[0])) > 30 and len(torch.unique(codes[-1])) > 30


def test_training_step_matches_the_official_ema_update(official, ours):
    official.train()
    ours.train()
    x = _latent(2, 128, 30)
    expected = official(x, 75, 6.0)
    result = ours(x, 8)
    assert torch.equal(result.codes, expected.codes)
    torch.testing.assert_close(result.quantized, expected.quantized, rtol=0, atol=1e-5)
    # The official penalty is the mean over stages; ours defaults to the paper's sum.
    torch.testing.assert_close(result.layer_losses.mean(), expected.penalty)
    for stage, (mine, theirs) in enumerate(zip(ours.vq.layers, official.vq.layers, strict=True)):
        for name, value in mine._codebook.state_dict().items():
            reference = theirs._codebook.state_dict()[name]
            torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-6, msg=(stage, name))


def test_official_commitment_gradient_vanishes_beyond_the_first_stage(official, ours):
    """encodec issue #25, the reason our gradients differ from the official ones."""
    official.train()
    ours.train()
    gradients = []
    for layer_losses in (
        lambda x: official.vq(x, n_q=3)[2],
        lambda x: ours(x, 3).layer_losses,
    ):
        x = _latent(1, 128, 20).requires_grad_()
        layer_losses(x)[2].sum().backward()
        gradients.append(x.grad)
    assert gradients[0].abs().max() == 0
    assert gradients[1].abs().min() > 0


def test_codebook_sums_strip_for_shipping_and_restore_for_loading():
    torch.manual_seed(0)
    quantizer = ResidualVectorQuantizer(dimension=8, n_q=2, bins=16).train()
    for _ in range(5):
        quantizer(torch.randn(4, 8, 50), 2)
    state = quantizer.state_dict()
    shipped = strip_codebook_sums(state)
    assert len(state) - len(shipped) == 2 and not any("embed_avg" in key for key in shipped)
    restored = restore_codebook_sums(shipped)
    assert restored.keys() == state.keys()
    for key in state:
        # Equal up to the EMA's Laplace smoothing.
        torch.testing.assert_close(restored[key], state[key], rtol=1e-4, atol=1e-6)
    assert restore_codebook_sums(state) == state


def test_near_tie_check_accepts_ties_and_refuses_real_differences():
    """The faithfulness tests' code comparison: a different pick is allowed only where the
    two codewords are equally near, and the levels after it may then follow."""
    first = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 5.0]])  # 0 and 1 tie for x = (0, 0.5)
    second = torch.tensor([[0.0, 0.5], [1.0, 0.5], [-1.0, 0.5]])
    latents = torch.tensor([[0.0, 0.5], [0.9, 0.0]])
    expected = torch.tensor([[0, 0], [1, 0]])  # (levels, frames)
    tie_then_followed = torch.tensor([[1, 0], [2, 0]])
    codebooks = [first, second]
    assert_codes_equal_up_to_near_ties(
        tie_then_followed, expected, latents, codebooks, max_fraction=0.5
    )
    real_difference = torch.tensor([[0, 1], [1, 0]])  # frame 1: code 1 is 1.9 away, code 0 0.1
    with pytest.raises(AssertionError, match="frame 1, level 0.*no near-tie"):
        assert_codes_equal_up_to_near_ties(
            real_difference, expected, latents, codebooks, max_fraction=0.5
        )
    with pytest.raises(AssertionError, match="more than near-ties"):
        assert_codes_equal_up_to_near_ties(
            tie_then_followed, expected, latents, codebooks, max_fraction=0.4
        )
