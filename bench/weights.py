"""The papers' released weights: the catalogue, verified downloads into the cache, and
``--checkpoint official:NAME``.

The catalogue is what the codec packages declare (``PUBLISHED_WEIGHTS``, entries of
:class:`bench.codecs.weights.PublishedWeights`), found through the registry. A file is fetched
once into ``weights_dir()/NAME/``: streamed to a temporary file beside its final place while
its SHA-256 is computed, checked (length, then hash), and renamed into place only once it
passes; anything else is deleted. What a download was checked against is recorded beside it
(``download.json``), and the file is hashed again each time it is used, so a file damaged or
replaced in the cache is noticed and fetched anew rather than run.

``BENCH_WEIGHTS_MIRROR`` (or ``bench weights fetch --mirror``) fetches from a mirror instead
of the publisher: the release's file name is appended to it. ``BENCH_WEIGHTS`` moves the
folder (default ``$BENCH_CACHE/weights``, else ``~/.cache/codec-bench/weights``); the results
cache options of ``bench run`` (``--cache``, ``--no-cache``) do not apply to weights.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import __version__
from bench.codecs.weights import SHA256_HEX, PublishedWeights
from bench.registry import PUBLISHED_WEIGHTS, UnknownNameError, did_you_mean

OFFICIAL_PREFIX = "official:"
MIRROR_VARIABLE = "BENCH_WEIGHTS_MIRROR"
# Seconds to connect (an offline machine hears so within seconds), then to wait for each
# block of the download (a slow but live server is not cut off).
CONNECT_TIMEOUT_SECONDS = 4.0
READ_TIMEOUT_SECONDS = 30.0
CHUNK_BYTES = 1 << 20
RECORD_NAME = "download.json"
# HuggingFace states the SHA-256 of a stored (LFS) file in this header of its answer to
# /resolve/, before redirecting to the CDN; huggingface_hub checks downloads against it too.
SERVER_HASH_HEADER = "X-Linked-Etag"


class WeightsError(ValueError):
    """Published weights that cannot be had or do not verify; the message says what to do."""


def weights_dir() -> Path:
    """Where fetched weights live (read from the environment at each call)."""
    if os.environ.get("BENCH_WEIGHTS"):
        return Path(os.environ["BENCH_WEIGHTS"])
    cache = os.environ.get("BENCH_CACHE")
    return (Path(cache) if cache else Path.home() / ".cache" / "codec-bench") / "weights"


def catalogue() -> dict[str, PublishedWeights]:
    """Every codec package's published weights by name; a name declared twice is an error."""
    entries: dict[str, PublishedWeights] = {}
    for package in PUBLISHED_WEIGHTS.names():
        for entry in PUBLISHED_WEIGHTS.factory(package):
            if entry.name in entries:
                raise ValueError(
                    f"published weights {entry.name!r} are declared twice (by "
                    f"{entries[entry.name].codec} and by {package})"
                )
            entries[entry.name] = entry
    return entries


def lookup(name: str) -> PublishedWeights:
    """The catalogue entry ``name``; :class:`UnknownNameError` lists the known ones."""
    entries = catalogue()
    if name not in entries:
        raise UnknownNameError(did_you_mean("published weights", name, list(entries)))
    return entries[name]


def source_url(entry: PublishedWeights, mirror: str | None = None) -> str:
    """Where to fetch ``entry`` from: ``mirror`` (else ``$BENCH_WEIGHTS_MIRROR``) plus the file
    name, or the publisher's URL."""
    mirror = mirror or os.environ.get(MIRROR_VARIABLE)
    return f"{mirror.rstrip('/')}/{entry.file_name}" if mirror else entry.url


