"""Metric costs: seconds per audio-second through the harness against the backend bare.

For every audio metric, the 5 LibriVox utterances of the embedded corpus (24.7 s) plus
white noise at 20 dB SNR are scored (a) through ``bench.scoring.score_metric``, the path
every run takes, and (b) by calling the backend library directly on the same arrays.
Both get their inputs already at the metric's rate, so the difference is the wrapper's
own overhead (goal <= 5 %). Every figure is the median of ``--repeats`` passes, after a
warm-up pass, harness and bare passes alternating, with one thread (as the harness's
workers run).

It then measures the throughput of the whole default suite: a sweep of Opus at 12 kbps
over the 10 real utterances, every metric, no cache, with 1 and 2 workers.

The costs are saved where ``bench metrics`` shows them (the cache folder) and, with
``--json``, to a file. Run: ``python benchmarks/metric_costs.py [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

from bench import audio as bench_audio
from bench.data import load_dataset
from bench.metrics import get_metric, metric_names
from bench.metrics.costs import save_costs
from bench.parallel import pinned_threads
from bench.provenance import backend_versions, device_fingerprint, git_state
from bench.scoring import BoundMetric, ItemSignals, ensure_set_up, score_metric
from bench.sweep import SweepSettings, run_sweep

Bare = Callable[[np.ndarray, np.ndarray, int], object]


def _bare_backends(transcript: str) -> dict[str, Bare]:
    """Each metric's backend called directly on mono float arrays at the metric's rate."""
    import jiwer
    import pesq
    import pystoi
    from faster_whisper import WhisperModel
    from visqol import VisqolApi

    from bench.metrics import asr, signal, visqol
    from bench.metrics.dnsmos import dnsmos_model

    single_thread_dnsmos = dnsmos_model()

    def visqol_api(mode: str):
        api = VisqolApi()
        model_dir = files("visqol") / "model"
        if mode == "speech":
            api.create(mode="speech", lattice_model_path=str(model_dir / visqol.LATTICE_MODEL))
        else:
            api.create(mode="audio", model_path=str(model_dir / visqol.SVR_MODEL))
        return api

    speech_api, audio_api = visqol_api("speech"), visqol_api("audio")
    whisper = WhisperModel(
        str(asr.resolve_model(asr.DEFAULT_MODEL).folder),
        device="cpu",
        compute_type="int8",
        cpu_threads=1,
    )

    def transcribe(signal_array: np.ndarray) -> str:
        segments, _ = whisper.transcribe(signal_array.astype(np.float32), **asr.DECODING)
        return " ".join(segment.text for segment in segments)

    # Resemblyzer's own encoder, as bench.metrics.speaker uses it: volume normalised to
    # -30 dBFS, no VAD trimming. Importing resemblyzer needs a working `webrtcvad` module.
    from resemblyzer import VoiceEncoder, normalize_volume

    encoder = VoiceEncoder("cpu", verbose=False)

    def voice_embedding(signal_array: np.ndarray) -> np.ndarray:
        wav = normalize_volume(signal_array.astype(np.float32), -30, increase_only=True)
        return encoder.embed_utterance(wav)

    def torch_pair(function):
        return lambda ref, deg, rate: function(
            torch.from_numpy(ref[None]).float(), torch.from_numpy(deg[None]).float(), rate
        )

    return {
        "pesq_wb": lambda ref, deg, rate: pesq.pesq(rate, ref, deg, "wb"),
        "pesq_nb": lambda ref, deg, rate: pesq.pesq(rate, ref, deg, "nb"),
        "stoi": lambda ref, deg, rate: pystoi.stoi(ref, deg, rate),
        "estoi": lambda ref, deg, rate: pystoi.stoi(ref, deg, rate, extended=True),
        "visqol_speech": lambda ref, deg, rate: speech_api.measure_from_arrays(ref, deg, rate),
        "visqol_audio": lambda ref, deg, rate: audio_api.measure_from_arrays(ref, deg, rate),
        "wer": lambda ref, deg, rate: jiwer.wer(
            asr.NORMALISER(transcript), asr.NORMALISER(transcribe(deg))
        ),
        "speaker_similarity": lambda ref, deg, rate: float(
            np.dot(voice_embedding(ref), voice_embedding(deg))
        ),
        # speechmos's own DNSMOS computation, on the same one-thread ONNX sessions.
        "dnsmos": lambda ref, deg, rate: single_thread_dnsmos(deg, rate, False),
        # The project's own metrics: their function is the backend.
        "mel_distance": torch_pair(signal.mel_distance),
        "mel_distance_dac": torch_pair(signal.mel_distance_dac),
        "si_sdr": torch_pair(signal.si_sdr),
    }


def _inputs(rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(reference, degraded) mono float64 pairs at ``rate``: LibriVox and +20 dB noise."""
    dataset = load_dataset("embedded", tags=["speech"])
    pairs = []
    generator = np.random.default_rng(0)
    for item in dataset.items:
        if not item.id.startswith("librivox_"):
            continue
        loaded = bench_audio.load_audio(item.path)
        reference = bench_audio.resample(loaded.audio, loaded.sample_rate, rate)[0].double().numpy()
        noise = generator.standard_normal(reference.size)
        noise *= np.sqrt(np.mean(reference**2) / np.mean(noise**2) / 100)
        pairs.append((reference, reference + noise))
    return pairs


