"""Running a study (`bench.ablate.run`, `bench ablate`): one budget for every variant, no-op
overrides give identical models, a killed study resumes without training a variant twice and
ends with the uninterrupted study's table, and the evaluation data must be held out."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import soundfile
import torch
from bench.codecs.checkpoint import Checkpoint, load_checkpoint
from bench.codecs.encodec.codec import EncodecCodec
from helpers import speech_like, start_bench

from bench.ablate.run import STUDY_FILE, run_study
from bench.ablate.study import load_study
from bench.ablate.tables import study_statistics, write_tables
from bench.data import load_dataset

pytestmark = pytest.mark.usefixtures("single_thread")

# Variants `a` and `same` differ by a no-op override (the base already sets MS-STFT);
# `worse` is `a` too until a test degrades its decoder on purpose.
STUDY = """
description = "tiny test study"
recipe = "encodec"
baseline = "a"
seeds = [0]
{top}
[base]
config = "tiny"
steps = {steps}
batch_size = 2
segment_seconds = 0.25
checkpoint_every = 2
discriminator_filters = 4
discriminators = "msstft"
# Past the last step: the codebooks' k-means, most of a tiny run's cost, never runs.
quantizer_warmup_steps = 1000
[variants.a]
[variants.same]
discriminators = "msstft"
{extra}
[evaluation]
data = "embedded"
tags = ["speech"]
exclude_tags = ["synthetic", "noisy"]
limit = {limit}
bitrates = [6]
metrics = ["mel_distance", "si_sdr"]
"""


def write_study(
    folder: Path, steps: int = 3, extra: str = "", top: str = "", items: int = 2
) -> Path:
    """A tiny study; ``items``: held-out items scored (a paired test needs 6 to be
    significant at 5 %)."""
    path = folder / "study.toml"
    path.write_text(STUDY.format(steps=steps, extra=extra, top=top, limit=items))
    return path


@pytest.fixture(scope="module")
def training_data(tmp_path_factory) -> str:
    """Four short speech-like clips: never the evaluation's items."""
    folder = tmp_path_factory.mktemp("training")
    for index in range(4):
        audio = speech_like(1.0, seed=index).squeeze(0).numpy()
        soundfile.write(folder / f"clip{index}.wav", audio, 24_000)
    return f"folder:{folder}"


def model_state(study_dir: Path, variant: str, seed: int = 0) -> dict:
    checkpoint = load_checkpoint(study_dir / "train" / variant / f"seed-{seed}" / "model.pt")
    return checkpoint.network("codec").state_dict


def perturb_decoder(model_path: Path) -> None:
    """Noise on the weights of the decoder's output convolution, saved (and hashed) as a
    checkpoint like any other: the model file changes."""
    checkpoint = load_checkpoint(model_path)
    network = checkpoint.network("codec")
    state = dict(network.state_dict)
    last = [key for key in state if key.startswith("decoder") and "weight" in key][-1]
    generator = torch.Generator().manual_seed(0)
    weight = state[last].float()
    state[last] = weight + 0.1 * weight.std() * torch.randn(weight.shape, generator=generator)
    Checkpoint(
        codec=checkpoint.codec,
        networks={"codec": type(network)(network.config, state)},
        step=checkpoint.step,
        metadata=checkpoint.metadata,
    ).save(model_path)


def add_noise_to_the_output_of(variant: str, monkeypatch) -> None:
    """White noise at -20 dBFS on the decoded audio of ``variant``'s models alone: a variant
    made worse on purpose."""
    decode = EncodecCodec._decode

    def noisy(self, encoded, nfe, seed):
        decoded = decode(self, encoded, nfe, seed)
        if Path(self.checkpoint_path).parts[-3] != variant:
            return decoded
        generator = torch.Generator().manual_seed(0)
        return decoded + 0.1 * torch.randn(decoded.shape, generator=generator)

    monkeypatch.setattr(EncodecCodec, "_decode", noisy)


