"""``bench nll``: a sample-level model's test negative log-likelihood in bits per sample, the
figure of merit of SampleRNN (Mehri et al., ICLR 2017, Tables 1-4), with a bootstrap interval
over items.

Each item is read, mixed to mono, resampled to the model's rate (16 kHz for the paper's
models) with :func:`bench.audio.resample`, quantized by the model's fixed 8-bit normalisation
and cut to a whole number of top frames. Its NLL is the teacher-forced cross-entropy of every
sample after one top frame of the zero level (where generation starts too), summed in nats and
converted to bits (x log2 e), over the item's samples: the exact forward pass over the whole
item, run in chunks with the tiers' state carried so that memory stays bounded. A conditional
model (a codec decoder) is scored on the stream its encoder codec (EnCodec or FlowMAC) sends at
``bitrate``, encoded from the item at that codec's own rate, as the codec does.

A run follows ``bench run``'s conventions: a directory holding ``config.json`` (the settings,
the model's path, hash, configuration and step, every item's input hash, the versions, the git
state and the machine) and ``results.jsonl``, one row per item appended as it is scored, with
the item's bits, samples and bits per sample. A killed run resumes where it stopped, after
checking that the settings, the model and every finished item's input are unchanged.
``summary`` gives the mean over items with its BCa bootstrap interval, overall and per tag,
and the pooled bits over all samples.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.audio import AudioError, file_sha256, load_audio
from bench.codecs.checkpoint import load_checkpoint
from bench.data import Item, load_dataset
from bench.provenance import backend_versions, device_fingerprint, git_state
from bench.registry import CODECS
from bench.report.stats import bootstrap_mean_ci
from bench.store import CONFIG_FILE, RESULTS_FILE, RunStore, writable_folder, write_atomically

# What every row of results.jsonl holds (a failed item's has a "failure" too).
ROW_FIELDS = frozenset({"item", "tags", "input_hash", "samples", "bits", "bits_per_sample"})


@dataclass(frozen=True)
class NllSettings:
    """What a ``bench nll`` run scores: ``model`` (a SampleRNN checkpoint) on the items of
    ``data``; a conditional model at ``bitrate`` kbps of its encoder codec."""

    model: str
    data: str
    bitrate: float | None = None
    limit: int | None = None
    tags: tuple[str, ...] | None = None
    exclude_tags: tuple[str, ...] | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        for name in ("tags", "exclude_tags"):
            data[name] = list(data[name]) if data[name] is not None else None
        return data


def item_nll(loaded, item: Item, bitrate: float | None) -> dict:
    """One item's row: its input hash, samples scored, total bits and bits per sample."""
    read = load_audio(item.path)
    bits, samples = loaded.bits(read.audio, read.sample_rate, bitrate)
    return {
        "item": item.id,
        "tags": sorted(item.tags),
        "input_hash": file_sha256(item.path),
        "samples": samples,
        "bits": bits,
        "bits_per_sample": bits / samples,
        "notes": list(read.notes),
    }


def load_likelihood_model(path: str | os.PathLike):
    """The model of the checkpoint at ``path``, loaded by its family's registered codec (its
    ``likelihood_model``); ``ValueError`` for a family without a likelihood."""
    family = load_checkpoint(path).codec
    known = family in CODECS.names()
    loader = getattr(CODECS.factory(family), "likelihood_model", None) if known else None
    if loader is None:
        raise ValueError(
            f"--model: {path} is a {family!r} checkpoint, which has no likelihood to score; "
            "expected a sample-level model's (`bench train samplernn`)"
        )
    return loader(path)


def _config(settings: NllSettings, loaded, items: list[Item], hashes: dict[str, str]) -> dict:
    return {
        "kind": "nll",
        "created": datetime.now(UTC).isoformat(),
        "settings": settings.to_json(),
        "model": {
            "path": str(Path(settings.model).resolve()),
            "hash": loaded.hash,
            "config": loaded.model.config.to_json(),
            "step": loaded.step,
            "tokenizer_hash": loaded.tokenizer_hash,
        },
        "dataset": {
            "spec": settings.data,
            "items": [
                {"id": item.id, "path": str(item.path), "input_hash": hashes[item.id]}
                for item in items
            ],
        },
        "versions": backend_versions(),
        "git": git_state(),
        "device": device_fingerprint(),
    }


