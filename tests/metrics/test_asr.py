"""WER and CER around the recogniser: the counts reports pool, one transcription per
signal for both metrics, cropped items, cache keys and the `--asr-model` option.

The recogniser's own behaviour on clean and noisy speech is in test_model_metrics.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import jiwer
import pytest
import torch

from bench import audio
from bench.cli import EXIT_FAILURES, EXIT_USAGE, main
from bench.data import load_dataset
from bench.data.item import Item
from bench.metrics import MetricSpec, Ratio, Score, Tolerance, asr, get_metric
from bench.scoring import (
    CROPPED_TRANSCRIPT_NOTE,
    BoundMetric,
    ItemSignals,
    bind_metrics,
    score_metric,
)
from bench.store import RunStore
from bench.sweep import SweepSettings, run_sweep

SAMPLE_RATE = 16_000
ITEM = "librivox_0880"


@pytest.fixture(scope="module")
def speech() -> tuple[Item, torch.Tensor]:
    (item,) = load_dataset("embedded", item_ids=(ITEM,)).items
    return item, audio.load_audio(item.path).audio


def _noisy(signal: torch.Tensor, snr_db: float) -> torch.Tensor:
    noise = torch.randn(signal.shape, generator=torch.Generator().manual_seed(0))
    return signal + noise * (signal.norm() / noise.norm()) * 10 ** (-snr_db / 20)


def test_wer_and_cer_count_edits_as_jiwer_does_from_one_transcription_each(speech, monkeypatch):
    item, reference = speech
    degraded = _noisy(reference, 5)
    transcribed = []
    whisper = asr._whisper(asr.resolve_model(asr.DEFAULT_MODEL).folder)

    class CountingWhisper:
        def transcribe(self, samples, **options):
            transcribed.append(len(samples))
            return whisper.transcribe(samples, **options)

    monkeypatch.setattr(asr, "_whisper", lambda folder: CountingWhisper())
    monkeypatch.setattr(asr, "_TRANSCRIPTS", type(asr._TRANSCRIPTS)())
    signals = ItemSignals(reference, degraded, SAMPLE_RATE)
    without_transcript = dataclasses.replace(item, transcript=None)
    outcomes = {
        metric.name: score_metric(metric, without_transcript, signals)
        for metric in bind_metrics(("wer", "cer"))
    }
    # A dWER transcribes the reference and the degraded signal; CER reuses both.
    assert len(transcribed) == 2
    model = asr.resolve_model(asr.DEFAULT_MODEL)
    truth = asr._transcribe(model, reference)
    hypothesis = asr._transcribe(model, degraded)
    assert len(transcribed) == 2 and truth and truth != hypothesis
    words = jiwer.process_words(truth, hypothesis)
    wer, cer = outcomes["wer"], outcomes["cer"]
    assert (wer.failure, cer.failure) == (None, None)
    assert wer.values["wer"] == pytest.approx(jiwer.wer(truth, hypothesis))
    assert cer.values["cer"] == pytest.approx(jiwer.cer(truth, hypothesis))
    assert 0 < cer.values["cer"] < wer.values["wer"]
    assert wer.counts == {
        "edits": words.substitutions + words.deletions + words.insertions,
        "reference_words": len(truth.split()),
    }
    assert cer.counts["reference_characters"] == len(truth)
    assert (wer.note, cer.note) == (asr.DWER_NOTE, asr.DCER_NOTE)


def _recording_spec(needs_transcript: bool, optional_transcript: bool, seen: list) -> MetricSpec:
    def record(reference, degraded, sample_rate, item):
        seen.append(item.transcript)
        return Score(1.0, "scored")

    return MetricSpec(
        name="records_transcript",
        function=record,
        higher_is_better=True,
        needs_reference=True,
        needs_transcript=needs_transcript,
        sample_rate=None,
        backend="test",
        backend_version="0",
        tolerance=Tolerance(absolute=0.1),
        optional_transcript=optional_transcript,
    )


def test_a_cropped_item_hides_its_whole_file_transcript_from_every_metric_that_reads_it():
    item = Item(id="x", path=Path("x.wav"), transcript="the whole file's words")
    signal = torch.zeros(1, 800)
    seen: list = []
    optional = BoundMetric(_recording_spec(False, True, seen))
    signals = ItemSignals(signal, signal, 8000)
    whole = score_metric(optional, item, signals)
    cropped = score_metric(optional, item, signals, cropped=True)
    assert seen == ["the whole file's words", None]
    assert whole.note == "scored" and cropped.note == f"scored; {CROPPED_TRANSCRIPT_NOTE}"
    required = BoundMetric(_recording_spec(True, False, seen))
    refused = score_metric(required, item, signals, cropped=True)
    assert math.isnan(refused.values["records_transcript"])
    assert refused.failure == CROPPED_TRANSCRIPT_NOTE and len(seen) == 2
    untouched = BoundMetric(_recording_spec(False, False, seen))
    assert score_metric(untouched, item, signals, cropped=True).note == "scored"
    assert seen[-1] == "the whole file's words"


def _asr_run(tmp_path: Path, name: str, cache: Path | None = None, **settings) -> list[dict]:
    summary = run_sweep(
        SweepSettings(codecs=("identity",), metrics=("wer", "cer"), **settings),
        workers=1,
        run_dir=tmp_path / name,
        cache_dir=cache or tmp_path / f"{name}-cache",
        progress=False,
    )
    return list(RunStore(summary.run_dir).rows())


def test_a_cropped_item_is_scored_against_the_asr_transcript_of_its_crop(tmp_path, speech):
    item, reference = speech
    assert reference.shape[-1] > 2 * SAMPLE_RATE
    cropped = _asr_run(tmp_path, "crop", items=(ITEM,), max_seconds=1.0)
    # The identity codec changes nothing, so the crop's dWER and dCER are 0; against the
    # whole file's transcript most of its words would be "deleted".
    assert {row["metric"]: row["value"] for row in cropped} == {"wer": 0.0, "cer": 0.0}
    notes = {row["metric"]: row["metric_note"] for row in cropped}
    assert notes == {
        "wer": f"{asr.DWER_NOTE}; {CROPPED_TRANSCRIPT_NOTE}",
        "cer": f"{asr.DCER_NOTE}; {CROPPED_TRANSCRIPT_NOTE}",
    }
    counts = {row["metric"]: row["metric_counts"] for row in cropped}
    whole_file_words = len(asr.NORMALISER(item.transcript).split())
    assert counts["wer"]["edits"] == 0 < counts["wer"]["reference_words"] < whole_file_words
    # An item shorter than --max-seconds is not cropped and keeps its transcript.
    whole = _asr_run(tmp_path, "whole", items=(ITEM,), max_seconds=60.0)
    assert {row["metric_note"] for row in whole} == {asr.TRANSCRIPT_NOTE}
    (whole_wer,) = [row for row in whole if row["metric"] == "wer"]
    assert whole_wer["metric_counts"] == {
        "edits": round(whole_wer["value"] * whole_file_words),
        "reference_words": whole_file_words,
    }


def test_one_file_with_and_without_a_transcript_shares_decodes_but_not_values(tmp_path, speech):
    item, _ = speech
    folder = tmp_path / "no-transcripts"
    folder.mkdir()
    shutil.copy(item.path, folder / item.path.name)
    cache = tmp_path / "shared-cache"
    with_transcript = _asr_run(tmp_path, "with", items=(ITEM,), cache=cache)
    without = _asr_run(tmp_path, "without", data=f"folder:{folder}", cache=cache)
    assert {row["metric_note"] for row in with_transcript} == {asr.TRANSCRIPT_NOTE}
    assert {row["metric_note"] for row in without} == {asr.DWER_NOTE, asr.DCER_NOTE}
    assert {row["decoded_from_cache"] for row in without} == {True}
    assert {row["decoded_key"] for row in without} == {
        row["decoded_key"] for row in with_transcript
    }
    # Served from the cache, the rows keep their counts for the report to pool.
    again = _asr_run(tmp_path, "again", items=(ITEM,), cache=cache)
    fields = ("metric", "value", "metric_note", "metric_counts")
    assert [[row[field] for field in fields] for row in again] == [
        [row[field] for field in fields] for row in with_transcript
    ]
    assert all(row["metric_counts"]["edits"] >= 0 for row in again)


def test_bench_metrics_lists_cer_beside_wer(capsys):
    assert main(["metrics"]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert "wer" in listed and "cer" in listed
    assert listed["cer"].split()[1] == "lower"
    wer, cer = get_metric("wer"), get_metric("cer")
    assert (wer.aggregation, cer.aggregation) == (
        Ratio("edits", "reference_words"),
        Ratio("edits", "reference_characters"),
    )
    assert wer.uses_transcript and cer.uses_transcript and cer.options == ("model",)


def test_asr_model_applies_to_each_requested_asr_metric(tmp_path, speech, capsys):
    item, _ = speech
    nowhere = str(tmp_path / "nowhere")
    arguments = ["score", str(item.path), str(item.path), "--json", "--asr-model", nowhere]
    assert main([*arguments, "--metrics", "cer"]) == EXIT_FAILURES
    failures = json.loads(capsys.readouterr().out)["failures"]
    assert set(failures) == {"cer"} and "is neither a bundled model" in failures["cer"]
    assert main([*arguments, "--metrics", "si_sdr"]) == EXIT_USAGE
    assert "--asr-model applies to wer and cer" in capsys.readouterr().err


def test_bench_score_pools_wer_over_a_folder_of_pairs_as_jiwer_does(tmp_path, capsys):
    references, degradeds = tmp_path / "ref", tmp_path / "deg"
    references.mkdir()
    degradeds.mkdir()
    truths, hypotheses = [], []
    model = asr.resolve_model(asr.DEFAULT_MODEL)
    # A 2-word command beside a 22-word sentence, both under noise.
    items = load_dataset("embedded", item_ids=("cards_004", "librivox_0870")).items
    # In the order `bench score` pairs the files: by relative path.
    for item in sorted(items, key=lambda item: item.path.name):
        loaded = audio.load_audio(item.path)
        noisy = _noisy(loaded.audio, 0)
        shutil.copy(item.path, references / item.path.name)
        (references / item.path.name).with_suffix(".txt").write_text(item.transcript)
        audio.save_listening_copy(degradeds / f"{item.path.stem}.flac", noisy, loaded.sample_rate)
        degraded = audio.load_audio(degradeds / f"{item.path.stem}.flac")
        truths.append(asr.NORMALISER(item.transcript))
        hypotheses.append(asr._transcribe(model, degraded.audio))
    assert main(["score", str(references), str(degradeds), "--metrics", "wer", "--json"]) in (0, 3)
    printed = json.loads(capsys.readouterr().out)
    per_pair = [pair["values"]["wer"] for pair in printed["pairs"]]
    expected = [jiwer.wer(t, h) for t, h in zip(truths, hypotheses, strict=True)]
    assert per_pair == pytest.approx(expected)
    assert printed["mean"]["wer"] == pytest.approx(jiwer.wer(truths, hypotheses))
    assert printed["mean"]["wer"] != pytest.approx(sum(per_pair) / 2)
