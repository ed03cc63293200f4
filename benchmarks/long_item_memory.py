"""Peak memory and run-directory size of `bench run` on one long item (goal: < 1 GB peak).

Builds a synthetic but realistic long item, 44.1 kHz stereo 16-bit WAV: the LibriVox and
card utterances of ``../shared/data`` repeated end to end (speech on both channels, at
different gains), over a music-like bed of tones (a slow chord sequence with vibrato that
differs between the channels). Then runs ``bench run`` on it in a subprocess (Opus at one
bitrate, ``--workers 1``, so everything happens in that one process, a fresh cache under a
temporary folder) and reports the subprocess's peak resident set size (``ru_maxrss``,
read by a small launcher so that none of this process's memory counts), its wall time,
the size of its run directory by part, and the values it
scored (a metric that refuses the item shows its reason).

Run: ``python benchmarks/long_item_memory.py [--seconds 600] [--metrics LIST]
[--json reports/long_item_memory.json] [--with-report]``; the default scores every
metric and skips the report (``--no-report``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from bench.audio import load_audio, resample
from bench.provenance import device_fingerprint, git_state
from bench.store import RunStore

SAMPLE_RATE = 44_100
SPEECH_FOLDER = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
GOAL_BYTES = 1_000_000_000
# `bench run` is started by this small interpreter, which reports its child's peak. A child
# forked straight from this process would inherit its high-water mark (Linux keeps the
# pre-exec one in ru_maxrss), and this process held the whole item while building it.
PEAK_WRAPPER = """
import resource, subprocess, sys
status = subprocess.call(sys.argv[1:])
print(f"PEAK_RSS_KIB={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}", flush=True)
sys.exit(status)
"""


def _speech(samples: int) -> np.ndarray:
    """The shared corpus's utterances at 44.1 kHz, repeated end to end to ``samples``."""
    utterances = []
    for path in sorted(SPEECH_FOLDER.rglob("*.wav")):
        loaded = load_audio(path)
        audio = resample(loaded.audio.mean(dim=0, keepdim=True), loaded.sample_rate, SAMPLE_RATE)
        utterances.append(audio[0].numpy())
        utterances.append(np.zeros(SAMPLE_RATE // 4, dtype=np.float32))  # a pause
    if not utterances:
        raise SystemExit(f"no speech found under {SPEECH_FOLDER}")
    block = np.concatenate(utterances)
    return np.resize(block, samples)


def _tones(samples: int, channel: int) -> np.ndarray:
    """A music-like bed: a four-chord loop of three partial-rich notes with vibrato."""
    time_axis = np.arange(samples) / SAMPLE_RATE
    chords = ((220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6))
    chord_index = (time_axis // 2.0).astype(int) % len(chords)
    bed = np.zeros(samples)
    for voice in range(3):
        frequency = np.array([chord[voice] for chord in chords])[chord_index]
        vibrato = 1 + 0.004 * np.sin(2 * np.pi * (5 + channel) * time_axis)
        phase = 2 * np.pi * np.cumsum(frequency * vibrato) / SAMPLE_RATE
        for harmonic in (1, 2, 3):
            bed += np.sin(harmonic * phase + channel) / (harmonic * 3)
    envelope = 0.6 + 0.4 * np.abs(np.sin(np.pi * time_axis / 2.0))
    return (0.08 * bed * envelope).astype(np.float32)


def build_item(path: Path, seconds: float) -> None:
    samples = int(seconds * SAMPLE_RATE)
    speech = _speech(samples)
    left = 0.5 * speech + _tones(samples, 0)
    right = 0.35 * np.roll(speech, SAMPLE_RATE // 50) + _tones(samples, 1)
    stereo = np.clip(np.stack([left, right], axis=1), -1, 1)
    soundfile.write(str(path), stereo, SAMPLE_RATE, "PCM_16")


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def run_bench(
    item_folder: Path, scratch: Path, metrics: str | None, bitrate: str, report: bool
) -> dict:
    run_dir = scratch / "run"
    command = [
        str(Path(sys.executable).with_name("bench")),
        "run",
        "--codec",
        "opus",
        "--bitrates",
        bitrate,
        "--data",
        f"folder:{item_folder}",
        "--workers",
        "1",
        "--cache",
        str(scratch / "cache"),
        "--run-dir",
        str(run_dir),
    ]
    if not report:
        command.append("--no-report")
    if metrics:
        command += ["--metrics", metrics]
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", PEAK_WRAPPER, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    wall = time.perf_counter() - start
    output = completed.stdout.decode(errors="replace")
    # ru_maxrss is in KiB on Linux.
    peak = int(output.rsplit("PEAK_RSS_KIB=", 1)[1].split()[0]) * 1024
    rows = list(RunStore(run_dir).rows())
    parts = {
        part.name: _folder_bytes(part) if part.is_dir() else part.stat().st_size
        for part in sorted(run_dir.iterdir())
    }
    return {
        "exit_status": completed.returncode,
        "peak_rss_bytes": peak,
        "wall_seconds": round(wall, 1),
        "run_dir_bytes": _folder_bytes(run_dir),
        "run_dir_parts_bytes": parts,
        "cache_bytes": _folder_bytes(scratch / "cache"),
        "values": {
            row["metric"]: row["value"] if row["failure"] is None else row["failure"]
            for row in rows
        },
        "output_tail": output[-600:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--metrics", default=None, help="comma-separated (default: all)")
    parser.add_argument("--bitrate", default="12")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--with-report", action="store_true", help="let `bench run` build its report too"
    )
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="long-item-") as scratch:
        scratch = Path(scratch)
        item_folder = scratch / "items"
        item_folder.mkdir()
        build_item(item_folder / "long_item.wav", arguments.seconds)
        figures = run_bench(
            item_folder, scratch, arguments.metrics, arguments.bitrate, arguments.with_report
        )
    peak = figures["peak_rss_bytes"]
    print(f"item: {arguments.seconds:g} s, 44.1 kHz stereo; opus {arguments.bitrate} kbps")
    print(f"metrics: {arguments.metrics or 'all'}; exit status {figures['exit_status']}")
    print(f"peak RSS: {peak / 1e9:.3f} GB (goal < {GOAL_BYTES / 1e9:g} GB)")
    print(f"run directory: {figures['run_dir_bytes'] / 1e6:.1f} MB")
    for part, size in figures["run_dir_parts_bytes"].items():
        print(f"  {part}: {size / 1e6:.2f} MB")
    print(f"cache: {figures['cache_bytes'] / 1e6:.1f} MB; wall {figures['wall_seconds']} s")
    for metric, value in figures["values"].items():
        print(f"  {metric}: {value}")
    if arguments.json:
        record = {
            "item_seconds": arguments.seconds,
            "item": "44.1 kHz stereo 16-bit WAV: shared speech repeated over a tone bed",
            "codec": f"opus {arguments.bitrate} kbps",
            "metrics": arguments.metrics or "all",
            "report": arguments.with_report,
            "goal_peak_rss_bytes": GOAL_BYTES,
            **{key: value for key, value in figures.items() if key != "output_tail"},
            "git": git_state(),
            "device": device_fingerprint(1),
        }
        arguments.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
