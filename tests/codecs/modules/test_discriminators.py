"""MS-STFT discriminator: shapes, input checks and equality with the official encodec code."""

from __future__ import annotations

import types

import pytest
import torch
from bench.codecs.modules.discriminators import (
    DiscriminatorOutput,
    MultiDiscriminator,
    MultiScaleSTFTDiscriminator,
    convert_encodec_msstftd_state_dict,
)
from helpers import official_encodec
from torch import nn

PAPER_SCALES = ([2048, 1024, 512, 256, 128], [512, 256, 128, 64, 32])
ENCODEC_REPO_SCALES = ([1024, 2048, 512], [256, 512, 128])


def _expected_shape(samples: int, n_fft: int, hop: int) -> tuple[int, int]:
    """(frames, freqs) after three frequency-stride-2 convs with kernel 9 and padding 4."""
    frames = 1 + (samples - n_fft) // hop
    freqs = n_fft // 2 + 1
    for _ in range(3):
        freqs = (freqs - 1) // 2 + 1
    return frames, freqs


@pytest.mark.parametrize(
    ("sample_rate", "channels", "window_factor"),
    [(24000, 1, 1), (48000, 2, 2)],
    ids=["24k-mono", "48k-stereo-doubled-windows"],
)
def test_output_shapes(sample_rate, channels, window_factor):
    n_ffts = [n * window_factor for n in PAPER_SCALES[0]]
    hops = [h * window_factor for h in PAPER_SCALES[1]]
    disc = MultiScaleSTFTDiscriminator(
        in_channels=channels, n_ffts=n_ffts, hop_lengths=hops, win_lengths=n_ffts
    )
    audio = torch.randn(1, channels, sample_rate // 6)
    with torch.no_grad():
        out = disc(audio)
    assert isinstance(out, DiscriminatorOutput)
    assert disc.num_discriminators == len(out.logits) == len(out.feature_maps) == 5
    for logit, feature_maps, n_fft, hop in zip(
        out.logits, out.feature_maps, n_ffts, hops, strict=True
    ):
        frames, freqs = _expected_shape(audio.shape[-1], n_fft, hop)
        assert logit.shape == (1, 1, frames, freqs)
        assert len(feature_maps) == 5
        assert feature_maps[0].shape == (1, 32, frames, n_fft // 2 + 1)
        assert all(f.shape == (1, 32, frames, freqs) for f in feature_maps[-2:])


def test_first_conv_has_no_weight_norm_and_the_rest_do():
    sub = MultiScaleSTFTDiscriminator().discriminators[0]
    names = set(sub.state_dict())
    assert {"convs.0.weight", "convs.0.bias"} <= names
    for layer in ["convs.1", "convs.2", "convs.3", "convs.4", "conv_post"]:
        assert f"{layer}.parametrizations.weight.original0" in names
        assert f"{layer}.parametrizations.weight.original1" in names


def test_bad_input_raises_value_error():
    disc = MultiScaleSTFTDiscriminator(in_channels=1)
    with pytest.raises(ValueError, match="batch, channels, samples"):
        disc(torch.randn(1, 4000))
    with pytest.raises(ValueError, match=r"\(batch, 1, samples\)"):
        disc(torch.randn(1, 2, 4000))
    with pytest.raises(ValueError, match="at least n_fft = 2048"):
        disc(torch.randn(1, 1, 1000))
    with pytest.raises(ValueError, match="as many n_ffts"):
        MultiScaleSTFTDiscriminator(n_ffts=[1024, 512], hop_lengths=[256], win_lengths=[1024])


def test_families_combine_by_concatenation():
    small = dict(n_ffts=[256, 128], hop_lengths=[64, 32], win_lengths=[256, 128], filters=4)
    first, second = MultiScaleSTFTDiscriminator(**small), MultiScaleSTFTDiscriminator(**small)
    combined = MultiDiscriminator([first, second])
    audio = torch.randn(1, 1, 1000)
    out = combined(audio)
    assert combined.num_discriminators == 2 and len(out.logits) == 4
    torch.testing.assert_close(out.logits[2], second(audio).logits[0])


class _ReferenceSpectrogram(nn.Module):
    """Stand-in for ``torchaudio.transforms.Spectrogram`` (torchaudio cannot load here).

    Written from torchaudio's documented behaviour for the arguments the official code passes:
    frames of ``n_fft`` samples without centring, a Hann window, an FFT, division by the
    window's L2 norm (``normalized=True``), the complex result shaped ``(..., freqs, frames)``.
    Framing and FFT are done by hand, independently of ``torch.stft``.
    """

    def __init__(self, n_fft, hop_length, win_length, window_fn, normalized, center, power, **_):
        super().__init__()
        assert win_length == n_fft and normalized is True and center is False and power is None
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", window_fn(win_length))

    def forward(self, audio):
        frames = audio.unfold(-1, self.n_fft, self.hop_length) * self.window
        spectrum = torch.fft.rfft(frames, dim=-1) / self.window.pow(2).sum().sqrt()
        return spectrum.transpose(-1, -2)


@pytest.fixture
def official_msstftd(monkeypatch) -> types.ModuleType:
    msstftd = official_encodec("msstftd").msstftd
    fake_torchaudio = types.SimpleNamespace(
        transforms=types.SimpleNamespace(Spectrogram=_ReferenceSpectrogram)
    )
    monkeypatch.setattr(msstftd, "torchaudio", fake_torchaudio)
    return msstftd


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("scales", [ENCODEC_REPO_SCALES, PAPER_SCALES], ids=["repo", "paper"])
def test_matches_official_encodec_discriminator(official_msstftd, scales):
    n_ffts, hops = scales
    torch.manual_seed(0)
    official = official_msstftd.MultiScaleSTFTDiscriminator(
        filters=32, n_ffts=n_ffts, hop_lengths=hops, win_lengths=n_ffts
    )
    # weight_g starts equal to |weight_v|; perturb it so a swapped or dropped g would show.
    with torch.no_grad():
        for name, parameter in official.named_parameters():
            if name.endswith("weight_g"):
                parameter.mul_(torch.empty_like(parameter).uniform_(0.5, 1.5))
    ours = MultiScaleSTFTDiscriminator(
        filters=32, n_ffts=n_ffts, hop_lengths=hops, win_lengths=n_ffts
    )
    ours.load_state_dict(convert_encodec_msstftd_state_dict(official.state_dict()), strict=True)

    audio = torch.randn(2, 1, 2500)
    with torch.no_grad():
        official_logits, official_feature_maps = official(audio)
        out = ours(audio)
    assert len(out.logits) == len(official_logits) == len(n_ffts)
    for ours_logit, official_logit in zip(out.logits, official_logits, strict=True):
        torch.testing.assert_close(ours_logit, official_logit, atol=1e-5, rtol=1e-5)
    for ours_maps, official_maps in zip(out.feature_maps, official_feature_maps, strict=True):
        assert len(ours_maps) == len(official_maps) == 5
        for ours_map, official_map in zip(ours_maps, official_maps, strict=True):
            torch.testing.assert_close(ours_map, official_map, atol=1e-5, rtol=1e-5)
