"""GAN discriminators for codec training: EnCodec's MS-STFT and HiFi-GAN's MPD and MSD.

The MS-STFT discriminator follows Défossez et al., "High Fidelity Neural Audio Compression"
(2022), Section 3.4, and the layer choices of its official code where they differ from the paper
(kernel 3x9 instead of 3x8, no weight norm on the first conv). The multi-period and multi-scale
discriminators follow Kong et al., "HiFi-GAN" (2020), Section 2.2 and Appendix A. Every
discriminator returns a :class:`DiscriminatorOutput`, so families can be combined (HiFi-Codec
trains MPD, MSD and MS-STFT-D together) and the GAN losses in ``bench.train.losses`` accept any
of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from bench.codecs.modules.conv import official_key_mapping
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm


@dataclass(frozen=True)
class DiscriminatorOutput:
    """Logits and feature maps, one entry per sub-discriminator.

    ``logits[k]`` is the output of sub-discriminator ``k``; ``feature_maps[k]`` lists the
    activations of its hidden layers (used by feature matching), in layer order.
    """

    logits: list[torch.Tensor]
    feature_maps: list[list[torch.Tensor]]

    def __post_init__(self) -> None:
        assert len(self.logits) == len(self.feature_maps), "one feature-map list per logit"

    @staticmethod
    def concatenate(outputs: Iterable[DiscriminatorOutput]) -> DiscriminatorOutput:
        """Joins the outputs of several discriminators into one, in order."""
        logits: list[torch.Tensor] = []
        feature_maps: list[list[torch.Tensor]] = []
        for output in outputs:
            logits.extend(output.logits)
            feature_maps.extend(output.feature_maps)
        return DiscriminatorOutput(logits, feature_maps)


class MultiDiscriminator(nn.Module):
    """Sub-discriminators that all see the same ``(batch, channels, samples)`` input.

    Each sub-module returns a :class:`DiscriminatorOutput`; the results are concatenated, so a
    ``MultiDiscriminator`` can itself hold other ``MultiDiscriminator`` families.
    """

    def __init__(self, discriminators: Iterable[nn.Module]) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(discriminators)

    @property
    def num_discriminators(self) -> int:
        return len(self.discriminators)

    def forward(self, audio: torch.Tensor) -> DiscriminatorOutput:
        if audio.dim() != 3:
            raise ValueError(
                f"expected audio shaped (batch, channels, samples), got {tuple(audio.shape)}"
            )
        return DiscriminatorOutput.concatenate(d(audio) for d in self.discriminators)


def _run_conv_stack(
    convs: nn.ModuleList, activation: nn.Module, conv_post: nn.Module, hidden: torch.Tensor
) -> DiscriminatorOutput:
    """One sub-discriminator's output: every activated conv is a feature map, then the logit."""
    feature_maps = []
    for conv in convs:
        hidden = activation(conv(hidden))
        feature_maps.append(hidden)
    return DiscriminatorOutput([conv_post(hidden)], [feature_maps])


