"""Registering metrics: the ``@metric`` decorator, the tolerance every metric declares, the
metrics on tokens that receive the codec's ``Encoded``, and the ``bench.metrics``
entry-point group.

Each toy metric is registered from this module alone, as a new metric would be, into a copy
of the registry that is put back after the test.
"""

from __future__ import annotations

import json
import sys

import pytest
import soundfile
import torch
from bench.codecs.base import Encoded
from helpers import QuantizingCodec, write_tone

from bench.cli import EXIT_FAILURES, EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, main
from bench.metrics import CannotScore, MetricSpec, Tolerance, get_metric, metric, metric_names
from bench.registry import CODECS, METRICS
from bench.report.compare import load_summary, write_summary
from bench.store import RunStore

TOY = {
    "higher_is_better": True,
    "needs_reference": True,
    "needs_transcript": False,
    "sample_rate": None,
    "backend": "tests",
    "backend_version": "1",
}


@pytest.fixture
def registry(monkeypatch):
    """The metric registry, restored after the test: what a test registers goes away."""
    metric_names()  # the built-ins first, so that they stay registered
    for attribute in ("_targets", "_sources", "_paths"):
        monkeypatch.setattr(METRICS, attribute, dict(getattr(METRICS, attribute)))
    return METRICS


class TokenCodec(QuantizingCodec):
    """The quantising test codec with a view of its tokens: one codebook of 255 levels."""

    name = "test-token-quantizer"
    num_codebooks = 1
    codebook_size = 255
    encodes = 0

    def _encode(self, audio: torch.Tensor, bitrate: float) -> Encoded:
        TokenCodec.encodes += 1
        encoded = super()._encode(audio, bitrate)
        codes = torch.frombuffer(bytearray(encoded.payload), dtype=torch.int8).to(torch.int64)
        return Encoded(
            encoded.payload,
            encoded.num_samples,
            encoded.sample_rate,
            encoded.nominal_kbps,
            codes=(codes + 127).unsqueeze(0),
        )


class HiddenTokenCodec(QuantizingCodec):
    """Declares a codebook but gives no view of its tokens (``Encoded.codes`` is None)."""

    name = "test-hidden-token-quantizer"
    num_codebooks = 1
    codebook_size = 255


def _run(
    tmp_path,
    name: str,
    metrics: str,
    *more: str,
    codec: str = "test-quantizer",
    exit_code: int = EXIT_OK,
) -> list:
    """`bench run` of ``codec`` over one tone, inline; the run's rows."""
    data = tmp_path / "data"
    if not data.exists():
        write_tone(data / "a.wav")
    run_dir = tmp_path / name
    arguments = ["run", "--codec", codec, "--data", f"folder:{data}", "--metrics", metrics]
    arguments += ["--workers", "1", "--no-report", "--quiet", "--run-dir", str(run_dir), *more]
    assert main(arguments) == exit_code
    return list(RunStore(run_dir).rows())


