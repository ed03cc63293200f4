"""EnCodec (Défossez et al., 2022): the reference implementation of the benchmark."""

from bench.codecs.training import TrainingRecipe

# `bench train encodec`: the harness's codec GAN solver (the paper's Sec. 3.4) on this package's
# configurations and model (`EncodecCodec.configs`, `.model_class`), against the MS-STFT
# discriminator.
TRAINING = TrainingRecipe(
    description="EnCodec: adversarial training with the loss balancer (Défossez et al. 2022)",
    settings="bench.train.settings:CodecTrainSettings",
    defaults={"codec": "encodec", "discriminators": ("msstft",)},
)