def _same_padding(kernel_size: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    return (kernel_size[0] - 1) * dilation[0] // 2, (kernel_size[1] - 1) * dilation[1] // 2


class DiscriminatorSTFT(nn.Module):
    """One scale of the MS-STFT discriminator: a 2-D conv stack on a complex STFT.

    The STFT (Hann window, ``center=False``) is normalised by the window's L2 norm, which is
    what torchaudio's ``Spectrogram(normalized=True)`` used by the official code does;
    ``torch.stft(normalized=True)`` would divide by ``sqrt(n_fft)`` instead. Real and imaginary
    parts become ``2 * in_channels`` input planes laid out as (time, frequency), so the
    strides (``stride``, default 1 on time and 2 on frequency) shrink only the frequency axis
    and the dilations (``dilations``) widen only the time axis.
    """

    def __init__(
        self,
        filters: int = 32,
        in_channels: int = 1,
        out_channels: int = 1,
        n_fft: int = 1024,
        hop_length: int = 256,
        win_length: int = 1024,
        kernel_size: tuple[int, int] = (3, 9),
        dilations: Sequence[int] = (1, 2, 4),
        stride: tuple[int, int] = (1, 2),
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        if win_length > n_fft:
            raise ValueError(f"expected win_length <= n_fft ({n_fft}), got {win_length}")
        self.in_channels = in_channels
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        window = torch.hann_window(win_length)
        # Not persistent: derived from win_length, so checkpoints carry only learned weights.
        self.register_buffer("window", window, persistent=False)
        self.window_norm = float(window.pow(2).sum().sqrt())
        self.activation = nn.LeakyReLU(negative_slope)

        square = (kernel_size[0], kernel_size[0])
        # The official code leaves the first conv without weight norm.
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(
                    2 * in_channels,
                    filters,
                    kernel_size,
                    padding=_same_padding(kernel_size, (1, 1)),
                )
            ]
        )
        for dilation in dilations:
            self.convs.append(
                weight_norm(
                    nn.Conv2d(
                        filters,
                        filters,
                        kernel_size,
                        stride=stride,
                        dilation=(dilation, 1),
                        padding=_same_padding(kernel_size, (dilation, 1)),
                    )
                )
            )
        self.convs.append(
            weight_norm(nn.Conv2d(filters, filters, square, padding=_same_padding(square, (1, 1))))
        )
        self.conv_post = weight_norm(
            nn.Conv2d(filters, out_channels, square, padding=_same_padding(square, (1, 1)))
        )

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """Complex STFT of ``(batch, channels, samples)`` audio as real planes.

        Shaped ``(batch, 2 * channels, frames, freqs)``: all real parts, then all imaginary parts.
        """
        batch, channels, samples = audio.shape
        spectrum = torch.stft(
            audio.reshape(batch * channels, samples),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=False,
            return_complex=True,
        )
        spectrum = (spectrum / self.window_norm).reshape(batch, channels, *spectrum.shape[-2:])
        return torch.cat([spectrum.real, spectrum.imag], dim=1).transpose(2, 3)

    def forward(self, audio: torch.Tensor) -> DiscriminatorOutput:
        """Logit ``(batch, out_channels, frames, freqs')`` and each hidden conv's activation."""
        if audio.dim() != 3 or audio.shape[1] != self.in_channels:
            raise ValueError(
                f"expected audio shaped (batch, {self.in_channels}, samples), "
                f"got {tuple(audio.shape)}"
            )
        if audio.shape[-1] < self.n_fft:
            raise ValueError(
                f"expected at least n_fft = {self.n_fft} samples, got {audio.shape[-1]}"
            )
        hidden = self.spectrogram(audio)
        return _run_conv_stack(self.convs, self.activation, self.conv_post, hidden)


class MultiScaleSTFTDiscriminator(MultiDiscriminator):
    """EnCodec's MS-STFT discriminator: one :class:`DiscriminatorSTFT` per STFT scale.

    Defaults are the paper's 5 scales (windows 2048 to 128, hop = window / 4). The official
    encodec repository defaults to 3 scales in the order [1024, 2048, 512]; pass those to
    reproduce it. For 48 kHz the paper doubles the windows; stereo goes in as
    ``in_channels=2`` (or fold channels into the batch to judge them separately).
    """

    def __init__(
        self,
        filters: int = 32,
        in_channels: int = 1,
        out_channels: int = 1,
        n_ffts: Sequence[int] = (2048, 1024, 512, 256, 128),
        hop_lengths: Sequence[int] = (512, 256, 128, 64, 32),
        win_lengths: Sequence[int] = (2048, 1024, 512, 256, 128),
        kernel_size: tuple[int, int] = (3, 9),
        dilations: Sequence[int] = (1, 2, 4),
        stride: tuple[int, int] = (1, 2),
        negative_slope: float = 0.2,
    ) -> None:
        if not len(n_ffts) == len(hop_lengths) == len(win_lengths):
            raise ValueError(
                "expected as many n_ffts, hop_lengths and win_lengths, got "
                f"{len(n_ffts)}, {len(hop_lengths)} and {len(win_lengths)}"
            )
        super().__init__(
            DiscriminatorSTFT(
                filters,
                in_channels,
                out_channels,
                n_fft=n_fft,
                hop_length=hop_length,
                win_length=win_length,
                kernel_size=kernel_size,
                dilations=dilations,
                stride=stride,
                negative_slope=negative_slope,
            )
            for n_fft, hop_length, win_length in zip(n_ffts, hop_lengths, win_lengths, strict=True)
        )


# HiFi-GAN's period sub-discriminator: output channels of each (5, 1) conv as multiples of
# ``filters`` (32, 128, 512, 1024, 1024 at the default 32); all but the last stride 3 in time.
_PERIOD_WIDTHS = (1, 4, 16, 32, 32)
# HiFi-GAN's scale sub-discriminator, per conv: (width as a multiple of ``filters``, kernel,
# stride, groups); the default ``filters=128`` gives 128, 128, 256, 512, 1024, 1024, 1024.
_SCALE_LAYERS = (
    (1, 15, 1, 1),
    (1, 41, 2, 4),
    (2, 41, 2, 16),
    (4, 41, 4, 16),
    (8, 41, 4, 16),
    (8, 41, 1, 16),
    (8, 5, 1, 1),
)
_SCALE_GROUPS_LCM = 16


def _check_audio(audio: torch.Tensor, in_channels: int) -> None:
    if audio.dim() != 3 or audio.shape[1] != in_channels:
        raise ValueError(
            f"expected audio shaped (batch, {in_channels}, samples), got {tuple(audio.shape)}"
        )


