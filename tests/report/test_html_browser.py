"""The HTML report: path checks and escaping, then the page opened in headless chromium.

The browser tests build a report from real files (a pandas table, a matplotlib PNG and
SVG, FLAC written with soundfile) and assert that everything on the page loads from
``file://``: every image decodes, every player reads its audio's metadata, nothing is
fetched from the network and the console stays clean.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import browser
import numpy as np
import pandas as pd
import pytest
import soundfile
from helpers import write_tone
from matplotlib.figure import Figure as MatplotlibFigure
from PIL import Image

from bench.report.html import (
    Figure,
    ListeningExample,
    ReportContent,
    ReportTable,
    write_html_report,
)

NOTE = 'opus 6 kbps: 1 item failed <script>alert("x")</script> & "quoted"'

PROVENANCE = {
    "run_id": "20261121-152352-9063956c",
    "created": "2026-11-21T15:23:52.391650+00:00",
    "config_hash": "9063956cdbbe0eae014326cfdebbe619832768b237bce688d02665a2397cac3c",
    "settings": {
        "codecs": ["opus", "flowmac"],
        "bitrates": [3.0, 6.0],
        "nfes": [8],
        "seeds": [0],
        "data": "embedded",
        "limit": 1,
        "max_seconds": 3.0,
        "tags": [],
        "exclude_tags": [],
        "metrics": ["mel_distance", "si_sdr"],
        "metric_options": {},
        "workers": 1,
    },
    "codecs": {
        "opus": {
            "name": "opus",
            "class": "bench.codecs.classic.opus.OpusCodec",
            "sample_rate": 48000,
            "channels": 1,
            "bitrates": [6.0, 12.0],
            "frame_rate": 50.0,
            "num_codebooks": None,
            "codebook_size": None,
            "nfe_options": None,
            "backend_versions": {"av": "18.1.0", "libopus": "libopus 1.6.1"},
            "standard": "RFC 6716",
            "encoder_options": {"vbr": "off", "frame_duration": "20"},
            "checkpoint_hash": "5ebcc34607d3e353",
        },
        "flowmac": {"name": "flowmac", "sample_rate": 24000, "num_codebooks": 8},
    },
    "metrics": {
        "mel_distance": {
            "higher_is_better": False,
            "sample_rate": 24000,
            "backend": "bench (torch.stft)",
            "backend_version": "0.1.0/torch 2.13.0+cpu",
            "description": "EnCodec's multi-scale log-mel L1 (64 mels, 2^5..2^11)",
        },
        "si_sdr": {"higher_is_better": True, "sample_rate": None, "backend": "bench (numpy)"},
    },
    "dataset": {"spec": "embedded", "items": [{"id": "tone_440", "tags": ["synthetic"]}]},
    "versions": {"python": "3.11.7", "bench": "0.1.0", "torch": "2.13.0+cpu"},
    "git": {"commit": "1f2ae4827f2782387269ca396dde6b82df717e7d", "dirty": True},
    "device": {"cpu_model": "Intel(R) Xeon(R) Processor", "cpu_count": 2, "torch_threads": 1},
}


def _spectrogram_png(audio: Path, png: Path) -> Path:
    samples, sample_rate = soundfile.read(audio, dtype="float32")
    figure = MatplotlibFigure(figsize=(6, 2.2), layout="constrained")
    axes = figure.add_subplot()
    axes.specgram(samples, NFFT=512, Fs=sample_rate, noverlap=384, cmap="magma")
    axes.set(xlabel="time (s)", ylabel="frequency (Hz)")
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=100)
    return png


def build_report(report_dir: Path) -> ReportContent:
    """Real files for every kind of asset the page shows, and the content that links them."""
    summary = pd.DataFrame(
        {
            "codec": ["opus", "flowmac"],
            "kbps": [6.0, 3.0],
            "NFE": ["-", "8"],
            "mel_distance ↓": [0.1379, 0.0912],
            "si_sdr ↑": [0.0727, 4.512],
        }
    )
    (report_dir / "tables").mkdir(parents=True)
    summary.to_csv(report_dir / "tables" / "summary.csv", index=False)

    figure = MatplotlibFigure(figsize=(6, 3.5), layout="constrained")
    axes = figure.add_subplot()
    axes.plot([3, 6, 12], [0.14, 0.09, 0.07], marker="o", label="opus")
    axes.set(xlabel="bitrate (kbps)", ylabel="mel distance ↓", xscale="log")
    axes.legend()
    (report_dir / "figures").mkdir()
    png = report_dir / "figures" / "mel_distance.png"
    svg = report_dir / "figures" / "mel_distance.svg"
    figure.savefig(png, dpi=100)
    figure.savefig(svg)

    reference = write_tone(report_dir / "audio" / "reference" / "tone_440.flac", 1.0, 24000)
    opus = write_tone(report_dir / "audio" / "opus 6 kbps" / "tone_440.flac", 1.0, 48000)
    flowmac = write_tone(report_dir / "audio" / "flowmac_3_nfe8" / "tone_440.flac", 1.0, 24000)
    spectrogram = _spectrogram_png(opus, report_dir / "spectrograms" / "opus 6 kbps.png")

    def relative(path: Path) -> str:
        return path.relative_to(report_dir).as_posix()

    content = ReportContent(
        title="opus vs flowmac on a tone",
        provenance=PROVENANCE,
        tables=(
            ReportTable(
                caption="Means per condition",
                html=summary.to_html(index=False),
                downloads=(("CSV", "tables/summary.csv"),),
            ),
        ),
        figures=(Figure("Mel distance against bitrate", relative(png), relative(svg)),),
        listening=(
            ListeningExample(
                "tone_440",
                "opus 6 kbps",
                relative(reference),
                relative(opus),
                relative(spectrogram),
            ),
            ListeningExample(
                "tone_440", "flowmac 3 kbps NFE 8", relative(reference), relative(flowmac), None
            ),
        ),
        notes=(NOTE,),
    )
    write_html_report(content, report_dir)
    return content


# ---- without a browser ----


def test_page_links_only_files_inside_the_report(tmp_path):
    build_report(tmp_path)
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert 'src="audio/opus%206%20kbps/tone_440.flac"' in page
    assert 'type="audio/flac"' in page
    # One reference player for the item, then one per condition.
    assert page.count("<audio") == 3
    assert 'href="figures/mel_distance.svg"' in page


def test_notes_are_escaped(tmp_path):
    build_report(tmp_path)
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#34;quoted&#34;" in page


def test_missing_file_is_named(tmp_path):
    content = build_report(tmp_path)
    (tmp_path / content.listening[1].decoded_audio).unlink()
    with pytest.raises(ValueError, match="missing file 'audio/flowmac_3_nfe8/tone_440.flac'"):
        write_html_report(content, tmp_path)


@pytest.mark.parametrize(
    "image",
    ["../outside.png", "/etc/hostname", "https://cdn.example.org/plot.png", "//cdn/plot.png"],
)
def test_paths_outside_the_report_are_refused(tmp_path, image):
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (tmp_path / "outside.png").write_bytes(b"")
    content = ReportContent("t", {}, (), (Figure("plot", image),), ())
    with pytest.raises(ValueError, match=r"image of figure 'plot'.*(outside|relative)"):
        write_html_report(content, report_dir)


def test_table_that_loads_from_the_network_is_refused(tmp_path):
    table = ReportTable(
        "remote", '<table><tr><td><img src="https://x.org/a.png"></td></tr></table>'
    )
    with pytest.raises(ValueError, match="https://x.org/a.png"):
        write_html_report(ReportContent("t", {}, (table,), (), ()), tmp_path)


def test_missing_provenance_reads_unknown(tmp_path):
    content = ReportContent("bare", {"settings": None, "git": {"commit": "abc"}}, (), (), ())
    page = write_html_report(content, tmp_path).read_text(encoding="utf-8")
    assert "<code>abc</code>" in page
    assert page.count(">unknown<") >= 10


def test_missing_browser_fails_when_ci_requires_it(monkeypatch, tmp_path):
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    monkeypatch.setattr(browser, "DEBIAN_CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv(browser.REQUIRE_BROWSER_VARIABLE, raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        browser.require_chromium()
    monkeypatch.setenv(browser.REQUIRE_BROWSER_VARIABLE, "1")
    with pytest.raises(pytest.fail.Exception, match="CI must run this test"):
        browser.require_chromium()


# ---- in chromium ----


def test_report_loads_cleanly_in_chromium(tmp_path):
    executable = browser.require_chromium()
    report_dir = tmp_path / "report"
    build_report(report_dir)
    check = browser.check_page(
        report_dir / "index.html", tmp_path / "report.png", executable=executable
    )
    assert not check.problems, check.problems

    screenshot = Image.open(check.screenshot)
    assert screenshot.format == "PNG"
    assert screenshot.width == 1280 and screenshot.height > 900  # the full page, not the viewport
    grey_levels = np.count_nonzero(screenshot.convert("L").histogram())
    assert grey_levels > 64, "the screenshot looks blank"
    if os.environ.get("BENCH_SCREENSHOT_DIR"):
        target = Path(os.environ["BENCH_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(check.screenshot, target / "html_report.png")


def test_checker_reports_a_broken_page(tmp_path):
    executable = browser.require_chromium()
    content = build_report(tmp_path)
    (tmp_path / content.listening[0].decoded_audio).unlink()
    (tmp_path / content.listening[0].spectrogram).unlink()
    index = tmp_path / "index.html"
    # A script error and a request to the network (a closed local port), edited in.
    injected = '<script>throw new Error("boom")</script><img src="http://127.0.0.1:9/a.png">'
    index.write_text(index.read_text().replace("</main>", injected + "</main>"))

    check = browser.check_page(index, executable=executable, timeout_s=15)

    assert [entry for entry in check.broken_audio if "opus%206%20kbps/tone_440.flac" in entry]
    assert len(check.broken_audio) == 1
    assert sorted(entry.split(": ")[0] for entry in check.broken_images) == [
        "http://127.0.0.1:9/a.png",
        "spectrograms/opus%206%20kbps.png",
    ]
    assert any("ERR_FILE_NOT_FOUND" in entry for entry in check.failed_requests)
    assert check.console_errors
    assert any("boom" in error for error in check.page_errors)
    assert check.external_requests == ("http://127.0.0.1:9/a.png",)
