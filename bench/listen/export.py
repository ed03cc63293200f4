"""`bench listen export`: a MUSHRA listening-test package (ITU-R BS.1534-3) from a benchmark run.

For each selected item a trial holds the reference, a hidden reference, the 3.5 kHz and 7 kHz
low-pass anchors and every codec condition of the run. Decoded audio is made again by running
the run's codecs with its settings and seeds (the run keeps audio of a few items only), then
brought to one rate, aligned to the reference (codec delay removed by cross-correlation), cut
to the same excerpt of at most ``max_seconds`` with short fades, and normalised to one
integrated loudness (BS.1770). The package holds the stimuli as WAV, a webMUSHRA configuration,
an offline rating page, a manifest of every file and a README for the test administrator,
and is zipped beside its folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import soundfile
import torch
import yaml
from jinja2 import Environment, PackageLoader, StrictUndefined

from bench import audio as bench_audio
from bench.codecs.base import Codec
from bench.listen.settings import ExportSettings
from bench.listen.stimuli import (
    align_to_reference,
    anchors,
    cut_excerpt,
    excerpt_bounds,
    listening_channels,
    listening_rate,
    normalise_loudness,
    select_items,
    unplayable_reason,
)
from bench.provenance import backend_versions, git_state
from bench.registry import create_codec
from bench.report.stats import results_frame
from bench.store import RunStore, item_file_stem, write_atomically

# The run's reference and anchors are part of every trial already; as codec conditions of the
# run (the MUSHRA baselines of `bench run`, whatever their labels) they would appear twice.
MUSHRA_BASELINES = frozenset({"identity", "lowpass3k5", "lowpass7k"})
# Conditions as webMUSHRA and the analysis name them: the hidden reference is "reference".
HIDDEN_REFERENCE = "reference"
# Metrics that spread items from easy to hard, in order of preference.
SELECTION_METRICS = ("mel_distance", "pesq_wb", "visqol_audio", "si_sdr")
CONTENT_TAGS = ("speech", "music", "audio")
# The webMUSHRA page that trains listeners; its ratings are not analysed.
TRAINING_PAGE = "training"
WAV_SUBTYPE = "PCM_24"


@dataclass
class Condition:
    """One codec condition of the run (its label and the codec that label runs), under the
    name the listening test uses."""

    label: str
    codec: str
    bitrate: float
    nfe: int | None
    seed: int

    @property
    def name(self) -> str:
        nfe = f"_nfe{self.nfe}" if self.nfe is not None else ""
        return f"{self.label}_{self.bitrate:g}kbps{nfe}"


def run_conditions(frame: pd.DataFrame) -> list[Condition]:
    """The run's codec conditions in run order, without the MUSHRA baselines; first seed."""
    conditions = []
    seed = int(frame["seed"].min())
    columns = ["label", "codec", "bitrate", "nfe"]
    keys = frame[columns].drop_duplicates()
    order = {label: index for index, label in enumerate(frame.attrs.get("codecs", []))}
    keys = keys.assign(order=keys["label"].map(order)).sort_values(["order", "bitrate", "nfe"])
    for label, codec, bitrate, nfe in keys[columns].itertuples(index=False):
        if codec in MUSHRA_BASELINES:
            continue
        nfe = None if pd.isna(nfe) else int(nfe)
        conditions.append(Condition(label, codec, float(bitrate), nfe, seed))
    return conditions


def _choose_conditions(
    available: list[Condition], wanted: tuple[str, ...] | None
) -> list[Condition]:
    if wanted is None:
        chosen = available
    else:
        labels = {condition.name: condition for condition in available}
        unknown = [label for label in wanted if label not in labels]
        if unknown:
            raise ValueError(
                f"--conditions: expected labels among {', '.join(labels)}, got {', '.join(unknown)}"
            )
        chosen = [labels[label] for label in wanted]
    if not chosen:
        raise ValueError("the run has no codec conditions besides the MUSHRA baselines to test")
    return chosen


