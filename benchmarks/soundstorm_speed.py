"""SoundStorm decoding speed: time against length and iterations, real-time factors, and what
an autoregressive decoder of the same levels would spend.

    python benchmarks/soundstorm_speed.py [--rounds 5] [--seconds 10] [--checkpoint PATH]

On a SoundStorm checkpoint (default the shipped demo) and held-out speech (the embedded
corpus's LibriVox utterance, repeated), each time the median of ``--rounds`` runs:

- decode time at 1.5 kbps and the paper's 16 iterations against audio length 5, 10, 20 and
  40 s, with the least-squares fit ``time = a + b len + c len^2``: the slope ``b`` and the
  length at which the quadratic term (the Conformer's attention) is 10 % of the total;
- network passes (counted on the model) and decode time against the first generated level's
  iterations 1, 2, 4, 8 and 16 at 1.5 kbps, with a line fitted to time against passes;
- RTF of encode and of decode at 1.5 and 3 kbps on each of ``--threads`` (default 1 and 2);
- the autoregressive estimate: the passes one pass per frame (and one per frame and level,
  for a flat token order) would take, priced at the measured time of one forward pass of the
  model over a short context (``--context-seconds``), beside the measured parallel decode;
- the EnCodec demo's decode at 3 kbps in the same rounds, as a reference measured alike.

The length and iteration sweeps and the autoregressive estimate run on the first of
``--threads``. Writes ``reports/soundstorm_speed.json`` (``--out``) with the device and
versions.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from bench.codecs.checkpoint import load_checkpoint
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.soundstorm.codec import PAPER_ITERATIONS, SoundStormCodec
from timing import median_seconds, provenance, speech

REPORT = Path(__file__).resolve().parents[1] / "reports" / "soundstorm_speed.json"
LENGTHS = (5.0, 10.0, 20.0, 40.0)
ITERATIONS = (1, 2, 4, 8, 16)
SWEEP_BITRATE = 1.5
RTF_BITRATES = (1.5, 3.0)
REFERENCE_BITRATE = 3.0
# The share of the total decode time at which the quadratic term is said to show.
QUADRATIC_SHARE = 0.1
AUTOREGRESSIVE_NOTE = (
    "Not run: estimated. One forward pass of this SoundStorm model over {context:g} s "
    "({frames} frames) of tokens was timed (median of {repeats}) and multiplied by the passes "
    "an autoregressive decoder of the levels generated at {bitrate:g} kbps would take for "
    "{seconds:g} s of audio: one per frame ({per_frame}) when a pass predicts all levels of a "
    "frame, one per frame and level ({flat}) for a flat token order as AudioLM's acoustic stage "
    "uses. The pass over a short window stands for one step of an autoregressive model of the "
    "same size with a short context: a step with a key-value cache processes one position and "
    "may cost less, one recomputing a longer prefix more. Set beside it: the measured parallel "
    "token generation (EnCodec's decoder excluded) and the whole decode, at the paper's "
    "{iterations} iterations."
)


class PassCounter:
    """Counts the forward passes of a module while it is attached."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.passes = 0
        self._handle = module.register_forward_hook(self._count)

    def _count(self, *_) -> None:
        self.passes += 1

    def detach(self) -> None:
        self._handle.remove()


def length_sweep(codec: SoundStormCodec, rounds: int) -> dict:
    """Decode seconds against audio length and the quadratic fit."""
    seconds = {}
    for length in LENGTHS:
        encoded = codec.encode(speech(length, codec.sample_rate), SWEEP_BITRATE)
        seconds[length] = median_seconds(lambda e=encoded: codec.decode(e), rounds)
    lengths = np.array(LENGTHS)
    quadratic, slope, fixed = np.polyfit(lengths, np.array([seconds[x] for x in LENGTHS]), 2)
    return {
        "bitrate": SWEEP_BITRATE,
        "iterations": PAPER_ITERATIONS,
        "decode_seconds": {f"{length:g}": value for length, value in seconds.items()},
        "fit": {"a_seconds": fixed, "b_seconds_per_second": slope, "c_per_second": quadratic},
        "slope_seconds_per_audio_second": slope,
        "quadratic_shows_at_seconds": quadratic_onset(fixed, slope, quadratic),
        "quadratic_share_at": {
            f"{length:g}": quadratic * length**2 / seconds[length] for length in LENGTHS
        },
    }


