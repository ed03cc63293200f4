"""Harness performance: overhead, parallel speed-up and warm-cache re-runs, side by side.

Measures, in one process and one sitting (so the figures share the machine's state):

- overhead ratio: wall time of a cold single-worker run over the summed seconds spent
  inside codec and metric calls (goal <= 1.10);
- speed-up: wall time of a cold run with 1 worker over the same run with 2 workers
  (goal >= 1.8);
- warm re-run: wall time of an identical run that finds everything in the cache, over
  the cold run's (goal <= 5 %).

Each figure is the median of ``--repeats`` rounds; every round uses fresh cache folders.
Run: ``python benchmarks/harness_performance.py [--codecs opus --bitrates 6,12,24]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from bench.provenance import backend_versions, device_fingerprint, git_state
from bench.sweep import SweepSettings, parse_list, run_sweep


def _round(settings: SweepSettings, scratch: Path) -> dict[str, float]:
    def run(workers: int, cache: Path):
        return run_sweep(
            settings,
            workers=workers,
            out_root=scratch / "runs",
            cache_dir=cache,
            progress=False,
        )

    single = run(1, scratch / "cache-single")
    double = run(2, scratch / "cache-double")
    warm = run(2, scratch / "cache-double")
    assert warm.tasks_computed == 0, "the warm run should only read the cache"
    return {
        "single_wall_s": single.wall_seconds,
        "single_calls_s": single.codec_seconds + single.metric_seconds,
        "overhead_ratio": single.wall_seconds / (single.codec_seconds + single.metric_seconds),
        "double_wall_s": double.wall_seconds,
        "speedup_2_workers": single.wall_seconds / double.wall_seconds,
        "warm_wall_s": warm.wall_seconds,
        "warm_over_cold": warm.wall_seconds / double.wall_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codecs", default="opus")
    parser.add_argument("--bitrates", default="6,12,24")
    parser.add_argument(
        "--metrics", default="mel_distance,si_sdr,kbps_actual,rtf_encode,rtf_decode"
    )
    parser.add_argument("--data", default="embedded")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    arguments = parser.parse_args()
    settings = SweepSettings(
        codecs=tuple(arguments.codecs.split(",")),
        bitrates=parse_list(arguments.bitrates, float, "--bitrates"),
        metrics=tuple(arguments.metrics.split(",")),
        data=arguments.data,
    )
    rounds = []
    for repeat in range(arguments.repeats):
        with tempfile.TemporaryDirectory() as scratch:
            rounds.append(_round(settings, Path(scratch)))
        print(f"round {repeat + 1}: " + ", ".join(f"{k}={v:.3f}" for k, v in rounds[-1].items()))
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print("\nmedian of", len(rounds), "rounds:")
    print(
        f"  overhead ratio (wall / codec+metric calls, 1 worker): {medians['overhead_ratio']:.3f}"
        "  (goal <= 1.10)"
    )
    print(f"  speed-up 1 -> 2 workers: {medians['speedup_2_workers']:.2f}  (goal >= 1.8)")
    print(f"  warm re-run / cold run: {100 * medians['warm_over_cold']:.1f} %  (goal <= 5 %)")
    print(f"  cold single-worker run: {medians['single_wall_s']:.1f} s")
    if arguments.json:
        arguments.json.write_text(
            json.dumps(
                {
                    "settings": settings.to_json(),
                    "rounds": rounds,
                    "medians": medians,
                    "device": device_fingerprint(),
                    "versions": backend_versions(),
                    "git": git_state(),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
