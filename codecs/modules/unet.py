"""A 1-D U-Net velocity network for conditional flow matching, in the style of Matcha-TTS
(Mehta et al., "Matcha-TTS: A fast TTS architecture with conditional flow matching", ICASSP
2024), which is how FlowMAC (Pia et al., ICASSP 2025) describes its CFM decoder: residual 1-D
conv blocks and transformer blocks with snake-beta activations, a sinusoidal time embedding
as in Grad-TTS, the condition (FlowMAC's coarse mel) concatenated to the noisy input, and an
output through a conv, group norm and Mish, then a 1x1 conv.

Unverified choices, all fields of :class:`UNetConfig` (FlowMAC's sizes are not published
beyond the above): widths per level, one transformer block per level, two middle blocks, 4
heads of 64, dropout 0.05, group norm in 8 groups, time scaled by 1000 before the embedding
(Grad-TTS), and the embedding's cosines before its sines (the shared
``transformer.sinusoidal_embedding``; the order only permutes a learnt layer's inputs).
Attention is bidirectional: the decoder sees the whole coarse mel, as in Matcha-TTS.

Sequences of any length are taken: the frames are padded at the end to a multiple of the
total downsampling and masked, so padded or masked frames never reach the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from bench.codecs.modules.transformer import sinusoidal_embedding
from torch import nn

GROUPS = 8
TIME_MAX_PERIOD = 10_000.0


@dataclass(frozen=True)
class UNetConfig:
    """Sizes of the U-Net; ``channels`` has one width per level (the last is not downsampled)."""

    in_channels: int
    condition_channels: int
    channels: tuple[int, ...] = (256, 256)
    transformer_blocks: int = 1
    mid_blocks: int = 2
    num_heads: int = 4
    head_dim: int = 64
    dropout: float = 0.05
    time_scale: float = 1000.0

    def __post_init__(self) -> None:
        if not self.channels or any(width % GROUPS for width in self.channels):
            raise ValueError(
                f"expected one width per level, each a multiple of {GROUPS} (group norm), "
                f"got {self.channels}"
            )
        if self.channels[0] % 2:
            raise ValueError(f"expected an even first width (time embedding), got {self.channels}")


class SnakeBeta(nn.Module):
    """``x + sin^2(alpha x) / beta`` per channel of ``(batch, channels, frames)``, with
    ``alpha`` and ``beta`` learnt on a log scale from 1 (BigVGAN's snake-beta)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.zeros(channels, 1))
        self.log_beta = nn.Parameter(torch.zeros(channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha, beta = self.log_alpha.exp(), self.log_beta.exp()
        return x + torch.sin(alpha * x).pow(2) / (beta + 1e-9)


def masked_group_norm(x: torch.Tensor, mask: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """``norm`` with its statistics taken over the valid frames only, so that the padding of
    a batch (or of the U-Net's own rounding up) does not change the valid frames' values."""
    batch, channels, frames = x.shape
    grouped = x.reshape(batch, norm.num_groups, -1, frames)
    weights = mask[:, None]  # (batch, 1, 1, frames)
    count = (weights.sum(dim=-1, keepdim=True) * grouped.shape[2]).clamp(min=1)
    mean = (grouped * weights).sum(dim=(2, 3), keepdim=True) / count
    variance = ((grouped - mean).pow(2) * weights).sum(dim=(2, 3), keepdim=True) / count
    normalised = ((grouped - mean) / torch.sqrt(variance + norm.eps)).reshape(x.shape)
    return normalised * norm.weight[:, None] + norm.bias[:, None]


class ConvNormMish(nn.Module):
    """Conv (kernel 3), group norm over the valid frames, Mish, on masked frames."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim_in, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(GROUPS, dim_out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.mish(masked_group_norm(self.conv(x * mask), mask, self.norm)) * mask


class ResnetBlock(nn.Module):
    """Two conv blocks with the time embedding added between them, plus a 1x1 skip."""

    def __init__(self, dim_in: int, dim_out: int, time_dim: int) -> None:
        super().__init__()
        self.time = nn.Sequential(nn.Mish(), nn.Linear(time_dim, dim_out))
        self.first = ConvNormMish(dim_in, dim_out)
        self.second = ConvNormMish(dim_out, dim_out)
        self.skip = nn.Conv1d(dim_in, dim_out, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        hidden = self.first(x, mask) + self.time(time)[:, :, None]
        return self.second(hidden, mask) + self.skip(x * mask)


class TransformerBlock(nn.Module):
    """Pre-norm bidirectional self-attention and a snake-beta feed-forward, on
    ``(batch, channels, frames)`` with padded frames masked out of the keys."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.norm_attention = nn.LayerNorm(dim)
        self.to_inner = nn.Linear(dim, inner)
        self.attention = nn.MultiheadAttention(inner, num_heads, dropout, batch_first=True)
        self.from_inner = nn.Linear(inner, dim)
        self.norm_feed_forward = nn.LayerNorm(dim)
        self.expand = nn.Linear(dim, 4 * dim)
        self.activation = SnakeBeta(4 * dim)
        self.contract = nn.Linear(4 * dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        frames = x.transpose(1, 2)
        query = self.to_inner(self.norm_attention(frames))
        attended, _ = self.attention(
            query, query, query, key_padding_mask=~mask[:, 0].bool(), need_weights=False
        )
        frames = frames + self.dropout(self.from_inner(attended))
        expanded = self.activation(self.expand(self.norm_feed_forward(frames)).transpose(1, 2))
        frames = frames + self.dropout(self.contract(expanded.transpose(1, 2)))
        return frames.transpose(1, 2) * mask


class Level(nn.Module):
    """A resnet block followed by transformer blocks, then a resampling conv."""

    def __init__(
        self, config: UNetConfig, dim_in: int, dim_out: int, time_dim: int, resample: nn.Module
    ) -> None:
        super().__init__()
        self.resnet = ResnetBlock(dim_in, dim_out, time_dim)
        self.transformers = nn.ModuleList(
            TransformerBlock(dim_out, config.num_heads, config.head_dim, config.dropout)
            for _ in range(config.transformer_blocks)
        )
        self.resample = resample

    def features(self, x: torch.Tensor, mask: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        x = self.resnet(x, mask, time)
        for transformer in self.transformers:
            x = transformer(x, mask)
        return x


class UNet1d(nn.Module):
    """The velocity ``v(x_t, t, condition)`` of ``(batch, in_channels, frames)`` features under
    a ``(batch, condition_channels, frames)`` condition at times ``t`` ``(batch,)``."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.channels
        time_dim = 4 * widths[0]
        self.time_mlp = nn.Sequential(
            nn.Linear(widths[0], time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        inputs = [config.in_channels + config.condition_channels, *widths[:-1]]
        self.down = nn.ModuleList()
        for level, (dim_in, dim_out) in enumerate(zip(inputs, widths, strict=True)):
            last = level == len(widths) - 1
            resample = nn.Conv1d(dim_out, dim_out, 3, stride=1 if last else 2, padding=1)
            self.down.append(Level(config, dim_in, dim_out, time_dim, resample))
        self.mid = nn.ModuleList(
            Level(config, widths[-1], widths[-1], time_dim, nn.Identity())
            for _ in range(config.mid_blocks)
        )
        self.up = nn.ModuleList()
        for level, width in enumerate(reversed(widths)):
            last = level == len(widths) - 1
            below = list(reversed(widths))[level + 1] if not last else widths[0]
            resample = (
                nn.Conv1d(below, below, 3, padding=1)
                if last
                else nn.ConvTranspose1d(below, below, 4, stride=2, padding=1)
            )
            self.up.append(Level(config, 2 * width, below, time_dim, resample))
        self.final = ConvNormMish(widths[0], widths[0])
        self.project = nn.Conv1d(widths[0], config.in_channels, 1)

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.config.channels) - 1)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        condition: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, channels, frames = x.shape
        expected = (batch, self.config.condition_channels, frames)
        if frames == 0 or channels != self.config.in_channels or condition.shape != expected:
            raise ValueError(
                f"expected x (batch, {self.config.in_channels}, frames > 0) and a condition "
                f"{expected}, got {tuple(x.shape)} and {tuple(condition.shape)}"
            )
        if mask is None:
            mask = x.new_ones(batch, 1, frames)
        padding = -frames % self.downsampling
        hidden = F.pad(torch.cat([x, condition], dim=1), (0, padding))
        mask = F.pad(mask.to(x.dtype), (0, padding))
        embedded = sinusoidal_embedding(
            self.config.time_scale * t, self.config.channels[0], TIME_MAX_PERIOD
        )
        time = self.time_mlp(embedded.to(x.dtype))

        # The mask of each level: frames are halved by every level's resampling but the last.
        masks = [mask]
        for _ in self.down[:-1]:
            masks.append(masks[-1][:, :, ::2])
        skips = []
        for level, level_mask in zip(self.down, masks, strict=True):
            hidden = level.features(hidden, level_mask, time)
            skips.append(hidden)
            hidden = level.resample(hidden * level_mask)
        for level in self.mid:
            hidden = level.features(hidden, masks[-1], time)
        for level, level_mask in zip(self.up, reversed(masks), strict=True):
            hidden = level.features(torch.cat([hidden, skips.pop()], dim=1), level_mask, time)
            hidden = level.resample(hidden * level_mask)
        hidden = self.final(hidden, mask)
        return (self.project(hidden) * mask)[:, :, :frames]
