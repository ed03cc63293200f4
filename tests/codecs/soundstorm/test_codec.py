"""SoundStorm as a codec over the EnCodec demo's tokens, with a random-weight tiny model: the
payload is EnCodec's at the same bitrate to the byte, the sent levels come back unchanged and
the rest are generated, NFE counts the passes spent (validated, the invalid ones refused with
the valid list), seeds decide the tokens, the prompted continuation sends and keeps its
prompt, and the checkpoint's EnCodec is checked. The round trip and bad input of the shipped
demo are the codec contract's (test_contract.py)."""

from __future__ import annotations

import shutil

import helpers
import pytest
import torch
from bench.codecs.bitstream import unpack
from bench.codecs.checkpoint import CheckpointError
from bench.codecs.encodec.codec import DEMO_CHECKPOINT as ENCODEC_DEMO
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.modules.conformer import ConformerConfig
from bench.codecs.soundstorm.codec import SoundStormCodec, soundstorm_checkpoint
from bench.codecs.soundstorm.model import SoundStormConfig, SoundStormModel

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = SoundStormConfig(
    name="test",
    levels=8,
    conformer=ConformerConfig(dim=32, heads=2, layers=1, feedforward=64),
)
SECONDS = 0.5


def speech_like(seconds: float = SECONDS, seed: int = 0) -> torch.Tensor:
    return helpers.speech_like(seconds, seed)


def save_checkpoint(path, tokenizer=ENCODEC_DEMO):
    torch.manual_seed(0)
    model = SoundStormModel(CONFIG)
    soundstorm_checkpoint(CONFIG, model.state_dict(), tokenizer).save(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("soundstorm") / "model.pt")


@pytest.fixture(scope="module")
def codec(checkpoint):
    return SoundStormCodec(checkpoint)


@pytest.fixture(scope="module")
def encodec():
    return EncodecCodec()


def test_it_sends_the_coarse_levels_at_encodecs_bitrates_below_the_model_level_count(codec):
    assert codec.bitrates == (1.5, 3.0)
    assert codec.num_codebooks == 8 and codec.codebook_size == 1024
    assert codec.describe()["generated_levels"] == {"1.5": 6, "3": 4}


def test_the_payload_is_encodecs_bitstream_at_the_same_bitrate(codec, encodec):
    audio = speech_like()
    for bitrate in codec.bitrates:
        ours, theirs = codec.encode(audio, bitrate), encodec.encode(audio, bitrate)
        assert ours.payload == theirs.payload
        assert ours.actual_kbps == theirs.actual_kbps


def test_the_sent_levels_are_kept_and_the_rest_generated(codec, encodec):
    audio = speech_like()
    truth = encodec.encode(audio, 6.0).codes  # all 8 levels
    for bitrate, sent in ((1.5, 2), (3.0, 4)):
        generation = codec.generate_tokens(codec.encode(audio, bitrate), seed=0)
        tokens = generation.tokens[0]
        assert tokens.shape == truth.shape
        assert torch.equal(tokens[:sent], truth[:sent])
        assert 0 <= int(tokens.min()) and int(tokens.max()) < 1024
        # The paper's 16 iterations at the first generated level, one at each further one.
        assert generation.forward_passes == 16 + (8 - sent - 1)


def test_nfe_is_the_first_levels_iterations_and_the_passes_are_reported(codec):
    # 1.5 kbps generates 6 levels (passes = iterations + 5), 3 kbps 4 (iterations + 3).
    assert codec.nfe_options == tuple(range(1, 17))
    audio = speech_like(0.2)
    for bitrate, further in ((1.5, 5), (3.0, 3)):
        encoded = codec.encode(audio, bitrate)
        for nfe in (1, 2, 4, 8, 16):
            generation = codec.generate_tokens(encoded, nfe=nfe, seed=0)
            assert generation.forward_passes == nfe + further
            assert codec.network_passes(bitrate, nfe) == nfe + further
        assert codec.network_passes(bitrate, None) == 16 + further
    (note,) = codec.describe()["notes"]
    assert "NFE + 5 passes at 1.5 kbps" in note and "NFE + 3 passes at 3 kbps" in note


def test_an_invalid_nfe_is_refused_with_the_valid_ones(codec):
    encoded = codec.encode(speech_like(0.1), 1.5)
    for nfe in (0, 17):
        with pytest.raises(ValueError, match=f"does not support nfe={nfe}; supported: 1, 2, "):
            codec.decode(encoded, nfe=nfe)
    with pytest.raises(ValueError, match="does not support nfe=17"):
        codec.network_passes(1.5, 17)


