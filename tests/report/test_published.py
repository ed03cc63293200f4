"""Tests of the published reference tables: the CSVs against models.md, and the pairing."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO_ROOT

from bench.metrics import metric_names
from bench.registry import CODECS
from bench.report import published as published_module
from bench.report.published import (
    BESIDE_COLUMNS,
    PUBLISHED_COLUMNS,
    load_published,
    published_beside,
)

PUBLISHED_FOLDER = REPO_ROOT / "reports" / "published"
MODELS_MD = REPO_ROOT.parent / "shared" / "reference" / "models.md"
# The neural codecs are named in the architecture but may not be registered yet.
NEURAL_CODECS = {"encodec", "hificodec", "flowmac", "soundstorm", "samplernn"}
ROWS_PER_FILE = {
    "encodec_table1.csv": 44,
    "encodec_table2.csv": 12,
    "encodec_table3.csv": 8,
    "encodec_table4.csv": 10,
    "encodec_table5.csv": 12,
    "encodec_table_a2.csv": 6,
    "encodec_table_a3.csv": 24,
    "encodec_table_a4.csv": 16,
    "soundstorm_table1.csv": 63,
    "samplernn_table1.csv": 12,
}
# models.md prints negative numbers with a Unicode minus sign.
NUMBER = re.compile(r"[−-]?\d+(?:\.\d+)?")


@pytest.fixture(scope="module")
def models_text() -> str:
    if not MODELS_MD.is_file():
        pytest.skip(f"models.md not found at {MODELS_MD}")
    return MODELS_MD.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def published() -> pd.DataFrame:
    return load_published()


def _section(text: str, start: str, end: str) -> str:
    """The text between the first ``start`` and the next ``end`` after it."""
    begin = text.index(start)
    return text[begin : text.index(end, begin + len(start))]


def _markdown_rows(text: str, caption: str) -> list[list[str]]:
    """The body cells of the first Markdown table after ``caption`` (header and rule dropped)."""
    lines = text[text.index(caption) :].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip().strip("*") for cell in line.strip("|").split("|")])
    return table[2:]


def _value(frame: pd.DataFrame, **conditions: str | float) -> pd.Series:
    """The one row of ``frame`` meeting every column == value condition."""
    selected = frame
    for column, wanted in conditions.items():
        selected = selected[selected[column] == wanted]
    assert len(selected) == 1, f"{len(selected)} rows for {conditions}"
    return selected.iloc[0]


def _raw_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_every_csv_has_the_exact_columns_and_expected_rows():
    files = sorted(PUBLISHED_FOLDER.glob("*.csv"))
    assert {path.name for path in files} == set(ROWS_PER_FILE)
    for path in files:
        header, rows = _raw_rows(path)
        assert header == PUBLISHED_COLUMNS, path.name
        assert len(rows) == ROWS_PER_FILE[path.name], path.name


def test_readme_counts_match_the_files():
    counts = {}
    for line in (PUBLISHED_FOLDER / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| `") and cells[0].strip("`") in ROWS_PER_FILE:
            counts[cells[0].strip("`")] = int(cells[-1])
    assert counts == ROWS_PER_FILE


def test_load_published_reads_every_row_with_numeric_columns(published):
    assert list(published.columns) == PUBLISHED_COLUMNS
    assert len(published) == sum(ROWS_PER_FILE.values())
    for column in ("bitrate_kbps", "nfe", "value", "plus_minus"):
        assert pd.api.types.is_float_dtype(published[column]), column
    assert published["value"].notna().all()


def test_codecs_are_ours_or_empty(published):
    known = set(CODECS.names()) | NEURAL_CODECS | {""}
    assert set(published["codec"]) <= known


def test_metrics_are_ours_or_empty(published):
    assert set(published["metric"]) <= set(metric_names()) | {""}
    # Listening tests, likelihoods and the paper's inverted RTF have no metric of ours.
    for published_metric in ("MUSHRA", "RTF (Enc)", "test NLL (bits per sample)", "Quality"):
        rows = published[published["published_metric"] == published_metric]
        assert len(rows) and (rows["metric"] == "").all(), published_metric


def test_every_number_is_printed_in_its_papers_section(models_text):
    sections = {
        "encodec": _section(models_text, "## 1. EnCodec", "\n## 2."),
        "soundstorm": _section(models_text, "## 4. SoundStorm", "\n## 5."),
        "samplernn": _section(models_text, "## 5. SampleRNN", "\n## 6."),
    }
    numbers = {paper: set(NUMBER.findall(text)) for paper, text in sections.items()}
    for path in sorted(PUBLISHED_FOLDER.glob("*.csv")):
        paper = path.name.split("_")[0]
        for row in _raw_rows(path)[1]:
            for column in ("value", "plus_minus", "bitrate_kbps", "nfe"):
                text = row[column].replace("-", "−")
                assert not text or text in numbers[paper], (path.name, column, row[column])


def test_encodec_table1_equals_models_md(models_text, published):
    table = published[
        published["paper"].str.contains("EnCodec") & (published["table"] == "Table 1")
    ]
    categories = ["Clean speech", "Noisy speech", "Music-1", "Music-2"]
    body = _markdown_rows(models_text, "**Table 1: MUSHRA, 24 kHz streamable**")
    assert len(body) == 10
    for model, kbps, *cells in body:
        nominal, _, entropy_coded = kbps.partition(" (")
        for category, cell in zip(categories, cells, strict=True):
            value, plus_minus = (float(part) for part in cell.split("±"))
            rows = table[
                (table["model"] == model)
                & (table["dataset"] == category)
                & (table["published_metric"] == "MUSHRA")
            ]
            if nominal == "–":
                rows = rows[rows["bitrate_kbps"].isna()]
            else:
                rows = rows[rows["bitrate_kbps"] == float(nominal)]
            assert rows[["value", "plus_minus"]].values.tolist() == [[value, plus_minus]]
        if entropy_coded:
            rows = table[
                (table["model"] == model)
                & (table["published_metric"] == "kbps (EC)")
                & (table["bitrate_kbps"] == float(nominal))
            ]
            assert rows["value"].tolist() == [float(entropy_coded.rstrip(")"))]
            assert rows["metric"].tolist() == ["kbps_actual"]


def test_soundstorm_table1_equals_models_md(models_text, published):
    table = published[published["paper"].str.contains("SoundStorm")]
    columns = ["WER (%)", "CER (%)", "Quality", "Speaker similarity", "Consistency"]
    lengths = ["short", "mid", "long"]
    body = _markdown_rows(models_text, "**Table 1, LibriSpeech test-clean**")
    assert len(body) == 5
    compared = 0
    for system, *cells in body:
        for published_metric, cell in zip(columns, cells, strict=True):
            rows = table[
                (table["model"] == system) & (table["published_metric"] == published_metric)
            ]
            if cell == "–":
                assert rows.empty
                continue
            for length, text in zip(lengths, cell.split(" / "), strict=True):
                row = rows[rows["dataset"].str.contains(f", {length} (", regex=False)]
                assert row["value"].tolist() == [float(text)], (system, published_metric)
                compared += 1
    assert compared == len(table) == 63


def test_samplernn_table1_equals_models_md(models_text, published):
    table = published[published["paper"].str.contains("SampleRNN")]
    body = _markdown_rows(models_text, "**Test NLL in bits per sample (Table 1)**")
    models = {
        "RNN": "RNN",
        "WaveNet (their reimplementation)": "WaveNet (reimplementation)",
        "SampleRNN 2-tier": "SampleRNN (2-tier)",
        "SampleRNN 3-tier": "SampleRNN (3-tier)",
    }
    for model, *cells in body:
        for dataset, text in zip(["Blizzard", "Onomatopoeia", "Music"], cells, strict=True):
            row = _value(table, model=models[model], dataset=dataset)
            assert row["value"] == float(text)


# (text quoted from models.md, the row's conditions, its value, its ± or None)
ENCODEC_SPOT_CHECKS = [
    (
        "MPD 7.35 / 4.24 / 60.7±2.8",
        {"table": "Table 2", "model": "EnCodec (MPD discriminator)", "published_metric": "MUSHRA"},
        60.7,
        2.8,
    ),
    (
        "MSD+Mono-STFT 5.99 / 4.22 / 62.91±2.62",
        {
            "table": "Table 2",
            "model": "EnCodec (MSD+Mono-STFT discriminators)",
            "published_metric": "MUSHRA",
        },
        62.91,
        2.62,
    ),
    (
        "EVS 1.89 / 2.74",
        {"table": "Table 3", "model": "EVS", "published_metric": "ViSQOL"},
        2.74,
        None,
    ),
    (
        "non-streamable 7.46 / 4.39",
        {"table": "Table 3", "model": "EnCodec (non-streamable)", "published_metric": "SI-SNR"},
        7.46,
        None,
    ),
    (
        "24 kbps (EC 19.4) 87.5±2.6",
        {
            "table": "Table 4",
            "model": "EnCodec (48 kHz)",
            "bitrate_kbps": 24.0,
            "published_metric": "kbps (EC)",
        },
        19.4,
        None,
    ),
    (
        "MP3 64 kbps 82.7±3.2",
        {"table": "Table 4", "model": "MP3", "bitrate_kbps": 64.0, "published_metric": "MUSHRA"},
        82.7,
        3.2,
    ),
    (
        "1 s, 6.8 / 5.1 / 0.68 / 0.66",
        {"table": "Table 5", "model": "EnCodec (48 kHz)", "published_metric": "RTF (Dec+EC)"},
        0.66,
        None,
    ),
    (
        "Lyra v2 (32 kHz) 27.4 / 67.2",
        {"table": "Table 5", "model": "Lyra-v2 (32 kHz)", "published_metric": "RTF (Dec)"},
        67.2,
        None,
    ),
    (
        "EnCodec with RVQ 76.8",
        {"table": "Table A.2", "model": "EnCodec (RVQ)", "published_metric": "MUSHRA"},
        76.8,
        None,
    ),
    (
        "C = 64 1.3 / 3.1 / 6.70 / 4.38",
        {"table": "Table A.3", "model": "EnCodec (C = 64)", "published_metric": "ViSQOL"},
        4.38,
        None,
    ),
    (
        "C = 16 26.0 / 25.7",
        {"table": "Table A.3", "model": "EnCodec (C = 16)", "published_metric": "RTF (Enc)"},
        26.0,
        None,
    ),
    (
        "(1,2,100,1) 8.41 / 4.05 → −35.83 / 2.82",
        {
            "table": "Table A.4",
            "model": "EnCodec (DiffQ), λ = (1, 2, 100, 1), without balancer",
            "published_metric": "SI-SNR",
        },
        -35.83,
        None,
    ),
]


@pytest.mark.parametrize(("printed", "conditions", "value", "plus_minus"), ENCODEC_SPOT_CHECKS)
def test_encodec_spot_checks(models_text, published, printed, conditions, value, plus_minus):
    """Each case quotes the models.md text it was checked against, so both must agree."""
    assert printed in models_text
    encodec = published[published["paper"].str.contains("EnCodec")]
    row = _value(encodec, **conditions)
    assert row["value"] == value
    if plus_minus is None:
        assert math.isnan(row["plus_minus"])
    else:
        assert row["plus_minus"] == plus_minus


def _summary(**overrides: object) -> pd.DataFrame:
    row = {
        "codec": "opus",
        "bitrate": 6.0,
        "nfe": None,
        "metric": "si_sdr",
        "mean": 3.1,
        "ci_low": 2.9,
        "ci_high": 3.3,
        "n": 40,
    }
    return pd.DataFrame([{**row, **overrides}])


def test_published_beside_pairs_matching_conditions(published):
    summary = pd.concat(
        [
            _summary(),
            _summary(codec="encodec", bitrate=6.02, metric="si_sdr", mean=6.0),
            _summary(codec="encodec", bitrate=1.5, metric="kbps_actual", mean=1.4),
        ],
        ignore_index=True,
    )
    beside = published_beside(summary, published)
    assert list(beside.columns) == BESIDE_COLUMNS
    pairs = {
        (row.codec, row.bitrate, row.metric, row.table): row.published_value
        for row in beside.itertuples()
    }
    assert pairs == {
        ("opus", 6.0, "si_sdr", "Table 3"): 2.45,
        ("encodec", 6.02, "si_sdr", "Table 3"): 6.67,
        ("encodec", 1.5, "kbps_actual", "Table 1"): 0.9,
    }
    opus = beside[beside["codec"] == "opus"].iloc[0]
    assert (opus["ours_mean"], opus["ours_ci_low"], opus["ours_ci_high"], opus["ours_n"]) == (
        3.1,
        2.9,
        3.3,
        40,
    )
    assert opus["dataset"] == "speech + music"


def test_published_beside_is_empty_without_a_match(published):
    for summary in (
        _summary(bitrate=8.0),  # a bitrate the papers did not measure Opus at
        _summary(bitrate=6.1),  # outside the 0.05 kbps tolerance
        _summary(metric="pesq_wb"),  # a metric no paper reports
        _summary(codec="hificodec"),  # no numbers transcribed for it
    ):
        beside = published_beside(summary, published)
        assert beside.empty
        assert list(beside.columns) == BESIDE_COLUMNS


def test_published_beside_needs_the_published_nfe_and_converts_percent():
    published = pd.DataFrame(
        [
            {
                "paper": "Paper",
                "table": "Table 9",
                "model": "SoundStorm",
                "codec": "soundstorm",
                "bitrate_kbps": 1.0,
                "nfe": 27.0,
                "dataset": "set",
                "metric": "wer",
                "published_metric": "WER (%)",
                "value": 2.5,
                "plus_minus": 0.5,
                "notes": "note",
            }
        ],
        columns=PUBLISHED_COLUMNS,
    )
    other_nfe = _summary(codec="soundstorm", bitrate=1.0, nfe=16, metric="wer")
    assert published_beside(other_nfe, published).empty
    same_nfe = _summary(codec="soundstorm", bitrate=1.0, nfe=27, metric="wer")
    row = published_beside(same_nfe, published).iloc[0]
    assert (row["published_value"], row["published_plus_minus"]) == (0.025, 0.005)
    assert row["notes"].startswith("published in percent")


def test_published_beside_rejects_a_summary_without_the_columns(published):
    with pytest.raises(ValueError, match="missing \\['ci_low'"):
        published_beside(_summary().drop(columns=["ci_low"]), published)


def test_missing_column_is_reported_with_the_file(tmp_path):
    good = PUBLISHED_FOLDER / "encodec_table3.csv"
    pd.read_csv(good, dtype=str, keep_default_na=False).drop(columns=["dataset"]).to_csv(
        tmp_path / "broken.csv", index=False
    )
    with pytest.raises(ValueError, match=r"broken\.csv: expected columns .*'dataset'"):
        load_published(tmp_path)


def test_non_number_in_a_numeric_column_is_reported(tmp_path):
    table = pd.read_csv(PUBLISHED_FOLDER / "encodec_table3.csv", dtype=str, keep_default_na=False)
    table.loc[0, "value"] = "2.45±0.1"
    table.to_csv(tmp_path / "typo.csv", index=False)
    with pytest.raises(ValueError, match=r"typo\.csv: column 'value' needs numbers"):
        load_published(tmp_path)


def test_missing_default_folder_gives_an_empty_frame(tmp_path, monkeypatch):
    monkeypatch.setattr(published_module, "DEFAULT_FOLDER", tmp_path / "absent")
    frame = load_published()
    assert frame.empty
    assert list(frame.columns) == PUBLISHED_COLUMNS
    assert published_beside(_summary(), frame).empty
    with pytest.raises(FileNotFoundError):
        load_published(tmp_path / "absent")
