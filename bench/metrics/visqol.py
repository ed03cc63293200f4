"""ViSQOL v3 MOS-LQO in speech and audio mode, through ``visqol-python``.

ViSQOL follows Hines et al., "ViSQOL: an objective speech quality model" (EURASIP JASMP
2015) and Chinen et al., "ViSQOL v3: an open source production ready objective speech and
audio metric" (QoMEX 2020). ``visqol-python`` is a Python port of google/visqol v3.3.3
(numba-compiled kernels). On the C++ conformance cases it is within 1.2e-4 MOS on music in
audio mode (3e-3 on speech scored in audio mode) and within 0.03 MOS in speech mode
(tests/metrics/test_conformance.py).

- ``visqol_speech``: speech mode at 16 kHz (21 gammatone bands, patches chosen by voice
  activity). By default the similarity is mapped to MOS-LQO by the C++ default
  deep-lattice model (``LATTICE_MODEL``, run with ``ai-edge-litert``); option ``mapper``
  selects the older exponential fit instead (C++ ``--use_lattice_model=false``,
  ``exponential_unscaled`` adding ``--use_unscaled_speech``).
- ``visqol_audio``: audio mode at 48 kHz (32 bands) with the C++ default SVR model
  ``SVR_MODEL``.

Toolkits disagree on the model behind "ViSQOL" (AudioCraft uses a tcdaudio14 SVR model,
VERSA the libsvm default, audiotools the lattice speech model), so the model file is part
of the recorded backend version. Multi-channel input is averaged to mono, as ViSQOL's own
loader does. The module shares its name with the backend package, which it imports lazily
and absolutely.
"""

from __future__ import annotations

import functools
from importlib.metadata import version
from importlib.resources import files
from typing import TYPE_CHECKING

import numpy as np
import torch

from bench import audio as bench_audio
from bench.data.item import Item
from bench.metrics.base import SPEECH_ONLY, CannotScore, Tolerance, metric

if TYPE_CHECKING:
    from visqol import VisqolApi

SPEECH_SAMPLE_RATE = 16_000
AUDIO_SAMPLE_RATE = 48_000
SVR_MODEL = "libsvm_nu_svr_model.txt"
LATTICE_MODEL = (
    "lattice_tcditugenmeetpackhref_ls2_nl60_lr12_bs2048_learn.005_ep2400_train1_7_raw.tflite"
)
# Speech-mode similarity-to-MOS mappings, as VisqolApi.create keyword arguments.
SPEECH_MAPPERS = {
    "lattice": {"use_lattice_model": True},
    "exponential": {"use_lattice_model": False},
    "exponential_unscaled": {"use_lattice_model": False, "use_unscaled_speech": True},
}
VISQOL_BACKEND = "visqol-python (Python port of google/visqol v3.3.3)"
# ViSQOL's global alignment cross-correlates the envelopes of the whole pair at once
# (complex128 FFTs of twice the signal's length): about 9.5 MB of working memory per
# second at 48 kHz, 3 MB at 16 kHz (benchmarks/long_item_memory.py's item). The limits
# keep that near 0.6 GB; ViSQOL was designed and validated on clips of a few seconds.
MAX_SECONDS = {"speech": 180.0, "audio": 60.0}
MAX_SECONDS_REASON = "ViSQOL aligns the whole pair at once, in memory growing with its length"


def _mapper_arguments(mapper: str) -> dict[str, bool]:
    if mapper not in SPEECH_MAPPERS:
        raise ValueError(
            f"unknown ViSQOL speech mapper {mapper!r}; expected one of {', '.join(SPEECH_MAPPERS)}"
        )
    return SPEECH_MAPPERS[mapper]


@functools.cache
def _visqol_api(mode: str, mapper: str | None) -> VisqolApi:
    """One configured ViSQOL per process and configuration (models loaded once).

    The model files are passed explicitly so that the ones named in the backend version
    are the ones used, whatever the package's defaults become.
    """
    from visqol import VisqolApi

    model_dir = files("visqol") / "model"
    api = VisqolApi()
    if mode == "speech":
        api.create(
            mode="speech",
            lattice_model_path=str(model_dir / LATTICE_MODEL),
            **_mapper_arguments(mapper),
        )
    else:
        api.create(mode="audio", model_path=str(model_dir / SVR_MODEL))
    return api


