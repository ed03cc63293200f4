"""Build a training corpus for the neural codecs (EnCodec first) from Debian packages.

What: ``--hours`` (default 2) of mono 16-bit FLAC at 24 kHz, written to ``--out`` (a folder
outside this checkout), in three kinds of content:

- speech (60 %): sentences from public-domain and permissively licensed English text
  (WordNet 3.0 usage examples, The Devil's Dictionary, the Jargon File) read by every
  offline text-to-speech voice Debian's main archive offers: flite (awb, rms, slt, kal16),
  Festival (kal and ked diphones, the slt HTS voice) and espeak-ng (8 English accents times
  20 voice variants), each utterance at a random speaking rate and, where the engine
  allows, pitch;
- music (25 %): pieces composed here at random (tempo, metre, key, mode, chord
  progression, style, General MIDI instruments, drums) and rendered by FluidSynth with
  the FluidR3 GM SoundFont;
- general audio (15 %): the real recordings of OpenSFX (vehicles, animals, machines,
  weather, crowds) and of the freedesktop sound theme, scenes that mix those recordings
  over ambient beds, and synthesised textures (rain, wind, surf, stream, fire, engine).

Every file is resampled with libsoxr (``bench.audio.resample``) and normalised to
-20 LUFS with pyloudnorm (peak-normalised where pyloudnorm is missing or a sound is
shorter than its 0.4 s gating block), never above -1 dBFS. The folder gets
``MANIFEST.jsonl`` (training items) and ``MANIFEST.valid.jsonl`` (a disjoint validation
subset, 2 % of each kind), both readable as ``manifest:FILE`` datasets, and
``PROVENANCE.md`` with every source, licence, voice and package version.

Why: the held-out test data (the LibriVox and cards utterances of
``bench/data/embedded`` and ``../shared/data``) must never be trained on, so the corpus
is made only from what the package registries provide; this script reads nothing in
those folders (``read_input`` refuses to) and refuses an output folder inside the
checkout.

Install the prerequisites (Debian bookworm, main)::

    apt-get install flite espeak-ng festival festvox-kallpc16k festvox-kdlpc16k \
        festvox-us-slt-hts fluidsynth fluid-soundfont-gm wordnet-base dict-devil \
        dict-jargon openttd-opensfx sound-theme-freedesktop

and use the project's environment (numpy, scipy, soundfile, soxr, torch);
``pip install pyloudnorm`` enables loudness normalisation. The script installs nothing:
it lists what is missing with the command that installs it, and exits with status 2.

Run from the repository root::

    python scripts/build_training_corpus.py --out /work/training_corpus [--hours 2]
        [--seed 0] [--jobs 2] [--valid-fraction 0.02]

Reproducible: every random choice comes from ``--seed`` and the item's index, and the
engines are deterministic, so the same seed and package versions give the same corpus.
Resumable: a rerun skips the files already written (``render_log.jsonl`` lists them);
a larger ``--hours`` with the same seed keeps every existing file and adds more.

Cost on this project's 2-core machine with 2 jobs: the default 2 hours takes 3.5 minutes
(4.5 with cold disk caches) and makes 1171 files, 184 MB; ``--hours 0.2`` takes 25 seconds
and 18 MB (``scripts/TRAINING_CORPUS.md`` has the measured figures).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from scipy import signal

from bench.audio import RESAMPLER, resample
from bench.parallel import process_pool
from bench.provenance import git_state
from bench.store import write_atomically

try:  # optional: without it every item is peak-normalised, as PROVENANCE.md then says
    import pyloudnorm
except ImportError:
    pyloudnorm = None

REPO_ROOT = Path(__file__).resolve().parents[1]
# The held-out test data: nothing under these folders may be read or written.
HELD_OUT_FOLDERS = (REPO_ROOT / "bench" / "data" / "embedded", REPO_ROOT.parent / "shared")

SAMPLE_RATE = 24_000  # EnCodec's 24 kHz model, the first codec trained on this corpus
TARGET_LUFS = -20.0
PEAK_LIMIT = 10 ** (-1 / 20)  # -1 dBFS: headroom so that 16-bit rounding never clips
LOUDNESS_BLOCK_SECONDS = 0.4  # ITU-R BS.1770 gating block: shorter sounds have no loudness
INT16_FULL_SCALE = 32768
DEFAULT_HOURS = 2.0
DEFAULT_VALID_FRACTION = 0.02
KIND_SHARES = {"speech": 0.6, "music": 0.25, "audio": 0.15}
MANIFEST_NAME = "MANIFEST.jsonl"
VALID_MANIFEST_NAME = "MANIFEST.valid.jsonl"
PROVENANCE_NAME = "PROVENANCE.md"
BUILD_NAME = "BUILD.json"
RENDER_LOG_NAME = "render_log.jsonl"
# Raised when a change to this script changes the audio of an existing id, so that a
# resumed build refuses a folder made by another version instead of mixing the two.
CORPUS_VERSION = 1


class CorpusError(ValueError):
    """A setting, input or output folder the corpus cannot be built with."""


# ---------------------------------------------------------------- prerequisites


@dataclass(frozen=True)
class Requirement:
    """A program on PATH or an absolute file path, and the Debian package providing it."""

    package: str
    needs: str

    def present(self) -> bool:
        if self.needs.startswith("/"):
            return Path(self.needs).exists()
        return shutil.which(self.needs) is not None


FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
WORDNET_DIR = Path("/usr/share/wordnet")
DEVIL_DICT = Path("/usr/share/dictd/devil.dict.dz")
JARGON_DICT = Path("/usr/share/dictd/jargon.dict.dz")
OPENSFX_CAT = Path("/usr/share/games/openttd/baseset/opensfx/opensfx.cat")
FREEDESKTOP_DIR = Path("/usr/share/sounds/freedesktop/stereo")
FREEDESKTOP_COPYRIGHT = Path("/usr/share/doc/sound-theme-freedesktop/copyright")

REQUIREMENTS = (
    Requirement("flite", "flite"),
    Requirement("espeak-ng", "espeak-ng"),
    Requirement("festival", "text2wave"),
    Requirement("festvox-kallpc16k", str(FESTIVAL_VOICE_DIR / "english" / "kal_diphone")),
    Requirement("festvox-kdlpc16k", str(FESTIVAL_VOICE_DIR / "english" / "ked_diphone")),
    Requirement("festvox-us-slt-hts", str(FESTIVAL_VOICE_DIR / "us" / "cmu_us_slt_arctic_hts")),
    Requirement("fluidsynth", "fluidsynth"),
    Requirement("fluid-soundfont-gm", str(SOUNDFONT)),
    Requirement("wordnet-base", str(WORDNET_DIR / "data.noun")),
    Requirement("dict-devil", str(DEVIL_DICT)),
    Requirement("dict-jargon", str(JARGON_DICT)),
    Requirement("openttd-opensfx", str(OPENSFX_CAT)),
    Requirement("sound-theme-freedesktop", str(FREEDESKTOP_DIR)),
)
APT_PACKAGES = tuple(dict.fromkeys(requirement.package for requirement in REQUIREMENTS))


def install_command(missing: Iterable[Requirement]) -> str:
    """The one apt-get line that installs the packages of ``missing``, in a stable order."""
    packages = sorted({requirement.package for requirement in missing})
    return f"apt-get install {' '.join(packages)}"


def check_requirements(requirements: Sequence[Requirement] = REQUIREMENTS) -> None:
    missing = [requirement for requirement in requirements if not requirement.present()]
    if missing:
        listed = "\n".join(f"  {item.needs} (Debian package {item.package})" for item in missing)
        raise CorpusError(
            f"missing prerequisites:\n{listed}\ninstall them with:\n  {install_command(missing)}"
        )


# ---------------------------------------------------------------- input and output guards


def is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def read_input(path: Path) -> bytes:
    """Read a source file, refusing the held-out test data whatever the path says."""
    resolved = path.resolve()
    for folder in HELD_OUT_FOLDERS:
        if is_within(resolved, folder.resolve()):
            raise CorpusError(f"refusing to read {path}: it lies in the held-out folder {folder}")
    return path.read_bytes()


def check_output_folder(out: Path, repo_root: Path = REPO_ROOT) -> Path:
    """The resolved ``out``; a folder inside the checkout or the held-out data is refused,
    so that the corpus is never committed nor mixed with the test data."""
    resolved = out.expanduser().resolve()
    for folder in (repo_root, *HELD_OUT_FOLDERS):
        if is_within(resolved, folder.resolve()):
            raise CorpusError(
                f"--out {out} lies inside {folder}; expected a folder outside the git "
                f"checkout and the held-out data, such as /work/training_corpus"
            )
    return resolved


# ---------------------------------------------------------------- text


@dataclass(frozen=True)
class TextSource:
    """A text whose sentences are read aloud, with where it comes from and its licence."""

    name: str
    title: str
    package: str
    licence: str
    share: float  # of the utterances
    load: Callable[[], list[str]]


# Words before a full stop that do not end a sentence (the Jargon File uses "esp.", "poss.").
ABBREVIATIONS = frozenset(
    "e.g i.e etc esp poss mr mrs ms dr st vs cf prob orig approx no vol fig ca jr sr prof "
    "u.s adj adv".split()
)
SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[]*[A-Z])")
TYPOGRAPHY = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "—": ", ", "–": "-"})
# What every engine reads the same way: letters and plain punctuation. Digits, symbols
# and markup are read differently by each engine, so the transcript would be inexact.
SPEAKABLE = re.compile(r"^[A-Za-z ,.;:'\"!?()-]+$")
MIN_WORDS = 4
MAX_WORDS = 30


def split_sentences(text: str) -> list[str]:
    """Split prose at ``.``, ``!`` or ``?`` followed by a capital, except after an
    abbreviation or a single letter (initials, "Dr. Johnson")."""
    text = " ".join(text.split())
    sentences = []
    start = 0
    for match in SENTENCE_END.finditer(text):
        if text[match.start()] == ".":
            word = text[start : match.start()].rsplit(" ", 1)[-1].lstrip("(\"'").lower()
            if word in ABBREVIATIONS or len(word) <= 1:
                continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    if text[start:].strip():
        sentences.append(text[start:].strip())
    return sentences


def clean_sentence(sentence: str) -> str | None:
    """The sentence as plain speakable text, capitalised and ending in punctuation, or None
    when it holds digits, symbols or markup, is unbalanced, or has too few or many words."""
    text = sentence.translate(TYPOGRAPHY)
    text = re.sub(r"\{\s*([^{}]*?)\s*\}", r"\1", text)  # Jargon File cross-references
    text = re.sub(r"\[[^\]]*\]", "", text)  # editorial notes such as [sic]
    text = text.replace("_", "")  # italics markers
    text = re.sub(r"\s+([,.;:!?])", r"\1", " ".join(text.split()))
    if not text or not SPEAKABLE.match(text):
        return None
    if not MIN_WORDS <= len(text.split()) <= MAX_WORDS:
        return None
    if text.count('"') % 2 or text.count("(") != text.count(")"):
        return None  # a fragment cut inside a quotation or a parenthesis
    if text.rstrip("\"')")[-1] not in ".!?":  # 'a "rum."' already ends a sentence
        text += "."
    return text[0].upper() + text[1:]


def speakable_sentences(passages: Iterable[str]) -> list[str]:
    """The cleaned sentences of ``passages``, each once, in order of first appearance."""
    sentences = (clean_sentence(s) for passage in passages for s in split_sentences(passage))
    return list(dict.fromkeys(s for s in sentences if s))


def wordnet_examples(data_file_text: str) -> list[str]:
    """The quoted usage examples of a WordNet ``data.*`` file's glosses, in file order."""
    examples = []
    for line in data_file_text.splitlines():
        if line.startswith("  ") or " | " not in line:  # licence header lines
            continue
        examples.extend(re.findall(r'"([^"]+)"', line.split(" | ", 1)[1]))
    return examples


