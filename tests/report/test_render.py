"""Figures are drawn once: a rebuild copies those whose inputs did not change, after a check."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.report import render
from bench.report.render import FigureJob, render_figures

DRAWN: list[str] = []


def draw_text(
    frame: pd.DataFrame, title: str, *, stem: Path, formats: tuple[str, ...]
) -> list[Path]:
    """A stand-in drawing: writes the inputs as text, and counts the call."""
    DRAWN.append(stem.name)
    paths = [stem.parent / f"{stem.name}.{extension}" for extension in formats]
    for path in paths:
        path.write_text(f"{title}\n{frame.to_csv()}")
    return paths


@pytest.fixture(autouse=True)
def _clear():
    DRAWN.clear()


def jobs(frame: pd.DataFrame, audio: Path) -> list[FigureJob]:
    return [
        FigureJob("figures/a", draw_text, (frame, "a"), ("png", "svg")),
        FigureJob("figures/b", draw_text, (frame, "b")),
        FigureJob("strips/c", draw_text, (frame, "c"), files=(audio,)),
    ]


def test_a_rebuild_copies_what_did_not_change_and_draws_what_did(tmp_path):
    frame = pd.DataFrame({"kbps": [6.0, 12.0], "pesq": [2.1, 3.4]})
    audio = tmp_path / "decoded.flac"
    audio.write_bytes(b"one")
    first, second, third = (tmp_path / name for name in ("first", "second", "third"))
    for folder in (first, second, third):
        folder.mkdir()

    written = render_figures(jobs(frame, audio), first, workers=1)
    assert sorted(DRAWN) == ["a", "b", "c"]
    assert [path.name for path in written["figures/a"]] == ["a.png", "a.svg"]

    DRAWN.clear()
    render_figures(jobs(frame, audio), second, previous_dir=first, workers=1)
    assert DRAWN == []
    assert (second / "figures" / "a.svg").read_text() == (first / "figures" / "a.svg").read_text()

    # New data for every figure, new audio for one, a damaged file: each is drawn again.
    DRAWN.clear()
    (second / "figures" / "b.png").write_text("tampered")
    audio.write_bytes(b"two")
    render_figures(jobs(frame, audio), third, previous_dir=second, workers=1)
    assert sorted(DRAWN) == ["b", "c"]
    assert (third / "figures" / "b.png").read_text().startswith("b\n")

    DRAWN.clear()
    changed = frame.assign(pesq=[2.1, 3.5])
    render_figures(jobs(changed, audio), tmp_path / "first", previous_dir=third, workers=1)
    assert sorted(DRAWN) == ["a", "b", "c"]


@pytest.mark.parametrize("manifest", ["{not json", '{"version": 0, "figures": {}}', "[]"])
def test_an_unreadable_manifest_means_drawing_everything(tmp_path, manifest):
    frame = pd.DataFrame({"x": [1]})
    audio = tmp_path / "audio.flac"
    audio.write_bytes(b"x")
    previous, target = tmp_path / "previous", tmp_path / "target"
    previous.mkdir()
    target.mkdir()
    render_figures(jobs(frame, audio), previous, workers=1)
    (previous / render.MANIFEST).write_text(manifest)
    DRAWN.clear()
    render_figures(jobs(frame, audio), target, previous_dir=previous, workers=1)
    assert sorted(DRAWN) == ["a", "b", "c"]
    recorded = json.loads((target / render.MANIFEST).read_text())["figures"]
    assert set(recorded) == {"figures/a", "figures/b", "strips/c"}
