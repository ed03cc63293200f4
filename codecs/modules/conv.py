"""Streamable 1-D convolutions with EnCodec's padding and normalisation, and the streaming base.

The convolution layers of EnCodec (Défossez et al., 2022, "High Fidelity Neural Audio
Compression", Section 3.1) and of the SEANet generators it builds on (Tagliasacchi et al.,
2020). Padding follows the official encodec code exactly, so that a model loaded from its
weights gives its outputs:

- a causal ("streamable") convolution pads all ``K - S`` samples on the left (``K`` is the
  dilated kernel size, ``S`` the stride), and a causal transposed convolution trims its
  ``K - S`` extra samples on the right;
- a non-causal one splits them evenly, the odd sample going to the left padding (and to the
  left trim of the transposed convolution);
- a convolution pads ``(-length) % S`` more samples on the right so that its output has
  ``ceil(length / S)`` frames and no input sample is dropped.

Weight norm uses ``torch.nn.utils.parametrizations.weight_norm``: the older
``torch.nn.utils.weight_norm`` the official code uses is deprecated and breaks
``copy.deepcopy`` (needed for EMA copies during training). Parameter names therefore differ
from the official checkpoints only in the weight-norm part; :func:`official_key_mapping`
renames them. Everything else (``conv.conv``, ``convtr.convtr``, ``norm``) is named as there.

Streaming: every layer here is a :class:`StreamingModule`. Inside ``with module.streaming():``
each call takes the next chunk of the input and returns the part of the output that no later
input can change; :meth:`StreamingModule.flush` ends the stream and returns the rest. The
concatenated outputs equal the offline output of the concatenated input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

NORMS = ("weight_norm", "time_group_norm", "none")
PAD_MODES = ("reflect", "constant")

# Official checkpoint suffix -> suffix of the same tensor under parametrizations.weight_norm.
_WEIGHT_NORM_KEYS = {
    "weight_g": "parametrizations.weight.original0",
    "weight_v": "parametrizations.weight.original1",
}


class StreamingModule(nn.Module):
    """A module that runs either offline or on a stream of chunks with carried state.

    Subclasses implement ``_forward_offline``; those that carry state between chunks also
    implement ``_forward_stream``, ``_new_stream_state`` and ``_flush``. A module whose
    streaming is entirely carried by its children (a stack of layers) implements only
    ``_forward_offline``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._streaming = False
        self._stream: Any = None
        # A zero-length slice of the last streamed output: the shape of an empty flush.
        self._empty_output: torch.Tensor | None = None

    @property
    def is_streaming(self) -> bool:
        return self._streaming

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._streaming:
            return self._forward_offline(x)
        y = self._forward_stream(x)
        self._empty_output = y[..., :0]
        return y

    def _forward_offline(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _forward_stream(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_offline(x)

    def _new_stream_state(self) -> Any:
        return None

    def _flush(self) -> torch.Tensor | None:
        """The output still held back at the end of the stream; ``None`` when there is none."""
        return None

    def _check_streamable(self) -> None:
        """Raises ``ValueError`` where the module cannot run on a stream."""

    def _reset_stream(self) -> None:
        self._stream = self._new_stream_state()
        self._empty_output = None

    @contextlib.contextmanager
    def streaming(self) -> Iterator[None]:
        """Runs this module and all its streaming submodules on chunks until the block exits.

        Each call then takes the next chunk, ``(batch, channels, time)``, and returns the
        output that is final; call :meth:`flush` after the last chunk for the rest. The
        state is cleared on entry, after each flush and on exit.
        """
        parts = [m for m in self.modules() if isinstance(m, StreamingModule)]
        for part in parts:
            if part._streaming:
                raise RuntimeError(f"{type(part).__name__} is already streaming")
            part._check_streamable()
        for part in parts:
            part._streaming = True
            part._reset_stream()
        try:
            yield
        finally:
            for part in parts:
                part._streaming = False
                part._reset_stream()

    def flush(self) -> torch.Tensor:
        """Ends the stream: returns the output still held back, ``(batch, channels, time)``.

        It may be empty. The module is then ready for a new stream.
        """
        if not self._streaming:
            raise RuntimeError(f"{type(self).__name__}.flush() is only valid inside streaming()")
        if self._empty_output is None:
            raise RuntimeError(f"{type(self).__name__}.flush() before any chunk: nothing to end")
        rest = self._flush()
        out = self._empty_output if rest is None else rest
        self._reset_stream()
        return out


def flush_sequence(layers: nn.Sequential) -> torch.Tensor | None:
    """Flushes a stack of layers in order, passing each layer's flushed output through the rest.

    Returns ``None`` when no layer held anything back (a stack of stateless layers).
    """
    out: torch.Tensor | None = None
    for layer in layers:
        if out is not None:
            out = layer(out)
        if isinstance(layer, StreamingModule):
            rest = layer.flush()
            out = rest if out is None else torch.cat([out, rest], dim=-1)
    return out


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _norm_module(norm: str, causal: bool, channels: int) -> nn.Module:
    if norm == "time_group_norm":
        if causal:
            # One group over all channels and all time steps: each output needs the whole signal.
            raise ValueError("norm='time_group_norm' normalises over time and cannot be causal")
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def pad1d(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """Pads the last axis; reflect padding also works on signals shorter than the padding.

    ``F.pad`` refuses to reflect more samples than the signal has. As the official code does,
    such a signal is first extended with zeros on the right, reflected, and the extension cut
    off again, so outputs on very short inputs match.
    """
    if mode == "reflect":
        short = max(left, right) - x.shape[-1] + 1
        if short > 0:
            padded = F.pad(F.pad(x, (0, short)), (left, right), mode="reflect")
            return padded[..., : padded.shape[-1] - short]
    return F.pad(x, (left, right), mode=mode)


class NormConv1d(nn.Module):
    """``nn.Conv1d`` plus its normalisation: weight norm on ``conv``, or a GroupNorm ``norm``."""

    def __init__(self, conv: nn.Conv1d, norm: str, causal: bool) -> None:
        super().__init__()
        self.conv = weight_norm(conv) if norm == "weight_norm" else conv
        self.norm = _norm_module(norm, causal, conv.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class NormConvTranspose1d(nn.Module):
    """``nn.ConvTranspose1d`` plus its normalisation, named ``convtr`` as in the official code."""

    def __init__(self, convtr: nn.ConvTranspose1d, norm: str, causal: bool) -> None:
        super().__init__()
        self.convtr = weight_norm(convtr) if norm == "weight_norm" else convtr
        self.norm = _norm_module(norm, causal, convtr.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.convtr(x))


@dataclass
class _ConvStream:
    # Input not consumed yet: padded on the left once started, raw before that.
    buffer: torch.Tensor | None = None
    # The last `stride` raw input samples, the most that reflect padding at the end reads.
    tail: torch.Tensor | None = None
    seen: int = 0
    started: bool = False


class StreamableConv1d(StreamingModule):
    """A 1-D convolution with EnCodec's causal or centred padding, ``(batch, in, time)``.

    The output has ``ceil(time / stride)`` frames. ``norm`` is ``"weight_norm"``,
    ``"time_group_norm"`` (GroupNorm with one group after the convolution: the 48 kHz model)
    or ``"none"``; ``pad_mode`` is ``"reflect"`` (the encodec repository) or ``"constant"``
    (zeros, as audiocraft).

    Streaming needs ``causal=True``. With reflect padding the left padding mirrors the first
    ``K - S`` samples, so at the start of a stream the layer holds its output back until it has
    seen ``K - S + 1`` samples (and at least ``stride``); after that it is never late.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        causal: bool = False,
        norm: str = "none",
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__()
        _check_choice("norm", norm, NORMS)
        _check_choice("pad_mode", pad_mode, PAD_MODES)
        effective_kernel = (kernel_size - 1) * dilation + 1
        if effective_kernel < stride:
            raise ValueError(
                f"the dilated kernel ({effective_kernel}) must cover the stride ({stride}), "
                "or input samples would be skipped"
            )
        conv = nn.Conv1d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )
        self.conv = NormConv1d(conv, norm, causal)
        self.causal = causal
        self.pad_mode = pad_mode
        self.stride = stride
        self.effective_kernel = effective_kernel
        self.padding_total = effective_kernel - stride
        # A stream starts once the left padding is known: reflect padding mirrors the first
        # padding_total + 1 samples (and the final one up to `stride`); zeros need none.
        self._samples_to_start = max(self.padding_total + 1, stride) if pad_mode == "reflect" else 0

    def _forward_offline(self, x: torch.Tensor) -> torch.Tensor:
        extra = -x.shape[-1] % self.stride
        if self.causal:
            left, right = self.padding_total, extra
        else:
            right = self.padding_total // 2
            left = self.padding_total - right
            right += extra
        return self.conv(pad1d(x, left, right, self.pad_mode))

    def _check_streamable(self) -> None:
        if not self.causal:
            raise ValueError("streaming needs causal convolutions; this one has causal=False")

    def _new_stream_state(self) -> _ConvStream:
        return _ConvStream()

    def _frames(self, buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output for every full window in ``buffer``, and what is left for later windows."""
        count = (buffer.shape[-1] - self.effective_kernel) // self.stride + 1
        if count <= 0:
            return buffer.new_zeros(buffer.shape[0], self.conv.conv.out_channels, 0), buffer
        used = (count - 1) * self.stride + self.effective_kernel
        return self.conv(buffer[..., :used]), buffer[..., count * self.stride :]

    def _forward_stream(self, x: torch.Tensor) -> torch.Tensor:
        state: _ConvStream = self._stream
        state.seen += x.shape[-1]
        state.tail = x if state.tail is None else torch.cat([state.tail, x], dim=-1)
        state.tail = state.tail[..., -self.stride :]
        buffer = x if state.buffer is None else torch.cat([state.buffer, x], dim=-1)
        if not state.started:
            if buffer.shape[-1] < self._samples_to_start:
                state.buffer = buffer
                return buffer.new_zeros(buffer.shape[0], self.conv.conv.out_channels, 0)
            buffer = pad1d(buffer, self.padding_total, 0, self.pad_mode)
            state.started = True
        out, state.buffer = self._frames(buffer)
        return out

    def _flush(self) -> torch.Tensor:
        state: _ConvStream = self._stream
        assert state.buffer is not None and state.tail is not None
        if not state.started:
            # The whole stream is still here, too short to start: this is the offline case.
            return self._forward_offline(state.buffer)
        extra = -state.seen % self.stride
        if self.pad_mode == "reflect":
            # Mirror of the samples before the last one, as F.pad(mode="reflect") does.
            right = state.tail[..., state.tail.shape[-1] - extra - 1 : -1].flip(-1)
        else:
            right = state.tail.new_zeros(*state.tail.shape[:-1], extra)
        out, _ = self._frames(torch.cat([state.buffer, right], dim=-1))
        return out


@dataclass
class _ConvTransposeStream:
    # Partial sums (bias excluded) of the last K - S output samples, completed by the next chunk.
    overlap: torch.Tensor | None = None


class StreamableConvTranspose1d(StreamingModule):
    """A 1-D transposed convolution that trims EnCodec's padding, ``(batch, in, frames)``.

    The output has ``frames * stride`` samples: of the ``K - S`` extra samples a transposed
    convolution produces, a causal one trims all on the right, a non-causal one splits them
    with the odd sample trimmed on the left. In a causal stream each chunk of ``n`` frames
    gives its ``n * stride`` samples at once; the overlap with the next frame is carried.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        bias: bool = True,
        causal: bool = False,
        norm: str = "none",
    ) -> None:
        super().__init__()
        _check_choice("norm", norm, NORMS)
        if kernel_size < stride:
            raise ValueError(
                f"kernel_size ({kernel_size}) must be at least the stride ({stride}), "
                "or the output would have gaps"
            )
        convtr = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride, bias=bias)
        self.convtr = NormConvTranspose1d(convtr, norm, causal)
        self.causal = causal
        self.stride = stride
        self.padding_total = kernel_size - stride

    def _forward_offline(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convtr(x)
        right = self.padding_total if self.causal else self.padding_total // 2
        left = self.padding_total - right
        return y[..., left : y.shape[-1] - right]

    def _check_streamable(self) -> None:
        if not self.causal:
            raise ValueError("streaming needs causal convolutions; this one has causal=False")

    def _new_stream_state(self) -> _ConvTransposeStream:
        return _ConvTransposeStream()

    def _forward_stream(self, x: torch.Tensor) -> torch.Tensor:
        state: _ConvTransposeStream = self._stream
        conv = self.convtr.convtr
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], conv.out_channels, 0)
        y = self.convtr(x)
        if state.overlap is not None:
            head = y[..., : self.padding_total] + state.overlap
            y = torch.cat([head, y[..., self.padding_total :]], dim=-1)
        final = x.shape[-1] * self.stride
        overlap = y[..., final:]
        # The bias is added once per output sample, and the next chunk adds it again.
        state.overlap = overlap if conv.bias is None else overlap - conv.bias[:, None]
        return y[..., :final]

    # Offline, the causal layer trims the overlap of the last frame: nothing is held back, so
    # the default _flush (None, an empty output) is right.


def official_key_mapping(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames official encodec (or any ``torch.nn.utils.weight_norm``) keys to ours.

    ``*.weight_g`` becomes ``*.parametrizations.weight.original0`` and ``*.weight_v``
    ``*.parametrizations.weight.original1``: the same tensors (magnitude and direction of the
    weight, normalised over all but the first axis) under the parametrization API. Every other
    key is kept as it is. For example ``encoder.model.0.conv.conv.weight_g`` maps to
    ``encoder.model.0.conv.conv.parametrizations.weight.original0``.
    """
    mapped = {}
    for key, value in state_dict.items():
        prefix, _, suffix = key.rpartition(".")
        if suffix in _WEIGHT_NORM_KEYS:
            key = f"{prefix}.{_WEIGHT_NORM_KEYS[suffix]}" if prefix else _WEIGHT_NORM_KEYS[suffix]
        mapped[key] = value
    return mapped


def fold_weight_norm(module: nn.Module) -> None:
    """Bakes weight norm into plain weights, in place, for inference.

    Every parametrized ``weight`` under ``module`` (weight norm is the only parametrization
    these blocks use) becomes an ordinary parameter holding the effective weight, so the
    outputs do not change and each call skips the normalisation. Keys become ``*.weight``.
    """
    for part in list(module.modules()):
        if parametrize.is_parametrized(part, "weight"):
            parametrize.remove_parametrizations(part, "weight", leave_parametrized=True)
