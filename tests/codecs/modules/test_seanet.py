"""SEANet blocks and streamable convolutions: lengths, causality, weight-norm folding, streaming
equals offline, the time-major (tiled) inference path equals the offline one, and equality with
the official encodec code (layer by layer and whole models).
"""

from __future__ import annotations

import itertools
import math
import types
import warnings

import pytest
import torch
from bench.codecs.modules.conv import (
    StreamableConv1d,
    StreamableConvTranspose1d,
    fold_weight_norm,
    init_fan_in_,
    official_key_mapping,
    run_time_major_tiled,
)
from bench.codecs.modules.seanet import SEANetDecoder, SEANetEncoder, StreamableLSTM
from helpers import official_encodec
from torch import nn

# A tiny model on the real code path: an odd stride (3) exercises the uneven padding split,
# two residual layers a dilation of 2. Hop 24, so the tests run in milliseconds.
TINY = {"n_filters": 4, "dimension": 8, "ratios": [4, 3, 2], "n_residual_layers": 2}
TINY_HOP = 24
# The encodec repository (reflect padding, 1x1 shortcut) and audiocraft (zeros, identity).
STREAMING_CONFIGS = {
    "encodec": {"pad_mode": "reflect", "true_skip": False},
    "audiocraft": {"pad_mode": "constant", "true_skip": True},
}
WEIGHT_NORM_DEPRECATED = "ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning"

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny(cls: type[nn.Module], seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return cls(**{**TINY, **overrides}).eval()


def stream(module: nn.Module, x: torch.Tensor, chunk: int) -> tuple[list[int], torch.Tensor]:
    """Runs ``module`` on chunks of ``x``: the length of each chunk's output, and all output."""
    with module.streaming():
        outputs = [module(part) for part in x.split(chunk, dim=-1)]
        lengths = [out.shape[-1] for out in outputs]
        outputs.append(module.flush())
    return lengths, torch.cat(outputs, dim=-1)


# --- lengths and shapes ---


@pytest.mark.parametrize(
    ("causal", "norm"),
    [(True, "weight_norm"), (False, "weight_norm"), (False, "time_group_norm"), (True, "none")],
)
def test_encoder_gives_ceil_frames_and_decoder_hop_samples_per_frame(causal, norm):
    encoder = tiny(SEANetEncoder, causal=causal, norm=norm, channels=2)
    decoder = tiny(SEANetDecoder, causal=causal, norm=norm, channels=2)
    assert encoder.hop_length == decoder.hop_length == TINY_HOP
    assert encoder.ratios == [2, 3, 4] and decoder.ratios == [4, 3, 2]
    with torch.no_grad():
        for samples in (1, 23, 24, 25, 240, 251):
            latents = encoder(torch.randn(3, 2, samples))
            assert latents.shape == (3, 8, math.ceil(samples / TINY_HOP))
            assert decoder(latents).shape == (3, 2, latents.shape[-1] * TINY_HOP)


def test_full_size_defaults_match_the_paper():
    encoder, decoder = SEANetEncoder(), SEANetDecoder()
    assert encoder.hop_length == 320 and encoder.ratios == [2, 4, 5, 8]
    strided = [m for m in encoder.model if isinstance(m, StreamableConv1d) and m.stride > 1]
    assert [m.conv.conv.out_channels for m in strided] == [64, 128, 256, 512]
    assert [m.conv.conv.kernel_size[0] for m in strided] == [4, 8, 10, 16]
    upsampling = [m for m in decoder.model if isinstance(m, StreamableConvTranspose1d)]
    assert [m.stride for m in upsampling] == [8, 5, 4, 2]
    assert isinstance(decoder.model[1], StreamableLSTM) and decoder.model[1].lstm.num_layers == 2


def test_bad_arguments_raise_value_error_naming_the_choices():
    with pytest.raises(ValueError, match="norm must be one of 'weight_norm', 'time_group_norm'"):
        StreamableConv1d(1, 1, 3, norm="batch_norm")
    with pytest.raises(ValueError, match="pad_mode must be one of 'reflect', 'constant'"):
        StreamableConv1d(1, 1, 3, pad_mode="replicate")
    with pytest.raises(ValueError, match="time_group_norm.*cannot be causal"):
        SEANetEncoder(causal=True, norm="time_group_norm")
    with pytest.raises(ValueError, match="must cover the stride"):
        StreamableConv1d(1, 1, 2, stride=3)
    with pytest.raises(ValueError, match="at least the stride"):
        StreamableConvTranspose1d(1, 1, 2, stride=3)
    with pytest.raises(ValueError, match="activation must name a torch.nn module"):
        tiny(SEANetEncoder, activation="Swoosh")
    with pytest.raises(ValueError, match="ratios must be"):
        tiny(SEANetDecoder, ratios=[4, 0])
    with pytest.raises(
        ValueError, match=r"expected audio shaped \(batch, 1, time\); got \(1, 2, 48\)"
    ):
        tiny(SEANetEncoder)(torch.zeros(1, 2, 48))


# --- causality ---


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_causal_encoder_frames_ignore_later_audio(pad_mode):
    start = 12 * TINY_HOP + 5  # audio changes from here on: frames 0..11 end before it
    audio = torch.randn(1, 1, 30 * TINY_HOP)
    changed = audio.clone()
    changed[..., start:] = torch.randn_like(changed[..., start:])
    with torch.no_grad():
        causal = tiny(SEANetEncoder, causal=True, pad_mode=pad_mode)
        before, after = causal(audio), causal(changed)
        torch.testing.assert_close(after[..., :12], before[..., :12], rtol=0, atol=1e-6)
        assert (after[..., 12] - before[..., 12]).abs().max() > 1e-4
        # The same check catches a model that looks ahead.
        centred = tiny(SEANetEncoder, causal=False, pad_mode=pad_mode)
        assert (centred(changed)[..., 11] - centred(audio)[..., 11]).abs().max() > 1e-4


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_causal_decoder_samples_ignore_later_frames(pad_mode):
    latents = torch.randn(1, 8, 20)
    changed = latents.clone()
    changed[..., 10:] = torch.randn_like(changed[..., 10:])
    with torch.no_grad():
        causal = tiny(SEANetDecoder, causal=True, pad_mode=pad_mode)
        before, after = causal(latents), causal(changed)
        boundary = 10 * TINY_HOP
        torch.testing.assert_close(after[..., :boundary], before[..., :boundary], rtol=0, atol=1e-6)
        assert (after[..., boundary:] - before[..., boundary:]).abs().max() > 1e-4
        centred = tiny(SEANetDecoder, causal=False, pad_mode=pad_mode)
        early = slice(boundary - TINY_HOP, boundary)
        assert (centred(changed)[..., early] - centred(latents)[..., early]).abs().max() > 1e-4


def test_reflect_padding_lets_the_first_frames_see_a_few_later_ones():
    """Official detail: the causal model reflects its left padding, so the outputs of the first
    frames depend on the next ``K - S`` inputs; strict causality needs ``pad_mode="constant"``."""
    latents = torch.randn(1, 8, 20)
    changed = latents.clone()
    changed[..., 6] += 1.0  # reflected into the left padding of the first conv (kernel 7)
    with torch.no_grad():
        for pad_mode, moved in (("reflect", True), ("constant", False)):
            decoder = tiny(SEANetDecoder, causal=True, pad_mode=pad_mode)
            first = (decoder(changed) - decoder(latents))[..., :TINY_HOP]
            assert (first.abs().max() > 1e-4) == moved


# --- weight norm ---


def test_folding_weight_norm_keeps_outputs_and_leaves_plain_weights():
    decoder = tiny(SEANetDecoder, causal=True)
    encoder = tiny(SEANetEncoder, causal=True)
    audio = torch.randn(2, 1, 10 * TINY_HOP + 7)
    with torch.no_grad():
        latents = encoder(audio)
        decoded = decoder(latents)
        fold_weight_norm(encoder)
        fold_weight_norm(decoder)
        torch.testing.assert_close(encoder(audio), latents, rtol=0, atol=1e-6)
        torch.testing.assert_close(decoder(latents), decoded, rtol=0, atol=1e-6)
    keys = list(encoder.state_dict()) + list(decoder.state_dict())
    assert not [key for key in keys if "parametrizations" in key]
    assert "model.0.conv.conv.weight" in keys and "model.3.convtr.convtr.weight" in keys


def test_official_key_mapping_renames_only_weight_norm_keys():
    tensors = {name: torch.zeros(1) for name in ("g", "v", "b", "l")}
    official = {
        "encoder.model.0.conv.conv.weight_g": tensors["g"],
        "encoder.model.0.conv.conv.weight_v": tensors["v"],
        "encoder.model.0.conv.conv.bias": tensors["b"],
        "encoder.model.13.lstm.weight_ih_l0": tensors["l"],
    }
    assert official_key_mapping(official) == {
        "encoder.model.0.conv.conv.parametrizations.weight.original0": tensors["g"],
        "encoder.model.0.conv.conv.parametrizations.weight.original1": tensors["v"],
        "encoder.model.0.conv.conv.bias": tensors["b"],
        "encoder.model.13.lstm.weight_ih_l0": tensors["l"],
    }


# --- streaming ---


@pytest.mark.parametrize("config", STREAMING_CONFIGS.values(), ids=STREAMING_CONFIGS.keys())
@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_streaming_decoder_equals_offline(config, chunk):
    """All chunk outputs plus flush() concatenate to the offline output of all frames."""
    decoder = tiny(SEANetDecoder, causal=True, **config)
    latents = torch.randn(2, 8, 23)
    with torch.no_grad():
        offline = decoder(latents)
        lengths, streamed = stream(decoder, latents, chunk)
    assert streamed.shape == offline.shape
    torch.testing.assert_close(streamed, offline, rtol=0, atol=1e-5)
    # Zero padding holds nothing back: each chunk of n frames gives n hops at once. Reflect
    # padding holds the output back until the first conv (kernel 7) has 7 frames, then catches up.
    held = 7 if config["pad_mode"] == "reflect" else 0
    seen = [part.shape[-1] for part in latents.split(chunk, dim=-1)]
    emitted = [0]
    for frames in itertools.accumulate(seen):
        emitted.append(frames * TINY_HOP if frames >= held else 0)
    assert lengths == [b - a for a, b in itertools.pairwise(emitted)]


@pytest.mark.parametrize("config", STREAMING_CONFIGS.values(), ids=STREAMING_CONFIGS.keys())
@pytest.mark.parametrize("chunk", [TINY_HOP, 3 * TINY_HOP, 7 * TINY_HOP, 17])
@pytest.mark.parametrize("samples", [40 * TINY_HOP, 40 * TINY_HOP + 11])
def test_streaming_encoder_equals_offline(config, chunk, samples):
    """Chunks of whole hops, and (stronger) chunks of 17 samples and a ragged total length."""
    encoder = tiny(SEANetEncoder, causal=True, **config)
    audio = torch.randn(2, 1, samples)
    with torch.no_grad():
        offline = encoder(audio)
        lengths, streamed = stream(encoder, audio, chunk)
    assert streamed.shape == offline.shape
    torch.testing.assert_close(streamed, offline, rtol=0, atol=1e-5)
    if config["pad_mode"] == "constant" and chunk % TINY_HOP == 0:
        assert lengths[0] == chunk // TINY_HOP


def test_streaming_on_inputs_shorter_than_the_padding_matches_offline():
    """Reflect padding of very short signals (official zero-extension) survives streaming."""
    encoder = tiny(SEANetEncoder, causal=True)
    audio = torch.randn(1, 1, 5)
    with torch.no_grad():
        lengths, streamed = stream(encoder, audio, 2)
        offline = encoder(audio)
    assert lengths == [0, 0, 0]
    torch.testing.assert_close(streamed, offline, rtol=0, atol=1e-6)


def test_flush_starts_a_new_stream_and_streaming_is_refused_where_it_cannot_work():
    decoder = tiny(SEANetDecoder, causal=True)
    latents = torch.randn(1, 8, 9)
    with torch.no_grad(), decoder.streaming():
        first = torch.cat(
            [decoder(latents[..., :4]), decoder(latents[..., 4:]), decoder.flush()], -1
        )
        second = torch.cat([decoder(latents), decoder.flush()], -1)
        with pytest.raises(RuntimeError, match="before any chunk"):
            decoder.flush()
    torch.testing.assert_close(first, second, rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError, match="only valid inside streaming"):
        decoder.flush()
    with pytest.raises(ValueError, match="streaming needs causal convolutions"):
        with tiny(SEANetEncoder, causal=False).streaming():
            pass


# --- the inference path: time-major, fused, tiled ---


@pytest.mark.parametrize(
    ("causal", "norm", "pad_mode"),
    [
        (True, "weight_norm", "reflect"),
        (True, "none", "constant"),
        (False, "weight_norm", "reflect"),
        (False, "time_group_norm", "constant"),
    ],
)
def test_time_major_layers_equal_the_offline_ones(causal, norm, pad_mode):
    """Every kernel, stride and dilation, a fused ELU or none, down to one-sample inputs."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [
        StreamableConv1d(3, 5, k, s, dilation=d, causal=causal, norm=norm, pad_mode=pad_mode)
        for k in (1, 3, 4, 7)
        for s in (1, 2, 3)
        for d in (1, 2)
        if (k - 1) * d + 1 >= s
    ]
    layers.append(StreamableConv1d(4, 6, 3, groups=2, causal=causal, norm=norm, pad_mode=pad_mode))
    layers += [
        StreamableConvTranspose1d(3, 5, k, s, causal=causal, norm=norm)
        for k in (1, 2, 3, 4, 7, 10)
        for s in (1, 2, 3, 5)
        if k >= s
    ]
    for layer, activation, steps in itertools.product(layers, (None, nn.ELU()), (1, 2, 5, 17)):
        channels = 4 if getattr(layer, "conv", None) and layer.conv.conv.groups == 2 else 3
        x = torch.randn(2, steps, channels)
        with torch.no_grad():
            activated = x if activation is None else activation(x)
            expected = layer(activated.transpose(1, 2)).transpose(1, 2)
            ours = layer.forward_time_major(x, activation)
        assert ours.is_contiguous()
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", STREAMING_CONFIGS.values(), ids=STREAMING_CONFIGS.keys())
@pytest.mark.parametrize("samples", [40 * TINY_HOP, 40 * TINY_HOP + 11])
def test_inference_path_and_its_tiles_equal_the_training_path(config, samples):
    """With gradients off the encoder and decoder run time-major, and on tiles as short as the
    stacks allow (their left context plus one frame): the outputs stay the layer-by-layer ones,
    ragged ends, reflect padding at the start and its look-ahead included."""
    encoder = tiny(SEANetEncoder, causal=True, **config)
    decoder = tiny(SEANetDecoder, causal=True, **config)
    audio = torch.randn(2, 1, samples)
    latents = encoder(audio).detach()  # gradients on: the layer-by-layer path
    decoded = decoder(latents).detach()
    with torch.no_grad():
        torch.testing.assert_close(encoder(audio), latents, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(decoder(latents), decoded, rtol=1e-5, atol=1e-5)
        for tile_steps in (TINY_HOP, 7 * TINY_HOP):
            tiled = run_time_major_tiled(encoder.model, audio.transpose(1, 2), tile_steps)
            torch.testing.assert_close(tiled.transpose(1, 2), latents, rtol=1e-5, atol=1e-5)
            tiled = run_time_major_tiled(decoder.model, latents.transpose(1, 2), tile_steps)
            torch.testing.assert_close(tiled.transpose(1, 2), decoded, rtol=1e-5, atol=1e-5)


# --- the official encodec code ---


@pytest.fixture(scope="module")
def encodec() -> types.ModuleType:
    return official_encodec()


def perturbed(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Loads noisy weights into ``module`` and returns them: at random init weight_g equals
    ``|weight_v|`` and GroupNorm is the identity, which would hide a dropped or swapped one."""
    generator = torch.Generator().manual_seed(seed)
    state = {
        key: value + 0.05 * torch.randn(value.shape, generator=generator)
        for key, value in module.state_dict().items()
    }
    module.load_state_dict(state)
    return state


def part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {
        key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)
    }