def test_a_decorated_metric_is_listed_swept_and_gated_by_its_own_tolerance(
    registry, tmp_path, capsys
):
    @metric(**TOY, name="toy_level", tolerance=Tolerance(absolute=0.5), unit="x10")
    def toy_level(reference, degraded, sample_rate, item):
        return 10 * float(degraded.abs().mean())

    assert toy_level.__name__ == "toy_level", "the function is returned unchanged"
    assert main(["metrics"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line.split() for line in lines if line}
    assert listed["toy_level"][1:3] == ["higher", "±0.5"]

    rows = _run(tmp_path, "run", "toy_level,si_sdr", "--no-cache")
    (toy,) = [row for row in rows if row["metric"] == "toy_level"]
    assert toy["value"] == pytest.approx(10 * 0.3 * 2 / torch.pi, rel=0.02)  # a 0.3 sine's mean
    assert toy["metric_backend"] == "tests"

    baseline = load_summary(tmp_path / "run")
    write_summary(baseline, tmp_path / "baseline.json")
    for change, verdict in ((-0.3, EXIT_OK), (-0.7, EXIT_REGRESSION)):
        new = json.loads(json.dumps(baseline))
        for condition in new["conditions"]:
            if condition["metric"] == "toy_level":
                condition["mean"] += change
        write_summary(new, tmp_path / "new.json")
        arguments = ["compare", str(tmp_path / "baseline.json"), str(tmp_path / "new.json")]
        # A 1% fallback, as compare applied to any metric it had no entry for, fails -0.3.
        assert main(arguments) == verdict, change
        report = capsys.readouterr().out
        assert "| toy_level ↑ |" in report and "| ±0.5 " in report


@pytest.mark.parametrize(
    "tolerance, error",
    [
        (None, "needs tolerance=Tolerance"),
        (0.05, "expected tolerance=Tolerance"),
        ({"absolute": 0.05}, "expected tolerance=Tolerance"),
    ],
)
def test_a_metric_without_a_declared_tolerance_is_refused(registry, tolerance, error):
    declared = {} if tolerance is None else {"tolerance": tolerance}

    def untolerated(reference, degraded, sample_rate, item):
        return 0.0

    with pytest.raises(TypeError, match=error):
        metric(**TOY, name="untolerated", **declared)(untolerated)
    assert "untolerated" not in metric_names()
    with pytest.raises(TypeError, match="tolerance"):
        MetricSpec(name="untolerated", function=untolerated, **TOY, **declared)


def test_a_metric_without_a_tolerance_here_is_not_compared_by_a_guess(tmp_path, capsys):
    """A metric of the compared runs that is not registered (a plug-in not installed) has
    no declared tolerance: compare refuses it, naming it, until a file gives it one."""
    rows = _run(tmp_path, "run", "si_sdr", "--no-cache")
    assert rows
    summary = load_summary(tmp_path / "run")
    for condition in summary["conditions"]:
        condition["metric"] = "plugin_metric"
    write_summary(summary, tmp_path / "summary.json")
    arguments = ["compare", str(tmp_path / "summary.json"), str(tmp_path / "summary.json")]
    assert main(arguments) == EXIT_USAGE
    assert "no tolerance for metric 'plugin_metric'" in capsys.readouterr().err
    tolerance_file = tmp_path / "tolerance.toml"
    tolerance_file.write_text("[plugin_metric]\nabsolute = 0.1\n")
    assert main([*arguments, "--tolerance", str(tolerance_file)]) == EXIT_OK


def _codebook_usage(reference, degraded, sample_rate, item, encoded):
    """The share of the codebook the item's tokens use."""
    if encoded.codes is None:
        raise CannotScore("the codec gives no view of its tokens")
    return encoded.codes.unique().numel() / 255


def test_a_metric_on_tokens_receives_the_encoded_fresh_and_after_a_cached_decode(
    registry, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(CODECS._targets, TokenCodec.name, TokenCodec)
    usage = metric(
        **{**TOY, "needs_reference": False, "higher_is_better": False},
        name="toy_codebook_usage",
        needs_codes=True,
        tolerance=Tolerance(absolute=0.01),
    )(_codebook_usage)
    assert usage is _codebook_usage
    spec = get_metric("toy_codebook_usage")
    assert spec.needs_codes and not spec.needs_equal_lengths and not spec.scores_files

    tone, _ = soundfile.read(write_tone(tmp_path / "data" / "a.wav"), dtype="float32")
    reference = torch.from_numpy(tone).unsqueeze(0)
    expected = TokenCodec().encode(reference, 128.0).codes.unique().numel() / 255
    cache = ["--cache", str(tmp_path / "cache")]
    fresh = _run(tmp_path, "fresh", "toy_codebook_usage", "--no-cache", codec=TokenCodec.name)
    assert [row["value"] for row in fresh] == [pytest.approx(expected)]
    assert 0.2 < expected < 1

    # The decoded audio comes from the cache; the token metric's value does not, so the
    # input is encoded again for it, and the value is the same.
    _run(tmp_path, "decode", "si_sdr", *cache, codec=TokenCodec.name)
    encodes = TokenCodec.encodes
    again = _run(tmp_path, "again", "si_sdr,toy_codebook_usage", *cache, codec=TokenCodec.name)
    assert all(row["decoded_from_cache"] for row in again)
    assert [row["value"] for row in again if row["metric"] == "toy_codebook_usage"] == [
        pytest.approx(expected)
    ]
    assert TokenCodec.encodes == encodes + 1

    # A codec that declares no codebooks is not asked for tokens, as music is not for a WER.
    assert _run(tmp_path, "no-codebooks", "toy_codebook_usage", "--no-cache") == []
    # One that declares codebooks but gives no view of its tokens: NaN with the reason.
    monkeypatch.setitem(CODECS._targets, HiddenTokenCodec.name, HiddenTokenCodec)
    (row,) = _run(
        tmp_path,
        "no-codes",
        "toy_codebook_usage",
        "--no-cache",
        codec=HiddenTokenCodec.name,
        exit_code=EXIT_FAILURES,
    )
    assert row["failure"] == "the codec gives no view of its tokens"

    # Files carry no bitstream: `bench score` refuses the metric (and, as it does not score
    # files, leaves it out of its default metrics).
    path = str(tmp_path / "data" / "a.wav")
    assert main(["score", path, path, "--metrics", "toy_codebook_usage"]) == EXIT_USAGE
    assert "cannot score files" in capsys.readouterr().err


@pytest.mark.parametrize("imported_first", [False, True])
def test_third_party_metrics_register_through_the_entry_point_group(
    registry, tmp_path, monkeypatch, imported_first
):
    """The entry point names the decorated function; whether its module is imported before
    or after the entry points are read, it is one metric."""
    module = f"toy_metric_plugin_{int(imported_first)}"
    dist_info = tmp_path / "bench_toy_metrics-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: bench-toy-metrics\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[bench.metrics]\ntoy_plugin_peak = {module}:toy_plugin_peak\n"
    )
    (tmp_path / f"{module}.py").write_text(
        "from bench.metrics import Tolerance, metric\n\n\n"
        "@metric(higher_is_better=False, needs_reference=False, needs_transcript=False,\n"
        "        sample_rate=None, backend='toy', backend_version='1',\n"
        "        tolerance=Tolerance(relative=0.05))\n"
        "def toy_plugin_peak(reference, degraded, sample_rate, item):\n"
        "    return float(degraded.abs().max())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(METRICS, "_entry_points_loaded", False)
    if imported_first:
        __import__(module)
    assert "toy_plugin_peak" in metric_names()
    assert (module in sys.modules) == imported_first, "listing imports no plug-in"
    spec = get_metric("toy_plugin_peak")
    assert spec.tolerance == Tolerance(relative=0.05) and spec.backend == "toy"
    assert spec.function(None, torch.tensor([[0.5, -0.75]]), 16000, None) == 0.75


def test_a_metric_of_known_values_records_each_and_fails_them_all(registry, tmp_path):
    @metric(
        **TOY,
        name="toy_pair",
        tolerance=Tolerance(absolute=0.1),
        subvalues=("level", "peak"),
        primary="level",
    )
    def toy_pair(reference, degraded, sample_rate, item):
        if degraded.abs().max() > 0.25:
            raise CannotScore("too loud for the toy")
        return {"level": float(degraded.abs().mean()), "peak": float(degraded.abs().max())}

    @metric(**TOY, name="toy_wrong", tolerance=Tolerance(absolute=0.1), subvalues=("a", "b"))
    def toy_wrong(reference, degraded, sample_rate, item):
        return {"a": 1.0}

    rows = _run(tmp_path, "run", "toy_pair,toy_wrong", "--no-cache", exit_code=EXIT_FAILURES)
    by_name = {row["metric"]: row for row in rows}
    # The tone is a 0.3 sine: too loud, so both of the pair's values fail with the reason.
    for name in ("toy_pair", "toy_pair.peak"):
        assert by_name[name]["value"] is None and by_name[name]["failure"] == "too loud for the toy"
    # A metric returning other keys than it declared fails rather than recording them.
    for name in ("toy_wrong.a", "toy_wrong.b"):
        assert by_name[name]["value"] is None
        assert "declares the values ('a', 'b'), got ['a']" in by_name[name]["failure"]
    with pytest.raises(ValueError, match="primary value must be one of its subvalues"):
        metric(**TOY, name="toy_bad", tolerance=Tolerance(), subvalues=("a",), primary="b")(
            toy_wrong
        )
