"""HiFi-Codec's officially released architecture (:mod:`bench.codecs.hificodec.official`): files
with the official key names and shapes load strictly under each release's name, each release
codes at its one bitrate and keeps any input length, every payload bit is accounted for, and
files that are not what they claim are refused with a reason.

Faithfulness to the official code itself (identical codes and waveforms) is checked by
``scripts/check_hificodec_official.py``, which needs an AcademiCodec checkout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from bench.codecs.bitstream import pack, unpack
from bench.codecs.checkpoint import CheckpointError
from bench.codecs.hificodec.codec import OFFICIAL_NOTE, HiFiCodecCodec
from bench.codecs.hificodec.model import CONFIGS
from bench.codecs.hificodec.official import OFFICIAL_CONFIGS, OfficialHiFiCodecConfig
from loopback import LoopbackServer, Served, use_catalogue

from bench import weights
from bench.cli import EXIT_OK, main

# What the official modules store, written out from their definitions: AcademiCodec commit
# b6ac134, academicodec/models/hificodec/models.py (Encoder, Generator, ResBlock1, Quantizer,
# Quantizer_module), with the numbers of egs/HiFi-Codec-*/config_*.json. Layers wrapped in
# torch.nn.utils.weight_norm (dim 0) store weight_g, shaped (weight.shape[0], 1, 1), and weight_v.
MRF_KERNELS = (3, 7, 11)  # resblock_kernel_sizes; each ResBlock1 has 3 dilations
CODE_GROUPS, CODES, LATENT = 2, 1024, 512  # n_code_groups, n_codes; the latent is hard-coded
RELEASE_SIZES = {  # upsample_rates, upsample_kernel_sizes
    "official-16k-320d": ((8, 5, 4, 2), (16, 11, 8, 4)),
    "official-24k-320d": ((8, 5, 4, 2), (16, 11, 8, 4)),
    "official-24k-240d": ((8, 5, 3, 2), (16, 11, 7, 4)),
}
RELEASE_FILES = {
    "HiFi-Codec-16k-320d": "official-16k-320d",
    "HiFi-Codec-16k-320d-large-universal": "official-16k-320d",
    "HiFi-Codec-24k-320d": "official-24k-320d",
    "HiFi-Codec-24k-240d": "official-24k-240d",
}
KBPS = {"official-16k-320d": 2.0, "official-24k-320d": 3.0, "official-24k-240d": 4.0}
Shapes = dict[str, dict[str, tuple[int, ...]]]


def weight_normed(name: str, out: int, inp: int, kernel: int, transposed: bool = False) -> dict:
    """A weight-normed Conv1d (weight (out, in, k)) or ConvTranspose1d (weight (in, out, k))."""
    weight = (inp, out, kernel) if transposed else (out, inp, kernel)
    return {
        f"{name}.weight_g": (weight[0], 1, 1),
        f"{name}.weight_v": weight,
        f"{name}.bias": (out,),
    }


def res_block(name: str, channels: int, kernel: int) -> dict:
    """ResBlock1: convs1 (3 dilated) and convs2 (3 plain), all weight-normed."""
    shapes = {}
    for index in range(3):
        for convs in ("convs1", "convs2"):
            shapes |= weight_normed(f"{name}.{convs}.{index}", channels, channels, kernel)
    return shapes


def official_shapes(config: str) -> Shapes:
    """The key names and shapes of an official file of ``config``, part by part."""
    rates, kernels = RELEASE_SIZES[config]
    encoder = weight_normed("conv_pre", 32, 1, 7)
    # The encoder walks the generator's (rate, kernel) pairs and its MRF kernels in reverse.
    for stage, (_, kernel) in enumerate(reversed(list(zip(rates, kernels, strict=True)))):
        channels = 32 * 2 ** (stage + 1)
        encoder |= weight_normed(f"ups.{stage}", channels, channels // 2, kernel)
        for branch, mrf_kernel in enumerate(reversed(MRF_KERNELS)):
            index = 3 * stage + branch
            encoder |= res_block(f"resblocks.{index}", channels, mrf_kernel)
            encoder |= {
                f"normalize.{index}.weight": (channels,),
                f"normalize.{index}.bias": (channels,),
            }
    encoder |= {"conv_post.weight": (512, 512, 3), "conv_post.bias": (512,)}  # no weight norm
    generator = weight_normed("conv_pre", 512, LATENT, 7)
    for stage, (_, kernel) in enumerate(zip(rates, kernels, strict=True)):
        channels = 512 // 2 ** (stage + 1)
        generator |= weight_normed(f"ups.{stage}", channels, 2 * channels, kernel, transposed=True)
        for branch, mrf_kernel in enumerate(MRF_KERNELS):
            generator |= res_block(f"resblocks.{3 * stage + branch}", channels, mrf_kernel)
    generator |= weight_normed("conv_post", 1, 32, 7)
    quantizer = {
        f"quantizer_modules{level}.{group}.embedding.weight": (CODES, LATENT // CODE_GROUPS)
        for level in ("", "2")
        for group in range(CODE_GROUPS)
    }
    return {"encoder": encoder, "quantizer": quantizer, "generator": generator}


def official_contents(shapes: Shapes, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Random tensors of ``shapes`` in the official layout. All are views of one random buffer,
    so that a saved file holds one tensor's worth of bytes, not 250 MB."""
    largest = max(math.prod(shape) for part in shapes.values() for shape in part.values())
    buffer = 0.1 * torch.randn(largest, generator=torch.Generator().manual_seed(seed))
    return {
        part: {key: buffer[: math.prod(shape)].view(shape) for key, shape in keys.items()}
        for part, keys in shapes.items()
    }