@dataclass(frozen=True)
class LocalWeights:
    """A verified file of the catalogue in the cache, and what it was checked against."""

    entry: PublishedWeights
    path: Path
    sha256: str
    # How the digest was known to be right: "catalogue", "file name", "server" or "user".
    checked_against: str
    downloaded_from: str

    def provenance(self) -> dict[str, str]:
        """What a run's config.json records of the weights it ran on."""
        return {
            "name": self.entry.name,
            "checkpoint_kind": "official",
            "url": self.entry.url,
            "downloaded_from": self.downloaded_from,
            "sha256": self.sha256,
            "checked_against": self.checked_against,
            "licence": self.entry.licence,
        }


def local_path(entry: PublishedWeights) -> Path:
    return weights_dir() / entry.name / entry.file_name


def _record_path(entry: PublishedWeights) -> Path:
    return weights_dir() / entry.name / RECORD_NAME


def read_record(entry: PublishedWeights) -> dict | None:
    """What the verified download of ``entry`` recorded, or None (none, or unreadable)."""
    try:
        record = json.loads(_record_path(entry).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _pin_source(entry: PublishedWeights) -> str:
    return "catalogue" if entry.sha256 else "file name"


def check_cached(entry: PublishedWeights) -> LocalWeights | str | None:
    """``entry``'s file in the cache, hashed now and verified; a sentence saying what is
    wrong with it; or None if it is not there.

    The file must hash to what its download was verified against (``download.json``) and to
    what the catalogue pins; a file placed there by hand, without a record, only to the
    latter (an entry that pins nothing then cannot be verified).
    """
    path = local_path(entry)
    if not path.is_file():
        return None
    # Imported here: bench.audio loads torch, which `bench weights list` of an empty cache
    # does not need.
    from bench.audio import file_sha256

    record = read_record(entry)
    digest = file_sha256(path)
    pinned = entry.hash_matches(digest)
    if record is None:
        verified = pinned
    else:
        verified = record.get("sha256") == digest and (pinned or entry.pinned_hash is None)
    if not verified:
        return (
            f"{path} does not hash to the verified download of {entry.name} (SHA-256 {digest[:12]})"
        )
    record = record or {}
    return LocalWeights(
        entry,
        path,
        digest,
        str(record.get("checked_against", _pin_source(entry))),
        str(record.get("url", "placed in the cache by hand")),
    )


def cached(entry: PublishedWeights) -> LocalWeights | None:
    """``entry``'s verified file in the cache, or None. A file that does not verify (damaged,
    replaced) is deleted with its record, so that it is fetched again, and a note says so."""
    found = check_cached(entry)
    if isinstance(found, str):
        print(f"bench: {found}; deleted, to be fetched again", file=sys.stderr)
        _discard(entry)
        return None
    return found


def _discard(entry: PublishedWeights) -> None:
    local_path(entry).unlink(missing_ok=True)
    _record_path(entry).unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One fetch of a release at a time across processes (a run's workers, two runs)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = (folder / ".lock").open("w")
    except OSError as error:
        raise WeightsError(
            f"cannot write to the weights folder {folder}: {error}; set BENCH_WEIGHTS to a "
            "writable folder"
        ) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch(
    entry: PublishedWeights,
    *,
    mirror: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> LocalWeights:
    """``entry``'s file, from the cache if it verifies there, else downloaded and verified.

    Args:
        mirror: a base URL to fetch from instead of the publisher's (see :func:`source_url`).
        sha256: the full SHA-256 the file must have, for an entry that pins none and a
            server that states none.
        progress: show a progress bar on stderr while downloading.

    Raises:
        WeightsError: the server cannot be reached or refuses, the download is cut short, or
            the file does not hash to what it must; nothing is left in the cache then.
    """
    if sha256 is not None and not SHA256_HEX.fullmatch(sha256):
        raise WeightsError(f"--sha256: expected 64 lower-case hex digits, got {sha256!r}")
    folder = local_path(entry).parent
    with _locked(folder):
        local = cached(entry)
        if local is not None:
            return local
        # Partial files of a download that was killed (no other is running: we hold the lock).
        for stale in folder.glob(f".{entry.file_name}.*.part"):
            stale.unlink(missing_ok=True)
        url = source_url(entry, mirror)
        if progress:
            print(f"fetching {entry.name} from {url} (licence: {entry.licence})", file=sys.stderr)
        temporary, digest, checked_against = _download(entry, url, folder, sha256, progress)
        try:
            record = {
                "name": entry.name,
                "url": url,
                "sha256": digest,
                "checked_against": checked_against,
                "fetched": datetime.now(UTC).isoformat(timespec="seconds"),
                "bench": __version__,
            }
            _record_path(entry).write_text(json.dumps(record, indent=1) + "\n")
            os.replace(temporary, local_path(entry))
        finally:
            temporary.unlink(missing_ok=True)
    return LocalWeights(entry, local_path(entry), digest, checked_against, url)


class _ReadTimeout:
    """A connection that waits :data:`READ_TIMEOUT_SECONDS` for data once connected (urllib
    has one timeout for both, and connecting should fail sooner)."""

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(READ_TIMEOUT_SECONDS)


class _HTTPConnection(_ReadTimeout, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_ReadTimeout, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, request: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, request)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, request: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPSConnection, request, context=self._context)


class _RecordingRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, keeping the headers of each redirecting answer (where
    HuggingFace states a file's hash)."""

    def __init__(self) -> None:
        self.headers: list[Any] = []

    def redirect_request(self, request, response, code, message, headers, new_url):  # noqa: ANN001, ANN201 - urllib's signature
        self.headers.append(headers)
        return super().redirect_request(request, response, code, message, headers, new_url)


def _offline_error(entry: PublishedWeights, url: str, reason: object) -> WeightsError:
    return WeightsError(
        f"cannot download {entry.name} from {url}: {reason}. Without network access, "
        f"download {entry.url} on another machine and pass the file with --checkpoint PATH "
        f"(or set {MIRROR_VARIABLE} to a server that has {entry.file_name})"
    )


def _download(
    entry: PublishedWeights, url: str, folder: Path, sha256: str | None, progress: bool
) -> tuple[Path, str, str]:
    """Stream ``url`` into a temporary file in ``folder``; returns it, its SHA-256 and what that
    was checked against. The temporary file is deleted on any failure."""
    from tqdm import tqdm

    redirects = _RecordingRedirects()
    opener = urllib.request.build_opener(redirects, _HTTPHandler, _HTTPSHandler)
    request = urllib.request.Request(url, headers={"User-Agent": f"codec-bench/{__version__}"})
    try:
        response = opener.open(request, timeout=CONNECT_TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        raise WeightsError(
            f"cannot download {entry.name}: {url} answered HTTP {error.code} {error.reason}; "
            f"expected the file {entry.file_name}"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        raise _offline_error(entry, url, getattr(error, "reason", error)) from None
    stated = [*redirects.headers, response.headers]
    server_hash = _server_hash(stated)
    length = response.headers.get("Content-Length")
    expected_bytes = int(length) if length and length.isdigit() else entry.size
    descriptor, name = tempfile.mkstemp(dir=folder, prefix=f".{entry.file_name}.", suffix=".part")
    temporary = Path(name)
    digest = hashlib.sha256()
    received = 0
    try:
        with (
            response,
            os.fdopen(descriptor, "wb") as handle,
            tqdm(
                total=expected_bytes,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=entry.name,
                disable=not progress,
                file=sys.stderr,
            ) as bar,
        ):
            while block := _read(response, entry, url, received, expected_bytes):
                handle.write(block)
                digest.update(block)
                received += len(block)
                bar.update(len(block))
        if expected_bytes is not None and received != expected_bytes:
            raise WeightsError(
                f"{entry.name}: the download from {url} was cut short: {received} of "
                f"{expected_bytes} bytes; nothing was kept, run the command again"
            )
        checked_against = _verify(entry, url, digest.hexdigest(), sha256, server_hash)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary, digest.hexdigest(), checked_against


def _read(
    response: http.client.HTTPResponse,
    entry: PublishedWeights,
    url: str,
    received: int,
    expected_bytes: int | None,
) -> bytes:
    try:
        return response.read(CHUNK_BYTES)
    except http.client.IncompleteRead as error:
        raise WeightsError(
            f"{entry.name}: the download from {url} was cut short: "
            f"{received + len(error.partial)} of {expected_bytes} bytes; nothing was kept, "
            "run the command again"
        ) from None
    except OSError as error:  # a timeout or reset in the middle of the file
        reason = f"the connection failed after {received} bytes: {error}"
        raise _offline_error(entry, url, reason) from None


def _server_hash(headers: list[Any]) -> str | None:
    """The SHA-256 a server states for the file (HuggingFace's ``X-Linked-Etag``), if any."""
    for stated in headers:
        value = (stated.get(SERVER_HASH_HEADER) or "").strip().strip('"').lower()
        if SHA256_HEX.fullmatch(value):
            return value
    return None


def _verify(
    entry: PublishedWeights,
    url: str,
    digest: str,
    given: str | None,
    server_hash: str | None,
) -> str:
    """Check ``digest`` against every hash there is for the file (the catalogue's, the
    user's, the server's); returns the most trusted one it was checked against."""
    expectations = []
    if entry.pinned_hash is not None:
        expectations.append((_pin_source(entry), entry.pinned_hash))
    if given is not None:
        expectations.append(("user", given))
    if server_hash is not None:
        expectations.append(("server", server_hash))
    if not expectations:
        raise WeightsError(
            f"{entry.name}: the publisher gives no hash and {url} stated none "
            f"({SERVER_HASH_HEADER}), so the download cannot be verified and was not kept; "
            "pass the file's SHA-256 with `bench weights fetch "
            f"{entry.name} --sha256 HEX`, or the file itself with --checkpoint PATH"
        )
    for source, expected in expectations:
        if not digest.startswith(expected):
            raise WeightsError(
                f"{entry.name}: the file from {url} has SHA-256 {digest}, but the {source} "
                f"says it starts {expected}: a damaged or altered download, deleted"
            )
    return expectations[0][0]


def resolve_codec_options(codec: str, options: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """``options`` with ``checkpoint="official:NAME"`` replaced by the fetched, verified file
    (and, for a codec asked for entropy coding, ``lm_checkpoint`` by its published LM), and
    what a run records of them; other options come back as they are, with ``{}``.

    Raises:
        ValueError: an unknown name, or weights of another codec; WeightsError as
            :func:`fetch` does.
    """
    checkpoint = options.get("checkpoint")
    if not (isinstance(checkpoint, str) and checkpoint.startswith(OFFICIAL_PREFIX)):
        return options, {}
    entry = lookup(checkpoint.removeprefix(OFFICIAL_PREFIX))
    if entry.codec != codec or entry.role != "codec":
        own = [
            OFFICIAL_PREFIX + other.name
            for other in catalogue().values()
            if other.codec == codec and other.role == "codec"
        ]
        what = "an entropy-coding LM" if entry.role == "lm" else "weights"
        raise ValueError(
            f"--checkpoint {checkpoint}: expected published weights of {codec} "
            f"({', '.join(own) or 'it has none'}), got {what} of {entry.codec}"
        )
    local = fetch(entry)
    resolved = {**options, "checkpoint": str(local.path)}
    provenance = local.provenance()
    if options.get("entropy_coding"):
        if entry.lm is None:
            raise ValueError(f"--entropy-coding: {entry.name} has no published entropy-coding LM")
        lm = fetch(lookup(entry.lm))
        resolved["lm_checkpoint"] = str(lm.path)
        provenance["lm"] = lm.provenance()
    return resolved, provenance
