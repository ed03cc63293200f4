"""Tests of scripts/build_training_corpus.py: its pure functions without the Debian packages,
then one rendering per engine where they are installed."""

from __future__ import annotations

import importlib.util
import io
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from bench.data import load_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "build_training_corpus.py"


def load_script():
    spec = importlib.util.spec_from_file_location("build_training_corpus", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


corpus = load_script()
LOUDNESS = corpus.pyloudnorm is not None  # the venv may lack the optional pyloudnorm


def fake_sources(count: int = 50) -> tuple[list, dict[str, list[str]]]:
    sources = [
        corpus.TextSource("a", "Text A", "pkg-a", "public domain", 0.7, list),
        corpus.TextSource("b", "Text B", "pkg-b", "MIT", 0.3, list),
    ]
    sentences = {
        "a": [f"Sentence {word} of the first text." for word in range(count)],
        "b": [f"Another line {word} from the second." for word in range(count)],
    }
    return sources, sentences


FAKE_VOICES = (
    corpus.Voice("flite", "slt", "flite", False),
    corpus.Voice("festival", "kal_diphone", "festvox-kallpc16k", True),
    corpus.Voice("espeak-ng", "en-gb+f3", "espeak-ng", True),
)


# ---------------------------------------------------------------- text


def test_split_sentences_keeps_abbreviations_and_initials_inside_a_sentence():
    text = "Dr. Johnson came, e.g. on foot.  It rained!\nDid it? Ask J. Smith (he knows)."
    assert corpus.split_sentences(text) == [
        "Dr. Johnson came, e.g. on foot.",
        "It rained!",
        "Did it?",
        "Ask J. Smith (he knows).",
    ]


def test_split_sentences_splits_after_a_closing_quote():
    assert corpus.split_sentences('He said "stop." Then he left.') == [
        'He said "stop."',
        "Then he left.",
    ]


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("the {hacker} wrote it [sic] quickly", "The hacker wrote it quickly."),
        ("“Smart” quotes and it’s fine.", '"Smart" quotes and it\'s fine.'),
        ('it was _really_ called a "rum."', 'It was really called a "rum."'),
        ("A sentence with 42 digits in it.", None),
        ("Mail me at someone@example.org now.", None),
        ("Too short.", None),
        (" ".join(["word"] * 31), None),
        ('An "unbalanced quote here.', None),
    ],
)
def test_clean_sentence(raw, cleaned):
    assert corpus.clean_sentence(raw) == cleaned


def test_speakable_sentences_drops_duplicates_and_unspeakable_ones():
    passages = [
        "One two three four. One two three four.",
        "Version 4.4.7 is here. Five six seven eight!",
    ]
    assert corpus.speakable_sentences(passages) == ["One two three four.", "Five six seven eight!"]


def test_wordnet_examples_come_from_the_gloss_only():
    data = (
        "  1 This software and database is being provided to you\n"
        '00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which exists; "he saw an '
        'entity"; "entities abound here"\n'
    )
    assert corpus.wordnet_examples(data) == ["he saw an entity", "entities abound here"]


def test_devil_definitions_strip_the_headword_and_skip_verse():
    text = (
        "ABRIDGE, v.t.  To shorten the story\nof a king.\n\n"
        "    When in the course of human events\n    it becomes necessary\n\n"
        "ABSENTEE, n.  A person with an income.\n"
    )
    assert corpus.devil_definitions(text) == [
        "To shorten the story\nof a king.",
        "A person with an income.\n",
    ]


def test_jargon_paragraphs_keep_indented_bodies_without_sense_marks():
    text = (
        "crash\n /krash/\n\n"
        "    1. vi. To fail suddenly. Has the system just\n    crashed?\n\n"
        "    [Purdue]\n\n"
        "headword\n"
    )
    paragraphs = corpus.jargon_paragraphs(text)
    assert paragraphs[0].startswith("To fail suddenly.")
    assert corpus.speakable_sentences(paragraphs) == ["Has the system just crashed?"]


