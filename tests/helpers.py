"""Test helpers: the shared data location, tiny audio files, a fake codec and the official
EnCodec reference package."""

from __future__ import annotations

import importlib
import math
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch
from bench.codecs.base import Codec, Encoded

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def write_tone(
    path: Path,
    seconds: float = 1.0,
    sample_rate: int = 16000,
    channels: int = 1,
    frequency: float = 440.0,
    subtype: str | None = None,
) -> Path:
    """A short sine tone with a little noise, written with soundfile."""
    rng = np.random.default_rng(0)
    time = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = 0.3 * np.sin(2 * np.pi * frequency * time) + 0.01 * rng.standard_normal(time.size)
    data = np.stack([tone] * channels, axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, data, sample_rate, subtype=subtype)
    return path


class QuantizingCodec(Codec):
    """A deterministic test codec: 8-bit quantisation of 16 kHz mono, 128 kbps."""

    name = "test-quantizer"
    sample_rate = 16000
    channels = 1
    bitrates = (128.0,)
    frame_rate = 16000.0

    def _encode(self, audio: torch.Tensor, bitrate: float) -> Encoded:
        codes = torch.clamp(torch.round(audio[0] * 127), -127, 127).to(torch.int8)
        return Encoded(codes.numpy().tobytes(), audio.shape[1], self.sample_rate, bitrate)

    def _decode(self, encoded: Encoded, nfe: int | None, seed: int | None) -> torch.Tensor:
        codes = np.frombuffer(encoded.payload, dtype=np.int8).astype(np.float32)
        return torch.from_numpy(codes / 127).unsqueeze(0)


class SlowQuantizingCodec(QuantizingCodec):
    """The quantising codec with a fixed 40 ms decode, so a run lasts long enough to kill.

    Hooks for the tests that kill runs and workers, read from the environment:

    - ``BENCH_TEST_STALL_AFTER=N``: every decode after an instance's N-th (its warm-up
      counts) hangs for ten minutes, as a codec on a very long item does, after writing a
      file named by its pid into ``BENCH_TEST_STALL_DIR``.
    - ``BENCH_TEST_PAUSE_ONCE=PATH``, where PATH's folder exists: the first decode after an
      instance's second, in whichever process first creates PATH, writes its pid there and
      hangs; every other decode, a restarted worker's included, runs as usual.
    - ``BENCH_TEST_BUILT=PATH``, where PATH's folder exists: each instance appends its pid to
      PATH when built, to count how often workers load the codec.
    """

    name = "slow-quantizer"
    decodes = 0

    def __init__(self) -> None:
        built = os.environ.get("BENCH_TEST_BUILT")
        if built and Path(built).parent.is_dir():
            with open(built, "a") as log:
                log.write(f"{os.getpid()}\n")

    def _decode(self, encoded: Encoded, nfe: int | None, seed: int | None) -> torch.Tensor:
        self.decodes += 1
        stall_after = os.environ.get("BENCH_TEST_STALL_AFTER")
        if stall_after is not None and self.decodes > int(stall_after):
            Path(os.environ["BENCH_TEST_STALL_DIR"], str(os.getpid())).touch()
            time.sleep(600)
        pause = os.environ.get("BENCH_TEST_PAUSE_ONCE")
        if pause and self.decodes > 2 and Path(pause).parent.is_dir():
            try:
                with open(pause, "x") as claimed:
                    claimed.write(str(os.getpid()))
            except FileExistsError:
                pass
            else:
                time.sleep(600)
        time.sleep(0.04)
        return super()._decode(encoded, nfe, seed)


