"""EnCodec as a benchmark codec: faithfulness to the official encodec package through official
checkpoints, and on the tiny configuration its own invariants (every payload byte accounted for,
checkpoint and bitstream errors, entropy coding that leaves the codes unchanged). Round trip,
input checks, bitrate accounting and determinism are the codec contract's (test_contract.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from bench.codecs.bitstream import BitstreamError, pack, unpack
from bench.codecs.checkpoint import Checkpoint, CheckpointError, Network
from bench.codecs.encodec.codec import DEMO_NOTE, EncodecCodec
from bench.codecs.encodec.entropy import EntropyLM, encode_codes
from bench.codecs.encodec.model import CONFIGS, EncodecModel
from helpers import assert_codes_equal_up_to_near_ties, official_codebooks, official_encodec

from bench.cli import EXIT_OK, EXIT_USAGE, main

TINY = CONFIGS["tiny"]
# A small LM on the real architecture: coding speed, not compression, matters here.
LM_CONFIG = {
    "n_q": TINY.n_q,
    "card": TINY.bins,
    "dim": 32,
    "num_heads": 4,
    "num_layers": 2,
    "past_context": 16,
}

pytestmark = pytest.mark.usefixtures("single_thread")


def signal(channels: int, samples: int, sample_rate: int, seed: int = 0) -> torch.Tensor:
    """A chord with noise, ``(channels, samples)``: deterministic, and not silence."""
    generator = torch.Generator().manual_seed(seed)
    time = torch.arange(samples) / sample_rate
    chord = sum(0.1 * torch.sin(2 * math.pi * f * time) for f in (220.0, 330.0, 495.0))
    noise = 0.05 * torch.randn(channels, samples, generator=generator)
    # Stereo channels differ (one louder), so a swapped or averaged channel would show.
    gains = torch.linspace(1.0, 0.6, channels).unsqueeze(1)
    return (gains * chord + noise).to(torch.float32)


def save_checkpoint(path: Path, model: EncodecModel, lm: Network | None = None, **fields) -> Path:
    """``model`` as network "codec", and ``lm`` as network "lm" if given."""
    networks = {"codec": Network(model.config.to_json(), model.state_dict())}
    # versions as plain strings: torch.__version__ (Checkpoint's default) is a TorchVersion,
    # which torch.load(weights_only=True) refuses.
    Checkpoint(
        codec=fields.pop("codec", "encodec"),
        networks=networks if lm is None else {**networks, "lm": lm},
        versions={"torch": str(torch.__version__)},
        **fields,
    ).save(path)
    return path


# --- the official encodec package ---


def seeded_official_model(name: str, seed: int) -> torch.nn.Module:
    """An official random-init model with perturbed weights and seeded codebooks.

    Perturbing breaks the symmetries of a fresh model (weight_g = |weight_v|, identity group
    norm affines) that would hide a dropped or swapped tensor. Each codebook is drawn with the
    per-dimension mean and spread of a seeded signal's residual at its depth, so that codes vary
    at every depth (the official k-means, 50 iterations per codebook, would take minutes).
    """
    encodec = official_encodec()
    torch.manual_seed(seed)  # the official initialisation draws from the global generator
    with warnings.catch_warnings():  # the official code uses the deprecated weight_norm
        warnings.simplefilter("ignore")
        model = getattr(encodec.EncodecModel, f"encodec_model_{name}")(pretrained=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
        audio = signal(model.channels, model.sample_rate, model.sample_rate, seed)
        if model.normalize:
            audio = audio / audio.mean(dim=0).pow(2).mean().sqrt()
        residual = model.encoder(audio[None])[0].T  # (frames, dimension)
        for layer in model.quantizer.vq.layers:
            codebook = layer._codebook
            noise = torch.randn(codebook.embed.shape, generator=generator)
            codebook.embed.copy_(residual.mean(dim=0) + 0.5 * residual.std(dim=0) * noise)
            codebook.cluster_size.fill_(10.0)
            codebook.embed_avg.copy_(codebook.embed * 10.0)
            codebook.inited.fill_(1.0)
            nearest = torch.cdist(residual, codebook.embed).argmin(dim=1)
            residual = residual - codebook.embed[nearest]
    return model.eval()


def saved_official_model(name: str, seed: int, folder: Path) -> tuple[torch.nn.Module, Path]:
    """``seeded_official_model`` and its state dict saved in ``folder`` as the official
    releases are (a bare state dict)."""
    model = seeded_official_model(name, seed)
    path = folder / f"random_{name}.th"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def official_24khz(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    return saved_official_model("24khz", 1, tmp_path_factory.mktemp("official"))


@pytest.fixture(scope="module")
def official_48khz(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    return saved_official_model("48khz", 2, tmp_path_factory.mktemp("official"))


def official_latents(official, audio: torch.Tensor, frames: list) -> torch.Tensor:
    """The official encoder's latents ``(frames, dimension)`` for the segments it coded, each
    segment normalised by the scale the official ``encode`` returned with it."""
    length = audio.shape[-1]
    segment = official.segment_length or length
    stride = official.segment_stride or length
    latents = []
    with torch.no_grad():
        for offset, (_, scale) in zip(range(0, length, stride), frames, strict=True):
            chunk = audio[None, :, offset : offset + segment]
            if scale is not None:
                chunk = chunk / scale.view(-1, 1, 1)
            latents.append(official.encoder(chunk)[0].T)
    return torch.cat(latents)


def assert_matches_official(official, codec: EncodecCodec, audio: torch.Tensor, kbps: float):
    official.set_target_bandwidth(kbps)
    with torch.no_grad():
        frames = official.encode(audio[None])
        expected_audio = official.decode(frames)[0, :, : audio.shape[-1]]
    encoded = codec.encode(audio, kbps)
    expected_codes = torch.cat([codes[0] for codes, _ in frames], dim=-1)
    assert all(len(set(row.tolist())) > 10 for row in expected_codes)  # the codes vary
    assert_codes_equal_up_to_near_ties(
        encoded.codes,
        expected_codes,
        official_latents(official, audio, frames),
        official_codebooks(official.quantizer.vq),
    )
    decoded = codec.decode(encoded)
    assert decoded.abs().max() > 1e-3
    torch.testing.assert_close(decoded, expected_audio, atol=1e-4, rtol=0)


def test_official_24khz_checkpoint_gives_the_official_codes_and_audio(official_24khz):
    official, path = official_24khz
    codec = EncodecCodec(checkpoint=path)
    assert codec.describe()["config"] == "24khz" and codec.checkpoint_kind == "official"
    assert (codec.sample_rate, codec.channels, codec.frame_rate) == (24000, 1, 75)
    assert (codec.num_codebooks, codec.codebook_size) == (32, 1024)
    assert codec.bitrates == (1.5, 3.0, 6.0, 12.0, 24.0)
    audio = signal(1, 24000 + 123, 24000)
    for kbps in (6.0, 24.0):
        assert_matches_official(official, codec, audio, kbps)


def test_official_48khz_checkpoint_gives_the_official_codes_and_audio(official_48khz):
    official, path = official_48khz
    codec = EncodecCodec(checkpoint=path)
    assert codec.describe()["config"] == "48khz"
    assert (codec.sample_rate, codec.channels, codec.frame_rate) == (48000, 2, 150)
    assert (codec.num_codebooks, codec.codebook_size) == (16, 1024)
    # 2.3 s: three overlapping 1 s segments, the last one short.
    audio = signal(2, int(2.3 * 48000), 48000)
    assert codec.segment_frames(audio.shape[-1]) == [150, 150, 48]
    for kbps in (6.0, 12.0):
        assert_matches_official(official, codec, audio, kbps)


def test_official_release_names_are_checked_against_the_file_hash(official_24khz, tmp_path):
    _, path = official_24khz
    wrong = tmp_path / "encodec_24khz-00000000.th"
    shutil.copy(path, wrong)
    with pytest.raises(CheckpointError, match="SHA-256"):
        EncodecCodec(checkpoint=wrong)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    release = tmp_path / f"encodec_24khz-{digest}.th"
    shutil.copy(path, release)
    assert "release weights" in EncodecCodec(checkpoint=release).describe()["model_note"]
    mislabelled = tmp_path / f"encodec_48khz-{digest}.th"
    shutil.copy(path, mislabelled)
    with pytest.raises(CheckpointError, match="48 kHz release"):
        EncodecCodec(checkpoint=mislabelled)


def test_official_checkpoint_has_no_lm(official_24khz):
    with pytest.raises(ValueError, match="no entropy-coding LM.*bench train"):
        EncodecCodec(checkpoint=official_24khz[1], entropy_coding=True)


# --- the tiny configuration ---


@pytest.fixture(scope="module")
def tiny_model() -> EncodecModel:
    """The tiny model at random init, its codebooks set by one training pass (k-means)."""
    torch.manual_seed(0)
    model = EncodecModel(TINY)
    batch = torch.stack([signal(1, 12000, 24000, seed) for seed in range(4)])
    model.train()
    with torch.no_grad():
        model(batch, TINY.n_q)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_lm() -> EntropyLM:
    torch.manual_seed(0)
    return EntropyLM(**LM_CONFIG).eval()


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_model, tiny_lm, tmp_path_factory) -> Path:
    """A codec-bench checkpoint with the model and an entropy-coding LM."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    return save_checkpoint(
        path,
        tiny_model,
        lm=Network(LM_CONFIG, tiny_lm.state_dict()),
    )


