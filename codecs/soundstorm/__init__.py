"""SoundStorm (Borsos et al., 2023): masked parallel generation of residual-VQ tokens, used as
a codec that sends EnCodec's coarse levels and generates the fine ones."""

from bench.codecs.training import TrainingRecipe

# `bench train soundstorm --codec-checkpoint ENCODEC.pt`: the model over that EnCodec's tokens.
TRAINING = TrainingRecipe(
    description="SoundStorm: masked token model over an EnCodec's levels (Borsos et al. 2023)",
    settings="bench.train.settings:SoundStormTrainSettings",
)