DEVIL_HEADWORD = re.compile(r"^[A-Z][A-Z'\- ]*, [a-z.]+\s+")


def devil_definitions(dictionary_text: str) -> list[str]:
    """The prose definitions of The Devil's Dictionary (dictd text) without their headword;
    the indented verse and quotations are left out, since their lines are not sentences."""
    paragraphs = re.split(r"\n\s*\n", dictionary_text)
    return [DEVIL_HEADWORD.sub("", p) for p in paragraphs if DEVIL_HEADWORD.match(p)]


JARGON_SENSE = re.compile(r"^\s*(?:\d+\.\s+)?(?:(?:n|v|vi|vt|adj|adv|interj|pl)\.\s+)*")


def jargon_paragraphs(dictionary_text: str) -> list[str]:
    """The body paragraphs of the Jargon File (dictd text: indented four spaces), without
    headwords, pronunciations, sense numbers and part-of-speech marks ("1. vi.")."""
    paragraphs = []
    for paragraph in re.split(r"\n\s*\n", dictionary_text):
        lines = [line for line in paragraph.splitlines() if line.strip()]
        if lines and all(line.startswith("    ") for line in lines):
            paragraphs.append(JARGON_SENSE.sub("", paragraph))
    return paragraphs


def read_text(path: Path) -> str:
    data = read_input(path)
    return (gzip.decompress(data) if path.suffix == ".dz" else data).decode("utf-8")


def load_wordnet() -> list[str]:
    texts = (read_text(WORDNET_DIR / f"data.{part}") for part in ("noun", "verb", "adj", "adv"))
    return speakable_sentences(example for text in texts for example in wordnet_examples(text))


TEXT_SOURCES = (
    TextSource(
        "jargon",
        "The Jargon File 4.4.7 (29 Dec 2003), ed. Eric S. Raymond",
        "dict-jargon",
        "public domain (the Jargon File's own notice)",
        0.4,
        lambda: speakable_sentences(jargon_paragraphs(read_text(JARGON_DICT))),
    ),
    TextSource(
        "wordnet",
        "WordNet 3.0 usage examples (Princeton University)",
        "wordnet-base",
        "WordNet 3.0 licence (permissive, BSD-like; WordNet 3.0 Copyright 2006 by Princeton "
        "University. All rights reserved.)",
        0.35,
        load_wordnet,
    ),
    TextSource(
        "devil",
        "The Devil's Dictionary, Ambrose Bierce (1911)",
        "dict-devil",
        "public domain (copyright expired)",
        0.25,
        lambda: speakable_sentences(devil_definitions(read_text(DEVIL_DICT))),
    ),
)


# ---------------------------------------------------------------- voices


@dataclass(frozen=True)
class Voice:
    """One text-to-speech voice: ``engine`` names the program, ``name`` its voice there."""

    engine: str
    name: str
    package: str
    controls_pitch: bool

    @property
    def speaker(self) -> str:
        return f"{self.engine}_{self.name}"


FLITE_LICENCE = "flite and its voices: CMU/Edinburgh permissive licence (BSD-style)"
ESPEAK_LICENCE = "espeak-ng: GPL-3.0-or-later program and data (the GPL does not cover output)"
FESTIVAL_LICENCE = (
    "Festival: X11-style licence (University of Edinburgh, CMU); voices kal and ked "
    "diphones: the same free licence (CSTR, CMU); cmu_us_slt_arctic_hts: BSD-style "
    "(CMU ARCTIC, HTS working group)"
)
ENGINE_LICENCES = {
    "flite": FLITE_LICENCE,
    "espeak-ng": ESPEAK_LICENCE,
    "festival": FESTIVAL_LICENCE,
}
# Utterances per engine: flite's and Festival's voices sound most like people, espeak-ng
# brings many accents and voice qualities (Klatt, whisper, creak) through one formant model.
ENGINE_SHARES = {"flite": 0.4, "festival": 0.3, "espeak-ng": 0.3}

# flite's other voices: kal is kal16 at 8 kHz, awb_time speaks only times of day. Of the
# four, only the diphone voice kal16 takes a pitch setting; the clustergen voices ignore it.
FLITE_VOICES = (("awb", False), ("rms", False), ("slt", False), ("kal16", True))
FESTIVAL_VOICES = (
    ("kal_diphone", "festvox-kallpc16k", True),
    ("ked_diphone", "festvox-kdlpc16k", True),
    ("cmu_us_slt_arctic_hts", "festvox-us-slt-hts", False),  # hts_engine takes a speed only
)
# Every English accent of espeak-ng 1.51 but en-uk, which needs a non-free MBROLA voice.
ESPEAK_ACCENTS = tuple(
    "en-us en-us-nyc en-gb en-gb-x-rp en-gb-scotland en-gb-x-gbclan en-gb-x-gbcwmd en-029".split()
)
# The default and the human-sounding variants: male and female formant sets, the Klatt
# voicing source, creaky voice and whisper; the robot and novelty variants are left out.
ESPEAK_VARIANTS = ("", *"m1 m2 m3 m4 m5 m6 m7 f1 f2 f3 f4 f5".split()) + tuple(
    "klatt klatt2 klatt3 klatt4 croak whisper whisperf".split()
)
ESPEAK_DEFAULT_WPM = 175
FESTIVAL_DIPHONE_F0 = (105, 14)  # int_lr_params target mean and deviation (Hz) of kal and ked
FLITE_KAL16_F0 = 100


def all_voices() -> tuple[Voice, ...]:
    flite = tuple(Voice("flite", name, "flite", pitch) for name, pitch in FLITE_VOICES)
    festival = tuple(Voice("festival", *voice) for voice in FESTIVAL_VOICES)
    espeak = tuple(
        Voice("espeak-ng", f"{accent}+{variant}" if variant else accent, "espeak-ng", True)
        for accent in ESPEAK_ACCENTS
        for variant in ESPEAK_VARIANTS
    )
    return flite + festival + espeak


def check_voices(voices: Sequence[Voice]) -> None:
    """Fail early on a voice an engine lacks: espeak-ng silently falls back to its default
    voice for an unknown variant, which would mislabel the speaker."""
    flite_voices = run_tool(["flite", "-lv"]).split(":", 1)[-1].split()
    espeak_languages = run_tool(["espeak-ng", "--voices=en"]).split()
    espeak_variants = {
        word.removeprefix("!v/") for word in run_tool(["espeak-ng", "--voices=variant"]).split()
    }
    missing = []
    for voice in voices:
        if voice.engine == "flite" and voice.name not in flite_voices:
            missing.append(voice.speaker)
        if voice.engine == "espeak-ng":
            accent, _, variant = voice.name.partition("+")
            if accent not in espeak_languages or (variant and variant not in espeak_variants):
                missing.append(voice.speaker)
    if missing:
        raise CorpusError(
            f"the engines lack the voices {missing}; expected Debian bookworm's flite and "
            f"espeak-ng: apt-get install --reinstall flite espeak-ng"
        )


