"""EnCodec inference speed: ours against the official implementation, same weights, one run.

    python benchmarks/encodec_speed.py [--rounds 7] [--seconds 10] [--threads 1]

Builds the official 24 kHz model (encodec 0.1.1, random weights, codebooks seeded), loads
its state dict into ours, checks that both give the same codes, then times encode and
decode at 6 kbps on the same audio, alternating the two implementations round by round
(so machine load hits both alike), and reports medians, the speed ratios, and our
real-time factor beside the paper's (EnCodec Table 5: 24 kHz model 9.8x real time to
encode and 10.4x to decode on one CPU thread, the inverse of our RTF). Writes
``reports/encodec_speed.json``. Needs ``pip install --no-deps encodec==0.1.1 einops``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
import warnings
from pathlib import Path

import torch
from bench.codecs.encodec.model import CONFIGS, EncodecModel, official_state_dict
from bench.codecs.modules.conv import fold_weight_norm

from bench.provenance import backend_versions, device_fingerprint

REPORT = Path(__file__).resolve().parents[1] / "reports" / "encodec_speed.json"
PAPER_SPEED = {"encode": 9.8, "decode": 10.4}  # x real time, Table 5, one thread
BANDWIDTH = 6.0


def official_model() -> torch.nn.Module:
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    import encodec

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecated weight_norm
        model = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model.quantizer.vq.layers:
            codebook = layer._codebook
            codebook.embed.copy_(torch.randn(codebook.embed.shape, generator=generator) * 0.3)
            codebook.inited.fill_(1)
    model.set_target_bandwidth(BANDWIDTH)
    return model.eval()


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)

    official = official_model()
    ours = EncodecModel(CONFIGS["24khz"]).eval()
    ours.load_state_dict(official_state_dict(official.state_dict()))
    fold_weight_norm(ours)  # inference weights, as the codec uses them
    audio = 0.1 * torch.randn(
        1, 1, int(arguments.seconds * 24000), generator=torch.Generator().manual_seed(1)
    )

    with torch.inference_mode():
        official_frames = official.encode(audio)
        our_segments = ours.encode(audio, BANDWIDTH)
        if not torch.equal(official_frames[0][0], our_segments[0].codes):
            raise SystemExit("codes differ: the comparison would not be like for like")
        times = {
            f"{who}_{what}": [] for who in ("ours", "official") for what in ("encode", "decode")
        }
        for _ in range(arguments.rounds):
            times["official_encode"].append(timed(lambda: official.encode(audio)))
            times["ours_encode"].append(timed(lambda: ours.encode(audio, BANDWIDTH)))
            times["official_decode"].append(timed(lambda: official.decode(official_frames)))
            times["ours_decode"].append(timed(lambda: ours.decode(our_segments, audio.shape[-1])))
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "what": "EnCodec 24 kHz, 6 kbps, same random weights, median of rounds",
        "audio_seconds": arguments.seconds,
        "rounds": arguments.rounds,
        "threads": arguments.threads,
        "median_seconds": medians,
        "speed_ratio_official_over_ours": {
            what: medians[f"official_{what}"] / medians[f"ours_{what}"]
            for what in ("encode", "decode")
        },
        "our_rtf": {
            what: medians[f"ours_{what}"] / arguments.seconds for what in ("encode", "decode")
        },
        "our_speed_x_real_time": {
            what: arguments.seconds / medians[f"ours_{what}"] for what in ("encode", "decode")
        },
        "paper_speed_x_real_time": PAPER_SPEED,
        "versions": backend_versions(),
        "device": device_fingerprint(arguments.threads),
    }
    REPORT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