@pytest.mark.filterwarnings(WEIGHT_NORM_DEPRECATED)
@pytest.mark.parametrize(
    ("causal", "norm", "pad_mode"),
    [
        (True, "weight_norm", "reflect"),
        (True, "weight_norm", "constant"),
        (False, "weight_norm", "reflect"),
        (False, "time_group_norm", "constant"),
    ],
)
def test_convolutions_match_official_layers(encodec, causal, norm, pad_mode):
    torch.manual_seed(0)
    shapes = [(k, s, d) for k in (1, 3, 4, 7) for s in (1, 2, 3) for d in (1, 2)]
    for kernel, stride, dilation in shapes:
        if (kernel - 1) * dilation + 1 < stride or (stride > 1 and dilation > 1):
            continue
        args = (3, 5, kernel, stride)
        with warnings.catch_warnings():  # the official code warns about its own settings
            warnings.simplefilter("ignore")
            theirs = encodec.modules.SConv1d(
                *args, dilation=dilation, causal=causal, norm=norm, pad_mode=pad_mode
            )
        ours = StreamableConv1d(
            *args, dilation=dilation, causal=causal, norm=norm, pad_mode=pad_mode
        )
        ours.load_state_dict(official_key_mapping(perturbed(theirs, kernel * stride)))
        for samples in (1, 2, 5, 17, 64):
            x = torch.randn(2, 3, samples)
            with torch.no_grad():
                torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
    for kernel, stride in [(k, s) for k in (1, 2, 3, 4, 7, 10) for s in (1, 2, 3, 5) if k >= s]:
        theirs = encodec.modules.SConvTranspose1d(3, 5, kernel, stride, causal=causal, norm=norm)
        ours = StreamableConvTranspose1d(3, 5, kernel, stride, causal=causal, norm=norm)
        ours.load_state_dict(official_key_mapping(perturbed(theirs, kernel * stride)))
        for frames in (1, 2, 9):
            x = torch.randn(2, 3, frames)
            with torch.no_grad():
                torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