def _finished_rows(run_dir: Path, config: dict) -> list[dict]:
    """The rows of an earlier run in ``run_dir`` of the same settings and model, checked."""
    saved = _read_json(run_dir / CONFIG_FILE)
    if not isinstance(saved, dict) or saved.get("kind") != "nll":
        raise ValueError(f"{run_dir} holds something else than a bench nll run; pass another --out")
    config = json.loads(json.dumps(config))  # as it reads back (tuples are lists there)
    for key in ("settings", "model", "dataset"):
        if saved.get(key) != config[key]:
            raise ValueError(
                f"{run_dir} holds an NLL run of other {key} than this one; pass another --out"
            )
    rows, results = [], run_dir / RESULTS_FILE
    if results.exists():
        data = results.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]  # a torn last line (a kill) is rescored
        results.write_bytes(complete)
        hashes = {item["id"]: item["input_hash"] for item in config["dataset"]["items"]}
        for number, line in enumerate(complete.splitlines(), start=1):
            row = _read_json(results, line, number)
            if (
                not isinstance(row, dict)
                or row.keys() < ROW_FIELDS
                or row["item"] not in hashes
                or row["input_hash"] != hashes[row["item"]]
            ):
                raise ValueError(
                    f"{results}: line {number}: expected a row of one of this run's items with "
                    f"the fields {sorted(ROW_FIELDS)}, got {row!r:.200}"
                )
            rows.append(row)
    return rows


def _read_json(path: Path, line: bytes | None = None, number: int = 0) -> object:
    """A JSON document: the file at ``path``, or its line ``number``; ``ValueError`` naming
    where for anything else (damage, or another program's file)."""
    where = f"{path}: line {number}" if line is not None else str(path)
    try:
        return json.loads(line if line is not None else path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{where}: expected JSON written by bench nll, got {error}") from None


def run_nll(settings: NllSettings, run_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Score every item of ``settings.data`` into ``run_dir`` (resuming a run there) and
    return :func:`summary` of the rows."""
    from tqdm import tqdm

    loaded = load_likelihood_model(settings.model)
    bitrate = loaded.check_bitrate(settings.bitrate)
    dataset = load_dataset(
        settings.data,
        limit=settings.limit,
        tags=settings.tags,
        exclude_tags=settings.exclude_tags,
    )
    items = list(dataset.items)
    hashes = {item.id: file_sha256(item.path) for item in items}
    config = _config(settings, loaded, items, hashes)
    store = RunStore(writable_folder(run_dir, "--out"))
    with store.locked():  # a second bench nll on this folder is refused, naming the holder
        rows = []
        if store.config_path.exists():
            rows = _finished_rows(store.run_dir, config)
        else:
            write_atomically(store.config_path, json.dumps(config, indent=2).encode() + b"\n")
        done = {row["item"] for row in rows}
        todo = [item for item in items if item.id not in done]
        with open(store.results_path, "a", encoding="utf-8") as results:
            for item in tqdm(todo, desc="NLL", unit="item", disable=not progress):
                try:
                    row = item_nll(loaded, item, bitrate)
                except AudioError as error:  # this item cannot be scored; the others can
                    row = {"item": item.id, "tags": sorted(item.tags)}
                    row.update(input_hash=hashes[item.id], samples=0, bits=None)
                    row.update(bits_per_sample=None, failure=str(error))
                results.write(json.dumps(row, allow_nan=False) + "\n")
                results.flush()
                os.fsync(results.fileno())
                rows.append(row)
    return summary(rows)


def summary(rows: list[dict]) -> dict:
    """Mean bits per sample over the scored items with its 95% BCa bootstrap interval, and the
    bits pooled over all their samples: for every item (with the count that failed), then per
    tag."""

    def of(group: list[dict]) -> dict:
        values = np.array([row["bits_per_sample"] for row in group])
        low, high = bootstrap_mean_ci(values)
        pooled = sum(row["bits"] for row in group) / sum(row["samples"] for row in group)
        return {
            "items": len(group),
            "bits_per_sample": float(values.mean()),
            "ci_low": low,
            "ci_high": high,
            "pooled_bits_per_sample": pooled,
        }

    scored = [row for row in rows if row["bits_per_sample"] is not None]
    if not scored:
        raise ValueError(f"no item could be scored; the first failure: {rows[0]['failure']}")
    tags = sorted({tag for row in scored for tag in row["tags"]})
    return {
        "all": {**of(scored), "failed": len(rows) - len(scored)},
        **{f"tag:{tag}": of([row for row in scored if tag in row["tags"]]) for tag in tags},
    }


def format_summary(result: dict) -> str:
    """The summary as a table: one line per group."""
    lines = [f"{'group':<16} {'items':>5}  bits/sample [95% CI]        pooled"]
    for group, values in result.items():
        interval = (
            f"[{values['ci_low']:.3f}, {values['ci_high']:.3f}]"
            if math.isfinite(values["ci_low"])
            else "[n/a: one item]"
        )
        lines.append(
            f"{group:<16} {values['items']:>5}  {values['bits_per_sample']:.3f} {interval:<18}"
            f" {values['pooled_bits_per_sample']:.3f}"
        )
    return "\n".join(lines)
