"""Published weights: what a codec package declares of the checkpoints its paper's authors
released, for the harness to fetch, verify and run (``bench weights``, ``--checkpoint
official:NAME``).

A codec package lists its releases as ``PUBLISHED_WEIGHTS`` (a tuple of
:class:`PublishedWeights`) in its ``__init__``; the harness finds them through the registry,
as it finds the package's training recipe. An entry says where the file is, what it must hash
to and which configuration of the codec it is; it carries no code to run.

A release is verified by the SHA-256 of its bytes: the full digest where the catalogue pins
one, else the prefix the publisher embeds in the file name (EnCodec's ``-d7cc33bc`` suffixes,
which ``torch.hub``'s ``check_hash`` checks the same way). A publisher that gives neither
(AcademiCodec's HuggingFace files) leaves the entry without a hash; the harness then takes
the digest the server states for the file (HuggingFace's ``X-Linked-Etag``, the SHA-256 of the
stored object) or refuses to fetch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_HEX = re.compile(r"[0-9a-f]+")
# A full SHA-256 as hex digits, as the catalogue, the user and servers give it.
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PublishedWeights:
    """One released checkpoint file.

    Args:
        name: the catalogue name, ``official:NAME`` on the command line (lower case, the
            codec's name first: ``encodec-24khz``).
        codec: the registered codec that loads it (an LM entry: the codec whose LM it is).
        config: the codec configuration the file is (``24khz``, ``official-24k-320d``).
        url: where the publisher serves it; the last path segment is the file name.
        description: one line for ``bench weights list``.
        licence: the publisher's licence of the weights, shown before downloading.
        sha256: the full SHA-256 of the file, where known.
        sha256_prefix: the digest's first hex digits as the publisher embeds them in the
            file name, where no full digest is known.
        size: the file's size in bytes, where known (a download of another size is refused).
        lm: the catalogue name of this codec's entropy-coding LM, fetched with it when a run
            asks for entropy coding.
        role: ``"codec"`` or ``"lm"`` (an entropy-coding LM, loaded with its codec entry).
    """

    name: str
    codec: str
    config: str
    url: str
    description: str
    licence: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    size: int | None = None
    lm: str | None = None
    role: str = "codec"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", self.name):
            raise ValueError(
                f"published weights name: expected lower-case letters, digits, '.' and '-', "
                f"got {self.name!r}"
            )
        if self.role not in ("codec", "lm"):
            raise ValueError(f"{self.name}: expected role 'codec' or 'lm', got {self.role!r}")
        if self.sha256 is not None and not SHA256_HEX.fullmatch(self.sha256):
            raise ValueError(
                f"{self.name}: expected sha256 as lower-case hex of 64 digits, got {self.sha256!r}"
            )
        if self.sha256_prefix is not None and not _HEX.fullmatch(self.sha256_prefix):
            raise ValueError(
                f"{self.name}: expected sha256_prefix as lower-case hex, got {self.sha256_prefix!r}"
            )
        if self.sha256_prefix is not None and self.sha256_prefix not in self.file_name:
            raise ValueError(
                f"{self.name}: the hash prefix {self.sha256_prefix} is not in the file name "
                f"{self.file_name!r}: it must be the one the publisher embeds there"
            )

    @property
    def file_name(self) -> str:
        """The released file's name: the URL's last path segment."""
        return urlsplit(self.url).path.rsplit("/", 1)[-1]

    @property
    def pinned_hash(self) -> str | None:
        """What the catalogue pins: the full digest, else the file name's prefix, else None."""
        return self.sha256 or self.sha256_prefix

    def hash_matches(self, digest: str) -> bool:
        """Whether a file of SHA-256 ``digest`` is this release, by what the catalogue pins
        (an entry that pins nothing matches no digest: it must be told one)."""
        if self.sha256 is not None:
            return digest == self.sha256
        return self.sha256_prefix is not None and digest.startswith(self.sha256_prefix)
