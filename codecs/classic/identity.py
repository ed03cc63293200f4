"""The identity codec: the hidden reference of a MUSHRA test (ITU-R BS.1534-3).

Lossless by construction: the payload is the signal itself as 32-bit float PCM
(little-endian, channels interleaved as in WAV), and decoding returns it bit for bit.
Its bitrate is the PCM rate, ``32 * sample_rate * channels`` bits per second.
"""

from __future__ import annotations

import numpy as np
import torch
from bench.codecs.base import Codec, Encoded

PCM_DTYPE = np.dtype("<f4")


def pcm_to_bytes(audio: torch.Tensor) -> bytes:
    """Serialise ``(channels, samples)`` float32 audio as interleaved little-endian float32."""
    return np.ascontiguousarray(audio.detach().cpu().numpy().T, dtype=PCM_DTYPE).tobytes()


def bytes_to_pcm(payload: bytes, channels: int, num_samples: int) -> torch.Tensor:
    """Inverse of :func:`pcm_to_bytes`: ``(channels, num_samples)`` float32 audio."""
    expected = PCM_DTYPE.itemsize * channels * num_samples
    if len(payload) != expected:
        raise ValueError(
            f"expected {expected} bytes of float32 PCM for {channels} channel(s) x "
            f"{num_samples} samples, got {len(payload)}"
        )
    interleaved = np.frombuffer(payload, dtype=PCM_DTYPE).reshape(num_samples, channels)
    return torch.from_numpy(interleaved.T.astype(np.float32, order="C"))


class IdentityCodec(Codec):
    """Passes audio through unchanged; one bitrate, the float32 PCM rate in kbps.

    ``sample_rate`` in Hz: a MUSHRA reference is kept at the rate of the test material,
    so it is a constructor argument rather than fixed.
    """

    name = "identity"

    def __init__(self, sample_rate: int = 48000, channels: int = 1) -> None:
        if sample_rate <= 0 or channels <= 0:
            raise ValueError(
                f"expected a positive sample_rate and channel count, got "
                f"sample_rate={sample_rate}, channels={channels}"
            )
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.bitrates = (PCM_DTYPE.itemsize * 8 * self.sample_rate * self.channels / 1000,)
        # PCM has no frames; one "frame" per sample keeps frame_rate meaningful.
        self.frame_rate = float(self.sample_rate)

    def _encode(self, audio: torch.Tensor, bitrate: float) -> Encoded:
        return Encoded(
            payload=pcm_to_bytes(audio),
            num_samples=audio.shape[1],
            sample_rate=self.sample_rate,
            nominal_kbps=bitrate,
        )

    def _decode(self, encoded: Encoded, nfe: int | None, seed: int | None) -> torch.Tensor:
        return bytes_to_pcm(encoded.payload, self.channels, encoded.num_samples)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "standard": "ITU-R BS.1534-3 (hidden reference)",
            "payload": "float32 little-endian PCM, channels interleaved",
        }

    def backend_versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}
