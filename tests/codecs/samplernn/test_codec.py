"""SampleRNN as a codec decoder over the EnCodec demo's bitstream, with a random-weight tiny
model: the payload is EnCodec's at every bitrate to the byte, the decoder draws 16 kHz samples
conditioned on the dequantized latent and returns the input's length at EnCodec's rate, seeds
decide the audio, and checkpoints that cannot decode are refused. The shipped demo's round trip
and bad input are the codec contract's (test_contract.py)."""

from __future__ import annotations

import math
import shutil

import helpers
import pytest
import torch
from bench.codecs.checkpoint import CheckpointError
from bench.codecs.encodec.codec import DEMO_CHECKPOINT as ENCODEC_DEMO
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.samplernn.codec import SampleRnnCodec
from bench.codecs.samplernn.conditioning import (
    conditioned_config,
    load_tokenizer,
    samplernn_checkpoint,
)
from bench.codecs.samplernn.model import CONFIGS, SampleRnn

pytestmark = pytest.mark.usefixtures("single_thread")

SECONDS = 0.25


def speech_like(seconds: float = SECONDS, seed: int = 0) -> torch.Tensor:
    return helpers.speech_like(seconds, seed)


@pytest.fixture(scope="module")
def encodec():
    return EncodecCodec()


def save_checkpoint(path, tokenizer=ENCODEC_DEMO, conditional=True):
    torch.manual_seed(0)
    config = CONFIGS["tiny"]
    if conditional:
        config = conditioned_config(config, load_tokenizer(tokenizer))
    model = SampleRnn(config)
    samplernn_checkpoint(config, model.state_dict(), tokenizer if conditional else None).save(path)
    return path


@pytest.fixture(scope="module")
def codec(tmp_path_factory):
    return SampleRnnCodec(save_checkpoint(tmp_path_factory.mktemp("samplernn") / "model.pt"))


def test_the_payload_is_encodecs_at_every_bitrate_to_the_byte(codec, encodec):
    audio = speech_like()
    assert codec.bitrates == encodec.bitrates
    for bitrate in codec.bitrates:
        sent, reference = codec.encode(audio, bitrate), encodec.encode(audio, bitrate)
        assert sent.payload == reference.payload
        assert sent.actual_kbps == reference.actual_kbps


def test_the_decoder_draws_16khz_samples_on_the_latent_sent(codec, encodec, monkeypatch):
    audio = speech_like()
    encoded = codec.encode(audio, 3.0)
    calls = []
    generate = codec.model.generate

    def spy(num_samples, **options):
        calls.append((num_samples, options["condition"]))
        return generate(num_samples, **options)

    monkeypatch.setattr(codec.model, "generate", spy)
    decoded = codec.decode(encoded, seed=0)
    assert decoded.shape == audio.shape and decoded.dtype == torch.float32
    ((num_samples, condition),) = calls
    assert num_samples == math.ceil(audio.shape[1] * 16_000 / 24_000)
    # The condition: the latent of the 4 levels of 3 kbps, each frame held over its top frames.
    latent = codec.tokenizer.latent_of_codes(encodec.read_segments(encoded)[0].codes)
    assert latent.shape[1] == encoded.codes.shape[1]
    assert torch.equal(condition, codec.model.align_condition(latent, num_samples))
    other = codec.tokenizer.latent_of_codes(
        encodec.read_segments(codec.encode(audio, 6.0))[0].codes
    )
    assert not torch.equal(latent, other)


def test_the_same_seed_gives_the_same_audio_and_other_seeds_other_audio(codec):
    encoded = codec.encode(speech_like(0.1), 1.5)
    first = codec.decode(encoded, seed=3)
    assert torch.equal(first, codec.decode(encoded, seed=3))
    assert not torch.equal(first, codec.decode(encoded, seed=4))
    assert codec.nfe_options is None
    with pytest.raises(ValueError, match="one-shot decoder and takes no NFE"):
        codec.decode(encoded, nfe=4)


def test_describe_names_the_resampling_and_the_encoder(codec):
    description = codec.describe()
    assert description["decoder_sample_rate"] == 16_000 and description["sample_rate"] == 24_000
    assert "bench.audio.resample" in description["notes"][0]
    assert description["tokenizer"]["name"] == "encodec"
    assert codec.checkpoint_hash.endswith(EncodecCodec().checkpoint_hash[:8])


def test_an_unconditional_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "unconditional.pt", conditional=False)
    with pytest.raises(CheckpointError, match="unconditional SampleRNN cannot decode"):
        SampleRnnCodec(path)


def test_a_changed_encodec_is_refused(tmp_path):
    tokenizer = shutil.copy(ENCODEC_DEMO, tmp_path / "encodec.pt")
    path = save_checkpoint(tmp_path / "model.pt", tokenizer=tokenizer)
    SampleRnnCodec(path)
    # Other weights in the referenced file: the latent would mean other things.
    payload = torch.load(tokenizer, weights_only=True)
    state = payload["networks"]["codec"]["state_dict"]
    first = next(iter(state))
    state[first] = state[first] + 1
    payload["networks"]["codec"]["hash"] = None
    torch.save(payload, tokenizer)
    with pytest.raises(CheckpointError, match="encodec.pt"):
        SampleRnnCodec(path)


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])
def test_a_bad_temperature_is_refused(temperature):
    with pytest.raises(ValueError, match="temperature: expected a finite value > 0"):
        SampleRnnCodec(temperature=temperature)


def test_a_missing_demo_checkpoint_says_how_to_pass_one(monkeypatch, tmp_path):
    monkeypatch.setattr(SampleRnnCodec, "demo_checkpoint", tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="demo decoder is missing.*--codec-checkpoint"):
        SampleRnnCodec()


def test_flowmacs_mel_tokens_can_condition_a_decoder(tmp_path):
    from bench.codecs.flowmac.codec import DEMO_CHECKPOINT as FLOWMAC_DEMO
    from bench.codecs.flowmac.codec import FlowMacCodec

    codec = SampleRnnCodec(save_checkpoint(tmp_path / "model.pt", tokenizer=FLOWMAC_DEMO))
    flowmac = FlowMacCodec()
    assert codec.bitrates == flowmac.bitrates and codec.sample_rate == flowmac.sample_rate
    assert codec.config.condition_dim == flowmac.config.width
    assert codec.config.condition_hop == 16_000 / flowmac.frame_rate
    audio = speech_like(0.3)[:, : int(0.3 * flowmac.sample_rate)]
    for bitrate in codec.bitrates:
        sent = codec.encode(audio, bitrate)
        assert sent.payload == flowmac.encode(audio, bitrate).payload
    latent = codec.tokenizer.latent_of_payload(sent)
    # The stream read back from the payload is the one computed from the audio in training.
    assert torch.allclose(latent, codec.tokenizer.latent_of_audio(audio, sent.nominal_kbps))
    assert codec.decode(sent, seed=0).shape == audio.shape
    assert codec.describe()["tokenizer"]["name"] == "flowmac"
