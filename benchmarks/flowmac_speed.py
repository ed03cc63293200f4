"""FlowMAC decoding speed: real-time factors, where the time goes, and its cost per NFE.

    python benchmarks/flowmac_speed.py [--rounds 5] [--seconds 10]

On the shipped demo checkpoint and ``--seconds`` of held-out speech (the embedded corpus's
LibriVox utterance, repeated), with 1 and 2 threads:

- RTF (seconds of compute per second of audio) of encode, and of decode at NFE 1, 8 and 32
  with Euler and guidance scale 1, each the median of ``--rounds`` runs;
- the decode's split between the U-Net (the velocity network's calls, timed by a wrapper),
  the rest of the solver (the Euler updates and guidance arithmetic), the mel decoder and
  the vocoder;
- decode time against NFE 1..32: a least-squares line, its slope (per NFE) and fixed part;
- the vocoder alone with and without BigVGAN's anti-aliasing (the same widths, random
  weights), the reason the demo ships the lighter generator;
- the EnCodec demo's decode at 3 kbps in the same rounds, as a reference measured alike.

Writes ``reports/flowmac_speed.json`` with the device and versions. The goal (issue 15):
decode faster than real time on 2 threads at NFE 8, vocoder included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.flowmac.codec import FlowMacCodec, vocode
from bench.codecs.flowmac.model import VOCODER_CONFIGS
from bench.codecs.modules.bigvgan import BigVGANGenerator
from timing import median_seconds, provenance, speech

REPORT = Path(__file__).resolve().parents[1] / "reports" / "flowmac_speed.json"
NFES = (1, 2, 4, 8, 16, 32)
REPORTED_NFES = (1, 8, 32)


class Timed(torch.nn.Module):
    """Wraps a module and adds up the seconds its calls take."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module, self.seconds = module, 0.0
        # The vocoder's callers read its hop.
        self.hop_length = getattr(module, "hop_length", None)

    def forward(self, *arguments, **keywords):
        start = time.perf_counter()
        output = self.module(*arguments, **keywords)
        self.seconds += time.perf_counter() - start
        return output


def decode_split(codec: FlowMacCodec, encoded, nfe: int, rounds: int) -> dict:
    """Median decode seconds and the median share of each part."""
    velocity, vocoder, decoder = (
        Timed(codec.model.velocity),
        Timed(codec.vocoder),
        Timed(codec.model.decoder),
    )
    originals = codec.model.velocity, codec.vocoder, codec.model.decoder
    codec.model.velocity, codec.vocoder, codec.model.decoder = velocity, vocoder, decoder
    rows = []
    try:
        for _ in range(rounds):
            for part in (velocity, vocoder, decoder):
                part.seconds = 0.0
            start = time.perf_counter()
            codec.decode(encoded, nfe=nfe, seed=0)
            total = time.perf_counter() - start
            rows.append(
                {
                    "total": total,
                    "unet": velocity.seconds,
                    "vocoder": vocoder.seconds,
                    "mel_decoder": decoder.seconds,
                    "solver_and_rest": total - velocity.seconds - vocoder.seconds - decoder.seconds,
                }
            )
    finally:
        codec.model.velocity, codec.vocoder, codec.model.decoder = originals
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


def vocoder_variants(seconds: float, rounds: int) -> dict:
    mel = torch.randn(1, 128, int(seconds * 46.875) + 1)
    result = {}
    for name in ("tiny", "tiny-light"):
        generator = BigVGANGenerator(VOCODER_CONFIGS[name]).eval()
        generator.remove_weight_norm()
        with torch.inference_mode():
            result[name] = median_seconds(lambda g=generator: vocode(g, mel), rounds) / seconds
    return result


def measure(threads: int, seconds: float, rounds: int) -> dict:
    torch.set_num_threads(threads)
    codec = FlowMacCodec()
    reference = EncodecCodec()
    audio = speech(seconds, codec.sample_rate)
    encoded = codec.encode(audio, 3.0)
    reference_encoded = reference.encode(audio, 3.0)
    codec.decode(encoded, nfe=1)  # warm-up
    split = {nfe: decode_split(codec, encoded, nfe, rounds) for nfe in NFES}
    totals = np.array([split[nfe]["total"] for nfe in NFES])
    slope, fixed = np.polyfit(np.array(NFES, dtype=float), totals, 1)
    encodec_decode = median_seconds(lambda: reference.decode(reference_encoded), rounds)
    return {
        "threads": threads,
        "rtf_encode": median_seconds(lambda: codec.encode(audio, 3.0), rounds) / seconds,
        "rtf_decode": {nfe: split[nfe]["total"] / seconds for nfe in REPORTED_NFES},
        "decode_split_seconds": split,
        "decode_seconds_per_nfe": slope,
        "decode_fixed_seconds": fixed,
        "encodec_demo_rtf_decode_3kbps": encodec_decode / seconds,
        "flowmac_nfe8_over_encodec_decode": split[8]["total"] / encodec_decode,
        "vocoder_rtf": vocoder_variants(seconds, rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    arguments = parser.parse_args()
    results = [measure(threads, arguments.seconds, arguments.rounds) for threads in (1, 2)]
    for result in results:
        print(f"\n{result['threads']} thread(s), {arguments.seconds:g} s of speech at 3 kbps")
        print(f"  RTF encode {result['rtf_encode']:.4f}")
        for nfe, rtf in result["rtf_decode"].items():
            print(f"  RTF decode at NFE {nfe}: {rtf:.3f} ({1 / rtf:.1f}x real time)")
        for nfe in REPORTED_NFES:
            split = result["decode_split_seconds"][nfe]
            shares = ", ".join(
                f"{part} {100 * split[part] / split['total']:.0f} %"
                for part in ("unet", "solver_and_rest", "mel_decoder", "vocoder")
            )
            print(f"  NFE {nfe} split: {shares}")
        print(
            f"  decode time = {result['decode_fixed_seconds']:.3f} s + NFE x "
            f"{result['decode_seconds_per_nfe'] * 1000:.1f} ms (for {arguments.seconds:g} s)"
        )
        print(
            f"  EnCodec demo decode RTF {result['encodec_demo_rtf_decode_3kbps']:.4f}; FlowMAC at "
            f"NFE 8 takes {result['flowmac_nfe8_over_encodec_decode']:.1f}x its time"
        )
        vocoders = result["vocoder_rtf"]
        print(
            f"  vocoder RTF: anti-aliased {vocoders['tiny']:.3f}, light "
            f"{vocoders['tiny-light']:.3f} ({vocoders['tiny'] / vocoders['tiny-light']:.1f}x)"
        )
    REPORT.write_text(
        json.dumps(
            {
                "seconds": arguments.seconds,
                "rounds": arguments.rounds,
                "results": results,
                **provenance(2),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {REPORT}")


if __name__ == "__main__":
    main()
