"""Residual vector quantizer with EMA codebooks (Zeghidour et al. 2021, SoundStream, Algorithm 1).

Follows EnCodec (Défossez et al. 2022): 1024-entry codebooks updated by an exponential moving
average (decay 0.99, Laplace smoothing 1e-5), k-means initialisation on the first training batch,
replacement of dead codes by vectors of the current batch, a straight-through estimator and a
commitment loss per residual step. The module tree and buffer names match the official
``encodec`` package, so its ``quantizer.*`` state dict loads here with ``strict=True``.

Three places depart from the official code, each on purpose:

- gradients: the official code applies the straight-through estimator inside every stage, which
  makes each residual's gradient with respect to the input cancel to zero, so only the first
  stage's commitment loss reaches the encoder (encodec issue #25). Here every stage's codeword is
  a constant, the residuals keep an identity Jacobian with respect to the input, and the
  straight-through estimator is applied once, to the sum (the fix audiocraft adopted);
- k-means initialisation stores ``embed_avg = centroid * cluster_size`` so that
  ``embed == embed_avg / cluster_size`` holds from the first update; the official code stores the
  bare centroids, which shrinks every codeword by its cluster size on the first update;
- dead codes are replaced after the EMA update, ``embed_avg`` included; the official code
  replaces them before the update, whose renormalisation of ``embed`` then undoes the replacement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

CommitmentReduction = Literal["sum", "mean"]


@dataclass(frozen=True)
class QuantizedResult:
    """What :meth:`ResidualVectorQuantizer.forward` returns.

    ``quantized`` is ``(batch, dimension, frames)``: the sum of the selected codewords, carrying
    the straight-through gradient to the input. ``codes`` is ``(n_q, batch, frames)`` int64.
    ``layer_losses`` is ``(n_q,)``: each stage's commitment MSE. ``commitment_loss`` is their sum
    or mean, as the quantizer's ``commitment_reduction`` says.
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    commitment_loss: torch.Tensor
    layer_losses: torch.Tensor


def bandwidth_to_n_q(bandwidth_kbps: float, frame_rate: float, bins: int = 1024) -> int:
    """The number of codebooks that spends ``bandwidth_kbps`` at ``frame_rate`` Hz.

    Each codebook costs ``frame_rate * log2(bins)`` bit/s (750 bit/s for EnCodec 24 kHz), so
    6 kbps is 8 codebooks. A bandwidth that is not a whole number of codebooks raises, rather than
    silently flooring to a lower bitrate than the one asked for.
    """
    per_codebook = frame_rate * math.log2(bins)
    if not bandwidth_kbps > 0 or not per_codebook > 0:
        raise ValueError(
            f"expected a positive bandwidth and frame rate, got {bandwidth_kbps} kbps "
            f"at {frame_rate} Hz with {bins} bins"
        )
    n_q = bandwidth_kbps * 1000 / per_codebook
    if abs(n_q - round(n_q)) > 1e-6 * n_q:
        raise ValueError(
            f"{bandwidth_kbps} kbps is {n_q:.4g} codebooks of {per_codebook:g} bit/s "
            f"({frame_rate} Hz x {math.log2(bins):g} bits); expected a multiple of "
            f"{per_codebook / 1000:g} kbps"
        )
    return round(n_q)


def n_q_to_bandwidth(n_q: int, frame_rate: float, bins: int = 1024) -> float:
    """The bandwidth in kbps of ``n_q`` codebooks of ``bins`` entries at ``frame_rate`` Hz."""
    if n_q < 1:
        raise ValueError(f"expected at least one codebook, got n_q={n_q}")
    return n_q * frame_rate * math.log2(bins) / 1000


