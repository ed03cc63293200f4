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

Inference: with gradients off, :func:`run_time_major` runs a stack of these layers on
time-major tensors ``(batch, time, channels)`` through :meth:`StreamingModule.forward_time_major`,
and :func:`run_time_major_tiled` does so on tiles of time wherever the stack is causal. The
outputs are those of the offline path up to float rounding, but the memory layout is the one
oneDNN's convolution kernels and BLAS are fastest on (channels-first convolutions with few
channels run several times slower on CPU), an activation and the padding after it are written
in one pass into one buffer, 1x1 convolutions are single matrix products, transposed
convolutions are a few matrix products accumulated in place (no ``col2im``), and no
intermediate tensor is longer than a tile.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
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

    def forward_time_major(
        self, x: torch.Tensor, activation: nn.Module | None = None
    ) -> torch.Tensor:
        """Inference: ``activation`` (if any) then this module on ``(batch, time, channels)``.

        Returns the offline output, time-major and contiguous. Only valid with gradients off
        and outside :meth:`streaming`. This default runs the offline path on the transposed
        input; layers with a faster time-major computation override it.
        """
        x = activate(activation, x)
        return self._forward_offline(x.transpose(1, 2)).transpose(1, 2).contiguous()

    def causal_window(self) -> tuple[int, Fraction] | None:
        """``(left, rate)`` if this module is a causal sliding window over time, else ``None``.

        Output step ``t`` then depends on input steps ``t * rate - left`` up to the end of its
        own span (``rate`` input steps per output step: the stride, or 1 / stride when
        upsampling), never later ones, and is the same whatever lies outside that range but
        for the padding at the signal's ends. No norm over time can be inside.
        """
        return None

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


# Activations that act on each element alone, so that they run on any memory layout and
# commute with padding: the time-major path applies them as they are, or fuses them into the
# padded input buffer of the convolution that follows.
ELEMENTWISE_ACTIVATIONS = (nn.ELU, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Identity)

# Time steps per tile of :func:`run_time_major_tiled`, at the rate of its finer side. At
# 24 kHz, 32768 samples of 32 channels are 4 MB, which stays in cache, and 10 s take 8 tiles,
# whose per-call overhead is negligible. EnCodec's speed is flat from 2**13 to 2**16 on a
# Xeon core; fewer steps cost more calls, more steps lose the cache.
TILE_STEPS = 2**15
# Layers with more weights than this run on the whole signal: each call packs the weights
# anew for oneDNN or BLAS, which for the deep, wide layers would outweigh what tiles save.
TILE_MAX_WEIGHTS = 2**17


