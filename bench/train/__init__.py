"""Training of reference codecs: reconstruction and GAN losses, and the loss balancer."""
