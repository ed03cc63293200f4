"""Report figures: both formats written, failed conditions left out, the axis scale chosen
from the bitrate span, spectrograms across sample rates, and no text drawn over text."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import write_tone
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.transforms import Bbox

from bench.report import plots
from bench.report.curves import file_safe, quality_metrics_with_nfe, rate_quality_metrics

ONE_SHOT_CODECS = ("encodec", "opus")
ITERATIVE_CODEC = "flowmac"
NFES = (1.0, 4.0, 8.0)
WIDE_BITRATES = (1.5, 6.0, 24.0)
NARROW_BITRATES = (3.0, 6.0, 12.0)
METRICS = {"pesq": ("MOS", True), "mel_distance": ("", False)}
NAN_MEAN_CONDITION = ("opus", 6.0, "pesq")


def summary_frame(
    bitrates: tuple[float, ...] = WIDE_BITRATES,
    one_shot_codecs: tuple[str, ...] = ONE_SHOT_CODECS,
    iterative_codec: str | None = ITERATIVE_CODEC,
) -> pd.DataFrame:
    """A long-form summary: rising quality with bitrate and NFE, some CIs missing, one NaN
    mean (opus at 6 kbps on pesq) and the speed and bitrate rows a real summary carries."""
    conditions = [(codec, math.nan) for codec in one_shot_codecs]
    if iterative_codec:
        conditions += [(iterative_codec, nfe) for nfe in NFES]
    rows = []
    for position, ((codec, nfe), bitrate) in enumerate(itertools.product(conditions, bitrates)):
        actual_kbps = 0.95 * bitrate
        rtf_decode = 0.01 * (1.0 if math.isnan(nfe) else nfe)
        for metric, (unit, higher_is_better) in METRICS.items():
            mean = 1.0 + math.log2(bitrate) + 0.1 * position
            missing_ci = position % 3 == 0
            if (codec, bitrate, metric) == NAN_MEAN_CONDITION:
                mean, missing_ci = math.nan, True
            rows.append(
                {
                    "label": codec,
                    "codec": codec,
                    "bitrate": bitrate,
                    "nfe": nfe,
                    "metric": metric,
                    "higher_is_better": higher_is_better,
                    "unit": unit,
                    "mean": mean,
                    "ci_low": math.nan if missing_ci else mean - 0.2,
                    "ci_high": math.nan if missing_ci else mean + 0.2,
                    "n": 10,
                    "failed": 10 if math.isnan(mean) else 0,
                    "kbps_actual": actual_kbps,
                    "rtf_decode": rtf_decode,
                    "rtf_encode": 0.005,
                }
            )
        for metric, value in (("kbps_actual", actual_kbps), ("rtf_decode", rtf_decode)):
            rows.append({**rows[-1], "metric": metric, "mean": value, "unit": ""})
    return pd.DataFrame(rows)


def draw_rate_quality_each(summary: pd.DataFrame, folder: Path) -> list[Path]:
    """The single-metric rate-quality figures, as the report draws them."""
    return [
        path
        for metric in rate_quality_metrics(summary)
        for path in plots.draw_rate_quality(
            summary, metric, stem=folder / f"rate_quality_{file_safe(metric)}"
        )
    ]


def draw_quality_vs_nfe_each(summary: pd.DataFrame, folder: Path) -> list[Path]:
    """The quality-against-NFE figures, as the report draws them."""
    return [
        path
        for metric in quality_metrics_with_nfe(summary)
        for path in plots.draw_quality_vs_nfe(summary, metric, stem=folder / f"nfe_{metric}")
    ]


def test_rate_quality_writes_png_and_svg_for_each_quality_metric(tmp_path):
    written = draw_rate_quality_each(summary_frame(), tmp_path)

    assert sorted(path.name for path in written) == sorted(
        f"rate_quality_{metric}.{suffix}" for metric in METRICS for suffix in ("png", "svg")
    )
    for png in (path for path in written if path.suffix == ".png"):
        height, width, _ = imread(png).shape
        assert 500 <= height < width <= 2000
    svg = tmp_path / "rate_quality_pesq.svg"
    ElementTree.parse(svg)
    # Text is drawn as glyph outlines; matplotlib keeps each string as a comment beside them.
    text = svg.read_text(encoding="utf-8")
    for expected in ("actual bitrate (kbps)", "pesq (MOS) ↑ better", "encodec", "flowmac (NFE 8)"):
        assert expected in text
    assert "mel_distance ↓ better" in (tmp_path / "rate_quality_mel_distance.svg").read_text(
        encoding="utf-8"
    )


def test_a_condition_with_a_nan_mean_is_left_out_of_its_line():
    figure = plots.rate_quality_figure(summary_frame(), "pesq")
    opus = _line(figure.axes[0], "opus")

    assert list(opus.get_xdata()) == [0.95 * 1.5, 0.95 * 24.0]
    assert np.isfinite(opus.get_ydata()).all()
    assert len(_line(figure.axes[0], "encodec").get_xdata()) == len(WIDE_BITRATES)


def test_one_line_per_nfe_for_an_iterative_codec_with_its_own_style():
    axes = plots.rate_quality_figure(summary_frame(), "mel_distance").axes[0]
    labels = [line.get_label() for line in axes.get_lines()]

    assert labels == ["encodec", "opus", *(f"flowmac (NFE {nfe:g})" for nfe in NFES)]
    styles = {(line.get_color(), line.get_marker()) for line in axes.get_lines()}
    assert len(styles) == len(labels)


def test_a_line_keeps_its_style_when_another_metric_leaves_lines_out():
    summary = summary_frame()
    summary.loc[(summary["codec"] == "encodec") & (summary["metric"] == "pesq"), "mean"] = math.nan
    styles = {
        metric: {
            line.get_label(): (line.get_color(), line.get_marker())
            for line in plots.rate_quality_figure(summary, metric).axes[0].get_lines()
        }
        for metric in METRICS
    }

    assert "encodec" not in styles["pesq"]
    assert styles["pesq"]["opus"] == styles["mel_distance"]["opus"]


def test_wide_bitrate_span_gets_a_log2_axis_with_plain_ticks():
    axes = plots.rate_quality_figure(summary_frame(WIDE_BITRATES), "pesq").axes[0]
    axes.figure.canvas.draw()

    assert axes.get_xscale() == "log"
    assert axes.xaxis.get_transform().base == 2
    assert [label.get_text() for label in axes.get_xticklabels()] == ["1.5", "6", "24"]


def test_narrow_bitrate_span_gets_a_linear_axis():
    axes = plots.rate_quality_figure(summary_frame(NARROW_BITRATES), "pesq").axes[0]

    assert axes.get_xscale() == "linear"


def test_quality_vs_nfe_writes_two_panels_per_metric(tmp_path):
    written = draw_quality_vs_nfe_each(summary_frame(), tmp_path)

    assert sorted(path.name for path in written) == sorted(
        f"nfe_{metric}.{suffix}" for metric in METRICS for suffix in ("png", "svg")
    )
    by_nfe, by_speed = plots.quality_vs_nfe_figure(summary_frame(), "pesq").axes
    by_nfe.figure.canvas.draw()
    assert [label.get_text() for label in by_nfe.get_xticklabels()] == ["1", "4", "8"]
    assert by_speed.get_xscale() == "log"
    assert by_speed.get_xlabel() == "decode real-time factor (s/s, lower is faster)"
    assert [line.get_label() for line in by_nfe.get_lines()] == [
        f"flowmac {bitrate:g} kbps" for bitrate in WIDE_BITRATES
    ]
    svg_text = (tmp_path / "nfe_pesq.svg").read_text(encoding="utf-8")
    ElementTree.fromstring(svg_text)
    assert "flowmac 24 kbps" in svg_text


def test_quality_vs_nfe_writes_nothing_without_iterative_codecs(tmp_path):
    assert draw_quality_vs_nfe_each(summary_frame(iterative_codec=None), tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_spectrogram_comparison_across_sample_rates(tmp_path):
    reference = write_tone(tmp_path / "reference.wav", sample_rate=24000)
    decoded = [
        ("opus 6 kbps", write_tone(tmp_path / "opus.wav", sample_rate=16000)),
        ("encodec 1.5 kbps", write_tone(tmp_path / "encodec.flac", sample_rate=8000, channels=2)),
    ]

    written = plots.plot_spectrogram_comparison(
        reference, decoded, tmp_path / "figures" / "item-1", title="item 1"
    )

    assert [path.name for path in written] == ["item-1.png", "item-1.svg"]
    assert imread(written[0]).shape[0] > 500
    ElementTree.parse(written[1])
    figure = plots.spectrogram_comparison_figure(reference, decoded, title="item 1")
    panels = [axes for axes in figure.axes if axes.get_title(loc="left")]
    assert [axes.get_title(loc="left") for axes in panels] == [
        "reference (24 kHz)",
        "opus 6 kbps (16 kHz)",
        "encodec 1.5 kbps (8 kHz)",
    ]
    for axes, sample_rate in zip(panels, (24000, 16000, 8000), strict=True):
        mesh = axes.collections[0]
        band_edges_hz = mesh.get_coordinates()[:, 0, 1]
        levels_db = np.asarray(mesh.get_array())
        loudest_band = int(levels_db.mean(axis=1).argmax())
        # Each file is analysed at its own rate, and the same 440 Hz tone reads at the same
        # level whatever the rate: dB are relative to the reference's peak.
        assert band_edges_hz.max() <= sample_rate / 2
        assert band_edges_hz[loudest_band] <= 440 <= band_edges_hz[loudest_band + 1]
        assert levels_db.max() == pytest.approx(0.0, abs=1.0)


def test_spectrogram_comparison_needs_decoded_audio(tmp_path):
    reference = write_tone(tmp_path / "reference.wav")
    with pytest.raises(ValueError, match="at least one"):
        plots.spectrogram_comparison_figure(reference, [], title="item")


@pytest.mark.parametrize(
    "plot", [draw_rate_quality_each, draw_quality_vs_nfe_each], ids=["rate", "nfe"]
)
@pytest.mark.parametrize("column", ["label", "mean", "ci_low", "higher_is_better"])
def test_missing_columns_raise_value_error_naming_them(tmp_path, plot, column):
    summary = summary_frame().drop(columns=[column])

    with pytest.raises(ValueError, match=rf"lacks column\(s\) \['{column}'\]; expected"):
        plot(summary, tmp_path)


def test_missing_actual_bitrate_raises_only_where_it_is_drawn(tmp_path):
    summary = summary_frame().drop(columns=["kbps_actual"])

    with pytest.raises(ValueError, match="kbps_actual"):
        draw_rate_quality_each(summary, tmp_path)
    assert draw_quality_vs_nfe_each(summary, tmp_path)


def test_metric_names_with_dots_keep_them_in_file_names(tmp_path):
    summary = summary_frame().replace({"metric": {"pesq": "pesq.wb"}})

    written = draw_rate_quality_each(summary, tmp_path)

    assert {"rate_quality_pesq.wb.png", "rate_quality_pesq.wb.svg"} <= {p.name for p in written}


@pytest.mark.slow
def test_importing_the_module_leaves_pyplot_alone():
    # A fresh interpreter, since another test of the session may have imported pyplot; pyplot
    # is what would pick a backend and keep global figure state.
    check = "import sys, bench.report.plots; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True)


LONG_NAMES = {
    "encodec": "encodec-24khz-streaming-large-model",
    "opus": "opus-libopus-1.5-voip-application",
    "flowmac": "flowmac-reference-checkpoint-with-a-long-name",
}


def _long_name_figures(tmp_path: Path) -> list[Figure]:
    summary = summary_frame().replace({"label": LONG_NAMES})
    reference = write_tone(tmp_path / "reference.wav", sample_rate=48000)
    decoded = [(f"{LONG_NAMES['encodec']} 24 kbps", write_tone(tmp_path / "d.wav"))]
    return [
        plots.rate_quality_figure(summary, "pesq"),
        plots.quality_vs_nfe_figure(summary, "mel_distance"),
        plots.spectrogram_comparison_figure(reference, decoded, title="a long item title"),
    ]


def test_no_text_overlaps_other_text_or_leaves_the_figure(tmp_path):
    for figure in _long_name_figures(tmp_path):
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        texts = _drawn_texts(figure)
        assert len(texts) > 10
        inside = figure.bbox.padded(1.0)
        for name, extent in texts:
            assert inside.contains(extent.x0, extent.y0) and inside.contains(
                extent.x1, extent.y1
            ), f"{name!r} leaves the figure"
        for (first, first_extent), (second, second_extent) in itertools.combinations(texts, 2):
            assert not first_extent.overlaps(second_extent), f"{first!r} overlaps {second!r}"
        for legend in figure.legends:
            for axes in figure.axes:
                assert not legend.get_window_extent(renderer).overlaps(
                    axes.get_window_extent(renderer)
                ), "the legend covers an axes"


def _line(axes, label: str):
    (line,) = [line for line in axes.get_lines() if line.get_label() == label]
    return line


def _drawn_texts(figure: Figure) -> list[tuple[str, Bbox]]:
    """Every drawn, non-empty text of ``figure`` with its extent in display pixels."""
    renderer = figure.canvas.get_renderer()
    candidates = [figure._suptitle, figure._supylabel]
    for legend in figure.legends:
        candidates += [legend.get_title(), *legend.get_texts()]
    for axes in figure.axes:
        candidates += [axes.title, axes._left_title, axes.xaxis.label, axes.yaxis.label]
        candidates += axes.texts
        for axis in (axes.xaxis, axes.yaxis):
            low, high = sorted(axis.get_view_interval())
            ticks = [
                *axis.get_major_ticks(len(axis.get_majorticklocs())),
                *axis.get_minor_ticks(len(axis.get_minorticklocs())),
            ]
            candidates += [
                label
                for tick in ticks
                if low <= tick.get_loc() <= high
                for label in (tick.label1, tick.label2)
            ]
    return [
        (text.get_text(), text.get_window_extent(renderer))
        for text in candidates
        if text is not None and text.get_visible() and text.get_text()
    ]