def quadratic_onset(fixed: float, slope: float, quadratic: float) -> float | None:
    """The length at which ``quadratic len^2`` is ``QUADRATIC_SHARE`` of the fitted total,
    ``None`` where the fit has no positive quadratic term (it never shows)."""
    if quadratic <= 0:
        return None
    # share * (a + b L + c L^2) = c L^2, the positive root of (1 - share) c L^2 - share b L
    # - share a = 0.
    share = QUADRATIC_SHARE
    a, b, c = (1 - share) * quadratic, -share * slope, -share * fixed
    discriminant = b * b - 4 * a * c
    if discriminant < 0:
        return None
    root = (-b + math.sqrt(discriminant)) / (2 * a)
    return root if root > 0 else None


def iteration_sweep(codec: SoundStormCodec, seconds: float, rounds: int) -> dict:
    """Counted passes and decode seconds against the first generated level's iterations."""
    encoded = codec.encode(speech(seconds, codec.sample_rate), SWEEP_BITRATE)
    rows = {}
    for iterations in ITERATIONS:
        counter = PassCounter(codec.model)
        try:
            decode_time = median_seconds(lambda n=iterations: codec.decode(encoded, nfe=n), rounds)
        finally:
            counter.detach()
        passes = counter.passes // rounds
        expected = codec.network_passes(SWEEP_BITRATE, iterations)
        if passes != expected:
            raise RuntimeError(
                f"{iterations} iterations: the model ran {passes} passes per decode, "
                f"network_passes says {expected}"
            )
        rows[iterations] = {"passes": passes, "decode_seconds": decode_time}
    passes = np.array([row["passes"] for row in rows.values()], dtype=float)
    times = np.array([row["decode_seconds"] for row in rows.values()])
    per_pass, fixed = np.polyfit(passes, times, 1)
    return {
        "bitrate": SWEEP_BITRATE,
        "seconds": seconds,
        "by_iterations": rows,
        "seconds_per_pass": per_pass,
        "fixed_seconds": fixed,
    }


def real_time_factors(
    codec: SoundStormCodec, reference: EncodecCodec, threads: int, seconds: float, rounds: int
) -> dict:
    torch.set_num_threads(threads)
    audio = speech(seconds, codec.sample_rate)
    decode = {}
    for bitrate in RTF_BITRATES:
        encoded = codec.encode(audio, bitrate)
        decode[f"{bitrate:g}"] = median_seconds(lambda e=encoded: codec.decode(e), rounds) / seconds
    reference_encoded = reference.encode(audio, REFERENCE_BITRATE)
    encodec_decode = median_seconds(lambda: reference.decode(reference_encoded), rounds)
    return {
        "threads": threads,
        "iterations": PAPER_ITERATIONS,
        "rtf_encode": median_seconds(lambda: codec.encode(audio, SWEEP_BITRATE), rounds) / seconds,
        "rtf_decode": decode,
        "encodec_demo_rtf_decode_3kbps": encodec_decode / seconds,
    }


def autoregressive_estimate(
    codec: SoundStormCodec, seconds: float, context_seconds: float, rounds: int
) -> dict:
    """What one pass per frame (and per frame and level) would cost, beside the parallel
    decode measured."""
    config = codec.config
    context_frames = max(1, round(context_seconds * codec.frame_rate))
    tokens = torch.randint(0, config.codebook_size, (1, config.levels, context_frames))
    level = torch.zeros(1, dtype=torch.long)
    # A single pass is short: repeat it enough for a stable median.
    repeats = max(rounds, 20)
    with torch.inference_mode():
        codec.model(tokens, level)  # warm-up
        pass_seconds = median_seconds(lambda: codec.model(tokens, level), repeats)
    encoded = codec.encode(speech(seconds, codec.sample_rate), SWEEP_BITRATE)
    frames = encoded.codes.shape[-1]
    generated = codec.generated_levels(codec.tokenizer.model.n_q_for(SWEEP_BITRATE))
    generation = median_seconds(lambda: codec.generate_tokens(encoded), rounds)
    decode = median_seconds(lambda: codec.decode(encoded), rounds)
    per_frame, flat = frames, frames * generated
    return {
        "bitrate": SWEEP_BITRATE,
        "seconds": seconds,
        "frames": frames,
        "generated_levels": generated,
        "context_frames": context_frames,
        "pass_seconds": pass_seconds,
        "autoregressive_passes": {"per_frame": per_frame, "flat": flat},
        "autoregressive_seconds": {
            "per_frame": per_frame * pass_seconds,
            "flat": flat * pass_seconds,
        },
        "parallel_passes": codec.network_passes(SWEEP_BITRATE, PAPER_ITERATIONS),
        "parallel_generation_seconds": generation,
        "parallel_decode_seconds": decode,
        "speedup_over_autoregressive": {
            "per_frame": per_frame * pass_seconds / generation,
            "flat": flat * pass_seconds / generation,
        },
        "how": AUTOREGRESSIVE_NOTE.format(
            context=context_seconds,
            frames=context_frames,
            repeats=repeats,
            bitrate=SWEEP_BITRATE,
            seconds=seconds,
            per_frame=per_frame,
            flat=flat,
            iterations=PAPER_ITERATIONS,
        ),
    }


