"""EnCodec (Défossez et al., 2022): the reference implementation of the benchmark."""

from bench.codecs.training import TrainingRecipe
from bench.codecs.weights import PublishedWeights

# `bench train encodec`: the harness's codec GAN solver (the paper's Sec. 3.4) on this package's
# configurations and model (`EncodecCodec.configs`, `.model_class`), against the MS-STFT
# discriminator.
TRAINING = TrainingRecipe(
    description="EnCodec: adversarial training with the loss balancer (Défossez et al. 2022)",
    settings="bench.train.settings:CodecTrainSettings",
    defaults={"codec": "encodec", "discriminators": ("msstft",)},
)

# The paper's released weights (`bench weights list`, `--checkpoint official:NAME`): the files
# the official `encodec` package downloads, whose names carry their SHA-256 prefix.
_RELEASES = "https://dl.fbaipublicfiles.com/encodec/v0/"
_LICENCE = "CC BY-NC 4.0 (Meta Platforms), as the official encodec package states"
PUBLISHED_WEIGHTS = (
    PublishedWeights(
        name="encodec-24khz",
        codec="encodec",
        config="24khz",
        url=f"{_RELEASES}encodec_24khz-d7cc33bc.th",
        description="EnCodec 24 kHz mono, causal, 1.5-24 kbps (Défossez et al. 2022)",
        licence=_LICENCE,
        sha256_prefix="d7cc33bc",
        lm="encodec-lm-24khz",
    ),
    PublishedWeights(
        name="encodec-48khz",
        codec="encodec",
        config="48khz",
        url=f"{_RELEASES}encodec_48khz-7e698e3e.th",
        description="EnCodec 48 kHz stereo, non-causal, 3-24 kbps (Défossez et al. 2022)",
        licence=_LICENCE,
        sha256_prefix="7e698e3e",
        lm="encodec-lm-48khz",
    ),
    PublishedWeights(
        name="encodec-lm-24khz",
        codec="encodec",
        config="24khz",
        url=f"{_RELEASES}encodec_lm_24khz-1608e3c0.th",
        description="the entropy-coding LM of encodec-24khz (paper Sec. 3.3)",
        licence=_LICENCE,
        sha256_prefix="1608e3c0",
        role="lm",
    ),
    PublishedWeights(
        name="encodec-lm-48khz",
        codec="encodec",
        config="48khz",
        url=f"{_RELEASES}encodec_lm_48khz-7add9fc3.th",
        description="the entropy-coding LM of encodec-48khz (paper Sec. 3.3)",
        licence=_LICENCE,
        sha256_prefix="7add9fc3",
        role="lm",
    ),
)
