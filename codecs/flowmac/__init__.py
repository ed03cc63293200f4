"""FlowMAC (Pia et al., ICASSP 2025): mel RVQ, a conditional-flow-matching mel decoder and a
BigVGAN-style vocoder, trained as two recipes (the vocoder first, then the codec, whose
export bundles it)."""

from bench.codecs.training import TrainingRecipe

# `bench train flowmac`: encoder, RVQ, decoder and CFM U-Net, by L_CFM + 0.01 L_prior +
# 0.25 L_VQ.
TRAINING = TrainingRecipe(
    description="FlowMAC: mel RVQ codec with a flow-matching decoder (Pia et al. 2025); "
    "--vocoder bundles a trained flowmac-vocoder into the export",
    settings="bench.train.settings:FlowMacTrainSettings",
)

# `bench train flowmac-vocoder`: the BigVGAN-style mel vocoder, adversarially with MPD + MSD.
VOCODER_TRAINING = TrainingRecipe(
    description="FlowMAC's BigVGAN-style mel vocoder (Lee et al. 2023), against MPD and MSD",
    settings="bench.train.settings:VocoderTrainSettings",
)
