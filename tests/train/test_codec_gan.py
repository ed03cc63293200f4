"""`bench train encodec|hificodec`, the codec GAN solver under the training loop: losses
fall, checkpoints describe themselves, a resumed run continues exactly as an uninterrupted one,
and two `torchrun` workers train one model together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from bench.codecs.checkpoint import load_checkpoint
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.encodec.model import EncodecConfig, EncodecModel
from helpers import write_tone

from bench.cli import EXIT_OK, EXIT_USAGE, main
from bench.data import DatasetError
from bench.registry import DISCRIMINATORS
from bench.train.data import SegmentSampler
from bench.train.loop import train
from bench.train.losses import MultiScaleMelLoss
from bench.train.settings import CodecTrainSettings, recipe_settings
from bench.train.solvers.codec_gan import (
    CodecGANSolver,
    discriminator_key,
    initialise_codebooks,
    training_n_qs,
)

LAST_CHECKPOINT = CodecGANSolver.last_checkpoint
LOG_FILE = CodecGANSolver.log_file
MODEL_CHECKPOINT = CodecGANSolver.model_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train_data")
    for index, frequency in enumerate((220.0, 330.0, 440.0, 550.0)):
        write_tone(folder / f"tone{index}.wav", seconds=0.6, sample_rate=24000, frequency=frequency)
    return f"folder:{folder}"


def settings_for(data: str, steps: int, codec: str = "encodec", **changes) -> CodecTrainSettings:
    """``bench train CODEC``'s settings (its recipe's defaults), small enough for a CPU test."""
    small = dict(batch_size=2, segment_seconds=0.25, discriminator_filters=4, checkpoint_every=2)
    return recipe_settings(codec, data=data, steps=steps, **{**small, **changes})


def weights(path):
    return load_checkpoint(path, "encodec").network("codec").state_dict


@pytest.mark.parametrize("warmup", [0, 2], ids=["paper", "quantizer-warmup"])
def test_resumed_run_equals_an_uninterrupted_one(data, tmp_path, warmup):
    """With a warm-up the split falls before the codebooks' k-means initialisation."""
    straight = train(
        settings_for(data, 4, quantizer_warmup_steps=warmup), tmp_path / "straight", progress=False
    )
    train(settings_for(data, 2, quantizer_warmup_steps=warmup), tmp_path / "split", progress=False)
    resumed = train(
        settings_for(data, 4, quantizer_warmup_steps=warmup),
        tmp_path / "split",
        resume=True,
        progress=False,
    )
    first, second = weights(straight), weights(resumed)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    logs = [
        [json.loads(line) for line in (tmp_path / name / LOG_FILE).read_text().splitlines()]
        for name in ("straight", "split")
    ]
    assert [entry["frequency"] for entry in logs[0]] == [entry["frequency"] for entry in logs[1]]


def test_a_format_1_state_resumes_exactly(data, tmp_path):
    """A `last.pt` as format 1 wrote it (one network; the discriminator and optimisers in
    `extra_states`) continues to the weights of an uninterrupted run."""
    straight = train(settings_for(data, 4), tmp_path / "straight", progress=False)
    train(settings_for(data, 2), tmp_path / "split", progress=False)
    last = load_checkpoint(tmp_path / "split" / LAST_CHECKPOINT, "encodec")
    codec = last.network("codec")
    torch.save(
        {
            "format": "codec-bench checkpoint",
            "version": 1,
            "codec": "encodec",
            "config": {**codec.config, "extra": {}},
            "state_dict": codec.state_dict,
            "hash": codec.hash,
            "step": last.step,
            "extra_states": {
                **last.training_state,
                "discriminator": last.network("discriminator").state_dict,
            },
            "metadata": last.metadata,
            "versions": last.versions,
        },
        tmp_path / "split" / LAST_CHECKPOINT,
    )
    resumed = train(settings_for(data, 4), tmp_path / "split", resume=True, progress=False)
    first, second = weights(straight), weights(resumed)
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_checkpoints_describe_themselves_and_load_in_the_codec(data, tmp_path):
    model_path = train(settings_for(data, 2), tmp_path / "run", progress=False)
    checkpoint = load_checkpoint(model_path, "encodec")
    assert checkpoint.step == 2 and checkpoint.network("codec").config["name"] == "tiny"
    assert checkpoint.metadata["train_settings"]["discriminator_filters"] == 4
    assert checkpoint.versions["torch"] and len(checkpoint.network("codec").hash) == 64
    assert set(checkpoint.networks) == {"codec"} and checkpoint.training_state == {}, (
        "the exported model carries no discriminator or optimiser state"
    )
    last = load_checkpoint(tmp_path / "run" / LAST_CHECKPOINT, "encodec")
    assert set(last.networks) == {"codec", "discriminator"}
    assert set(last.training_state) == {"optimizer", "discriminator_optimizer", "balancer"}
    codec = EncodecCodec(checkpoint=str(model_path))
    audio = torch.zeros(1, 12000).uniform_(-0.1, 0.1)
    assert codec.decode(codec.encode(audio, 6.0)).shape == audio.shape
    assert (tmp_path / "run" / "train_log.png").stat().st_size > 10_000