def run_tool(command: Sequence[str], stdin: str | None = None) -> str:
    """Run an engine; its stdout, or an error carrying its stderr."""
    completed = subprocess.run(
        list(command), input=stdin, capture_output=True, text=True, timeout=300
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {completed.returncode}: {completed.stderr.strip()}"
        )
    return completed.stdout


# ---------------------------------------------------------------- music


@dataclass(frozen=True)
class Note:
    """A note: start and length in beats, MIDI pitch and velocity (1-127)."""

    start: float
    length: float
    pitch: int
    velocity: int


@dataclass(frozen=True)
class Part:
    """One instrument of a piece: a General MIDI program on a channel (9 holds drums)."""

    role: str
    instrument: str
    program: int
    channel: int
    notes: tuple[Note, ...]
    volume: int = 100
    pan: int = 64
    reverb: int = 40


@dataclass(frozen=True)
class Song:
    tempo_bpm: float
    beats_per_bar: int
    key: str
    style: str
    bars: int
    parts: tuple[Part, ...]

    @property
    def seconds(self) -> float:
        return self.bars * self.beats_per_bar * 60 / self.tempo_bpm

    def describe(self) -> dict[str, Any]:
        return {
            "tempo_bpm": round(self.tempo_bpm, 1),
            "metre": f"{self.beats_per_bar}/4",
            "key": self.key,
            "style": self.style,
            "instruments": [f"{part.role}: {part.instrument}" for part in self.parts],
        }


NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}
PROGRESSIONS = (  # scale degrees, one chord a bar
    (0, 4, 5, 3),
    (0, 5, 3, 4),
    (0, 3, 4, 4),
    (5, 3, 0, 4),
    (0, 0, 3, 4),
    (1, 4, 0, 0),
    (0, 3, 0, 4),
    (0, 6, 5, 4),
)
# General MIDI programs (number, name) by role.
CHORD_INSTRUMENTS = (
    (0, "acoustic grand piano"),
    (2, "electric grand piano"),
    (4, "electric piano 1"),
    (5, "electric piano 2"),
    (6, "harpsichord"),
    (16, "drawbar organ"),
    (19, "church organ"),
    (21, "accordion"),
    (24, "nylon guitar"),
    (25, "steel guitar"),
    (26, "jazz guitar"),
    (27, "clean electric guitar"),
    (48, "string ensemble"),
    (49, "slow strings"),
    (52, "choir aahs"),
    (61, "brass section"),
    (88, "new age pad"),
    (89, "warm pad"),
)
BASS_INSTRUMENTS = (
    (32, "acoustic bass"),
    (33, "finger bass"),
    (34, "pick bass"),
    (35, "fretless bass"),
    (38, "synth bass"),
    (42, "cello"),
    (43, "contrabass"),
    (58, "tuba"),
)
MELODY_INSTRUMENTS = (
    (0, "acoustic grand piano"),
    (8, "celesta"),
    (11, "vibraphone"),
    (12, "marimba"),
    (13, "xylophone"),
    (22, "harmonica"),
    (24, "nylon guitar"),
    (40, "violin"),
    (41, "viola"),
    (46, "orchestral harp"),
    (56, "trumpet"),
    (57, "trombone"),
    (60, "french horn"),
    (64, "soprano sax"),
    (65, "alto sax"),
    (66, "tenor sax"),
    (68, "oboe"),
    (70, "bassoon"),
    (71, "clarinet"),
    (73, "flute"),
    (74, "recorder"),
    (75, "pan flute"),
    (80, "square lead"),
    (81, "sawtooth lead"),
    (104, "sitar"),
    (105, "banjo"),
    (108, "kalimba"),
)
SOLO_INSTRUMENTS = (
    (0, "acoustic grand piano"),
    (4, "electric piano 1"),
    (24, "nylon guitar"),
    (25, "steel guitar"),
    (46, "orchestral harp"),
    (11, "vibraphone"),
    (12, "marimba"),
)
# Drum patterns on a sixteenth-note grid, per metre: GM drum key -> hits ("x" loud, "o" soft).
DRUM_PATTERNS = {
    4: (
        {36: "x.....x.x.......", 38: "....x.......x...", 42: "x.x.x.x.x.x.x.x."},
        {36: "x.......x.......", 38: "....x.......x..o", 51: "x..ox..ox..ox..o"},
        {36: "x..x..x.x..x..x.", 37: "..x..x....x..x..", 70: "xoxoxoxoxoxoxoxo"},
        {
            36: "x...x...x...x...",
            39: "....x.......x...",
            42: "..x...x...x...x.",
            46: "..............x.",
        },
    ),
    3: (
        {36: "x...........", 38: "....x...x...", 42: "x.x.x.x.x.x."},
        {36: "x...........", 51: "x...x.ox...."},
    ),
}
DRUM_NAMES = {36: "kick", 37: "rim", 38: "snare", 39: "clap", 42: "closed hi-hat"}
DRUM_NAMES |= {46: "open hi-hat", 49: "crash", 51: "ride", 70: "maracas"}


def scale_pitch(root: int, mode: tuple[int, ...], degree: int, octave: int) -> int:
    """MIDI pitch of a scale degree (any integer, wrapping into other octaves)."""
    octaves, step = divmod(degree, len(mode))
    return 12 * (octave + 1 + octaves) + root + mode[step]


def chord_degrees(degree: int, seventh: bool) -> tuple[int, ...]:
    return (
        (degree, degree + 2, degree + 4, degree + 6)
        if seventh
        else (degree, degree + 2, degree + 4)
    )


def compose_song(rng: np.random.Generator, seconds: float) -> Song:
    """A piece of about ``seconds``: chords, bass, melody and drums as the style picks them,
    on a chord progression in a random key, mode, metre and tempo. Deterministic in ``rng``."""
    tempo = float(rng.uniform(66, 168))
    beats_per_bar = 3 if rng.random() < 0.25 else 4
    root = int(rng.integers(12))
    mode_name = str(rng.choice(list(MODES)))
    mode = MODES[mode_name]
    progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    bars = max(4, round(seconds * tempo / 60 / beats_per_bar))
    sevenths = rng.random() < 0.35
    style = str(rng.choice(["band", "solo", "chamber", "arpeggio"]))
    chords = [chord_degrees(progression[bar % len(progression)], sevenths) for bar in range(bars)]

    def pick(instruments: tuple[tuple[int, str], ...]) -> tuple[int, str]:
        program, name = instruments[int(rng.integers(len(instruments)))]
        return program, name

    parts = []
    if style == "solo":
        program, name = pick(SOLO_INSTRUMENTS)
        notes = comp_notes(rng, chords, root, mode, beats_per_bar, "broken")
        notes += melody_notes(rng, chords, root, mode, beats_per_bar, octave=5)
        parts.append(Part("solo", name, program, 0, tuple(sorted(notes, key=lambda n: n.start))))
    else:
        chord_program, chord_name = pick(CHORD_INSTRUMENTS)
        comping = (
            "arpeggio" if style == "arpeggio" else str(rng.choice(["block", "beats", "broken"]))
        )
        chord_notes = comp_notes(rng, chords, root, mode, beats_per_bar, comping)
        parts.append(Part("chords", chord_name, chord_program, 0, tuple(chord_notes), 85, 44))
        bass_program, bass_name = pick(BASS_INSTRUMENTS)
        bass = bass_notes(rng, chords, root, mode, beats_per_bar)
        parts.append(Part("bass", bass_name, bass_program, 1, tuple(bass), 100, 64))
        if style != "arpeggio" or rng.random() < 0.5:
            melody_program, melody_name = pick(MELODY_INSTRUMENTS)
            melody = melody_notes(rng, chords, root, mode, beats_per_bar, octave=5)
            parts.append(Part("melody", melody_name, melody_program, 2, tuple(melody), 110, 84))
        if style in ("band", "arpeggio") and rng.random() < 0.8:
            drums = drum_notes(rng, bars, beats_per_bar)
            used = sorted({note.pitch for note in drums})
            kit = "drums (" + ", ".join(DRUM_NAMES.get(key, str(key)) for key in used) + ")"
            parts.append(Part("drums", kit, 0, 9, tuple(drums), 95, 64, 20))
    return Song(tempo, beats_per_bar, f"{NOTE_NAMES[root]} {mode_name}", style, bars, tuple(parts))


def comp_notes(
    rng: np.random.Generator,
    chords: list[tuple[int, ...]],
    root: int,
    mode: tuple[int, ...],
    beats_per_bar: int,
    comping: str,
) -> list[Note]:
    """The chord part: held chords (block), a chord a beat (beats), root then upper notes
    (broken) or eighth-note arpeggios (arpeggio)."""
    notes = []
    for bar, degrees in enumerate(chords):
        start = bar * beats_per_bar
        pitches = [scale_pitch(root, mode, degree, 3) for degree in degrees]
        velocity = int(rng.integers(55, 80))
        if comping == "block":
            notes += [Note(start, beats_per_bar, pitch, velocity) for pitch in pitches]
        elif comping == "beats":
            for beat in range(beats_per_bar):
                accent = 12 if beat == 0 else 0
                notes += [Note(start + beat, 0.9, p, velocity + accent) for p in pitches]
        elif comping == "broken":
            notes.append(Note(start, beats_per_bar, pitches[0], velocity + 10))
            for beat in range(1, beats_per_bar):
                notes += [Note(start + beat, 0.9, p, velocity) for p in pitches[1:]]
        else:
            cycle = pitches + [pitches[0] + 12] + pitches[-2:0:-1]
            for step in range(beats_per_bar * 2):
                notes.append(Note(start + step / 2, 0.5, cycle[step % len(cycle)], velocity))
    return notes


