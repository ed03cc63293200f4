"""`bench train lm`, the entropy-LM solver under the training loop: the LM learns, ships inside
the codec checkpoint, codes audio losslessly in fewer bytes than bit packing, and resumes
exactly."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from bench.codecs.bitstream import unpack
from bench.codecs.checkpoint import Checkpoint, Network, load_checkpoint
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.encodec.entropy import decode_codes
from bench.codecs.encodec.model import CONFIGS, EncodecModel
from helpers import write_tone

from bench.cli import EXIT_OK, EXIT_USAGE, main
from bench.train.data import SegmentSampler
from bench.train.loop import train
from bench.train.settings import LMTrainSettings
from bench.train.solvers.entropy_lm import EntropyLMSolver

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = CONFIGS["tiny"]
LM_LAST_CHECKPOINT = EntropyLMSolver.last_checkpoint
LM_LOG_FILE = EntropyLMSolver.log_file


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("lm_data")
    for index, frequency in enumerate((220.0, 330.0, 440.0, 550.0)):
        write_tone(folder / f"tone{index}.wav", seconds=1.0, sample_rate=24000, frequency=frequency)
    return f"folder:{folder}"


@pytest.fixture(scope="module")
def sampler(data) -> SegmentSampler:
    return SegmentSampler(data, 24000, 1, 0.5)


@pytest.fixture(scope="module")
def codec_checkpoint(sampler, tmp_path_factory) -> str:
    """A random tiny codec whose codebooks one training pass k-means-initialised."""
    torch.manual_seed(0)
    model = EncodecModel(TINY).train()
    with torch.no_grad():
        model(sampler.batch(0, 0, 8, stream=1), TINY.n_q)
    path = tmp_path_factory.mktemp("codec") / "model.pt"
    network = Network(TINY.to_json(), model.state_dict())
    Checkpoint(codec="encodec", networks={"codec": network}).save(path)
    return str(path)


def settings_for(checkpoint: str, data: str, steps: int, **changes) -> LMTrainSettings:
    return replace(
        LMTrainSettings(
            checkpoint=checkpoint,
            data=data,
            steps=steps,
            batch_size=4,
            segment_seconds=0.5,
            context_seconds=0.2,
            dim=32,
            num_heads=4,
            num_layers=1,
            learning_rate=3e-3,
            checkpoint_every=100,
        ),
        **changes,
    )


def read_log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LM_LOG_FILE).read_text().splitlines()]


def test_the_lm_learns_a_repeated_pattern_of_codes(codec_checkpoint):
    """Codes repeating every 3 frames: from log2(1024) = 10 bits per code to almost none."""
    solver = EntropyLMSolver(settings_for(codec_checkpoint, "unused", 1))
    pattern = torch.randint(1024, (1, TINY.n_q, 3), generator=torch.Generator().manual_seed(1))
    codes = pattern.repeat(4, 1, 14)  # (4, 16, 42): longer than the 15-frame window
    logs = [solver.train_on_codes(codes, step) for step in range(40)]
    assert logs[0]["bits_per_code"] > 0.9 * math.log2(1024)
    # Measured 10.4 at the first step, 1.31 after 40 steps.
    assert logs[-1]["bits_per_code"] < 2.5
    assert set(logs[-1]["kbps"]) == {"1.5", "3", "6", "12"}


def test_trained_lm_ships_in_the_checkpoint_and_codes_losslessly_in_fewer_bytes(
    codec_checkpoint, data, sampler, tmp_path
):
    run = tmp_path / "run"
    model_path = train(
        settings_for(codec_checkpoint, data, 40), run, progress=False, sampler=sampler
    )
    log = read_log(run)
    assert [entry["step"] for entry in log] == list(range(1, 41))
    assert log[0]["bits_per_code"] > 0.9 * math.log2(1024)
    assert log[-1]["bits_per_code"] < 0.5 * math.log2(1024)
    # Measured 10.2 bits per code at the first step, 1.7 after 40 (0.8 kbps at 1.5 nominal).
    assert log[-1]["kbps"]["12"] < 12.0 and log[-1]["kbps"]["1.5"] < 1.5

    checkpoint = load_checkpoint(model_path, "encodec")
    assert checkpoint.network("lm").config["past_context"] == 15
    assert checkpoint.metadata["lm_training"]["steps"] == 40
    codec_network = load_checkpoint(codec_checkpoint, "encodec").network("codec")
    assert checkpoint.network("codec").hash == codec_network.hash

    plain = EncodecCodec(checkpoint=codec_checkpoint)
    coded = EncodecCodec(checkpoint=model_path, entropy_coding=True)
    audio = sampler.clips[1]  # a training item, whole: (1, 24000)
    for kbps in (1.5, 12.0):
        packed, entropy_coded = plain.encode(audio, kbps), coded.encode(audio, kbps)
        assert torch.equal(entropy_coded.codes, packed.codes)
        n_q, frames = packed.codes.shape
        (body,) = unpack(entropy_coded.payload).frames
        assert torch.equal(decode_codes(coded.lm, body, n_q, frames), packed.codes)
        assert torch.equal(coded.decode(entropy_coded), plain.decode(packed))
        assert len(entropy_coded.payload) < len(packed.payload)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    codec_checkpoint, data, sampler, tmp_path
):
    settings = settings_for(codec_checkpoint, data, 6, checkpoint_every=3)
    straight = train(settings, tmp_path / "straight", progress=False, sampler=sampler)
    train(replace(settings, steps=3), tmp_path / "split", progress=False, sampler=sampler)
    resumed = train(settings, tmp_path / "split", resume=True, progress=False, sampler=sampler)
    first = load_checkpoint(straight, "encodec").network("lm").state_dict
    second = load_checkpoint(resumed, "encodec").network("lm").state_dict
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    losses = [
        [entry["loss"] for entry in read_log(tmp_path / name)] for name in ("straight", "split")
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 6

    with pytest.raises(ValueError, match="only --steps may change"):
        train(replace(settings, dim=64), tmp_path / "split", resume=True, sampler=sampler)
    with pytest.raises(ValueError, match="pass --resume"):
        train(settings, tmp_path / "split", sampler=sampler)
    with pytest.raises(ValueError, match="expected .*lm_last.pt"):
        train(settings, tmp_path / "empty", resume=True, sampler=sampler)


def test_cli_trains_the_lm_and_refuses_bad_input(codec_checkpoint, data, tmp_path, capsys):
    base = ["train", "lm", "--data", data, "--steps", "2", "--quiet"]
    small = ["--batch-size", "2", "--segment-seconds", "0.5", "--lm-context-seconds", "0.2"]
    lm_size = ["--lm-dim", "16", "--lm-layers", "1", "--lm-heads", "2"]
    run = ["--out", str(tmp_path / "run"), "--checkpoint", codec_checkpoint]
    assert main([*base, *run, *small, *lm_size]) == EXIT_OK
    assert "model: " in capsys.readouterr().out

    empty = tmp_path / "empty.pt"
    Checkpoint(codec="encodec", networks={"codec": Network(TINY.to_json(), {})}).save(empty)
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("not a checkpoint")
    cases = [
        (["--checkpoint", str(empty)], "holds no codec weights"),
        (["--checkpoint", str(not_a_checkpoint)], "expected a codec checkpoint written by"),
        (
            ["--checkpoint", str(tmp_path / "run" / LM_LAST_CHECKPOINT)],
            "expected the checkpoint of a codec with entropy coding (a registered codec that "
            "takes entropy_coding and declares its lm_class), got a 'encodec-lm' checkpoint",
        ),
        (
            ["--checkpoint", codec_checkpoint, "--segment-seconds", "0.1"],
            "--segment-seconds 0.1 gives 8 frames",
        ),
        (["--checkpoint", codec_checkpoint, "--lm-dim", "30"], "divisible by num_heads"),
    ]
    for extra, message in cases:
        assert main([*base, "--out", str(tmp_path / "bad"), *extra]) == EXIT_USAGE, extra
        assert message in capsys.readouterr().err, extra
    # The codec's options are not the LM's, and the LM needs its codec.
    for extra, message in [
        (
            ["--checkpoint", codec_checkpoint, "--config", "24khz"],
            "unrecognized arguments: --config",
        ),
        ([], "the following arguments are required: --checkpoint"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main([*base, "--out", str(tmp_path / "bad"), *extra])
        assert exit_info.value.code == EXIT_USAGE
        assert message in capsys.readouterr().err, extra


def test_several_workers_are_refused(codec_checkpoint):
    """A step runs one LM forward per bandwidth before its backward, which DDP does not
    allow; under torchrun the LM solver says so instead of training each worker alone."""
    solver = EntropyLMSolver(settings_for(codec_checkpoint, "unused", 1))
    with pytest.raises(ValueError, match="expected one worker, got 2"):
        solver.wrap_for_workers(rank=0, world_size=2)
