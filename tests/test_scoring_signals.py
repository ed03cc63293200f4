"""An item's signals at each metric's rate (``bench.scoring.ItemSignals``): the values the
metrics had when each got its own resampled pair, with one pair held at a time, a mono
mix for the metrics that score one, and a long pair at the codec's rate out of memory."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref

import numpy as np
import pytest
import torch
from helpers import QuantizingCodec
from test_sweep import _settings, folder  # noqa: F401 - the fixture

from bench import audio as bench_audio
from bench import scoring
from bench.data import load_dataset
from bench.metrics import get_metric, metric_names
from bench.scoring import ItemSignals, bind_metrics, scoring_order
from bench.sweep import Evaluator, Task
from bench.sweep import evaluate as sweep_evaluate
from bench.sweep.plan import plan

RATE = 48_000


def _stereo_pair(seconds: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    reference = 0.3 * torch.randn(2, int(seconds * RATE), generator=generator)
    degraded = reference + 0.05 * torch.randn(reference.shape, generator=generator)
    return reference, degraded


@pytest.mark.parametrize("spill_bytes", [None, 0], ids=["in memory", "spilled"])
def test_each_rate_s_pair_is_the_resampled_pair_and_its_mix_the_metrics_own(spill_bytes):
    reference, degraded = _stereo_pair()
    options = {} if spill_bytes is None else {"spill_bytes": spill_bytes}
    signals = ItemSignals(reference.clone(), degraded.clone(), RATE, **options)
    for rate in (RATE, 24_000, 16_000):
        expected = [bench_audio.resample(signal, RATE, rate) for signal in (reference, degraded)]
        made = signals.pair(rate)
        for want, have in zip(expected, made, strict=True):
            assert have.dtype == torch.float32 and torch.equal(have, want)
        # What the float32 mixers (voiced_mono, Whisper) and bench.audio.mono_float64 (PESQ,
        # STOI, ViSQOL) compute from the stereo pair, bit for bit.
        float32_mix = signals.pair(rate, "float32")
        float64_mix = signals.pair(rate, "float64")
        for want, mix32, mix64 in zip(expected, float32_mix, float64_mix, strict=True):
            assert mix32.shape == mix64.shape == (1, want.shape[-1])
            assert mix32.dtype == torch.float32 and mix64.dtype == torch.float64
            assert np.array_equal(mix32[0].numpy(), want.numpy().mean(axis=0))
            assert np.array_equal(mix64[0].numpy(), bench_audio.mono_float64(want))


def test_the_metrics_that_mix_to_mono_score_the_same_on_the_mix():
    """Giving a mono_mix metric its mix instead of the stereo pair changes nothing."""
    reference, degraded = _stereo_pair(3.0)
    reference, degraded = (bench_audio.resample(s, RATE, 16_000) for s in (reference, degraded))
    for name in ("stoi", "estoi"):
        spec = get_metric(name)
        mix = [
            signal.numpy().astype(np.float64).mean(axis=0, keepdims=True)
            for signal in (reference, degraded)
        ]
        whole = spec.function(reference, degraded, 16_000)
        mixed = spec.function(*(torch.from_numpy(signal) for signal in mix), 16_000)
        assert mixed == whole


def test_every_metric_that_mixes_to_mono_says_in_which_precision():
    declared = {name: get_metric(name).mono_mix for name in metric_names()}
    assert {name for name, mix in declared.items() if mix == "float64"} >= {
        "pesq_wb",
        "pesq_nb",
        "stoi",
        "estoi",
        "visqol_speech",
        "visqol_audio",
    }
    assert {name for name, mix in declared.items() if mix == "float32"} >= {
        "dnsmos",
        "speaker_similarity",
        "wer",
        "cer",
    }
    # Per-channel metrics are never handed a mix.
    assert declared["si_sdr"] is None and declared["mel_distance"] is None


def test_one_pair_is_held_at_a_time_and_a_long_codec_rate_pair_leaves_memory():
    reference, degraded = _stereo_pair()
    codec_rate = [weakref.ref(reference), weakref.ref(degraded)]
    signals = ItemSignals(reference, degraded, RATE, spill_bytes=0)
    del reference, degraded
    assert signals.pair()[0] is codec_rate[0]()  # before any other rate: the pair itself
    at_24khz = [weakref.ref(signal) for signal in signals.pair(24_000)]
    gc.collect()
    assert [ref() for ref in codec_rate] == [None, None], "the codec-rate pair is in a file"
    signals.pair(16_000, "float32")
    gc.collect()
    assert [ref() for ref in at_24khz] == [None, None], "one rate's pair at a time"
    signals.close()


def test_a_short_pair_stays_in_memory():
    reference, degraded = _stereo_pair()
    signals = ItemSignals(reference, degraded, RATE)
    assert not signals.spills
    signals.pair(16_000, "float32")
    assert signals.pair()[0] is reference


def test_the_evaluator_keeps_no_reference_to_a_long_item_s_signals(monkeypatch, folder):  # noqa: F811
    """The evaluator hands the task's pair over: once the pair at another rate is made,
    the reference and the decoded audio at the codec's rate are gone from memory."""
    alive_after_spill: list[list[bool]] = []

    class RecordingSignals(ItemSignals):
        def __init__(self, reference, degraded, sample_rate):
            super().__init__(reference, degraded, sample_rate, spill_bytes=0)
            self.codec_rate = [weakref.ref(reference), weakref.ref(degraded)]

        def pair(self, rate=None, mono_mix=None):
            made = super().pair(rate, mono_mix)
            if rate not in (None, self.sample_rate):
                gc.collect()
                alive_after_spill.append([ref() is not None for ref in self.codec_rate])
            return made

    monkeypatch.setattr(sweep_evaluate, "ItemSignals", RecordingSignals)
    metrics = ("si_sdr", "mel_distance")
    settings = _settings(folder, metrics=metrics)
    conditions = plan(settings, {"test-quantizer": QuantizingCodec()}).conditions
    item = load_dataset(settings.data).items[0]
    task = Task(conditions[0], item, "hash", "key", metrics, None)
    spilled = Evaluator(cache=None).evaluate(task).records
    assert alive_after_spill == [[False, False]]
    assert all(record.failure is None for record in spilled)
    # And the values are those of the pair held in memory.
    monkeypatch.undo()
    held = Evaluator(cache=None).evaluate(task).records
    assert [(r.metric, r.value) for r in spilled] == [(r.metric, r.value) for r in held]


