"""`bench nll`: the teacher-forced NLL of a SampleRNN checkpoint in bits per sample, chunked
exactly, with a bootstrap interval over items; its run directory follows `bench run`'s
conventions (provenance in config.json, a row per item), resumes a killed run without
rescoring finished items and refuses a directory of another run, and bad usage is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch
from bench.codecs.encodec.codec import DEMO_CHECKPOINT as ENCODEC_DEMO
from bench.codecs.samplernn.conditioning import (
    conditioned_config,
    load_tokenizer,
    samplernn_checkpoint,
)
from bench.codecs.samplernn.model import CONFIGS, ZERO_LEVEL, SampleRnn, bits_per_sample

from bench.cli import EXIT_OK, EXIT_USAGE, main

pytestmark = pytest.mark.usefixtures("single_thread")


def save_model(path, conditional=False, seed=0):
    torch.manual_seed(seed)
    config = CONFIGS["tiny"]
    if conditional:
        config = conditioned_config(config, load_tokenizer(ENCODEC_DEMO))
    model = SampleRnn(config)
    samplernn_checkpoint(
        config, model.state_dict(), ENCODEC_DEMO if conditional else None, step=7
    ).save(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three short items at 22.05 kHz, one of them stereo."""
    folder = tmp_path_factory.mktemp("nll_data")
    rng = np.random.default_rng(0)
    for index in range(3):
        time = np.arange(6_000 + 1_000 * index) / 22_050
        tone = 0.3 * np.sin(2 * np.pi * (200 + 100 * index) * time)
        audio = tone + 0.02 * rng.standard_normal(time.size)
        if index == 2:
            audio = np.stack([audio, 0.5 * audio], axis=1)
        soundfile.write(folder / f"item{index}.wav", audio, 22_050)
    return f"folder:{folder}"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("nll_model") / "model.pt")


def test_chunked_bits_equal_one_forward_pass():
    torch.manual_seed(0)
    model = SampleRnn(CONFIGS["tiny"]).eval()
    levels = torch.randint(0, 256, (1, 16 + 160))
    levels[:, :16] = ZERO_LEVEL
    with torch.no_grad():
        output = model(levels)
    expected = bits_per_sample(output.logits, model.targets(levels)).item() * 160
    # 4 chunks, the last one short; 50 is rounded down to 48, whole top frames.
    assert model.sequence_bits(levels, chunk_samples=50) == pytest.approx(expected, rel=1e-5)


def test_a_checkpoint_without_a_likelihood_is_refused(data, tmp_path, capsys):
    arguments = ["nll", "--model", str(ENCODEC_DEMO), "--data", data, "--out", str(tmp_path)]
    assert main(arguments) == EXIT_USAGE
    assert "is a 'encodec' checkpoint, which has no likelihood" in capsys.readouterr().err


def test_bench_nll_scores_every_item_with_provenance(data, model_path, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "nll",
                "--model",
                str(model_path),
                "--data",
                data,
                "--out",
                str(out),
                "--json",
                "--quiet",
            ]
        )
        == EXIT_OK
    )
    summary = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [row["item"] for row in rows] == ["item0", "item1", "item2"]
    for row in rows:
        # Whole top frames of 16 kHz samples, their bits and the ratio.
        assert row["samples"] % 16 == 0 and row["bits"] / row["samples"] == row["bits_per_sample"]
        assert 0 < row["bits_per_sample"] < 8.5  # an untrained model: near log2(256)
    assert rows[0]["samples"] == 6_000 * 16_000 // 22_050 // 16 * 16
    values = [row["bits_per_sample"] for row in rows]
    assert summary["all"]["bits_per_sample"] == pytest.approx(np.mean(values))
    assert summary["all"]["ci_low"] <= np.mean(values) <= summary["all"]["ci_high"]
    assert summary["all"]["failed"] == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["step"] == 7 and len(config["model"]["hash"]) == 64
    assert {item["id"] for item in config["dataset"]["items"]} == {"item0", "item1", "item2"}
    assert all(len(item["input_hash"]) == 64 for item in config["dataset"]["items"])
    assert "torch" in config["versions"] and "git" in config and "device" in config


def test_a_killed_run_resumes_without_rescoring_finished_items(data, model_path, tmp_path):
    out = tmp_path / "run"
    arguments = ["nll", "--model", str(model_path), "--data", data, "--out", str(out), "--quiet"]
    assert main(arguments) == EXIT_OK
    results = out / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    # Killed while writing the third row: two rows and a torn line.
    first_two = [json.loads(line) for line in lines[:2]]
    first_two[0]["bits_per_sample"] = 1.25  # marks a row that must be kept, not recomputed
    results.write_text("".join(json.dumps(row) + "\n" for row in first_two) + lines[2][:20])
    assert main(arguments) == EXIT_OK
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [row["item"] for row in rows] == ["item0", "item1", "item2"]
    assert rows[0]["bits_per_sample"] == 1.25
    assert rows[2] == json.loads(lines[2])


def test_a_directory_of_another_run_is_refused(data, tmp_path, capsys):
    model = save_model(tmp_path / "model.pt")
    arguments = ["nll", "--model", str(model), "--data", data, "--out", str(tmp_path / "run")]
    assert main([*arguments, "--quiet"]) == EXIT_OK
    save_model(model, seed=1)  # retrained in place: the finished rows are another model's
    assert main([*arguments, "--quiet"]) == EXIT_USAGE
    assert "holds an NLL run of other model than this one" in capsys.readouterr().err
    assert main([*arguments, "--limit", "1"]) == EXIT_USAGE
    assert "holds an NLL run of other settings" in capsys.readouterr().err


def test_a_decoder_is_scored_on_the_bitstream_of_its_bitrate(data, tmp_path, capsys):
    model = save_model(tmp_path / "decoder.pt", conditional=True)
    common = ["nll", "--model", str(model), "--data", data, "--limit", "1", "--quiet", "--json"]
    assert main([*common, "--out", str(tmp_path / "missing")]) == EXIT_USAGE
    assert "expected one of 1.5, 3, 6, 12 kbps" in capsys.readouterr().err
    scores = {}
    for bitrate in ("1.5", "12"):
        assert main([*common, "--bitrate", bitrate, "--out", str(tmp_path / bitrate)]) == EXIT_OK
        scores[bitrate] = json.loads(capsys.readouterr().out)["all"]["bits_per_sample"]
    assert scores["1.5"] != scores["12"]  # the condition differs with the levels sent
    assert main([*common, "--bitrate", "5", "--out", str(tmp_path / "5")]) == EXIT_USAGE


def test_an_unconditional_model_takes_no_bitrate(data, model_path, tmp_path, capsys):
    arguments = [
        "nll",
        "--model",
        str(model_path),
        "--data",
        data,
        "--bitrate",
        "3",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(arguments) == EXIT_USAGE
    assert "unconditional SampleRNN, which reads no bitstream" in capsys.readouterr().err