@pytest.fixture(scope="module")
def codec(tiny_checkpoint) -> EncodecCodec:
    return EncodecCodec(checkpoint=tiny_checkpoint)


@pytest.fixture(scope="module")
def entropy_codec(tiny_checkpoint) -> EncodecCodec:
    return EncodecCodec(checkpoint=tiny_checkpoint, entropy_coding=True)


def expected_payload_bytes(codec: EncodecCodec, encoded, n_q: int) -> int:
    """Header, then per segment a length prefix, a 4-byte scale if normalised and the codes."""
    header = unpack(encoded.payload).header
    total = len(pack(header, []))
    for frames in codec.segment_frames(encoded.num_samples):
        body = math.ceil(n_q * frames * codec.bits_per_code / 8) + 4 * codec.config.normalize
        total += len(pack({}, [bytes(body)])) - len(pack({}, []))
    return total


@pytest.mark.parametrize("samples", [12000, 12001, 1])
def test_payload_counts_every_byte(codec, samples):
    audio = signal(1, samples, 24000)
    for kbps in codec.bitrates:
        encoded = codec.encode(audio, kbps)
        n_q = codec.model.n_q_for(kbps)
        frames = math.ceil(samples / 320)
        assert encoded.codes.shape == (n_q, frames)
        assert encoded.nominal_kbps == kbps and encoded.num_samples == samples
        assert len(encoded.payload) == expected_payload_bytes(codec, encoded, n_q)
        assert unpack(encoded.payload).header == {
            "codec": "encodec",
            "config": "tiny",
            "entropy_coded": False,
            "n_q": n_q,
        }