def _item_scores(frame: pd.DataFrame, items: dict, metric: str | None) -> tuple[pd.DataFrame, str]:
    """Per item: its content tag and the selection metric averaged over the run's conditions."""
    scored = frame[~frame["codec"].isin(MUSHRA_BASELINES)]
    available = [name for name in SELECTION_METRICS if name in set(scored["metric"])]
    if metric is None:
        if not available:
            raise ValueError(
                f"the run scored none of {', '.join(SELECTION_METRICS)}; pass --metric to "
                "choose the metric that spreads the items"
            )
        metric = available[0]
    elif metric not in set(scored["metric"]):
        scored_metrics = ", ".join(sorted(set(scored["metric"])))
        raise ValueError(
            f"--metric: expected a metric the run scored ({scored_metrics}), got {metric!r}"
        )
    means = scored[scored["metric"] == metric].groupby("item")["value"].mean()
    rows = []
    for item_id, value in means.items():
        tags = items[item_id]["tags"]
        tag = next((name for name in CONTENT_TAGS if name in tags), "other")
        rows.append({"item": item_id, "tag": tag, "value": float(value)})
    return pd.DataFrame(rows).dropna(subset=["value"]), metric


def _unplayable_items(
    item_ids: list[str], items: dict, run_max_seconds: float | None, max_seconds: float
) -> dict[str, str]:
    """Items that cannot make a MUSHRA trial, with the reason; read from the file headers.

    The excerpt is at most the run's crop and the export's ``max_seconds`` long.
    """
    reasons = {}
    for item_id in item_ids:
        path = items[item_id]["path"]
        try:
            info = soundfile.info(path)
        except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
            reasons[item_id] = f"cannot read {path}: {error}"
            continue
        seconds = min(info.frames / info.samplerate, run_max_seconds or math.inf, max_seconds)
        reason = unplayable_reason(info.samplerate, seconds)
        if reason is not None:
            reasons[item_id] = reason
    return reasons


def _check_unchanged(item: dict) -> None:
    """Refuse an item whose file differs from the audio the run scored (its SHA-256)."""
    path = Path(item["path"])
    expected = item.get("input_hash")
    if expected is not None and bench_audio.file_sha256(path) != expected:
        raise ValueError(
            f"{path}: the file changed since the run scored it (SHA-256 differs); a listening "
            "test must play the audio the run measured"
        )


def _decode(
    codec: Codec, condition: Condition, loaded: bench_audio.LoadedAudio, max_seconds: float | None
) -> tuple[torch.Tensor, int, float]:
    """The condition's decoded audio of an item, its rate and the real bitrate."""
    reference, _ = bench_audio.prepare(loaded, codec.sample_rate, codec.channels, max_seconds)
    encoded = codec.encode(reference, condition.bitrate)
    decoded = codec.decode(encoded, condition.nfe, condition.seed)
    return decoded, codec.sample_rate, encoded.actual_kbps


@dataclass
class Trial:
    """One item's stimuli as written: file per condition, and the manifest rows."""

    item: str
    files: dict[str, str]
    rows: list[dict]
    lowered_by_db: float
    # How the item's reference was changed to play it (downmix, resampling, crop, clipping).
    notes: tuple[str, ...]


def _build_trial(
    item: dict,
    conditions: list[Condition],
    codecs: dict[str, Codec],
    run_max_seconds: float | None,
    settings: ExportSettings,
    out: Path,
) -> Trial:
    """Decode, align, cut, level and write every stimulus of one item's trial."""
    _check_unchanged(item)  # only the items exported are read, so only they are hashed
    loaded = bench_audio.load_audio(item["path"], run_max_seconds)
    rate = listening_rate(loaded.sample_rate)
    channels = listening_channels(loaded.audio.shape[0])
    reference, notes = bench_audio.prepare(loaded, rate, channels, run_max_seconds)
    signals = {HIDDEN_REFERENCE: reference, **anchors(reference, rate)}
    facts = {name: {"codec": name, "shift_samples": 0} for name in signals}
    for condition in conditions:
        decoded, codec_rate, kbps = _decode(
            codecs[condition.label], condition, loaded, run_max_seconds
        )
        decoded, _ = bench_audio.convert_channels(decoded, reference.shape[0])
        aligned, shift = align_to_reference(
            reference, bench_audio.resample(decoded, codec_rate, rate), rate
        )
        signals[condition.name] = aligned
        facts[condition.name] = {
            "codec": condition.codec,
            "bitrate": condition.bitrate,
            "nfe": condition.nfe,
            "seed": condition.seed,
            "kbps_actual": kbps,
            "shift_samples": shift,
        }
    start, stop = excerpt_bounds(reference, rate, settings.max_seconds)
    excerpts = {name: cut_excerpt(signal, start, stop, rate) for name, signal in signals.items()}
    loudness = normalise_loudness(excerpts, rate, settings.target_lufs)
    files, rows = {}, []
    for name, signal in loudness.stimuli.items():
        relative = f"stimuli/{item_file_stem(item['id'])}/{name}.wav"
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(out / relative, signal.numpy().T, rate, WAV_SUBTYPE)
        files[name] = relative
        rows.append(
            {
                "file": relative,
                "item": item["id"],
                "condition": name,
                "codec": facts[name]["codec"],
                "bitrate": facts[name].get("bitrate"),
                "nfe": facts[name].get("nfe"),
                "seed": facts[name].get("seed"),
                "kbps_actual": facts[name].get("kbps_actual"),
                "gain_db": loudness.gains_db[name],
                "loudness_before_lufs": loudness.measured_lufs[name],
                "shift_samples": facts[name]["shift_samples"],
                "excerpt_start_s": start / rate,
                "excerpt_stop_s": stop / rate,
                "sample_rate": rate,
                "item_notes": "; ".join(notes),
            }
        )
    return Trial(item["id"], files, rows, loudness.lowered_by_db, notes)


