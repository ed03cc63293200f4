"""SoundStorm (Borsos et al., 2023): masked parallel generation of residual-VQ tokens, used as
a codec that sends EnCodec's coarse levels and generates the fine ones."""
