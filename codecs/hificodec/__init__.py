"""HiFi-Codec (Yang et al. 2023): the paper's SEANet model with group-residual VQ."""

from bench.codecs.training import TrainingRecipe
from bench.codecs.weights import PublishedWeights

# `bench train hificodec`: the codec GAN solver EnCodec trains with, against MS-STFT, MPD and
# MSD together as the paper does.
TRAINING = TrainingRecipe(
    description="HiFi-Codec: group-residual VQ, against MS-STFT, MPD and MSD (Yang et al. 2023)",
    settings="bench.train.settings:CodecTrainSettings",
    defaults={"codec": "hificodec", "discriminators": ("msstft", "mpd", "msd")},
)

# The official AcademiCodec releases (`bench weights list`, `--checkpoint official:NAME`), the
# files its egs/HiFi-Codec-*/readme.md fetch. The publisher states no hash, so none is pinned:
# a download is checked against the SHA-256 HuggingFace states for the stored file.
_RELEASES = "https://huggingface.co/Dongchao/AcademiCodec/resolve/main/"
_LICENCE = "not stated by the publisher (AcademiCodec has no licence file at b6ac134)"


def _release(name: str, file: str, config: str, description: str) -> PublishedWeights:
    return PublishedWeights(
        name=name,
        codec="hificodec",
        config=config,
        url=f"{_RELEASES}{file}",
        description=f"{description} (AcademiCodec's HiFi-GAN decoder; Yang et al. 2023)",
        licence=_LICENCE,
    )


PUBLISHED_WEIGHTS = (
    _release(
        "hificodec-16k-320d",
        "HiFi-Codec-16k-320d",
        "official-16k-320d",
        "HiFi-Codec 16 kHz, hop 320, 4 codebooks, 2 kbps",
    ),
    _release(
        "hificodec-16k-320d-large-universal",
        "HiFi-Codec-16k-320d-large-universal",
        "official-16k-320d",
        "HiFi-Codec 16 kHz, hop 320, 2 kbps, trained on more data",
    ),
    _release(
        "hificodec-24k-320d",
        "HiFi-Codec-24k-320d",
        "official-24k-320d",
        "HiFi-Codec 24 kHz, hop 320, 4 codebooks, 3 kbps",
    ),
    _release(
        "hificodec-24k-240d",
        "HiFi-Codec-24k-240d",
        "official-24k-240d",
        "HiFi-Codec 24 kHz, hop 240, 4 codebooks, 4 kbps",
    ),
)