def test_no_op_variants_train_identical_models_and_a_degraded_one_is_flagged(
    tmp_path, training_data, monkeypatch
):
    path = write_study(
        tmp_path, extra="[variants.worse]", top='comparisons = [["worse", "same"]]', items=8
    )
    study = load_study(str(path))
    out = tmp_path / "study"
    first = run_study(study, training_data, out, executor="inline", progress=False)
    for variant in ("same", "worse"):
        other = model_state(out, variant)
        for name, tensor in model_state(out, "a").items():
            assert torch.equal(tensor, other[name]), (variant, name)
    statistics = study_statistics(study, first.evaluation_dir)
    assert set(statistics["verdict"].dropna()) == {"no significant difference"}

    # The model of `worse` changes and its decoder output gets noise (run in this process).
    perturb_decoder(out / "train" / "worse" / "seed-0" / "model.pt")
    add_noise_to_the_output_of("worse", monkeypatch)
    again = run_study(study, training_data, out, executor="inline", progress=False)
    assert not any(model.trained_now for model in again.trained.values())
    # The evaluation scored the old model: kept aside, and the new one scores the new model.
    assert (out / "evaluation.stale-1" / "config.json").exists()
    statistics = study_statistics(study, again.evaluation_dir).set_index(["variant", "metric"])
    # (SI-SDR is not asked to drop: a model of three steps has none to lose.)
    assert statistics.loc[("worse", "mel_distance"), "verdict"] == "candidate worse"
    for metric in ("mel_distance", "si_sdr"):
        same = statistics.loc[("same", metric)]
        assert same["verdict"] == "no significant difference"
        assert same["difference"] == 0
    paths = write_tables(study, out)
    text = paths[0].read_text()
    assert "**worse** against a: significantly worse on mel_distance" in text
    assert "**same** against a: not significantly different on mel_distance" in text
    assert "**worse** against same: significantly worse on mel_distance" in text
    assert r"\toprule" in paths[2].read_text()
    assert pd.read_csv(paths[1])["variant"].tolist().count("worse") == 2


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_killed_study_resumes_without_retraining_and_ends_with_the_uninterrupted_table(
    tmp_path, training_data
):
    path = write_study(tmp_path, steps=16)
    arguments = ["ablate", str(path), "--data", training_data, "--workers", "1", "--quiet"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = start_bench([*arguments, "--out", str(tmp_path / "straight")], environment)
    assert straight.wait(timeout=600) == 0, straight.stderr.read()

    out = tmp_path / "killed"
    killed = start_bench([*arguments, "--out", str(out)], environment)
    # One worker trains the variants in turn: kill once `a` is finished and `same` has saved
    # a state part of the way.
    _wait_for(lambda: (out / "train" / "same" / "seed-0" / "last.pt").exists(), 300, "a state")
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    finished = out / "train" / "a" / "seed-0" / "model.pt"
    assert finished.exists() and not (out / "train" / "same" / "seed-0" / "model.pt").exists()
    finished_at = finished.stat().st_mtime_ns

    resumed = start_bench([*arguments, "--out", str(out)], environment)
    _, errors = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, errors
    assert "a seed 0: already trained" in errors and "same seed 0: trained" in errors
    assert finished.stat().st_mtime_ns == finished_at
    log = [
        json.loads(line) for line in (out / "train" / "same" / "seed-0" / "train_log.jsonl").open()
    ]
    assert [entry["step"] for entry in log] == list(range(1, 17)), "each step trained once"
    for variant in ("a", "same"):
        for name, tensor in model_state(out, variant).items():
            assert torch.equal(tensor, model_state(tmp_path / "straight", variant)[name])
    assert (out / "ablation.csv").read_text() == (
        tmp_path / "straight" / "ablation.csv"
    ).read_text()
    runs = json.loads((out / STUDY_FILE).read_text())["runs"]
    assert len(runs) == 2 and all(run["command"].startswith("bench ablate") for run in runs)


def test_evaluation_data_that_was_trained_on_is_refused(tmp_path, training_data):
    folder = Path(training_data.removeprefix("folder:"))
    leaked = tmp_path / "training"
    shutil.copytree(folder, leaked)
    item = load_dataset("embedded", item_ids=["librivox_0870"]).items[0]
    shutil.copy(item.path, leaked / f"renamed{item.path.suffix}")
    study = load_study(str(write_study(tmp_path)))
    with pytest.raises(
        ValueError, match=r"not held out: 1 of its items .*librivox_0870 \(= renamed"
    ):
        run_study(study, f"folder:{leaked}", tmp_path / "out", executor="inline", progress=False)
    assert not (tmp_path / "out" / "train").exists()


def test_a_folder_of_another_study_is_refused(tmp_path, training_data):
    study = load_study(str(write_study(tmp_path, steps=1)))
    run_study(study, training_data, tmp_path / "out", executor="inline", progress=False)
    other = load_study(str(write_study(tmp_path, steps=1, extra="learning_rate = 0.01")))
    with pytest.raises(ValueError, match="holds a run of another study or other settings"):
        run_study(other, training_data, tmp_path / "out", executor="inline", progress=False)


def test_on_ray_the_variants_are_ray_tasks_and_give_the_local_table(tmp_path, training_data):
    from test_ray import _kill_sessions, _require_ray, _session_processes, _wait

    _require_ray()
    path = write_study(tmp_path, steps=1)
    arguments = ["ablate", str(path), "--data", training_data, "--quiet", "--workers", "2"]
    environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    local = start_bench([*arguments, "--out", str(tmp_path / "local")], environment)
    assert local.wait(timeout=600) == 0, local.stderr.read()
    driver = start_bench(
        [*arguments, "--out", str(tmp_path / "ray"), "--executor", "ray"], environment
    )
    try:
        _, errors = driver.communicate(timeout=600)
        assert driver.returncode == 0, errors
        _wait(lambda: not _session_processes({driver.pid}), 30, "the local Ray instance to stop")
    finally:
        _kill_sessions({driver.pid})
    assert (tmp_path / "ray" / "ablation.csv").read_text() == (
        tmp_path / "local" / "ablation.csv"
    ).read_text()
    record = json.loads((tmp_path / "ray" / STUDY_FILE).read_text())
    assert record["runs"][0]["executor"] == "ray"
    evaluation = json.loads((tmp_path / "ray" / "evaluation" / "config.json").read_text())
    assert evaluation["execution"]["executor"] == "ray"