def test_resume_refuses_other_settings_and_a_fresh_run_refuses_an_old_folder(data, tmp_path):
    train(settings_for(data, 1), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="only --steps may change"):
        train(settings_for(data, 2, balancer=False), tmp_path / "run", resume=True)
    with pytest.raises(ValueError, match="pass --resume"):
        train(settings_for(data, 2), tmp_path / "run")
    with pytest.raises(ValueError, match="expected .*last.pt"):
        train(settings_for(data, 2), tmp_path / "empty", resume=True)


@pytest.mark.parametrize(
    "changes",
    [
        {"balancer": False},
        {"discriminators": ()},
        {"discriminator_per_bandwidth": False},
        {"bandwidth_sampling": "uniform"},
    ],
)
def test_ablation_switches_train(data, tmp_path, changes):
    model_path = train(settings_for(data, 2, **changes), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / MODEL_CHECKPOINT) == model_path
    log = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    assert len(log) == 2
    assert all(len(entry["codes_used"]) == entry["n_q"] for entry in log)
    assert all(1 <= used <= 1024 for entry in log for used in entry["codes_used"])
    if not changes.get("discriminators", True):
        assert "adversarial" not in log[0] and "discriminator" not in log[0]


def test_only_the_batch_bandwidths_discriminator_learns(data, tmp_path):
    """The paper: one discriminator per bandwidth, only the batch's one updated."""
    settings = settings_for(data, 4, discriminator_probability=1.0)
    train(settings, tmp_path / "run", progress=False)
    before = CodecGANSolver(settings).discriminator.state_dict()
    after = load_checkpoint(tmp_path / "run" / LAST_CHECKPOINT, "encodec").network("discriminator")
    log = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    used = {f"n_q={entry['n_q']}" for entry in log}
    assert {key.split(".")[0] for key in before} == {"n_q=2", "n_q=4", "n_q=8", "n_q=16"}
    for key, value in before.items():
        changed = not torch.equal(value, after.state_dict[key])
        assert changed == (key.split(".")[0] in used), key


