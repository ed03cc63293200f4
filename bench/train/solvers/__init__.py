"""The solvers, one per model family: the codec GAN solver (EnCodec, HiFi-Codec) and the
entropy-coding LM's. Each owns its batches, losses and optimisers; bench.train.loop runs them."""
