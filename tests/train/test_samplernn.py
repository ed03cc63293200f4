"""SampleRNN's recipe through the training loop: truncated BPTT carries the tiers' state from
chunk to chunk and resets it at each new sequence, a resumed run (mid-sequence) ends as an
uninterrupted one, a tiny model overfits a sine to under 1 bit per sample, bad settings."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import soundfile
import torch
from bench.codecs.checkpoint import load_checkpoint
from bench.codecs.encodec.codec import DEMO_CHECKPOINT as ENCODEC_DEMO
from bench.codecs.samplernn.conditioning import conditioned_config

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


def decoder_settings(data: str, steps: int, **given):
    return settings_of(data, steps, codec_checkpoint=str(ENCODEC_DEMO), **given)


def test_a_decoders_chunks_read_the_latent_of_their_own_frames(sine):
    solver = SampleRnnSolver(decoder_settings(sine, 6))
    solver.use_data()
    assert solver.config.condition_dim == 32
    assert solver.config.condition_hop == pytest.approx(16_000 / 75)
    given = []
    solver.model.register_forward_pre_hook(
        lambda module, args, kwargs: given.append(args[1]), with_kwargs=True
    )
    logs = [solver.run_step(step) for step in range(6)]
    for sequence in (0, 1):
        data = solver.sequence_of(sequence)
        chunks = given[3 * sequence : 3 * sequence + 3]
        # Three chunks of 32 samples: two top frames each, in order, from the whole sequence.
        assert torch.equal(torch.cat(chunks, dim=1), data.condition)
        assert {log["kbps"] for log in logs[3 * sequence : 3 * sequence + 3]} == {data.bandwidth}
    # The drawn bitrate comes from the seed and the sequence: another solver draws the same.
    again = SampleRnnSolver(decoder_settings(sine, 6))
    again.use_data()
    assert again.sequence_of(1).bandwidth == solver.sequence_of(1).bandwidth
    assert torch.equal(again.sequence_of(1).condition, solver.sequence_of(1).condition)
    assert solver.conditioning.conditioned_config is conditioned_config  # the recipe's module


def test_a_decoder_exports_a_reference_to_its_encodec_and_resumes_only_on_it(sine, tmp_path):
    straight = train(decoder_settings(sine, 3), tmp_path / "straight", progress=False)
    train(decoder_settings(sine, 2), tmp_path / "resumed", progress=False)
    resumed = train(decoder_settings(sine, 3), tmp_path / "resumed", resume=True, progress=False)
    exported = load_checkpoint(resumed, "samplernn")
    assert exported.network("model").hash == load_checkpoint(straight).network("model").hash
    assert exported.network("tokenizer").reference is not None
    # Other EnCodec weights under the same path: the latent learnt so far means other things.
    encodec = shutil.copy(ENCODEC_DEMO, tmp_path / "encodec.pt")
    settings = settings_of(sine, 2, codec_checkpoint=str(encodec))
    train(settings, tmp_path / "moved", progress=False)
    other = load_checkpoint(encodec, "encodec")
    state = other.network("codec").state_dict
    state[next(iter(state))] += 1
    other.save(encodec)
    with pytest.raises(ValueError, match="conditioned on codec weights of hash"):
        train(replace(settings, steps=3), tmp_path / "moved", resume=True, progress=False)


def test_a_codec_checkpoint_that_cannot_condition_is_refused(sine, tmp_path):
    with pytest.raises(ValueError, match="--codec-checkpoint: .*no such file"):
        SampleRnnSolver(settings_of(sine, 1, codec_checkpoint=str(tmp_path / "absent.pt")))