def save_official(path: Path, contents: dict) -> Path:
    path.parent.mkdir(exist_ok=True)
    torch.save(contents, path)
    return path


def signal(samples: int, sample_rate: int, seed: int = 0) -> torch.Tensor:
    """A 220 Hz tone plus noise, ``(1, samples)``."""
    time = torch.arange(samples) / sample_rate
    noise = torch.randn(1, samples, generator=torch.Generator().manual_seed(seed))
    return 0.3 * torch.sin(2 * math.pi * 220 * time)[None] + 0.05 * noise


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("official")


@pytest.fixture(scope="module")
def codecs(folder) -> dict[str, HiFiCodecCodec]:
    """One codec per released configuration, built from synthetic files under release names
    (the 240d one with an extension, as a download may be saved)."""
    names = {
        "official-16k-320d": "HiFi-Codec-16k-320d",
        "official-24k-320d": "HiFi-Codec-24k-320d",
        "official-24k-240d": "HiFi-Codec-24k-240d.pth",
    }
    return {
        config: HiFiCodecCodec(
            save_official(folder / name, official_contents(official_shapes(config)))
        )
        for config, name in names.items()
    }


def test_the_official_modules_have_the_documented_sizes():
    """The shapes written out above give the parameter counts of the reference notes
    (../shared/reference/models.md: encoder about 47 M, generator about 15.4 M)."""
    shapes = official_shapes("official-24k-320d")
    counts = {part: sum(map(math.prod, keys.values())) for part, keys in shapes.items()}
    assert counts["encoder"] == pytest.approx(47e6, rel=0.01)
    assert counts["generator"] == pytest.approx(15.4e6, rel=0.01)
    assert counts["quantizer"] == 4 * 1024 * 256
    assert official_shapes("official-16k-320d") == shapes  # why the name must tell the rate


def test_each_release_loads_strictly_under_its_name(codecs, folder):
    for config, codec in codecs.items():
        assert codec.checkpoint_kind == "official" and codec.model_note == OFFICIAL_NOTE
        assert codec.config.name == config
        assert codec.sample_rate == (16000 if "16k" in config else 24000)
        assert codec.bitrates == (KBPS[config],) and codec.frame_rate == KBPS[config] * 25
        assert codec.num_codebooks == 4 and codec.codebook_size == 1024
        assert codec.describe()["model_config"] == codec.config.to_json()
        # A key of each part holds the file's tensor (weight-normed keys are folded on loading).
        contents = torch.load(codec.checkpoint_path, weights_only=True)
        model = codec.model
        codebook = "quantizer_modules2.1.embedding.weight"
        assert torch.equal(model.quantizer.state_dict()[codebook], contents["quantizer"][codebook])
        assert torch.equal(model.encoder.conv_post.weight, contents["encoder"]["conv_post.weight"])
        assert torch.equal(model.generator.conv_post.bias, contents["generator"]["conv_post.bias"])
    path = save_official(
        folder / "HiFi-Codec-16k-320d-large-universal",
        official_contents(official_shapes("official-16k-320d"), seed=1),
    )
    universal = HiFiCodecCodec(path)
    assert universal.config == OFFICIAL_CONFIGS["official-16k-320d"]
    assert universal.checkpoint_hash != codecs["official-16k-320d"].checkpoint_hash


