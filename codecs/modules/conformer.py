"""A bidirectional Conformer with rotary position embeddings, SoundStorm's backbone.

The block of Gulati et al., "Conformer: Convolution-augmented Transformer for Speech
Recognition" (2020): a macaron pair of half-step feed-forward modules around multi-head
self-attention and a convolution module, each pre-normed and residual, and a final layer norm::

    x = x + 1/2 FF(x);  x = x + MHSA(x);  x = x + Conv(x);  x = x + 1/2 FF(x);  x = LN(x)

As SoundStorm (Borsos et al. 2023, Sec. 3) uses it: attention is bidirectional, positions come
from rotary embeddings (Su et al., "RoFormer", 2021) applied to queries and keys in every
layer, so attention scores depend only on the distance between frames; the depthwise
convolution has kernel 5.

Unverified choices (the SoundStorm paper names none of these; each is a config field where a
user might want the other way):

- the convolution module normalises with a LayerNorm over channels where the Conformer paper
  has a BatchNorm, so a frame's output never depends on the other examples of a batch (whose
  token masks differ at every step) and training and inference normalise alike;
- the convolution is centred (``causal=False``); ``causal=True`` pads on the left only;
- rotary embeddings rotate the two halves of each head's dimensions (the GPT-NeoX layout) with
  base 10,000, on every dimension of the head;
- Swish (SiLU) in the feed-forward and convolution modules and a GLU after the first pointwise
  convolution, as in the Conformer paper; dropout ``dropout`` after each module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ConformerConfig:
    """The sizes of a Conformer: ``dim`` wide, ``heads`` attention heads, ``feedforward``
    hidden units per feed-forward module, a depthwise convolution of ``conv_kernel`` taps."""

    dim: int = 1024
    heads: int = 16
    layers: int = 12
    feedforward: int = 4096
    conv_kernel: int = 5
    causal: bool = False
    dropout: float = 0.0
    rotary_base: float = 10_000.0

    def __post_init__(self) -> None:
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(
                f"dim must split into {self.heads} heads of an even width, got dim={self.dim}"
            )
        if self.conv_kernel < 1 or (not self.causal and self.conv_kernel % 2 == 0):
            raise ValueError(
                "conv_kernel: expected a positive kernel, odd unless causal (a centred "
                f"convolution needs as many taps on each side), got {self.conv_kernel}"
            )

    def to_json(self) -> dict:
        return asdict(self)


def rotary_embedding(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate ``x`` ``(..., frames, head_dim)`` by its frames' ``positions`` ``(frames,)``.

    Dimension ``i`` of the first half pairs with dimension ``i`` of the second half and turns
    by ``position * base ** (-2 i / head_dim)``; the dot product of a rotated query and key
    then depends on their positions only through the difference.
    """
    half = x.shape[-1] // 2
    frequencies = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * frequencies
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class FeedForward(nn.Module):
    """LayerNorm, Linear, Swish, dropout, Linear, dropout."""

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(config.dim)
        self.linear1 = nn.Linear(config.dim, config.feedforward)
        self.linear2 = nn.Linear(config.feedforward, config.dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(F.silu(self.linear1(self.norm(x))))
        return self.dropout(self.linear2(hidden))


class RotarySelfAttention(nn.Module):
    """Pre-normed bidirectional multi-head self-attention with rotary queries and keys."""

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.rotary_base = config.rotary_base
        self.norm = nn.LayerNorm(config.dim)
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.out = nn.Linear(config.dim, config.dim)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, dim = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, frames, 3, self.heads, dim // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, frames, head_dim)
        positions = torch.arange(frames, device=x.device)
        query = rotary_embedding(query, positions, self.rotary_base)
        key = rotary_embedding(key, positions, self.rotary_base)
        attended = F.scaled_dot_product_attention(
            query, key, value, dropout_p=self.dropout if self.training else 0.0
        )
        out = self.out(attended.transpose(1, 2).reshape(batch, frames, dim))
        return F.dropout(out, self.dropout, self.training)


class ConvolutionModule(nn.Module):
    """LayerNorm, pointwise conv to 2x width, GLU, depthwise conv of ``conv_kernel`` taps
    (causal or centred), LayerNorm, Swish, pointwise conv, dropout: ``(batch, frames, dim)``."""

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        kernel = config.conv_kernel
        # Causal: every tap on the past; centred: half on each side (the kernel is odd).
        self.padding = (kernel - 1, 0) if config.causal else ((kernel - 1) // 2,) * 2
        self.norm = nn.LayerNorm(config.dim)
        self.pointwise_in = nn.Conv1d(config.dim, 2 * config.dim, 1)
        self.depthwise = nn.Conv1d(config.dim, config.dim, kernel, groups=config.dim)
        self.depthwise_norm = nn.LayerNorm(config.dim)
        self.pointwise_out = nn.Conv1d(config.dim, config.dim, 1)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.glu(self.pointwise_in(self.norm(x).transpose(1, 2)), dim=1)
        hidden = self.depthwise(F.pad(hidden, self.padding))
        hidden = F.silu(self.depthwise_norm(hidden.transpose(1, 2))).transpose(1, 2)
        return self.dropout(self.pointwise_out(hidden).transpose(1, 2))


class ConformerBlock(nn.Module):
    """Half feed-forward, self-attention, convolution, half feed-forward, LayerNorm."""

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        self.feedforward1 = FeedForward(config)
        self.attention = RotarySelfAttention(config)
        self.convolution = ConvolutionModule(config)
        self.feedforward2 = FeedForward(config)
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.feedforward1(x)
        x = x + self.attention(x)
        x = x + self.convolution(x)
        x = x + 0.5 * self.feedforward2(x)
        return self.norm(x)


class Conformer(nn.Module):
    """``config.layers`` Conformer blocks: ``(batch, frames, dim)`` -> the same shape."""

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ConformerBlock(config) for _ in range(config.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x