def bass_notes(
    rng: np.random.Generator,
    chords: list[tuple[int, ...]],
    root: int,
    mode: tuple[int, ...],
    beats_per_bar: int,
) -> list[Note]:
    """Root on the downbeat, then the fifth or a walk through chord tones."""
    walking = rng.random() < 0.4
    notes = []
    for bar, degrees in enumerate(chords):
        start = bar * beats_per_bar
        if walking:
            for beat in range(beats_per_bar):
                degree = degrees[0] if beat == 0 else int(rng.choice(degrees[:3]))
                pitch = scale_pitch(root, mode, degree, 2)
                notes.append(Note(start + beat, 0.95, pitch, int(rng.integers(80, 105))))
        else:
            notes.append(Note(start, 2, scale_pitch(root, mode, degrees[0], 2), 100))
            fifth = scale_pitch(root, mode, degrees[2], 2)
            notes.append(Note(start + 2, beats_per_bar - 2, fifth, 85))
    return notes


MELODY_RHYTHMS = (0.5, 0.5, 1.0, 1.0, 1.0, 1.5, 2.0, 0.25)
MELODY_STEPS = (-2, -1, -1, 0, 1, 1, 2, -3, 3, 4, -4)


def melody_notes(
    rng: np.random.Generator,
    chords: list[tuple[int, ...]],
    root: int,
    mode: tuple[int, ...],
    beats_per_bar: int,
    octave: int,
) -> list[Note]:
    """A random walk on the scale that lands on chord tones on most beats, with rests."""
    notes = []
    degree = int(rng.choice(chords[0]))
    for bar, chord in enumerate(chords):
        position = 0.0
        while position < beats_per_bar:
            length = min(float(rng.choice(MELODY_RHYTHMS)), beats_per_bar - position)
            degree = int(np.clip(degree + int(rng.choice(MELODY_STEPS)), -3, 10))
            if position == int(position) and rng.random() < 0.6:
                # Snap to the nearest chord tone so that the tune fits the harmony.
                degree = min(
                    (tone + 7 * shift for tone in chord for shift in (-1, 0, 1)),
                    key=lambda tone: abs(tone - degree),
                )
            if rng.random() > 0.12:
                velocity = int(rng.integers(70, 100)) + (15 if position == 0 else 0)
                pitch = scale_pitch(root, mode, degree, octave)
                notes.append(Note(bar * beats_per_bar + position, length * 0.95, pitch, velocity))
            position += length
    return notes


def drum_notes(rng: np.random.Generator, bars: int, beats_per_bar: int) -> list[Note]:
    """A pattern of DRUM_PATTERNS repeated, with a crash on the first beat and velocity
    jitter so that the hits are not identical samples."""
    patterns = DRUM_PATTERNS[beats_per_bar]
    pattern = patterns[int(rng.integers(len(patterns)))]
    notes = [Note(0, 1, 49, 100)]
    for bar in range(bars):
        for key, hits in pattern.items():
            for step, hit in enumerate(hits):
                if hit == ".":
                    continue
                velocity = (100 if hit == "x" else 60) + int(rng.integers(-12, 12))
                notes.append(Note(bar * beats_per_bar + step / 4, 0.25, key, velocity))
    return notes


TICKS_PER_BEAT = 480


def variable_length(value: int) -> bytes:
    """A Standard MIDI File variable-length quantity: 7 bits a byte, high bit = more."""
    if value < 0:
        raise ValueError(f"a MIDI delta time must be non-negative, got {value}")
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(groups))


def midi_track(events: list[tuple[int, int, bytes]]) -> bytes:
    """An ``MTrk`` chunk from (tick, order, message) events; at one tick a lower order goes
    first, so that a note-off precedes a note-on of the same pitch."""
    body = b""
    now = 0
    for tick, _, message in sorted(events, key=lambda event: (event[0], event[1])):
        body += variable_length(tick - now) + message
        now = tick
    body += variable_length(0) + b"\xff\x2f\x00"  # end of track
    return b"MTrk" + struct.pack(">I", len(body)) + body


def song_to_midi(song: Song) -> bytes:
    """The song as a format-1 Standard MIDI File: a tempo track, then one track a part."""
    microseconds_per_beat = round(60_000_000 / song.tempo_bpm)
    tempo_events = [
        (0, 0, b"\xff\x51\x03" + microseconds_per_beat.to_bytes(3, "big")),
        (0, 1, bytes([0xFF, 0x58, 0x04, song.beats_per_bar, 2, 24, 8])),  # time signature
    ]
    tracks = [midi_track(tempo_events)]
    for part in song.parts:
        channel = part.channel
        events = [
            (0, 0, bytes([0xC0 | channel, part.program])),
            (0, 1, bytes([0xB0 | channel, 7, part.volume])),
            (0, 1, bytes([0xB0 | channel, 10, part.pan])),
            (0, 1, bytes([0xB0 | channel, 91, part.reverb])),
        ]
        for note in part.notes:
            velocity = int(np.clip(note.velocity, 1, 127))
            on = round(note.start * TICKS_PER_BEAT)
            off = max(on + 1, round((note.start + note.length) * TICKS_PER_BEAT))
            events.append((on, 3, bytes([0x90 | channel, note.pitch, velocity])))
            events.append((off, 2, bytes([0x80 | channel, note.pitch, 0])))
        tracks.append(midi_track(events))
    header = b"MThd" + struct.pack(">IHHH", 6, 1, len(tracks), TICKS_PER_BEAT)
    return header + b"".join(tracks)


MUSIC_LICENCE = (
    "MIT: MIDI composed by this script, rendered with the FluidR3_GM SoundFont (MIT, Frank "
    "Wen) by FluidSynth (LGPL-2.1-or-later; the licence does not cover its output)"
)


# ---------------------------------------------------------------- general audio


@dataclass(frozen=True)
class RealSound:
    """A recording from a Debian package, mono at SAMPLE_RATE, with its credit and licence."""

    key: str
    title: str
    package: str
    credit: str
    licence: str
    audio: np.ndarray = field(repr=False, compare=False)

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def parse_opensfx_catalogue(data: bytes) -> list[tuple[str, bytes]]:
    """The (description, WAV bytes) entries of an OpenTTD sound catalogue (``.cat``).

    The file opens with a table of (offset, size) little-endian pairs, the first offset
    giving the table's length; bit 31 of each offset flags the newer format. An entry is
    a length byte, a NUL-terminated description, then a RIFF WAV file.
    """
    if len(data) < 8:
        raise CorpusError(f"not an OpenTTD sound catalogue: {len(data)} bytes")
    count = (struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF) // 8
    entries = []
    for index in range(count):
        offset, size = struct.unpack_from("<II", data, 8 * index)
        offset &= 0x7FFFFFFF
        name_length = data[offset]
        name = data[offset + 1 : offset + 1 + name_length].rstrip(b"\0").decode("latin-1")
        entries.append((name, data[offset + 1 + name_length : offset + size]))
    return entries


OPENSFX_LICENCE = re.compile(r"License: (?P<licence>.+?)\.(?:\s|$)")


def opensfx_sounds() -> list[RealSound]:
    """OpenSFX 1.0.3's recordings; each description names its authors and licence. The two
    placeholder entries (empty WAV data) are skipped."""
    sounds = []
    for index, (description, wav) in enumerate(parse_opensfx_catalogue(read_input(OPENSFX_CAT))):
        if not wav.startswith(b"RIFF"):
            continue
        title = description.split('"')[1] if description.count('"') >= 2 else description
        match = OPENSFX_LICENCE.search(description)
        licence = match["licence"] if match else "CC-BY-SA-3.0 (the OpenSFX collection)"
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        audio, rate = soundfile.read(io.BytesIO(wav), dtype="float64", always_2d=True)
        sounds.append(
            RealSound(
                f"opensfx-{index:02d}-{slug}",
                title,
                "openttd-opensfx",
                description,
                f"{licence} (OpenSFX collection: CC-BY-SA-3.0)",
                to_mono_24k(audio, rate),
            )
        )
    return sounds


def parse_dep5_licences(copyright_text: str) -> dict[str, tuple[str, str]]:
    """``{file name: (copyright, licence)}`` from a machine-readable Debian copyright file
    (DEP-5), for the paragraphs that list files by name (not by pattern)."""
    licences = {}
    for paragraph in re.split(r"\n\s*\n", copyright_text):
        fields = dict(re.findall(r"^(Files|Copyright|License):[ \t]*(.*)$", paragraph, re.M))
        if "Files" not in fields or "*" in fields["Files"]:
            continue
        for name in fields["Files"].split():
            licences[Path(name).name] = (fields.get("Copyright", ""), fields.get("License", ""))
    return licences


