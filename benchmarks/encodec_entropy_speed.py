"""EnCodec with and without its entropy-coding LM: encode and decode speed, and real bitrate.

    python benchmarks/encodec_entropy_speed.py [--checkpoint FILE] [--bitrates 1.5,3,6,12]
        [--seconds 10] [--rounds 5] [--threads 1] [--audio FILE]

Builds two codecs from one checkpoint (default: the project's demo checkpoint, which must
carry an LM from ``bench train lm``): codes bit-packed at ``log2(codebook_size)`` bits
each, and codes range-coded under the checkpoint's LM (Défossez et al. 2022, Sec. 3.3).
The audio is the held-out real speech of the embedded corpus (LibriVox and CMU cards, not
synthetic, not noisy) concatenated, or ``--audio FILE``, at the codec's rate and channel
count, looped or cut to ``--seconds``.

Per bitrate it first checks that both codecs choose the same codes and that the LM payload
decodes to the packed one's audio bit for bit (which also warms both up), then times encode
and decode, alternating the two codecs round by round so machine load hits both alike, and
reports medians, the LM/packed slowdowns, x real time, the LM's added milliseconds per frame
and the kbps of each payload (headers included) with the LM's saving. The convolutions run
on ``--threads``; the LM always runs on one thread (``bench.codecs.encodec.entropy`` pins
it, so the decoder rebuilds the encoder's CDFs bit for bit). Writes
``reports/encodec_entropy_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench.codecs.base import Encoded
from bench.codecs.bitstream import BitstreamError
from bench.codecs.checkpoint import CheckpointError
from bench.codecs.encodec.codec import EncodecCodec

from bench import audio as bench_audio
from bench.data import load_dataset
from bench.provenance import backend_versions, device_fingerprint, git_state

REPORT = Path(__file__).resolve().parents[1] / "reports" / "encodec_entropy_speed.json"
# Held-out real speech, as scripts/build_demo_checkpoint.py scores the demo model on.
HELD_OUT = dict(tags=("speech",), exclude_tags=("synthetic", "noisy"))
KINDS = ("packed", "lm")


def bitrate_list(text: str) -> tuple[float, ...]:
    """``"1.5,3,6"`` -> ``(1.5, 3.0, 6.0)``, for argparse."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected kbps such as 1.5,3,6,12, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one bitrate, got {text!r}")
    return values


