"""Tests of bench.data: the embedded corpus, the folder, LibriSpeech and manifest specs,
filtering, and the error messages. Audio fixtures are tiny sines written with soundfile."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from bench.audio import AudioError, load_audio
from bench.data import Dataset, DatasetError, Item, load_dataset
from bench.data.embedded import EMBEDDED_DIR, MANIFEST_PATH, embedded_entries
from bench.registry import DATASETS

SAMPLE_RATE = 8000
FORMAT_OF_EXTENSION = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}


def write_sine(path: Path, seconds: float = 0.1) -> Path:
    """A short 440 Hz sine in the format the extension names (any letter case)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    time = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = 0.5 * np.sin(2 * np.pi * 440 * time)
    soundfile.write(path, audio, SAMPLE_RATE, format=FORMAT_OF_EXTENSION[path.suffix.lower()])
    return path


def ids(dataset: Dataset) -> list[str]:
    return [item.id for item in dataset]


# ---------------------------------------------------------------- embedded corpus


def test_embedded_items_carry_tags_and_speech_carries_transcript_and_speaker():
    dataset = load_dataset("embedded")
    assert len(dataset) == len(embedded_entries())
    for item in dataset:
        assert item.tags, item.id
        if "speech" in item.tags:
            assert item.transcript and item.speaker, item.id


def test_embedded_covers_speakers_and_content_classes():
    items = load_dataset("embedded").items
    speakers = {item.speaker for item in items if item.speaker}
    assert len(speakers) >= 5, speakers
    all_tags = set().union(*(item.tags for item in items))
    assert {"speech", "music", "audio", "noisy", "synthetic"} <= all_tags
    assert sum("music" in item.tags for item in items) >= 2
    noisy = [item for item in items if "noisy" in item.tags]
    assert len(noisy) >= 4 and all("speech" in item.tags for item in noisy)
    real_speech = load_dataset("embedded", tags=["speech"], exclude_tags=["synthetic", "noisy"])
    assert len({item.speaker for item in real_speech}) == 2 and len(real_speech) == 10


def test_embedded_files_are_readable_and_match_the_manifest():
    entries = embedded_entries()
    for entry in entries:
        info = soundfile.info(entry.item.path)
        assert info.samplerate == entry.sample_rate, entry.item.id
        assert info.frames / info.samplerate == pytest.approx(entry.duration_seconds, abs=1e-5)
        assert info.channels == 1 and info.subtype == "PCM_16"
        assert entry.source and entry.licence
    listed = {entry.item.path.name for entry in entries}
    on_disk = {path.name for path in EMBEDDED_DIR.glob("*.flac")}
    assert listed == on_disk, "every shipped audio file is listed, and every listed file ships"
    total_bytes = sum(path.stat().st_size for path in EMBEDDED_DIR.rglob("*") if path.is_file())
    assert total_bytes < 5_000_000


