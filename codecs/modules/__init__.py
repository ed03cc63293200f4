"""Building blocks shared by the codecs (and the harness's spectral metrics)."""
