"""Figures of a benchmark report, each written as PNG and SVG with the same stem.

Rate–quality curves (a metric against the real bitrate, one line per codec) as in the
EnCodec paper's figures (Défossez et al., 2022); quality against the number of function
evaluations (NFE) and against decode speed for iterative decoders such as FlowMAC; and
log-mel spectrograms of decoded audio under their reference.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through
pyplot: pyplot keeps a global registry of open figures, which is not thread-safe, and
importing this module leaves matplotlib's backend choice alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib import image as mpl_image
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator, StrMethodFormatter

from bench.report.curves import (
    QUALITY_VS_NFE_COLUMNS,
    RATE_QUALITY_COLUMNS,
    quality_metrics,
    require_columns,
)

FIGURE_FORMATS = ("png", "svg")
PNG_DPI = 150

# Okabe & Ito (2008), "Color Universal Design": told apart under the common colour vision
# deficiencies. Yellow comes last because it is faint on white.
OKABE_ITO = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
)
# Nine markers against eight colours: a (colour, marker) pair repeats only after 72 lines.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")

# Codec bitrates double from step to step (1.5, 3, 6, 12, 24 kbps): beyond a span of 8x a
# linear axis squeezes the low-rate conditions, where codecs differ most, into one corner.
LOG_BITRATE_MIN_SPAN = 8.0
MAX_LOG_TICKS = 8

CI_ALPHA = 0.2
# Small multiples: panels per row and each panel's size in inches (width, height).
GRID_COLUMNS = 4
GRID_PANEL_SIZE = (3.1, 2.3)

# Spectrograms: 32 ms Hann windows with an 8 ms hop at every sample rate, and mel bands half a
# Slaney mel apart (about 33 Hz below 1 kHz, 3.5 % above), so that files at different rates
# get the same time-frequency resolution and comparable levels.
SPECTROGRAM_WINDOW_SECONDS = 0.032
SPECTROGRAM_MEL_SPACING = 0.5
SPECTROGRAM_FLOOR_DB = -80.0
SPECTROGRAM_COLORMAP = "magma"  # perceptually uniform and readable without colour vision
FREQUENCY_TICKS_HZ = (0, 500, 1000, 2000, 4000, 8000, 16000, 32000)
# Spectrogram strips (spectrogram_strip): pixels per second of audio, at most this wide,
# mel rows per spectrogram, and the white rows between reference and decoded.
STRIP_PIXELS_PER_SECOND = 100
STRIP_MAX_WIDTH = 1000
STRIP_ROWS = 120
STRIP_SEPARATOR_ROWS = 3


@dataclass(frozen=True)
class LineStyle:
    """Colour and marker of one line, fixed per line across every figure of a report."""

    color: str
    marker: str


# Drawing functions of bench.report.render: (inputs..., stem=, formats=) -> written paths.


def draw_rate_quality_grid(
    summary: pd.DataFrame, *, stem: Path, formats: Sequence[str] = FIGURE_FORMATS
) -> list[Path]:
    return save_figure(rate_quality_grid_figure(summary), stem, formats)


def draw_rate_quality(
    summary: pd.DataFrame, metric: str, *, stem: Path, formats: Sequence[str] = FIGURE_FORMATS
) -> list[Path]:
    return save_figure(rate_quality_figure(summary, metric), stem, formats)


def draw_quality_vs_nfe(
    summary: pd.DataFrame, metric: str, *, stem: Path, formats: Sequence[str] = FIGURE_FORMATS
) -> list[Path]:
    return save_figure(quality_vs_nfe_figure(summary, metric), stem, formats)


def draw_spectrogram_comparison(
    reference: Path,
    decoded: Sequence[tuple[str, Path]],
    title: str,
    *,
    stem: Path,
    formats: Sequence[str] = FIGURE_FORMATS,
) -> list[Path]:
    return plot_spectrogram_comparison(reference, decoded, stem, title=title, formats=formats)


def draw_spectrogram_strip(
    reference: Path, decoded: Path, *, stem: Path, formats: Sequence[str] = ("png",)
) -> list[Path]:
    if tuple(formats) != ("png",):
        raise ValueError(f"a spectrogram strip is a PNG image; expected ('png',), got {formats}")
    return [spectrogram_strip(reference, decoded, Path(f"{stem}.png"))]


def plot_spectrogram_comparison(
    reference: Path,
    decoded: Sequence[tuple[str, Path]],
    out_path_stem: Path,
    *,
    title: str,
    formats: Sequence[str] = FIGURE_FORMATS,
) -> list[Path]:
    """Log-mel spectrograms of ``reference`` and each ``(label, path)`` in ``decoded``.

    Written as ``out_path_stem.png`` and ``.svg`` (or just the ``formats`` asked for, as
    a listening page with dozens of them does: each SVG doubles the drawing time).
    """
    figure = spectrogram_comparison_figure(reference, decoded, title=title)
    return save_figure(figure, Path(out_path_stem), formats)


def rate_quality_figure(summary: pd.DataFrame, metric: str) -> Figure:
    """Mean ``metric`` against actual kbps, one line per codec, or per codec and NFE.

    Conditions with a NaN mean or NaN actual bitrate are left out of their line (a failed
    condition is never drawn as a value); the 95 % CI is a shaded band where it is finite.
    """
    require_columns(summary, RATE_QUALITY_COLUMNS, "rate_quality_figure")
    rows = _metric_rows(summary, metric)
    scored = rows.dropna(subset=["mean", "kbps_actual"])
    if scored.empty:
        raise ValueError(f"metric {metric!r} has no condition with a mean and an actual bitrate")
    styles = _line_styles(summary, "nfe")
    figure = _new_figure(figsize=(8.0, 4.5))
    axes = figure.add_subplot()
    for (codec, nfe), line_rows in _lines(scored, "nfe"):
        line_rows = line_rows.sort_values("kbps_actual")
        label = codec if nfe is None else f"{codec} (NFE {nfe:g})"
        x = line_rows["kbps_actual"].to_numpy(float)
        style = styles[(codec, nfe)]
        _draw_line(axes, x, line_rows, label, style)
        _draw_ci_band(axes, x, line_rows, style)
    _set_bitrate_axis(axes, scored["kbps_actual"], summary["bitrate"])
    axes.set_xlabel("actual bitrate (kbps)")
    axes.set_ylabel(_quality_label(rows))
    axes.set_title(f"{metric} vs actual bitrate")
    axes.grid(True, alpha=0.3)
    _add_legend(figure, axes, title="shaded: 95 % CI")
    return figure


def rate_quality_grid_figure(summary: pd.DataFrame, metrics: Sequence[str] | None = None) -> Figure:
    """Small multiples: one rate–quality panel per metric on one page, a shared legend.

    The headline figure of a report: every metric at a glance, each panel drawn as
    :func:`rate_quality_figure` draws its metric (lines per codec, or per codec and NFE, 95 %
    CI bands), with a line's style the same in every panel. ``metrics`` defaults to every
    quality metric with a scored condition; metrics without one get no panel.
    """
    require_columns(summary, RATE_QUALITY_COLUMNS, "rate_quality_grid_figure")
    drawable = quality_metrics(summary.dropna(subset=["kbps_actual"]))
    chosen = [metric for metric in (metrics or drawable) if metric in drawable]
    if not chosen:
        raise ValueError("no quality metric has a condition with a mean and an actual bitrate")
    columns = min(GRID_COLUMNS, len(chosen))
    rows = math.ceil(len(chosen) / columns)
    styles = _line_styles(summary, "nfe")
    legend_columns = 6
    legend_rows = math.ceil(len(styles) / legend_columns)
    legend_inches = 0.3 + 0.2 * legend_rows
    figure = Figure(
        figsize=(GRID_PANEL_SIZE[0] * columns, GRID_PANEL_SIZE[1] * rows + legend_inches + 0.5)
    )
    FigureCanvasAgg(figure)
    # Fixed margins rather than constrained layout, which costs more than the drawing.
    figure.subplots_adjust(
        left=0.55 / (GRID_PANEL_SIZE[0] * columns),
        right=1 - 0.1 / (GRID_PANEL_SIZE[0] * columns),
        top=1 - 0.35 / figure.get_figheight(),
        bottom=(legend_inches + 0.4) / figure.get_figheight(),
        wspace=0.32,
        hspace=0.5,
    )
    grid = figure.subplots(rows, columns, squeeze=False)
    handles: dict[str, object] = {}
    for axes, metric in zip(grid.flat, chosen, strict=False):
        metric_rows = _metric_rows(summary, metric)
        scored = metric_rows.dropna(subset=["mean", "kbps_actual"])
        for (codec, nfe), line_rows in _lines(scored, "nfe"):
            line_rows = line_rows.sort_values("kbps_actual")
            label = codec if nfe is None else f"{codec} (NFE {nfe:g})"
            x = line_rows["kbps_actual"].to_numpy(float)
            style = styles[(codec, nfe)]
            _draw_line(axes, x, line_rows, label, style, markersize=4)
            _draw_ci_band(axes, x, line_rows, style)
        _set_bitrate_axis(axes, scored["kbps_actual"], summary["bitrate"])
        axes.set_title(_quality_label(metric_rows), fontsize="small")
        axes.tick_params(labelsize="x-small")
        axes.grid(True, alpha=0.3)
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    for axes in grid.flat[len(chosen) :]:
        axes.set_visible(False)
    figure.supxlabel(
        "actual bitrate (kbps)", fontsize="small", y=(legend_inches + 0.05) / figure.get_figheight()
    )
    figure.legend(
        list(handles.values()),
        list(handles),
        loc="lower center",
        ncols=min(len(handles), legend_columns),
        fontsize="small",
        title="shaded: 95 % CI",
        title_fontsize="small",
        frameon=False,
    )
    return figure


def quality_vs_nfe_figure(summary: pd.DataFrame, metric: str) -> Figure:
    """Two panels for iterative decoders: ``metric`` against NFE, and against decode RTF.

    One line per codec and nominal bitrate; the 95 % CI is drawn as vertical bars.
    """
    require_columns(summary, QUALITY_VS_NFE_COLUMNS, "quality_vs_nfe_figure")
    rows = _metric_rows(summary, metric)
    scored = rows.dropna(subset=["mean", "nfe"])
    if scored.empty:
        raise ValueError(f"metric {metric!r} has no condition with an NFE value and a mean")
    styles = _line_styles(summary.dropna(subset=["nfe"]), "bitrate")
    figure = _new_figure(figsize=(10.0, 4.5))
    by_nfe, by_speed = figure.subplots(1, 2, sharey=True)
    for (codec, bitrate), line_rows in _lines(scored, "bitrate"):
        line_rows = line_rows.sort_values("nfe")
        label = f"{codec} {bitrate:g} kbps"
        style = styles[(codec, bitrate)]
        nfe = line_rows["nfe"].to_numpy(float)
        _draw_line(by_nfe, nfe, line_rows, label, style)
        _draw_ci_bars(by_nfe, nfe, line_rows, style)
        # Points stay in NFE order, so the line traces the speed-quality trade-off as the
        # decoder spends more evaluations.
        line_timed = line_rows[line_rows["rtf_decode"] > 0]
        rtf = line_timed["rtf_decode"].to_numpy(float)
        _draw_line(by_speed, rtf, line_timed, label, style)
        _draw_ci_bars(by_speed, rtf, line_timed, style)
    _set_log_x_axis(by_nfe, scored["nfe"], scored["nfe"], base=2)
    by_nfe.set_xlabel("NFE (decoder network evaluations)")
    by_nfe.set_ylabel(_quality_label(rows))
    by_nfe.set_title("vs NFE")
    timed = scored[scored["rtf_decode"] > 0]
    if timed.empty:
        by_speed.text(0.5, 0.5, "no decode timings", transform=by_speed.transAxes, ha="center")
    _set_rtf_axis(by_speed, timed["rtf_decode"])
    by_speed.set_xlabel("decode real-time factor (s/s, lower is faster)")
    by_speed.set_title("vs decode speed")
    for axes in (by_nfe, by_speed):
        axes.grid(True, alpha=0.3)
    figure.suptitle(f"{metric}: iterative decoders")
    _add_legend(figure, by_nfe, title="bars: 95 % CI")
    return figure


def spectrogram_comparison_figure(
    reference: Path, decoded: Sequence[tuple[str, Path]], *, title: str
) -> Figure:
    """Reference on top, each decoded file below, on shared time and mel-frequency axes.

    Files are mixed to mono and analysed at their own sample rates; a panel is dark above
    its own Nyquist frequency, which shows a codec's lost bandwidth. Levels are in dB
    relative to the reference's loudest mel bin, on one colour bar.
    """
    if not decoded:
        raise ValueError("expected at least one (label, path) of decoded audio, got none")
    panels = [("reference", Path(reference)), *((label, Path(path)) for label, path in decoded)]
    spectrograms = [_mel_spectrogram_of(path) for _, path in panels]
    reference_peak = float(spectrograms[0].magnitude.max())
    if reference_peak <= 0:
        raise ValueError(f"the reference {reference} is silent; expected audible audio")
    colormap = colormaps[SPECTROGRAM_COLORMAP]
    top_hz = max(spectrogram.sample_rate / 2 for spectrogram in spectrograms)
    duration = max(spectrogram.duration for spectrogram in spectrograms)

    figure = _new_figure(figsize=(8.0, 1.2 + 1.9 * len(panels)))
    axes_column = figure.subplots(len(panels), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    # The mel axis is a display scale: data stay in Hz, so ticks are labelled in Hz.
    axes_column[0].set_yscale("function", functions=(_hz_to_mel_array, _mel_to_hz_array))
    for axes, (label, _), spectrogram in zip(axes_column, panels, spectrograms, strict=True):
        level_db = 20 * np.log10(np.maximum(spectrogram.magnitude / reference_peak, 1e-12))
        mesh = axes.pcolormesh(
            spectrogram.time_edges,
            spectrogram.frequency_edges,
            level_db,
            cmap=colormap,
            vmin=SPECTROGRAM_FLOOR_DB,
            vmax=0.0,
            shading="flat",
            rasterized=True,  # a vector mesh of every bin would make the SVG megabytes
        )
        # Above its Nyquist frequency a file holds no energy: paint it as the floor level.
        axes.set_facecolor(colormap(0.0))
        axes.set_title(f"{label} ({spectrogram.sample_rate / 1000:g} kHz)", loc="left")
    axes_column[0].set_ylim(0, top_hz)
    axes_column[0].set_xlim(0, duration)
    axes_column[0].yaxis.set_major_locator(
        FixedLocator([tick for tick in FREQUENCY_TICKS_HZ if tick <= top_hz])
    )
    axes_column[0].yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axes_column[0].yaxis.set_minor_locator(NullLocator())
    axes_column[-1].set_xlabel("time (s)")
    figure.supylabel("frequency (Hz, mel scale)")
    figure.colorbar(mesh, ax=list(axes_column), label="level (dB re. reference peak)")
    figure.suptitle(title)
    return figure


def spectrogram_strip(reference: Path, decoded: Path, out_png: Path) -> Path:
    """The log-mel spectrograms of ``reference`` (top) and ``decoded`` (below) as one bare
    PNG image at ``out_png``: no axes, a white line between the two.

    The listening section shows one per example (dozens in a run); drawn as figures with
    axes they cost a third of a second each, as an image a few milliseconds. The scale is
    that of :func:`spectrogram_comparison_figure`, whose axes the page's caption names:
    mel frequency from 0 Hz at the bottom to the higher Nyquist frequency of the two files
    at the top (the lower-rate file is dark above its own), time left to right, level in
    dB re. the reference's loudest bin from -80 dB (dark) to 0 dB (bright).
    """
    spectrograms = [_mel_spectrogram_of(Path(path)) for path in (reference, decoded)]
    reference_peak = float(spectrograms[0].magnitude.max())
    if reference_peak <= 0:
        raise ValueError(f"the reference {reference} is silent; expected audible audio")
    top_mel = max(float(_hz_to_mel_array(np.array(s.sample_rate / 2))) for s in spectrograms)
    duration = max(spectrogram.duration for spectrogram in spectrograms)
    width = int(np.clip(round(duration * STRIP_PIXELS_PER_SECOND), 1, STRIP_MAX_WIDTH))
    grid_mel = (np.arange(STRIP_ROWS) + 0.5) * top_mel / STRIP_ROWS
    grid_seconds = (np.arange(width) + 0.5) * duration / width
    panels = [
        _on_grid(spectrogram, reference_peak, grid_mel, grid_seconds)
        for spectrogram in spectrograms
    ]
    levels = np.vstack([panels[0], np.full((STRIP_SEPARATOR_ROWS, width), np.nan), panels[1]])
    colours = colormaps[SPECTROGRAM_COLORMAP](
        (levels - SPECTROGRAM_FLOOR_DB) / -SPECTROGRAM_FLOOR_DB
    )
    colours[np.isnan(levels)] = 1.0  # the separator
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    mpl_image.imsave(out_png, colours)
    return out_png


def _on_grid(
    spectrogram: _MelSpectrogram, peak: float, grid_mel: np.ndarray, grid_seconds: np.ndarray
) -> np.ndarray:
    """``spectrogram``'s level in dB re. ``peak``, clipped to the floor, sampled at the
    nearest band and frame of each grid point; rows from the top frequency down."""
    level_db = 20 * np.log10(np.maximum(spectrogram.magnitude / peak, 1e-12))
    level_db = np.clip(level_db, SPECTROGRAM_FLOOR_DB, 0.0)
    band_mel = _hz_to_mel_array(spectrogram.frequency_edges)
    band_centres = (band_mel[:-1] + band_mel[1:]) / 2
    frame_centres = (spectrogram.time_edges[:-1] + spectrogram.time_edges[1:]) / 2
    bands = np.clip(np.searchsorted(band_centres, grid_mel), 0, len(band_centres) - 1)
    frames = np.clip(np.searchsorted(frame_centres, grid_seconds), 0, len(frame_centres) - 1)
    sampled = level_db[bands][:, frames]
    # Above its Nyquist frequency, or past its end, a file holds nothing: the floor.
    sampled[grid_mel > band_mel[-1]] = SPECTROGRAM_FLOOR_DB
    sampled[:, grid_seconds > spectrogram.duration] = SPECTROGRAM_FLOOR_DB
    return sampled[::-1]


def save_figure(figure: Figure, stem: Path, formats: Sequence[str] = FIGURE_FORMATS) -> list[Path]:
    """Write ``figure`` as ``{stem}.png`` (150 dpi) and ``{stem}.svg``; returns the paths.

    The suffixes are appended, never substituted: metric names such as ``pesq.wb`` hold dots.
    """
    unknown = set(formats) - set(FIGURE_FORMATS)
    if unknown:
        raise ValueError(f"figure formats: expected some of {FIGURE_FORMATS}, got {formats}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.parent / f"{stem.name}.{extension}" for extension in formats]
    for path in paths:
        figure.savefig(path, dpi=PNG_DPI if path.suffix == ".png" else "figure")
    return paths


def _metric_rows(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = summary[summary["metric"] == metric]
    if rows.empty:
        known = sorted(summary["metric"].unique())
        raise ValueError(f"no rows for metric {metric!r}; the summary holds {known}")
    return rows


def _new_figure(figsize: tuple[float, float]) -> Figure:
    # Constrained layout moves titles, labels, the outside legend and colour bars apart.
    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _lines(
    rows: pd.DataFrame, within_codec: str
) -> list[tuple[tuple[str, float | None], pd.DataFrame]]:
    """Rows per line, keyed ``(label, value of within_codec)`` with ``None`` for NaN (no
    NFE axis): labels in order of appearance, then ``None`` first and ascending values."""
    codec_order = {label: position for position, label in enumerate(rows["label"].unique())}
    lines = [
        ((label, None if pd.isna(value) else float(value)), line_rows)
        for (label, value), line_rows in rows.groupby(
            ["label", within_codec], dropna=False, sort=False
        )
    ]
    return sorted(
        lines,
        key=lambda line: (
            codec_order[line[0][0]],
            line[0][1] is not None,
            line[0][1] or 0.0,
        ),
    )


def _line_styles(
    summary: pd.DataFrame, within_codec: str
) -> dict[tuple[str, float | None], LineStyle]:
    """A style per line over the whole summary, so a line keeps its colour and marker in
    every figure, whichever lines a given metric leaves out."""
    return {
        key: LineStyle(OKABE_ITO[index % len(OKABE_ITO)], MARKERS[index % len(MARKERS)])
        for index, (key, _) in enumerate(_lines(summary, within_codec))
    }


def _quality_label(rows: pd.DataFrame) -> str:
    """``'<metric> (<unit>) ↑ better'``; the unit is left out where the summary has none."""
    metric = rows["metric"].iloc[0]
    units = [unit for unit in rows["unit"] if isinstance(unit, str) and unit]
    unit = f" ({units[0]})" if units else ""
    arrow = "↑" if bool(rows["higher_is_better"].iloc[0]) else "↓"
    return f"{metric}{unit} {arrow} better"


def _draw_line(
    axes: Axes,
    x: np.ndarray,
    rows: pd.DataFrame,
    label: str,
    style: LineStyle,
    markersize: float = 6,
) -> None:
    axes.plot(
        x,
        rows["mean"].to_numpy(float),
        label=label,
        color=style.color,
        marker=style.marker,
        markersize=markersize,
        linewidth=1.5,
    )


def _draw_ci_band(axes: Axes, x: np.ndarray, rows: pd.DataFrame, style: LineStyle) -> None:
    """The CI as a band between neighbouring finite intervals, and as a bar where an
    interval has no finite neighbour (a band through one point has no area)."""
    low, high = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
    finite = np.isfinite(low) & np.isfinite(high)
    axes.fill_between(x, low, high, where=finite, color=style.color, alpha=CI_ALPHA, linewidth=0)
    has_finite_neighbour = np.zeros_like(finite)
    has_finite_neighbour[1:] |= finite[:-1]
    has_finite_neighbour[:-1] |= finite[1:]
    isolated = finite & ~has_finite_neighbour
    if isolated.any():
        _draw_ci_bars(axes, x[isolated], rows[isolated], style)


def _draw_ci_bars(axes: Axes, x: np.ndarray, rows: pd.DataFrame, style: LineStyle) -> None:
    # vlines draws the interval as it is; errorbar would need it symmetric about the mean
    # and rejects an interval that does not contain it.
    low, high = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
    finite = np.isfinite(low) & np.isfinite(high)
    if finite.any():
        axes.vlines(
            x[finite],
            low[finite],
            high[finite],
            color=style.color,
            linewidth=2.5,
            alpha=2 * CI_ALPHA,
        )


def _set_bitrate_axis(axes: Axes, actual_kbps: pd.Series, nominal_kbps: pd.Series) -> None:
    """A log2 axis ticked at the nominal bitrates when the span exceeds 8x, else linear."""
    low, high = float(actual_kbps.min()), float(actual_kbps.max())
    if low > 0 and high / low > LOG_BITRATE_MIN_SPAN:
        _set_log_x_axis(axes, actual_kbps, nominal_kbps, base=2)


def _set_rtf_axis(axes: Axes, rtf: pd.Series) -> None:
    """A log10 axis ticked at 1-2-5 values, or at every integer multiple of a power of ten
    where fewer than two of those fall in range."""
    if rtf.empty:
        return
    decades = range(math.floor(math.log10(rtf.min())), math.ceil(math.log10(rtf.max())) + 1)
    one_two_five = [step * 10.0**decade for decade in decades for step in (1, 2, 5)]
    every_step = [step * 10.0**decade for decade in decades for step in range(1, 10)]
    low, high = _padded_log_range(rtf)
    in_range = [tick for tick in one_two_five if low <= tick <= high]
    _set_log_x_axis(axes, rtf, one_two_five if len(in_range) >= 2 else every_step, base=10)


def _padded_log_range(values: pd.Series) -> tuple[float, float]:
    """The range of positive ``values`` with 5 % of its log span (at least a sixth of an
    octave) added on either side, as matplotlib pads an axis."""
    low, high = float(values.min()), float(values.max())
    margin = max((high / low) ** 0.05, 2 ** (1 / 6))
    return low / margin, high * margin


def _set_log_x_axis(
    axes: Axes, data: pd.Series, tick_candidates: Iterable[float], *, base: int
) -> None:
    """A log x axis over ``data`` with plain-number ticks (1.5, 3, 6 rather than 2^0.58) at
    the candidates in range, thinned to about ``MAX_LOG_TICKS`` so labels never collide."""
    low, high = _padded_log_range(data)
    axes.set_xscale("log", base=base)
    axes.set_xlim(low, high)
    min_gap_octaves = math.log2(high / low) / MAX_LOG_TICKS
    ticks: list[float] = []
    for value in sorted({float(value) for value in tick_candidates if pd.notna(value)}):
        if low <= value <= high and (not ticks or math.log2(value / ticks[-1]) >= min_gap_octaves):
            ticks.append(value)
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axes.xaxis.set_minor_locator(NullLocator())


def _add_legend(figure: Figure, axes: Axes, *, title: str) -> None:
    # Outside the axes, so that it never hides a curve; constrained layout makes room.
    handles, labels = axes.get_legend_handles_labels()
    figure.legend(
        handles,
        labels,
        loc="outside right upper",
        title=title,
        fontsize="small",
        title_fontsize="small",
    )


@dataclass(frozen=True)
class _MelSpectrogram:
    """A mel magnitude spectrogram ``(bands, frames)`` with its cell edges in s and Hz."""

    magnitude: np.ndarray
    time_edges: np.ndarray
    frequency_edges: np.ndarray
    sample_rate: int
    duration: float


def _mel_spectrogram_of(path: Path) -> _MelSpectrogram:
    """The mono mix of the file at ``path``, analysed at its own sample rate."""
    # torch is imported where a spectrogram is drawn, not with the module: a report rebuilt
    # with every figure unchanged then starts without it (a second of a few).
    import torch

    from bench.audio import convert_channels, load_audio
    from bench.codecs.modules.spectral import hz_to_mel, mel_spectrogram, mel_to_hz

    loaded = load_audio(path)
    mono, _ = convert_channels(loaded.audio, 1)
    sample_rate = loaded.sample_rate
    n_fft = 2 * round(SPECTROGRAM_WINDOW_SECONDS * sample_rate / 2)
    hop_length = n_fft // 4
    nyquist_mel = float(hz_to_mel(torch.tensor(sample_rate / 2, dtype=torch.float64)))
    n_mels = max(1, round(nyquist_mel / SPECTROGRAM_MEL_SPACING) - 1)
    magnitude = mel_spectrogram(mono[0], sample_rate, n_fft, hop_length, n_mels)
    # Divided by the window's gain so that a tone reads the same at every FFT size.
    magnitude = magnitude / torch.hann_window(n_fft).sum()
    frames = magnitude.shape[-1]
    time_edges = (np.arange(frames + 1) - 0.5) * hop_length / sample_rate
    # Band centres sit at k * spacing mel (k = 1..n_mels); cells reach halfway to neighbours.
    spacing = nyquist_mel / (n_mels + 1)
    mel_edges = torch.arange(n_mels + 1, dtype=torch.float64) * spacing + spacing / 2
    return _MelSpectrogram(
        magnitude=magnitude.numpy(),
        time_edges=time_edges,
        frequency_edges=mel_to_hz(mel_edges).numpy(),
        sample_rate=sample_rate,
        duration=loaded.duration_seconds,
    )


def _hz_to_mel_array(frequencies: np.ndarray) -> np.ndarray:
    import torch

    from bench.codecs.modules.spectral import hz_to_mel

    return hz_to_mel(torch.as_tensor(np.asarray(frequencies, dtype=np.float64))).numpy()


def _mel_to_hz_array(mels: np.ndarray) -> np.ndarray:
    import torch

    from bench.codecs.modules.spectral import mel_to_hz

    return mel_to_hz(torch.as_tensor(np.asarray(mels, dtype=np.float64))).numpy()