def build_codecs(checkpoint: Path | None) -> dict[str, EncodecCodec]:
    """The bit-packing and the entropy-coding codec of one checkpoint, or exit saying why."""
    try:
        return {
            "packed": EncodecCodec(checkpoint, entropy_coding=False),
            "lm": EncodecCodec(checkpoint, entropy_coding=True),
        }
    except (CheckpointError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


def benchmark_audio(
    path: Path | None, seconds: float, sample_rate: int, channels: int
) -> tuple[torch.Tensor, dict]:
    """``(channels, seconds * sample_rate)`` audio, looped or cut, and where it came from."""
    if path is None:
        dataset = load_dataset("embedded", **HELD_OUT)
        paths = [item.path for item in dataset]
        source = {"dataset": "embedded", **HELD_OUT, "items": [item.id for item in dataset]}
    else:
        paths = [path]
    try:
        clips = [
            bench_audio.prepare(bench_audio.load_audio(item), sample_rate, channels)[0]
            for item in paths
        ]
    except bench_audio.AudioError as error:
        where = "--audio" if path is not None else "the embedded corpus"
        raise SystemExit(f"error: {where}: {error}") from None
    if path is not None:
        source = {"file": str(path.resolve()), "sha256": bench_audio.file_sha256(path)}
    whole = torch.cat(clips, dim=-1)
    num_samples = int(round(seconds * sample_rate))
    repeats = -(-num_samples // whole.shape[-1])
    source["source_seconds"] = whole.shape[-1] / sample_rate
    source["looped"] = repeats > 1
    return whole.repeat(1, repeats)[:, :num_samples].contiguous(), source


def check_lossless(
    codecs: dict[str, EncodecCodec], audio: torch.Tensor, bitrate: float
) -> dict[str, Encoded]:
    """Encode with both codecs; exit unless both chose the same codes and the LM payload
    decodes to bit-identical audio (a single wrongly range-decoded code would change it)."""
    encoded = {kind: codec.encode(audio, bitrate) for kind, codec in codecs.items()}
    if not torch.equal(encoded["packed"].codes, encoded["lm"].codes):
        raise SystemExit(f"{bitrate:g} kbps: the two codecs encoded different codes")
    try:
        decoded = {kind: codecs[kind].decode(encoded[kind]) for kind in KINDS}
    except BitstreamError as error:
        raise SystemExit(f"{bitrate:g} kbps: the LM payload does not decode: {error}") from None
    if not torch.equal(decoded["packed"], decoded["lm"]):
        raise SystemExit(f"{bitrate:g} kbps: the LM payload decodes to other audio than packed")
    return encoded


def timed(function: Callable[..., object], *arguments: object) -> float:
    start = time.perf_counter()
    function(*arguments)
    return time.perf_counter() - start


def measure(
    codecs: dict[str, EncodecCodec], audio: torch.Tensor, bitrate: float, rounds: int
) -> dict:
    """Medians and bitrates of both codecs at one bitrate (seconds, x real time, kbps)."""
    encoded = check_lossless(codecs, audio, bitrate)
    times = {f"{kind}_{what}": [] for what in ("encode", "decode") for kind in KINDS}
    for _ in range(rounds):
        for kind in KINDS:
            times[f"{kind}_encode"].append(timed(codecs[kind].encode, audio, bitrate))
        for kind in KINDS:
            times[f"{kind}_decode"].append(timed(codecs[kind].decode, encoded[kind]))
    medians = {name: statistics.median(values) for name, values in times.items()}
    seconds = audio.shape[-1] / codecs["packed"].sample_rate
    n_q, frames = encoded["packed"].codes.shape
    kbps = {kind: len(encoded[kind].payload) * 8 / seconds / 1000 for kind in KINDS}
    return {
        "nominal_kbps": bitrate,
        "n_q": n_q,
        "frames": frames,
        "payload_bytes": {kind: len(encoded[kind].payload) for kind in KINDS},
        "kbps": kbps,
        "lm_saving_percent": 100 * (1 - kbps["lm"] / kbps["packed"]),
        "median_seconds": medians,
        "all_seconds": times,
        "slowdown_lm_over_packed": {
            what: medians[f"lm_{what}"] / medians[f"packed_{what}"] for what in ("encode", "decode")
        },
        "speed_x_real_time": {
            kind: {what: seconds / medians[f"{kind}_{what}"] for what in ("encode", "decode")}
            for kind in KINDS
        },
        # What entropy coding adds to each 1/frame_rate s frame (all n_q codes of it).
        "lm_added_ms_per_frame": {
            what: 1000 * (medians[f"lm_{what}"] - medians[f"packed_{what}"]) / frames
            for what in ("encode", "decode")
        },
    }


def lm_shape(codec: EncodecCodec) -> dict:
    lm = codec.lm
    return {
        "dim": lm.dim,
        "num_layers": len(lm.transformer.layers),
        "num_heads": lm.transformer.layers[0].self_attn.num_heads,
        "past_context_frames": lm.transformer.past_context,
        "n_q": lm.n_q,
        "card": lm.card,
        "parameters": sum(parameter.numel() for parameter in lm.parameters()),
    }


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| kbps | packed kbps | LM kbps | saving | encode s packed / LM (x slower) "
        "| decode s packed / LM (x slower) | x real time enc packed / LM "
        "| x real time dec packed / LM | LM ms/frame enc / dec |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        median, speed = row["median_seconds"], row["speed_x_real_time"]
        slowdown, per_frame = row["slowdown_lm_over_packed"], row["lm_added_ms_per_frame"]
        lines.append(
            f"| {row['nominal_kbps']:g} | {row['kbps']['packed']:.2f} | {row['kbps']['lm']:.2f} "
            f"| {row['lm_saving_percent']:.1f} % "
            f"| {median['packed_encode']:.3f} / {median['lm_encode']:.3f} "
            f"({slowdown['encode']:.1f}) "
            f"| {median['packed_decode']:.3f} / {median['lm_decode']:.3f} "
            f"({slowdown['decode']:.1f}) "
            f"| {speed['packed']['encode']:.1f} / {speed['lm']['encode']:.1f} "
            f"| {speed['packed']['decode']:.1f} / {speed['lm']['decode']:.1f} "
            f"| {per_frame['encode']:.2f} / {per_frame['decode']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="codec-bench EnCodec checkpoint with an LM (default: the demo checkpoint)",
    )
    parser.add_argument("--bitrates", type=bitrate_list, default=(1.5, 3.0, 6.0, 12.0))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--audio",
        type=Path,
        default=None,
        help="audio file (default: the embedded corpus's held-out real speech)",
    )
    arguments = parser.parse_args()
    for name in ("seconds", "rounds", "threads"):
        if getattr(arguments, name) <= 0:
            parser.error(f"--{name}: expected a positive value, got {getattr(arguments, name)}")
    torch.set_num_threads(arguments.threads)

    codecs = build_codecs(arguments.checkpoint)
    packed = codecs["packed"]
    try:
        bitrates = [packed.check_bitrate(bitrate) for bitrate in arguments.bitrates]
    except ValueError as error:
        raise SystemExit(f"error: --bitrates: {error}") from None
    audio, source = benchmark_audio(
        arguments.audio, arguments.seconds, packed.sample_rate, packed.channels
    )
    rows = [measure(codecs, audio, bitrate, arguments.rounds) for bitrate in bitrates]

    result = {
        "what": (
            "EnCodec codes bit-packed vs range-coded under the checkpoint's LM, same weights, "
            "median of rounds; kbps from whole payloads (headers included)"
        ),
        "checkpoint": {
            "path": str(packed.checkpoint_path.resolve()),
            "file_sha256": bench_audio.file_sha256(packed.checkpoint_path),
            "kind": packed.checkpoint_kind,
            "weights_hash": packed.checkpoint_hash,
            "weights_and_lm_hash": codecs["lm"].checkpoint_hash,
            "model_note": packed.model_note,
            "config": packed.config.name,
            "lm": lm_shape(codecs["lm"]),
        },
        "audio": {
            **source,
            "seconds": audio.shape[-1] / packed.sample_rate,
            "sample_rate": packed.sample_rate,
            "channels": packed.channels,
        },
        "rounds": arguments.rounds,
        "threads": arguments.threads,
        "lm_threads": 1,
        "bitrates": rows,
        "codecs": {kind: codec.describe() for kind, codec in codecs.items()},
        "versions": backend_versions(),
        "git": git_state(),
        "device": device_fingerprint(arguments.threads),
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"EnCodec {packed.config.name}, {result['audio']['seconds']:g} s of audio, "
        f"{arguments.rounds} round(s), {arguments.threads} thread(s) (LM: 1), "
        f"checkpoint {result['checkpoint']['weights_and_lm_hash']}\n"
    )
    print(markdown_table(rows))
    print(f"\nwrote {REPORT}")


if __name__ == "__main__":
    main()
