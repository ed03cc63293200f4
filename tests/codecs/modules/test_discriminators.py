"""Discriminators: MS-STFT (shapes, input checks, equality with the official encodec code),
HiFi-GAN's MPD and MSD (shapes, padding, gradients, widths) and their combination."""

from __future__ import annotations

import types

import pytest
import torch
from bench.codecs.modules.discriminators import (
    DiscriminatorOutput,
    MultiDiscriminator,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    MultiScaleSTFTDiscriminator,
    PeriodDiscriminator,
    ScaleDiscriminator,
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


HIFIGAN_PERIODS = (2, 3, 5, 7, 11)


def _num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _period_rows(samples: int, period: int) -> list[int]:
    """Rows of the folded input and after each of the 5 convs (4 with stride 3, then 1)."""
    rows = [-(-samples // period)]
    for _ in range(4):
        rows.append((rows[-1] - 1) // 3 + 1)
    return rows + [rows[-1]]


def _scale_lengths(samples: int, downsamples: int) -> list[int]:
    """Length after the poolings and after each of the 7 convs (strides 1, 2, 2, 4, 4, 1, 1)."""
    length = samples
    for _ in range(downsamples):
        length = length // 2 + 1
    lengths = [length]
    for stride in (1, 2, 2, 4, 4, 1, 1):
        lengths.append((lengths[-1] - 1) // stride + 1)
    return lengths


@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
def test_mpd_output_shapes(channels):
    disc = MultiPeriodDiscriminator(filters=2, in_channels=channels)
    audio = torch.randn(2, channels, 4096)
    with torch.no_grad():
        out = disc(audio)
    assert isinstance(out, DiscriminatorOutput)
    assert disc.num_discriminators == len(out.logits) == len(out.feature_maps) == 5
    for logit, feature_maps, period in zip(
        out.logits, out.feature_maps, HIFIGAN_PERIODS, strict=True
    ):
        rows = _period_rows(4096, period)
        assert logit.shape == (2, 1, rows[-1], period)
        assert [f.shape for f in feature_maps] == [
            (2, width, r, period) for width, r in zip((2, 8, 32, 64, 64), rows[1:], strict=True)
        ]


@pytest.mark.parametrize("samples", [4096, 4097, 4100, 4102], ids=lambda n: f"{n}-samples")
def test_period_discriminator_pads_lengths_not_divisible_by_the_period(samples):
    disc = PeriodDiscriminator(7, filters=2)
    audio = torch.randn(1, 1, samples)
    with torch.no_grad():
        out = disc(audio)
    rows = _period_rows(samples, 7)
    assert out.logits[0].shape == (1, 1, rows[-1], 7)
    assert out.feature_maps[0][0].shape == (1, 2, rows[1], 7)
    # The padding is a reflection of the tail: padding by hand gives the same logit.
    remainder = samples % 7
    if remainder:
        tail = audio[..., -(7 - remainder) - 1 : -1].flip(-1)
        padded = torch.cat([audio, tail], dim=-1)
        assert padded.shape[-1] % 7 == 0
        with torch.no_grad():
            torch.testing.assert_close(disc(padded).logits[0], out.logits[0])


def test_msd_output_shapes():
    disc = MultiScaleDiscriminator(filters=16, in_channels=2)
    audio = torch.randn(2, 2, 4096)
    with torch.no_grad():
        out = disc(audio)
    assert isinstance(out, DiscriminatorOutput)
    assert disc.num_discriminators == len(out.logits) == len(out.feature_maps) == 3
    widths = (16, 16, 32, 64, 128, 128, 128)
    for downsamples, (logit, feature_maps) in enumerate(
        zip(out.logits, out.feature_maps, strict=True)
    ):
        lengths = _scale_lengths(4096, downsamples)
        assert logit.shape == (2, 1, lengths[-1])
        assert [f.shape for f in feature_maps] == [
            (2, width, n) for width, n in zip(widths, lengths[1:], strict=True)
        ]
    assert [logit.shape[-1] for logit in out.logits] == [64, 33, 17]


def test_msd_scales_pool_their_input_and_norms_follow_hifigan():
    disc = MultiScaleDiscriminator(filters=16)
    first, second, third = disc.discriminators
    names = set(first.state_dict())
    for layer in ["convs.0", "convs.6", "conv_post"]:
        # Spectral norm keeps one weight plus its power-iteration vectors.
        assert f"{layer}.parametrizations.weight.original" in names
        assert f"{layer}.parametrizations.weight.0._u" in names
    for sub in (second, third):
        names = set(sub.state_dict())
        for layer in ["convs.0", "convs.6", "conv_post"]:
            assert f"{layer}.parametrizations.weight.original0" in names
            assert f"{layer}.parametrizations.weight.original1" in names
    audio = torch.randn(1, 1, 4096)
    pool = nn.AvgPool1d(4, stride=2, padding=2)
    alone = ScaleDiscriminator(16, downsamples=0)
    alone.load_state_dict(third.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(third(audio).logits[0], alone(pool(pool(audio))).logits[0])


@pytest.mark.parametrize(
    "make",
    [lambda: MultiPeriodDiscriminator(filters=2), lambda: MultiScaleDiscriminator(filters=16)],
    ids=["mpd", "msd"],
)
def test_gradients_reach_the_input(make):
    disc = make()
    audio = torch.randn(1, 1, 4096, requires_grad=True)
    out = disc(audio)
    loss = sum(logit.mean() for logit in out.logits) + sum(
        f.abs().mean() for maps in out.feature_maps for f in maps
    )
    loss.backward()
    assert audio.grad is not None and torch.isfinite(audio.grad).all()
    assert audio.grad.abs().sum() > 0
    assert all(p.grad is not None for p in disc.parameters())


def test_widths_default_to_hifigan_and_narrow_to_the_msstft_size():
    # HiFi-GAN's published sizes: MPD about 41.1 M and MSD about 29.6 M parameters.
    assert _num_parameters(MultiPeriodDiscriminator()) == 41_105_770
    assert _num_parameters(MultiScaleDiscriminator()) == 29_618_821
    msstft = _num_parameters(MultiScaleSTFTDiscriminator(filters=32))
    assert msstft == 472_330
    mpd = {f: _num_parameters(MultiPeriodDiscriminator(filters=f)) for f in (3, 4, 8)}
    msd = {f: _num_parameters(MultiScaleDiscriminator(filters=f)) for f in (16, 32)}
    # Weights dominate, so halving the width divides the count by nearly 4.
    assert 3.9 < mpd[8] / mpd[4] < 4.0
    assert 3.9 < msd[32] / msd[16] < 4.0
    assert mpd[3] < msstft < mpd[4] < 1.4 * msstft
    assert abs(msd[16] - msstft) < 0.02 * msstft


def test_mpd_and_msd_bad_input_raises_value_error():
    with pytest.raises(ValueError, match=r"\(batch, 1, samples\)"):
        MultiPeriodDiscriminator(filters=1)(torch.randn(1, 2, 4096))
    with pytest.raises(ValueError, match=r"\(batch, 2, samples\)"):
        ScaleDiscriminator(16, in_channels=2)(torch.randn(1, 4096))
    with pytest.raises(ValueError, match="at least period = 11"):
        PeriodDiscriminator(11, filters=1)(torch.randn(1, 1, 10))
    with pytest.raises(ValueError, match="multiple of 16"):
        MultiScaleDiscriminator(filters=24)
    with pytest.raises(ValueError, match="period >= 1"):
        PeriodDiscriminator(0)


def test_hificodec_discriminators_combine_msstft_mpd_and_msd():
    msstft = MultiScaleSTFTDiscriminator(filters=4)
    mpd = MultiPeriodDiscriminator(filters=1)
    msd = MultiScaleDiscriminator(filters=16)
    # Eval mode: in training, spectral norm's power iteration updates on every call.
    combined = MultiDiscriminator([msstft, mpd, msd]).eval()
    audio = torch.randn(1, 1, 4096)
    with torch.no_grad():
        out = combined(audio)
        parts = [msstft(audio), mpd(audio), msd(audio)]
    assert combined.num_discriminators == 3
    assert len(out.logits) == len(out.feature_maps) == 5 + 5 + 3
    assert [len(maps) for maps in out.feature_maps] == [5] * 5 + [5] * 5 + [7] * 3
    expected = DiscriminatorOutput.concatenate(parts)
    for ours, theirs in zip(out.logits, expected.logits, strict=True):
        torch.testing.assert_close(ours, theirs)
    assert [logit.dim() for logit in out.logits] == [4] * 10 + [3] * 3
