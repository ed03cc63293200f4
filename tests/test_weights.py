"""Published weights (bench.weights): fetching through a real HTTP server on the loopback
interface, verification, the cache, and ``--checkpoint official:NAME`` end to end."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from bench.codecs.weights import PublishedWeights
from helpers import official_encodec
from loopback import LoopbackServer, Served, use_catalogue

from bench import weights
from bench.cli import EXIT_OK, EXIT_USAGE, main
from bench.sweep.plan import parse_codec_argument
from bench.weights import WeightsError, cached, fetch, local_path, resolve_codec_options

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: several blocks of the download loop
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    loopback = LoopbackServer()
    yield loopback
    loopback.close()


@pytest.fixture(autouse=True)
def weights_folder(tmp_path, monkeypatch) -> Path:
    """Every test fetches into its own folder, never the user's cache, with no mirror set."""
    folder = tmp_path / "weights"
    monkeypatch.setenv("BENCH_WEIGHTS", str(folder))
    monkeypatch.delenv(weights.MIRROR_VARIABLE, raising=False)
    return folder


def release(url: str, **fields) -> PublishedWeights:
    fields = {"sha256_prefix": DIGEST[:8], **fields}
    return PublishedWeights(
        name=fields.pop("name", "test-release"),
        codec=fields.pop("codec", "encodec"),
        config="24khz",
        url=url,
        description="a test release",
        licence="test licence",
        **fields,
    )


def served_release(server: LoopbackServer, body: bytes = PAYLOAD, **fields) -> PublishedWeights:
    """A release whose name carries its hash prefix, as EnCodec's, served by ``server``."""
    path = f"/releases/weights-{DIGEST[:8]}.th"
    server.files[path] = Served(body)
    return release(server.url + path, **fields)


def leftovers(folder: Path) -> list[str]:
    """Files in the cache other than the lock: temporary downloads must not stay."""
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and path.name != ".lock"
    )


# --- fetching ---


def test_a_download_shows_progress_and_lands_verified_with_its_record(server, capsys):
    entry = served_release(server)
    local = fetch(entry, progress=True)
    assert local.path == local_path(entry) and local.path.read_bytes() == PAYLOAD
    assert (local.sha256, local.checked_against) == (DIGEST, "file name")
    progress = capsys.readouterr().err
    assert f"fetching test-release from {entry.url} (licence: test licence)" in progress
    assert "test-release: 100%" in progress and "1.00M" in progress  # tqdm's bar, in MiB
    record = json.loads((local.path.parent / "download.json").read_text())
    assert record["sha256"] == DIGEST and record["url"] == entry.url
    # A second fetch verifies the cached file and downloads nothing.
    assert fetch(entry, progress=False).sha256 == DIGEST
    assert len(server.requests) == 1


def test_the_file_is_renamed_into_place_only_after_it_verified(server, monkeypatch):
    entry = served_release(server)
    seen = {}
    verify = weights._verify

    def watching(*arguments):
        folder = local_path(entry).parent
        seen["final existed"] = local_path(entry).exists()
        seen["partial"] = [path.name for path in folder.glob("*.part")]
        return verify(*arguments)

    monkeypatch.setattr(weights, "_verify", watching)
    fetch(entry, progress=False)
    assert seen["final existed"] is False
    assert len(seen["partial"]) == 1 and seen["partial"][0].startswith(f".{entry.file_name}.")
    assert local_path(entry).read_bytes() == PAYLOAD


def test_a_wrong_hash_is_refused_and_nothing_is_kept(server, weights_folder):
    entry = served_release(server, body=PAYLOAD[:-1] + b"x")  # one byte altered
    with pytest.raises(WeightsError, match=r"says it starts .*damaged or altered download"):
        fetch(entry, progress=False)
    assert leftovers(weights_folder) == []


def test_a_full_pinned_hash_is_checked_in_full(server, weights_folder):
    wrong = DIGEST[:8] + "0" * 56  # the right prefix, a wrong digest
    entry = served_release(server, sha256=wrong, sha256_prefix=None)
    with pytest.raises(WeightsError, match="the catalogue says it starts"):
        fetch(entry, progress=False)
    assert leftovers(weights_folder) == []


def test_a_truncated_download_is_refused_and_nothing_is_kept(server, weights_folder):
    entry = served_release(server)
    server.files[entry.url.removeprefix(server.url)].cut_after = 300_000
    with pytest.raises(WeightsError, match=r"cut short: 300000 of 1048576 bytes"):
        fetch(entry, progress=False)
    assert leftovers(weights_folder) == []


