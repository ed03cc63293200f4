"""EnCodec (Défossez et al., 2022): the reference implementation of the benchmark."""
