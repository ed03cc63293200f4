"""HiFi-Codec (Yang et al. 2023): the paper's SEANet model with group-residual VQ."""

from bench.codecs.training import TrainingRecipe

# `bench train hificodec`: the codec GAN solver EnCodec trains with, against MS-STFT, MPD and
# MSD together as the paper does.
TRAINING = TrainingRecipe(
    description="HiFi-Codec: group-residual VQ, against MS-STFT, MPD and MSD (Yang et al. 2023)",
    settings="bench.train.settings:CodecTrainSettings",
    defaults={"codec": "hificodec", "discriminators": ("msstft", "mpd", "msd")},
)
