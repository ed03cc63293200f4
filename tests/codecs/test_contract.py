"""The codec contract, checked on every registered codec (ARCHITECTURE.md, "Codec").

Each check below runs on each name in ``bench.registry.CODECS`` at collection, entry-point
plugins included, so a codec is tested the moment it registers: its properties, round trips
that keep the length, the ``Encoded`` fields, honest bitrate accounting, bad input refused with
a ValueError naming what was expected, NFE validation, and determinism under a seed. Codecs are
built with their default options (the demo checkpoint where there is one) and tiny signals, so
the whole contract runs on the CPU in seconds. What is a codec's own (faithfulness to the paper
or the official code, streaming, its bitstream, training) stays in its family's tests.

Toy codecs from a temporary module show that a newly registered codec is picked up, and that
codecs breaking the contract fail the check they break.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
from collections.abc import Callable

import pytest
import torch
from bench.codecs.base import Codec, Encoded
from helpers import TOY_MODULE

from bench.registry import CODECS, create_codec

CODEC_NAMES = CODECS.names()
# Odd lengths: one sample, less than any frame, and a few frames of 12,345 samples.
ROUND_TRIP_SAMPLES = (1, 7, 12_345)
# Long enough that framing and headers are a small part of the payload.
ACCOUNTING_SECONDS = 2.0

MakeCodec = Callable[[], Codec]


def contract_signal(codec: Codec, num_samples: int, seed: int = 0) -> torch.Tensor:
    """A tone with noise, ``(codec.channels, num_samples)`` float32 at the codec's rate."""
    generator = torch.Generator().manual_seed(seed)
    time = torch.arange(num_samples) / codec.sample_rate
    noise = 0.05 * torch.randn(codec.channels, num_samples, generator=generator)
    return (0.3 * torch.sin(2 * math.pi * 440.0 * time) + noise).to(torch.float32)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_properties(make_codec: MakeCodec) -> None:
    """The interface's properties have the documented types, and describe() is JSON."""
    codec = make_codec()
    assert isinstance(codec, Codec)
    assert isinstance(codec.name, str) and codec.name
    assert _is_positive_int(codec.sample_rate), codec.sample_rate
    assert _is_positive_int(codec.channels), codec.channels
    assert isinstance(codec.bitrates, tuple) and codec.bitrates, codec.bitrates
    assert all(isinstance(bitrate, float) and bitrate > 0 for bitrate in codec.bitrates)
    assert list(codec.bitrates) == sorted(set(codec.bitrates)), "bitrates: ascending, distinct"
    assert codec.frame_rate > 0
    for count in (codec.num_codebooks, codec.codebook_size):
        assert count is None or _is_positive_int(count), count
    if codec.nfe_options is not None:
        assert isinstance(codec.nfe_options, tuple) and codec.nfe_options
        assert all(_is_positive_int(nfe) for nfe in codec.nfe_options), codec.nfe_options
    description = codec.describe()
    assert description["name"] == codec.name
    json.dumps(description)  # recorded in every run's config.json
    assert isinstance(codec.checkpoint_hash, str) and codec.checkpoint_hash


def check_round_trip(make_codec: MakeCodec) -> None:
    """decode(encode(x)) is float32, finite and exactly as long as x, at every bitrate;
    encoding leaves x as it was."""
    codec = make_codec()
    for bitrate in codec.bitrates:
        for num_samples in ROUND_TRIP_SAMPLES:
            audio = contract_signal(codec, num_samples)
            original = audio.clone()
            decoded = codec.decode(codec.encode(audio, bitrate))
            assert torch.equal(audio, original), "encode changed its input"
            assert decoded.shape == (codec.channels, num_samples), (bitrate, decoded.shape)
            assert decoded.dtype == torch.float32
            assert torch.isfinite(decoded).all(), (bitrate, num_samples)


def check_encoded_fields(make_codec: MakeCodec) -> None:
    """Encoded carries the payload, the exact length, the rate, the listed nominal bitrate
    and, if any, integer codes within the codebooks, whose size it states as the codec's
    (or not at all); it is frozen."""
    codec = make_codec()
    audio = contract_signal(codec, 4_001)
    for bitrate in codec.bitrates:
        # A requested rate a rounding error away from a listed one means the listed one.
        encoded = codec.encode(audio, bitrate + 1e-9)
        assert isinstance(encoded, Encoded)
        assert isinstance(encoded.payload, bytes) and encoded.payload
        assert encoded.num_samples == audio.shape[1]
        assert encoded.sample_rate == codec.sample_rate
        assert encoded.nominal_kbps == bitrate, (encoded.nominal_kbps, bitrate)
        codes = encoded.codes
        if codes is not None:
            assert not codes.is_floating_point() and codes.dim() == 2, (codes.dtype, codes.shape)
            if codec.num_codebooks is not None:
                assert codes.shape[0] <= codec.num_codebooks, codes.shape
            if codec.codebook_size is not None and codes.numel():
                assert 0 <= int(codes.min()) <= int(codes.max()) < codec.codebook_size, (
                    f"codes {int(codes.min())}..{int(codes.max())} outside the "
                    f"codebook of {codec.codebook_size}"
                )
            # Token statistics (codebook usage) read the size from the bitstream's view.
            if encoded.codebook_size is not None:
                assert encoded.codebook_size == codec.codebook_size, encoded.codebook_size
        with pytest.raises(dataclasses.FrozenInstanceError):
            encoded.payload = b""  # type: ignore[misc]


