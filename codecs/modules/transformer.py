"""A streaming transformer with a sliding causal window, the shared block of the token models.

The architecture of the language model in the official EnCodec code (Défossez et al., 2022,
Sec. 3.3): post-norm layers (``x = norm1(x + attn(x)); x = norm2(x + ffn(x))``, GELU, no
dropout) after an input LayerNorm and sinusoidal positions. Each layer attends to the new
frames and at most ``past_context`` frames before each, and keeps the projected keys and values
of that window between calls, so coding frame by frame gives what one offline pass gives.

Module and parameter names follow the official ``StreamingTransformerEncoder`` (``norm_in``,
``layers.{i}`` with ``self_attn.in_proj_weight``/``in_proj_bias``/``out_proj``, ``linear1``,
``linear2``, ``norm1``, ``norm2``), so official weights load as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Per layer, the projected keys and values of the frames a new frame may attend to, each
# (batch, heads, frames, head_dim).
TransformerStates = list[tuple[torch.Tensor, torch.Tensor]]


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float) -> torch.Tensor:
    """Cosines then sines of integer ``positions`` (any shape) at ``dim // 2`` geometric periods.

    The periods go from 1 to ``max_period`` with the exponent ``i / (dim // 2 - 1)``, as in the
    official model (whose weights depend on it). Returns shape ``(*positions.shape, dim)``.
    """
    half = dim // 2
    exponents = torch.arange(half, device=positions.device) / (half - 1)
    phase = positions.unsqueeze(-1) / (max_period**exponents)
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


class StreamingSelfAttention(nn.Module):
    """Multi-head self-attention over the cached past and the new frames.

    Parameters are laid out as in ``nn.MultiheadAttention`` (packed q, k, v projection) so
    official weights load unchanged; keeping projected keys and values, not layer inputs,
    spares re-projecting the whole window at every frame.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, dim = x.shape
        return x.view(batch, frames, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of one all-zero past frame, i.e. the key and value biases.

        The official model starts every stream from such a frame (its initial state is a
        zero layer input) and attends to it until it leaves the window; a pretrained model
        relies on it, so it is kept.
        """
        _, key_bias, value_bias = self.in_proj_bias.chunk(3)
        shape = (batch, 1, key_bias.shape[0])
        return (
            self._split_heads(key_bias.expand(shape)),
            self._split_heads(value_bias.expand(shape)),
        )

    def forward(
        self,
        x: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor],
        attn_mask: torch.Tensor | None,
        past_context: int,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        query, key, value = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        keys = torch.cat([past[0], self._split_heads(key)], dim=2)
        values = torch.cat([past[1], self._split_heads(value)], dim=2)
        out = F.scaled_dot_product_attention(
            self._split_heads(query), keys, values, attn_mask=attn_mask
        )
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        return out, (keys[:, :, -past_context:], values[:, :, -past_context:])


class StreamingTransformerLayer(nn.Module):
    """Post-norm layer: ``x = norm1(x + attn(x)); x = norm2(x + ffn(x))``, no dropout."""

    def __init__(self, dim: int, num_heads: int, hidden_dim: int) -> None:
        super().__init__()
        self.self_attn = StreamingSelfAttention(dim, num_heads)
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor],
        attn_mask: torch.Tensor | None,
        past_context: int,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        attended, state = self.self_attn(x, past, attn_mask, past_context)
        x = self.norm1(x + attended)
        x = self.norm2(x + self.linear2(F.gelu(self.linear1(x))))
        return x, state


class StreamingTransformer(nn.Module):
    """Input LayerNorm, sinusoidal positions, then ``num_layers`` post-norm layers.

    Args:
        dim: width of the frames, ``(batch, frames, dim)``.
        num_heads: attention heads; ``dim`` must be divisible by it.
        num_layers: transformer layers.
        hidden_scale: FFN width as a multiple of ``dim``.
        past_context: frames before each frame that its attention sees.
        max_period: longest period of the sinusoidal positions, in frames.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_layers: int,
        hidden_scale: float,
        past_context: int,
        max_period: float,
    ) -> None:
        super().__init__()
        if dim % num_heads or dim % 2:
            raise ValueError(f"dim must be even and divisible by num_heads={num_heads}, got {dim}")
        if past_context < 1:
            raise ValueError(f"past_context must be at least 1 frame, got {past_context}")
        self.past_context = past_context
        self.max_period = max_period
        self.norm_in = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            StreamingTransformerLayer(dim, num_heads, int(dim * hidden_scale))
            for _ in range(num_layers)
        )

    def forward(
        self, x: torch.Tensor, states: TransformerStates | None, offset: int
    ) -> tuple[torch.Tensor, TransformerStates, int]:
        """``(batch, frames, dim)`` -> the same shape, the new states and ``offset + frames``.

        ``states`` is what the previous call returned, to continue its stream (``None``
        starts one); ``offset`` is the position of the first frame.
        """
        batch, frames, dim = x.shape
        if states is None:
            states = [layer.self_attn.initial_state(batch) for layer in self.layers]
        num_past = states[0][0].shape[2]
        # Query t (at index num_past + t among the keys) sees key j iff 0 <= its lag <=
        # past_context. The cache never holds more than past_context frames, so a single new
        # frame sees all of it, and skipping the mask keeps frame-by-frame coding cheap.
        attn_mask = None
        if frames > 1:
            lag = torch.arange(num_past, num_past + frames, device=x.device).view(
                -1, 1
            ) - torch.arange(num_past + frames, device=x.device).view(1, -1)
            attn_mask = (lag >= 0) & (lag <= self.past_context)
        positions = torch.arange(frames, device=x.device) + offset
        x = self.norm_in(x) + sinusoidal_embedding(positions, dim, self.max_period)
        new_states = []
        for layer, past in zip(self.layers, states, strict=True):
            x, state = layer(x, past, attn_mask, self.past_context)
            new_states.append(state)
        return x, new_states, offset + frames
