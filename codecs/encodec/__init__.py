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


def _release(name: str, file: str, description: str, **fields) -> PublishedWeights:
    """An official release file ``encodec_..._<sha256 prefix>.th`` of configuration 24khz or
    48khz, as its name says."""
    return PublishedWeights(
        name=name,
        codec="encodec",
        config="48khz" if "48khz" in file else "24khz",
        url=f"{_RELEASES}{file}",
        description=description,
        licence="CC BY-NC 4.0 (Meta Platforms), as the official encodec package states",
        sha256_prefix=file.removesuffix(".th").rsplit("-", 1)[1],
        **fields,
    )


PUBLISHED_WEIGHTS = (
    _release(
        "encodec-24khz",
        "encodec_24khz-d7cc33bc.th",
        "EnCodec 24 kHz mono, causal, 1.5-24 kbps (Défossez et al. 2022)",
        lm="encodec-lm-24khz",
    ),
    _release(
        "encodec-48khz",
        "encodec_48khz-7e698e3e.th",
        "EnCodec 48 kHz stereo, non-causal, 3-24 kbps (Défossez et al. 2022)",
        lm="encodec-lm-48khz",
    ),
    _release(
        "encodec-lm-24khz",
        "encodec_lm_24khz-1608e3c0.th",
        "the entropy-coding LM of encodec-24khz (paper Sec. 3.3)",
        role="lm",
    ),
    _release(
        "encodec-lm-48khz",
        "encodec_lm_48khz-7add9fc3.th",
        "the entropy-coding LM of encodec-48khz (paper Sec. 3.3)",
        role="lm",
    ),
)
