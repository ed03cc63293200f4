"""``bench weights``: the papers' released weights (:mod:`bench.weights`), listed and fetched."""

from __future__ import annotations

import argparse

from bench.cli.common import EXIT_OK, add_subcommand

HELP = "list and fetch the papers' released weights (--checkpoint official:NAME)"


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    weights = add_subcommand(subcommands, "weights", lambda _: EXIT_OK, HELP)
    actions = weights.add_subparsers(dest="action", required=True)
    listing = add_subcommand(
        actions, "list", list_command, "the catalogue, and what is downloaded (verified)"
    )
    listing.add_argument("--urls", action="store_true", help="show each release's URL and licence")
    fetch = add_subcommand(
        actions, "fetch", fetch_command, "download and verify released weights into the cache"
    )
    fetch.add_argument("names", nargs="+", metavar="NAME", help="catalogue name(s)")
    fetch.add_argument(
        "--mirror",
        metavar="URL",
        help="fetch from this base URL (the file name is appended) instead of the publisher "
        "(default: $BENCH_WEIGHTS_MIRROR)",
    )
    fetch.add_argument(
        "--sha256",
        metavar="HEX",
        help="the file's full SHA-256, for a release whose publisher gives none",
    )
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")


def list_command(arguments: argparse.Namespace) -> int:
    from bench.weights import catalogue, check_cached, weights_dir

    print(f"{'name':<36} {'codec':<10} {'config':<18} {'hash':<10} downloaded")
    for entry in catalogue().values():
        local = check_cached(entry)
        if local is None:
            state = "no"
        elif isinstance(local, str):
            state = f"DAMAGED: {local}; `bench weights fetch {entry.name}` fetches it again"
        else:
            size = local.path.stat().st_size / 1e6
            state = f"yes, {size:.1f} MB, SHA-256 {local.sha256[:12]} ({local.checked_against})"
        config = entry.config + (" (LM)" if entry.role == "lm" else "")
        print(f"{entry.name:<36} {entry.codec:<10} {config:<18} {_pin(entry):<10} {state}")
        if arguments.urls:
            print(f"    {entry.url}\n    licence: {entry.licence}")
    print(
        f"\nfolder: {weights_dir()}. hash: what a download is checked against (the catalogue's "
        "SHA-256, the prefix in the publisher's file name, or the SHA-256 the server states). "
        "Run one with `bench run --codec CODEC --checkpoint official:NAME`."
    )
    return EXIT_OK


def fetch_command(arguments: argparse.Namespace) -> int:
    from bench.weights import fetch, lookup

    entries = [lookup(name) for name in arguments.names]
    if arguments.sha256 and len(entries) > 1:
        raise ValueError(f"--sha256: expected one NAME with it, got {len(entries)}")
    for entry in entries:
        local = fetch(
            entry, mirror=arguments.mirror, sha256=arguments.sha256, progress=not arguments.quiet
        )
        print(
            f"{entry.name}: {local.path}\n    SHA-256 {local.sha256} (checked against the "
            f"{local.checked_against}); licence: {entry.licence}"
        )
    return EXIT_OK


def _pin(entry) -> str:  # noqa: ANN001 - a PublishedWeights, imported lazily
    """What a download of ``entry`` is checked against, in a word."""
    if entry.sha256:
        return "sha256"
    return entry.sha256_prefix or "server"