def test_quantizer_warmup_trains_an_autoencoder_then_initialises_the_codebooks(data, tmp_path):
    train(settings_for(data, 3, quantizer_warmup_steps=2), tmp_path / "run", progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    assert [entry["n_q"] for entry in log[:2]] == [0, 0]
    assert [entry["codes_used"] for entry in log[:2]] == [[], []]
    assert [entry["commitment"] for entry in log[:2]] == [0.0, 0.0]
    assert log[2]["n_q"] >= 2 and all(used >= 1 for used in log[2]["codes_used"])
    state = weights(tmp_path / "run" / MODEL_CHECKPOINT)
    assert state["quantizer.vq.layers.0._codebook.inited"].item() == 1.0


@pytest.mark.parametrize("weight_init", ["fan_in", "pytorch"])
def test_weight_init_decides_whether_the_untrained_encoder_sees_its_input(data, weight_init):
    """PyTorch's default init leaves the latent almost independent of the audio (the demo
    model's first run collapsed from it); the fan-in init keeps the signal."""
    model = CodecGANSolver(settings_for(data, 1, weight_init=weight_init)).model
    audio = SegmentSampler(data, 24000, 1, 0.25).batch(seed=1, step=0, batch_size=2)
    with torch.no_grad():
        latent = model.encoder(audio)
        silent = model.encoder(torch.zeros_like(audio))
    # How much of the latent's spread comes from the audio; measured 0.99 and 0.004.
    share = ((latent - silent).std() / latent.std()).item()
    assert share > 0.5 if weight_init == "fan_in" else share < 0.05


def test_two_torchrun_workers_train_one_model(data, tmp_path):
    """The distributed path: two CPU workers over Gloo, one backward per forward (which DDP
    enforces), rank 0 alone writing the log and the checkpoints."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "bench.cli",
        "train",
        "encodec",
        "--data",
        data,
        "--steps",
        "2",
        "--out",
        str(tmp_path / "run"),
        "--batch-size",
        "2",
        "--segment-seconds",
        "0.25",
        "--discriminator-filters",
        "4",
        "--checkpoint-every",
        "1",
        "--quiet",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, env=environment)
    assert finished.returncode == 0, finished.stderr[-3000:]
    checkpoint = load_checkpoint(tmp_path / "run" / MODEL_CHECKPOINT, "encodec")
    assert checkpoint.step == 2 and checkpoint.metadata["workers"] == 2
    log = (tmp_path / "run" / LOG_FILE).read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2]


def test_reconstruction_improves_with_training(data, tmp_path):
    """The model after 40 steps reconstructs a held batch better than after 1 step."""
    settings = settings_for(data, 1, discriminators=(), checkpoint_every=40)
    early = train(settings, tmp_path / "early", progress=False)
    train(settings, tmp_path / "late", progress=False)
    late = train(replace(settings, steps=40), tmp_path / "late", resume=True, progress=False)
    batch = SegmentSampler(data, 24000, 1, 0.25).batch(seed=99, step=0, batch_size=4)
    mel = MultiScaleMelLoss(24000)

    def loss(path) -> float:
        network = load_checkpoint(path, "encodec").network("codec")
        model = EncodecModel(EncodecConfig.from_json(network.config)).eval()
        model.load_state_dict(network.state_dict)
        with torch.no_grad():
            return mel(batch, model(batch, 8).audio).item()

    # Deterministic (seeded); measured 0.00175 against 0.00208 after 1 step.
    assert loss(late) < 0.9 * loss(early)


def test_sampler_is_a_function_of_seed_and_step(data):
    sampler = SegmentSampler(data, 24000, 1, 0.25)
    assert torch.equal(sampler.batch(0, 5, 3), sampler.batch(0, 5, 3))
    assert not torch.equal(sampler.batch(0, 5, 3), sampler.batch(0, 6, 3))
    assert sampler.batch(0, 5, 3).shape == (3, 1, 6000)


def test_a_file_too_short_to_use_is_skipped_naming_it(tmp_path, capsys):
    """A 0.2 s file once aborted `bench train` with "too short" and no file name."""
    write_tone(tmp_path / "long.wav", seconds=0.6, sample_rate=24000)
    short = write_tone(tmp_path / "short.wav", seconds=0.2, sample_rate=24000)
    sampler = SegmentSampler(f"folder:{tmp_path}", 24000, 1, 0.25)
    assert len(sampler.clips) == 1
    assert sampler.skipped == [f"{short}: too short: 0.200 s, expected at least 0.25 s"]
    assert f"note: training data: skipped {short}: too short" in capsys.readouterr().out
    (tmp_path / "long.wav").unlink()
    with pytest.raises(DatasetError, match=f"no usable item; skipped: {short}: too short"):
        SegmentSampler(f"folder:{tmp_path}", 24000, 1, 0.25)


def test_cli_train_and_bad_settings(data, tmp_path, capsys):
    arguments = ["train", "encodec", "--data", data, "--steps", "1", "--out", str(tmp_path / "run")]
    small = ["--batch-size", "2", "--segment-seconds", "0.25", "--discriminator-filters", "4"]
    assert main([*arguments, *small, "--quiet"]) == EXIT_OK
    assert "model:" in capsys.readouterr().out
    assert main([*arguments, "--config", "huge", "--quiet"]) == EXIT_USAGE
    assert "--config: expected one of" in capsys.readouterr().err
    assert main([*arguments, "--weights", "time=0.1,loud=3", "--quiet"]) == EXIT_USAGE
    assert main([*arguments, "--discriminators", "wavegan", "--quiet"]) == EXIT_USAGE
    assert "--discriminators: expected some of mpd, msd, msstft" in capsys.readouterr().err
    assert main([*arguments, "--quantizer", "grvq", "--quiet"]) == EXIT_USAGE
    assert "--quantizer: expected one of rvq for encodec tiny" in capsys.readouterr().err
    assert main([*arguments, "--frequency-loss", "log", "--quiet"]) == EXIT_USAGE
    assert "--frequency-loss: expected one of" in capsys.readouterr().err
    assert main([*arguments, "--weight-init", "xavier", "--quiet"]) == EXIT_USAGE
    assert main([*arguments, "--quantizer-warmup-steps", "-1", "--quiet"]) == EXIT_USAGE
    # Once a ZeroDivisionError at the first step (exit 1).
    assert main([*arguments, "--checkpoint-every", "0", "--quiet"]) == EXIT_USAGE
    assert "expected --checkpoint-every >= 1" in capsys.readouterr().err


def test_one_hificodec_step_moves_the_generator_and_every_discriminator(data):
    """HiFi-Codec trains against MS-STFT, MPD and MSD together (its default): one step with a
    discriminator update changes every parameter of the generator and of all three."""
    settings = settings_for(data, 1, codec="hificodec", discriminator_probability=1.0)
    assert settings.discriminators == ("msstft", "mpd", "msd")
    assert settings.quantizer == "grvq"
    solver = CodecGANSolver(settings)
    before = {
        "generator": {k: v.clone() for k, v in solver.model.named_parameters()},
        **{
            f"{key}/{family}": {k: v.clone() for k, v in module.named_parameters()}
            for key, combined in solver.discriminator.items()
            for family, module in zip(settings.discriminators, combined.discriminators, strict=True)
        },
    }
    batch = SegmentSampler(data, 24000, 1, 0.25).batch(seed=0, step=0, batch_size=2)
    initialise_codebooks(solver.model, batch, seed=0, training_batch_size=2)
    log = solver.train_on_batch(batch, step=0)
    key = discriminator_key(settings, solver.model.config, log["n_q"])
    modules = {"generator": solver.model} | {
        f"{key}/{family}": module
        for family, module in zip(
            settings.discriminators, solver.discriminator[key].discriminators, strict=True
        )
    }
    for name, module in modules.items():
        unchanged = [
            parameter
            for parameter, value in module.named_parameters()
            if torch.equal(value, before[name][parameter])
        ]
        assert not unchanged, f"{name}: {unchanged}"
    assert log["n_q"] % 2 == 0 and len(log["codes_used"]) == log["n_q"]


def test_hificodec_quantizer_switch_keeps_the_bitrates(data):
    """The quantizer ablation: --quantizer rvq is the same model with one group, the same
    codebook count at every bitrate, and a configuration named apart."""
    grvq = CodecGANSolver(settings_for(data, 1, codec="hificodec", discriminators=())).model
    rvq = CodecGANSolver(
        settings_for(data, 1, codec="hificodec", quantizer="rvq", discriminators=())
    ).model
    assert type(grvq.quantizer).__name__ == "GroupResidualVectorQuantizer"
    assert type(rvq.quantizer).__name__ == "ResidualVectorQuantizer"
    assert (grvq.config.name, rvq.config.name) == ("tiny", "tiny-rvq")
    for bandwidth in (1.5, 3.0, 6.0):
        assert grvq.n_q_for(bandwidth) == rvq.n_q_for(bandwidth)
    assert grvq.quantizer_levels(4) == 2 and rvq.quantizer_levels(4) == 4
    with pytest.raises(ValueError, match="multiple of 2"):
        grvq.quantizer_levels(3)
    # Uniform sampling draws whole levels per group.
    uniform = settings_for(data, 1, codec="hificodec", bandwidth_sampling="uniform")
    assert training_n_qs(uniform, grvq.config) == [2, 4, 6, 8]
    with pytest.raises(ValueError, match="expected one of 24khz, 16khz, tiny for hificodec"):
        settings_for(data, 1, codec="hificodec", config="48khz")


def test_narrowed_hificodec_discriminators_match_the_msstft_size():
    """The paper narrows MPD and MSD to the MS-STFT discriminator's parameter count."""
    sizes = {
        name: sum(
            parameter.numel()
            for parameter in DISCRIMINATORS.create(name, channels=1, filters=32).parameters()
        )
        for name in DISCRIMINATORS.names()
    }
    for name in ("mpd", "msd"):
        assert 0.7 < sizes[name] / sizes["msstft"] < 1.4, sizes
