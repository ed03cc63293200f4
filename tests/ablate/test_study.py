"""Study files (`bench.ablate.study`): what a study may set, and what it is refused."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from bench.ablate.study import SHARED_OPTIONS, load_study, study_names

STUDY = """
description = "test"
recipe = "{recipe}"
baseline = "a"
seeds = [0]
[base]
config = "{config}"
steps = 2
{base}
[variants.a]
discriminators = "msstft"
[variants.b]
{variant}
[evaluation]
data = "embedded"
{evaluation}
"""


def write_study(
    folder: Path, *, recipe="encodec", config="tiny", base="", variant="", evaluation=""
):
    path = folder / "study.toml"
    path.write_text(
        STUDY.format(
            recipe=recipe, config=config, base=base, variant=variant, evaluation=evaluation
        )
    )
    return path


def test_the_shipped_studies_load_and_differ_from_their_baseline_only_by_the_overrides():
    assert study_names() == ["balancer", "discriminator", "quantizer"]
    for name in study_names():
        study = load_study(name)
        baseline = asdict(study.settings(study.baseline, 0, "embedded"))
        for variant, overrides in study.variants.items():
            settings = asdict(study.settings(variant, 0, "embedded"))
            differing = {key for key in settings if settings[key] != baseline[key]}
            assert differing <= set(overrides), (name, variant, differing)
            assert not differing & set(SHARED_OPTIONS)


def test_the_discriminator_study_covers_the_issue_and_pairs_the_published_rows():
    study = load_study("discriminator")
    families = {v: study.settings(v, 0, "embedded").discriminators for v in study.variants}
    assert families["none"] == ()
    assert families["msstft_mpd_msd"] == ("msstft", "mpd", "msd")
    assert {"msstft", "mpd", "msd"} <= set(families)
    balancer = load_study("balancer")
    extreme = balancer.settings("extreme_unbalanced", 0, "embedded")
    assert extreme.weights == {"time": 1.0, "frequency": 2.0, "adversarial": 100.0, "feature": 1.0}
    assert extreme.balancer is False
    # A table of weights merges over the paper's; text goes through the option's parser.
    assert balancer.settings("paper_unbalanced", 0, "embedded").weights["adversarial"] == 3.0
    quantizer = load_study("quantizer")
    assert [quantizer.settings(v, 0, "x").quantizer for v in quantizer.variants] == ["grvq", "rvq"]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"variant": 'discrimnators = "mpd"'}, "discrimnators"),
        ({"variant": 'discriminators = "mpd,wavenet"'}, "wavenet"),
        ({"base": "lerning_rate = 1e-3"}, "lerning_rate"),
        ({"config": "huge"}, "'huge'"),
        ({"recipe": "encodek"}, "'encodek'"),
        ({"variant": "steps = 10"}, "steps"),
        ({"variant": "batch_size = 8"}, "batch_size"),
        ({"base": 'data = "embedded"'}, "data"),
        ({"evaluation": 'codecs = ["opus"]'}, "codecs"),
    ],
)
def test_a_bad_study_is_refused_naming_the_fault(tmp_path, fields, named):
    path = write_study(tmp_path, **fields)
    with pytest.raises(ValueError, match=str(path)) as error:
        load_study(str(path))
    assert named in str(error.value)


def test_a_comparison_of_an_unknown_variant_is_refused(tmp_path):
    path = write_study(tmp_path)
    path.write_text(path.read_text().replace("seeds = [0]", 'comparisons = [["b", "z"]]'))
    with pytest.raises(ValueError, match="comparisons: unknown variant 'z'"):
        load_study(str(path))
    path.write_text(path.read_text().replace('[["b", "z"]]', '["b", "a"]'))
    with pytest.raises(ValueError, match="expected a list of \\[candidate, reference\\] pairs"):
        load_study(str(path))


def test_an_unknown_baseline_or_study_is_refused(tmp_path):
    path = write_study(tmp_path)
    path.write_text(path.read_text().replace('baseline = "a"', 'baseline = "c"'))
    with pytest.raises(ValueError, match="unknown variant 'c'"):
        load_study(str(path))
    with pytest.raises(
        ValueError, match="unknown study 'discriminators'; did you mean 'discriminator'"
    ):
        load_study("discriminators")


def test_a_shipped_study_is_found_by_name_beside_its_own_study_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "balancer").mkdir()  # `bench ablate balancer --out balancer`, run again
    assert load_study("balancer").recipe == "encodec"


def test_the_command_refuses_an_unknown_study_with_exit_2(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cli",
            "ablate",
            "quantiser",
            "--data",
            "embedded",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "unknown study 'quantiser'; did you mean 'quantizer'" in done.stderr
