"""Datasets: the embedded default corpus, folders, LibriSpeech and manifests.

A dataset is named by a spec string, ``SCHEME`` or ``SCHEME:ARGUMENT``:

- ``embedded``: the small default corpus shipped inside the package (see
  ``bench/data/embedded/PROVENANCE.md``);
- ``folder:PATH``: every audio file under a folder (:mod:`bench.data.folder`);
- ``librispeech:PATH``: a LibriSpeech split or a folder of splits
  (:mod:`bench.data.librispeech`);
- ``manifest:FILE``: a CSV or JSONL list of files (:mod:`bench.data.manifest`).

Each scheme is registered in :data:`bench.registry.DATASETS` (a :class:`DatasetScheme`);
third-party packages add schemes through the ``bench.datasets`` entry-point group.
Loaders only list items; audio is read later by :mod:`bench.audio`, so a listed file that
turns out to be missing or unreadable is scored as NaN with a reason rather than dropped.
Files a folder listing cannot use at all (a FIFO, a device, a symbolic link loop) are
skipped, and the dataset's ``skipped`` notes name each one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.data.item import DatasetError, DatasetScheme, Item, Listing
from bench.registry import DATASETS, did_you_mean

__all__ = ["Dataset", "DatasetError", "DatasetScheme", "Item", "load_dataset"]


@dataclass(frozen=True)
class Dataset:
    """The items named by ``spec``, filtered and limited, in a deterministic order."""

    spec: str
    items: tuple[Item, ...]
    # One note per file of the source that is not an item, saying why.
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)


def load_dataset(
    spec: str,
    *,
    limit: int | None = None,
    tags: Iterable[str] | None = None,
    exclude_tags: Iterable[str] | None = None,
    item_ids: Iterable[str] | None = None,
) -> Dataset:
    """Load the dataset named by ``spec`` and filter it.

    ``item_ids`` keeps only the named items (a fixed slice, as a suite needs), in the
    dataset's order; an id the dataset lacks is an error, not a silently smaller run.
    ``tags`` keeps the items that carry any of the given tags, ``exclude_tags`` then drops
    the items that carry any of those, and ``limit`` keeps the first ``limit`` items left.
    Raises :class:`DatasetError` for an unknown spec, a missing path, a source without
    items, or filters that leave nothing.
    """
    wanted_tags = _name_set(tags, "tags")
    unwanted_tags = _name_set(exclude_tags, "exclude_tags")
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be at least 1 (or None for every item), got {limit}")

    listing = _load_items(spec)
    items = listing.items
    _check_unique_ids(spec, items)
    if item_ids is not None:
        items = _select_items(spec, items, _name_set(item_ids, "item_ids"))
    kept = tuple(
        item
        for item in items
        if (wanted_tags is None or item.tags & wanted_tags)
        and not (unwanted_tags and item.tags & unwanted_tags)
    )
    if not kept:
        present = sorted(set().union(*(item.tags for item in items)))
        raise DatasetError(
            f"no item of {spec!r} is left after filtering with "
            f"tags={sorted(wanted_tags) if wanted_tags is not None else None} and "
            f"exclude_tags={sorted(unwanted_tags) if unwanted_tags is not None else None}; "
            f"the {len(items)} items carry the tags: {', '.join(present) or '(none)'}"
        )
    return Dataset(spec=spec, items=kept[:limit], skipped=listing.skipped)


def _select_items(spec: str, items: tuple[Item, ...], wanted: frozenset[str]) -> tuple[Item, ...]:
    known = [item.id for item in items]
    missing = sorted(wanted - set(known))
    if missing:
        raise DatasetError(f"{did_you_mean('item', missing[0], known)} (dataset {spec!r})")
    return tuple(item for item in items if item.id in wanted)


def _name_set(tags: Iterable[str] | None, argument: str) -> frozenset[str] | None:
    # A bare string is an iterable of characters, which would silently filter on "s", "p"...
    if isinstance(tags, str):
        raise TypeError(
            f"{argument} must be a collection of names such as [{tags!r}], got the string {tags!r}"
        )
    return None if tags is None else frozenset(tags)


def dataset_scheme(name: str) -> DatasetScheme:
    """The scheme registered as ``name``, checking it is a :class:`DatasetScheme`."""
    scheme = DATASETS.factory(name)
    if not isinstance(scheme, DatasetScheme):
        raise TypeError(
            f"dataset scheme {name!r} from {DATASETS.source(name)} is a "
            f"{type(scheme).__name__}; expected a bench.data.DatasetScheme"
        )
    return scheme


def _load_items(spec: str) -> Listing:
    scheme_name, _, argument = spec.partition(":")
    if scheme_name not in DATASETS.names():
        examples = ", ".join(dataset_scheme(name).example for name in DATASETS.names())
        raise DatasetError(
            f"{did_you_mean('dataset scheme', scheme_name, DATASETS.names())}; "
            f"expected a spec such as {examples} (got {spec!r})"
        )
    scheme = dataset_scheme(scheme_name)
    if not scheme.takes_path:
        if argument:
            raise DatasetError(
                f"dataset {scheme_name!r} takes no argument; expected {scheme.example!r}, "
                f"got {spec!r}"
            )
        listing = scheme.load()
    else:
        if not argument:
            raise DatasetError(
                f"dataset {scheme_name!r} needs a path; expected e.g. {scheme.example!r}, "
                f"got {spec!r}"
            )
        listing = scheme.load(Path(argument).expanduser())
    if not listing.items:
        raise DatasetError(f"dataset {spec!r} lists no items")
    return listing


def _check_unique_ids(spec: str, items: tuple[Item, ...]) -> None:
    """Ids key results and resumption, so two items with one id would overwrite each other."""
    duplicates = {
        item_id: [str(item.path) for item in items if item.id == item_id]
        for item_id, count in Counter(item.id for item in items).items()
        if count > 1
    }
    if duplicates:
        listed = "; ".join(
            f"{item_id!r}: {', '.join(paths)}" for item_id, paths in duplicates.items()
        )
        raise DatasetError(f"dataset {spec!r} has duplicate item ids, expected unique: {listed}")
