"""SampleRNN generation speed: the incremental path against a naive one, and EnCodec's decoder.

    python benchmarks/samplernn_speed.py [--seconds 2] [--naive-samples 512] [--rounds 3]
                                         [--threads 1] [--configs tiny,small,2-tier]

For each config (random weights, seeded), times :meth:`SampleRnn.generate` (each tier once
per frame, nothing recomputed) over ``--seconds`` of 16 kHz audio, and reports samples per
second and the real-time factor. Beside it, on ``--naive-samples`` samples, a naive generator
that reruns the teacher-forced network over the whole prefix for every sample (every tier's
state recomputed), with the same uniforms, so both must draw the same samples (checked); the
naive cost grows with the prefix, so its figure holds for that length only. Then the EnCodec
demo's decoder (24 kHz) at 1.5 and 6 kbps on ``--seconds`` of audio, and the ``samplernn``
codec's whole decode on the same bits (the demo decoder: SampleRNN at 16 kHz, resampled to
24 kHz). The paper gives no speed.
Median of ``--rounds``; writes ``reports/samplernn_speed.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from bench.codecs.samplernn.model import CONFIGS, Q_LEVELS, ZERO_LEVEL, SampleRnn
from timing import median_seconds, provenance

from bench.registry import create_codec

REPORT = Path(__file__).resolve().parents[1] / "reports" / "samplernn_speed.json"
ENCODEC_BITRATES = (1.5, 6.0)


@torch.no_grad()
def naive_generate(model: SampleRnn, num_samples: int, seed: int = 0) -> torch.Tensor:
    """What :meth:`SampleRnn.generate` draws, by a teacher-forced pass over the whole prefix
    for every sample (samples not drawn yet are placeholders the causal network ignores)."""
    history, top = model.config.history, model.config.frame_sizes[0]
    uniforms = torch.rand(num_samples, 1, 1, generator=torch.Generator().manual_seed(seed))
    levels = torch.full((1, history + model.top_frames(num_samples) * top), ZERO_LEVEL)
    for step in range(num_samples):
        prefix = levels[:, : history + model.top_frames(step + 1) * top]
        logits = model(prefix).logits[:, step]
        cdf = torch.softmax(logits, dim=-1).cumsum(-1)
        levels[:, history + step] = torch.searchsorted(cdf, uniforms[step]).clamp(max=Q_LEVELS - 1)[
            :, 0
        ]
    return levels[:, history : history + num_samples]


def samplernn_figures(name: str, arguments: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = SampleRnn(CONFIGS[name]).eval()
    rate = model.config.sample_rate
    samples = int(arguments.seconds * rate)
    naive = arguments.naive_samples
    if not torch.equal(model.generate(naive), naive_generate(model, naive)):
        raise SystemExit(f"{name}: the naive and incremental paths draw different samples")
    incremental = median_seconds(lambda: model.generate(samples), arguments.rounds)
    incremental_short = median_seconds(lambda: model.generate(naive), arguments.rounds)
    naive_time = median_seconds(lambda: naive_generate(model, naive), arguments.rounds)
    return {
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "samples": samples,
        "samples_per_second": samples / incremental,
        "rtf": incremental / (samples / rate),
        "x_real_time": (samples / rate) / incremental,
        "naive_comparison": {
            "samples": naive,
            "incremental_samples_per_second": naive / incremental_short,
            "naive_samples_per_second": naive / naive_time,
            "speed_up": naive_time / incremental_short,
        },
    }


def decode_figures(name: str, arguments: argparse.Namespace) -> dict:
    """Decode speed of the registered codec ``name`` (its demo) on noise, per bitrate."""
    codec = create_codec(name)
    audio = 0.1 * torch.randn(
        1, int(arguments.seconds * codec.sample_rate), generator=torch.Generator().manual_seed(1)
    )
    figures = {}
    for bitrate in ENCODEC_BITRATES:
        encoded = codec.encode(audio, bitrate)
        seconds = median_seconds(lambda encoded=encoded: codec.decode(encoded), arguments.rounds)
        figures[f"{bitrate:g}"] = {
            "rtf": seconds / arguments.seconds,
            "x_real_time": arguments.seconds / seconds,
            "samples_per_second": audio.shape[-1] / seconds,
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--naive-samples", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--configs", default="tiny,small,2-tier")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    result = {
        "what": "SampleRNN generation (random weights), the EnCodec demo's decoder and the "
        "samplernn codec's decode (its demo), median of rounds; rtf = seconds of compute per "
        "second of audio",
        "seconds": arguments.seconds,
        "rounds": arguments.rounds,
        "threads": arguments.threads,
        "samplernn": {
            name: samplernn_figures(name, arguments) for name in arguments.configs.split(",")
        },
        "encodec_decode": decode_figures("encodec", arguments),
        "samplernn_codec_decode": decode_figures("samplernn", arguments),
        **provenance(arguments.threads),
    }
    REPORT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