def test_embedded_provenance_names_every_item():
    provenance = (EMBEDDED_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    for entry in embedded_entries():
        assert f"| {entry.item.id} |" in provenance


def test_embedded_noisy_mixes_have_the_recorded_snr():
    """The noise is what remains after removing the scaled clean speech; its level gives the SNR."""
    rows = [json.loads(line) for line in MANIFEST_PATH.read_text(encoding="utf-8").splitlines()]
    files = {row["id"]: EMBEDDED_DIR / row["file"] for row in rows}
    mixes = [row for row in rows if "mix" in row]
    assert len(mixes) >= 4
    for row in mixes:
        mixture, _ = soundfile.read(files[row["id"]])
        clean, _ = soundfile.read(files[row["mix"]["clean_id"]])
        speech = row["mix"]["output_gain"] * clean
        noise = mixture - speech
        snr_db = 10 * np.log10(np.sum(speech**2) / np.sum(noise**2))
        assert snr_db == pytest.approx(row["mix"]["snr_db"], abs=0.1), row["id"]
        assert np.max(np.abs(mixture)) < 0.9


# ---------------------------------------------------------------- folder


def test_folder_lists_audio_recursively_with_sidecar_transcripts(tmp_path):
    write_sine(tmp_path / "b.wav")
    (tmp_path / "b.txt").write_text("  the sidecar transcript\n", encoding="utf-8")
    write_sine(tmp_path / "a" / "deep" / "c.FLAC")
    write_sine(tmp_path / "a" / "d.ogg")
    write_sine(tmp_path / "a" / "e.Mp3")
    (tmp_path / "notes.txt").write_text("a transcript without audio is ignored", encoding="utf-8")
    (tmp_path / "README.md").write_text("not audio", encoding="utf-8")
    write_sine(tmp_path / ".hidden" / "f.wav")
    write_sine(tmp_path / "._g.wav")

    dataset = load_dataset(f"folder:{tmp_path}")

    assert ids(dataset) == ["a/d", "a/deep/c", "a/e", "b"]
    by_id = {item.id: item for item in dataset}
    assert by_id["b"] == Item(id="b", path=tmp_path / "b.wav", transcript="the sidecar transcript")
    assert by_id["a/deep/c"].path == tmp_path / "a" / "deep" / "c.FLAC"
    assert all(item.transcript is None for item in dataset if item.id != "b")
    assert all(item.speaker is None and item.tags == frozenset() for item in dataset)


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(DatasetError, match="expected a folder, got the file"):
        load_dataset(f"folder:{write_sine(tmp_path / 'x.wav')}")
    empty = tmp_path / "only_text"
    empty.mkdir()
    (empty / "a.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"no audio files under .*\.flac, \.mp3, \.ogg, \.wav"):
        load_dataset(f"folder:{empty}")


def _folder_with_a_fifo_a_device_and_a_link_loop(root: Path) -> Path:
    write_sine(root / "a.wav", seconds=1.0)
    os.mkfifo(root / "fifo.wav")
    (root / "zero.wav").symlink_to("/dev/zero")
    (root / "loop1.wav").symlink_to(root / "loop2.wav")
    (root / "loop2.wav").symlink_to(root / "loop1.wav")
    return root


def test_folder_skips_what_is_not_a_regular_file_with_a_note(tmp_path):
    folder = _folder_with_a_fifo_a_device_and_a_link_loop(tmp_path)
    dataset = load_dataset(f"folder:{folder}")
    assert ids(dataset) == ["a"]
    assert dataset.skipped == (
        f"expected a regular file, got a FIFO: {folder / 'fifo.wav'}",
        f"symbolic link loop: {folder / 'loop1.wav'}",
        f"symbolic link loop: {folder / 'loop2.wav'}",
        f"expected a regular file, got a device or socket: {folder / 'zero.wav'}",
    )
    (folder / "a.wav").unlink()
    with pytest.raises(DatasetError, match="no audio files .*; skipped: .*got a FIFO"):
        load_dataset(f"folder:{folder}")


def test_audio_loading_names_a_link_loop_and_refuses_a_fifo(tmp_path):
    folder = _folder_with_a_fifo_a_device_and_a_link_loop(tmp_path)
    with pytest.raises(AudioError, match="symbolic link loop"):
        load_audio(folder / "loop1.wav")
    # The FIFO would block the read: run it apart, so a hang fails instead of stopping here.
    code = (
        "import sys; from bench.audio import AudioError, load_audio\n"
        "try: load_audio(sys.argv[1])\n"
        "except AudioError as error: print(error)\n"
    )
    for name in ("fifo.wav", "zero.wav"):
        completed = subprocess.run(
            [sys.executable, "-c", code, str(folder / name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "expected a regular file" in completed.stdout, completed.stderr


def test_a_run_over_a_folder_or_manifest_with_a_fifo_finishes(tmp_path):
    """A FIFO or a link to /dev/zero once hung `bench run` (hashing never returned)."""
    folder = _folder_with_a_fifo_a_device_and_a_link_loop(tmp_path / "data")
    manifest = tmp_path / "items.jsonl"
    manifest.write_text(
        "".join(json.dumps({"path": str(folder / name)}) + "\n" for name in ("a.wav", "fifo.wav"))
    )
    common = ["--codec", "opus", "--bitrates", "6", "--metrics", "si_sdr", "--workers", "1"]
    common += ["--no-cache", "--no-report", "--quiet"]
    outputs = []
    for data, run_dir in ((f"folder:{folder}", "folder_run"), (f"manifest:{manifest}", "m_run")):
        completed = subprocess.run(
            [sys.executable, "-m", "bench.cli", "run", "--data", data, *common]
            + ["--run-dir", str(tmp_path / run_dir)],
            capture_output=True,
            text=True,
            timeout=240,
        )
        outputs.append(completed)
    folder_run, manifest_run = outputs
    assert folder_run.returncode == 0, folder_run.stderr
    assert f"note: dataset: skipped a file: expected a regular file, got a FIFO: {folder}" in (
        folder_run.stdout
    )
    assert "symbolic link loop" in folder_run.stdout
    # A manifest's rows are items: the FIFO one is a NaN row with the reason.
    assert manifest_run.returncode == 3, manifest_run.stderr
    rows = [json.loads(line) for line in (tmp_path / "m_run" / "results.jsonl").open()]
    failures = {row["item"]: row["failure"] for row in rows}
    assert failures["data/a"] is None
    assert "expected a regular file, got a FIFO" in failures["data/fifo"]


def test_folder_rejects_two_files_with_one_id(tmp_path):
    write_sine(tmp_path / "a.wav")
    write_sine(tmp_path / "a.flac")
    with pytest.raises(DatasetError, match=r"duplicate item ids.*'a': .*a\.flac, .*a\.wav"):
        load_dataset(f"folder:{tmp_path}")


# ---------------------------------------------------------------- LibriSpeech


def make_librispeech(root: Path) -> None:
    """Two splits, two speakers; utterance 1089-134686-0001 is listed but has no FLAC."""
    chapters = {
        "test-clean/1089/134686": {
            "1089-134686-0000": "HE HOPED THERE WOULD BE STEW FOR DINNER",
            "1089-134686-0001": "STUFF IT INTO YOU HIS BELLY COUNSELLED HIM",
        },
        "dev-clean/121/121726": {"121-121726-0000": "ALSO A POPULAR CONTRIVANCE"},
    }
    for chapter, utterances in chapters.items():
        folder = root / chapter
        speaker, chapter_id = chapter.split("/")[1:]
        lines = [f"{utterance} {text}" for utterance, text in utterances.items()]
        folder.mkdir(parents=True)
        (folder / f"{speaker}-{chapter_id}.trans.txt").write_text("\n".join(lines) + "\n")
        for utterance in utterances:
            if utterance != "1089-134686-0001":
                write_sine(folder / f"{utterance}.flac")


def test_librispeech_reads_splits_and_keeps_utterances_without_audio(tmp_path):
    make_librispeech(tmp_path)

    dataset = load_dataset(f"librispeech:{tmp_path}")

    assert ids(dataset) == ["121-121726-0000", "1089-134686-0000", "1089-134686-0001"]
    assert [item.speaker for item in dataset] == ["121", "1089", "1089"]
    assert all(item.tags == frozenset({"speech"}) for item in dataset)
    missing = dataset.items[2]
    assert missing.transcript == "STUFF IT INTO YOU HIS BELLY COUNSELLED HIM"
    assert missing.path == tmp_path / "test-clean/1089/134686/1089-134686-0001.flac"
    assert not missing.path.exists()
    assert ids(load_dataset(f"librispeech:{tmp_path / 'test-clean'}"))[0] == "1089-134686-0000"


def test_librispeech_errors_name_the_expected_layout(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"librispeech:{tmp_path / 'missing'}")
    write_sine(tmp_path / "plain" / "a.flac")
    with pytest.raises(DatasetError, match=r"no \*\.trans\.txt .*use folder:PATH"):
        load_dataset(f"librispeech:{tmp_path / 'plain'}")
    chapter = tmp_path / "bad" / "7" / "8"
    chapter.mkdir(parents=True)
    (chapter / "7-8.trans.txt").write_text("7-8-0000 FINE\n9-9-0001 WRONG SPEAKER\n")
    with pytest.raises(DatasetError, match=r"7-8\.trans\.txt:2: expected '7-8-<utterance>"):
        load_dataset(f"librispeech:{tmp_path / 'bad'}")


# ---------------------------------------------------------------- manifests


def test_csv_manifest_resolves_paths_and_reads_fields(tmp_path):
    write_sine(tmp_path / "audio" / "a.wav")
    outside = write_sine(tmp_path.parent / f"{tmp_path.name}_outside" / "b.flac")
    (tmp_path / "list.csv").write_text(
        "path,id,transcript,speaker,tags,duration\n"
        "audio/a.wav,,hello there,spk1,speech; noisy,0.1\n"
        f"{outside},,,,,0.1\n"
        "audio/missing.wav,custom,,,music,\n",
        encoding="utf-8",
    )

    items = load_dataset(f"manifest:{tmp_path / 'list.csv'}").items

    assert items[0] == Item(
        id="audio/a",
        path=tmp_path / "audio" / "a.wav",
        transcript="hello there",
        speaker="spk1",
        tags=frozenset({"speech", "noisy"}),
    )
    assert items[1] == Item(id=outside.with_suffix("").as_posix(), path=outside)
    assert items[2].id == "custom" and not items[2].path.exists()
    assert items[2].tags == frozenset({"music"})


def test_jsonl_manifest_reads_list_tags(tmp_path):
    write_sine(tmp_path / "a.wav")
    rows = [
        {"path": "a.wav", "transcript": "hi", "speaker": 1089, "tags": ["speech", "noisy"]},
        {"path": "sub/b.flac", "id": "b", "tags": ["music", "synthetic"], "extra": {"ignored": 1}},
    ]
    manifest = tmp_path / "list.json-lines"
    manifest.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n", encoding="utf-8")

    items = load_dataset(f"manifest:{manifest}").items

    assert items[0] == Item(
        id="a",
        path=tmp_path / "a.wav",
        transcript="hi",
        speaker="1089",
        tags=frozenset({"speech", "noisy"}),
    )
    assert items[1] == Item(
        id="b", path=tmp_path / "sub" / "b.flac", tags=frozenset({"music", "synthetic"})
    )


@pytest.mark.parametrize(
    ("file_name", "content", "message"),
    [
        (
            "dup.csv",
            "path,id\na.wav,x\nb.wav,x\n",
            r"dup\.csv:3: duplicate id 'x', first used on line 2",
        ),
        ("dup.jsonl", '{"path": "a.wav"}\n{"path": "a.flac"}\n', r":2: duplicate id 'a'.* line 1"),
        (
            "nopath.csv",
            "file,id\na.wav,x\n",
            r":1: the header has no 'path' column.*\['file', 'id'\]",
        ),
        ("short.csv", "path,id,speaker\na.wav,x\n", r"short\.csv:2: expected 3 fields .*got 2"),
        ("long.csv", "path,id\na.wav,x,extra\n", r"long\.csv:2: expected 2 fields .*got 3"),
        ("empty_path.csv", "path,id\n,x\n", r":2: expected a non-empty 'path'"),
        (
            "broken.jsonl",
            '{"path": "a.wav"}\n{"path": \n',
            r"broken\.jsonl:2: expected one JSON object",
        ),
        ("list.jsonl", '["a.wav"]\n', r":1: expected a JSON object .*got a list"),
        ("nopath.jsonl", '{"file": "a.wav"}\n', r":1: expected a non-empty 'path', got None"),
        (
            "tags.jsonl",
            '{"path": "a.wav", "tags": 3}\n',
            r":1: expected 'tags' as a list of strings",
        ),
        (
            # JSON says nothing of how a string splits: "speech, music" was one tag.
            "string_tags.jsonl",
            '{"path": "a.wav"}\n{"path": "b.wav", "tags": "speech, music"}\n',
            r"string_tags\.jsonl:2: expected 'tags' as a list of strings .*got 'speech, music'",
        ),
        (
            "speaker.jsonl",
            '{"path": "a.wav", "speaker": ["x"]}\n',
            r"expected 'speaker' to be text",
        ),
        (
            "list.txt",
            "path\na.wav\n",
            r"from its extension '\.txt'; expected one of \.csv, \.json-lines, \.jsonl",
        ),
        ("header_only.csv", "path,id\n", r"lists no items"),
    ],
)
def test_manifest_errors_name_the_line_and_what_was_expected(tmp_path, file_name, content, message):
    (tmp_path / file_name).write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"manifest:{tmp_path / file_name}")


def test_manifest_that_does_not_exist(tmp_path):
    with pytest.raises(DatasetError, match=r"manifest: file .*nowhere\.csv' does not exist"):
        load_dataset(f"manifest:{tmp_path / 'nowhere.csv'}")
    with pytest.raises(DatasetError, match="got the folder"):
        load_dataset(f"manifest:{tmp_path}")


# ---------------------------------------------------------------- filters and specs


def test_filters_keep_any_tag_drop_excluded_and_limit_in_order():
    everything = load_dataset("embedded")
    music = load_dataset("embedded", tags=["music"])
    assert music.items and all("music" in item.tags for item in music)
    either = load_dataset("embedded", tags=["music", "audio"])
    assert len(either) == len(music) + sum("audio" in item.tags for item in everything)
    clean_speech = load_dataset("embedded", tags=["speech"], exclude_tags=["noisy"])
    assert clean_speech.items and all("noisy" not in item.tags for item in clean_speech)
    assert ids(load_dataset("embedded", limit=3)) == ids(everything)[:3]
    assert (
        ids(load_dataset("embedded", tags=["noisy"], limit=2))
        == [item.id for item in everything if "noisy" in item.tags][:2]
    )
    assert load_dataset("embedded", limit=10_000) == everything
    assert everything.spec == "embedded"


def test_dataset_is_frozen():
    dataset = load_dataset("embedded", limit=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        dataset.items = ()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "foldr:/data",
            r"unknown dataset scheme 'foldr'; did you mean 'folder'\? "
            r"known: embedded, folder, librispeech, manifest",
        ),
        ("/data/wavs", r"unknown dataset scheme '/data/wavs'.*expected a spec such as .*folder:"),
        ("embedded:extra", r"'embedded' takes no argument; expected 'embedded'"),
        ("folder:", r"'folder' needs a path; expected e\.g\. 'folder:/data/wavs'"),
    ],
)
def test_bad_specs_list_what_is_known(spec, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)


def test_filters_that_leave_nothing_say_which_tags_exist():
    with pytest.raises(DatasetError) as error:
        load_dataset("embedded", tags=["speach"], exclude_tags=["noisy"])
    message = str(error.value)
    assert "tags=['speach'] and exclude_tags=['noisy']" in message
    assert "audio, music, noisy, speech, synthetic" in message
    with pytest.raises(DatasetError, match="exclude_tags=\\['audio', 'music', 'speech'\\]"):
        load_dataset("embedded", exclude_tags=["speech", "music", "audio"])


@pytest.mark.parametrize("limit", [0, -3])
def test_limit_below_one_is_rejected(limit):
    with pytest.raises(DatasetError, match=f"limit must be at least 1 .*got {limit}"):
        load_dataset("embedded", limit=limit)


def test_a_bare_string_of_tags_is_rejected():
    with pytest.raises(TypeError, match=r"such as \['speech'\], got the string 'speech'"):
        load_dataset("embedded", tags="speech")


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


def _dataset_plugin(root: Path, target: str, module_text: str) -> None:
    """A fake distribution registering the scheme ``tones`` as ``target``."""
    dist_info = root / "bench_toy_datasets-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: bench-toy-datasets\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(f"[bench.datasets]\ntones = {target}\n")
    (root / f"{target.partition(':')[0]}.py").write_text(module_text)


@pytest.fixture
def datasets(monkeypatch):
    """The dataset registry, restored after the test, with entry points to read again."""
    for attribute in ("_targets", "_sources", "_paths"):
        monkeypatch.setattr(DATASETS, attribute, dict(getattr(DATASETS, attribute)))
    monkeypatch.setattr(DATASETS, "_entry_points_loaded", False)
    return DATASETS


def test_third_party_dataset_schemes_register_through_the_entry_point_group(
    datasets, tmp_path, monkeypatch
):
    write_sine(tmp_path / "tones" / "a4.wav")
    _dataset_plugin(
        tmp_path,
        "toy_dataset_plugin:SCHEME",
        "from pathlib import Path\n"
        "from bench.data import DatasetScheme, Item\n"
        "from bench.data.item import Listing\n\n"
        "def tones(root: Path) -> Listing:\n"
        "    return Listing(tuple(Item(path.stem, path, tags=frozenset({'music'}))\n"
        "                         for path in sorted(root.glob('*.wav'))))\n\n"
        "SCHEME = DatasetScheme(tones, takes_path=True, example='tones:/data/tones')\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    dataset = load_dataset(f"tones:{tmp_path / 'tones'}")
    assert ids(dataset) == ["a4"] and dataset.items[0].tags == {"music"}
    assert datasets.source("tones") == "bench-toy-datasets"
    with pytest.raises(DatasetError, match=r"known: embedded, folder, .*tones; .*tones:/data"):
        load_dataset("tone:x")


def test_a_dataset_entry_point_that_is_not_a_scheme_is_named(datasets, tmp_path, monkeypatch):
    _dataset_plugin(tmp_path, "toy_not_a_scheme:SCHEME", "SCHEME = print\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match="'tones' from bench-toy-datasets is a builtin_function"):
        load_dataset("tones")