def start_bench(arguments: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`bench ARGUMENTS` started as a terminal's foreground job: in a session and process
    group of its own, output captured, SIGINT at its default whatever this process has. A
    shell starts a background job (``pytest ... &``) with SIGINT ignored, a child inherits
    that, and `bench` rightly keeps ignoring it; a Ctrl-C test would then fail."""
    command = [sys.executable, "-m", "bench.cli", *arguments]
    # A caught signal is reset to its default in an exec'd child; an ignored one is not.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def speech_like(seconds: float, seed: int = 0, sample_rate: int = 24_000) -> torch.Tensor:
    """A modulated 220 Hz tone with a little noise, ``(1, samples)`` float32: an input with
    some structure for the token and sample models' codec tests."""
    generator = torch.Generator().manual_seed(seed)
    samples = int(seconds * sample_rate)
    time = torch.arange(samples) / sample_rate
    noise = 0.05 * torch.randn(1, samples, generator=generator)
    return (0.3 * torch.sin(2 * math.pi * 220.0 * time) * torch.sin(3 * time) + noise).float()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def child_pids(pid: int) -> list[int]:
    """The pids of the processes whose parent is ``pid`` (Linux /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue  # the process ended while listed
        if stat and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return children


def install_distribution(
    directory: Path, name: str, entry_points: dict[str, dict[str, str]]
) -> dict[str, str]:
    """Make a fake installed distribution ``name`` in ``directory`` (its ``.dist-info``, for
    ``importlib.metadata``) declaring ``entry_points`` as ``{group: {name: "module:attr"}}``;
    returns the environment of a subprocess that sees it and the modules in ``directory``
    and ``tests/``."""
    dist_info = directory / f"{name.replace('-', '_')}-1.0.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{key} = {target}\n" for key, target in targets.items())
            for group, targets in entry_points.items()
        )
    )
    tests_dir = Path(__file__).resolve().parent
    python_path = os.pathsep.join(
        [str(directory), str(tests_dir), os.environ.get("PYTHONPATH", "")]
    )
    return {**os.environ, "PYTHONPATH": python_path}


def install_plugin(directory: Path) -> dict[str, str]:
    """Make a fake third-party distribution that registers ``slow-quantizer`` through the
    ``bench.codecs`` entry-point group; returns the environment for a subprocess."""
    return install_distribution(
        directory,
        "bench-test-plugin",
        {"bench.codecs": {"slow-quantizer": "helpers:SlowQuantizingCodec"}},
    )


def official_encodec(*submodules: str) -> types.ModuleType:
    """The official ``encodec`` package (facebookresearch/encodec 0.1.1), which our EnCodec
    port is tested against; ``submodules`` (such as ``"msstftd"``) are imported too.

    It is a reference only, never a dependency: it is CC-BY-NC, so .ci/run installs it with
    ``pip install --no-deps encodec==0.1.1 einops`` and torchaudio is absent. Only its audio I/O
    and the MS-STFT discriminator use torchaudio, so it is imported with an empty stand-in in
    ``sys.modules["torchaudio"]``, removed afterwards so that no other test sees it (a submodule
    imported later would look for the real torchaudio, hence ``submodules``).

    Skips the calling test when the package is missing, or fails it when the environment sets
    BENCH_REQUIRE_REFERENCE (as .ci/run does), so CI cannot pass without the comparison.
    """
    with pytest.MonkeyPatch.context() as patch:
        if "torchaudio" not in sys.modules:
            patch.setitem(sys.modules, "torchaudio", types.ModuleType("torchaudio"))
        try:
            package = importlib.import_module("encodec")
            for name in submodules:
                importlib.import_module(f"encodec.{name}")
        except ImportError as error:
            if os.environ.get("BENCH_REQUIRE_REFERENCE"):
                pytest.fail(f"BENCH_REQUIRE_REFERENCE is set but encodec is missing: {error}")
            pytest.skip(f"the official encodec package is not installed: {error}")
    return package


# Metric directions as a run's config records them, for report tests.
DIRECTIONS = {
    "pesq_wb": {"higher_is_better": True, "unit": "MOS-LQO"},
    "mel_distance": {"higher_is_better": False, "unit": ""},
}


def rows(
    codec: str,
    bitrate: float,
    metric: str,
    values: list[float],
    *,
    seed: int = 0,
    nfe: int | None = None,
    tags: tuple[str, ...] = ("speech",),
    failure: str | None = None,
    label: str | None = None,
) -> list[dict]:
    """Result rows as the harness writes them, one per item; the label defaults to the
    codec's name."""
    return [
        {
            "label": label or codec,
            "codec": codec,
            "bitrate": bitrate,
            "nfe": nfe,
            "seed": seed,
            "item": f"item{index}",
            "tags": list(tags),
            "metric": metric,
            "value": value,
            "failure": failure if value is None or np.isnan(value) else None,
            "kbps_actual": bitrate * 1.01,
            "encode_seconds": 0.1,
            "decode_seconds": 0.2,
            "audio_seconds": 2.0,
        }
        for index, value in enumerate(values)
    ]


def frame(*groups: list[dict]) -> pd.DataFrame:
    """The rows as bench.report.stats.results_frame returns them."""
    data = pd.DataFrame([row for group in groups for row in group])
    data["value"] = pd.to_numeric(data["value"])
    data["nfe"] = pd.to_numeric(data["nfe"])
    return data


def with_added_noise(codec_class: type[Codec], snr_db: float) -> type[Codec]:
    """``codec_class`` with white noise added to its decoded audio at ``snr_db``: an
    injected degradation that a regression gate must catch."""

    class NoisyCodec(codec_class):
        def _decode(self, encoded: Encoded, nfe: int | None, seed: int | None) -> torch.Tensor:
            decoded = super()._decode(encoded, nfe, seed)
            generator = torch.Generator().manual_seed(0)
            noise = torch.randn(decoded.shape, generator=generator)
            scale = decoded.pow(2).mean().sqrt() / 10 ** (snr_db / 20)
            return decoded + scale * noise

    NoisyCodec.__name__ = f"Noisy{codec_class.__name__}"
    return NoisyCodec


def official_codebooks(quantizer: torch.nn.Module) -> list[torch.Tensor]:
    """The ``(bins, dimension)`` codebooks of an official ``ResidualVectorQuantization``'s
    levels (``model.quantizer.vq``), in order."""
    return [layer._codebook.embed for layer in quantizer.layers]


def assert_codes_equal_up_to_near_ties(
    codes: torch.Tensor,
    expected: torch.Tensor,
    latents: torch.Tensor,
    codebooks: list[torch.Tensor],
    relative_tolerance: float = 1e-5,
    max_fraction: float = 0.05,
) -> None:
    """Residual-VQ codes equal the expected ones except at near-ties of the nearest-code search.

    ``codes`` and ``expected`` are ``(levels, frames)``, ``latents`` the quantizer's input
    ``(frames, dimension)``. Two implementations of the search (or one on two CPUs) order
    their floating-point sums differently, so where two codewords are almost equidistant
    they may pick different ones; the residual, and so every later level of that frame, then
    follows. Each frame whose codes differ must therefore differ first at a level where both
    picks are equally near the residual, within ``relative_tolerance`` of the distances'
    scale (computed here in float64), and such frames must stay rare. Anything else is a real
    difference and fails.
    """
    assert codes.shape == expected.shape, (codes.shape, expected.shape)
    differing = (codes != expected).any(dim=0).nonzero().flatten().tolist()
    assert len(differing) <= max_fraction * codes.shape[1], (
        f"codes differ in {len(differing)} of {codes.shape[1]} frames: more than near-ties"
    )
    for frame in differing:
        residual = latents[frame].double()
        level = int((codes[:, frame] != expected[:, frame]).nonzero()[0])
        for shared in range(level):
            residual = residual - codebooks[shared][expected[shared, frame]].double()
        ours = codebooks[level][codes[level, frame]].double()
        theirs = codebooks[level][expected[level, frame]].double()
        distance_ours = (residual - ours).pow(2).sum()
        distance_theirs = (residual - theirs).pow(2).sum()
        scale = residual.pow(2).sum() + ours.pow(2).sum() + theirs.pow(2).sum()
        gap = float((distance_ours - distance_theirs).abs() / scale)
        assert gap <= relative_tolerance, (
            f"frame {frame}, level {level}: code {int(codes[level, frame])} against the "
            f"expected {int(expected[level, frame])} is no near-tie (relative gap {gap:.2e})"
        )


def make_record(**fields):
    """A result record of a scored task, with ``fields`` replacing its values."""
    from bench.sweep.records import Record

    values = {
        "run_id": "run",
        "label": "test-quantizer",
        "codec": "test-quantizer",
        "bitrate": 128.0,
        "nfe": None,
        "seed": 0,
        "item": "tone0",
        "tags": ("speech",),
        "speaker": None,
        "input_hash": "0" * 64,
        "decoded_key": "1" * 64,
        "metric": "si_sdr",
        "metric_family": "si_sdr",
        "value": 20.0,
        "failure": None,
        "metric_note": None,
        "metric_counts": None,
        "metric_seconds": 0.001,
        "metric_backend": "bench",
        "metric_backend_version": "1",
        "kbps_nominal": 128.0,
        "kbps_actual": 128.0,
        "encode_seconds": 0.001,
        "decode_seconds": 0.001,
        "audio_seconds": 1.0,
        "input_notes": (),
        "decoded_from_cache": False,
    }
    return Record(**{**values, **fields})


# Toy codecs, written to a temporary module as a third-party package would ship them.
TOY_MODULE = '''
"""Toy codecs: 8-bit PCM at 8 kHz, an iterative variant, and one that breaks the contract."""

import torch
from bench.codecs.base import Codec, Encoded, fit_length


class ToyCodec(Codec):
    """8-bit PCM of 8 kHz mono: 64 kbps sends every sample, 32 kbps every other one."""

    name = "toy"
    sample_rate = 8000
    channels = 1
    bitrates = (32.0, 64.0)
    frame_rate = 8000.0
    num_codebooks = 1
    codebook_size = 256

    def _encode(self, audio, bitrate):
        step = round(64.0 / bitrate)
        codes = torch.round(audio[:, ::step].clamp(-1, 1) * 127).long() + 128
        payload = codes.to(torch.uint8).numpy().tobytes()
        return Encoded(payload, audio.shape[1], self.sample_rate, bitrate, codes)

    def _decode(self, encoded, nfe, seed):
        codes = torch.frombuffer(bytearray(encoded.payload), dtype=torch.uint8)
        step = 1 if len(codes) == encoded.num_samples else 2
        audio = (codes.float() - 128) / 127
        return fit_length(audio.repeat_interleave(step)[None], encoded.num_samples)


class IterativeToyCodec(ToyCodec):
    """Decodes in 1 or 4 steps, each adding a little noise drawn from the seed."""

    name = "toy-iterative"
    nfe_options = (1, 4)

    def _decode(self, encoded, nfe, seed):
        audio = super()._decode(encoded, nfe, seed)
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        for _ in range(nfe or 1):
            audio = audio + 1e-3 * torch.randn(audio.shape, generator=generator)
        return audio


class ShortToyCodec(ToyCodec):
    """Breaks the contract: decodes one sample short."""

    name = "toy-short"

    def _decode(self, encoded, nfe, seed):
        return super()._decode(encoded, nfe, seed)[:, 1:]
'''
TOY_ENTRY_POINTS = {
    "toy": "ToyCodec",
    "toy-iterative": "IterativeToyCodec",
    "toy-short": "ShortToyCodec",
}
