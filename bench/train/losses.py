"""Reconstruction and adversarial losses for codec training.

Follows EnCodec (Défossez et al., 2022, Section 3.4): the time-domain L1, the multi-scale mel
loss, the hinge GAN losses and the relative feature-matching loss.

Audio is shaped ``(batch, channels, samples)``. Discriminator outputs come as one logit tensor
(and one list of feature maps) per sub-discriminator, as in
``bench.codecs.modules.discriminators.DiscriminatorOutput``. All adversarial losses average
over sub-discriminators; HiFi-GAN sums instead, so multiply by ``len(logits)`` to match it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench.codecs.modules.spectral import mel_spectrogram

# audiocraft's floor under the mel magnitudes before the log.
LOG_FLOOR = 1e-5


def _check_pair(x: torch.Tensor, x_hat: torch.Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f"expected audio shaped (batch, channels, samples), got {tuple(x.shape)}")
    if x.shape != x_hat.shape:
        raise ValueError(f"expected x_hat shaped like x {tuple(x.shape)}, got {tuple(x_hat.shape)}")


def time_l1(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """EnCodec's time-domain loss: mean absolute error between waveforms ``(B, C, T)``."""
    _check_pair(x, x_hat)
    return F.l1_loss(x_hat, x)


class MultiScaleMelLoss(nn.Module):
    """EnCodec's frequency loss: L1 + alpha * L2 between mel spectrograms at several scales.

    Scale ``i`` uses a Hann window and FFT of ``2**i`` samples, a hop of ``2**i / 4`` and
    ``n_mels`` bands of the magnitude of an STFT normalised by the window's L2 norm (what
    torchaudio's ``normalized=True`` does). The paper (scales 5..11, alpha 1) divides its double
    sum over the alphas and the scales by ``|alpha| * |scales|``; with a single alpha shared by
    all scales that is the mean over scales, computed here. The L1 and L2 terms are the mean
    absolute and mean squared differences, so the loss does not grow with the batch or length.

    Differences from other implementations, kept deliberately:

    - audiocraft uses scales 6..10, puts the L2 term on log10(mel + 1e-5), starts the mel
      bands at 64 Hz and weights the loss 2 (the paper: lambda_f = 1);
    - torchaudio's default mel bands (used by audiocraft) are HTK without area normalisation;
      this project's filterbank (``bench.codecs.modules.spectral``) is Slaney-normalised;
    - frames are centred with reflect padding of ``2**i / 2`` samples on each side.

    ``log_l2=True`` takes audiocraft's L2 term, on ``log10(mel + 1e-5)``, with the paper's
    scales and bands: a linear-magnitude loss is ruled by the loudest low bands, while the log
    term weighs quiet and high bands too, which a short training run needs (the CPU demo).

    Inputs are ``(batch, channels, samples)`` with more than ``2**max(scales) / 2`` samples.
    """

    def __init__(
        self,
        sample_rate: int,
        n_mels: int = 64,
        scales: Iterable[int] = range(5, 12),
        alpha: float = 1.0,
        log_l2: bool = False,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.log_l2 = log_l2
        self.n_mels = n_mels
        self.scales = tuple(scales)
        if not self.scales:
            raise ValueError("expected at least one scale, got none")
        self.alpha = alpha
        # mel_spectrogram's own `normalized` divides by sqrt(n_fft); EnCodec's torchaudio
        # transform divides by the window's L2 norm, so apply that to the linear mel instead.
        self._window_norms = {
            scale: float(torch.hann_window(2**scale).pow(2).sum().sqrt()) for scale in self.scales
        }

    def mel(self, audio: torch.Tensor, scale: int) -> torch.Tensor:
        """Normalised magnitude mel spectrogram ``(B, C, n_mels, frames)``, window ``2**scale``."""
        n_fft = 2**scale
        mels = mel_spectrogram(audio, self.sample_rate, n_fft, n_fft // 4, self.n_mels)
        return mels / self._window_norms[scale]

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        _check_pair(x, x_hat)
        shortest = 2 ** max(self.scales) // 2 + 1
        if x.shape[-1] < shortest:
            raise ValueError(
                f"expected at least {shortest} samples for scale {max(self.scales)}, "
                f"got {x.shape[-1]}"
            )
        total = x.new_zeros(())
        for scale in self.scales:
            mel_hat, mel = self.mel(x_hat, scale), self.mel(x, scale)
            if self.log_l2:
                squared = (torch.log10(mel_hat + LOG_FLOOR) - torch.log10(mel + LOG_FLOOR)).pow(2)
            else:
                squared = (mel_hat - mel).pow(2)
            total = total + (mel_hat - mel).abs().mean() + self.alpha * squared.mean()
        return total / len(self.scales)


def _check_logits(fake: Sequence[torch.Tensor], real: Sequence[torch.Tensor] | None = None) -> None:
    if not fake:
        raise ValueError("expected logits of at least one discriminator, got none")
    if real is not None and len(real) != len(fake):
        raise ValueError(f"expected as many real as fake logits, got {len(real)} and {len(fake)}")


def hinge_generator_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Generator hinge loss: mean over discriminators k of mean(relu(1 - D_k(x_hat)))."""
    _check_logits(fake_logits)
    return torch.stack([F.relu(1 - logit).mean() for logit in fake_logits]).mean()


def hinge_discriminator_loss(
    real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Discriminator hinge loss.

    Mean over discriminators k of mean(relu(1 - D_k(x))) + mean(relu(1 + D_k(x_hat))).
    """
    _check_logits(fake_logits, real_logits)
    per_discriminator = [
        F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        for real, fake in zip(real_logits, fake_logits, strict=True)
    ]
    return torch.stack(per_discriminator).mean()


def relative_feature_matching(
    real_features: Sequence[Sequence[torch.Tensor]],
    fake_features: Sequence[Sequence[torch.Tensor]],
    epsilon: float = 1e-12,
) -> torch.Tensor:
    """EnCodec's feature matching: mean over k, l of mean|D_k^l(x) - D_k^l(x_hat)| / mean|D_k^l(x)|.

    Dividing by the real activations' magnitude makes every layer count alike whatever its
    scale. The real side is detached: this loss trains the generator, not the discriminator.
    ``epsilon`` only guards against an all-zero real feature map.
    """
    if not fake_features:
        raise ValueError("expected feature maps of at least one discriminator, got none")
    if [len(maps) for maps in real_features] != [len(maps) for maps in fake_features]:
        raise ValueError(
            "expected the same number of real and fake feature maps per discriminator, got "
            f"{[len(maps) for maps in real_features]} and {[len(maps) for maps in fake_features]}"
        )
    ratios = []
    for real_maps, fake_maps in zip(real_features, fake_features, strict=True):
        for real, fake in zip(real_maps, fake_maps, strict=True):
            real = real.detach()
            ratios.append((real - fake).abs().mean() / real.abs().mean().clamp_min(epsilon))
    return torch.stack(ratios).mean()


def least_squares_generator_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """HiFi-GAN's and BigVGAN's generator loss: sum over discriminators k of
    mean((1 - D_k(x_hat))^2)."""
    _check_logits(fake_logits)
    return torch.stack([(1 - logit).pow(2).mean() for logit in fake_logits]).sum()


def least_squares_discriminator_loss(
    real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Sum over discriminators k of mean((1 - D_k(x))^2) + mean(D_k(x_hat)^2)."""
    _check_logits(fake_logits, real_logits)
    per_discriminator = [
        (1 - real).pow(2).mean() + fake.pow(2).mean()
        for real, fake in zip(real_logits, fake_logits, strict=True)
    ]
    return torch.stack(per_discriminator).sum()


def feature_matching_l1(
    real_features: Sequence[Sequence[torch.Tensor]],
    fake_features: Sequence[Sequence[torch.Tensor]],
) -> torch.Tensor:
    """HiFi-GAN's feature matching: sum over discriminators and layers of mean|D(x) - D(x_hat)|,
    the real side detached."""
    if not fake_features:
        raise ValueError("expected feature maps of at least one discriminator, got none")
    distances = [
        (real.detach() - fake).abs().mean()
        for real_maps, fake_maps in zip(real_features, fake_features, strict=True)
        for real, fake in zip(real_maps, fake_maps, strict=True)
    ]
    return torch.stack(distances).sum()
