"""EnCodec with an official release file and the official entropy-coding LM beside it
(``lm_checkpoint``), as ``--checkpoint official:encodec-24khz --entropy-coding`` runs it."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import torch
from bench.codecs.checkpoint import CheckpointError
from bench.codecs.encodec.codec import EncodecCodec
from helpers import official_encodec


def save_as_release(module: torch.nn.Module, folder: Path, stem: str) -> Path:
    """``module``'s state dict saved under a release-style name: its SHA-256 prefix."""
    scratch = folder / "scratch.th"
    torch.save(module.state_dict(), scratch)
    prefix = hashlib.sha256(scratch.read_bytes()).hexdigest()[:8]
    return scratch.rename(folder / f"{stem}-{prefix}.th")


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, Path]:
    """The official package's 24 kHz model and its LM (random weights) as release files."""
    encodec = official_encodec()
    folder = tmp_path_factory.mktemp("release")
    torch.manual_seed(3)
    with warnings.catch_warnings():  # the official code uses the deprecated weight_norm
        warnings.simplefilter("ignore")
        model = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
    # As the official get_lm_model builds it for this model.
    lm = encodec.model.LMModel(
        model.quantizer.n_q, model.quantizer.bins, num_layers=5, dim=200, past_context=262
    )
    return (
        save_as_release(model, folder, "encodec_24khz"),
        save_as_release(lm, folder, "encodec_lm_24khz"),
    )


def test_the_official_lm_codes_losslessly_and_enters_the_hash(release):
    model_file, lm_file = release
    plain = EncodecCodec(model_file)
    coded = EncodecCodec(model_file, entropy_coding=True, lm_checkpoint=lm_file)
    audio = 0.1 * torch.randn(1, 12000, generator=torch.Generator().manual_seed(0))
    packed, entropy_coded = plain.encode(audio, 3.0), coded.encode(audio, 3.0)
    assert torch.equal(packed.codes, entropy_coded.codes)
    assert torch.equal(plain.decode(packed), coded.decode(entropy_coded))
    assert coded.checkpoint_hash.startswith(plain.checkpoint_hash + "+lm")
    assert coded.describe()["entropy_coding"] is True


def test_an_official_model_asked_for_entropy_coding_without_its_lm_says_how(release):
    with pytest.raises(ValueError, match=r"lm_checkpoint=PATH, or --checkpoint official:NAME"):
        EncodecCodec(release[0], entropy_coding=True)


def test_an_lm_without_entropy_coding_is_refused(release):
    with pytest.raises(ValueError, match="expected entropy_coding=True with it"):
        EncodecCodec(release[0], lm_checkpoint=release[1])


def test_an_lm_beside_a_codec_bench_checkpoint_is_refused(release):
    with pytest.raises(ValueError, match="holds its own LM"):
        EncodecCodec(None, entropy_coding=True, lm_checkpoint=release[1])


def test_an_lm_file_of_the_other_rate_or_of_another_kind_is_refused(release, tmp_path):
    model_file, lm_file = release
    renamed = tmp_path / lm_file.name.replace("24khz", "48khz")
    renamed.write_bytes(lm_file.read_bytes())
    with pytest.raises(CheckpointError, match="the LM of the 48 kHz model, expected the 24khz"):
        EncodecCodec(model_file, entropy_coding=True, lm_checkpoint=renamed)
    with pytest.raises(CheckpointError, match="expected an official EnCodec LM state dict"):
        EncodecCodec(model_file, entropy_coding=True, lm_checkpoint=model_file)
    damaged = tmp_path / lm_file.name
    body = bytearray(lm_file.read_bytes())
    body[len(body) // 2] ^= 0xFF  # a byte of the weights
    damaged.write_bytes(bytes(body))
    # torch may notice first (its zip records CRCs), or the name's hash prefix does.
    with pytest.raises(CheckpointError, match="damaged or altered download|cannot read"):
        EncodecCodec(model_file, entropy_coding=True, lm_checkpoint=damaged)
