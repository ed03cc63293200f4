"""SampleRNN (Mehri et al., ICLR 2017): the hierarchical sample-level model
(:mod:`bench.codecs.samplernn.model`)."""
