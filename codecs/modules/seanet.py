"""SEANet encoder and decoder: the convolutional autoencoder of EnCodec.

Follows the official encodec code (Défossez et al., 2022, "High Fidelity Neural Audio
Compression", Section 3.1), itself derived from SEANet (Tagliasacchi et al., 2020), where it
differs from the paper: residual units are ELU, conv k3 (C -> C/compress), ELU, conv k1
(-> C), and a 1x1 convolution or an identity shortcut (the paper says two k3 convolutions).
Layers are built in the official order and named as there (``model``, ``block``,
``shortcut``, ``lstm``), so the official ``encoder.*`` / ``decoder.*`` weights load after
:func:`~bench.codecs.modules.conv.official_key_mapping`.

A causal encoder or decoder also runs on a stream (``with decoder.streaming(): ...``, then
``decoder.flush()``), with outputs equal to the offline ones; see
:class:`~bench.codecs.modules.conv.StreamingModule`. With gradients off, the offline pass runs
time-major (:func:`~bench.codecs.modules.conv.run_time_major`), the fast inference path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from bench.codecs.modules.conv import (
    StreamableConv1d,
    StreamableConvTranspose1d,
    StreamingModule,
    activate,
    flush_sequence,
    run_time_major,
    run_time_major_tiled,
    stack_window,
)
from torch import nn


def _activation(name: str, params: Mapping[str, Any] | None) -> nn.Module:
    layer = getattr(nn, name, None)
    if not (isinstance(layer, type) and issubclass(layer, nn.Module)):
        raise ValueError(f"activation must name a torch.nn module such as 'ELU'; got {name!r}")
    return layer(**(params or {}))


def _check_ratios(ratios: Sequence[int]) -> list[int]:
    if not ratios or any(not isinstance(r, int) or r < 1 for r in ratios):
        raise ValueError(f"ratios must be a non-empty list of positive ints; got {ratios!r}")
    return list(ratios)


def _check_input(x: torch.Tensor, channels: int, what: str) -> None:
    if x.dim() != 3 or x.shape[1] != channels:
        raise ValueError(f"expected {what} shaped (batch, {channels}, time); got {tuple(x.shape)}")


@dataclass
class _LSTMStream:
    hidden: tuple[torch.Tensor, torch.Tensor] | None = None


class StreamableLSTM(StreamingModule):
    """A multi-layer LSTM on ``(batch, channels, time)`` with a residual connection.

    The input and hidden sizes are both ``dimension``. In a stream the hidden and cell states
    carry over between chunks.
    """

    def __init__(self, dimension: int, num_layers: int = 2, skip: bool = True) -> None:
        super().__init__()
        self.skip = skip
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def _run(
        self, x: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        steps = x.permute(2, 0, 1)  # nn.LSTM is time-major by default, as the official code.
        y, hidden = self.lstm(steps, hidden)
        if self.skip:
            y = y + steps
        return y.permute(1, 2, 0), hidden

    def _forward_offline(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None)[0]

    def forward_time_major(
        self, x: torch.Tensor, activation: nn.Module | None = None
    ) -> torch.Tensor:
        x = activate(activation, x)
        steps = x.transpose(0, 1)  # (time, batch, channels): for one item, no copy at all
        y, _ = self.lstm(steps)
        if self.skip:
            y += steps
        return y.transpose(0, 1).contiguous()

    def _new_stream_state(self) -> _LSTMStream:
        return _LSTMStream()

    def _forward_stream(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == 0:
            return x
        state: _LSTMStream = self._stream
        y, state.hidden = self._run(x, state.hidden)
        return y


def _pointwise(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    return layer.pointwise() if isinstance(layer, StreamableConv1d) else None


@dataclass
class _ResnetStream:
    # Branch outputs not yet matched by the other branch (the convolutions of `block` may
    # hold samples back at the start of a stream; the shortcut never does).
    shortcut: torch.Tensor | None = None
    block: torch.Tensor | None = None


class SEANetResnetBlock(StreamingModule):
    """Residual unit: ``shortcut(x) + block(x)`` on ``(batch, dim, time)``.

    ``block`` is ELU, conv ``kernel_sizes[0]`` (dim -> dim // compress), ELU, ...,
    conv ``kernel_sizes[-1]`` (-> dim). The shortcut is a 1x1 convolution
    (``true_skip=False``, the encodec repository) or the identity (audiocraft).
    """

    def __init__(
        self,
        dim: int,
        kernel_sizes: Sequence[int] = (3, 1),
        dilations: Sequence[int] = (1, 1),
        activation: str = "ELU",
        activation_params: Mapping[str, Any] | None = None,
        norm: str = "weight_norm",
        causal: bool = False,
        pad_mode: str = "reflect",
        compress: int = 2,
        true_skip: bool = True,
    ) -> None:
        super().__init__()
        if len(kernel_sizes) != len(dilations):
            raise ValueError(
                f"need one dilation per kernel size; got {len(kernel_sizes)} kernel sizes "
                f"and {len(dilations)} dilations"
            )
        hidden = dim // compress
        layers: list[nn.Module] = []
        last = len(kernel_sizes) - 1
        for i, (kernel_size, dilation) in enumerate(zip(kernel_sizes, dilations, strict=True)):
            layers += [
                _activation(activation, activation_params),
                StreamableConv1d(
                    dim if i == 0 else hidden,
                    dim if i == last else hidden,
                    kernel_size,
                    dilation=dilation,
                    causal=causal,
                    norm=norm,
                    pad_mode=pad_mode,
                ),
            ]
        self.block = nn.Sequential(*layers)
        self.shortcut: nn.Module
        if true_skip:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = StreamableConv1d(
                dim, dim, 1, causal=causal, norm=norm, pad_mode=pad_mode
            )

    def _forward_offline(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)

    def forward_time_major(
        self, x: torch.Tensor, activation: nn.Module | None = None
    ) -> torch.Tensor:
        """As :meth:`StreamingModule.forward_time_major`, with the residual sum fused.

        Where the block ends in a 1x1 convolution and the shortcut is one too (or the
        identity), the shortcut's matrix product accumulates into the block's output and the
        two biases go in with one pass, instead of two outputs, two bias passes and a sum.
        """
        x = activate(activation, x)
        block_end, shortcut = _pointwise(self.block[-1]), _pointwise(self.shortcut)
        identity = isinstance(self.shortcut, nn.Identity)
        if block_end is None or (shortcut is None and not identity):
            y = run_time_major(self.block, x)
            y += run_time_major([self.shortcut], x)  # y is a fresh tensor: sum in place
            return y
        weight, bias = block_end
        y = F.linear(run_time_major(self.block[:-1], x), weight)
        biases = [bias]
        if shortcut is None:
            y += x
        else:
            y.view(-1, y.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]), shortcut[0].t())
            biases.append(shortcut[1])
        biases = [b for b in biases if b is not None]
        if biases:
            y += sum(biases)
        return y

    def causal_window(self) -> tuple[int, Fraction] | None:
        branches = [stack_window(self.block), stack_window([self.shortcut])]
        if None in branches or any(rate != 1 for _, rate in branches):
            return None
        return max(left for left, _ in branches), Fraction(1)

    def _new_stream_state(self) -> _ResnetStream:
        return _ResnetStream()

    def _add_matched(self, shortcut: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        state: _ResnetStream = self._stream
        if state.shortcut is not None:
            shortcut = torch.cat([state.shortcut, shortcut], dim=-1)
            block = torch.cat([state.block, block], dim=-1)
        length = min(shortcut.shape[-1], block.shape[-1])
        state.shortcut, state.block = shortcut[..., length:], block[..., length:]
        return shortcut[..., :length] + block[..., :length]

    def _forward_stream(self, x: torch.Tensor) -> torch.Tensor:
        return self._add_matched(self.shortcut(x), self.block(x))

    def _flush(self) -> torch.Tensor:
        state: _ResnetStream = self._stream
        assert state.shortcut is not None and state.block is not None
        shortcut = self.shortcut.flush() if isinstance(self.shortcut, StreamingModule) else None
        block = flush_sequence(self.block)
        out = self._add_matched(
            state.shortcut[..., :0] if shortcut is None else shortcut,
            state.block[..., :0] if block is None else block,
        )
        assert state.shortcut.shape[-1] == state.block.shape[-1] == 0, "branches out of step"
        return out


class SEANetEncoder(StreamingModule):
    """SEANet encoder: audio ``(batch, channels, samples)`` to latents ``(batch, dimension,
    ceil(samples / hop_length))``.

    Conv ``kernel_size`` (channels -> n_filters), then for each downsampling ratio (the
    *reverse* of ``ratios``, which lists the decoder's upsampling order as in the official
    code): ``n_residual_layers`` residual units (dilations ``dilation_base ** j``), ELU and a
    strided conv (kernel ``2 * ratio``) doubling the channels; then an LSTM with ``lstm``
    layers (none if 0), ELU and conv ``last_kernel_size`` (-> dimension).
    """

    def __init__(
        self,
        channels: int = 1,
        dimension: int = 128,
        n_filters: int = 32,
        n_residual_layers: int = 1,
        ratios: Sequence[int] = (8, 5, 4, 2),
        activation: str = "ELU",
        activation_params: Mapping[str, Any] | None = None,
        norm: str = "weight_norm",
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        residual_kernel_size: int = 3,
        dilation_base: int = 2,
        causal: bool = False,
        pad_mode: str = "reflect",
        true_skip: bool = False,
        compress: int = 2,
        lstm: int = 2,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.dimension = dimension
        self.n_filters = n_filters
        self.ratios = list(reversed(_check_ratios(ratios)))
        self.hop_length = math.prod(self.ratios)
        activation_params = {"alpha": 1.0} if activation_params is None else activation_params
        conv = {"causal": causal, "norm": norm, "pad_mode": pad_mode}

        width = n_filters
        layers: list[nn.Module] = [StreamableConv1d(channels, width, kernel_size, **conv)]
        for ratio in self.ratios:
            for j in range(n_residual_layers):
                layers.append(
                    SEANetResnetBlock(
                        width,
                        kernel_sizes=(residual_kernel_size, 1),
                        dilations=(dilation_base**j, 1),
                        activation=activation,
                        activation_params=activation_params,
                        compress=compress,
                        true_skip=true_skip,
                        **conv,
                    )
                )
            layers += [
                _activation(activation, activation_params),
                StreamableConv1d(width, 2 * width, 2 * ratio, stride=ratio, **conv),
            ]
            width *= 2
        if lstm:
            layers.append(StreamableLSTM(width, num_layers=lstm))
        layers += [
            _activation(activation, activation_params),
            StreamableConv1d(width, dimension, last_kernel_size, **conv),
        ]
        self.model = nn.Sequential(*layers)

    def _forward_offline(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.channels, "audio")
        if torch.is_grad_enabled() or self.is_streaming:
            return self.model(x)
        return run_time_major_tiled(self.model, x.transpose(1, 2)).transpose(1, 2).contiguous()

    def _flush(self) -> torch.Tensor | None:
        return flush_sequence(self.model)


class SEANetDecoder(StreamingModule):
    """SEANet decoder: latents ``(batch, dimension, frames)`` to audio ``(batch, channels,
    frames * hop_length)``.

    The mirror of :class:`SEANetEncoder`: conv ``kernel_size`` (dimension -> n_filters *
    2 ** len(ratios)), the LSTM, then for each ratio in order ELU, a transposed conv (kernel
    ``2 * ratio``) halving the channels and the residual units; then ELU, conv
    ``last_kernel_size`` (-> channels) and the optional ``final_activation`` (e.g. ``"Tanh"``).
    """

    def __init__(
        self,
        channels: int = 1,
        dimension: int = 128,
        n_filters: int = 32,
        n_residual_layers: int = 1,
        ratios: Sequence[int] = (8, 5, 4, 2),
        activation: str = "ELU",
        activation_params: Mapping[str, Any] | None = None,
        final_activation: str | None = None,
        final_activation_params: Mapping[str, Any] | None = None,
        norm: str = "weight_norm",
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        residual_kernel_size: int = 3,
        dilation_base: int = 2,
        causal: bool = False,
        pad_mode: str = "reflect",
        true_skip: bool = False,
        compress: int = 2,
        lstm: int = 2,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.dimension = dimension
        self.n_filters = n_filters
        self.ratios = _check_ratios(ratios)
        self.hop_length = math.prod(self.ratios)
        activation_params = {"alpha": 1.0} if activation_params is None else activation_params
        conv = {"causal": causal, "norm": norm, "pad_mode": pad_mode}

        width = n_filters * 2 ** len(self.ratios)
        layers: list[nn.Module] = [StreamableConv1d(dimension, width, kernel_size, **conv)]
        if lstm:
            layers.append(StreamableLSTM(width, num_layers=lstm))
        for ratio in self.ratios:
            layers += [
                _activation(activation, activation_params),
                StreamableConvTranspose1d(
                    width, width // 2, 2 * ratio, stride=ratio, causal=causal, norm=norm
                ),
            ]
            width //= 2
            for j in range(n_residual_layers):
                layers.append(
                    SEANetResnetBlock(
                        width,
                        kernel_sizes=(residual_kernel_size, 1),
                        dilations=(dilation_base**j, 1),
                        activation=activation,
                        activation_params=activation_params,
                        compress=compress,
                        true_skip=true_skip,
                        **conv,
                    )
                )
        layers += [
            _activation(activation, activation_params),
            StreamableConv1d(n_filters, channels, last_kernel_size, **conv),
        ]
        if final_activation is not None:
            layers.append(_activation(final_activation, final_activation_params))
        self.model = nn.Sequential(*layers)

    def _forward_offline(self, z: torch.Tensor) -> torch.Tensor:
        _check_input(z, self.dimension, "latents")
        if torch.is_grad_enabled() or self.is_streaming:
            return self.model(z)
        return run_time_major_tiled(self.model, z.transpose(1, 2)).transpose(1, 2).contiguous()

    def _flush(self) -> torch.Tensor | None:
        return flush_sequence(self.model)
