"""Ablation studies (``bench ablate``): train a study's variants under one budget, evaluate
them on held-out data in one sweep, and tabulate them beside the papers' figures."""
