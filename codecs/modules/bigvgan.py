"""A BigVGAN-style mel-to-waveform generator (Lee et al., "BigVGAN: A Universal Neural Vocoder
with Large-Scale Training", ICLR 2023), the vocoder FlowMAC (Pia et al., ICASSP 2025) puts
after its flow-matching mel decoder.

The generator is HiFi-GAN's (a conv, then transposed-conv upsampling stages, each followed by
residual blocks of dilated convs whose outputs are averaged over kernel sizes) with BigVGAN's
anti-aliased multi-periodicity (AMP) blocks: every activation is a snake-beta, applied at twice
the rate between a kaiser-windowed sinc low-pass upsampler and downsampler, so that the
periodic nonlinearity does not alias back into the band. The output passes an anti-aliased
snake-beta, a conv and tanh (BigVGAN v1).

``anti_alias=False`` is the lighter generator: the same network with plain snake-beta
activations at the signal's rate (about 3x cheaper per activation on a CPU); the anti-aliased
one is the paper's. Unverified sizes, all fields of :class:`VocoderConfig`: FlowMAC's vocoder
is "BigVGAN made smaller, 1024 initial channels plus an additional upsampling layer"; the
demo's widths and rates are the project's choice (see the FlowMAC model card).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from bench.codecs.modules.unet import SnakeBeta
from torch import nn

# BigVGAN's anti-aliasing filter: 12 taps at 2x, cutoff at the original Nyquist (0.25 of the
# upsampled rate) with a transition half-width of 0.3 of it.
FILTER_TAPS = 12
RESAMPLE_RATIO = 2


@dataclass(frozen=True)
class VocoderConfig:
    """The generator's sizes. The product of ``upsample_rates`` is the mel hop."""

    n_mels: int = 128
    initial_channels: int = 1024
    upsample_rates: tuple[int, ...] = (8, 4, 2, 2, 2, 2)
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[int, ...] = (1, 3, 5)
    anti_alias: bool = True

    def __post_init__(self) -> None:
        if self.initial_channels % 2 ** len(self.upsample_rates):
            raise ValueError(
                f"expected initial_channels divisible by 2 per upsampling stage "
                f"({2 ** len(self.upsample_rates)}), got {self.initial_channels}"
            )

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_rates)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> VocoderConfig:
        return cls(**{key: tuple(v) if isinstance(v, list) else v for key, v in data.items()})


def kaiser_sinc_filter(cutoff: float, half_width: float, taps: int) -> torch.Tensor:
    """A low-pass FIR filter ``(taps,)`` with unit DC gain: a sinc at ``cutoff`` (cycles per
    sample) under a Kaiser window whose beta meets the attenuation of the transition band
    ``half_width`` (Kaiser's formula, as in BigVGAN's filter)."""
    attenuation = 2.285 * (taps // 2 - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    else:
        beta = 0.0
    window = torch.kaiser_window(taps, periodic=False, beta=beta, dtype=torch.float64)
    # Even taps: the centre lies between two samples.
    time = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    kernel = 2 * cutoff * torch.sinc(2 * cutoff * time) * window
    return (kernel / kernel.sum()).to(torch.float32)


class AntiAliasedActivation(nn.Module):
    """Snake-beta at twice the rate: upsample 2x (zero-stuffing and the low-pass, gain 2),
    activate, low-pass and keep every second sample. Length in equals length out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.activation = SnakeBeta(channels)
        # Not in the state dict: it follows from the constants.
        self.register_buffer(
            "lowpass",
            kaiser_sinc_filter(0.5 / RESAMPLE_RATIO, 0.6 / RESAMPLE_RATIO, FILTER_TAPS),
            persistent=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        kernel = self.lowpass.to(x.dtype).expand(channels, 1, FILTER_TAPS)
        pad = FILTER_TAPS // RESAMPLE_RATIO - 1
        # Replicate padding at the edges, as BigVGAN, so the ends do not ring.
        padded = F.pad(x, (pad, pad), mode="replicate")
        up = RESAMPLE_RATIO * F.conv_transpose1d(
            padded, kernel, stride=RESAMPLE_RATIO, groups=channels
        )
        trim = pad * RESAMPLE_RATIO + (FILTER_TAPS - RESAMPLE_RATIO) // 2
        up = up[..., trim : trim + RESAMPLE_RATIO * x.shape[-1]]
        activated = self.activation(up)
        half = FILTER_TAPS // 2
        activated = F.pad(activated, (half - 1, half), mode="replicate")
        return F.conv1d(activated, kernel, stride=RESAMPLE_RATIO, groups=channels)


def _activation(channels: int, anti_alias: bool) -> nn.Module:
    return AntiAliasedActivation(channels) if anti_alias else SnakeBeta(channels)


def _same_conv(channels_in: int, channels_out: int, kernel: int, dilation: int = 1) -> nn.Conv1d:
    return nn.utils.parametrizations.weight_norm(
        nn.Conv1d(
            channels_in,
            channels_out,
            kernel,
            dilation=dilation,
            padding=dilation * (kernel - 1) // 2,
        )
    )


class AMPBlock(nn.Module):
    """BigVGAN's AMP block (its "AMPBlock1"): for each dilation, activation, dilated conv,
    activation, conv, added to the input."""

    def __init__(
        self, channels: int, kernel: int, dilations: tuple[int, ...], anti_alias: bool
    ) -> None:
        super().__init__()
        self.dilated = nn.ModuleList(
            _same_conv(channels, channels, kernel, dilation) for dilation in dilations
        )
        self.plain = nn.ModuleList(_same_conv(channels, channels, kernel) for _ in dilations)
        self.activations = nn.ModuleList(
            _activation(channels, anti_alias) for _ in range(2 * len(dilations))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activations = iter(self.activations)
        for dilated, plain in zip(self.dilated, self.plain, strict=True):
            hidden = dilated(next(activations)(x))
            x = x + plain(next(activations)(hidden))
        return x


class BigVGANGenerator(nn.Module):
    """Log-mel ``(batch, n_mels, frames)`` to waveform ``(batch, 1, frames * hop)`` in [-1, 1]."""

    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        self.config = config
        width = config.initial_channels
        self.conv_pre = _same_conv(config.n_mels, width, 7)
        self.upsamples = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for rate in config.upsample_rates:
            self.upsamples.append(
                nn.utils.parametrizations.weight_norm(
                    nn.ConvTranspose1d(
                        width,
                        width // 2,
                        2 * rate,
                        stride=rate,
                        padding=rate // 2 + rate % 2,
                        output_padding=rate % 2,
                    )
                )
            )
            width //= 2
            self.blocks.append(
                nn.ModuleList(
                    AMPBlock(width, kernel, config.resblock_dilations, config.anti_alias)
                    for kernel in config.resblock_kernels
                )
            )
        self.activation_post = _activation(width, config.anti_alias)
        self.conv_post = _same_conv(width, 1, 7)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.dim() != 3 or mel.shape[1] != self.config.n_mels:
            raise ValueError(
                f"expected a mel (batch, {self.config.n_mels}, frames), got {tuple(mel.shape)}"
            )
        x = self.conv_pre(mel)
        for upsample, blocks in zip(self.upsamples, self.blocks, strict=True):
            x = upsample(x)
            x = sum(block(x) for block in blocks) / len(blocks)
        return torch.tanh(self.conv_post(self.activation_post(x)))

    def remove_weight_norm(self) -> None:
        """Bake the weight-norm parametrisations into plain weights (inference)."""
        for module in self.modules():
            if nn.utils.parametrize.is_parametrized(module, "weight"):
                nn.utils.parametrize.remove_parametrizations(module, "weight")