class PeriodDiscriminator(nn.Module):
    """One period of HiFi-GAN's MPD: a 2-D conv stack on audio folded into ``period`` columns.

    ``(batch, channels, samples)`` audio is reflect-padded at the end to a multiple of
    ``period`` and reshaped to ``(batch, channels, samples / period, period)``, so the
    ``(kernel_size, 1)`` convs see only samples ``period`` apart. The convs have
    ``filters * (1, 4, 16, 32, 32)`` output channels (HiFi-GAN's 32, 128, 512, 1024, 1024 at
    ``filters=32``), stride ``stride`` in time except the last, weight norm (spectral norm with
    ``use_spectral_norm``) and leaky ReLU; a final ``(3, 1)`` conv gives the logit. Parameters
    grow as ``filters ** 2``: about 8.2 M per period at 32, 0.13 M at 4 (see
    :class:`MultiPeriodDiscriminator` for narrowing).
    """

    def __init__(
        self,
        period: int,
        filters: int = 32,
        in_channels: int = 1,
        out_channels: int = 1,
        kernel_size: int = 5,
        stride: int = 3,
        negative_slope: float = 0.1,
        use_spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if period < 1:
            raise ValueError(f"expected period >= 1, got {period}")
        if filters < 1:
            raise ValueError(f"expected filters >= 1, got {filters}")
        self.period = period
        self.in_channels = in_channels
        self.activation = nn.LeakyReLU(negative_slope)
        norm = spectral_norm if use_spectral_norm else weight_norm
        widths = [filters * multiple for multiple in _PERIOD_WIDTHS]
        strides = [stride] * (len(widths) - 1) + [1]
        self.convs = nn.ModuleList()
        previous = in_channels
        for width, layer_stride in zip(widths, strides, strict=True):
            self.convs.append(
                norm(
                    nn.Conv2d(
                        previous,
                        width,
                        (kernel_size, 1),
                        stride=(layer_stride, 1),
                        padding=((kernel_size - 1) // 2, 0),
                    )
                )
            )
            previous = width
        self.conv_post = norm(nn.Conv2d(previous, out_channels, (3, 1), padding=(1, 0)))

    def forward(self, audio: torch.Tensor) -> DiscriminatorOutput:
        """Logit ``(batch, out_channels, rows', period)`` and each hidden conv's activation.

        ``rows = ceil(samples / period)``; each stride-3 conv maps ``rows`` to
        ``(rows - 1) // 3 + 1``.
        """
        _check_audio(audio, self.in_channels)
        samples = audio.shape[-1]
        if samples < self.period:
            raise ValueError(f"expected at least period = {self.period} samples, got {samples}")
        remainder = samples % self.period
        if remainder:
            audio = F.pad(audio, (0, self.period - remainder), mode="reflect")
        batch, channels, padded = audio.shape
        hidden = audio.reshape(batch, channels, padded // self.period, self.period)
        return _run_conv_stack(self.convs, self.activation, self.conv_post, hidden)


class MultiPeriodDiscriminator(MultiDiscriminator):
    """HiFi-GAN's multi-period discriminator (MPD): one :class:`PeriodDiscriminator` per period.

    Defaults are HiFi-GAN's periods 2, 3, 5, 7, 11 and widths (``filters=32``, about 41 M
    parameters). HiFi-Codec narrows MPD to the MS-STFT discriminator's parameter count (about
    0.47 M at ``filters=32``); parameters scale as ``filters ** 2``, so ``filters=4`` (0.65 M) or
    ``filters=3`` (0.36 M) come closest.
    """

    def __init__(
        self,
        periods: Sequence[int] = (2, 3, 5, 7, 11),
        filters: int = 32,
        in_channels: int = 1,
        out_channels: int = 1,
        kernel_size: int = 5,
        stride: int = 3,
        negative_slope: float = 0.1,
        use_spectral_norm: bool = False,
    ) -> None:
        super().__init__(
            PeriodDiscriminator(
                period,
                filters,
                in_channels,
                out_channels,
                kernel_size=kernel_size,
                stride=stride,
                negative_slope=negative_slope,
                use_spectral_norm=use_spectral_norm,
            )
            for period in periods
        )


class ScaleDiscriminator(nn.Module):
    """One scale of HiFi-GAN's MSD: grouped 1-D convs on raw or average-pooled audio.

    The input is first average-pooled ``downsamples`` times (kernel 4, stride 2, padding 2,
    roughly halving the length each time). Seven convs follow with ``filters * (1, 1, 2, 4, 8,
    8, 8)`` output channels (HiFi-GAN's 128 ... 1024 at ``filters=128``), kernels 15, 41, 41, 41,
    41, 41, 5, strides 1, 2, 2, 4, 4, 1, 1 and groups 1, 4, 16, 16, 16, 16, 1, each with leaky
    ReLU; a final kernel-3 conv gives the logit. The groups need ``filters`` to be a multiple of
    16. HiFi-GAN puts spectral norm on the raw-audio scale (``use_spectral_norm=True``) and
    weight norm on the others.
    """

    def __init__(
        self,
        filters: int = 128,
        in_channels: int = 1,
        out_channels: int = 1,
        downsamples: int = 0,
        negative_slope: float = 0.1,
        use_spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if filters < 1 or filters % _SCALE_GROUPS_LCM:
            raise ValueError(
                f"expected filters to be a positive multiple of {_SCALE_GROUPS_LCM} "
                f"(the conv groups), got {filters}"
            )
        if downsamples < 0:
            raise ValueError(f"expected downsamples >= 0, got {downsamples}")
        self.in_channels = in_channels
        self.downsamples = downsamples
        self.pool = nn.AvgPool1d(4, stride=2, padding=2)
        self.activation = nn.LeakyReLU(negative_slope)
        norm = spectral_norm if use_spectral_norm else weight_norm
        self.convs = nn.ModuleList()
        previous = in_channels
        for multiple, kernel_size, stride, groups in _SCALE_LAYERS:
            width = filters * multiple
            self.convs.append(
                norm(
                    nn.Conv1d(
                        previous,
                        width,
                        kernel_size,
                        stride=stride,
                        groups=groups,
                        padding=(kernel_size - 1) // 2,
                    )
                )
            )
            previous = width
        self.conv_post = norm(nn.Conv1d(previous, out_channels, 3, padding=1))

    def forward(self, audio: torch.Tensor) -> DiscriminatorOutput:
        """Logit ``(batch, out_channels, frames)`` and each hidden conv's activation.

        Each pooling maps a length ``n`` to ``n // 2 + 1``; each conv of stride ``s`` maps it
        to ``(n - 1) // s + 1``.
        """
        _check_audio(audio, self.in_channels)
        hidden = audio
        for _ in range(self.downsamples):
            hidden = self.pool(hidden)
        return _run_conv_stack(self.convs, self.activation, self.conv_post, hidden)


class MultiScaleDiscriminator(MultiDiscriminator):
    """HiFi-GAN's multi-scale discriminator (MSD): :class:`ScaleDiscriminator` at 3 scales.

    Scale ``k`` sees the audio average-pooled ``k`` times (raw, x2, x4 downsampled); the first
    uses spectral norm, the others weight norm, as in HiFi-GAN. Each scale pools its own input,
    so the sub-discriminators also work alone. Defaults are HiFi-GAN's widths (``filters=128``,
    about 29.6 M parameters). Parameters scale as ``filters ** 2`` and ``filters`` must be a
    multiple of 16; ``filters=16`` (0.46 M) matches the MS-STFT discriminator's 0.47 M, as
    HiFi-Codec asks.
    """

    def __init__(
        self,
        scales: int = 3,
        filters: int = 128,
        in_channels: int = 1,
        out_channels: int = 1,
        negative_slope: float = 0.1,
    ) -> None:
        if scales < 1:
            raise ValueError(f"expected scales >= 1, got {scales}")
        super().__init__(
            ScaleDiscriminator(
                filters,
                in_channels,
                out_channels,
                downsamples=k,
                negative_slope=negative_slope,
                use_spectral_norm=k == 0,
            )
            for k in range(scales)
        )


def convert_encodec_msstftd_state_dict(
    state: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Maps a state dict of the official ``encodec.msstftd.MultiScaleSTFTDiscriminator`` to ours.

    The official convs sit inside a ``NormConv2d`` wrapper (``.conv.``) and use the legacy
    ``torch.nn.utils.weight_norm`` (``weight_g``, ``weight_v``); ours are plain ``Conv2d``
    with the parametrization API. Keys map as:

    - ``*.conv.weight_g`` -> ``*.parametrizations.weight.original0`` (as
      :func:`~bench.codecs.modules.conv.official_key_mapping` does for the 1-D layers)
    - ``*.conv.weight_v`` -> ``*.parametrizations.weight.original1``
    - ``*.conv.weight`` / ``*.conv.bias`` -> ``*.weight`` / ``*.bias``
    - ``*.spec_transform.window`` is dropped (a torchaudio buffer; ours is rebuilt from the
      window length).

    For example ``discriminators.0.convs.1.conv.weight_g`` maps to
    ``discriminators.0.convs.1.parametrizations.weight.original0``. Load the result with
    ``strict=True`` so that any key or shape mismatch fails.
    """
    return {
        key.replace(".conv.", "."): value
        for key, value in official_key_mapping(state).items()
        if not key.endswith(".spec_transform.window")
    }