# Signal lengths in hops of each release: whole hops, a partial last hop, a few samples.
LENGTHS = {"whole hops": (25, 0), "partial hop": (17, 123), "few samples": (0, 5)}


@pytest.mark.parametrize("config", list(RELEASE_SIZES))
@pytest.mark.parametrize("length", list(LENGTHS))
def test_round_trip_keeps_the_length_and_spends_the_released_bitrate(codecs, config, length):
    """Whole hops or not, the output has the input's length; the payload is the header and
    4 codes of 10 bits per frame, ceil(samples / hop) frames (the last one zero-padded)."""
    codec = codecs[config]
    hops, extra = LENGTHS[length]
    samples = hops * codec.config.hop_length + extra
    audio = signal(samples, codec.sample_rate)
    kbps = KBPS[config]
    encoded = codec.encode(audio, kbps)
    decoded = codec.decode(encoded)
    assert decoded.shape == audio.shape and torch.isfinite(decoded).all()
    frames = math.ceil(samples / codec.config.hop_length)
    assert encoded.codes.shape == (4, frames)
    assert 0 <= int(encoded.codes.min()) and int(encoded.codes.max()) <= 1023
    header = unpack(encoded.payload).header
    assert header == {"codec": "hificodec", "config": config, "entropy_coded": False, "n_q": 4}
    codes_bytes = math.ceil(4 * frames * 10 / 8)
    assert len(encoded.payload) == len(pack(header, [bytes(codes_bytes)]))
    if extra == 0:
        # 4 codes x 10 bits x the frame rate is the nominal rate, spent to the byte; the
        # container's header and framing come on top.
        seconds = samples / codec.sample_rate
        assert 8 * codes_bytes == pytest.approx(kbps * 1000 * seconds)
        overhead_kbps = 8 * (len(encoded.payload) - codes_bytes) / seconds / 1000
        assert encoded.actual_kbps == pytest.approx(kbps + overhead_kbps)


def test_codes_are_level_major_as_the_official_vqvae_stacks_them(codecs):
    """VQVAE.encode stacks [level 0 group 0, level 0 group 1, level 1 group 0, level 1 group 1];
    Quantizer.embed sums each level's groups, concatenated along the channels."""
    codec = codecs["official-24k-320d"]
    contents = torch.load(codec.checkpoint_path, weights_only=True)["quantizer"]
    books = [
        contents[f"quantizer_modules{level}.{group}.embedding.weight"]
        for level in ("", "2")
        for group in range(CODE_GROUPS)
    ]
    codes = torch.randint(0, 1024, (1, 4, 6), generator=torch.Generator().manual_seed(0))
    rows = [book[codes[0, row]] for row, book in enumerate(books)]  # (6, 256) each
    expected = (torch.cat(rows[:2], dim=-1) + torch.cat(rows[2:], dim=-1)).T[None]
    assert torch.equal(codec.model.quantizer.decode(codes), expected)


def test_one_release_refuses_another_ones_bitstream(codecs):
    audio = signal(2400, 24000)
    encoded = codecs["official-24k-320d"].encode(audio, 3.0)
    with pytest.raises(ValueError, match="expected a bitstream of HiFi-Codec official-24k-240d"):
        codecs["official-24k-240d"].decode(encoded)
    with pytest.raises(ValueError, match="supported bitrates \\(kbps\\): 3$"):
        codecs["official-24k-320d"].encode(audio, 2.0)


def test_the_configurations_round_trip_through_json_and_stay_out_of_training():
    for config in OFFICIAL_CONFIGS.values():
        assert OfficialHiFiCodecConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    assert not set(OFFICIAL_CONFIGS) & set(CONFIGS)  # `bench train hificodec` offers CONFIGS
    with pytest.raises(ValueError, match="exceed its rate by an even number"):
        OfficialHiFiCodecConfig("odd", 24000, (8, 5, 4, 2), (16, 11, 7, 4))