def sample_n_q(
    n_q: int,
    generator: torch.Generator,
    bandwidths: Sequence[float] | None = None,
    frame_rate: float | None = None,
    bins: int = 1024,
    groups: int = 1,
) -> int:
    """Draw the number of codebooks for one training batch (quantizer dropout).

    With ``bandwidths`` (kbps) and ``frame_rate``, one bandwidth is drawn uniformly, as in the
    EnCodec paper ({1.5, 3, 6, 12, 24} at 24 kHz). Without them, n_q is drawn from U{1..n_q}, as
    audiocraft's ``q_dropout``; a group-residual quantizer of ``groups`` groups draws levels per
    group, so n_q is a multiple of ``groups``. ``n_q`` is the quantizer's maximum;
    ``generator`` makes the schedule reproducible independently of the global random state.
    """
    if n_q < 1:
        raise ValueError(f"expected at least one codebook, got n_q={n_q}")
    if bandwidths is None:
        if groups < 1 or n_q % groups:
            raise ValueError(f"expected n_q={n_q} to be a positive multiple of groups={groups}")
        levels = int(torch.randint(1, n_q // groups + 1, (1,), generator=generator))
        return levels * groups
    if frame_rate is None:
        raise ValueError("sampling from bandwidths needs the frame_rate (Hz) to convert them")
    if not bandwidths:
        raise ValueError("expected at least one bandwidth to sample from, got none")
    choices = [bandwidth_to_n_q(bandwidth, frame_rate, bins) for bandwidth in bandwidths]
    if max(choices) > n_q:
        raise ValueError(
            f"bandwidths {list(bandwidths)} kbps need up to {max(choices)} codebooks at "
            f"{frame_rate} Hz; the quantizer has {n_q}"
        )
    return choices[int(torch.randint(len(choices), (1,), generator=generator))]


# The EMA sum of each code's vectors: training state that inference never reads (it reads
# ``embed``), and as large as the codebook itself.
_CODEBOOK_SUMS = "._codebook.embed_avg"
_CODEWORDS = "._codebook.embed"


def strip_codebook_sums(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` without the codebooks' EMA sums, for shipping a model for inference."""
    return {key: value for key, value in state_dict.items() if not key.endswith(_CODEBOOK_SUMS)}


def restore_codebook_sums(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` with any EMA sum that :func:`strip_codebook_sums` removed put back.

    Rebuilt as ``embed * cluster_size``, which the EMA update keeps equal to the stored sum
    up to its Laplace smoothing (1e-5 per code); a state that has its sums is returned as is.
    """
    restored = dict(state_dict)
    for key, codewords in state_dict.items():
        if not key.endswith(_CODEWORDS):
            continue
        prefix = key[: -len(_CODEWORDS)]
        sums_key = prefix + _CODEBOOK_SUMS
        if sums_key not in restored:
            counts = state_dict[prefix + "._codebook.cluster_size"]
            restored[sums_key] = codewords * counts.to(codewords.dtype).unsqueeze(1)
    return restored


def _squared_distances(vectors: torch.Tensor, codewords: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` squared Euclidean distances, by expansion to avoid an ``(N, K, D)`` tensor."""
    return (
        vectors.pow(2).sum(1, keepdim=True)
        - 2 * vectors @ codewords.t()
        + codewords.pow(2).sum(1).unsqueeze(0)
    )


def _sample_vectors(vectors: torch.Tensor, num: int) -> torch.Tensor:
    """``num`` rows of ``vectors``, distinct when there are enough of them."""
    if vectors.shape[0] >= num:
        indices = torch.randperm(vectors.shape[0], device=vectors.device)[:num]
    else:
        indices = torch.randint(0, vectors.shape[0], (num,), device=vectors.device)
    return vectors[indices]


def kmeans(
    vectors: torch.Tensor, num_clusters: int, num_iters: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means from centroids drawn among ``vectors`` ``(N, D)``.

    Returns the centroids ``(num_clusters, D)`` and how many vectors each one attracts.
    """
    centroids = _sample_vectors(vectors, num_clusters)
    for _ in range(num_iters):
        nearest = _squared_distances(vectors, centroids).argmin(dim=1)
        counts = torch.bincount(nearest, minlength=num_clusters)
        sums = torch.zeros_like(centroids).index_add_(0, nearest, vectors)
        means = sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype)
        # An empty cluster keeps its centroid rather than collapsing to the origin.
        centroids = torch.where((counts > 0).unsqueeze(1), means, centroids)
    nearest = _squared_distances(vectors, centroids).argmin(dim=1)
    return centroids, torch.bincount(nearest, minlength=num_clusters)


class EuclideanCodebook(nn.Module):
    """A codebook of ``codebook_size`` vectors of ``dim``, learned by EMA rather than gradients.

    The codewords are buffers: ``embed`` ``(codebook_size, dim)`` is kept equal to ``embed_avg``
    (EMA of the sum of the vectors assigned to each code) divided by ``cluster_size`` (EMA of
    their count, Laplace-smoothed so that an unused code never divides by zero). ``inited`` is a
    float ``(1,)`` flag, as in the official checkpoints.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        kmeans_init: bool = True,
        kmeans_iters: int = 50,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        threshold_ema_dead_code: float = 2,
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.kmeans_iters = kmeans_iters
        self.decay = decay
        self.epsilon = epsilon
        self.threshold_ema_dead_code = threshold_ema_dead_code
        if kmeans_init:
            embed = torch.zeros(codebook_size, dim)
        else:
            embed = nn.init.kaiming_uniform_(torch.empty(codebook_size, dim))
        self.register_buffer("inited", torch.tensor([float(not kmeans_init)]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", embed)
        # Zero, not a copy of ``embed``: with no counts yet, ``embed_avg = embed * cluster_size``.
        self.register_buffer("embed_avg", torch.zeros(codebook_size, dim))

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        """Indices ``(N,)`` int64 of the codewords nearest to ``vectors`` ``(N, dim)``."""
        # |v - c|^2 = |v|^2 - 2 v.c + |c|^2, and |v|^2 is the same for every codeword: one
        # matrix product with the codeword norms as its bias ranks them all. min(dim) picks
        # the same first minimum as argmin, in half the time on CPU.
        embed = self.embed
        distances = torch.addmm(embed.pow(2).sum(1), vectors, embed.t(), alpha=-2)
        return distances.min(dim=1).indices

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codewords ``(*codes.shape, dim)`` of ``codes``."""
        return F.embedding(codes, self.embed)

    def forward(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantize ``vectors`` ``(N, dim)``: ``(codewords (N, dim), codes (N,))``.

        In training mode this first initialises the codebook by k-means if it has not been, then
        updates it towards ``vectors``; the codewords returned are those from before the update.
        No gradient flows into the codebook.
        """
        vectors = vectors.detach()
        if self.training and not self.inited.item():
            self._init_by_kmeans(vectors)
        codes = self.encode(vectors)
        codewords = self.decode(codes)
        if self.training:
            self._update(vectors, codes)
        return codewords, codes

    @torch.no_grad()
    def _init_by_kmeans(self, vectors: torch.Tensor) -> None:
        centroids, counts = kmeans(vectors, self.codebook_size, self.kmeans_iters)
        counts = counts.to(centroids.dtype)
        self.embed.copy_(centroids)
        self.embed_avg.copy_(centroids * counts.unsqueeze(1))
        self.cluster_size.copy_(counts)
        self.inited.fill_(1.0)

    @torch.no_grad()
    def _update(self, vectors: torch.Tensor, codes: torch.Tensor) -> None:
        counts = torch.bincount(codes, minlength=self.codebook_size).to(vectors.dtype)
        sums = torch.zeros_like(self.embed_avg).index_add_(0, codes, vectors)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Under data parallelism every worker applies the same update, from the vectors of
            # all workers' batches; DDP's buffer broadcast then has nothing left to correct.
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (
            (self.cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        )
        self.embed.copy_(self.embed_avg / smoothed.unsqueeze(1))
        if self.threshold_ema_dead_code > 0:
            self._replace_dead_codes(vectors, smoothed)

    def _replace_dead_codes(self, vectors: torch.Tensor, smoothed: torch.Tensor) -> None:
        dead = self.cluster_size < self.threshold_ema_dead_code
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        replacements = _sample_vectors(vectors, num_dead)
        self.embed[dead] = replacements
        # Rescale the sum too, so the next update's renormalisation keeps the new codeword.
        self.embed_avg[dead] = replacements * smoothed[dead].unsqueeze(1)


class VectorQuantization(nn.Module):
    """One quantization stage on ``(batch, dim, frames)``, optionally in a smaller codebook space.

    When ``codebook_dim`` differs from ``dim``, linear maps ``project_in`` and ``project_out``
    surround the codebook; the commitment loss is measured in the codebook space, and the
    straight-through estimator acts there too (as DAC's factorised codes do): a loss on the
    output then trains both projections and reaches the input through
    ``project_out . project_in``. A straight-through identity around the whole stage would
    tell the encoder that the stage returns its input, which a rank-``codebook_dim`` map
    cannot, and would leave ``project_in`` to the commitment loss alone, which is minimised
    by discarding the input: the first FlowMAC demo's quantizer passed on nothing.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 50,
        threshold_ema_dead_code: float = 2,
    ) -> None:
        super().__init__()
        codebook_dim = dim if codebook_dim is None else codebook_dim
        # Identity has no state, so an unprojected stage has exactly the official keys.
        self.project_in: nn.Module = nn.Identity()
        self.project_out: nn.Module = nn.Identity()
        self.projected = codebook_dim != dim
        if self.projected:
            self.project_in = nn.Linear(dim, codebook_dim)
            self.project_out = nn.Linear(codebook_dim, dim)
        self._codebook = EuclideanCodebook(
            codebook_dim,
            codebook_size,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            decay=decay,
            epsilon=epsilon,
            threshold_ema_dead_code=threshold_ema_dead_code,
        )
        self.codebook_size = codebook_size

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``(batch, frames)`` int64 of ``x`` ``(batch, dim, frames)``."""
        latent = self.project_in(x.transpose(1, 2))
        return self._codebook.encode(latent.flatten(0, 1)).view(latent.shape[:2])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``(batch, dim, frames)`` vectors of ``codes`` ``(batch, frames)``."""
        return self.project_out(self._codebook.decode(codes)).transpose(1, 2)

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(quantized, codes, commitment_loss)`` of ``x`` ``(batch, dim, frames)``.

        Unprojected, ``quantized`` is the codeword, a constant with respect to ``x``: the
        residual quantizer applies the straight-through estimator once, to its sum. Projected,
        the estimator acts in the codebook space, so ``quantized`` carries the gradient of
        ``project_out . project_in`` to ``x``. The commitment loss MSE(z, stopgrad(q)) is
        differentiable with respect to ``x`` (and ``project_in``).
        """
        latent = self.project_in(x.transpose(1, 2))
        codewords, codes = self._codebook(latent.flatten(0, 1))
        codewords = codewords.view(latent.shape)
        commitment_loss = F.mse_loss(latent, codewords)
        if self.projected:
            codewords = latent + (codewords - latent).detach()
        quantized = self.project_out(codewords).transpose(1, 2)
        return quantized, codes.view(latent.shape[:2]), commitment_loss

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :meth:`quantize`, with the straight-through gradient to ``x`` (the identity when
        unprojected)."""
        quantized, codes, commitment_loss = self.quantize(x)
        if self.projected:
            return quantized, codes, commitment_loss
        return x - x.detach() + quantized, codes, commitment_loss


class ResidualVectorQuantization(nn.Module):
    """``num_quantizers`` stages, each quantizing what the previous ones left (SoundStream Alg. 1).

    Keyword arguments other than ``num_quantizers`` configure every :class:`VectorQuantization`.
    """

    def __init__(self, *, num_quantizers: int, **stage_kwargs) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            VectorQuantization(**stage_kwargs) for _ in range(num_quantizers)
        )

    def forward(self, x: torch.Tensor, n_q: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(quantized (B, D, T), codes (n_q, B, T), layer_losses (n_q,))`` of the first n_q.

        Each residual is ``x`` minus detached stage outputs, so its Jacobian is the identity:
        each stage's commitment loss reaches ``x``. Unprojected, the codewords are constants
        and the straight-through estimator is applied once, to the sum, so that a loss on the
        output passes its gradient to ``x`` unchanged. Per-stage STE on the output, as in the
        official code, would make ``residual - quantized`` a constant and cut stages 2..n_q off
        (issue #25). Projected stages carry their own estimator in the codebook space (see
        :class:`VectorQuantization`), and the sum is returned as it is.
        """
        residual = x
        quantized = torch.zeros_like(x)
        all_codes, losses = [], []
        for layer in self.layers[:n_q]:
            stage, codes, loss = layer.quantize(residual)
            residual = residual - stage.detach()
            quantized = quantized + stage
            all_codes.append(codes)
            losses.append(loss)
        if not self.layers[0].projected:
            quantized = x - x.detach() + quantized
        return quantized, torch.stack(all_codes), torch.stack(losses)

    def encode(self, x: torch.Tensor, n_q: int) -> torch.Tensor:
        """Codes ``(n_q, batch, frames)`` int64 of ``x`` ``(batch, dim, frames)``."""
        residual = x
        all_codes = []
        for layer in self.layers[:n_q]:
            codes = layer.encode(residual)
            residual = residual - layer.decode(codes)
            all_codes.append(codes)
        return torch.stack(all_codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum ``(batch, dim, frames)`` of the codewords of ``codes`` ``(n_q, batch, frames)``."""
        quantized = self.layers[0].decode(codes[0])
        for layer, stage_codes in zip(self.layers[1:], codes[1:], strict=False):
            quantized = quantized + layer.decode(stage_codes)
        return quantized


class ResidualVectorQuantizer(nn.Module):
    """The EnCodec quantizer: up to ``n_q`` codebooks of ``bins`` codewords over ``dimension``.

    ``commitment_reduction`` combines the per-stage commitment MSEs: ``"sum"`` (default) as the
    paper writes the loss, a sum over residual steps; ``"mean"`` as the official code computes it.
    ``codebook_dim`` projects each stage into a smaller space (EnCodec does not).
    """

    def __init__(
        self,
        dimension: int = 128,
        n_q: int = 32,
        bins: int = 1024,
        decay: float = 0.99,
        kmeans_init: bool = True,
        kmeans_iters: int = 50,
        threshold_ema_dead_code: float = 2,
        *,
        epsilon: float = 1e-5,
        codebook_dim: int | None = None,
        commitment_reduction: CommitmentReduction = "sum",
    ) -> None:
        super().__init__()
        if commitment_reduction not in ("sum", "mean"):
            raise ValueError(
                f"commitment_reduction must be 'sum' or 'mean', got {commitment_reduction!r}"
            )
        for name, value in (("dimension", dimension), ("n_q", n_q), ("bins", bins)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        self.dimension = dimension
        self.n_q = n_q
        self.bins = bins
        self.commitment_reduction = commitment_reduction
        self.vq = ResidualVectorQuantization(
            num_quantizers=n_q,
            dim=dimension,
            codebook_size=bins,
            codebook_dim=codebook_dim,
            decay=decay,
            epsilon=epsilon,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            threshold_ema_dead_code=threshold_ema_dead_code,
        )

    def forward(self, x: torch.Tensor, n_q: int | None = None) -> QuantizedResult:
        """Quantize ``x`` ``(batch, dimension, frames)`` with the first ``n_q`` codebooks (all if
        None). In training mode this also initialises and updates the codebooks."""
        n_q = self._check_n_q(n_q)
        self._check_latent(x)
        quantized, codes, layer_losses = self.vq(x, n_q)
        reduce = torch.sum if self.commitment_reduction == "sum" else torch.mean
        return QuantizedResult(quantized, codes, reduce(layer_losses), layer_losses)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """Codes ``(n_q, batch, frames)`` int64 of ``x`` ``(batch, dimension, frames)``.

        Never updates the codebooks, whatever the mode."""
        n_q = self._check_n_q(n_q)
        self._check_latent(x)
        return self.vq.encode(x, n_q)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latent ``(batch, dimension, frames)`` of ``codes`` ``(n_q, batch, frames)``."""
        if codes.dim() != 3:
            raise ValueError(
                f"expected codes shaped (n_q, batch, frames), got shape {tuple(codes.shape)}"
            )
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise TypeError(f"expected integer codes, got dtype {codes.dtype}")
        self._check_n_q(codes.shape[0])
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.bins):
            raise ValueError(
                f"codes must lie in [0, {self.bins}), got values in "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )
        return self.vq.decode(codes.long())

    def _check_n_q(self, n_q: int | None) -> int:
        if n_q is None:
            return self.n_q
        if isinstance(n_q, bool) or not isinstance(n_q, int):
            raise TypeError(f"n_q must be an int, got {type(n_q).__name__}")
        if not 1 <= n_q <= self.n_q:
            raise ValueError(f"n_q must be in 1..{self.n_q}, got {n_q}")
        return n_q

    def _check_latent(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.dimension:
            raise ValueError(
                f"expected a latent shaped (batch, {self.dimension}, frames), "
                f"got shape {tuple(x.shape)}"
            )
