"""GAN discriminators for codec training, starting with EnCodec's multi-scale STFT discriminator.

Follows Défossez et al., "High Fidelity Neural Audio Compression" (2022), Section 3.4, and the
layer choices of its official code where they differ from the paper (kernel 3x9 instead of 3x8,
no weight norm on the first conv). Every discriminator returns a :class:`DiscriminatorOutput`,
so families can be combined (HiFi-Codec trains MPD, MSD and MS-STFT-D together) and the GAN
losses in ``bench.train.losses`` accept any of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from bench.codecs.modules.conv import official_key_mapping
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


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
        feature_maps = []
        for conv in self.convs:
            hidden = self.activation(conv(hidden))
            feature_maps.append(hidden)
        return DiscriminatorOutput([self.conv_post(hidden)], [feature_maps])


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