def check_bitrate_accounting(make_codec: MakeCodec) -> None:
    """actual_kbps counts the payload's bytes; on a few seconds it is near the nominal rate,
    and a higher listed bitrate spends more bytes."""
    codec = make_codec()
    num_samples = int(ACCOUNTING_SECONDS * codec.sample_rate)
    audio = contract_signal(codec, num_samples)
    sizes = []
    for bitrate in codec.bitrates:
        encoded = codec.encode(audio, bitrate)
        bytes_kbps = len(encoded.payload) * 8 / (num_samples / codec.sample_rate) / 1000
        assert encoded.actual_kbps == pytest.approx(bytes_kbps, rel=1e-12)
        # Headers and framing cost a few percent here (up to 20 % at EnCodec's 1.5 kbps); a
        # factor of 2 catches a payload that is not the bitstream (bits for bytes, a channel
        # or frames missing) without ruling out a real codec's overhead.
        assert 0.5 <= encoded.actual_kbps / bitrate <= 2.0, (bitrate, encoded.actual_kbps)
        sizes.append(len(encoded.payload))
    assert sizes == sorted(set(sizes)), f"payload bytes per listed bitrate: {sizes}"


def check_bad_input(make_codec: MakeCodec) -> None:
    """Bad audio, bitrates and bitstreams are refused with a message naming what was
    expected and what came."""
    codec = make_codec()
    channels, bitrate = codec.channels, codec.bitrates[0]
    audio = contract_signal(codec, 480)
    refusals = {
        f"expects {channels} channel\\(s\\), got {channels + 1}": audio[:1].repeat(channels + 1, 1),
        "shaped \\(channels, samples\\), got shape \\(480,\\)": audio[0],
        "shaped \\(channels, samples\\), got shape \\(1, ": audio[None],
        "at least one sample, got an empty signal": audio[:, :0],
        "floating-point audio in \\[-1, 1\\], got torch.int16": audio.to(torch.int16),
        "NaN or infinite": audio.index_fill(1, torch.tensor([240]), float("nan")),
    }
    for message, bad_audio in refusals.items():
        with pytest.raises(ValueError, match=message):
            codec.encode(bad_audio, bitrate)
    with pytest.raises(TypeError, match="expected audio as a torch.Tensor, got list"):
        codec.encode(audio.tolist(), bitrate)
    unsupported = max(codec.bitrates) * 1.5 + 0.123
    with pytest.raises(ValueError, match="supported bitrates \\(kbps\\)") as error:
        codec.encode(audio, unsupported)
    assert repr(unsupported) in str(error.value)
    for listed in codec.bitrates:
        assert f"{listed:g}" in str(error.value)
    encoded = codec.encode(audio, bitrate)
    other_rate = dataclasses.replace(encoded, sample_rate=codec.sample_rate + 1)
    expected = f"decodes {codec.sample_rate} Hz bitstreams, got one at {codec.sample_rate + 1} Hz"
    with pytest.raises(ValueError, match=expected):
        codec.decode(other_rate)


def check_nfe(make_codec: MakeCodec) -> None:
    """A one-shot decoder refuses any NFE; an iterative one decodes at each listed NFE and
    refuses the others, naming the supported ones."""
    codec = make_codec()
    audio = contract_signal(codec, 1_001)
    encoded = codec.encode(audio, codec.bitrates[0])
    if codec.nfe_options is None:
        with pytest.raises(ValueError, match="one-shot decoder and takes no NFE; got nfe=8"):
            codec.decode(encoded, nfe=8)
        return
    for nfe in codec.nfe_options:
        assert codec.decode(encoded, nfe=nfe, seed=0).shape == audio.shape
    unsupported = max(codec.nfe_options) + 1
    with pytest.raises(ValueError, match=f"does not support nfe={unsupported}; supported: "):
        codec.decode(encoded, nfe=unsupported, seed=0)


