"""The HiFi-Codec model (Yang et al. 2023, "HiFi-Codec: Group-residual Vector Quantization for
High Fidelity Audio Codec", arXiv 2305.02765), as the paper describes it.

The paper's encoder is SEANet-style: a kernel-7 conv with C channels, B = 4 blocks of a
residual unit and a strided conv of kernel 2S with channels doubling, a 2-layer LSTM and a
kernel-7 conv to D channels; the decoder mirrors it with transposed convs. That is EnCodec's
SEANet, so this model is :class:`~bench.codecs.encodec.model.EncodecModel`'s code path with the
quantizer swapped for the group-residual one
(:class:`~bench.codecs.modules.grvq.GroupResidualVectorQuantizer`): the latent is split along
its channels into G groups, each with its own residual VQ. ``groups=1`` is the plain residual
quantizer, the switch of the quantizer ablation (equal codebook count, equal bitrate).

The official AcademiCodec code differs (a HiFi-GAN generator as decoder, least-squares GAN
losses, gradient-learned codebooks); the model card lists where. Its released weights load into
:mod:`bench.codecs.hificodec.official`, the released architecture, not into this model, which
stays what ``bench train hificodec`` trains and the demo checkpoint holds. The configuration is
not causal, as neither the official encoder nor its HiFi-GAN decoder is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bench.codecs.encodec.model import EncodecConfig, EncodecModel
from bench.codecs.modules.grvq import GroupResidualVectorQuantizer
from bench.codecs.modules.rvq import bandwidth_to_n_q
from torch import nn


@dataclass(frozen=True)
class HiFiCodecConfig(EncodecConfig):
    """An :class:`EncodecConfig` whose latent is quantized in ``groups`` channel groups."""

    groups: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise ValueError(f"groups must be a positive int, got {self.groups!r}")
        if self.dimension % self.groups:
            raise ValueError(
                f"the latent's {self.dimension} channels cannot be split into "
                f"{self.groups} equal groups"
            )
        for bandwidth in self.bandwidths:
            n_q = bandwidth_to_n_q(bandwidth, self.frame_rate, self.bins)
            if n_q % self.groups:
                raise ValueError(
                    f"{bandwidth:g} kbps is {n_q} codebooks, which {self.groups} groups "
                    "cannot share equally"
                )

    @property
    def quantizer(self) -> str:
        """``"grvq"`` or, with one group, ``"rvq"``."""
        return "grvq" if self.groups > 1 else "rvq"

    @property
    def quantizer_groups(self) -> int:
        return self.groups

    @property
    def quantizers(self) -> tuple[str, ...]:
        return ("grvq", "rvq") if self.groups > 1 else ("rvq",)

    def with_quantizer(self, quantizer: str) -> HiFiCodecConfig:
        """``"rvq"`` is the same model with one group, the same codebook count at every
        bitrate; named apart, so that a bitstream of one variant is refused by the other."""
        config = super().with_quantizer(quantizer)
        if quantizer == "rvq" and self.groups > 1:
            return replace(config, groups=1, name=f"{config.name}-rvq")
        return config


def _config(name: str, **sizes) -> HiFiCodecConfig:
    return HiFiCodecConfig(
        name=name, channels=1, causal=False, norm="weight_norm", groups=2, **sizes
    )


CONFIGS = {
    # 24 kHz, hop 320 (strides 2, 4, 5, 8: 75 Hz), 2 groups of 1024-word codebooks: 1, 2 or 4
    # residual levels per group give exactly 1.5, 3 and 6 kbps. The 512-d latent (2 x 256)
    # is the official code's; the paper does not state D.
    "24khz": _config("24khz", sample_rate=24000, bandwidths=(1.5, 3.0, 6.0), dimension=512),
    # The paper's 16 kHz model: hop 320 (50 Hz), 2 groups x 2 levels = 4 codebooks, 2 kbps.
    "16khz": _config("16khz", sample_rate=16000, bandwidths=(2.0,), dimension=512),
    # The 24 kHz code path at CPU size (EnCodec tiny's widths): 8 base filters, a 32-d latent
    # in two groups of 16, for tests and the demo checkpoint.
    "tiny": _config(
        "tiny",
        sample_rate=24000,
        bandwidths=(1.5, 3.0, 6.0),
        n_filters=8,
        dimension=32,
        dead_code_threshold=0.25,
    ),
}


class HiFiCodecModel(EncodecModel):
    """Encoder, group-residual quantizer and decoder of one :class:`HiFiCodecConfig`.

    ``n_q`` arguments (``forward``, ``n_q_for``) count codebooks over all groups, so bitrates
    compare directly with a residual quantizer's; codes are group-major.
    """

    display_name = "HiFi-Codec"
    config: HiFiCodecConfig

    def build_quantizer(self, config: HiFiCodecConfig) -> nn.Module:
        if config.groups == 1:
            return super().build_quantizer(config)
        return GroupResidualVectorQuantizer(
            dimension=config.dimension,
            groups=config.groups,
            n_q_per_group=config.n_q // config.groups,
            bins=config.bins,
            threshold_ema_dead_code=config.dead_code_threshold,
        )

    def quantizer_levels(self, n_q: int) -> int:
        groups = self.config.groups
        if n_q % groups:
            raise ValueError(
                f"{self.display_name} {self.config.name} splits codebooks over {groups} groups; "
                f"expected a multiple of {groups}, got n_q={n_q}"
            )
        return n_q // groups
