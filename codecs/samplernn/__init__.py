"""SampleRNN (Mehri et al., ICLR 2017): the hierarchical sample-level model
(:mod:`bench.codecs.samplernn.model`) and its training recipe."""

from bench.codecs.training import TrainingRecipe

# `bench train samplernn`: truncated BPTT on the NLL in bits per sample.
TRAINING = TrainingRecipe(
    description="SampleRNN (Mehri et al. 2017) by TBPTT: unconditional, or a codec decoder",
    settings="bench.train.settings:SampleRnnTrainSettings",
    defaults={
        "model": "bench.codecs.samplernn.model",
        "conditioning": "bench.codecs.samplernn.conditioning",
    },
)
