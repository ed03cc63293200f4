"""FlowMAC as a benchmark codec: the codec-plus-vocoder checkpoint (bundle, hash, missing
vocoder), bitrates exact to the byte, stage dropping, NFE accounting with and without
guidance, stochastic decoding under a seed, windowed coding of long signals and the
copy-synthesis condition. Round trip, input checks and determinism of the shipped demo are
the codec contract's (test_contract.py)."""

from __future__ import annotations

import math

import pytest
import torch
from bench.codecs.bitstream import pack
from bench.codecs.checkpoint import Checkpoint, CheckpointError, Network, load_checkpoint
from bench.codecs.flowmac.codec import FlowMacCodec, FlowMacVocoderCodec, vocode
from bench.codecs.flowmac.model import (
    CONFIGS,
    VOCODER_CONFIGS,
    FlowMacConfig,
    FlowMacModel,
    vocoder_network_config,
)
from bench.codecs.modules.bigvgan import BigVGANGenerator

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = CONFIGS["tiny"]


def signal(samples: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, samples, generator=generator)
    return 0.1 * torch.nn.functional.avg_pool1d(noise[None], 5, 1, 2)[0]


def bundle(path, *, vocoder: bool = True, vocoder_config=VOCODER_CONFIGS["tiny"]):
    """A random-weight FlowMAC checkpoint (codebooks k-means initialised on noise)."""
    torch.manual_seed(0)
    model = FlowMacModel(CONFIG)
    model.train()
    model.quantizer(model.encoder(model.normalised_mel(signal(48_000))), CONFIG.n_q)
    networks = {"codec": Network(CONFIG.to_json(), model.state_dict())}
    if vocoder:
        generator = BigVGANGenerator(vocoder_config)
        networks["vocoder"] = Network(
            vocoder_network_config(vocoder_config, CONFIG.mel), generator.state_dict()
        )
    Checkpoint("flowmac", networks).save(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return bundle(tmp_path_factory.mktemp("flowmac") / "bundle.pt")


@pytest.fixture(scope="module")
def codec(checkpoint):
    return FlowMacCodec(checkpoint)


def test_the_bundle_loads_both_networks_and_its_hash_names_both(checkpoint, codec):
    saved = load_checkpoint(checkpoint)
    assert codec.checkpoint_hash == (
        f"{saved.network('codec').hash[:16]}+voc{saved.network('vocoder').hash[:8]}"
    )
    vocoder_hash = saved.network("vocoder").hash[:16]
    assert FlowMacVocoderCodec(checkpoint).checkpoint_hash == f"voc{vocoder_hash}"
    assert tuple(codec.describe()["vocoder_config"]["upsample_rates"]) == (8, 8, 4, 2)


def test_a_checkpoint_without_vocoder_is_refused_with_the_reason(tmp_path):
    path = bundle(tmp_path / "codec_only.pt", vocoder=False)
    for codec_class in (FlowMacCodec, FlowMacVocoderCodec):
        with pytest.raises(CheckpointError, match="holds no vocoder.*bench train flowmac-vocoder"):
            codec_class(path)


def test_a_tampered_weight_is_refused_by_its_hash(checkpoint, tmp_path):
    payload = torch.load(checkpoint, weights_only=True)
    state = payload["networks"]["vocoder"]["state_dict"]
    key = next(key for key in state if key.endswith("conv_post.bias"))
    state[key] = state[key] + 1e-3
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="hash"):
        FlowMacCodec(tmp_path / "tampered.pt")


def test_a_vocoder_for_another_mel_is_refused(tmp_path):
    other = VOCODER_CONFIGS["tiny"].__class__(
        initial_channels=32, upsample_rates=(8, 8, 2, 2), resblock_kernels=(3,)
    )
    path = bundle(tmp_path / "hop256.pt", vocoder_config=other)
    with pytest.raises(CheckpointError, match="upsampling 256x"):
        FlowMacCodec(path)


@pytest.mark.parametrize(("bitrate", "stages"), [(1.5, 4), (3.0, 8)])
def test_bitrates_are_exact_to_the_byte_and_drop_stages(codec, bitrate, stages):
    samples = 3 * 24_000 + 17
    encoded = codec.encode(signal(samples), bitrate)
    frames = samples // 512 + 1
    assert tuple(encoded.codes.shape) == (stages, frames)
    header = {"codec": "flowmac", "config": "tiny", "n_q": stages}
    # 8 bits per code: one byte each.
    assert len(encoded.payload) == len(pack(header, [bytes(stages * frames)]))
    assert encoded.actual_kbps == len(encoded.payload) * 8 / (samples / 24_000) / 1000
    # The codes alone are the nominal rate: 46.875 frames/s x stages x 8 bits.
    assert stages * 8 * 46.875 / 1000 == bitrate