# ---------------------------------------------------------------- guards and prerequisites


def test_output_folder_inside_the_checkout_or_the_held_out_data_is_refused(tmp_path):
    for inside in (REPO_ROOT, REPO_ROOT / "corpus", REPO_ROOT.parent / "shared" / "corpus"):
        with pytest.raises(corpus.CorpusError, match="outside the git checkout"):
            corpus.check_output_folder(inside)
    assert corpus.check_output_folder(tmp_path / "corpus") == (tmp_path / "corpus").resolve()


def test_the_command_line_refuses_bad_settings_before_building(tmp_path, capsys):
    assert corpus.main(["--out", str(REPO_ROOT / "corpus")]) == 2
    assert "outside the git checkout" in capsys.readouterr().err
    assert corpus.main(["--out", str(tmp_path), "--hours", "0"]) == 2
    assert corpus.main(["--out", str(tmp_path), "--valid-fraction", "1"]) == 2
    assert not any(tmp_path.iterdir())


def test_held_out_test_data_is_never_read():
    for held_out in (
        REPO_ROOT / "bench" / "data" / "embedded" / "manifest.jsonl",
        REPO_ROOT.parent / "shared" / "data" / "librivox" / "transcription",
    ):
        with pytest.raises(corpus.CorpusError, match="held-out"):
            corpus.read_input(held_out)


def test_missing_prerequisites_name_the_apt_get_line(tmp_path):
    missing = [
        corpus.Requirement("fluidsynth", str(tmp_path / "no-such-file")),
        corpus.Requirement("flite", "no-such-program-here"),
        corpus.Requirement("flite", str(tmp_path / "another")),
    ]
    assert corpus.install_command(missing) == "apt-get install flite fluidsynth"
    with pytest.raises(corpus.CorpusError, match="apt-get install flite fluidsynth"):
        corpus.check_requirements(missing)
    assert corpus.install_command(corpus.REQUIREMENTS).split()[2:] == sorted(corpus.APT_PACKAGES)


# ---------------------------------------------------------------- sources of sound