def test_a_pair_that_cannot_be_written_to_a_temporary_file_stays_in_memory(monkeypatch):
    def full_disk(**options):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scoring.tempfile, "TemporaryFile", full_disk)
    reference, degraded = _stereo_pair()
    signals = ItemSignals(reference, degraded, RATE, spill_bytes=0)
    at_16khz = signals.pair(16_000)
    assert torch.equal(at_16khz[0], bench_audio.resample(reference, RATE, 16_000))
    assert signals.pair()[0] is reference


def test_the_codec_rate_comes_first_then_the_highest_rates():
    """Metrics at the codec's rate while its pair is held, then the largest pairs first,
    before the 16 kHz speech metrics load their models; each rate and mix in one run."""
    order = [
        (metric.spec.sample_rate, metric.spec.mono_mix)
        for metric in scoring_order(bind_metrics(None))
        if metric.spec.inputs == "audio"
    ]
    assert order[0] == (None, None)
    # Every metric at the codec's rate (the token statistics too) before any other rate.
    at_codec_rate = sum(rate is None for rate, _ in order)
    assert all(rate is None for rate, _ in order[:at_codec_rate])
    rates = [rate for rate, _ in order[at_codec_rate:]]
    assert rates == sorted(rates, reverse=True) and rates[0] > 16_000
    runs = [key for index, key in enumerate(order) if index == 0 or order[index - 1] != key]
    assert len(runs) == len(set(runs))