def print_summary(report: dict) -> None:
    lengths = report["length_sweep"]
    print(f"decode at {SWEEP_BITRATE:g} kbps, {PAPER_ITERATIONS} iterations, by length:")
    for length, value in lengths["decode_seconds"].items():
        print(f"  {length} s: {value:.2f} s")
    onset = lengths["quadratic_shows_at_seconds"]
    fit = lengths["fit"]
    print(
        f"  fit {fit['a_seconds']:.3f} + {fit['b_seconds_per_second']:.4f} len + "
        f"{fit['c_per_second']:.2e} len^2; the quadratic term is {QUADRATIC_SHARE:.0%} of the "
        + ("total from " + f"{onset:.0f} s" if onset is not None else "total nowhere (c <= 0)")
    )
    sweep = report["iteration_sweep"]
    print(f"by iterations ({sweep['seconds']:g} s at {SWEEP_BITRATE:g} kbps):")
    for iterations, row in sweep["by_iterations"].items():
        print(f"  {iterations}: {row['passes']} passes, {row['decode_seconds']:.2f} s")
    print(f"  {sweep['fixed_seconds']:.3f} s + passes x {sweep['seconds_per_pass'] * 1000:.1f} ms")
    for result in report["real_time_factors"]:
        decode = ", ".join(f"{rate} kbps {rtf:.3f}" for rate, rtf in result["rtf_decode"].items())
        print(
            f"{result['threads']} thread(s): RTF encode {result['rtf_encode']:.4f}, decode "
            f"{decode}; EnCodec demo decode {result['encodec_demo_rtf_decode_3kbps']:.4f}"
        )
    estimate = report["autoregressive_estimate"]
    print(
        f"autoregressive estimate for {estimate['seconds']:g} s: per frame "
        f"{estimate['autoregressive_seconds']['per_frame']:.1f} s, flat "
        f"{estimate['autoregressive_seconds']['flat']:.1f} s; parallel generation "
        f"{estimate['parallel_generation_seconds']:.2f} s ({estimate['parallel_passes']} passes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the demo")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--context-seconds", type=float, default=1.0)
    parser.add_argument(
        "--threads", type=lambda text: tuple(int(n) for n in text.split(",")), default=(1, 2)
    )
    parser.add_argument("--out", type=Path, default=REPORT)
    arguments = parser.parse_args()
    if arguments.rounds < 1 or arguments.seconds <= 0 or arguments.context_seconds <= 0:
        parser.error("expected --rounds >= 1, --seconds > 0 and --context-seconds > 0")
    torch.set_num_threads(arguments.threads[0])
    codec, reference = SoundStormCodec(arguments.checkpoint), EncodecCodec()
    codec.decode(codec.encode(speech(1.0, codec.sample_rate), SWEEP_BITRATE))  # warm-up
    report = {
        "checkpoint": str(codec.checkpoint_path),
        "checkpoint_hash": codec.checkpoint_hash,
        "checkpoint_step": load_checkpoint(codec.checkpoint_path).step,
        "config": codec.config.to_json(),
        "rounds": arguments.rounds,
        "sweep_threads": arguments.threads[0],
        "length_sweep": length_sweep(codec, arguments.rounds),
        "iteration_sweep": iteration_sweep(codec, arguments.seconds, arguments.rounds),
        "autoregressive_estimate": autoregressive_estimate(
            codec, arguments.seconds, arguments.context_seconds, arguments.rounds
        ),
        "real_time_factors": [
            real_time_factors(codec, reference, threads, arguments.seconds, arguments.rounds)
            for threads in arguments.threads
        ],
    }
    report.update(provenance(max(arguments.threads)))
    print_summary(report)
    arguments.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {arguments.out}")


if __name__ == "__main__":
    main()
