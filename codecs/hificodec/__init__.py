"""HiFi-Codec (Yang et al. 2023): the paper's SEANet model with group-residual VQ."""
