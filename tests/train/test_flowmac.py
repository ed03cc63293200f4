"""FlowMAC's two recipes through the training loop: the vocoder (adversarial, exported as the
network a codec bundles) and the codec (normalisation computed at step 0 and saved, the
vocoder bundled into its export, resume exact, a bad vocoder refused before training)."""

from __future__ import annotations

import pytest
import torch
from bench.codecs.checkpoint import load_checkpoint
from bench.codecs.flowmac.codec import FlowMacCodec
from helpers import write_tone

from bench.cli import EXIT_USAGE, main
from bench.train.loop import train
from bench.train.settings import FlowMacTrainSettings, recipe_settings

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("flowmac_data")
    for index, frequency in enumerate((220.0, 330.0, 550.0)):
        write_tone(folder / f"tone{index}.wav", 1.5, 24_000, frequency=frequency)
    return f"folder:{folder}"


@pytest.fixture(scope="module")
def vocoder(data, tmp_path_factory):
    settings = recipe_settings(
        "flowmac-vocoder",
        data=data,
        steps=2,
        batch_size=2,
        segment_seconds=0.25,
        config="tiny-light",
        discriminators=("mpd",),
        discriminator_filters=8,
    )
    return train(settings, tmp_path_factory.mktemp("vocoder"), progress=False)


def codec_settings(data: str, steps: int, **given) -> FlowMacTrainSettings:
    return recipe_settings(
        "flowmac", data=data, steps=steps, batch_size=2, segment_seconds=1.0, **given
    )


def test_the_vocoder_trains_adversarially_and_exports_the_generator(vocoder):
    checkpoint = load_checkpoint(vocoder, "flowmac-vocoder")
    assert set(checkpoint.networks) == {"vocoder"}
    assert checkpoint.network("vocoder").config["mel"]["hop_length"] == 512
    log = (vocoder.parent / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 2 and '"adversarial"' in log[0] and '"discriminator"' in log[0]


def test_the_codec_export_bundles_the_vocoder_and_decodes(data, vocoder, tmp_path):
    model = train(codec_settings(data, 2, vocoder=str(vocoder)), tmp_path, progress=False)
    checkpoint = load_checkpoint(model, "flowmac")
    assert set(checkpoint.networks) == {"codec", "vocoder"}
    assert checkpoint.network("vocoder").hash == load_checkpoint(vocoder).network("vocoder").hash
    # The normalisation was computed over the training data at step 0 and saved.
    mean = checkpoint.network("codec").state_dict["mel_mean"]
    assert mean.abs().max() > 0 and not torch.equal(mean, torch.zeros_like(mean))
    codec = FlowMacCodec(model)
    audio = 0.1 * torch.randn(1, 12_000)
    decoded = codec.decode(codec.encode(audio, 1.5), nfe=2, seed=0)
    assert decoded.shape == audio.shape and torch.isfinite(decoded).all()


def test_a_resumed_run_ends_as_an_uninterrupted_one_and_may_change_vocoder(data, vocoder, tmp_path):
    straight = train(codec_settings(data, 3), tmp_path / "straight", progress=False)
    train(codec_settings(data, 2), tmp_path / "resumed", progress=False)
    resumed = train(
        codec_settings(data, 3, vocoder=str(vocoder)),
        tmp_path / "resumed",
        resume=True,
        progress=False,
    )
    assert (
        load_checkpoint(resumed).network("codec").hash
        == load_checkpoint(straight).network("codec").hash
    )
    with pytest.raises(ValueError, match="only --steps may change"):
        train(
            codec_settings(data, 4, learning_rate=1e-3),
            tmp_path / "resumed",
            resume=True,
            progress=False,
        )


def test_a_bad_vocoder_is_refused_before_training(data, tmp_path, capsys):
    not_a_vocoder = tmp_path / "codec_run"
    model = train(codec_settings(data, 1), not_a_vocoder, progress=False)
    status = main(
        [
            "train",
            "flowmac",
            "--data",
            data,
            "--steps",
            "1",
            "--vocoder",
            str(model),
            "--out",
            str(tmp_path / "refused"),
        ]
    )
    assert status == EXIT_USAGE
    assert "--vocoder: " in (error := capsys.readouterr().err)
    assert "expected a flowmac-vocoder checkpoint, got flowmac" in error
    assert not (tmp_path / "refused" / "last.pt").exists()
