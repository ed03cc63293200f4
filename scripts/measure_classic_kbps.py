"""Measure the real bitrate of every classic codec at every nominal bitrate.

Encodes the 10 real utterances of ../shared/data (LibriVox and cards, 16 kHz speech,
resampled with soxr to each codec's rate) with Opus, MP3, the identity reference and the
two low-pass anchors, and writes reports/classic_kbps.csv: one row per (codec, nominal
kbps) with the mean, min and max of ``Encoded.actual_kbps`` over the utterances and the
relative deviation of the mean from nominal (actual / nominal - 1). Prints the table too.

Run from the repository root:

    python scripts/measure_classic_kbps.py [--data ../shared/data] [--out reports/classic_kbps.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile
import soxr
import torch
from bench.codecs.base import Codec
from bench.codecs.classic.identity import IdentityCodec
from bench.codecs.classic.lowpass import Lowpass3k5Codec, Lowpass7kCodec
from bench.codecs.classic.mp3 import Mp3Codec
from bench.codecs.classic.opus import OpusCodec

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_OUT = REPO_ROOT / "reports" / "classic_kbps.csv"
CORPORA = ("librivox", "cards")


def load_utterances(data_dir: Path) -> list[tuple[np.ndarray, int]]:
    """Every ``*.wav`` of the corpora as (mono float32 samples, sample rate in Hz)."""
    paths = sorted(path for corpus in CORPORA for path in (data_dir / corpus).glob("*.wav"))
    if not paths:
        raise FileNotFoundError(f"no .wav files under {data_dir}/{{{','.join(CORPORA)}}}")
    utterances = []
    for path in paths:
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
        utterances.append((audio.mean(axis=1), rate))
    return utterances


def measure(codec: Codec, utterances: list[tuple[np.ndarray, int]]) -> pd.DataFrame:
    """One row per nominal bitrate of ``codec``: statistics of actual kbps."""
    signals = [
        torch.from_numpy(soxr.resample(audio, rate, codec.sample_rate).astype(np.float32))[None]
        for audio, rate in utterances
    ]
    rows = []
    for nominal in codec.bitrates:
        actual = np.array([codec.encode(signal, nominal).actual_kbps for signal in signals])
        rows.append(
            {
                "codec": codec.name,
                "nominal_kbps": nominal,
                "actual_kbps_mean": actual.mean(),
                "actual_kbps_min": actual.min(),
                "actual_kbps_max": actual.max(),
                "relative_deviation": actual.mean() / nominal - 1,
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the corpora")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV to write")
    args = parser.parse_args(argv)

    utterances = load_utterances(args.data)
    codecs = [OpusCodec(), Mp3Codec(), IdentityCodec(), Lowpass3k5Codec(), Lowpass7kCodec()]
    table = pd.concat([measure(codec, utterances) for codec in codecs], ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.4f")
    seconds = sum(len(audio) / rate for audio, rate in utterances)
    print(f"{len(utterances)} utterances, {seconds:.1f} s of speech -> {args.out}")
    print(table.to_string(index=False, float_format=lambda value: f"{value:.4f}"))


if __name__ == "__main__":
    main()