def run_time_major(layers: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Inference pass of ``layers`` on time-major ``x`` ``(batch, time, channels)``.

    Each elementwise activation is handed to the streaming layer after it, which fuses it into
    its input. Any other module runs on the transposed tensor. Only valid with gradients off.
    """
    pending: nn.Module | None = None
    for layer in layers:
        if isinstance(layer, ELEMENTWISE_ACTIVATIONS):
            if pending is not None:
                x = activate(pending, x)
            pending = layer
        elif isinstance(layer, StreamingModule):
            x = layer.forward_time_major(x, pending)
            pending = None
        else:
            if pending is not None:
                x = activate(pending, x)
                pending = None
            x = layer(x.transpose(1, 2)).transpose(1, 2).contiguous()
    return x if pending is None else activate(pending, x)


def stack_window(layers: Iterable[nn.Module]) -> tuple[Fraction, Fraction] | None:
    """The causal window of a stack of layers, as :meth:`StreamingModule.causal_window` gives
    one layer's, in units of the stack's input; ``None`` if some layer has none."""
    left, scale = Fraction(0), Fraction(1)  # scale: stack input units per unit of this layer
    for layer in layers:
        if isinstance(layer, ELEMENTWISE_ACTIVATIONS):
            continue
        window = layer.causal_window() if isinstance(layer, StreamingModule) else None
        if window is None:
            return None
        layer_left, rate = window
        left += layer_left * scale
        scale *= rate
    return left, scale


def run_time_major_tiled(
    layers: Sequence[nn.Module], x: torch.Tensor, tile_steps: int = TILE_STEPS
) -> torch.Tensor:
    """:func:`run_time_major` on tiles of time wherever a run of layers is a causal window.

    Such a run, if it only downsamples or only upsamples, is cut into tiles of about
    ``tile_steps`` steps of its finer side, on frame boundaries (a frame: the run's total
    stride on the finer side, one step on the coarser). Each tile is computed from the input
    it covers plus the frames of left context its window reads, whose outputs are dropped.
    The first tile starts with the signal and the last ends with it, so they pad as the whole
    signal does, and no output kept reads the padding at an inner edge: the outputs are the
    whole signal's. But no intermediate tensor is longer than a tile. At 24 kHz full-length
    ones are tens of MB each; each costs a pass through memory and, as the allocator hands
    such blocks back to the system, fresh zeroed pages on every call, while a tile's tensors
    stay in cache and are recycled. Heavy layers (:data:`TILE_MAX_WEIGHTS`) are not tiled.
    """
    layers = list(layers)
    # True: a light causal window, tiled; None: an activation, goes with its neighbours.
    tiled = [
        None if isinstance(layer, ELEMENTWISE_ACTIVATIONS) else _light_window(layer)
        for layer in layers
    ]
    done = 0  # layers[:done] have run
    for index in range(len(layers)):
        if index < done or tiled[index] is not True:
            continue
        first, last = index, index
        while first > done and tiled[first - 1] is None:
            first -= 1  # an activation before the run is fused into the run's first layer
        while last + 1 < len(layers) and tiled[last + 1] is not False:
            last += 1
        while tiled[last] is None:
            last -= 1  # one after it is left to the layer that follows, which fuses it
        x = run_time_major(layers[done:first], x)
        x = _run_tiles(layers[first : last + 1], x, tile_steps)
        done = last + 1
    return run_time_major(layers[done:], x)


def _light_window(layer: nn.Module) -> bool:
    return (
        isinstance(layer, StreamingModule)
        and layer.causal_window() is not None
        and sum(p.numel() for p in layer.parameters()) <= TILE_MAX_WEIGHTS
    )


def _run_tiles(layers: Sequence[nn.Module], x: torch.Tensor, tile_steps: int) -> torch.Tensor:
    rates = [
        layer.causal_window()[1]
        for layer in layers
        if not isinstance(layer, ELEMENTWISE_ACTIVATIONS)
    ]
    window = stack_window(layers)
    assert window is not None, "only causal windows are tiled"
    if not (all(rate >= 1 for rate in rates) or all(rate <= 1 for rate in rates)):
        # Tiles aligned with frames at the stack's ends would not be at an inner layer.
        return run_time_major(layers, x)
    left, scale = window
    # One frame: `step_in` input steps, `step_out` output steps (one of them is 1).
    step_in, step_out = scale.numerator, scale.denominator
    length = x.shape[1]
    frames = -(-length // step_in)
    context = math.ceil(left / step_in)
    # Reflect padding at the signal's start mirrors each layer's next `left` steps, up to
    # `left + 1` steps of the stack's input ahead: the first tile must hold them.
    tile_frames = max(tile_steps // max(step_in, step_out), context + 1)
    if frames <= tile_frames:
        return run_time_major(layers, x)
    out: torch.Tensor | None = None
    for first in range(0, frames, tile_frames):
        last = min(first + tile_frames, frames)
        low = max(0, first - context)
        y = run_time_major(layers, x[:, low * step_in : last * step_in])
        y = y[:, (first - low) * step_out : (last - low) * step_out]
        if out is None:
            out = y.new_empty(y.shape[0], frames * step_out, y.shape[2])
        out[:, first * step_out : first * step_out + y.shape[1]] = y
    assert out is not None
    return out


def activate(
    activation: nn.Module | None, x: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``activation(x)`` (``x`` if None) for the time-major path, written into ``out`` if given.

    ELU with ``alpha=1``, EnCodec's activation, is computed as ``max(x, exp(min(x, 0)) - 1)``:
    four light passes (on tiles that sit in cache) instead of PyTorch's kernel, whose
    vectorised ``expm1`` is several times slower than ``exp``. Near 0 the result differs from
    ``expm1`` by at most an ulp of 1 (about 1e-7), well inside float noise of the network.
    """
    if isinstance(activation, nn.ELU) and activation.alpha == 1.0:
        out = torch.clamp(x, max=0, out=out)
        return torch.maximum(out.exp_().sub_(1), x, out=out)
    y = x if activation is None else activation(x)
    return y if out is None else out.copy_(y)


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

    def _padding(self, length: int) -> tuple[int, int]:
        """Samples padded on the left and right of an input of ``length`` samples."""
        extra = -length % self.stride
        if self.causal:
            return self.padding_total, extra
        right = self.padding_total // 2
        return self.padding_total - right, right + extra

    def _forward_offline(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(pad1d(x, *self._padding(x.shape[-1]), self.pad_mode))

    def causal_window(self) -> tuple[int, Fraction] | None:
        if not self.causal or not isinstance(self.conv.norm, nn.Identity):
            return None
        return self.padding_total, Fraction(self.stride)

    def pointwise(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """``(weight (out, in), bias)`` of a plain 1x1 convolution (one group, no norm).

        ``None`` for any other convolution. Its time-major output is ``x @ weight.T + bias``.
        """
        conv = self.conv.conv
        if conv.kernel_size[0] != 1 or conv.groups != 1:
            return None
        if not isinstance(self.conv.norm, nn.Identity):
            return None
        return conv.weight[..., 0], conv.bias

    def forward_time_major(
        self, x: torch.Tensor, activation: nn.Module | None = None
    ) -> torch.Tensor:
        batch, length, channels = x.shape
        left, right = self._padding(length)
        if self.pad_mode == "reflect" and length <= max(left, right):
            # Too short to reflect: only the offline path's zero extension handles it.
            return super().forward_time_major(x, activation)
        if left == right == 0 and activation is None:
            padded = x
        else:
            padded = x.new_empty(batch, left + length + right, channels)
            end = left + length
            activate(activation, x, padded[:, left:end])
            if self.pad_mode == "reflect":  # as F.pad: mirrored around the edge samples
                padded[:, :left] = padded[:, left + 1 : 2 * left + 1].flip(1)
                padded[:, end:] = padded[:, end - right - 1 : end - 1].flip(1)
            else:
                padded[:, :left] = 0
                padded[:, end:] = 0
        conv = self.conv.conv
        weight = conv.weight  # computed here once if weight norm is still a parametrization
        if conv.kernel_size[0] == 1 and conv.groups == 1:
            y = F.linear(padded, weight[..., 0])
            if conv.bias is not None:
                # In place after the product: addmm would first broadcast-copy the bias into
                # the output, a slower pass than this add.
                y += conv.bias
        else:
            # As a 2-D image one sample high, the time-major buffer has channels-last strides,
            # so oneDNN runs its nhwc kernels on it as it is (conv1d would copy it to ncw).
            y = F.conv2d(
                padded.transpose(1, 2).unsqueeze(2),
                weight.unsqueeze(2),
                conv.bias,
                (1, self.stride),
                dilation=(1, conv.dilation[0]),
                groups=conv.groups,
            )[:, :, 0].transpose(1, 2)
        if not isinstance(self.conv.norm, nn.Identity):
            y = self.conv.norm(y.transpose(1, 2)).transpose(1, 2)
        return y.contiguous()

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

    def _trim(self) -> tuple[int, int]:
        """Samples trimmed from the left and right of the transposed convolution's output."""
        right = self.padding_total if self.causal else self.padding_total // 2
        return self.padding_total - right, right

    def _forward_offline(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convtr(x)
        left, right = self._trim()
        return y[..., left : y.shape[-1] - right]

    def causal_window(self) -> tuple[int, Fraction] | None:
        if not self.causal or not isinstance(self.convtr.norm, nn.Identity):
            return None
        # Output sample n sums input frames t with 0 <= n - t * stride < kernel_size.
        return -(-self.convtr.convtr.kernel_size[0] // self.stride) - 1, Fraction(1, self.stride)

    def forward_time_major(
        self, x: torch.Tensor, activation: nn.Module | None = None
    ) -> torch.Tensor:
        """As :meth:`StreamingModule.forward_time_major`, as ``ceil(K / S)`` matrix products.

        Time-major, output frame ``t`` (the ``S`` samples from ``t * S``, ``S * out`` values
        in a row) receives input frame ``t - j`` through kernel taps ``j * S`` to
        ``j * S + S - 1``. So tap group ``j`` is one product of the whole input with an
        ``(in, S * out)`` matrix, accumulated in place into the output rows shifted by ``j``.
        """
        x = activate(activation, x)
        conv = self.convtr.convtr
        batch, frames, _ = x.shape
        stride, kernel = self.stride, conv.kernel_size[0]
        groups = -(-kernel // stride)
        # (in, out, K) -> (groups, in, S * out), taps past K zero.
        taps = conv.weight
        if kernel % stride:
            taps = F.pad(taps, (0, groups * stride - kernel))
        taps = taps.unflatten(2, (groups, stride)).permute(2, 0, 3, 1).flatten(2)
        out = x.new_empty(batch, frames + groups - 1, stride * conv.out_channels)
        for item, rows in zip(x, out, strict=True):
            torch.mm(item, taps[0], out=rows[:frames])
            rows[frames:] = 0
            for shift in range(1, groups):
                rows[shift : shift + frames].addmm_(item, taps[shift])
        left, right = self._trim()
        full = out.view(batch, -1, conv.out_channels)[:, : (frames - 1) * stride + kernel]
        if isinstance(self.convtr.norm, nn.Identity):
            y = full[:, left : full.shape[1] - right]
            if conv.bias is not None:
                y += conv.bias  # once, on the kept samples only
            return y.contiguous()
        # The norm sees the whole output, the samples trimmed after it included.
        if conv.bias is not None:
            full = full + conv.bias
        y = self.convtr.norm(full.transpose(1, 2)).transpose(1, 2)
        return y[:, left : full.shape[1] - right].contiguous()

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


@torch.no_grad()
def init_fan_in_(module: nn.Module, gain: float = 1.0) -> None:
    """Redraw every convolution under ``module`` from N(0, gain² / fan_in), biases zero.

    PyTorch's default draws weights with a variance of 1 / (3 fan_in) and biases as large as
    the signal, so each SEANet layer passes about a third of the signal's amplitude and the
    biases swamp the rest: for the tiny EnCodec the untrained encoder's output varies by
    2e-4 with its input, against 0.05 from the biases alone, and a short training run learns
    nothing (0 dB SNR after 150 steps on one batch, 6.5 dB with this init). A transposed
    convolution with stride s sums ``in_channels * kernel / s`` inputs into each output sample,
    which is its fan-in here. Under weight norm the direction is redrawn and the magnitude
    set to its norm, so the effective weight is the drawn one.
    """
    for part in module.modules():
        if not isinstance(part, nn.Conv1d | nn.ConvTranspose1d):
            continue
        if isinstance(part, nn.ConvTranspose1d):
            fan_in = part.in_channels * part.kernel_size[0] / part.stride[0]
        else:
            fan_in = part.in_channels // part.groups * part.kernel_size[0]
        if parametrize.is_parametrized(part, "weight"):
            direction = part.parametrizations.weight.original1
            direction.normal_(0.0, gain / math.sqrt(fan_in))
            # weight_norm(dim=0) keeps one magnitude per slice of the first axis.
            part.parametrizations.weight.original0.copy_(
                direction.norm(dim=tuple(range(1, direction.dim())), keepdim=True)
            )
        else:
            part.weight.normal_(0.0, gain / math.sqrt(fan_in))
        if part.bias is not None:
            part.bias.zero_()