def test_actual_bitrate_is_the_nominal_plus_the_container(codec, capsys):
    audio = signal(1, 3 * 24000, 24000)
    lines = []
    for kbps in codec.bitrates:
        encoded = codec.encode(audio, kbps)
        header = len(pack(unpack(encoded.payload).header, []))
        lines.append(
            f"{kbps:g} kbps: {len(encoded.payload)} bytes ({header} header), "
            f"{encoded.actual_kbps:.3f} kbps (+{100 * (encoded.actual_kbps / kbps - 1):.1f} %)"
        )
    assert codec.encode(audio, 6.0).actual_kbps / 6.0 - 1 < 0.04
    with capsys.disabled():
        print("\nEnCodec tiny, 3 s:", "; ".join(lines))


def test_payload_of_another_config_or_codec_is_refused(codec):
    encoded = codec.encode(signal(1, 2400, 24000), 3.0)
    bitstream = unpack(encoded.payload)

    def with_header(**changes):
        payload = pack({**bitstream.header, **changes}, bitstream.frames)
        return type(encoded)(payload, encoded.num_samples, encoded.sample_rate, 3.0)

    with pytest.raises(ValueError, match="expected a bitstream of EnCodec tiny.*'24khz'"):
        codec.decode(with_header(config="24khz"))
    with pytest.raises(ValueError, match="got codec 'opus'"):
        codec.decode(with_header(codec="opus"))
    with pytest.raises(ValueError, match="entropy-coded"):
        codec.decode(with_header(entropy_coded=True))
    with pytest.raises(BitstreamError, match="n_q"):
        codec.decode(with_header(n_q=TINY.n_q + 1))
    not_an_object = pack([], bitstream.frames)
    with pytest.raises(BitstreamError, match="JSON object"):
        codec.decode(type(encoded)(not_an_object, encoded.num_samples, 24000, 3.0))
    with pytest.raises(BitstreamError, match="expected 1 segment"):
        codec.decode(type(encoded)(encoded.payload + b"\x00", encoded.num_samples, 24000, 3.0))


def test_describe_names_the_config_checkpoint_and_weights(codec, tiny_checkpoint, entropy_codec):
    info = codec.describe()
    assert info["config"] == "tiny" and info["model_config"]["n_filters"] == TINY.n_filters
    assert info["checkpoint"] == str(tiny_checkpoint) and info["checkpoint_kind"] == "user"
    assert "untrained random weights" in info["model_note"]
    assert "torch" in info["backend_versions"]
    assert info["entropy_coding"] is False and info["checkpoint_hash"] == codec.checkpoint_hash
    weights_hash = torch.load(tiny_checkpoint, weights_only=True)["networks"]["codec"]["hash"]
    assert codec.checkpoint_hash == weights_hash[:16]
    assert entropy_codec.checkpoint_hash.startswith(weights_hash[:16] + "+lm")


