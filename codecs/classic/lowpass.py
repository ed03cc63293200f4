"""The low-pass anchors of a MUSHRA test (ITU-R BS.1534-3): 3.5 kHz and 7 kHz.

BS.1534-3 asks for a low-pass filtered copy of the reference with a 3.5 kHz cut-off
(the low anchor) and one at 7 kHz (the mid anchor). They are built here as Butterworth
low-passes run forwards and backwards (``scipy.signal.sosfiltfilt``): zero phase, so the
anchor is sample-aligned with the reference, a maximally flat pass band, -3 dB at the
cut-off and at least 50 dB of attenuation 500 Hz above it. The payload is the filtered
signal as float32 PCM, exactly as for the hidden reference (:mod:`.identity`).
"""

from __future__ import annotations

import numpy as np
import scipy
import torch
from bench.codecs.base import Encoded
from bench.codecs.classic.identity import IdentityCodec
from scipy import signal

TRANSITION_HZ = 500.0
"""Width of the transition band: full stop-band attenuation at cut-off + 500 Hz."""

# Forward-backward filtering squares the magnitude response, doubling every loss in dB,
# so each pass is designed for half: 1.5 dB at the cut-off gives -3 dB in all, and
# 25 dB at the stop-band edge gives 50 dB.
PASS_LOSS_DB = 1.5
STOP_LOSS_DB = 25.0


class LowpassAnchorCodec(IdentityCodec):
    """A zero-phase low-pass of the input, sent as float32 PCM; ``cutoff_hz`` is the -3 dB point.

    Output samples may exceed [-1, 1] slightly where the steep filter rings near full
    scale; they are not clipped, since clipping would add distortion the anchor does not
    stand for.
    """

    name = "lowpass"

    def __init__(self, cutoff_hz: float, sample_rate: int = 48000, channels: int = 1) -> None:
        super().__init__(sample_rate, channels)
        stop_hz = cutoff_hz + TRANSITION_HZ
        if not 0 < cutoff_hz or stop_hz >= self.sample_rate / 2:
            raise ValueError(
                f"cut-off {cutoff_hz:g} Hz needs 0 < cut-off and cut-off + "
                f"{TRANSITION_HZ:g} Hz below Nyquist ({self.sample_rate / 2:g} Hz)"
            )
        self.cutoff_hz = float(cutoff_hz)
        # buttord picks the lowest order meeting both edges and places the response
        # exactly on the pass-band edge: 24 at 3.5 kHz and 42 at 7 kHz for 48 kHz.
        self.order, natural_hz = signal.buttord(
            self.cutoff_hz, stop_hz, PASS_LOSS_DB, STOP_LOSS_DB, fs=self.sample_rate
        )
        # Second-order sections: a direct-form polynomial of this order is numerically
        # useless.
        self._sos = signal.butter(self.order, natural_hz, fs=self.sample_rate, output="sos")
        self._padlen = 3 * (2 * len(self._sos) + 1)

    def _encode(self, audio: torch.Tensor, bitrate: float) -> Encoded:
        samples = audio.detach().cpu().numpy().astype(np.float64)
        # sosfiltfilt extends the edges by odd reflection; a signal shorter than that
        # extension gets the longest one it allows.
        padlen = min(self._padlen, samples.shape[-1] - 1)
        filtered = signal.sosfiltfilt(self._sos, samples, axis=-1, padlen=padlen)
        return super()._encode(torch.from_numpy(filtered.astype(np.float32)), bitrate)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "standard": "ITU-R BS.1534-3 (low-pass anchor)",
            "cutoff_hz": self.cutoff_hz,
            "filter": (
                f"Butterworth order {self.order}, forward-backward (zero phase): "
                f"-3 dB at {self.cutoff_hz:g} Hz, <= -{2 * STOP_LOSS_DB:g} dB from "
                f"{self.cutoff_hz + TRANSITION_HZ:g} Hz"
            ),
        }

    def backend_versions(self) -> dict[str, str]:
        return {**super().backend_versions(), "scipy": scipy.__version__}


class Lowpass3k5Codec(LowpassAnchorCodec):
    """The low anchor of BS.1534-3: low-pass at 3.5 kHz."""

    name = "lowpass3k5"

    def __init__(self, sample_rate: int = 48000, channels: int = 1) -> None:
        super().__init__(3500.0, sample_rate, channels)


class Lowpass7kCodec(LowpassAnchorCodec):
    """The mid anchor of BS.1534-3: low-pass at 7 kHz."""

    name = "lowpass7k"

    def __init__(self, sample_rate: int = 48000, channels: int = 1) -> None:
        super().__init__(7000.0, sample_rate, channels)
