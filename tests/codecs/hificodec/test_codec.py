"""HiFi-Codec as a benchmark codec: its configurations' bitrates, the group-residual model,
exact bitrate accounting, refused checkpoints and bitstreams, and on the shipped demo
checkpoint, quality that rises with the bitrate and `bench run` out of the box. Round trip,
input checks and determinism are the codec contract's (test_contract.py)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from bench.codecs.bitstream import pack, unpack
from bench.codecs.checkpoint import Checkpoint, CheckpointError, Network
from bench.codecs.hificodec.codec import DEMO_CHECKPOINT, HiFiCodecCodec
from bench.codecs.hificodec.model import CONFIGS, HiFiCodecModel
from bench.codecs.modules.grvq import GroupResidualVectorQuantizer
from bench.codecs.modules.rvq import ResidualVectorQuantizer, bandwidth_to_n_q

from bench import audio as bench_audio
from bench.cli import EXIT_OK, EXIT_USAGE, main
from bench.data import load_dataset
from bench.train.losses import MultiScaleMelLoss

pytestmark = pytest.mark.usefixtures("single_thread")


def signal(samples: int, seed: int = 0) -> torch.Tensor:
    """Band-limited noise at speech level, ``(1, samples)``."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, samples, generator=generator)
    return 0.1 * torch.nn.functional.avg_pool1d(noise[None], 5, 1, 2)[0]


@pytest.mark.parametrize(
    ("name", "levels"), [("24khz", {1.5: 1, 3.0: 2, 6.0: 4}), ("16khz", {2.0: 2}), ("tiny", {})]
)
def test_configurations_spend_exactly_their_bitrates(name, levels):
    """2 groups of 1024-word codebooks: at 75 Hz 1/2/4 levels per group are exactly 1.5/3/6
    kbps; the paper's 16 kHz model, 2 x 2 at 50 Hz, is 2 kbps."""
    config = CONFIGS[name]
    assert config.groups == 2 and config.bins == 1024 and config.hop_length == 320
    for bandwidth, per_group in levels.items():
        n_q = bandwidth_to_n_q(bandwidth, config.frame_rate, config.bins)
        assert n_q == config.groups * per_group
        assert n_q * config.frame_rate * math.log2(config.bins) == bandwidth * 1000
    assert set(levels) <= set(config.bandwidths)


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="cannot be split into 3 equal groups"):
        replace(CONFIGS["tiny"], groups=3)
    with pytest.raises(ValueError, match="4 groups cannot share equally"):
        replace(CONFIGS["tiny"], groups=4)  # 1.5 kbps is 2 codebooks
    with pytest.raises(ValueError, match="groups must be a positive int"):
        replace(CONFIGS["tiny"], groups=0)


@pytest.fixture(scope="module")
def tiny_model() -> HiFiCodecModel:
    """The tiny model at random init, its codebooks set by one training pass (k-means)."""
    torch.manual_seed(0)
    model = HiFiCodecModel(CONFIGS["tiny"])
    batch = torch.stack([signal(12000, seed) for seed in range(4)])
    model.train()
    with torch.no_grad():
        model(batch, model.config.n_q)
    return model.eval()


def save(path, model: HiFiCodecModel, step: int = 0):
    network = Network(model.config.to_json(), model.state_dict())
    Checkpoint(codec="hificodec", networks={"codec": network}, step=step).save(path)
    return path


@pytest.fixture(scope="module")
def codec(tiny_model, tmp_path_factory) -> HiFiCodecCodec:
    return HiFiCodecCodec(save(tmp_path_factory.mktemp("hifi") / "tiny.pt", tiny_model))


def test_the_model_quantizes_in_groups_and_one_group_is_rvq(tiny_model):
    assert isinstance(tiny_model.quantizer, GroupResidualVectorQuantizer)
    assert tiny_model.quantizer.groups == 2 and tiny_model.quantizer.n_q == 8
    single = HiFiCodecModel(replace(CONFIGS["tiny"], groups=1))
    assert isinstance(single.quantizer, ResidualVectorQuantizer) and single.quantizer.n_q == 8
    audio = signal(4800)[None]
    with torch.no_grad():
        codes = tiny_model.encode(audio, 3.0)[0].codes
        # Group-major: levels 0-1 of group 0 code the first 16 latent channels only.
        latent = tiny_model.encoder(audio)
        group_zero = tiny_model.quantizer.quantizers[0].encode(latent[:, :16], 2)
    assert codes.shape == (1, 4, 15)
    assert torch.equal(codes[0, :2], group_zero[:, 0])
    with pytest.raises(ValueError, match="multiple of 2, got n_q=3"):
        tiny_model(audio, 3)


