"""The unit of evaluation: one audio file with its optional transcript, speaker and tags;
and what a dataset scheme registers to list such items."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Item:
    """One evaluation item. Audio is loaded lazily by ``bench.audio`` from ``path``.

    ``id`` is unique within a dataset and stable across runs (it keys resume and reports).
    ``tags`` hold content classes such as ``speech``, ``music`` and ``noisy``.
    """

    id: str
    path: Path
    transcript: str | None = None
    speaker: str | None = None
    tags: frozenset[str] = field(default_factory=frozenset)


class DatasetError(ValueError):
    """A dataset spec, folder or manifest that cannot be used, with what was expected."""


@dataclass(frozen=True)
class Listing:
    """What a dataset source lists: its items, and a note for each file it skipped."""

    items: tuple[Item, ...]
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetScheme:
    """How a dataset spec ``SCHEME`` or ``SCHEME:PATH`` is listed, as registered in
    :data:`bench.registry.DATASETS` (third-party packages: the ``bench.datasets``
    entry-point group).

    ``load()``, or ``load(path)`` when ``takes_path``, lists the items; ``example`` is a
    spec of this scheme, shown when a spec is wrong.
    """

    load: Callable[..., Listing]
    takes_path: bool
    example: str


def listening_selection(items: Iterable[Item], count: int) -> list[Item]:
    """The items kept for listening: one of each kind of content first, then in order.

    A speech-and-music corpus thus gets a music example even when speech comes first.
    """
    items = list(items)
    chosen: dict[str, Item] = {}
    kinds: set[frozenset[str]] = set()
    for item in items:
        if len(chosen) < count and item.tags not in kinds:
            kinds.add(item.tags)
            chosen[item.id] = item
    for item in items:
        if len(chosen) < count:
            chosen.setdefault(item.id, item)
    return [item for item in items if item.id in chosen]