def _check_new_package(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} already holds files; pass a new folder")


def export_package(run_dir: str | Path, out: str | Path, settings: ExportSettings) -> Path:
    """Build the package folder ``out`` and ``out.zip``; returns the zip's path.

    Both are built under a temporary name beside ``out`` and renamed into place at the
    end, so a failed export leaves no package behind and can simply be run again.
    """
    run_dir, out = Path(run_dir), Path(out)
    _check_new_package(out)
    try:
        config = RunStore(run_dir).read_config()
    except FileNotFoundError as error:  # a usage error: the folder named is not a run
        raise ValueError(str(error)) from error
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as error:
        raise ValueError(f"--out {out}: cannot create the package there: {error}") from error
    try:
        # The package is built under its own name, which webmushra.yaml and the zip hold.
        _build_package(run_dir, config, building / out.name, settings)
        archive = shutil.make_archive(
            str(building / out.name), "zip", root_dir=building, base_dir=out.name
        )
        _check_new_package(out)
        try:
            # The folder first: renaming onto a folder another export just filled fails
            # here, before this export replaces that one's zip.
            os.rename(building / out.name, out)
        except OSError as error:
            raise ValueError(f"--out {out}: cannot move the package into place: {error}") from error
        os.replace(archive, f"{out}.zip")
        return Path(f"{out}.zip")
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _build_package(run_dir: Path, config: dict, out: Path, settings: ExportSettings) -> None:
    """Write every file of the package to the new folder ``out``."""
    frame = results_frame(run_dir)
    if frame.empty:
        raise ValueError(f"{run_dir}: the run has no results to build a listening test from")
    conditions = _choose_conditions(run_conditions(frame), settings.conditions)
    items = {item["id"]: item for item in config["dataset"]["items"]}
    scores, metric = _item_scores(frame, items, settings.selection_metric)
    run_settings = config["settings"]
    skipped = _unplayable_items(
        list(scores["item"]), items, run_settings.get("max_seconds"), settings.max_seconds
    )
    if skipped and len(skipped) == len(scores):
        raise ValueError(
            "no scored item of the run can be played in a listening test: "
            + "; ".join(f"{item_id}: {reason}" for item_id, reason in skipped.items())
        )
    chosen, selection_note = select_items(scores[~scores["item"].isin(skipped)], settings.items)
    codec_options = run_settings.get("codec_options", {})
    codecs: dict[str, Codec] = {}  # by label: one codec object per label, at every bitrate
    for condition in conditions:
        if condition.label not in codecs:
            options = codec_options.get(condition.label, {})
            codecs[condition.label] = create_codec(condition.codec, **options)
    out.mkdir()
    trials = []
    for item_id in chosen:
        item = items[item_id]
        try:
            trials.append(
                _build_trial(
                    item, conditions, codecs, run_settings.get("max_seconds"), settings, out
                )
            )
        except ValueError as error:
            raise ValueError(f"item {item_id!r} ({item['path']}): {error}") from error
        except Exception as error:
            error.add_note(f"while exporting item {item_id!r} ({item['path']})")
            raise
    test_id = settings.test_id or f"codec_bench_{config['run_id']}"
    _write_manifest(out, [row for trial in trials for row in trial.rows])
    _write_webmushra_config(out, test_id, trials)
    _write_offline_page(out, test_id, trials)
    description = {
        "test_id": test_id,
        "run_dir": str(run_dir.resolve()),
        "run_id": config["run_id"],
        # The run's git state and the codecs' checkpoints and hashes made the stimuli; the
        # exporting code's versions and git state processed them.
        "run_git": config.get("git"),
        "codecs": {name: config.get("codecs", {}).get(name) for name in sorted(codecs)},
        "exported_with": {"versions": backend_versions(), "git": git_state()},
        "settings": asdict(settings),
        "selection_metric": metric,
        "selection": selection_note,
        "items": chosen,
        "skipped_items": skipped,
        "item_notes": {trial.item: list(trial.notes) for trial in trials if trial.notes},
        "conditions": [condition.name for condition in conditions],
        "target_lufs": settings.target_lufs,
    }
    write_atomically(out / "package.json", json.dumps(description, indent=2).encode())
    _write_readme(out, description, trials)


