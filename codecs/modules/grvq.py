"""Group-residual vector quantizer (Yang et al. 2023, HiFi-Codec, arXiv 2305.02765).

The latent ``(batch, dimension, frames)`` is split along its channels into ``groups`` equal
chunks; each chunk is quantized by its own
:class:`~bench.codecs.modules.rvq.ResidualVectorQuantizer` and the quantized chunks are
concatenated back. HiFi-Codec uses 2 groups of 2 residual levels, 4 codebooks in all. With one
group this is exactly the residual vector quantizer: same codes, same output, same commitment
loss, and its state dict loads into the single group.

The codebooks here are those of :mod:`~bench.codecs.modules.rvq` (EMA, k-means initialisation,
dead-code replacement), not the gradient-learned embeddings of the AcademiCodec code.
"""

from __future__ import annotations

import torch
from bench.codecs.modules.rvq import QuantizedResult, ResidualVectorQuantizer
from torch import nn


def _check_groups(groups: int) -> None:
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"groups must be an int, got {type(groups).__name__}")
    if groups < 1:
        raise ValueError(f"groups must be positive, got {groups}")


class GroupResidualVectorQuantizer(nn.Module):
    """``groups`` residual quantizers of ``n_q_per_group`` codebooks, one per channel chunk.

    Group ``g`` quantizes channels ``g * dimension // groups`` up to ``(g + 1) * dimension //
    groups``. Keyword arguments other than ``dimension``, ``n_q`` and ``bins`` (``decay``,
    ``kmeans_init``, ``commitment_reduction``, ...) configure every group's
    :class:`ResidualVectorQuantizer`.

    Codes are ordered group-major: ``codes[g * n_q + k]`` is level ``k`` of group ``g``, where
    ``n_q`` is the number of levels per group in use.
    """

    def __init__(
        self, dimension: int, groups: int, n_q_per_group: int, bins: int = 1024, **rvq_kwargs
    ) -> None:
        super().__init__()
        _check_groups(groups)
        if dimension < 1 or dimension % groups:
            raise ValueError(
                f"dimension must be a positive multiple of groups={groups}, got {dimension}"
            )
        self.dimension = dimension
        self.groups = groups
        self.n_q_per_group = n_q_per_group
        self.quantizers = nn.ModuleList(
            ResidualVectorQuantizer(
                dimension=dimension // groups, n_q=n_q_per_group, bins=bins, **rvq_kwargs
            )
            for _ in range(groups)
        )

    @property
    def n_q(self) -> int:
        """Total number of codebooks: ``groups * n_q_per_group``."""
        return self.groups * self.n_q_per_group

    @property
    def bins(self) -> int:
        """Codewords per codebook."""
        return self.quantizers[0].bins

    def forward(self, x: torch.Tensor, n_q_per_group: int | None = None) -> QuantizedResult:
        """Quantize ``x`` ``(batch, dimension, frames)`` with the first ``n_q_per_group`` levels
        of every group (all if None). In training mode this also updates every group's codebooks.

        ``codes`` is ``(groups * n_q, batch, frames)`` group-major; ``layer_losses`` is
        ``(groups * n_q,)`` in the same order; ``commitment_loss`` is the sum over groups of each
        group's commitment loss (each reduced over its levels as ``commitment_reduction`` says).
        """
        n_q = self._check_n_q_per_group(n_q_per_group)
        results = [
            quantizer(chunk, n_q)
            for quantizer, chunk in zip(self.quantizers, self._split(x), strict=True)
        ]
        return QuantizedResult(
            quantized=torch.cat([result.quantized for result in results], dim=1),
            codes=torch.cat([result.codes for result in results]),
            commitment_loss=torch.stack([result.commitment_loss for result in results]).sum(),
            layer_losses=torch.cat([result.layer_losses for result in results]),
        )

    def encode(self, x: torch.Tensor, n_q_per_group: int | None = None) -> torch.Tensor:
        """Codes ``(groups * n_q, batch, frames)`` int64, group-major, of ``x``
        ``(batch, dimension, frames)``. Never updates the codebooks."""
        n_q = self._check_n_q_per_group(n_q_per_group)
        return torch.cat(
            [
                quantizer.encode(chunk, n_q)
                for quantizer, chunk in zip(self.quantizers, self._split(x), strict=True)
            ]
        )

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latent ``(batch, dimension, frames)`` of group-major codes ``(groups * n_q, batch,
        frames)``."""
        if codes.dim() != 3:
            raise ValueError(
                f"expected codes shaped (groups * n_q, batch, frames), got shape "
                f"{tuple(codes.shape)}"
            )
        count = codes.shape[0]
        if count == 0 or count % self.groups or count > self.n_q:
            raise ValueError(
                f"expected a number of codebooks that is a multiple of groups={self.groups}, "
                f"at most {self.n_q}, got {count}"
            )
        return torch.cat(
            [
                quantizer.decode(group_codes)
                for quantizer, group_codes in zip(
                    self.quantizers, codes.chunk(self.groups), strict=True
                )
            ],
            dim=1,
        )

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dim() != 3 or x.shape[1] != self.dimension:
            raise ValueError(
                f"expected a latent shaped (batch, {self.dimension}, frames), "
                f"got shape {tuple(x.shape)}"
            )
        return x.chunk(self.groups, dim=1)

    def _check_n_q_per_group(self, n_q_per_group: int | None) -> int:
        if n_q_per_group is None:
            return self.n_q_per_group
        if isinstance(n_q_per_group, bool) or not isinstance(n_q_per_group, int):
            raise TypeError(f"n_q_per_group must be an int, got {type(n_q_per_group).__name__}")
        if not 1 <= n_q_per_group <= self.n_q_per_group:
            raise ValueError(
                f"n_q_per_group must be in 1..{self.n_q_per_group}, got {n_q_per_group}"
            )
        return n_q_per_group
