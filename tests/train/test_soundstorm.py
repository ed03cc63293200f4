"""SoundStorm's recipe through the training loop on a few seconds of real speech: the corpus
is encoded once into a token cache checked by hash (steps never encode; a second run reads the
cache; a damaged file is encoded again), two steps export a checkpoint the codec loads and
decodes with, and a checkpoint that is not an EnCodec is refused before training."""

from __future__ import annotations

import shutil

import pytest
import torch
from bench.codecs.encodec.codec import DEMO_CHECKPOINT as ENCODEC_DEMO
from bench.codecs.soundstorm.codec import SoundStormCodec

from bench.train.loop import train
from bench.train.settings import recipe_settings
from bench.train.solvers.soundstorm import SoundStormSolver

pytestmark = pytest.mark.usefixtures("single_thread")

# The two shortest items, 6.3 s in all.
ITEMS = (
    "sense_and_sensibility_01_austen_64kb-0880.wav",
    "sense_and_sensibility_01_austen_64kb-0930.wav",
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    from helpers import SHARED_DATA

    source = SHARED_DATA / "librivox"
    if not source.is_dir():
        pytest.skip(f"real speech not found at {source}")
    folder = tmp_path_factory.mktemp("speech")
    for name in ITEMS:
        shutil.copy(source / name, folder / name)
    return f"folder:{folder}"


def settings(data: str, cache, **given):
    defaults = {"codec_checkpoint": str(ENCODEC_DEMO), "token_cache": str(cache)}
    return recipe_settings(
        "soundstorm", data=data, steps=2, batch_size=2, segment_seconds=1.0, **defaults | given
    )


def test_two_steps_export_a_checkpoint_the_codec_decodes_with(data, tmp_path):
    model = train(settings(data, tmp_path / "tokens"), tmp_path / "run", progress=False)
    log = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 2 and '"loss"' in log[0]
    codec = SoundStormCodec(model)
    assert codec.model_note == "a codec-bench checkpoint trained for 2 steps"
    audio = 0.1 * torch.randn(1, 4_800, generator=torch.Generator().manual_seed(0))
    assert codec.decode(codec.encode(audio, 1.5), nfe=6, seed=0).shape == audio.shape


def test_the_corpus_is_encoded_once_and_read_back_from_the_cache(data, tmp_path):
    cache = tmp_path / "tokens"
    first = SoundStormSolver(settings(data, cache))
    first.use_data()
    assert first.cache_hits == 0 and len(list(cache.rglob("*.npy"))) == len(ITEMS)
    # 1 s windows of 8 levels; every item at least a window long.
    assert all(tokens.shape[0] == 8 and tokens.shape[1] >= 75 for tokens in first.tokens)

    second = SoundStormSolver(settings(data, cache))
    second.use_data()
    assert second.cache_hits == len(ITEMS)
    assert all((a == b).all() for a, b in zip(first.tokens, second.tokens, strict=True))

    # Steps draw from the cached tokens: the tokenizer is never called again.
    def refuse(*_):
        raise AssertionError("a step encoded audio")

    second.tokenizer.encode = refuse
    for step in range(2):
        assert second.run_step(step)["scored_tokens"] >= 0

    # A damaged cache file fails its hash and is encoded again.
    damaged = sorted(cache.rglob("*.npy"))[0]
    damaged.write_bytes(damaged.read_bytes()[:-4] + b"\0\0\0\1")
    third = SoundStormSolver(settings(data, cache))
    third.use_data()
    assert third.cache_hits == len(ITEMS) - 1
    assert all((a == b).all() for a, b in zip(first.tokens, third.tokens, strict=True))


def test_a_codec_checkpoint_that_is_not_an_encodec_is_refused_before_training(data, tmp_path):
    not_encodec = tmp_path / "noise.pt"
    torch.save({"weights": torch.zeros(3)}, not_encodec)
    with pytest.raises(ValueError, match="--codec-checkpoint: .*noise.pt"):
        SoundStormSolver(settings(data, tmp_path, codec_checkpoint=str(not_encodec)))
