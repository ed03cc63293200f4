"""HiFi-Codec's officially released architecture (AcademiCodec; Yang et al. 2023, "HiFi-Codec:
Group-residual Vector Quantization for High Fidelity Audio Codec", arXiv 2305.02765), written
for codec-bench so that the released weights load and run.

It follows the AcademiCodec code at commit b6ac134: ``academicodec/models/hificodec/models.py``
(``Encoder``, ``Generator``, ``ResBlock1``, ``Quantizer``, ``Quantizer_module``),
``academicodec/models/hificodec/vqvae.py`` (``VQVAE.encode``: the code order; ``VQVAE.forward``:
decoding from codes), ``academicodec/utils.py`` (``get_padding``) and the release configurations
``egs/HiFi-Codec-{16k-320d,24k-320d,24k-240d}/config_*.json``. The code was read, not copied.

- **Encoder**: a kernel-7 conv to 32 channels, then per stage a leaky ReLU (0.1), a strided conv
  doubling the channels and three HiFi-GAN residual blocks (kernels 11, 7, 3) whose outputs are
  summed one by one, with a GroupNorm (16 channels a group) after each addition, and divided by
  three; a leaky ReLU of PyTorch's default slope (0.01) and a kernel-3 conv to the 512-d latent,
  the one conv without weight norm.
- **Quantizer**: the latent's 512 channels in 2 groups of 256, each coded by the nearest of 1024
  codewords, over 2 residual levels: 4 codes a frame, 10 bits each.
- **Generator**: HiFi-GAN V1: a kernel-7 conv, per stage a leaky ReLU (0.1), a transposed conv
  halving the channels and three residual blocks (kernels 3, 7, 11) averaged; a leaky ReLU (0.1),
  a kernel-7 conv to one channel and tanh.

Parameter names are the official ones under ``encoder.``, ``quantizer.`` and ``generator.``,
except weight norm, which is ``torch.nn.utils.parametrizations.weight_norm`` as elsewhere in
the project: an official file's ``weight_g``/``weight_v`` keys load through
:func:`~bench.codecs.modules.conv.official_key_mapping`.

Checked against the official code by ``scripts/check_hificodec_official.py``: with the b6ac134
modules and seeded random weights saved as a release file, read by the official ``VQVAE`` and by
this codec, the codes are identical and the latents and waveforms equal to the bit (largest
difference 0.0) in all three configurations, on 1 s and 0.771 s of audio (CPU, torch 2.13.0).

Not verified: the release files themselves were not at hand. Their layout (the ``g_*``
checkpoints ``train.py`` writes: a dict of ``generator``, ``encoder`` and ``quantizer`` state
dicts, which ``VQVAE`` loads) and their key names and shapes are derived from the official
code; the tests write files of that layout.

Choices of ours, where the official code has no counterpart (it has no bitstream, and its
inference takes whatever length it is given):

- **Lengths.** The official inference (``vqvae_tester.py``) feeds whole files unpadded, so its
  strided convs keep ``floor(L / hop)`` frames and drop up to a hop of the signal's end. Here
  the input is padded with zeros at the end to a whole number of hops (``ceil(L / hop)``
  frames) and the output trimmed to the input's length, as the codec contract asks. The
  GroupNorms take their statistics over the whole signal, padding included, so the codes of a
  signal that is not a whole number of hops differ a little from those of the official code on
  the unpadded signal; on a whole number of hops they are the official codes.
- **Payload.** All 4 codes of every frame at 10 bits each (the releases have no bitrate ladder),
  level-major as ``VQVAE.encode`` stacks them: level 0 of group 0, level 0 of group 1, level 1
  of group 0, level 1 of group 1 (the paper-faithful
  :class:`~bench.codecs.hificodec.model.HiFiCodecModel` sends its codes group-major).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from bench.codecs.encodec.model import Segment
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

# Numbers the official modules fix in code rather than take from the release configuration.
LATENT_DIMENSION = 512
ENCODER_CHANNELS = 32
RESIDUAL_LEVELS = 2
GROUP_NORM_CHANNELS = 16  # channels per GroupNorm group in the encoder
GROUP_NORM_EPSILON = 1e-6
LEAKY_SLOPE = 0.1
ENCODER_OUTPUT_SLOPE = 0.01  # F.leaky_relu's default, which the encoder's last call leaves


@dataclass(frozen=True)
class OfficialHiFiCodecConfig:
    """One released HiFi-Codec model: the architecture entries of its ``config_*.json``.

    ``upsample_rates`` and ``upsample_kernel_sizes`` are the generator's, from its input on; the
    encoder takes them in reverse order. Their product is the hop.
    """

    name: str
    sample_rate: int
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    n_code_groups: int = 2
    bins: int = 1024

    def __post_init__(self) -> None:
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError(
                f"expected a kernel size per upsampling rate, got rates {self.upsample_rates} "
                f"and kernels {self.upsample_kernel_sizes}"
            )
        for rate, kernel in zip(self.upsample_rates, self.upsample_kernel_sizes, strict=True):
            # Padding (k - u) / 2 makes a strided conv give exactly L / u frames and a
            # transposed conv exactly L * u samples; an odd k - u would lose one.
            if kernel < rate or (kernel - rate) % 2:
                raise ValueError(
                    f"expected each kernel size to exceed its rate by an even number, got "
                    f"kernel {kernel} for rate {rate}"
                )
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError(
                f"expected dilations per residual kernel size, got kernels "
                f"{self.resblock_kernel_sizes} and dilations {self.resblock_dilation_sizes}"
            )
        if self.sample_rate % self.hop_length:
            raise ValueError(
                f"expected a whole frame rate, got {self.sample_rate} Hz over a hop of "
                f"{self.hop_length} samples"
            )
        if LATENT_DIMENSION % self.n_code_groups:
            raise ValueError(
                f"the latent's {LATENT_DIMENSION} channels cannot be split into "
                f"{self.n_code_groups} equal groups"
            )

    @property
    def channels(self) -> int:
        return 1

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_rates)

    @property
    def frame_rate(self) -> int:
        return self.sample_rate // self.hop_length

    @property
    def n_q(self) -> int:
        """Codebooks a frame, over all groups and levels."""
        return self.n_code_groups * RESIDUAL_LEVELS

    @property
    def bandwidths(self) -> tuple[float, ...]:
        """The one bitrate the release codes at, kbps."""
        return (self.n_q * math.log2(self.bins) * self.frame_rate / 1000,)

    @property
    def normalize(self) -> bool:
        """No per-signal scale: the official encoder takes the waveform as it is."""
        return False

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> OfficialHiFiCodecConfig:
        return cls(
            **{
                **data,
                "upsample_rates": tuple(data["upsample_rates"]),
                "upsample_kernel_sizes": tuple(data["upsample_kernel_sizes"]),
                "resblock_kernel_sizes": tuple(data["resblock_kernel_sizes"]),
                "resblock_dilation_sizes": tuple(map(tuple, data["resblock_dilation_sizes"])),
            }
        )


def _release(name: str, sample_rate: int, rates: tuple, kernels: tuple) -> OfficialHiFiCodecConfig:
    return OfficialHiFiCodecConfig(
        name=name, sample_rate=sample_rate, upsample_rates=rates, upsample_kernel_sizes=kernels
    )


# The three released architectures (egs/HiFi-Codec-*/config_*.json); the 16k-320d-large-universal
# file is the 16k-320d architecture trained on more data. Not among the configurations `bench
# train hificodec` trains (codecs/hificodec/model.py's CONFIGS): these are for loading releases.
OFFICIAL_CONFIGS = {
    # 16 kHz, hop 320: 50 Hz, 2 kbps.
    "official-16k-320d": _release("official-16k-320d", 16000, (8, 5, 4, 2), (16, 11, 8, 4)),
    # 24 kHz, hop 320: 75 Hz, 3 kbps.
    "official-24k-320d": _release("official-24k-320d", 24000, (8, 5, 4, 2), (16, 11, 8, 4)),
    # 24 kHz, hop 240: 100 Hz, 4 kbps.
    "official-24k-240d": _release("official-24k-240d", 24000, (8, 5, 3, 2), (16, 11, 7, 4)),
}


def _conv(
    channels_in: int, channels_out: int, kernel: int, stride: int = 1, dilation: int = 1
) -> nn.Module:
    """A weight-normed conv padded to keep ``L / stride`` frames (for a stride, k - s even)."""
    padding = (kernel - stride) // 2 if stride > 1 else dilation * (kernel - 1) // 2
    conv = nn.Conv1d(channels_in, channels_out, kernel, stride, padding, dilation)
    return weight_norm(conv)


class MRFResBlock(nn.Module):
    """HiFi-GAN's residual block ("ResBlock1"), one branch of its multi-receptive-field fusion:
    for each dilation, leaky ReLU, dilated conv, leaky ReLU, conv, added to the input.
    ``(batch, channels, time)`` in and out."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            _conv(channels, channels, kernel, dilation=d) for d in dilations
        )
        self.convs2 = nn.ModuleList(_conv(channels, channels, kernel) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for dilated, plain in zip(self.convs1, self.convs2, strict=True):
            inner = F.leaky_relu(dilated(F.leaky_relu(x, LEAKY_SLOPE)), LEAKY_SLOPE)
            x = plain(inner) + x
        return x


def _fuse(
    x: torch.Tensor, blocks: nn.ModuleList, norms: nn.ModuleList | None = None
) -> torch.Tensor:
    """Multi-receptive-field fusion: the blocks' outputs on ``x`` summed one at a time (in the
    encoder with a GroupNorm after each addition) and divided by their number."""
    total = None
    for index, block in enumerate(blocks):
        branch = block(x)
        total = branch if total is None else total + branch
        if norms is not None:
            total = norms[index](total)
    return total / len(blocks)


class OfficialEncoder(nn.Module):
    """Waveform ``(batch, 1, samples)`` to latent ``(batch, 512, samples / hop)``."""

    def __init__(self, config: OfficialHiFiCodecConfig) -> None:
        super().__init__()
        self.conv_pre = _conv(1, ENCODER_CHANNELS, 7)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        self.normalize = nn.ModuleList()
        stages = zip(
            reversed(config.upsample_rates), reversed(config.upsample_kernel_sizes), strict=True
        )
        branches = list(
            zip(
                reversed(config.resblock_kernel_sizes),
                reversed(config.resblock_dilation_sizes),
                strict=True,
            )
        )
        channels = ENCODER_CHANNELS
        for rate, kernel in stages:
            self.ups.append(_conv(channels, 2 * channels, kernel, stride=rate))
            channels *= 2
            for branch_kernel, dilations in branches:
                self.resblocks.append(MRFResBlock(channels, branch_kernel, dilations))
                self.normalize.append(
                    nn.GroupNorm(channels // GROUP_NORM_CHANNELS, channels, GROUP_NORM_EPSILON)
                )
        self.num_branches = len(branches)
        # The official code writes 512 for both sides; with its 4 stages of doubling from 32
        # they are the same number.
        self.conv_post = nn.Conv1d(channels, LATENT_DIMENSION, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        for stage, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LEAKY_SLOPE))
            branches = slice(stage * self.num_branches, (stage + 1) * self.num_branches)
            x = _fuse(x, self.resblocks[branches], self.normalize[branches])
        return self.conv_post(F.leaky_relu(x, ENCODER_OUTPUT_SLOPE))


class OfficialGenerator(nn.Module):
    """HiFi-GAN V1: latent ``(batch, 512, frames)`` to waveform ``(batch, 1, frames * hop)``."""

    def __init__(self, config: OfficialHiFiCodecConfig) -> None:
        super().__init__()
        channels = config.upsample_initial_channel
        self.conv_pre = _conv(LATENT_DIMENSION, channels, 7)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for rate, kernel in zip(config.upsample_rates, config.upsample_kernel_sizes, strict=True):
            upsample = nn.ConvTranspose1d(
                channels, channels // 2, kernel, rate, (kernel - rate) // 2
            )
            self.ups.append(weight_norm(upsample))
            channels //= 2
            for branch_kernel, dilations in zip(
                config.resblock_kernel_sizes, config.resblock_dilation_sizes, strict=True
            ):
                self.resblocks.append(MRFResBlock(channels, branch_kernel, dilations))
        self.num_branches = len(config.resblock_kernel_sizes)
        self.conv_post = _conv(channels, 1, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        for stage, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LEAKY_SLOPE))
            branches = slice(stage * self.num_branches, (stage + 1) * self.num_branches)
            x = _fuse(x, self.resblocks[branches])
        return torch.tanh(self.conv_post(F.leaky_relu(x, LEAKY_SLOPE)))


