"""Classic (non-neural) codecs: the baselines and the MUSHRA anchors."""