def test_demo_checkpoint_is_the_default(monkeypatch, tiny_checkpoint, tmp_path):
    missing = tmp_path / "checkpoints" / "encodec_tiny_demo.pt"
    monkeypatch.setattr(EncodecCodec, "demo_checkpoint", missing)
    with pytest.raises(CheckpointError, match="demo checkpoint is missing.*--checkpoint"):
        EncodecCodec()
    missing.parent.mkdir()
    shutil.copy(tiny_checkpoint, missing)
    demo = EncodecCodec()
    assert demo.checkpoint_kind == "demo" and demo.describe()["model_note"] == DEMO_NOTE


def test_bad_checkpoints_say_what_is_wrong(tiny_model, tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        EncodecCodec(checkpoint=tmp_path / "nothing.pt")
    wrong_codec = save_checkpoint(tmp_path / "other.pt", tiny_model, codec="hificodec")
    with pytest.raises(CheckpointError, match="expected a encodec checkpoint, got hificodec"):
        EncodecCodec(checkpoint=wrong_codec)
    tampered = tmp_path / "tampered.pt"
    contents = torch.load(tiny_checkpoint, weights_only=True)
    next(iter(contents["networks"]["codec"]["state_dict"].values())).add_(1e-3)
    torch.save(contents, tampered)
    with pytest.raises(CheckpointError, match="do not match the recorded hash"):
        EncodecCodec(checkpoint=tampered)
    not_torch = tmp_path / "noise.pt"
    not_torch.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        EncodecCodec(checkpoint=not_torch)
    # Our own model's raw state dict is neither format: the keys are not the official ones.
    raw = tmp_path / "raw.th"
    torch.save(tiny_model.state_dict(), raw)
    with pytest.raises(CheckpointError, match="official EnCodec state dict"):
        EncodecCodec(checkpoint=raw)


def test_entropy_coding_keeps_the_codes_and_counts_the_coded_bytes(codec, entropy_codec, tiny_lm):
    audio = signal(1, 12000, 24000, seed=3)
    for kbps in (1.5, 6.0):
        plain = codec.encode(audio, kbps)
        coded = entropy_codec.encode(audio, kbps)
        assert torch.equal(coded.codes, plain.codes)
        assert unpack(coded.payload).header["entropy_coded"] is True
        assert unpack(coded.payload).frames == [encode_codes(tiny_lm, plain.codes)]
        assert coded.actual_kbps == len(coded.payload) * 8 / 0.5 / 1000
        assert torch.equal(entropy_codec.decode(coded), codec.decode(plain))
        # Plain payloads still decode with an entropy-coding codec.
        assert torch.equal(entropy_codec.decode(plain), codec.decode(plain))


def test_entropy_coding_needs_an_lm(tiny_model, tmp_path):
    without_lm = save_checkpoint(tmp_path / "no_lm.pt", tiny_model)
    with pytest.raises(ValueError, match="no entropy-coding LM.*bench train lm --checkpoint"):
        EncodecCodec(checkpoint=without_lm, entropy_coding=True)
    mismatched = save_checkpoint(
        tmp_path / "small_lm.pt",
        tiny_model,
        lm=Network({**LM_CONFIG, "n_q": 2}, EntropyLM(**{**LM_CONFIG, "n_q": 2}).state_dict()),
    )
    with pytest.raises(CheckpointError, match="LM over 16 codebooks"):
        EncodecCodec(checkpoint=mismatched, entropy_coding=True)


# --- through the harness ---


def test_bench_run_takes_a_checkpoint_and_says_what_the_model_is(tmp_path, capsys):
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", EncodecModel(CONFIGS["tiny"]))
    arguments = [
        "run",
        "--codec",
        "encodec",
        "--bitrates",
        "1.5,6",
        "--checkpoint",
        str(checkpoint),
        "--items",
        "cards_001",
        "--metrics",
        "mel_distance,kbps_actual",
        "--workers",
        "1",
        "--no-cache",
        "--no-report",
        "--quiet",
        "--run-dir",
        str(tmp_path / "run"),
    ]
    assert main(arguments) == EXIT_OK
    printed = capsys.readouterr().out
    assert "note: encodec: a codec-bench checkpoint at step 0" in printed
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["settings"]["codec_options"] == {"encodec": {"checkpoint": str(checkpoint)}}
    assert config["codecs"]["encodec"]["checkpoint_kind"] == "user"
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").open()]
    kbps = {row["bitrate"]: row["value"] for row in rows if row["metric"] == "kbps_actual"}
    # cards_001 lasts 1.1 s: the ~72-byte header alone adds about 0.5 kbps.
    assert 1.9 < kbps[1.5] < 2.1 and 6.4 < kbps[6.0] < 6.7
    # --codec adds up, so the opus-only run is the same arguments with opus for encodec.
    opus_only = ["opus" if argument == "encodec" else argument for argument in arguments[:-1]]
    assert main([*opus_only, str(tmp_path / "run2")]) == EXIT_USAGE
    assert "--checkpoint: expected a codec that takes it" in capsys.readouterr().err