def wav_bytes(seconds: float, rate: int = 44_100) -> bytes:
    buffer = io.BytesIO()
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)
    soundfile.write(buffer, tone, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_opensfx_catalogue_entries_are_parsed():
    entries = [
        (b'"Cow". By someone. License: Creative Commons Zero 1.0.\0', wav_bytes(0.1)),
        (b"x\0", b""),
    ]
    table_size = 8 * len(entries)
    table, body = b"", b""
    for name, wav in entries:
        chunk = bytes([len(name)]) + name + wav
        table += struct.pack("<II", (table_size + len(body)) | 0x80000000, len(chunk))
        body += chunk
    parsed = corpus.parse_opensfx_catalogue(table + body)
    assert [name for name, _ in parsed] == [
        '"Cow". By someone. License: Creative Commons Zero 1.0.',
        "x",
    ]
    assert soundfile.info(io.BytesIO(parsed[0][1])).frames == 4410
    assert parsed[1][1] == b""
    assert corpus.OPENSFX_LICENCE.search(parsed[0][0])["licence"] == "Creative Commons Zero 1.0"


def test_dep5_copyright_gives_each_named_file_its_licence():
    text = (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: stereo/bell.oga stereo/complete.oga\nCopyright: Dr. Richard Boulanger et al\n"
        "License: CC-BY-3.0\n\nFiles: *\nCopyright: Someone\nLicense: GPL-2+\n"
    )
    assert corpus.parse_dep5_licences(text) == {
        "bell.oga": ("Dr. Richard Boulanger et al", "CC-BY-3.0"),
        "complete.oga": ("Dr. Richard Boulanger et al", "CC-BY-3.0"),
    }


@pytest.mark.parametrize("texture", sorted(corpus.TEXTURES))
def test_textures_are_finite_and_audible(texture):
    audio = corpus.TEXTURES[texture](np.random.default_rng(0), corpus.SAMPLE_RATE)
    assert audio.shape == (corpus.SAMPLE_RATE,)
    assert np.all(np.isfinite(audio)) and np.sqrt(np.mean(audio**2)) > 1e-4


# ---------------------------------------------------------------- music


def test_variable_length_quantities_follow_the_midi_specification():
    assert corpus.variable_length(0) == b"\x00"
    assert corpus.variable_length(127) == b"\x7f"
    assert corpus.variable_length(128) == b"\x81\x00"
    assert corpus.variable_length(0x0FFFFFFF) == b"\xff\xff\xff\x7f"


def test_composed_songs_are_deterministic_and_valid_midi():
    first = corpus.compose_song(np.random.default_rng(3), 20)
    assert first == corpus.compose_song(np.random.default_rng(3), 20)
    assert 10 <= first.seconds <= 30
    notes = [note for part in first.parts for note in part.notes]
    assert all(0 <= note.pitch <= 127 and note.length > 0 for note in notes)
    midi = corpus.song_to_midi(first)
    format_, tracks, division = struct.unpack(">HHH", midi[8:14])
    assert midi[:4] == b"MThd" and (format_, tracks, division) == (1, len(first.parts) + 1, 480)
    assert midi.count(b"MTrk") == tracks and midi.endswith(b"\xff\x2f\x00")


# ---------------------------------------------------------------- plans, splits, manifests


def test_a_longer_speech_plan_extends_a_shorter_one():
    sources, sentences = fake_sources(200)
    short = corpus.plan_speech(7, 60, FAKE_VOICES, sources, sentences)
    long = corpus.plan_speech(7, 300, FAKE_VOICES, sources, sentences)
    assert long[: len(short)] == short
    assert sum(job.estimated_seconds for job in long) >= 300
    assert len({job.id for job in long}) == len(long)
    assert len({job.transcript for job in long}) == len(
        long
    )  # no sentence twice while unused remain
    assert corpus.plan_speech(8, 60, FAKE_VOICES, sources, sentences) != short


def test_validation_split_is_stratified_and_stable_as_the_corpus_grows():
    sources, sentences = fake_sources(400)
    speech = corpus.plan_speech(1, 1500, FAKE_VOICES, sources, sentences)
    music = corpus.plan_music(1, 60)
    valid = corpus.validation_ids(speech + music, 1, 0.05)
    assert any(job.id in valid for job in music)
    assert 0 < sum(job.id in valid for job in speech) < len(speech) * 0.15
    more = corpus.plan_speech(1, 3000, FAKE_VOICES, sources, sentences)
    assert valid <= corpus.validation_ids(more + music, 1, 0.05)
    with pytest.raises(corpus.CorpusError, match="valid-fraction"):
        corpus.validation_ids(speech, 1, 1.0)


def test_written_manifest_loads_as_a_bench_dataset(tmp_path):
    sources, sentences = fake_sources()
    jobs = corpus.plan_speech(0, 20, FAKE_VOICES, sources, sentences) + corpus.plan_music(0, 10)
    rendered = {}
    for job in jobs:
        normalised = corpus.normalise(0.1 * np.sin(np.arange(corpus.SAMPLE_RATE) / 5), LOUDNESS)
        (tmp_path / job.kind).mkdir(exist_ok=True)
        (tmp_path / job.path).write_bytes(corpus.flac_bytes(normalised.audio))
        rendered[job.id] = {"seconds": 1.0, "normalisation": normalised.method}
    corpus.write_manifest(
        tmp_path / "MANIFEST.jsonl", (corpus.manifest_row(j, rendered[j.id]) for j in jobs)
    )
    dataset = load_dataset(f"manifest:{tmp_path / 'MANIFEST.jsonl'}")
    assert [item.id for item in dataset] == [job.id for job in jobs]
    speech_item = dataset.items[0]
    assert speech_item.transcript == jobs[0].transcript and speech_item.speaker == jobs[0].speaker
    assert speech_item.tags == {"speech", "synthetic"} and speech_item.path.exists()
    row = json.loads((tmp_path / "MANIFEST.jsonl").read_text().splitlines()[-1])
    assert row["tags"] == ["music", "synthetic"] and row["licence"].startswith("MIT")


def test_normalisation_reaches_the_target_without_exceeding_the_peak_limit():
    rng = np.random.default_rng(0)
    quiet_speechlike = 0.01 * rng.standard_normal(corpus.SAMPLE_RATE)
    normalised = corpus.normalise(quiet_speechlike, use_loudness=LOUDNESS)
    assert np.abs(normalised.audio).max() <= corpus.PEAK_LIMIT + 1e-12
    if corpus.pyloudnorm is not None:
        meter = corpus.pyloudnorm.Meter(corpus.SAMPLE_RATE)
        assert meter.integrated_loudness(normalised.audio) == pytest.approx(
            corpus.TARGET_LUFS, abs=0.01
        )
    click = np.zeros(2000)
    click[100] = 0.2
    assert corpus.normalise(click, use_loudness=True).method == "peak"
    with pytest.raises(corpus.CorpusError, match="silence"):
        corpus.normalise(np.zeros(100), use_loudness=True)


def test_trim_silence_keeps_a_margin_around_the_audible_part():
    rate = corpus.SAMPLE_RATE
    audio = 1e-5 * np.random.default_rng(0).standard_normal(3 * rate)  # -75 dB below the tone
    audio[rate : 2 * rate] += 0.5 * np.sin(np.arange(rate) / 3)
    margin = int(corpus.SILENCE_MARGIN_SECONDS * rate)
    assert len(corpus.trim_silence(audio)) == rate + 2 * margin
    assert len(corpus.trim_silence(np.zeros(rate))) == rate  # silence is normalise's to refuse


# ---------------------------------------------------------------- with the Debian packages


ENGINES_PRESENT = all(
    requirement.present()
    for requirement in corpus.REQUIREMENTS
    if requirement.package in ("flite", "espeak-ng", "fluidsynth", "fluid-soundfont-gm")
)


@pytest.mark.skipif(
    not ENGINES_PRESENT,
    reason="needs: apt-get install flite espeak-ng fluidsynth fluid-soundfont-gm",
)
def test_flite_espeak_and_fluidsynth_render_24_khz_files(tmp_path):
    text = "The old barn leaned against the hill."
    jobs = [
        corpus.Job(
            "speech_flite",
            "speech",
            corpus.SpeechRecipe(FAKE_VOICES[0], text, "a", 1.1, None),
            ("speech",),
            "s",
            "l",
            3.0,
        ),
        corpus.Job(
            "speech_espeak",
            "speech",
            corpus.SpeechRecipe(FAKE_VOICES[2], text, "a", 0.9, 1.2),
            ("speech",),
            "s",
            "l",
            3.0,
        ),
        corpus.Job(
            "music_one",
            "music",
            corpus.MusicRecipe(corpus.compose_song(np.random.default_rng(0), 4)),
            ("music",),
            "s",
            "l",
            5.0,
        ),
    ]
    for job in jobs:
        entry = corpus.render_job(job, tmp_path, use_loudness=LOUDNESS)
        audio, rate = soundfile.read(tmp_path / job.path)
        assert rate == corpus.SAMPLE_RATE and audio.ndim == 1
        assert (
            entry["seconds"] == pytest.approx(len(audio) / rate, abs=1e-3)
            and entry["seconds"] > 1.5
        )
        assert 0.01 < np.sqrt(np.mean(audio**2)) and np.abs(audio).max() <= corpus.PEAK_LIMIT + 1e-4
