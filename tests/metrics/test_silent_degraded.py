"""Every registered metric on an all-zero decoded signal: never better than a working codec.

Silence is the worst output a codec can give. Each metric, through `bench score` and
through ``bench.scoring.score_metric`` (the call a sweep makes), must give NaN with a reason
that says the degraded signal is silent, or a value no better than real Opus at 6 kbps on
the same 2 s of speech. SI-SDR gave 0.0 dB, better than Opus's -0.65 dB.
"""

from __future__ import annotations

import json
import math

import pytest
import soundfile
import torch
from bench.codecs.base import Encoded
from helpers import QuantizingCodec, write_tone

from bench import audio
from bench.cli import EXIT_FAILURES, EXIT_USAGE, main
from bench.data.embedded import EMBEDDED_DIR
from bench.data.item import Item
from bench.metrics import get_metric, metric_names
from bench.registry import CODECS, create_codec
from bench.scoring import ItemSignals, MetricOutcome, bind_metrics, score_metric
from bench.store import RunStore
from bench.sweep import SweepSettings, run_sweep

RATE = 16_000
SECONDS = 2.0
OPUS_KBPS = 6.0


@pytest.fixture(scope="module")
def clip() -> dict[str, torch.Tensor]:
    """2 s of LibriVox speech at 16 kHz, the same through Opus at 6 kbps, and silence."""
    speech, rate = soundfile.read(EMBEDDED_DIR / "librivox_0880.flac", dtype="float32")
    assert rate == RATE
    reference = torch.from_numpy(speech[: int(SECONDS * RATE)]).unsqueeze(0)
    opus = create_codec("opus")
    at_opus_rate = audio.resample(reference, RATE, opus.sample_rate)
    decoded = opus.decode(opus.encode(at_opus_rate, OPUS_KBPS))
    return {
        "reference": reference,
        "opus": audio.resample(decoded, opus.sample_rate, RATE),
        "silent": torch.zeros_like(reference),
    }


def _score(name: str, clip: dict[str, torch.Tensor], degraded: str) -> MetricOutcome:
    (metric,) = bind_metrics((name,))
    item = Item(id="librivox_0880", path=EMBEDDED_DIR / "librivox_0880.flac")
    return score_metric(metric, item, ItemSignals(clip["reference"], clip[degraded], RATE))


def _assert_no_better_than_opus(name: str, silent: float | None, reason: str | None, clip):
    if silent is None or math.isnan(silent):
        assert reason and "silent" in reason, reason
        return
    opus = _score(name, clip, "opus")
    assert opus.failure is None, opus.failure
    opus_value = opus.values[name]
    spec = get_metric(name)
    better = silent > opus_value if spec.higher_is_better else silent < opus_value
    assert not better, f"{name}: silence {silent} beats Opus {OPUS_KBPS:g} kbps {opus_value}"


@pytest.mark.parametrize("name", metric_names())
def test_silence_through_the_sweep_path_is_never_better_than_opus(name, clip):
    if get_metric(name).inputs == "coding":
        # Rates and real-time factors measure the coding run, never its audio.
        pytest.skip(f"{name} reads the coding statistics, not the decoded audio")
    if get_metric(name).needs_codes:
        # Token statistics measure the bitstream's codes, never the decoded audio.
        pytest.skip(f"{name} reads the codec's codes, not the decoded audio")
    outcome = _score(name, clip, "silent")
    _assert_no_better_than_opus(name, outcome.values[name], outcome.failure, clip)


@pytest.mark.parametrize("name", metric_names())
def test_silence_through_bench_score_is_never_better_than_opus(name, clip, tmp_path, capsys):
    reference, silent = tmp_path / "ref.wav", tmp_path / "silent.wav"
    soundfile.write(reference, clip["reference"][0].numpy(), RATE)
    soundfile.write(silent, clip["silent"][0].numpy(), RATE)
    code = main(["score", str(reference), str(silent), "--metrics", name, "--json"])
    if not get_metric(name).scores_files:  # coding statistics, codes
        assert code == EXIT_USAGE
        assert "cannot score files" in capsys.readouterr().err
        return
    printed = json.loads(capsys.readouterr().out)
    value, reason = printed["values"][name], printed["failures"].get(name)
    _assert_no_better_than_opus(name, value, reason, clip)
    assert code == (EXIT_FAILURES if value is None else 0)


class SilentCodec(QuantizingCodec):
    """A broken codec: every decoded sample is zero."""

    name = "test-silence"

    def _decode(self, encoded: Encoded, nfe: int | None, seed: int | None) -> torch.Tensor:
        return torch.zeros(1, encoded.num_samples)


def test_a_sweep_over_a_codec_that_decodes_silence_gives_nan_rows(tmp_path):
    if SilentCodec.name not in CODECS.names():
        CODECS.register(SilentCodec.name, SilentCodec, source="tests")
    write_tone(tmp_path / "data" / "tone.wav")
    settings = SweepSettings(
        codecs=(SilentCodec.name,),
        data=f"folder:{tmp_path / 'data'}",
        metrics=("si_sdr", "mel_distance"),
    )
    for _ in range(2):  # computed, then from the cache
        summary = run_sweep(
            settings,
            workers=1,
            out_root=tmp_path / "runs",
            cache_dir=tmp_path / "cache",
            progress=False,
        )
        rows = list(RunStore(summary.run_dir).rows())
        assert [row["metric"] for row in rows] == ["si_sdr", "mel_distance"]
        for row in rows:
            assert row["value"] is None, row
            assert row["failure"].startswith("degraded is silent")
