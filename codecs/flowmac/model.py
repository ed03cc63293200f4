"""The FlowMAC model (Pia et al., "FlowMAC: Conditional Flow Matching for Audio Coding at Low
Bit Rates", ICASSP 2025), as the paper describes it: a mel front end, a transformer mel
encoder, a residual VQ in a 16-d projection, a transformer mel decoder to a coarse mel, and a
conditional-flow-matching (CFM) decoder that refines the coarse mel into a mel a vocoder
turns into audio (:mod:`bench.codecs.modules.bigvgan`).

- **Mel front end.** 24 kHz; 128 Slaney mel bands of the magnitude STFT, window and FFT 2048,
  hop 512 (46.875 frames/s), centred frames; the log of the magnitudes floored at 1e-5.
  Normalised per band with a mean and standard deviation computed once over the training data
  (:meth:`FlowMacModel.set_normalisation`) and stored as buffers, so they travel in the
  checkpoint.
- **Mel encoder.** A 1x1 conv to ``width``, then ``blocks`` post-norm transformer layers
  (attention, dropout, layer norm, feed-forward, dropout, layer norm). **Decoder:** the same,
  ending in a 1x1 conv to the coarse mel (in the normalised domain). Prior loss: MSE + MAE of
  the coarse mel against the input mel.
- **Quantizer.** Residual VQ of ``n_q`` stages x ``bins`` codes, each stage's lookup in a
  ``codebook_dim``-d projection (8 x 256 in 16 dims: 3 kbps; the first 4 stages: 1.5 kbps),
  with the straight-through estimator in that projection, so the projections learn from the
  losses on the output (:class:`bench.codecs.modules.rvq.VectorQuantization`).
- **CFM decoder.** The OT path and loss of :mod:`bench.codecs.modules.flow_matching`, a
  Matcha-style U-Net (:mod:`bench.codecs.modules.unet`) taking the noisy mel with the coarse
  mel concatenated. Total loss ``L_CFM + 0.01 L_prior + 0.25 L_VQ``.

Unverified choices (config fields, listed in the model card): per-band rather than global
normalisation; no positional encoding in the mel transformers (the paper names none; the
1x1 conv gives each frame only its own content, so attention acts on the set of frames); the
transformer's width, heads and feed-forward size; the CFM gradient reaching the encoder
through the coarse mel (one network trained end to end by the total loss); VQ-VAE codebooks
learnt by EMA with k-means initialisation and dead-code replacement (the project's RVQ).
Long signals are coded in windows of ``window_frames`` frames (attention is quadratic in
length); the codes do not depend on the window, only the encoder's context does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from bench.codecs.modules.bigvgan import VocoderConfig
from bench.codecs.modules.flow_matching import cfm_loss
from bench.codecs.modules.rvq import ResidualVectorQuantizer, bandwidth_to_n_q
from bench.codecs.modules.spectral import mel_spectrogram
from bench.codecs.modules.unet import UNet1d, UNetConfig
from torch import nn

LOG_FLOOR = 1e-5
PRIOR_WEIGHT = 0.01
VQ_WEIGHT = 0.25


@dataclass(frozen=True)
class MelConfig:
    """The mel front end, shared by the codec and its vocoder (they must agree)."""

    sample_rate: int = 24_000
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def frames(self, num_samples: int) -> int:
        """Frames of a signal of ``num_samples`` (centred frames)."""
        return num_samples // self.hop_length + 1


def log_mel(audio: torch.Tensor, mel: MelConfig) -> torch.Tensor:
    """``(batch, samples)`` audio -> its log mel ``(batch, n_mels, frames)``.

    A signal shorter than half a window cannot be reflect-padded: it is zero-padded to half a
    window first, and only its own ``mel.frames(samples)`` frames are kept.
    """
    frames = mel.frames(audio.shape[-1])
    shortfall = mel.n_fft // 2 + 1 - audio.shape[-1]
    if shortfall > 0:
        audio = F.pad(audio, (0, shortfall))
    magnitudes = mel_spectrogram(audio, mel.sample_rate, mel.n_fft, mel.hop_length, mel.n_mels)
    return torch.log(magnitudes[..., :frames].clamp_min(LOG_FLOOR))


@dataclass(frozen=True)
class FlowMacConfig:
    """One FlowMAC model. ``bandwidths`` are the bitrates its first ``n`` stages give."""

    name: str
    mel: MelConfig = field(default_factory=MelConfig)
    width: int = 128
    blocks: int = 6
    heads: int = 8
    feedforward: int = 512
    dropout: float = 0.1
    n_q: int = 8
    bins: int = 256
    codebook_dim: int = 16
    bandwidths: tuple[float, ...] = (1.5, 3.0)
    unet: tuple[int, ...] = (256, 256)
    unet_transformer_blocks: int = 1
    unet_mid_blocks: int = 2
    unet_heads: int = 4
    unet_head_dim: int = 64
    window_frames: int = 512

    def __post_init__(self) -> None:
        for bandwidth in self.bandwidths:
            n_q = bandwidth_to_n_q(bandwidth, self.frame_rate, self.bins)
            if n_q > self.n_q:
                raise ValueError(
                    f"{bandwidth:g} kbps needs {n_q} stages; the config has {self.n_q}"
                )
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by {self.heads} heads")
        if self.unet[0] < self.mel.n_mels:
            # The velocity from noise must cancel the noise in every mel band; through a
            # first level narrower than the mel it cannot (the first demo's 64 channels for
            # 128 bands left 71% of the noise in its NFE-1 output).
            raise ValueError(
                f"expected a U-Net whose first level has at least the {self.mel.n_mels} mel "
                f"bands' width, got unet={self.unet}"
            )

    @property
    def frame_rate(self) -> float:
        return self.mel.frame_rate

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    def unet_config(self) -> UNetConfig:
        return UNetConfig(
            in_channels=self.mel.n_mels,
            condition_channels=self.mel.n_mels,
            channels=self.unet,
            transformer_blocks=self.unet_transformer_blocks,
            mid_blocks=self.unet_mid_blocks,
            num_heads=self.unet_heads,
            head_dim=self.unet_head_dim,
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> FlowMacConfig:
        values = {key: tuple(v) if isinstance(v, list) else v for key, v in data.items()}
        values["mel"] = MelConfig(**data["mel"])
        return cls(**values)


CONFIGS = {
    # The paper's sizes where it gives them (128 mels at hop 512, 6 blocks, 128-d latent,
    # 8 x 256 codes in 16 dims); the rest are the project's guesses.
    "paper": FlowMacConfig(name="paper"),
    # FlowMAC-CQ: trained separately for 6 kbps with 16 stages.
    "cq": FlowMacConfig(name="cq", n_q=16, bandwidths=(6.0,)),
    # CPU size, for tests and the demo checkpoint.
    "tiny": FlowMacConfig(
        name="tiny",
        width=64,
        blocks=2,
        heads=2,
        feedforward=128,
        unet=(128, 128),
        unet_mid_blocks=1,
        unet_heads=2,
        unet_head_dim=32,
        dropout=0.05,
    ),
}


class MelTransformer(nn.Module):
    """A 1x1 conv from ``channels_in`` to the width, ``blocks`` post-norm transformer layers
    and, when ``channels_out`` is given, a 1x1 conv out: ``(batch, channels, frames)``."""

    def __init__(self, config: FlowMacConfig, channels_in: int, channels_out: int | None) -> None:
        super().__init__()
        self.conv_in = nn.Conv1d(channels_in, config.width, 1)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                config.width,
                config.heads,
                config.feedforward,
                config.dropout,
                batch_first=True,
                norm_first=False,
            )
            for _ in range(config.blocks)
        )
        self.conv_out = nn.Conv1d(config.width, channels_out, 1) if channels_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.conv_in(x).transpose(1, 2)
        for layer in self.layers:
            hidden = layer(hidden)
        hidden = hidden.transpose(1, 2)
        return self.conv_out(hidden) if self.conv_out is not None else hidden


@dataclass
class FlowMacOutput:
    """A training forward pass: the losses and the codes used."""

    cfm: torch.Tensor
    prior: torch.Tensor
    commitment: torch.Tensor
    codes: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.cfm + PRIOR_WEIGHT * self.prior + VQ_WEIGHT * self.commitment


class FlowMacModel(nn.Module):
    """Mel encoder, residual VQ, mel decoder and CFM velocity network of one config."""

    def __init__(self, config: FlowMacConfig) -> None:
        super().__init__()
        self.config = config
        n_mels = config.mel.n_mels
        self.register_buffer("mel_mean", torch.zeros(n_mels, 1))
        self.register_buffer("mel_std", torch.ones(n_mels, 1))
        self.encoder = MelTransformer(config, n_mels, None)
        self.quantizer = ResidualVectorQuantizer(
            dimension=config.width,
            n_q=config.n_q,
            bins=config.bins,
            codebook_dim=config.codebook_dim,
        )
        self.decoder = MelTransformer(config, config.width, n_mels)
        self.velocity = UNet1d(config.unet_config())

    def n_q_for(self, bandwidth: float) -> int:
        return bandwidth_to_n_q(bandwidth, self.config.frame_rate, self.config.bins)

    @torch.no_grad()
    def set_normalisation(self, log_mels: torch.Tensor) -> None:
        """Per-band mean and std of ``(batch, n_mels, frames)`` log mels of training data."""
        bands = log_mels.transpose(0, 1).flatten(1)
        self.mel_mean.copy_(bands.mean(dim=1, keepdim=True))
        self.mel_std.copy_(bands.std(dim=1, keepdim=True).clamp_min(1e-3))

    def normalised_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` audio -> normalised log mel ``(batch, n_mels, frames)``."""
        return (log_mel(audio, self.config.mel) - self.mel_mean) / self.mel_std

    def denormalise(self, mel: torch.Tensor) -> torch.Tensor:
        return mel * self.mel_std + self.mel_mean

    def windows(self, frames: int) -> list[slice]:
        size = self.config.window_frames
        return [slice(start, min(start + size, frames)) for start in range(0, frames, size)]

    def forward(
        self, mel: torch.Tensor, n_q: int, generator: torch.Generator, **cfm_options
    ) -> FlowMacOutput:
        """The training losses on normalised mels ``(batch, n_mels, frames)``."""
        quantized = self.quantizer(self.encoder(mel), n_q)
        coarse = self.decoder(quantized.quantized)
        prior = F.mse_loss(coarse, mel) + F.l1_loss(coarse, mel)
        cfm = cfm_loss(
            self.velocity,
            mel,
            coarse,
            generator,
            **cfm_options,
        )
        return FlowMacOutput(cfm, prior, quantized.commitment_loss, quantized.codes)

    def encode(self, mel: torch.Tensor, n_q: int) -> torch.Tensor:
        """Codes ``(n_q, frames)`` of one normalised mel ``(1, n_mels, frames)``, window by
        window."""
        parts = [
            self.quantizer.encode(self.encoder(mel[..., window]), n_q)
            for window in self.windows(mel.shape[-1])
        ]
        return torch.cat(parts, dim=-1)[:, 0]

    def coarse_mel(self, codes: torch.Tensor) -> torch.Tensor:
        """The decoder's coarse mel ``(1, n_mels, frames)`` of codes ``(n_q, frames)``."""
        latent = self.quantizer.decode(codes[:, None])
        parts = [self.decoder(latent[..., window]) for window in self.windows(latent.shape[-1])]
        return torch.cat(parts, dim=-1)

    def frames_for(self, num_samples: int) -> int:
        return self.config.mel.frames(num_samples)

    def bits_per_code(self) -> int:
        return int(math.log2(self.config.bins))


# The vocoder's sizes. "paper": BigVGAN's 24 kHz generator (1536 channels at hop 256) made
# smaller as FlowMAC says, 1024 initial channels and one more 2x stage for hop 512. "tiny":
# the CPU demo's, the project's choice.
VOCODER_CONFIGS = {
    "paper": VocoderConfig(initial_channels=1024, upsample_rates=(4, 4, 2, 2, 2, 2, 2)),
    "tiny": VocoderConfig(
        initial_channels=128, upsample_rates=(8, 8, 4, 2), resblock_kernels=(3, 7)
    ),
    "tiny-light": VocoderConfig(
        initial_channels=128,
        upsample_rates=(8, 8, 4, 2),
        resblock_kernels=(3, 7),
        anti_alias=False,
    ),
}


def vocoder_network_config(generator: VocoderConfig, mel: MelConfig) -> dict:
    """What a checkpoint records of a vocoder: its generator and the mel it was trained on."""
    return {"generator": generator.to_json(), "mel": asdict(mel)}