def _median_seconds(runs: tuple[Callable[[], None], ...], repeats: int) -> list[float]:
    """Median seconds of each run; the runs alternate so that they share the machine's
    state (load from other processes, frequency) as evenly as possible."""
    for run in runs:
        run()  # warm-up: models loaded, kernels compiled, caches filled
    timings: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, times in zip(runs, timings, strict=True):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return [statistics.median(times) for times in timings]


def measure_costs(repeats: int) -> dict[str, dict[str, float]]:
    item = load_dataset("embedded", tags=["speech"]).items[0]
    bare_backends = _bare_backends(item.transcript)
    results = {}
    for name in metric_names():
        spec = get_metric(name)
        if spec.inputs != "audio":
            continue
        metric = BoundMetric(spec)
        ensure_set_up(metric)
        pairs = _inputs(spec.sample_rate or 16000)
        rate = spec.sample_rate or 16000
        audio_seconds = sum(reference.size for reference, _ in pairs) / rate
        tensors = [
            (torch.from_numpy(ref[None]).float(), torch.from_numpy(deg[None]).float())
            for ref, deg in pairs
        ]

        def through_harness(metric=metric, tensors=tensors, rate=rate) -> None:
            for reference, degraded in tensors:
                outcome = score_metric(metric, item, ItemSignals(reference, degraded, rate))
                assert outcome.failure is None, outcome.failure

        def bare(name=name, tensors=tensors, rate=rate) -> None:
            for reference, degraded in tensors:
                bare_backends[name](
                    reference[0].double().numpy(), degraded[0].double().numpy(), rate
                )

        harness, backend = (
            seconds / audio_seconds for seconds in _median_seconds((through_harness, bare), repeats)
        )
        results[name] = {"harness": harness, "bare": backend, "overhead": harness / backend - 1}
        print(
            f"{name:<18} harness {harness:.4f} s/s   bare {backend:.4f} s/s   "
            f"overhead {100 * (harness / backend - 1):+.1f} %"
        )
    return results


def measure_throughput() -> dict[str, float]:
    results = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as scratch:
            summary = run_sweep(
                SweepSettings(
                    codecs=("opus",),
                    bitrates=(12.0,),
                    data="embedded",
                    tags=("speech",),
                    exclude_tags=("synthetic", "noisy"),
                ),
                workers=workers,
                out_root=scratch,
                cache_dir=None,
                progress=False,
            )
        results[f"wall_seconds_{workers}_workers"] = summary.wall_seconds
        print(
            f"whole default suite, {summary.tasks_total} items, {workers} worker(s): "
            f"{summary.wall_seconds:.1f} s"
        )
    results["speedup_2_workers"] = (
        results["wall_seconds_1_workers"] / results["wall_seconds_2_workers"]
    )
    print(f"speed-up 1 -> 2 workers: {results['speedup_2_workers']:.2f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the measurement here")
    parser.add_argument("--skip-throughput", action="store_true")
    arguments = parser.parse_args()
    with pinned_threads():
        costs = measure_costs(arguments.repeats)
    measurement = {
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "costs": {name: figures["harness"] for name, figures in costs.items()},
        "details": costs,
        "device": device_fingerprint(1),
        "versions": backend_versions(),
        "git": git_state(),
    }
    if not arguments.skip_throughput:
        measurement["throughput"] = measure_throughput()
    print(f"saved for `bench metrics`: {save_costs(measurement)}")
    if arguments.json:
        arguments.json.write_text(json.dumps(measurement, indent=2))


if __name__ == "__main__":
    main()
