"""Training: one loop (``loop``) that runs a solver per model family (``solvers``) with its
settings (``settings``), over segments of a dataset (``data``); the GAN losses and the loss
balancer; the loss plot (``plots``)."""