def test_the_same_seed_gives_the_same_tokens_and_other_seeds_others(codec, checkpoint):
    encoded = codec.encode(speech_like(), 1.5)
    first = codec.generate_tokens(encoded, nfe=16, seed=0).tokens
    with torch.random.fork_rng():
        torch.manual_seed(123)
        again = SoundStormCodec(checkpoint).generate_tokens(encoded, nfe=16, seed=0).tokens
    assert torch.equal(first, again)
    assert not torch.equal(first, codec.generate_tokens(encoded, nfe=16, seed=1).tokens)
    assert torch.equal(codec.decode(encoded, nfe=16, seed=4), codec.decode(encoded, nfe=16, seed=4))


def test_the_prompted_continuation_sends_every_level_of_the_prompt_and_keeps_it(
    checkpoint, codec, encodec
):
    prompted = SoundStormCodec(checkpoint, prompt_seconds=0.2)
    audio = speech_like()
    truth = encodec.encode(audio, 6.0).codes
    encoded = prompted.encode(audio, 1.5)
    plain = codec.encode(audio, 1.5)
    prompt_frames = 15  # 0.2 s at 75 Hz
    assert unpack(encoded.payload).header == {"codec": "soundstorm", "prompt_frames": 15}
    # The prompt's 6 further levels cost 10 bits a code on top of EnCodec's bitstream, plus
    # the outer header and framing (under 64 bytes).
    extra_bits = (len(encoded.payload) - len(plain.payload)) * 8
    assert 6 * prompt_frames * 10 <= extra_bits < 6 * prompt_frames * 10 + 8 * 64
    generation = prompted.generate_tokens(encoded, nfe=16, seed=0)
    tokens = generation.tokens[0]
    assert torch.equal(tokens[:, :prompt_frames], truth[:, :prompt_frames])
    assert torch.equal(tokens[:2], truth[:2])
    assert generation.forward_passes == 21
    assert prompted.decode(encoded, nfe=16, seed=0).shape == audio.shape
    assert prompted.checkpoint_hash != codec.checkpoint_hash  # other audio, another cache key


def test_a_plain_encodec_bitstream_at_the_model_level_count_is_refused(codec, encodec):
    encoded = encodec.encode(speech_like(0.1), 6.0)
    with pytest.raises(ValueError, match="expected fewer than 8 levels sent, got 8"):
        codec.generate_tokens(encoded)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompt_seconds": -1.0}, "prompt_seconds: expected a finite value >= 0, got -1.0"),
        ({"temperature": 0.0}, "temperature: expected a finite value > 0, got 0.0"),
        ({"top_k": 0}, "top_k: expected 1..1024 or None, got 0"),
    ],
)
def test_bad_options_are_refused(checkpoint, options, message):
    with pytest.raises(ValueError, match=message):
        SoundStormCodec(checkpoint, **options)


def test_the_tokenizer_is_the_referenced_encodec_checked_by_hash(tmp_path):
    tokenizer = shutil.copy(ENCODEC_DEMO, tmp_path / "encodec.pt")
    path = save_checkpoint(tmp_path / "model.pt", tokenizer)
    codec = SoundStormCodec(path)
    assert codec.describe()["tokenizer"]["checkpoint"] == str(tmp_path / "encodec.pt")
    # Both files move together: the reference is relative.
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("encodec.pt", "model.pt"):
        shutil.move(tmp_path / name, moved / name)
    assert SoundStormCodec(moved / "model.pt").checkpoint_hash == codec.checkpoint_hash
    # Another EnCodec in the referenced file is refused: the tokens would mean other things.
    payload = torch.load(moved / "encodec.pt", weights_only=True)
    state = payload["networks"]["codec"]["state_dict"]
    first = next(iter(state))
    state[first] = state[first] + 1
    payload["networks"]["codec"]["hash"] = None
    torch.save(payload, moved / "encodec.pt")
    with pytest.raises(CheckpointError, match="encodec.pt"):
        SoundStormCodec(moved / "model.pt")


def test_a_missing_demo_checkpoint_says_how_to_pass_one(monkeypatch, tmp_path):
    monkeypatch.setattr(SoundStormCodec, "demo_checkpoint", tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="demo checkpoint is missing.*bench train soundstorm"):
        SoundStormCodec()