def test_a_killed_downloads_partial_file_is_removed_by_the_next_fetch(server, weights_folder):
    entry = served_release(server)
    folder = local_path(entry).parent
    folder.mkdir(parents=True)
    (folder / f".{entry.file_name}.killed.part").write_bytes(PAYLOAD[:1000])
    fetch(entry, progress=False)
    assert leftovers(weights_folder) == [
        f"{entry.name}/download.json",
        f"{entry.name}/{entry.file_name}",
    ]


def test_an_unwritable_weights_folder_is_named(server, monkeypatch, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("BENCH_WEIGHTS", str(blocker / "weights"))
    with pytest.raises(WeightsError, match=r"cannot write to the weights folder .*BENCH_WEIGHTS"):
        fetch(served_release(server), progress=False)


def test_a_404_names_the_url_and_keeps_nothing(server, weights_folder):
    entry = release(server.url + "/missing/weights-00000000.th", sha256_prefix="00000000")
    with pytest.raises(WeightsError, match=r"answered HTTP 404 Not Found") as error:
        fetch(entry, progress=False)
    assert entry.url in str(error.value)
    assert leftovers(weights_folder) == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_server_fails_fast_naming_the_url_and_the_checkpoint_path_alternative():
    entry = release(f"http://127.0.0.1:{free_port()}/weights-{DIGEST[:8]}.th")
    started = time.monotonic()
    with pytest.raises(WeightsError) as error:
        fetch(entry, progress=False)
    assert time.monotonic() - started < 10
    message = str(error.value)
    assert f"cannot download test-release from {entry.url}" in message
    assert "--checkpoint PATH" in message and "Connection refused" in message


def test_a_server_that_never_answers_times_out(monkeypatch):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts connections, never answers
    monkeypatch.setattr(weights, "READ_TIMEOUT_SECONDS", 0.5)
    entry = release(f"http://127.0.0.1:{silent.getsockname()[1]}/weights-{DIGEST[:8]}.th")
    try:
        started = time.monotonic()
        with pytest.raises(WeightsError, match="timed out.*--checkpoint PATH"):
            fetch(entry, progress=False)
        assert time.monotonic() - started < 5
    finally:
        silent.close()


def test_a_mirror_replaces_the_publishers_host(server, monkeypatch):
    entry = release(f"https://publisher.invalid/v0/weights-{DIGEST[:8]}.th")
    server.files[f"/mirror/weights-{DIGEST[:8]}.th"] = Served(PAYLOAD)
    monkeypatch.setenv(weights.MIRROR_VARIABLE, server.url + "/mirror/")
    local = fetch(entry, progress=False)
    assert local.downloaded_from == f"{server.url}/mirror/weights-{DIGEST[:8]}.th"
    assert local.provenance()["url"] == entry.url  # the catalogue's URL is still recorded


# --- releases whose publisher gives no hash (HuggingFace states one) ---


def huggingface_like(server: LoopbackServer, stated: str | None) -> PublishedWeights:
    """A release served as HuggingFace does: /resolve/ redirects to the stored object and
    states its SHA-256 in X-Linked-Etag on the redirect."""
    headers = {"X-Linked-Etag": f'"{stated}"'} if stated else {}
    server.files["/repo/resolve/main/Model"] = Served(redirect_to="/cdn/object", headers=headers)
    server.files["/cdn/object"] = Served(PAYLOAD)
    return release(server.url + "/repo/resolve/main/Model", sha256_prefix=None)


def test_an_unpinned_release_is_checked_against_the_hash_the_server_states(server):
    local = fetch(huggingface_like(server, DIGEST), progress=False)
    assert (local.sha256, local.checked_against) == (DIGEST, "server")
    # Later uses check the file against the hash recorded at download.
    assert cached(local.entry).sha256 == DIGEST


def test_an_unpinned_release_whose_stated_hash_differs_is_refused(server, weights_folder):
    with pytest.raises(WeightsError, match="the server says it starts"):
        fetch(huggingface_like(server, "ab" * 32), progress=False)
    assert leftovers(weights_folder) == []


def test_an_unpinned_release_without_any_hash_is_refused_unless_one_is_given(
    server, weights_folder
):
    entry = huggingface_like(server, None)
    with pytest.raises(WeightsError, match=r"cannot be verified.*--sha256 HEX"):
        fetch(entry, progress=False)
    assert leftovers(weights_folder) == []
    with pytest.raises(WeightsError, match="the user says it starts"):
        fetch(entry, sha256="cd" * 32, progress=False)
    assert fetch(entry, sha256=DIGEST, progress=False).checked_against == "user"


# --- the cache ---


def test_a_cached_file_damaged_later_is_deleted_and_fetched_again(server, capsys):
    entry = served_release(server)
    path = fetch(entry, progress=False).path
    with path.open("r+b") as handle:  # flip one byte in the middle
        handle.seek(len(PAYLOAD) // 2)
        handle.write(b"\xff")
    assert fetch(entry, progress=False).path.read_bytes() == PAYLOAD
    assert "does not hash to the verified download" in capsys.readouterr().err
    assert len(server.requests) == 2


def test_a_file_replaced_with_another_of_the_same_prefix_is_not_trusted(server):
    entry = served_release(server)
    path = fetch(entry, progress=False).path
    path.write_bytes(PAYLOAD + b"!")  # hashes differently; the record still names PAYLOAD
    assert weights.check_cached(entry).startswith(f"{path} does not hash")


def test_two_fetches_at_once_download_once(server):
    entry = served_release(server)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(fetch(entry, progress=False)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [local.sha256 for local in results] == [DIGEST] * 3
    assert len(server.requests) == 1


# --- names ---


def test_official_names_are_checked_against_the_codec(server, monkeypatch):
    use_catalogue(
        monkeypatch,
        served_release(server, name="ours-24khz"),
        release(server.url + "/x", name="theirs", codec="hificodec", sha256_prefix=None),
    )
    with pytest.raises(ValueError, match=r"expected published weights of hificodec "):
        resolve_codec_options("hificodec", {"checkpoint": "official:ours-24khz"})
    with pytest.raises(ValueError, match=r"unknown published weights 'ours-24kh'.*ours-24khz"):
        resolve_codec_options("encodec", {"checkpoint": "official:ours-24kh"})
    options, provenance = resolve_codec_options("encodec", {"checkpoint": "official:ours-24khz"})
    assert Path(options["checkpoint"]).read_bytes() == PAYLOAD
    assert provenance["name"] == "ours-24khz" and provenance["checkpoint_kind"] == "official"
    # Any other checkpoint is left as it is.
    assert resolve_codec_options("encodec", {"checkpoint": "x.pt"}) == ({"checkpoint": "x.pt"}, {})


def test_a_codec_option_may_name_official_weights():
    (choice,) = parse_codec_argument("ours=encodec:1.5:checkpoint=official:encodec-24khz")
    assert choice.options == {"checkpoint": "official:encodec-24khz"}
    assert choice.bitrates == (1.5,)


def test_the_real_catalogue_is_consistent():
    entries = weights.catalogue()
    assert {"encodec-24khz", "encodec-48khz", "encodec-lm-24khz", "encodec-lm-48khz"} <= set(
        entries
    )
    assert {"hificodec-16k-320d", "hificodec-24k-320d", "hificodec-24k-240d"} <= set(entries)
    for entry in entries.values():
        assert entry.lm is None or entries[entry.lm].role == "lm"
        # EnCodec's file names carry the hash prefix the official loader checks.
        if entry.codec == "encodec":
            assert entry.file_name.endswith(f"-{entry.sha256_prefix}.th")


def test_bench_weights_list_and_fetch(server, monkeypatch, capsys):
    use_catalogue(monkeypatch, served_release(server, name="ours-24khz"))
    assert main(["weights", "list"]) == EXIT_OK
    assert "ours-24khz" in capsys.readouterr().out.split("\n")[1].split()[0]
    assert main(["weights", "fetch", "ours-24khz", "--quiet"]) == EXIT_OK
    assert f"SHA-256 {DIGEST} (checked against the file name)" in capsys.readouterr().out
    main(["weights", "list"])
    assert f"yes, 1.0 MB, SHA-256 {DIGEST[:12]} (file name)" in capsys.readouterr().out
    assert main(["weights", "fetch", "nothing"]) == EXIT_USAGE
    assert "unknown published weights 'nothing'" in capsys.readouterr().err


# --- end to end: the official encodec package's random-weight models as the releases ---


@pytest.fixture(scope="module")
def official_release_files(tmp_path_factory) -> dict[str, bytes]:
    """The official package's 24 kHz model and its LM, random weights saved as the releases
    are (bare state dicts), by their release-style names (hash prefix in the name)."""
    encodec = official_encodec()
    torch.manual_seed(0)
    model = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
    lm = encodec.model.LMModel(
        model.quantizer.n_q, model.quantizer.bins, num_layers=5, dim=200, past_context=262
    )
    files = {}
    folder = tmp_path_factory.mktemp("releases")
    for stem, module in (("encodec_24khz", model), ("encodec_lm_24khz", lm)):
        path = folder / "file.th"
        torch.save(module.state_dict(), path)
        body = path.read_bytes()
        files[f"{stem}-{hashlib.sha256(body).hexdigest()[:8]}.th"] = body
    return files


def test_bench_run_on_official_weights_fetches_them_and_records_their_provenance(
    server, monkeypatch, official_release_files, tmp_path, capsys
):
    entries = []
    for file_name, body in official_release_files.items():
        server.files[f"/encodec/v0/{file_name}"] = Served(body)
        is_lm = file_name.startswith("encodec_lm")
        entries.append(
            PublishedWeights(
                name="encodec-lm-24khz" if is_lm else "encodec-24khz",
                codec="encodec",
                config="24khz",
                url=f"{server.url}/encodec/v0/{file_name}",
                description="random weights of the official package, for the test",
                licence="CC BY-NC 4.0",
                sha256_prefix=file_name.rsplit("-", 1)[1].removesuffix(".th"),
                lm=None if is_lm else "encodec-lm-24khz",
                role="lm" if is_lm else "codec",
            )
        )
    use_catalogue(monkeypatch, *entries)
    run_dir = tmp_path / "run"
    code = main(
        [
            "run",
            "--codec", "encodec",
            "--checkpoint", "official:encodec-24khz",
            "--entropy-coding",
            "--bitrates", "1.5,6",
            "--limit", "1",
            "--max-seconds", "1",
            "--metrics", "mel_distance,si_sdr",
            "--workers", "2",
            "--executor", "process",
            "--run-dir", str(run_dir),
            "--no-cache",
            "--no-report",
            "--quiet",
        ]
    )  # fmt: skip
    output = capsys.readouterr()
    assert code == EXIT_OK, output.err
    # Each file was downloaded once, by the driver; the workers verified the cached copies.
    assert sorted(server.requests) == sorted(
        f"/encodec/v0/{name}" for name in official_release_files
    )
    described = json.loads((run_dir / "config.json").read_text())["codecs"]["encodec"]
    assert described["checkpoint_kind"] == "official"
    assert described["model_note"] == "the official EnCodec release weights (Défossez et al. 2022)"
    published = described["published_weights"]
    codec_file = next(name for name in official_release_files if "_lm_" not in name)
    assert published["name"] == "encodec-24khz" and published["checkpoint_kind"] == "official"
    assert published["url"] == f"{server.url}/encodec/v0/{codec_file}"
    assert published["sha256"] == hashlib.sha256(official_release_files[codec_file]).hexdigest()
    assert published["lm"]["name"] == "encodec-lm-24khz"
    assert described["entropy_coding"] is True and "+lm" in described["checkpoint_hash"]
    assert f"weights: encodec: official encodec-24khz from {published['url']}" in output.out
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert {row["kbps_nominal"] for row in rows} == {1.5, 6.0}
    assert all(row["value"] == row["value"] for row in rows)  # scored, no NaN


def test_bench_run_offline_fails_in_seconds_with_the_url_and_the_alternative(
    monkeypatch, tmp_path, capsys
):
    use_catalogue(
        monkeypatch,
        release(f"http://127.0.0.1:{free_port()}/v0/weights-{DIGEST[:8]}.th", name="encodec-x"),
    )
    started = time.monotonic()
    code = main(
        ["run", "--codec", "encodec", "--checkpoint", "official:encodec-x", "--limit", "1",
         "--run-dir", str(tmp_path / "run"), "--quiet"]
    )  # fmt: skip
    assert time.monotonic() - started < 10
    assert code == EXIT_USAGE
    error = capsys.readouterr().err
    assert "cannot download encodec-x from http://127.0.0.1:" in error
    assert "pass the file with --checkpoint PATH" in error
    assert not (tmp_path / "run" / "config.json").exists()