def _visqol(
    reference: torch.Tensor,
    degraded: torch.Tensor,
    sample_rate: int,
    mode: str,
    mapper: str | None,
) -> float:
    """ViSQOL MOS-LQO of ``(channels, samples)`` signals, each averaged to mono.

    ViSQOL aligns the signals itself, so they may differ in length (the conformance cases
    do, and `bench score` passes such pairs as they are).
    """
    reference_mono = bench_audio.mono_float64(reference)
    degraded_mono = bench_audio.mono_float64(degraded)
    # ViSQOL scales the degraded signal to the reference's sound pressure level: a silent
    # reference makes both silent and scores near the maximum, a silent degraded gives NaN.
    if not np.any(reference_mono):
        raise CannotScore("reference is silent (every sample is zero)")
    if not np.any(degraded_mono):
        raise CannotScore("degraded is silent (every sample is zero); ViSQOL cannot level it")
    api = _visqol_api(mode, mapper)
    try:
        result = api.measure_from_arrays(reference_mono, degraded_mono, sample_rate)
    except (ValueError, IndexError) as error:
        # visqol-python's ways of saying it found no reference patch to compare: audio
        # mode raises ValueError under ~1 s, speech mode IndexError under ~0.64 s or
        # when no patch has voice activity.
        duration = reference_mono.size / sample_rate
        raise CannotScore(
            f"ViSQOL {mode} mode found no usable reference patch in {duration:.2f} s "
            f"(too short or no activity): {type(error).__name__}: {error}"
        ) from error
    return float(result.moslqo)


def _warm_up(mode: str, mapper: str | None, sample_rate: int) -> None:
    """Build the API and score one second of noise, so that loading the models and
    compiling (or loading numba's disk cache for) the kernels happen before timing."""
    noise = np.random.default_rng(0).standard_normal((1, sample_rate)).astype(np.float32)
    signal = torch.from_numpy(0.1 * noise)
    _visqol(signal, 0.5 * signal, sample_rate, mode, mapper)


def _set_up_speech(mapper: str = "lattice") -> None:
    _warm_up("speech", mapper, SPEECH_SAMPLE_RATE)


def _set_up_audio() -> None:
    _warm_up("audio", None, AUDIO_SAMPLE_RATE)


def _describe_speech(mapper: str = "lattice") -> str:
    _mapper_arguments(mapper)
    if mapper == "lattice":
        model = f"lattice model {LATTICE_MODEL}, ai-edge-litert {version('ai-edge-litert')}"
    else:
        model = f"{mapper} mapping"
    return f"visqol-python {version('visqol-python')}, {model}"


VISQOL = {
    "higher_is_better": True,
    "needs_reference": True,
    "needs_transcript": False,
    "needs_equal_lengths": False,  # ViSQOL time-aligns the pair itself
    "backend": VISQOL_BACKEND,
    "unit": "MOS-LQO",
    "max_seconds_reason": MAX_SECONDS_REASON,
    "tolerance": Tolerance(absolute=0.05),
    "mono_mix": "float64",  # bench.audio.mono_float64
}


@metric(
    **VISQOL,
    content=SPEECH_ONLY,
    sample_rate=SPEECH_SAMPLE_RATE,
    backend_version=_describe_speech(),
    description=(
        "ViSQOL v3 speech mode, 16 kHz, mono mix; option mapper: lattice (default), "
        "exponential, exponential_unscaled"
    ),
    options=("mapper",),
    setup=_set_up_speech,
    describe_backend=_describe_speech,
    max_seconds=MAX_SECONDS["speech"],
)
def visqol_speech(
    reference: torch.Tensor,
    degraded: torch.Tensor,
    sample_rate: int,
    item: Item | None = None,
    mapper: str = "lattice",
) -> float:
    """ViSQOL speech-mode MOS-LQO, 1 to 5, of 16 kHz signals. Higher is better."""
    return _visqol(reference, degraded, sample_rate, "speech", mapper)


@metric(
    **VISQOL,
    sample_rate=AUDIO_SAMPLE_RATE,
    backend_version=f"visqol-python {version('visqol-python')}, SVR model {SVR_MODEL}",
    description=f"ViSQOL v3 audio mode, 48 kHz, mono mix, SVR model {SVR_MODEL}",
    setup=_set_up_audio,
    max_seconds=MAX_SECONDS["audio"],
)
def visqol_audio(
    reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int, item: Item | None = None
) -> float:
    """ViSQOL audio-mode MOS-LQO, 1 to ~4.73, of 48 kHz signals. Higher is better."""
    return _visqol(reference, degraded, sample_rate, "audio", None)