def _write_manifest(out: Path, manifest: list[dict]) -> None:
    frame = pd.DataFrame(manifest)
    frame.to_csv(out / "manifest.csv", index=False)
    write_atomically(out / "manifest.json", json.dumps(manifest, indent=2).encode())


def _write_webmushra_config(out: Path, test_id: str, trials: list[Trial]) -> None:
    """webMUSHRA pages: a training page, then the trials in random order, then the finish.

    Paths are relative to webMUSHRA's root, with the package copied to ``configs/<name>/``;
    webMUSHRA adds the hidden reference itself and shuffles each page's conditions
    (``randomize``). The anchors come from the package (BS.1534-3 filters), not from
    webMUSHRA's in-browser ones, which break at some sample rates (webMUSHRA#97).
    """
    root = f"configs/{out.name}"

    def page(trial: Trial, page_id: str, title: str, content: str) -> dict:
        stimuli = {
            condition: f"{root}/{path}"
            for condition, path in trial.files.items()
            if condition != HIDDEN_REFERENCE
        }
        return {
            "type": "mushra",
            "id": page_id,
            "name": title,
            "content": content,
            "showWaveform": True,
            "enableLooping": True,
            "randomize": True,
            "reference": f"{root}/{trial.files[HIDDEN_REFERENCE]}",
            "createAnchor35": False,
            "createAnchor70": False,
            "stimuli": stimuli,
        }

    training = page(
        trials[0],
        TRAINING_PAGE,
        "Training",
        "Training: listen to the reference and every condition, and learn the scale. "
        "Rate the basic audio quality of each condition against the reference (0-100). "
        "This page is not analysed.",
    )
    instruction = (
        "Rate the basic audio quality of each condition against the reference (0-100); "
        "one of them is the hidden reference."
    )
    trial_pages = [
        page(trial, trial.item, f"Trial {index + 1}", instruction)
        for index, trial in enumerate(trials)
    ]
    finish = {
        "type": "finish",
        "name": "Thank you",
        "content": "Thank you for taking part.",
        "showResults": False,
        "writeResults": True,
    }
    # A list that starts with "random" is webMUSHRA's group of pages in random order.
    pages = [training, ["random", *trial_pages], finish]
    document = {
        "testname": f"MUSHRA: {test_id}",
        "testId": test_id,
        "bufferSize": 2048,
        "stopOnErrors": True,
        "showButtonPreviousPage": True,
        "remoteService": "service/write.php",
        "pages": pages,
    }
    write_atomically(out / "webmushra.yaml", yaml.safe_dump(document, sort_keys=False).encode())