@pytest.mark.parametrize("samples", [24000, 24001, 1])
def test_actual_bitrate_is_the_theoretical_rate_plus_the_header(codec, samples):
    """Every payload byte is accounted for: the header, then 10 bits per code."""
    audio = signal(samples)
    for kbps in codec.bitrates:
        encoded = codec.encode(audio, kbps)
        frames = math.ceil(samples / 320)
        n_q = round(kbps * 1000 / (75 * 10))
        header = unpack(encoded.payload).header
        assert header == {
            "codec": "hificodec",
            "config": "tiny",
            "entropy_coded": False,
            "n_q": n_q,
        }
        # The theoretical rate, 10 bits per code; the container adds the header and the
        # frame's length prefix, nothing else.
        codes_bytes = math.ceil(n_q * frames * 10 / 8)
        assert len(encoded.payload) == len(pack(header, [bytes(codes_bytes)]))
        if samples % 320 == 0:  # whole frames: the codes spend the nominal rate, to the byte
            assert 0 <= 8 * codes_bytes - kbps * 1000 * samples / 24000 < 8
        header_bits = 8 * (len(encoded.payload) - codes_bytes)
        assert encoded.actual_kbps == pytest.approx(
            (8 * codes_bytes + header_bits) * 24000 / samples / 1000
        )


def test_other_checkpoints_and_bitstreams_are_refused(tiny_model, codec, tmp_path):
    rvq = HiFiCodecModel(replace(CONFIGS["tiny"], groups=1, name="tiny-rvq"))
    rvq_codec = HiFiCodecCodec(save(tmp_path / "rvq.pt", rvq))
    with pytest.raises(ValueError, match="expected a bitstream of HiFi-Codec tiny-rvq"):
        rvq_codec.decode(codec.encode(signal(2400), 3.0))
    # An official AcademiCodec state dict: another architecture.
    torch.save({"generator": {"conv_pre.weight": torch.zeros(1)}}, tmp_path / "official.pth")
    with pytest.raises(CheckpointError, match="HiFi-GAN generator"):
        HiFiCodecCodec(tmp_path / "official.pth")
    Checkpoint(codec="encodec", networks={"codec": Network({}, {})}).save(tmp_path / "encodec.pt")
    with pytest.raises(CheckpointError, match="expected a hificodec checkpoint, got encodec"):
        HiFiCodecCodec(tmp_path / "encodec.pt")


# On the shipped demo checkpoint.


def held_out_speech(limit: int) -> list[torch.Tensor]:
    items = load_dataset("embedded", tags=("speech",), exclude_tags=("synthetic", "noisy")).items
    return [
        bench_audio.prepare(bench_audio.load_audio(item.path), 24000, 1)[0]
        for item in items[:limit]
    ]


def test_demo_quality_rises_with_the_bitrate():
    """Mel distance on held-out real speech falls at every step up the bitrate ladder."""
    demo = HiFiCodecCodec()
    assert demo.checkpoint_kind == "demo" and "not the paper's weights" in demo.model_note
    mel = MultiScaleMelLoss(24000)
    distances = {
        kbps: float(
            np.mean([mel(x[None], demo.decode(demo.encode(x, kbps))[None]).item() for x in speech])
        )
        for speech in [held_out_speech(4)]
        for kbps in demo.bitrates
    }
    assert distances[1.5] > distances[3.0] > distances[6.0], distances


def test_bench_run_hificodec_works_out_of_the_box(tmp_path, capsys):
    options = "--items cards_001 --metrics mel_distance,kbps_actual --workers 1 --no-cache"
    arguments = ["run", "--codec", "hificodec", "--bitrates", "1.5,3,6", *options.split()]
    arguments += ["--run-dir", str(tmp_path / "run")]
    assert main(arguments) == EXIT_OK
    printed = capsys.readouterr().out
    assert "not the paper's weights" in printed
    # The table: one row per bitrate.
    for kbps in ("1.5", "3", "6"):
        assert re.search(rf"\| hificodec +\| {kbps} +\|", printed), printed
    assert (tmp_path / "run" / "report" / "index.html").stat().st_size > 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["codecs"]["hificodec"]["checkpoint_kind"] == "demo"
    arguments[4] = "2"
    assert main([*arguments[:-1], str(tmp_path / "bad")]) == EXIT_USAGE
    assert "supported bitrates (kbps): 1.5, 3, 6" in capsys.readouterr().err


def test_the_card_records_where_the_official_code_differs():
    """Size and hash are checked with EnCodec's in test_packaging.py."""
    card = (DEMO_CHECKPOINT.parent / "MODEL_CARD.md").read_text()
    for difference in ("HiFi-GAN V1 generator", "least squares", "45 x mel", "resample(x, 16000)"):
        assert difference in card


def test_entropy_coding_is_neither_offered_nor_trainable(tmp_path, capsys):
    """HiFi-Codec once took `entropy_coding`, asked for an LM that `bench train` then refused
    to train for it; now it takes no such option, and both commands say so up front."""
    from bench.registry import codec_options

    assert set(codec_options("hificodec")) == {"checkpoint", "official_config"}
    with pytest.raises(TypeError, match="entropy_coding"):
        HiFiCodecCodec(entropy_coding=True)
    run = ["run", "--codec", "hificodec", "--entropy-coding", "--run-dir", str(tmp_path / "r")]
    assert main(run) == EXIT_USAGE
    assert "--entropy-coding: expected a codec that takes it" in capsys.readouterr().err
    train = ["train", "lm", "--checkpoint", str(DEMO_CHECKPOINT), "--data", "embedded"]
    assert main([*train, "--steps", "1", "--out", str(tmp_path / "lm")]) == EXIT_USAGE
    assert "got a 'hificodec' checkpoint" in capsys.readouterr().err