def check_determinism(make_codec: MakeCodec) -> None:
    """The same input gives the same bytes, and a given seed the same audio, whatever the
    global random state, in this instance and in a second one."""
    codec = make_codec()
    audio = contract_signal(codec, 9_999, seed=3)
    bitrate = codec.bitrates[-1]
    nfe = None if codec.nfe_options is None else codec.nfe_options[0]
    first, second = codec.encode(audio, bitrate), codec.encode(audio, bitrate)
    assert first.payload == second.payload
    other = make_codec()
    assert other.checkpoint_hash == codec.checkpoint_hash, "a second instance, another hash"
    assert other.encode(audio, bitrate).payload == first.payload
    decoded = []
    # Each decode under another global random state; fork_rng restores the caller's after.
    with torch.random.fork_rng():
        for global_seed, decoder, encoded in (
            (1, codec, first),
            (2, codec, second),
            (3, other, first),
        ):
            torch.manual_seed(global_seed)
            decoded.append(decoder.decode(encoded, nfe=nfe, seed=0))
    assert all(torch.equal(decoded[0], again) for again in decoded[1:]), (
        "the same seed decoded differently"
    )


CHECKS = (
    check_properties,
    check_round_trip,
    check_encoded_fields,
    check_bitrate_accounting,
    check_bad_input,
    check_nfe,
    check_determinism,
)


def _check_id(check: Callable) -> str:
    return check.__name__.removeprefix("check_")


@pytest.mark.parametrize("check", CHECKS, ids=_check_id)
@pytest.mark.parametrize("name", CODEC_NAMES)
def test_codec_contract(name: str, check: Callable[[MakeCodec], None]) -> None:
    check(functools.partial(create_codec, name))


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_codec_is_named_as_registered(name: str) -> None:
    assert create_codec(name).name == name


@pytest.fixture(scope="module")
def toys() -> types.ModuleType:
    """The toy module, imported here as the entry points would import it."""
    module = types.ModuleType("toy_codecs")
    exec(compile(TOY_MODULE, "toy_codecs.py", "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("codec_class", ["ToyCodec", "IterativeToyCodec"])
@pytest.mark.parametrize("check", CHECKS, ids=_check_id)
def test_a_toy_codec_meeting_the_contract_passes(toys, codec_class, check):
    check(getattr(toys, codec_class))


def _broken_codecs(toys: types.ModuleType) -> dict[str, tuple[type[Codec], Callable, str]]:
    """Codecs that each break one promise: (codec, the check that must fail, its message)."""
    toy, iterative = toys.ToyCodec, toys.IterativeToyCodec

    class OneRateCodec(toy):
        def _encode(self, audio, bitrate):  # sends every sample, whatever the bitrate
            return super()._encode(audio, 64.0)

    class MislabelledCodec(toy):
        def _encode(self, audio, bitrate):
            return dataclasses.replace(super()._encode(audio, bitrate), nominal_kbps=64.0)

    class SmallCodebookCodec(toy):
        codebook_size = 128

    class InPlaceCodec(toy):
        def _encode(self, audio, bitrate):
            return super()._encode(audio.clamp_(-0.2, 0.2), bitrate)

    class SilentChannelCodec(toy):
        def check_audio(self, audio):  # takes any channel count and keeps the first
            return super().check_audio(audio[:1] if audio.dim() == 2 else audio)

    class UnseededCodec(iterative):
        def _decode(self, encoded, nfe, seed):  # draws from the global generator
            audio = toy._decode(self, encoded, nfe, seed)
            return audio + 1e-3 * torch.randn(audio.shape)

    class NoCheckpointHashCodec(toy):
        counter = 0

        def describe(self):  # a new identity per instance: nothing could be cached
            type(self).counter += 1
            return {**super().describe(), "instance": type(self).counter}

    return {
        "short output": (toys.ShortToyCodec, check_round_trip, "returned shape \\(1, 0\\)"),
        "encode changes its input": (InPlaceCodec, check_round_trip, "changed its input"),
        "nominal rate mislabelled": (MislabelledCodec, check_encoded_fields, "64.0, 32.0"),
        "codes outside the codebook": (SmallCodebookCodec, check_encoded_fields, "codebook"),
        "bitrate ignored": (OneRateCodec, check_bitrate_accounting, "payload bytes"),
        "channels not checked": (SilentChannelCodec, check_bad_input, "DID NOT RAISE"),
        "unseeded decoder": (UnseededCodec, check_determinism, "same seed decoded differently"),
        "identity per instance": (NoCheckpointHashCodec, check_determinism, "another hash"),
    }


BROKEN = (
    "short output",
    "encode changes its input",
    "nominal rate mislabelled",
    "codes outside the codebook",
    "bitrate ignored",
    "channels not checked",
    "unseeded decoder",
    "identity per instance",
)


@pytest.mark.parametrize("broken", BROKEN)
def test_a_codec_breaking_the_contract_fails_the_check_it_breaks(toys, broken):
    codec_class, check, message = _broken_codecs(toys)[broken]
    # pytest.raises reports a missing exception as pytest.fail.Exception, not AssertionError.
    with pytest.raises((AssertionError, pytest.fail.Exception), match=message):
        check(codec_class)