class Codebook(nn.Module):
    """``bins`` codewords of ``dimension`` (the official ``Quantizer_module``)."""

    def __init__(self, bins: int, dimension: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(bins, dimension)

    def nearest(self, vectors: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codeword to each of ``vectors`` ``(N, dimension)``, ``(N,)``."""
        codewords = self.embedding.weight
        # Summed in the official order, so that near ties break as there.
        distances = (
            vectors.pow(2).sum(1, keepdim=True)
            + codewords.pow(2).sum(1)
            - 2 * torch.matmul(vectors, codewords.T)
        )
        return distances.argmin(1)


class OfficialQuantizer(nn.Module):
    """Group-residual VQ: ``n_code_groups`` groups of channels, each over 2 residual levels.

    ``quantizer_modules`` hold level 0's codebooks, one per group, ``quantizer_modules2``
    level 1's (the official names). Codes ``(batch, 4, frames)`` are level-major.
    """

    def __init__(self, config: OfficialHiFiCodecConfig) -> None:
        super().__init__()
        width = LATENT_DIMENSION // config.n_code_groups
        groups = range(config.n_code_groups)
        self.quantizer_modules = nn.ModuleList(Codebook(config.bins, width) for _ in groups)
        self.quantizer_modules2 = nn.ModuleList(Codebook(config.bins, width) for _ in groups)
        self.width = width

    @property
    def levels(self) -> tuple[nn.ModuleList, ...]:
        return (self.quantizer_modules, self.quantizer_modules2)

    def encode(self, latent: torch.Tensor) -> torch.Tensor:
        """Codes ``(batch, n_q, frames)`` of a latent ``(batch, 512, frames)``."""
        batch, _, frames = latent.shape
        residual = latent.transpose(1, 2)  # (batch, frames, 512)
        codes = []
        for codebooks in self.levels:
            parts = residual.reshape(-1, LATENT_DIMENSION).split(self.width, dim=-1)
            indices = [book.nearest(part) for book, part in zip(codebooks, parts, strict=True)]
            chosen = torch.cat(
                [book.embedding(index) for book, index in zip(codebooks, indices, strict=True)],
                dim=-1,
            ).reshape(residual.shape)
            # The official residual subtracts the straight-through value x + (q - x), which
            # differs from q by float rounding; formed the same way, the next level's codes
            # are the official ones even at near ties.
            residual = residual - (residual + (chosen - residual))
            codes.extend(index.reshape(batch, frames) for index in indices)
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latent ``(batch, 512, frames)``: the sum over levels of each group's codewords."""
        rows = iter(codes.unbind(1))
        latent = None
        for codebooks in self.levels:
            level = torch.cat([book.embedding(next(rows)) for book in codebooks], dim=-1)
            latent = level if latent is None else latent + level
        return latent.transpose(1, 2)


class OfficialHiFiCodecModel(nn.Module):
    """Encoder, quantizer and generator of one released configuration, with the interface
    :class:`~bench.codecs.encodec.codec.EncodecCodec` uses: one segment per signal, no scale."""

    display_name = "HiFi-Codec"
    # The whole signal in one segment.
    segment_length = None
    segment_stride = None

    def __init__(self, config: OfficialHiFiCodecConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = OfficialEncoder(config)
        self.quantizer = OfficialQuantizer(config)
        self.generator = OfficialGenerator(config)

    def n_q_for(self, bandwidth: float) -> int:
        """Codebooks at ``bandwidth`` kbps: all 4 at the released bitrate, the only one."""
        (released,) = self.config.bandwidths
        if bandwidth != released:
            raise ValueError(
                f"{self.display_name} {self.config.name} codes at {released:g} kbps only, "
                f"got {bandwidth:g}"
            )
        return self.config.n_q

    @torch.no_grad()
    def encode(self, audio: torch.Tensor, bandwidth: float) -> list[Segment]:
        """Codes of ``(batch, 1, samples)`` audio: one :class:`Segment`, codes
        ``(batch, 4, ceil(samples / hop))`` in the official order, no scale."""
        if audio.dim() != 3 or audio.shape[1] != 1:
            raise ValueError(f"expected audio shaped (batch, 1, samples), got {tuple(audio.shape)}")
        self.n_q_for(bandwidth)
        # The strided convs give L / hop frames only when L is a multiple of the hop (else
        # they drop the end): pad with zeros to the next multiple; decode trims the output.
        padded = F.pad(audio, (0, -audio.shape[-1] % self.config.hop_length))
        return [Segment(self.quantizer.encode(self.encoder(padded)), None)]

    @torch.no_grad()
    def decode(self, segments: list[Segment], length: int) -> torch.Tensor:
        """Audio ``(batch, 1, length)`` from the one segment of :meth:`encode`."""
        if len(segments) != 1 or segments[0].codes.shape[1] != self.config.n_q:
            raise ValueError(
                f"expected one segment of codes (batch, {self.config.n_q}, frames), got "
                f"{[tuple(segment.codes.shape) for segment in segments]}"
            )
        latent = self.quantizer.decode(segments[0].codes)
        return self.generator(latent)[..., :length]
