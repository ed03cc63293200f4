"""Peak memory of the PyAV codecs' own encode and decode on one long mono item.

``bench run`` on a long item holds the item, its decoded copy and whatever the metrics need;
this isolates what the codec adds on top. Each phase runs in a fresh interpreter (a high-water
mark cannot be reset), which builds a float32 signal of ``--seconds`` at the codec's rate,
notes its resident size, runs ``codec.encode`` (or ``codec.decode`` of the payload the encode
phase left), and reports how far the peak (``ru_maxrss``) rose above that starting point. The
decoded signal itself (4 bytes a sample) is part of the decode figure.

Run: ``python benchmarks/pyav_codec_memory.py [--codec opus] [--bitrate 12] [--seconds 600]``.
"""

from __future__ import annotations

import argparse
import pickle
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.registry import create_codec


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _peak_bytes() -> int:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_phase(phase: str, codec_name: str, bitrate: float, seconds: float, payload: Path) -> None:
    codec = create_codec(codec_name)
    generator = torch.Generator().manual_seed(0)
    samples = int(seconds * codec.sample_rate)
    # Noise at -20 dBFS, scaled in place so that no second copy raises the starting peak.
    signal = torch.randn(1, samples, generator=generator).mul_(0.1)
    if phase == "decode":
        encoded = pickle.loads(payload.read_bytes())
        del signal
    start = _resident_bytes()
    if phase == "encode":
        encoded = codec.encode(signal, bitrate)
        payload.write_bytes(pickle.dumps(encoded))
    else:
        decoded = codec.decode(encoded)
        assert decoded.shape == (1, encoded.num_samples)
    print(f"{phase}: peak {(_peak_bytes() - start) / 1e6:.0f} MB above the start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", default="opus")
    parser.add_argument("--bitrate", type=float, default=12.0)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--phase", choices=("encode", "decode"), help=argparse.SUPPRESS)
    parser.add_argument("--payload", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.phase:
        run_phase(
            arguments.phase,
            arguments.codec,
            arguments.bitrate,
            arguments.seconds,
            arguments.payload,
        )
        return
    print(f"{arguments.codec} {arguments.bitrate:g} kbps, {arguments.seconds:g} s mono")
    signal_bytes = arguments.seconds * create_codec(arguments.codec).sample_rate * 4
    print(f"signal: {signal_bytes / 1e6:.0f} MB")
    with tempfile.TemporaryDirectory(prefix="pyav-memory-") as scratch:
        payload = Path(scratch) / "payload.pickle"
        for phase in ("encode", "decode"):
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--codec",
                    arguments.codec,
                    "--bitrate",
                    str(arguments.bitrate),
                    "--seconds",
                    str(arguments.seconds),
                    "--phase",
                    phase,
                    "--payload",
                    str(payload),
                ],
                check=True,
            )


if __name__ == "__main__":
    main()