def _write_offline_page(out: Path, test_id: str, trials: list[Trial]) -> None:
    """A self-contained rating page (no server): ratings download as the plain CSV that
    `bench listen analyze` reads. Conditions are shuffled per trial in the browser."""
    environment = Environment(
        loader=PackageLoader("bench.listen", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
    )
    page = environment.get_template("mushra.html.j2").render(
        test_id=test_id,
        trials=[{"item": trial.item, "files": trial.files} for trial in trials],
        hidden_reference=HIDDEN_REFERENCE,
    )
    write_atomically(out / "index.html", page.encode())


def _write_readme(out: Path, description: dict, trials: list[Trial]) -> None:
    lowered = [trial for trial in trials if trial.lowered_by_db > 0]
    loudness = f"{description['target_lufs']:g} LUFS integrated (BS.1770, pyloudnorm)"
    if lowered:
        loudness += (
            "; lowered for "
            + ", ".join(f"{trial.item} by {trial.lowered_by_db:.1f} dB" for trial in lowered)
            + " so that no stimulus clips (every stimulus of a trial keeps the same loudness)"
        )
    item_lines = [
        f"- `{item}`: {'; '.join(notes)}." for item, notes in description["item_notes"].items()
    ]
    item_lines += [
        f"- Left out `{item}`: {reason}." for item, reason in description["skipped_items"].items()
    ]
    item_notes = "\n".join(item_lines)
    text = f"""# MUSHRA listening test `{description["test_id"]}`

Built by `bench listen export` from run `{description["run_id"]}` ({description["run_dir"]}).
ITU-R BS.1534-3 (MUSHRA): each trial holds the reference, a hidden reference, the 3.5 kHz and
7 kHz low-pass anchors and the codec conditions {", ".join(description["conditions"])}.

## Items

{len(description["items"])} items: {", ".join(description["items"])}.
{description["selection"]}
{item_notes}

## Processing (see manifest.csv for every file)

- One sample rate per item (48 kHz, or the reference's if lower); codec delay removed by
  cross-correlation against the reference (`shift_samples`), lengths equal to the reference.
- Excerpts of at most {description["settings"]["max_seconds"]:g} s, cut at the same points for
  every condition, with 20 ms fades.
- Loudness: {loudness}; the gains are `gain_db`.

## Running the test

- **webMUSHRA** (PHP server): copy this folder to `webMUSHRA/configs/{out.name}/` and open
  `index.html?config={out.name}/webmushra.yaml` on the server. Results are written to
  `webMUSHRA/results/{description["test_id"]}/mushra.csv`.
- **Offline**: open `index.html` in this folder in a browser (served over http, e.g.
  `python3 -m http.server` here, or from disk). Each listener enters a name, rates every
  trial and downloads `ratings_<name>.csv`; concatenate the files (one header).

Use good headphones in a quiet room; listeners should be trained on the first page.

## Analysis

`bench listen analyze RESULTS.csv --package {out.name}` post-screens listeners (BS.1534-3:
hidden reference below 90 in more than 15 % of trials, or the mid anchor above 90 in more than
15 %), reports each condition's mean with a 95 % t interval, paired tests between conditions
and the correlation of MUSHRA means with the run's objective metrics.
"""
    write_atomically(out / "README.md", text.encode())


# The run's MUSHRA baselines are the package's hidden reference and anchors.
BASELINE_CONDITIONS = {
    "identity": HIDDEN_REFERENCE,
    "lowpass3k5": "anchor35",
    "lowpass7k": "anchor70",
}


def _read_package(package: Path, name: str) -> dict | list:
    path = package / name
    if not path.is_file():
        raise ValueError(f"--package: expected an exported package with {path}")
    return json.loads(path.read_text())


def package_trials(package: str | Path) -> dict[str, set[str]]:
    """The package's trials (item ids, as webMUSHRA names its pages) and their conditions."""
    trials: dict[str, set[str]] = {}
    for row in _read_package(Path(package), "manifest.json"):
        trials.setdefault(row["item"], set()).add(row["condition"])
    return trials


def package_objective_means(package: str | Path) -> pd.DataFrame | None:
    """The run's objective metric means per condition of ``package``, over its items only.

    Indexed by the package's condition labels, one column per metric; the run's identity and
    low-pass conditions, if it had them, stand for the hidden reference and the anchors.
    ``None`` when the run directory the package was built from is no longer there.
    """
    description = _read_package(Path(package), "package.json")
    run_dir = Path(description["run_dir"])
    if not (run_dir / "config.json").is_file():
        return None
    frame = results_frame(run_dir)
    frame = frame[frame["item"].isin(description["items"])]
    names = []
    columns = ["label", "codec", "bitrate", "nfe"]
    for label, codec, bitrate, nfe in frame[columns].itertuples(index=False):
        nfe = None if pd.isna(nfe) else int(nfe)
        condition = Condition(label, codec, bitrate, nfe, 0)
        names.append(BASELINE_CONDITIONS.get(codec) or condition.name)
    frame = frame.assign(condition=names)
    wanted = set(description["conditions"]) | set(BASELINE_CONDITIONS.values())
    frame = frame[frame["condition"].isin(wanted)]
    return frame.pivot_table(index="condition", columns="metric", values="value", aggfunc="mean")