def freedesktop_sounds() -> list[RealSound]:
    licences = parse_dep5_licences(read_input(FREEDESKTOP_COPYRIGHT).decode("utf-8"))
    sounds = []
    for path in sorted(FREEDESKTOP_DIR.glob("*.oga")):
        holder, licence = licences.get(path.name, ("see the package's copyright file", "GPL-2+"))
        audio, rate = soundfile.read(io.BytesIO(read_input(path)), dtype="float64", always_2d=True)
        sounds.append(
            RealSound(
                f"freedesktop-{path.stem}",
                path.stem,
                "sound-theme-freedesktop",
                f"{path.name} by {holder}",
                licence,
                to_mono_24k(audio, rate),
            )
        )
    return sounds


@cache
def sound_library() -> dict[str, RealSound]:
    """Every real recording by key; loaded once per process (workers inherit it by fork)."""
    return {sound.key: sound for sound in (*opensfx_sounds(), *freedesktop_sounds())}


def smoothed_noise(rng: np.random.Generator, samples: int, rate_hz: float) -> np.ndarray:
    """A slow random envelope in [0, 1]: white noise low-passed at ``rate_hz``."""
    sos = signal.butter(2, rate_hz, fs=SAMPLE_RATE, output="sos")
    envelope = signal.sosfiltfilt(sos, rng.standard_normal(samples + SAMPLE_RATE))[SAMPLE_RATE:]
    envelope -= envelope.min()
    return envelope / max(envelope.max(), 1e-12)


def band_noise(rng: np.random.Generator, samples: int, low: float, high: float) -> np.ndarray:
    sos = signal.butter(2, [low, high], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return signal.sosfilt(sos, rng.standard_normal(samples))


def decaying_bursts(
    rng: np.random.Generator,
    samples: int,
    per_second: float,
    decay_seconds: tuple[float, float],
    band: tuple[float, float],
) -> np.ndarray:
    """Poisson-timed bursts of band-limited noise with exponential decay (drops, crackles),
    each scaled by a log-normal factor: varied, but without the rare huge burst that would
    set the peak and leave the rest near silence after peak limiting."""
    track = np.zeros(samples)
    count = rng.poisson(per_second * samples / SAMPLE_RATE)
    sos = signal.butter(2, band, btype="bandpass", fs=SAMPLE_RATE, output="sos")
    for start in rng.integers(0, samples, count):
        decay = rng.uniform(*decay_seconds)
        length = min(int(5 * decay * SAMPLE_RATE), samples - start)
        time = np.arange(length) / SAMPLE_RATE
        burst = signal.sosfilt(sos, rng.standard_normal(length)) * np.exp(-time / decay)
        track[start : start + length] += rng.lognormal(0, 0.6) * burst
    return track


def rain(rng: np.random.Generator, samples: int) -> np.ndarray:
    """Hiss of distant rain with slow gusts, under close drops."""
    hiss = band_noise(rng, samples, 400, 9000) * (0.5 + 0.5 * smoothed_noise(rng, samples, 0.3))
    drops = decaying_bursts(rng, samples, rng.uniform(20, 80), (0.002, 0.01), (1500, 8000))
    return hiss + rng.uniform(0.5, 2.0) * drops


def wind(rng: np.random.Generator, samples: int) -> np.ndarray:
    """Three noise bands, each swelling on its own slow envelope."""
    bands = ((80, 400), (300, 1200), (900, 3000))
    return sum(
        band_noise(rng, samples, low, high)
        * smoothed_noise(rng, samples, rng.uniform(0.1, 0.6)) ** 2
        for low, high in bands
    )


def surf(rng: np.random.Generator, samples: int) -> np.ndarray:
    """Waves: low-passed noise under a swell every 5-9 s, plus foam hiss on the crests."""
    time = np.arange(samples) / SAMPLE_RATE
    period = rng.uniform(5, 9)
    swell = (0.5 - 0.5 * np.cos(2 * np.pi * time / period + rng.uniform(0, 2 * np.pi))) ** 3
    body = band_noise(rng, samples, 60, 1500) * (0.2 + swell)
    return body + 0.5 * band_noise(rng, samples, 2000, 10000) * swell


def stream(rng: np.random.Generator, samples: int) -> np.ndarray:
    """Running water: fast-fluttering band noise and bubbling chirps."""
    flutter = 0.4 + 0.6 * smoothed_noise(rng, samples, rng.uniform(8, 20))
    water = band_noise(rng, samples, 500, 5000) * flutter
    bubbles = np.zeros(samples)
    for start in rng.integers(0, samples, rng.poisson(15 * samples / SAMPLE_RATE)):
        length = min(int(rng.uniform(0.01, 0.04) * SAMPLE_RATE), samples - start)
        time = np.arange(length) / SAMPLE_RATE
        frequency = rng.uniform(400, 1500) * (1 + 8 * time)  # a rising "plip"
        phase = 2 * np.pi * np.cumsum(frequency) / SAMPLE_RATE
        bubbles[start : start + length] += np.sin(phase) * np.hanning(length)
    return water + 0.3 * bubbles


def fire(rng: np.random.Generator, samples: int) -> np.ndarray:
    """A low roar under crackles of log-normal strength; the roar is loud enough that the
    crest factor stays near 20-25 dB, so loudness normalisation leaves it audible."""
    roar = band_noise(rng, samples, 40, 300) * (0.5 + 0.5 * smoothed_noise(rng, samples, 1.0))
    crackles = decaying_bursts(rng, samples, rng.uniform(10, 40), (0.001, 0.006), (800, 10000))
    return 5 * roar + crackles


def engine(rng: np.random.Generator, samples: int) -> np.ndarray:
    """An idling motor: firing harmonics of a drifting rotation rate, plus noise."""
    time = np.arange(samples) / SAMPLE_RATE
    firing = rng.uniform(20, 60) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * time))
    phase = 2 * np.pi * np.cumsum(firing) / SAMPLE_RATE
    tone = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k**1.2 for k in range(1, 40))
    tone *= 1 + 0.3 * np.sin(phase / 2)  # uneven cylinders
    lowpass = signal.butter(2, 2500, fs=SAMPLE_RATE, output="sos")
    return signal.sosfilt(lowpass, tone) + 0.1 * band_noise(rng, samples, 200, 6000)


TEXTURES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "rain": rain,
    "wind": wind,
    "surf": surf,
    "stream": stream,
    "fire": fire,
    "engine": engine,
}
GENERATED_LICENCE = "MIT (synthesised by this script)"


# ---------------------------------------------------------------- recipes and jobs


@dataclass(frozen=True)
class SpeechRecipe:
    """One sentence read by one voice; ``rate`` > 1 speaks faster, ``pitch`` scales F0."""

    voice: Voice
    text: str
    text_source: str
    rate: float
    pitch: float | None

    def command(self, text_file: Path, wav_file: Path) -> list[str]:
        voice = self.voice
        if voice.engine == "flite":
            stretch = f"duration_stretch={1 / self.rate:.3f}"
            command = ["flite", "-voice", voice.name, "--setf", stretch]
            if self.pitch is not None:
                command += ["--setf", f"int_f0_target_mean={FLITE_KAL16_F0 * self.pitch:.1f}"]
            return [*command, "-f", str(text_file), "-o", str(wav_file)]
        if voice.engine == "espeak-ng":
            assert self.pitch is not None, "every espeak-ng voice takes a pitch"
            pitch = int(np.clip(round(50 + 100 * math.log2(self.pitch)), 0, 99))
            speed = round(ESPEAK_DEFAULT_WPM * self.rate)
            options = ["-v", voice.name, "-s", str(speed), "-p", str(pitch)]
            return ["espeak-ng", *options, "-f", str(text_file), "-w", str(wav_file)]
        settings = [f"(voice_{voice.name})"]
        if self.pitch is None:  # the HTS voice: hts_engine's speed factor
            settings.append(
                f'(set! hts_engine_params (append hts_engine_params \'(("-r" {self.rate:.3f}))))'
            )
        else:
            mean, deviation = (value * self.pitch for value in FESTIVAL_DIPHONE_F0)
            settings.append(f"(Parameter.set 'Duration_Stretch {1 / self.rate:.3f})")
            settings.append(
                f"(set! int_lr_params '((target_f0_mean {mean:.1f}) (target_f0_std "
                f"{deviation:.1f}) (model_f0_mean 170) (model_f0_std 34)))"
            )
        evals = [argument for setting in settings for argument in ("-eval", setting)]
        return ["text2wave", *evals, str(text_file), "-o", str(wav_file)]

    def render(self, scratch: Path) -> tuple[np.ndarray, int]:
        text_file, wav_file = scratch / "text.txt", scratch / "speech.wav"
        text_file.write_text(self.text + "\n", encoding="utf-8")
        run_tool(self.command(text_file, wav_file))
        audio, rate = soundfile.read(wav_file, dtype="float64", always_2d=True)
        return audio, rate

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.voice.engine,
            "voice": self.voice.name,
            "rate": round(self.rate, 3),
            "pitch": None if self.pitch is None else round(self.pitch, 3),
            "text_source": self.text_source,
        }


@dataclass(frozen=True)
class MusicRecipe:
    song: Song

    def render(self, scratch: Path) -> tuple[np.ndarray, int]:
        midi_file, wav_file = scratch / "song.mid", scratch / "song.wav"
        midi_file.write_bytes(song_to_midi(self.song))
        options = ["-ni", "-q", "-g", "0.5", "-r", "44100", "-F", str(wav_file)]
        run_tool(["fluidsynth", *options, str(SOUNDFONT), str(midi_file)])
        audio, rate = soundfile.read(wav_file, dtype="float64", always_2d=True)
        return audio, rate

    def describe(self) -> dict[str, Any]:
        return self.song.describe()


