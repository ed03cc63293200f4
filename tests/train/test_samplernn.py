"""SampleRNN's recipe through the training loop: truncated BPTT carries the tiers' state from
chunk to chunk and resets it at each new sequence, a resumed run (mid-sequence) ends as an
uninterrupted one, a tiny model overfits a sine to under 1 bit per sample, bad settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch
from bench.codecs.checkpoint import load_checkpoint

from bench.train.loop import train
from bench.train.settings import recipe_settings
from bench.train.solvers.samplernn import SampleRnnSolver

pytestmark = pytest.mark.usefixtures("single_thread")

HISTORY = 16  # the tiny config's top frame


@pytest.fixture(scope="module")
def sine(tmp_path_factory) -> str:
    """A clean 500 Hz sine at 16 kHz: each sample a function of the ones before."""
    folder = tmp_path_factory.mktemp("samplernn_data")
    time = np.arange(16_000) / 16_000
    soundfile.write(folder / "sine.wav", (0.5 * np.sin(2 * np.pi * 500 * time)), 16_000)
    return f"folder:{folder}"


def settings_of(data: str, steps: int, **given):
    # 96-sample sequences of three 32-sample chunks.
    values = {"batch_size": 2, "segment_seconds": 0.006, "tbptt_samples": 32, **given}
    return recipe_settings("samplernn", data=data, steps=steps, **values)


def test_tbptt_carries_the_state_across_chunks_and_resets_it_per_sequence(sine):
    solver = SampleRnnSolver(settings_of(sine, 7))
    solver.use_data()
    given, returned, windows = [], [], []

    def before(module, args, kwargs):
        given.append(kwargs["state"])
        windows.append(args[0])

    solver.model.register_forward_pre_hook(before, with_kwargs=True)
    solver.model.register_forward_hook(lambda module, args, output: returned.append(output.state))
    for step in range(7):
        solver.run_step(step)
    assert solver.chunks == 3
    for step in (0, 3, 6):
        assert given[step] is None  # a new sequence: the learned initial state
    for step in (1, 2, 4, 5):
        assert all(map(torch.equal, given[step], returned[step - 1]))
        # The chunk continues the sequence: its history is the end of the chunk before.
        assert torch.equal(windows[step][:, :HISTORY], windows[step - 1][:, -HISTORY:])
    assert not torch.equal(windows[3][:, HISTORY:], windows[2][:, HISTORY:])


def test_a_run_resumed_mid_sequence_ends_as_an_uninterrupted_one(sine, tmp_path):
    straight = train(settings_of(sine, 3), tmp_path / "straight", progress=False)
    train(settings_of(sine, 2), tmp_path / "resumed", progress=False)
    resumed = train(settings_of(sine, 3), tmp_path / "resumed", resume=True, progress=False)
    assert (
        load_checkpoint(resumed, "samplernn").network("model").hash
        == load_checkpoint(straight, "samplernn").network("model").hash
    )


def test_a_tiny_model_overfits_a_sine_to_under_one_bit_per_sample(sine, tmp_path):
    settings = settings_of(
        sine, 150, batch_size=4, segment_seconds=0.016, tbptt_samples=64, checkpoint_every=1000
    )
    train(settings, tmp_path, progress=False)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["bits"] > 7.0
    assert np.mean([entry["bits"] for entry in log[-10:]]) < 1.0


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"tbptt_samples": 40}, "multiple of the top frame size 16"),
        ({"segment_seconds": 0.001}, "at least one chunk of 32 samples"),
        ({"config": "huge"}, "--config: expected one of"),
        ({"gradient_clip": 0.0}, "--gradient-clip"),
    ],
)
def test_bad_settings(sine, given, message):
    with pytest.raises(ValueError, match=message):
        settings_of(sine, 1, **given)