def test_files_that_are_not_what_they_claim_are_refused(folder):
    shapes = official_shapes("official-24k-320d")
    contents = official_contents(shapes)
    missing = official_contents(shapes)
    del missing["generator"]["conv_post.bias"]
    with pytest.raises(CheckpointError, match=r"missing \['generator.conv_post.bias'\]"):
        HiFiCodecCodec(save_official(folder / "missing" / "HiFi-Codec-24k-320d", missing))
    reshaped = official_contents(shapes)
    reshaped["quantizer"]["quantizer_modules.0.embedding.weight"] = torch.zeros(1024, 128)
    with pytest.raises(
        CheckpointError, match="size mismatch for quantizer.quantizer_modules.0.embedding.weight"
    ):
        HiFiCodecCodec(save_official(folder / "reshaped" / "HiFi-Codec-24k-320d", reshaped))
    # The 240d release saved under the 320d name.
    hop_240 = official_contents(official_shapes("official-24k-240d"))
    kernels = r"kernels \(16, 11, 7, 4\), official-24k-320d's are \(16, 11, 8, 4\)"
    with pytest.raises(CheckpointError, match=kernels + r" \(those of official-24k-240d\)"):
        HiFiCodecCodec(save_official(folder / "240d" / "HiFi-Codec-24k-320d", hop_240))
    # A renamed file: the weights cannot tell 16 from 24 kHz, the option can.
    renamed = save_official(folder / "my_hificodec.pt", contents)
    with pytest.raises(CheckpointError, match="official_config= one of official-16k-320d"):
        HiFiCodecCodec(renamed)
    info = HiFiCodecCodec.info(renamed, official_config="official-24k-320d")
    assert info.bitrates == (3.0,) and info.description["config"] == "official-24k-320d"
    assert "not under a release's name" in info.description["model_note"]
    named = save_official(folder / "HiFi-Codec-24k-320d", contents)
    with pytest.raises(ValueError, match="named as the official-24k-320d release, but official_c"):
        HiFiCodecCodec.info(named, official_config="official-16k-320d")
    with pytest.raises(ValueError, match="expected official_config among official-16k-320d"):
        HiFiCodecCodec(named, official_config="24k-320d")
    with pytest.raises(ValueError, match="is for an official AcademiCodec file; got the codec-b"):
        HiFiCodecCodec(official_config="official-24k-320d")  # the demo checkpoint
    with pytest.raises(CheckpointError, match="'encoder', 'quantizer' and 'generator' state dic"):
        HiFiCodecCodec(save_official(folder / "HiFi-Codec-16k-320d.pt", {"encoder": {}}))


def test_bench_run_fetches_a_release_as_huggingface_serves_it_and_records_it(
    folder, tmp_path, monkeypatch, capsys
):
    """`--checkpoint official:hificodec-16k-320d` end to end: the catalogue's entry with its URL
    on a loopback server that answers as HuggingFace's /resolve/ does (a redirect stating the
    file's SHA-256 in X-Linked-Etag), the download verified against that hash, the codec built
    on the released architecture from the cached file's released name, and the run's record."""
    body = save_official(
        folder / "served.th", official_contents(official_shapes("official-16k-320d"), seed=5)
    ).read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    server = LoopbackServer()
    try:
        server.files["/Dongchao/AcademiCodec/resolve/main/HiFi-Codec-16k-320d"] = Served(
            redirect_to="/lfs/object", headers={"X-Linked-Etag": f'"{digest}"'}
        )
        server.files["/lfs/object"] = Served(body)
        published = weights.lookup("hificodec-16k-320d")
        url = f"{server.url}/Dongchao/AcademiCodec/resolve/main/HiFi-Codec-16k-320d"
        use_catalogue(monkeypatch, dataclasses.replace(published, url=url))
        monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path / "weights"))
        run_dir = tmp_path / "run"
        code = main(
            ["run", "--codec", "hificodec", "--checkpoint", "official:hificodec-16k-320d",
             "--limit", "1", "--max-seconds", "0.5", "--metrics", "mel_distance",
             "--workers", "1", "--run-dir", str(run_dir), "--no-cache", "--no-report", "--quiet"]
        )  # fmt: skip
    finally:
        server.close()
    output = capsys.readouterr()
    assert code == EXIT_OK, output.err
    assert server.requests == [
        "/Dongchao/AcademiCodec/resolve/main/HiFi-Codec-16k-320d",
        "/lfs/object",
    ]
    described = json.loads((run_dir / "config.json").read_text())["codecs"]["hificodec"]
    assert described["config"] == "official-16k-320d" and described["bitrates"] == [2.0]
    assert described["checkpoint_kind"] == "official" and described["model_note"] == OFFICIAL_NOTE
    record = described["published_weights"]
    assert (record["name"], record["sha256"], record["checked_against"]) == (
        "hificodec-16k-320d",
        digest,
        "server",
    )
    assert f"weights: hificodec: official hificodec-16k-320d from {url}" in output.out