@dataclass(frozen=True)
class RealSoundRecipe:
    key: str

    def render(self, scratch: Path) -> tuple[np.ndarray, int]:
        return sound_library()[self.key].audio[:, None], SAMPLE_RATE

    def describe(self) -> dict[str, Any]:
        return {"recording": self.key}


@dataclass(frozen=True)
class TextureRecipe:
    texture: str
    seconds: float
    seed: int

    def render(self, scratch: Path) -> tuple[np.ndarray, int]:
        samples = int(self.seconds * SAMPLE_RATE)
        return TEXTURES[self.texture](np.random.default_rng(self.seed), samples)[
            :, None
        ], SAMPLE_RATE

    def describe(self) -> dict[str, Any]:
        return {"texture": self.texture, "seed": self.seed}


@dataclass(frozen=True)
class SceneRecipe:
    """Recordings placed over an ambient bed: (key, start in seconds, gain in dB) each."""

    bed: str
    bed_gain_db: float
    events: tuple[tuple[str, float, float], ...]
    seconds: float
    seed: int

    def render(self, scratch: Path) -> tuple[np.ndarray, int]:
        samples = int(self.seconds * SAMPLE_RATE)
        bed = TEXTURES[self.bed](np.random.default_rng(self.seed), samples)
        track = bed / max(float(np.sqrt(np.mean(bed**2))), 1e-12) * 0.05 * db(self.bed_gain_db)
        library = sound_library()
        for key, start, gain_db in self.events:
            sound = library[key].audio
            sound = sound / max(float(np.abs(sound).max()), 1e-12) * 0.5 * db(gain_db)
            offset = int(start * SAMPLE_RATE)
            end = min(samples, offset + len(sound))
            track[offset:end] += sound[: end - offset]
        return track[:, None], SAMPLE_RATE

    def describe(self) -> dict[str, Any]:
        return {
            "bed": self.bed,
            "bed_gain_db": round(self.bed_gain_db, 1),
            "events": [
                {"recording": key, "start": round(start, 2), "gain_db": round(gain, 1)}
                for key, start, gain in self.events
            ],
        }


Recipe = SpeechRecipe | MusicRecipe | RealSoundRecipe | TextureRecipe | SceneRecipe


@dataclass(frozen=True)
class Job:
    """One file of the corpus: how to make it and what the manifest says about it."""

    id: str
    kind: str  # speech | music | audio
    recipe: Recipe
    tags: tuple[str, ...]
    source: str
    licence: str
    estimated_seconds: float
    transcript: str | None = None
    speaker: str | None = None

    @property
    def path(self) -> str:
        return f"{self.kind}/{self.id}.flac"


def item_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator for one item: a stable function of the seed and the item's keys, so an
    item's content never depends on how many items come before or after it."""
    words = [key if isinstance(key, int) else zlib.crc32(key.encode()) for key in keys]
    return np.random.default_rng([seed, *words])