def test_the_memory_of_each_dropped_pair_is_given_back_once_it_is_freed(monkeypatch):
    """After the codec-rate pair moves to its file and after each rate's pair is dropped,
    the freed heap goes back to the system (glibc keeps it otherwise), and only then."""
    released: list[list[bool]] = []
    watched: list[weakref.ref] = []

    def release():
        gc.collect()
        released.append([ref() is not None for ref in watched])
        watched.clear()
        return True

    monkeypatch.setattr(scoring, "release_freed_memory", release)
    reference, degraded = _stereo_pair()
    watched += [weakref.ref(reference), weakref.ref(degraded)]
    signals = ItemSignals(reference, degraded, RATE, spill_bytes=0)
    del reference, degraded
    signals.pair()
    assert released == []  # the codec-rate pair itself: nothing was dropped
    made = signals.pair(24_000)
    assert released == [[False, False]]  # the codec-rate pair, once in its file
    watched += [weakref.ref(signal) for signal in made]
    del made
    signals.pair(24_000)
    assert len(released) == 1  # the same rate: the same pair, nothing dropped
    signals.pair(16_000, "float32")
    assert released[1:] == [[False, False]]  # the 24 kHz pair
    signals.close()
    assert len(released) == 3


def _without_glibc(monkeypatch):
    def no_glibc(name):
        raise ValueError(f"unrecognized configuration name {name!r}")

    monkeypatch.setattr(scoring.os, "confstr", no_glibc)
    scoring._glibc.cache_clear()


def test_freed_memory_is_given_back_only_where_the_c_library_is_glibc(monkeypatch):
    scoring._glibc.cache_clear()
    if scoring._glibc() is None:
        pytest.skip("not glibc")
    blocks = [np.ones(4096) for _ in range(10_000)]  # 32 kB each: inside the heap
    del blocks[:-1]  # the last one keeps the heap's top in use
    assert scoring.release_freed_memory() is True
    _without_glibc(monkeypatch)
    try:
        assert scoring.release_freed_memory() is False
    finally:
        monkeypatch.undo()
        scoring._glibc.cache_clear()


# In a fresh interpreter: glibc maps a block only when the heap has no free room for it,
# and a test session's heap has plenty.
LARGE_BLOCK_PROBE = """
import ctypes
import numpy as np
from bench import scoring
from bench.sweep import evaluate

FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"

class MallocInfo(ctypes.Structure):  # glibc's struct mallinfo2 (2.33+)
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS.split()]

glibc = scoring._glibc()
glibc.mallinfo2.restype = MallocInfo
freed = np.ones(24 * 2**20, dtype=np.uint8)
del freed  # glibc's own threshold rises to 24 MB
if {start}:
    evaluate.start_worker(None)
before = glibc.mallinfo2().hblkhd
block = np.ones(2 * scoring.MMAP_THRESHOLD_BYTES, dtype=np.uint8)
mapped = glibc.mallinfo2().hblkhd - before
print(mapped // block.nbytes)  # how many times the block's size was mapped for it
del block
print(glibc.mallinfo2().hblkhd == before)
"""


@pytest.mark.parametrize("start", [True, False], ids=["worker", "glibc's default"])
def test_a_worker_maps_large_blocks_of_its_own_which_leave_memory_when_freed(start):
    scoring._glibc.cache_clear()
    glibc = scoring._glibc()
    if glibc is None or not hasattr(glibc, "mallinfo2"):
        pytest.skip("not glibc 2.33+")
    probe = LARGE_BLOCK_PROBE.format(start=start)
    output = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    # A worker's block has its own mapping, gone once freed; by default the heap holds it.
    assert output == (["1", "True"] if start else ["0", "True"])


def test_large_blocks_are_mapped_only_where_the_c_library_is_glibc(monkeypatch):
    _without_glibc(monkeypatch)
    try:
        assert scoring.map_large_blocks() is False
    finally:
        monkeypatch.undo()
        scoring._glibc.cache_clear()