OFFICIAL_MODELS = {
    "24khz": ("encodec_model_24khz", {"channels": 1, "causal": True, "norm": "weight_norm"}),
    "48khz": ("encodec_model_48khz", {"channels": 2, "causal": False, "norm": "time_group_norm"}),
}


@pytest.mark.filterwarnings(WEIGHT_NORM_DEPRECATED)
@pytest.mark.parametrize("model", OFFICIAL_MODELS.values(), ids=OFFICIAL_MODELS.keys())
def test_full_models_load_official_weights_and_match_official_outputs(encodec, model):
    builder, config = model
    torch.manual_seed(0)
    official = getattr(encodec.EncodecModel, builder)(pretrained=False).eval()
    state = official_key_mapping(perturbed(official, seed=1))
    encoder, decoder = SEANetEncoder(**config).eval(), SEANetDecoder(**config).eval()
    encoder.load_state_dict(part(state, "encoder."), strict=True)
    decoder.load_state_dict(part(state, "decoder."), strict=True)
    audio = torch.randn(2, config["channels"], 8 * 320 + 123)  # not a multiple of the hop
    with torch.no_grad():
        latents = official.encoder(audio)
        assert latents.shape == (2, 128, 9)
        # A relative tolerance too: float32 sums over long convolutions are ordered by the
        # CPU and thread count (a 48 kHz latent near 2.0 was once 1.04e-5 off).
        torch.testing.assert_close(encoder(audio), latents, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            decoder(latents), official.decoder(latents), rtol=1e-5, atol=1e-5
        )
        if config["causal"]:
            # The real streaming path on the real model: 3-frame chunks against the official.
            _, streamed = stream(encoder, audio, 3 * 320)
            torch.testing.assert_close(streamed, latents, rtol=1e-5, atol=1e-5)
            _, streamed = stream(decoder, latents, 1)
            torch.testing.assert_close(streamed, official.decoder(latents), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["weight_norm", "none"])
def test_fan_in_init_draws_the_effective_weights_at_one_over_fan_in(norm):
    torch.manual_seed(0)
    conv = StreamableConv1d(64, 96, 7, norm=norm)
    transposed = StreamableConvTranspose1d(96, 48, 16, stride=8, norm=norm)
    init_fan_in_(nn.Sequential(conv, transposed))
    for module, fan_in in ((conv, 64 * 7), (transposed, 96 * 16 / 8)):
        layer = module.conv.conv if hasattr(module, "conv") else module.convtr.convtr
        # The weight as the forward pass uses it (weight norm recomputes it from g and v).
        assert layer.weight.std().item() == pytest.approx(1 / math.sqrt(fan_in), rel=0.05)
        assert torch.count_nonzero(layer.bias) == 0