class CountingNetwork(torch.nn.Module):
    """Wraps the velocity network and counts its calls (batch entries, not batches)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.calls = network, 0

    def forward(self, x, t, condition, mask=None):
        self.calls += 1
        return self.network(x, t, condition, mask)


@pytest.mark.parametrize(
    ("solver", "guidance", "nfe", "options"),
    [
        ("euler", 1.0, 1, (1, 2, 4, 8, 16, 32)),
        ("euler", 1.0, 5, (1, 2, 4, 8, 16, 32)),
        ("euler", 2.0, 8, (2, 4, 8, 16, 32, 64)),
        ("heun", 1.0, 8, (2, 4, 8, 16, 32, 64)),
        ("midpoint", 0.5, 16, (4, 8, 16, 32, 64, 128)),
        ("euler", 0.0, 4, (1, 2, 4, 8, 16, 32)),
    ],
)
def test_the_network_is_called_exactly_nfe_times(checkpoint, solver, guidance, nfe, options):
    codec = FlowMacCodec(checkpoint, solver=solver, guidance=guidance)
    assert codec.nfe_options == options
    counter = CountingNetwork(codec.model.velocity)
    codec.model.velocity = counter
    encoded = codec.encode(signal(24_000), 3.0)
    if nfe not in options:
        with pytest.raises(ValueError, match=f"does not support nfe={nfe}"):
            codec.decode(encoded, nfe=nfe, seed=0)
        return
    codec.decode(encoded, nfe=nfe, seed=0)
    assert counter.calls == nfe


def test_an_nfe_the_solver_cannot_spend_lists_the_valid_ones(checkpoint):
    codec = FlowMacCodec(checkpoint, solver="heun")
    encoded = codec.encode(signal(12_000), 1.5)
    with pytest.raises(ValueError, match=r"supported: 2, 4, 8, 16, 32, 64"):
        codec.decode(encoded, nfe=1)
    with pytest.raises(ValueError, match="expected an ODE solver among euler, midpoint, heun"):
        FlowMacCodec(checkpoint, solver="rk4")
    for scale in ("nan", "inf", -1.0, "strong"):
        with pytest.raises(ValueError, match="guidance: expected a finite scale >= 0"):
            FlowMacCodec(checkpoint, guidance=scale)


def test_the_seed_sets_the_noise(codec):
    encoded = codec.encode(signal(24_000), 3.0)
    first = codec.decode(encoded, nfe=4, seed=1)
    assert torch.equal(first, codec.decode(encoded, nfe=4, seed=1))
    assert not torch.allclose(first, codec.decode(encoded, nfe=4, seed=2))
    assert torch.equal(codec.decode(encoded, nfe=4), codec.decode(encoded, nfe=4, seed=0))


def test_guidance_zero_and_one_follow_the_unconditional_and_conditional_fields(checkpoint):
    """s = 1 decodes as the conditional field, s = 0 as the condition zeroed, and s = 2
    extrapolates: v_u + 2 (v_c - v_u), checked on one Euler step from the same noise."""
    codecs = {scale: FlowMacCodec(checkpoint, guidance=scale) for scale in (0.0, 1.0, 2.0)}
    codes = codecs[1.0].encode(signal(24_000), 3.0).codes
    mels = {
        scale: codec.refined_mel(codes, codec.nfe_options[0], 0) for scale, codec in codecs.items()
    }
    torch.testing.assert_close(
        mels[2.0] - mels[0.0], 2 * (mels[1.0] - mels[0.0]), atol=1e-5, rtol=0
    )


def test_long_signals_are_coded_in_windows_with_the_codes_of_each_window(checkpoint):
    codec = FlowMacCodec(checkpoint)
    windowed = codec.model.config.window_frames
    samples = (2 * windowed + 10) * 512
    audio = signal(samples)
    codes = codec.encode(audio, 3.0).codes
    mel = codec.model.normalised_mel(audio)
    with torch.inference_mode():
        first = codec.model.encode(mel[..., :windowed], 8)
    assert torch.equal(codes[:, :windowed], first)
    assert codes.shape[-1] == samples // 512 + 1


def test_the_vocoder_in_chunks_equals_the_vocoder_on_the_whole_mel():
    torch.manual_seed(0)
    generator = BigVGANGenerator(VOCODER_CONFIGS["tiny"]).eval()
    mel = torch.randn(1, 128, 700)
    with torch.inference_mode():
        whole = generator(mel)[0]
        chunked = vocode(generator, mel)
    assert chunked.shape == whole.shape == (1, 700 * 512)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


def test_copy_synthesis_sends_the_mel_as_float16_and_vocodes_it(checkpoint):
    codec = FlowMacVocoderCodec(checkpoint)
    assert codec.bitrates == (96.0,)
    assert codec.nfe_options is None
    samples = 24_000
    encoded = codec.encode(signal(samples), 96.0)
    frames = samples // 512 + 1
    header = {"codec": "flowmac-vocoder", "config": "tiny"}
    assert len(encoded.payload) == len(pack(header, [bytes(2 * 128 * frames)]))
    assert math.isclose(encoded.actual_kbps, 96.0 * frames / 46.875, rel_tol=0.01)
    decoded = codec.decode(encoded)
    assert decoded.shape == (1, samples) and torch.isfinite(decoded).all()
    # A well-framed payload for a signal one frame shorter.
    short = pack(header, [bytes(2 * 128 * (frames - 1))])
    with pytest.raises(ValueError, match=f"expected {2 * 128 * frames} bytes of float16 mel"):
        codec.decode(type(encoded)(short, samples, 24_000, 96.0))


def test_a_unet_narrower_than_the_mel_is_refused():
    # The velocity from noise must cancel the noise of all 128 bands; the first demo's
    # 64-channel U-Net left 71% of it in its one-step output.
    with pytest.raises(
        ValueError, match="at least the 128 mel bands' width, got unet=\\(64, 96\\)"
    ):
        FlowMacConfig(name="narrow", unet=(64, 96))
    assert CONFIGS["tiny"].unet[0] >= CONFIGS["tiny"].mel.n_mels