def choose_weighted(rng: np.random.Generator, shares: dict[str, float]) -> str:
    names = list(shares)
    weights = np.array([shares[name] for name in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def estimate_speech_seconds(text: str, rate: float) -> float:
    """About 3 words a second at rate 1, plus the leading and trailing silence (fitted
    to the voices here; the real total is measured and reported after rendering)."""
    return 0.45 + len(text.split()) / (3.0 * rate)


def plan_speech(
    seed: int,
    target_seconds: float,
    voices: Sequence[Voice],
    sources: Sequence[TextSource],
    sentences: dict[str, list[str]],
) -> list[Job]:
    """Utterances until their estimated duration reaches ``target_seconds``.

    Each text source's sentences (``sentences[source.name]``) are shuffled once by the
    seed and used in turn, again from the start only once all are used; every other
    choice comes from the item's own generator, so a longer plan extends a shorter one.
    """
    text_shares = {source.name: source.share for source in sources}
    text_licences = {source.name: source.licence for source in sources}
    pools = {
        name: [lines[i] for i in item_rng(seed, "sentences", name).permutation(len(lines))]
        for name, lines in sentences.items()
    }
    used = Counter()
    by_engine = {engine: [v for v in voices if v.engine == engine] for engine in ENGINE_SHARES}
    engine_shares = {engine: share for engine, share in ENGINE_SHARES.items() if by_engine[engine]}
    jobs: list[Job] = []
    total = 0.0
    while total < target_seconds:
        rng = item_rng(seed, "speech", len(jobs))
        engine = choose_weighted(rng, engine_shares)
        voice = by_engine[engine][int(rng.integers(len(by_engine[engine])))]
        source = choose_weighted(rng, text_shares)
        text = pools[source][used[source] % len(pools[source])]
        used[source] += 1
        rate = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        pitch = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        recipe = SpeechRecipe(voice, text, source, rate, pitch if voice.controls_pitch else None)
        estimate = estimate_speech_seconds(text, rate)
        name = re.sub(r"[^A-Za-z0-9]+", "-", voice.name).strip("-")
        jobs.append(
            Job(
                id=f"speech_{len(jobs):05d}_{engine}_{name}",
                kind="speech",
                recipe=recipe,
                tags=("speech", "synthetic"),
                source=f"{engine} voice {voice.name} reading {source} (Debian {voice.package})",
                licence=f"speech: {ENGINE_LICENCES[engine]}; text: {text_licences[source]}",
                estimated_seconds=estimate,
                transcript=text,
                speaker=voice.speaker,
            )
        )
        total += estimate
    return jobs


def plan_music(seed: int, target_seconds: float) -> list[Job]:
    """Pieces of 15-30 s until their total reaches ``target_seconds``."""
    jobs: list[Job] = []
    total = 0.0
    while total < target_seconds:
        rng = item_rng(seed, "music", len(jobs))
        song = compose_song(rng, float(rng.uniform(15, 30)))
        jobs.append(
            Job(
                id=f"music_{len(jobs):04d}_{song.style}",
                kind="music",
                recipe=MusicRecipe(song),
                tags=("music", "synthetic"),
                source="composed by this script, rendered by FluidSynth with FluidR3_GM",
                licence=MUSIC_LICENCE,
                estimated_seconds=song.seconds + 1.0,  # the release tails
            )
        )
        total += jobs[-1].estimated_seconds
    return jobs


MIN_RECORDING_SECONDS = 0.5  # shorter recordings (clicks, beeps) are used in scenes only


def plan_audio(seed: int, target_seconds: float, library: dict[str, RealSound]) -> list[Job]:
    """Every real recording once, then alternately a scene (2-6 recordings over a bed) and a
    synthesised texture, until the total reaches ``target_seconds``."""
    jobs: list[Job] = []
    total = 0.0
    for sound in library.values():
        if total >= target_seconds:
            return jobs
        if sound.seconds < MIN_RECORDING_SECONDS:
            continue
        jobs.append(
            Job(
                id=f"audio_{len(jobs):04d}_{sound.key}",
                kind="audio",
                recipe=RealSoundRecipe(sound.key),
                tags=("audio",),
                source=f"Debian {sound.package}: {sound.title}",
                licence=sound.licence,
                estimated_seconds=sound.seconds,
            )
        )
        total += sound.seconds
    keys = sorted(library)
    textures = sorted(TEXTURES)
    while total < target_seconds:
        rng = item_rng(seed, "audio", len(jobs))
        seconds = float(rng.uniform(8, 16))
        texture = textures[int(rng.integers(len(textures)))]
        seed_value = int(rng.integers(2**63))
        if len(jobs) % 2 == 0:
            events = tuple(
                (
                    keys[int(rng.integers(len(keys)))],
                    float(rng.uniform(0, seconds - 1)),
                    float(rng.uniform(-12, 0)),
                )
                for _ in range(int(rng.integers(2, 7)))
            )
            bed_gain = float(rng.uniform(-12, 0))
            licences = sorted({library[key].licence for key, _, _ in events})
            jobs.append(
                Job(
                    id=f"audio_{len(jobs):04d}_scene-{texture}",
                    kind="audio",
                    recipe=SceneRecipe(texture, bed_gain, events, seconds, seed_value),
                    tags=("audio",),
                    source="scene by this script: OpenSFX/freedesktop recordings over a "
                    f"synthesised {texture} bed",
                    licence="; ".join(licences) + f"; bed: {GENERATED_LICENCE}",
                    estimated_seconds=seconds,
                )
            )
        else:
            jobs.append(
                Job(
                    id=f"audio_{len(jobs):04d}_texture-{texture}",
                    kind="audio",
                    recipe=TextureRecipe(texture, seconds, seed_value),
                    tags=("audio", "synthetic"),
                    source=f"{texture} texture synthesised by this script",
                    licence=GENERATED_LICENCE,
                    estimated_seconds=seconds,
                )
            )
        total += seconds
    return jobs


# ---------------------------------------------------------------- rendering


def db(gain_db: float) -> float:
    return 10 ** (gain_db / 20)


def to_mono_24k(audio: np.ndarray, rate: int) -> np.ndarray:
    """``(samples, channels)`` audio averaged to mono and resampled to SAMPLE_RATE."""
    mono = torch.from_numpy(np.ascontiguousarray(audio.mean(axis=1)))[None]
    return resample(mono, rate, SAMPLE_RATE)[0].numpy().astype(np.float64)


SILENCE_BELOW_PEAK_DB = 60.0
SILENCE_MARGIN_SECONDS = 0.25


def trim_silence(audio: np.ndarray) -> np.ndarray:
    """Cut leading and trailing stretches quieter than 60 dB below the peak (in 10 ms
    frames), keeping 0.25 s of each: FluidSynth renders seconds of inaudible reverb tail."""
    frame = SAMPLE_RATE // 100
    frames = len(audio) // frame
    if frames == 0:
        return audio
    power = np.mean(audio[: frames * frame].reshape(frames, frame) ** 2, axis=1)
    audible = np.nonzero(power > np.max(audio**2) * db(-SILENCE_BELOW_PEAK_DB) ** 2)[0]
    if len(audible) == 0:
        return audio
    margin = int(SILENCE_MARGIN_SECONDS * SAMPLE_RATE)
    start = max(0, audible[0] * frame - margin)
    end = min(len(audio), (audible[-1] + 1) * frame + margin)
    return audio[start:end]


@dataclass(frozen=True)
class Normalised:
    audio: np.ndarray = field(repr=False)
    method: str
    gain_db: float


def normalise(audio: np.ndarray, use_loudness: bool) -> Normalised:
    """Scale to TARGET_LUFS (BS.1770 via pyloudnorm), or to the peak limit where loudness
    is unavailable or undefined; never above PEAK_LIMIT."""
    peak = float(np.abs(audio).max(initial=0.0))
    if peak == 0:
        raise CorpusError("the engine produced silence")
    if use_loudness and len(audio) >= LOUDNESS_BLOCK_SECONDS * SAMPLE_RATE:
        loudness = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(audio)
        if math.isfinite(loudness):
            method, gain = f"loudness {TARGET_LUFS:g} LUFS", db(TARGET_LUFS - loudness)
            if peak * gain > PEAK_LIMIT:
                method, gain = f"{method}, peak-limited to -1 dBFS", PEAK_LIMIT / peak
            return Normalised(audio * gain, method, round(20 * math.log10(gain), 2))
    gain = PEAK_LIMIT / peak
    return Normalised(audio * gain, "peak", round(20 * math.log10(gain), 2))


def flac_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    samples = np.round(np.clip(audio, -1, 1 - 1 / INT16_FULL_SCALE) * INT16_FULL_SCALE)
    soundfile.write(buffer, samples.astype(np.int16), SAMPLE_RATE, "PCM_16", format="FLAC")
    return buffer.getvalue()


def render_job(job: Job, out: Path, use_loudness: bool) -> dict[str, Any]:
    """Make one file (atomically) and return what the render log records about it."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="corpus-") as scratch:
        audio, rate = job.recipe.render(Path(scratch))
    mono = trim_silence(to_mono_24k(audio, rate))
    normalised = normalise(mono, use_loudness)
    write_atomically(out / job.path, flac_bytes(normalised.audio))
    return {
        "id": job.id,
        "seconds": round(len(mono) / SAMPLE_RATE, 3),
        "source_rate": rate,
        "normalisation": normalised.method,
        "gain_db": normalised.gain_db,
        "render_seconds": round(time.perf_counter() - started, 3),
    }


# ---------------------------------------------------------------- manifest and split


def hash_fraction(seed: int, item_id: str) -> float:
    """A uniform number in [0, 1) fixed by the seed and the id alone."""
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def validation_ids(jobs: Sequence[Job], seed: int, fraction: float) -> set[str]:
    """The items whose seeded hash falls below ``fraction``, so that an item keeps its
    split when the corpus grows; a kind that gets none gives its lowest-hash item."""
    if not 0 <= fraction < 1:
        raise CorpusError(f"--valid-fraction must be in [0, 1), got {fraction}")
    if fraction == 0:
        return set()
    chosen = set()
    for kind in sorted({job.kind for job in jobs}):
        ranked = sorted((hash_fraction(seed, job.id), job.id) for job in jobs if job.kind == kind)
        chosen.update(item_id for value, item_id in ranked if value < fraction)
        chosen.add(ranked[0][1])
    return chosen


def manifest_row(job: Job, rendered: dict[str, Any]) -> dict[str, Any]:
    """A manifest line: the fields ``bench.data`` reads, then the provenance of the item."""
    return {
        "path": job.path,
        "id": job.id,
        "transcript": job.transcript,
        "speaker": job.speaker,
        "tags": list(job.tags),
        "source": job.source,
        "licence": job.licence,
        "seconds": rendered["seconds"],
        "normalisation": rendered["normalisation"],
        "details": job.recipe.describe(),
    }


def write_manifest(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    write_atomically(path, lines.encode("utf-8"))


def read_render_log(path: Path) -> dict[str, dict[str, Any]]:
    """The rendered items by id; a line cut short by a kill is ignored (redone)."""
    if not path.exists():
        return {}
    entries = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        entries[entry["id"]] = entry
    return entries


# ---------------------------------------------------------------- provenance


def debian_version(package: str) -> str:
    completed = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True
    )
    return completed.stdout.strip() if completed.returncode == 0 else "unknown (not from dpkg)"


def python_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for distribution in ("numpy", "scipy", "soundfile", "soxr", "torch", "pyloudnorm"):
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[distribution] = "not installed"
    versions["libsndfile"] = soundfile.__libsndfile_version__
    return versions


def recordings_used(jobs: Sequence[Job]) -> set[str]:
    keys = set()
    for job in jobs:
        if isinstance(job.recipe, RealSoundRecipe):
            keys.add(job.recipe.key)
        elif isinstance(job.recipe, SceneRecipe):
            keys.update(key for key, _, _ in job.recipe.events)
    return keys


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return lines


def provenance(
    jobs: Sequence[Job],
    rendered: dict[str, dict[str, Any]],
    valid: set[str],
    settings: dict[str, Any],
    sentences: dict[str, list[str]],
) -> str:
    """PROVENANCE.md: settings, package versions, and every source with its licence."""
    seconds_by_kind = Counter()
    count_by_kind = Counter()
    for job in jobs:
        seconds_by_kind[job.kind] += rendered[job.id]["seconds"]
        count_by_kind[job.kind] += 1
    speech = [job for job in jobs if isinstance(job.recipe, SpeechRecipe)]
    lines = [
        "# Provenance of the training corpus",
        "",
        "Built by `scripts/build_training_corpus.py` of codec-bench. Mono 16-bit FLAC at "
        f"{SAMPLE_RATE} Hz. `{MANIFEST_NAME}` lists the training items and "
        f"`{VALID_MANIFEST_NAME}` the validation items (disjoint); each line carries the "
        "item's source, licence, duration and how it was made.",
        "",
        "**Held out.** Nothing here comes from the benchmark's test data: the LibriVox and "
        "cards recordings of `bench/data/embedded` and `../shared/data` are never read (the "
        "script refuses any input path inside those folders), and the text sources below "
        "contain none of their transcripts (those are from Austen's *Sense and "
        "Sensibility* and spoken card names).",
        "",
        "## Settings",
        "",
        *markdown_table(("setting", "value"), settings.items()),
        "",
        "## Contents",
        "",
        *markdown_table(
            ("kind", "items", "hours", "validation items"),
            (
                (
                    kind,
                    count_by_kind[kind],
                    f"{seconds_by_kind[kind] / 3600:.3f}",
                    sum(1 for job in jobs if job.kind == kind and job.id in valid),
                )
                for kind in KIND_SHARES
            ),
        ),
        "",
        "## Software",
        "",
        *markdown_table(
            ("Debian package", "version"), ((p, debian_version(p)) for p in APT_PACKAGES)
        ),
        "",
        *markdown_table(("Python package", "version"), python_versions().items()),
        "",
        f"Resampling: {RESAMPLER}. Normalisation: "
        + (
            f"pyloudnorm (ITU-R BS.1770-4) to {TARGET_LUFS:g} LUFS, peak-normalised to "
            "-1 dBFS where a sound is shorter than the 0.4 s gating block"
            if settings["loudness normalisation"]
            else "peak-normalised to -1 dBFS (pyloudnorm is not installed: `pip install "
            "pyloudnorm` enables loudness normalisation)"
        )
        + "; never above -1 dBFS. The `normalisation` field of each manifest line says which.",
        "",
        "## Speech",
        "",
        "Text-to-speech of sentences from the texts below, cleaned to letters and plain "
        "punctuation (no digits or symbols, which engines read differently), 4 to 30 words. "
        "The transcript is exactly the text given to the engine. Speaking rate varies "
        "from 0.8 to 1.25 times each voice's default and pitch from 0.8 to 1.25 times where "
        "the voice takes a pitch setting (not the flite clustergen voices awb, rms, slt nor "
        "the HTS voice, whose engines ignore it).",
        "",
        *markdown_table(
            ("text", "package", "licence", "sentences available", "utterances"),
            (
                (
                    source.title,
                    source.package,
                    source.licence,
                    len(sentences[source.name]),
                    sum(1 for job in speech if job.recipe.text_source == source.name),
                )
                for source in TEXT_SOURCES
            ),
        ),
        "",
        *markdown_table(
            ("engine", "licence", "voices used", "utterances"),
            (
                (
                    engine,
                    ENGINE_LICENCES[engine],
                    len({job.speaker for job in speech if job.recipe.voice.engine == engine}),
                    sum(1 for job in speech if job.recipe.voice.engine == engine),
                )
                for engine in ENGINE_SHARES
            ),
        ),
        "",
        "Utterances per voice: "
        + ", ".join(f"{v} {n}" for v, n in sorted(Counter(j.speaker for j in speech).items()))
        + ".",
        "",
        "## Music",
        "",
        f"{MUSIC_LICENCE}. Each piece has a random tempo (66-168 bpm), metre (4/4 or 3/4), "
        "key, mode (major, minor, dorian, mixolydian), chord progression and style (band, "
        "solo, chamber, arpeggio) with General MIDI instruments; the manifest's `details` "
        "name them. Instruments used: "
        + ", ".join(
            f"{name} {count}"
            for name, count in sorted(
                Counter(
                    part.instrument.split(" (")[0]
                    for job in jobs
                    if isinstance(job.recipe, MusicRecipe)
                    for part in job.recipe.song.parts
                ).items()
            )
        )
        + ".",
        "",
        "## General audio",
        "",
        "Real recordings, each once on its own (when at least "
        f"{MIN_RECORDING_SECONDS} s long) and again in scenes, where 2-6 of them are mixed "
        "over a synthesised bed; synthesised textures (rain, wind, surf, stream, fire, "
        f"engine) are {GENERATED_LICENCE}. OpenSFX (Debian openttd-opensfx) is licensed as "
        "a collection under CC-BY-SA-3.0, its sounds individually as listed; the "
        "freedesktop sound theme per file as in its Debian copyright file. Attribution of "
        "every recording used:",
        "",
        *markdown_table(
            ("key", "package", "credit", "licence"),
            (
                (sound.key, sound.package, sound.credit, sound.licence)
                for sound in sound_library().values()
                if sound.key in recordings_used(jobs)
            ),
        ),
        "",
        "## Text licences",
        "",
        "WordNet 3.0 licence: Permission to use, copy, modify and distribute this software "
        "and database and its documentation for any purpose and without fee or royalty is "
        "hereby granted, provided that you agree to comply with the following copyright "
        "notice and statements, including the disclaimer, and that the same appear on ALL "
        "copies of the software, database and documentation, including modifications that "
        "you make for internal use or for distribution. WordNet 3.0 Copyright 2006 by "
        "Princeton University. All rights reserved. THIS SOFTWARE AND DATABASE IS PROVIDED "
        '"AS IS" AND PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES, EXPRESS '
        "OR IMPLIED. The Jargon File: in the public domain, to be freely used, shared, and "
        'modified (cite it as "Jargon File 4.4.7"). The Devil\'s Dictionary: a public '
        "domain text, copyright expired.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def load_settings(out: Path, settings: dict[str, Any]) -> None:
    """Record the settings on the first run; refuse to resume with ones that change items."""
    build_file = out / BUILD_NAME
    fixed = {key: settings[key] for key in ("seed", "sample rate (Hz)", "corpus version")}
    if build_file.exists():
        previous = json.loads(build_file.read_text(encoding="utf-8"))
        if previous != fixed:
            raise CorpusError(
                f"{out} was built with {previous}; this run has {fixed}. Use the same seed "
                "or another --out"
            )
    else:
        write_atomically(build_file, json.dumps(fixed, indent=2).encode("utf-8"))


class Progress:
    """Prints about 50 progress lines over a build: items, hours of audio, time left."""

    def __init__(self, total: int, seconds_already: float) -> None:
        self.total = total
        self.done = 0
        self.seconds = seconds_already
        self.started = time.monotonic()
        self.every = max(1, total // 50)

    def advance(self, kind: str, seconds: float) -> None:
        self.done += 1
        self.seconds += seconds
        if self.done % self.every and self.done != self.total:
            return
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done)
        print(
            f"[{self.done:>5}/{self.total}] {kind:<6} {self.seconds / 3600:6.3f} h of audio, "
            f"{elapsed:5.0f} s elapsed, about {left:4.0f} s left",
            flush=True,
        )


def build(out: Path, hours: float, seed: int, jobs_count: int, valid_fraction: float) -> int:
    """Build (or resume) the corpus; returns the number of items that failed."""
    started = time.monotonic()
    use_loudness = pyloudnorm is not None
    if not use_loudness:
        print("pyloudnorm is not installed: peak-normalising instead (pip install pyloudnorm)")
    voices = all_voices()
    check_voices(voices)
    settings = {
        "seed": seed,
        "hours requested": hours,
        "sample rate (Hz)": SAMPLE_RATE,
        "corpus version": CORPUS_VERSION,
        "kind shares": KIND_SHARES,
        "engine shares": ENGINE_SHARES,
        "validation fraction": valid_fraction,
        "loudness normalisation": use_loudness,
        "git commit": git_state(REPO_ROOT).get("commit"),
        # The script may be newer than the commit (uncommitted): its hash pins it exactly.
        "script sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
    }
    out.mkdir(parents=True, exist_ok=True)
    load_settings(out, settings)

    sentences = {source.name: source.load() for source in TEXT_SOURCES}
    library = sound_library()  # before the pool starts, so that forked workers share it
    target = hours * 3600
    jobs = [
        *plan_speech(seed, target * KIND_SHARES["speech"], voices, TEXT_SOURCES, sentences),
        *plan_music(seed, target * KIND_SHARES["music"]),
        *plan_audio(seed, target * KIND_SHARES["audio"], library),
    ]
    log_path = out / RENDER_LOG_NAME
    logged = read_render_log(log_path)
    # A file without its log line was cut short by a kill (or not written): redo it.
    rendered = {
        job.id: logged[job.id] for job in jobs if job.id in logged and (out / job.path).exists()
    }
    todo = [job for job in jobs if job.id not in rendered]
    planned = ", ".join(f"{count} {kind}" for kind, count in Counter(j.kind for j in jobs).items())
    print(
        f"{len(jobs)} items planned ({planned}), {len(jobs) - len(todo)} already written, "
        f"{len(todo)} to make with {jobs_count} process(es) into {out}",
        flush=True,
    )
    progress = Progress(len(todo), sum(entry["seconds"] for entry in rendered.values()))
    failures = []
    with log_path.open("a", encoding="utf-8") as log:

        def record(job: Job, entry: dict[str, Any] | None, error: BaseException | None) -> None:
            if entry is None:
                failures.append(f"{job.id}: {error}")
                print(f"failed: {job.id}: {error}", file=sys.stderr, flush=True)
            else:
                rendered[job.id] = entry
                log.write(json.dumps(entry) + "\n")
                log.flush()
            progress.advance(job.kind, entry["seconds"] if entry else 0.0)

        with process_pool(jobs_count) as pool:
            futures = {pool.submit(render_job, job, out, use_loudness): job for job in todo}
            for future in as_completed(futures):
                # A failed item is reported, left out of the manifests and retried next run.
                error = future.exception()
                record(futures[future], None if error else future.result(), error)

    made = [job for job in jobs if job.id in rendered]
    valid = validation_ids(made, seed, valid_fraction)
    write_manifest(
        out / MANIFEST_NAME, (manifest_row(j, rendered[j.id]) for j in made if j.id not in valid)
    )
    write_manifest(
        out / VALID_MANIFEST_NAME, (manifest_row(j, rendered[j.id]) for j in made if j.id in valid)
    )
    settings["hours made"] = round(sum(rendered[job.id]["seconds"] for job in made) / 3600, 3)
    write_atomically(
        out / PROVENANCE_NAME,
        provenance(made, rendered, valid, settings, sentences).encode("utf-8"),
    )
    size = sum(path.stat().st_size for path in out.rglob("*.flac"))
    print(
        f"wrote {len(made)} items ({len(valid)} for validation), {settings['hours made']} h, "
        f"{size / 1e6:.0f} MB of FLAC in the folder, in {time.monotonic() - started:.0f} s; "
        f"manifests {out / MANIFEST_NAME} and {out / VALID_MANIFEST_NAME}"
    )
    if failures:
        print(f"{len(failures)} item(s) failed; rerun to retry them:", file=sys.stderr)
        print("\n".join(failures[:20]), file=sys.stderr)
    return len(failures)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder, outside the checkout"
    )
    parser.add_argument(
        "--hours", type=float, default=DEFAULT_HOURS, help="total audio (default 2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: the cores)"
    )
    parser.add_argument(
        "--valid-fraction",
        type=float,
        default=DEFAULT_VALID_FRACTION,
        help="share of each kind kept for validation (default 0.02)",
    )
    arguments = parser.parse_args(argv)
    try:
        if arguments.hours <= 0 or arguments.jobs < 1 or arguments.seed < 0:
            raise CorpusError(
                f"expected --hours > 0, --jobs >= 1 and --seed >= 0, got {arguments.hours}, "
                f"{arguments.jobs} and {arguments.seed}"
            )
        if not 0 <= arguments.valid_fraction < 1:
            raise CorpusError(
                f"expected --valid-fraction in [0, 1), got {arguments.valid_fraction}"
            )
        out = check_output_folder(arguments.out)
        check_requirements()
        failed = build(
            out, arguments.hours, arguments.seed, arguments.jobs, arguments.valid_fraction
        )
    except CorpusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
