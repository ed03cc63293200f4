"""Ship a SoundStorm run as the package's demo checkpoint, with its card.

    python scripts/build_soundstorm_demo.py --run /work/soundstorm_training/run \\
        --scores /tmp/soundstorm_scores

1. Bundles the run's model (its ``model.pt``, else its resumable ``last.pt``) with a reference
   to the shipped EnCodec demo, whose tokens it learnt (checked by hash), stored in float16
   with the large weight matrices in int8 (one scale per output channel) as
   ``codecs/soundstorm/checkpoints/soundstorm_tiny_demo.pt`` (``--target``; the codec loads
   it into float32). The reference is relative, so it resolves from the shipped location to
   ``codecs/encodec/checkpoints/encodec_tiny_demo.pt``.
2. Scores it on the held-out real speech of the embedded corpus (LibriVox and CMU cards
   utterances, never trained on) with ``bench run``'s own sweep: SoundStorm at 1.5 and 3 kbps
   over NFE (the first generated level's iterations) 1 to 16, and the EnCodec demo at 1.5,
   3 and 6 kbps (the bits SoundStorm receives, and the levels it fills in). Counts, per
   level, the share of generated tokens equal to EnCodec's own 6 kbps tokens.
3. Writes ``MODEL_CARD.md`` beside the checkpoint: data, steps, wall time, the unverified
   choices (from the modules' docstrings), the scores, the token accuracy and whether
   generating the fine levels beats decoding the coarse ones (paired, per metric).

``--no-score`` ships the checkpoint only; ``--limit N`` scores the first N held-out items
(a quick try of the card, not a card to ship).
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
from pathlib import Path

import pandas as pd
import torch
from bench.codecs.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from bench.codecs.encodec.codec import DEMO_CHECKPOINT as ENCODEC_DEMO
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.modules import conformer
from bench.codecs.soundstorm import model as soundstorm_model
from bench.codecs.soundstorm.codec import (
    DEMO_CHECKPOINT,
    MODEL_NETWORK,
    TOKENIZER_NETWORK,
    SoundStormCodec,
    soundstorm_checkpoint,
)
from build_demo_checkpoint import HELD_OUT, _git_fact, card_header, ship_half_precision

from bench import audio as bench_audio
from bench.data import load_dataset
from bench.report.build import build_report
from bench.report.stats import (
    ConditionKey,
    metric_directions,
    paired_comparison,
    results_frame,
    summary_stats,
)
from bench.report.table import markdown_table
from bench.sweep import SweepSettings, run_sweep

METRICS = ("mel_distance", "pesq_wb", "stoi", "visqol_speech", "dnsmos", "kbps_actual")
# The quality metrics of the comparison (kbps_actual is the same by construction).
COMPARED_METRICS = ("mel_distance", "pesq_wb", "stoi", "visqol_speech", "dnsmos")
NFES = (1, 2, 4, 8, 16)
SOUNDSTORM_BITRATES = (1.5, 3.0)
ENCODEC_BITRATES = (1.5, 3.0, 6.0)
# EnCodec's bitrate whose levels SoundStorm fills in: the true tokens of the accuracy count.
FULL_BITRATE = 6.0
# The shipped demo's size budget, as for the other demos.
MAX_MEGABYTES = 5.0
SEED = 0
# The paper's decoding (sampling at temperature 1) and greedy decoding (top_k=1: each token
# the most probable), which a weak model's mean-seeking metrics may prefer.
DECODINGS = {"soundstorm": {}, "soundstorm-greedy": {"top_k": 1}}
# Training items (seen in training) whose tokens the card also counts: fitting against
# generalising.
TRAINING_ITEMS = 10


def run_checkpoint(run: Path) -> Path:
    """The run's exported model, else its resumable state."""
    exported = run / "model.pt"
    return exported if exported.exists() else run / "last.pt"


def bundle(source: Path, target: Path) -> Checkpoint:
    """The model of the run checkpoint ``source``, referencing the shipped EnCodec demo, as a
    float32 checkpoint at ``target``."""
    trained = load_checkpoint(source, "soundstorm")
    network = trained.network(MODEL_NETWORK)
    # The run records the hash of the EnCodec whose tokens it learnt.
    trained_on = trained.metadata.get("codec_hash")
    shipped = EncodecCodec(ENCODEC_DEMO).checkpoint_hash
    if trained_on != shipped:
        raise CheckpointError(
            f"{source} was trained on the tokens of another EnCodec (hash {trained_on}) than "
            f"the shipped demo {ENCODEC_DEMO} ({shipped})"
        )
    metadata = {key: value for key, value in trained.metadata.items() if key != "train_settings"}
    soundstorm_checkpoint(
        soundstorm_model.SoundStormConfig.from_json(network.config),
        network.state_dict,
        ENCODEC_DEMO,
        step=trained.step,
        metadata={
            **metadata,
            "train_settings": trained.metadata["train_settings"],
        },
    ).save(target)
    return load_checkpoint(target, "soundstorm")


def ship(run: Path, target: Path, max_megabytes: float) -> Checkpoint:
    """Bundle ``run`` in float16 and int8 at ``target``, within ``max_megabytes``; check that its
    EnCodec resolves to the shipped demo from there."""
    source = run_checkpoint(run)
    with tempfile.TemporaryDirectory() as folder:
        bundled = Path(folder) / "bundle.pt"
        bundle(source, bundled)
        ship_half_precision(bundled, bundled, "soundstorm", int8_matrices=True)
        megabytes = bundled.stat().st_size / 1e6
        if megabytes > max_megabytes:
            raise SystemExit(
                f"the checkpoint is {megabytes:.2f} MB, over the {max_megabytes:g} MB "
                "budget (--max-megabytes); nothing was written"
            )
        shipped = load_checkpoint(bundled, "soundstorm")
        shipped.metadata["source"] = str(source.resolve())
        shipped.save(target)
    shipped = load_checkpoint(target, "soundstorm")
    tokenizer = shipped.network(TOKENIZER_NETWORK).reference
    if tokenizer is None or tokenizer.path != ENCODEC_DEMO.resolve():
        raise CheckpointError(f"{target}: expected its tokenizer to be {ENCODEC_DEMO}")
    return shipped


def score(
    out: Path, checkpoint: Path, limit: int | None, workers: int
) -> tuple[pd.DataFrame, pd.DataFrame, dict, Path]:
    """The sweep's summary, its per-item results, the metrics' directions and the run."""
    soundstorm_options = (
        {} if checkpoint == DEMO_CHECKPOINT.resolve() else {"checkpoint": str(checkpoint)}
    )
    settings = SweepSettings(
        codecs=(*DECODINGS, "encodec-demo"),
        label_codecs={"encodec-demo": "encodec", "soundstorm-greedy": "soundstorm"},
        codec_options={
            label: {**soundstorm_options, **options}
            for label, options in DECODINGS.items()
            if soundstorm_options or options
        },
        codec_bitrates={
            **{label: SOUNDSTORM_BITRATES for label in DECODINGS},
            "encodec-demo": ENCODEC_BITRATES,
        },
        nfes=NFES,
        seeds=(SEED,),
        metrics=METRICS,
        listening_items=2,
        limit=limit,
        **HELD_OUT,
    )
    summary = run_sweep(settings, workers=workers, run_dir=out, cache_dir=None, progress=True)
    build_report(summary.run_dir)
    frame, directions = results_frame(summary.run_dir), metric_directions(summary.run_dir)
    return summary_stats(frame, directions), frame, directions, summary.run_dir


def held_out_items(limit: int | None) -> list:
    """The items the sweep scores."""
    return load_dataset(
        HELD_OUT["data"],
        limit=limit,
        tags=HELD_OUT["tags"],
        exclude_tags=HELD_OUT["exclude_tags"],
    ).items


def level_matches(
    codecs: dict[str, SoundStormCodec], items: list, nfes: tuple[int, ...]
) -> tuple[dict, torch.Tensor, int]:
    """Per (decoding, bitrate, NFE), the count of each level's generated tokens equal to
    EnCodec's at ``FULL_BITRATE`` of the same audio; with the count of the tokens equal to
    their level's most frequent one over these items, and the frame count.

    Sent levels must come back unchanged: a check of the comparison."""
    some_codec = next(iter(codecs.values()))
    levels = some_codec.config.levels
    counts, truths = {}, []
    for item in items:
        audio, _ = bench_audio.prepare(bench_audio.load_audio(item.path), some_codec.sample_rate, 1)
        true = some_codec.tokenizer.encode(audio, FULL_BITRATE).codes[:levels]
        truths.append(true)
        for decoding, codec in codecs.items():
            for bitrate in SOUNDSTORM_BITRATES:
                encoded = codec.encode(audio, bitrate)
                sent = codec.tokenizer.model.n_q_for(bitrate)
                for nfe in nfes:
                    tokens = codec.generate_tokens(encoded, nfe, SEED).tokens[0]
                    if not torch.equal(tokens[:sent], true[:sent]):
                        raise RuntimeError(f"{item.id} at {bitrate:g} kbps: sent levels changed")
                    key = (decoding, bitrate, nfe)
                    counts[key] = counts.get(key, 0) + (tokens == true).sum(dim=-1)
    every = torch.cat(truths, dim=-1)
    most_frequent = torch.stack(
        [(level == torch.bincount(level).argmax()).sum() for level in every]
    )
    return counts, most_frequent, every.shape[-1]


def token_accuracy(codec: SoundStormCodec, items: list, training_items: list) -> pd.DataFrame:
    """The share (%) of each level's generated tokens equal to EnCodec's own, per decoding,
    bitrate and NFE on the held-out ``items`` (NaN for sent levels); beside it, the most
    frequent token of each level (an oracle guess from frequencies alone) and, on
    ``training_items``, the model at the largest NFE (how far it fits what it was trained
    on)."""
    codecs = {
        label: SoundStormCodec(codec.checkpoint_path, **options)
        for label, options in DECODINGS.items()
    }
    rows = []

    def add(source: str, decoding: str, bitrate: float | None, nfe, equal, total) -> None:
        sent = codec.tokenizer.model.n_q_for(bitrate) if bitrate else 0
        row = {"items": source, "decoding": decoding, "kbps": f"{bitrate:g}" if bitrate else "-"}
        row["NFE"] = nfe
        for level in range(codec.config.levels):
            # NaN for a sent level: not generated, so not counted.
            share = 100 * float(equal[level]) / total
            row[f"level {level + 1}"] = float("nan") if level < sent else share
        rows.append(row)

    for source, chosen, nfes in (
        ("held-out", items, NFES),
        ("training", training_items, (max(NFES),)),
    ):
        if not chosen:
            continue
        counts, most_frequent, total = level_matches(codecs, chosen, nfes)
        for (decoding, bitrate, nfe), equal in counts.items():
            add(source, decoding, bitrate, nfe, equal, total)
        add(source, "most frequent token", None, "-", most_frequent, total)
    return pd.DataFrame(rows)


def level_columns(accuracy: pd.DataFrame) -> list[str]:
    return [column for column in accuracy if column.startswith("level ")]


def generated_shares(accuracy: pd.DataFrame, source: str, decoding: str) -> pd.Series:
    """The shares of every generated level at the largest NFE (or of the most frequent
    token, at the levels SoundStorm generates at the lowest bitrate), over the rows of one
    source and decoding."""
    rows = accuracy[(accuracy["items"] == source) & (accuracy["decoding"] == decoding)]
    if decoding in DECODINGS:
        rows = rows[rows["NFE"] == max(NFES)]
    generated = accuracy[accuracy["decoding"].isin(list(DECODINGS))]
    columns = [column for column in level_columns(accuracy) if generated[column].notna().any()]
    return pd.Series(rows[columns].to_numpy().ravel()).dropna()


def share_range(shares: pd.Series) -> str:
    return f"{shares.min():.1f}-{shares.max():.1f} %" if len(shares) else "not measured"


def diagnosis(accuracy: pd.DataFrame, codebook_size: int) -> list[str]:
    """What the token counts say about why the generated levels help or not: the measured
    shares, how many times the most frequent token's they are, and what that means."""
    shares = {
        (source, decoding): generated_shares(accuracy, source, decoding)
        for source in ("held-out", "training")
        for decoding in (*DECODINGS, "most frequent token")
    }

    def against_frequency(source: str) -> str:
        model, frequent = shares[source, "soundstorm"], shares[source, "most frequent token"]
        if not len(model) or not len(frequent):
            return "not measured"
        return f"{model.mean() / frequent.mean():.2f} times"

    return [
        f"Measured, per generated level at NFE {max(NFES)} (the paper's decoding / greedy), the",
        "share of tokens equal to EnCodec's:",
        "",
        f"- held-out real speech: {share_range(shares['held-out', 'soundstorm'])} / "
        f"{share_range(shares['held-out', 'soundstorm-greedy'])}; the most frequent token of "
        f"each level, an oracle guess from frequencies alone: "
        f"{share_range(shares['held-out', 'most frequent token'])}; chance "
        f"{100 / codebook_size:.1f} %;",
        f"- {TRAINING_ITEMS} training speech items, seen in training: "
        f"{share_range(shares['training', 'soundstorm'])} / "
        f"{share_range(shares['training', 'soundstorm-greedy'])}; their most frequent tokens: "
        f"{share_range(shares['training', 'most frequent token'])}.",
        "",
        "On average the model names the true token "
        f"{against_frequency('held-out')} as often as the most frequent token does on held-out",
        f"speech, and {against_frequency('training')} as often on its training speech.",
        "",
        "The fine RVQ levels code the residual the coarse ones leave, the part of the signal",
        "least predictable from them. A ratio near 1 means the model has learnt the levels'",
        "token frequencies and little of their dependence on the coarse levels: its generated",
        "levels then add energy but not the true detail, and their wrong tokens add noise,",
        "which PESQ and STOI measure. The held-out items are real recordings, the training",
        "corpus TTS voices. The paper's model is far larger and trained on far more speech",
        "(see the facts above): this demo shows the machinery and its measurement, not the",
        "paper's gain.",
    ]


def training_speech(checkpoint: Checkpoint, count: int) -> list:
    """The first ``count`` speech items of the run's training data, where it is on this
    machine (a manifest or folder the run named); none otherwise."""
    spec = checkpoint.metadata["train_settings"]["data"]
    try:
        return load_dataset(spec, tags=("speech",), limit=count).items
    except (OSError, ValueError):
        return []


def comparisons(frame: pd.DataFrame, directions: dict) -> pd.DataFrame:
    """SoundStorm (each decoding) against EnCodec on the same bits, per bitrate, NFE and
    metric (paired over items: the mean difference SoundStorm minus EnCodec, its 95 % CI and
    Wilcoxon's test)."""
    tables = []
    for decoding in DECODINGS:
        for bitrate in SOUNDSTORM_BITRATES:
            for nfe in NFES:
                table = paired_comparison(
                    frame,
                    ConditionKey("encodec-demo", bitrate),
                    ConditionKey(decoding, bitrate, nfe),
                    directions,
                    metrics=list(COMPARED_METRICS),
                )
                tables.append(table.assign(decoding=decoding, bitrate=bitrate, nfe=nfe))
    return pd.concat(tables, ignore_index=True)


def verdict_sentence(compared: pd.DataFrame, decoding: str, bitrate: float, nfe: int) -> str:
    """Whether generating the fine levels beat decoding the sent ones, metric by metric."""
    rows = compared[
        (compared["decoding"] == decoding)
        & (compared["bitrate"] == bitrate)
        & (compared["nfe"] == nfe)
    ]
    parts = {"candidate better": [], "candidate worse": [], "no significant difference": []}
    for row in rows.itertuples():
        parts[row.verdict].append(
            f"{row.metric} {row.mean_difference:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
        )
    better, worse = parts["candidate better"], parts["candidate worse"]
    if better and not worse:
        overall = "beats"
    elif worse and not better:
        overall = "does not beat (it is worse than)"
    elif not better and not worse:
        overall = "is not measurably different from"
    else:
        overall = "is better on some metrics and worse on others than"
    described = "; ".join(
        f"{name} on {', '.join(found)}"
        for name, found in (
            ("better", better),
            ("worse", worse),
            ("no significant difference", parts["no significant difference"]),
        )
        if found
    )
    return (
        f"`{decoding}` at {bitrate:g} kbps and NFE {nfe}: generating the fine levels "
        f"**{overall}** decoding "
        f"the sent levels alone (EnCodec at {bitrate:g} kbps, the same bits), over "
        f"{int(rows['pairs'].max())} items (Wilcoxon signed-rank at 5 %), SoundStorm minus "
        f"EnCodec with 95 % CIs: {described}."
    )


def unverified_choices() -> str:
    """The "Unverified choices" of the model's and the Conformer's docstrings, as written."""
    sections = []
    for module in (soundstorm_model, conformer):
        docstring = inspect.getdoc(module)
        sections.append(
            f"From `{module.__name__}`:\n\n" + docstring[docstring.index("Unverified") :]
        )
    return "\n\n".join(sections)


def write_card(
    checkpoint: Checkpoint,
    codec: SoundStormCodec,
    stats: pd.DataFrame,
    compared: pd.DataFrame,
    accuracy: pd.DataFrame,
    run_dir: Path,
    items: int,
) -> Path:
    metadata, settings = checkpoint.metadata, checkpoint.metadata["train_settings"]
    network = checkpoint.network(MODEL_NETWORK)
    parameters = sum(value.numel() for value in network.state_dict.values())
    sizes = codec.config.conformer
    path = checkpoint.path
    facts = [
        (
            "file",
            f"`{path.name}` ({path.stat().st_size / 1e6:.2f} MB, {metadata['stored_as']}; "
            "loaded as float32)",
        ),
        ("weights hash (SHA-256)", f"`{network.hash}`"),
        (
            "model",
            f"`{codec.config.name}`: Conformer of {sizes.layers} layers, width {sizes.dim}, "
            f"{sizes.heads} heads, feed-forward {sizes.feedforward}, convolution kernel "
            f"{sizes.conv_kernel}; {codec.config.levels} levels x {codec.config.codebook_size} "
            f"codes; {parameters / 1e6:.2f} M parameters",
        ),
        (
            "tokens",
            f"the EnCodec demo (`{ENCODEC_DEMO.name}`, hash "
            f"`{codec.tokenizer.checkpoint_hash}`), referenced, not copied: 75 frames/s; "
            + ", ".join(
                f"{bitrate:g} kbps sends {codec.tokenizer.model.n_q_for(bitrate)} levels and "
                f"generates {codec.generated_levels(codec.tokenizer.model.n_q_for(bitrate))} "
                f"({codec.network_passes(bitrate, 1) - 1} + NFE passes)"
                for bitrate in codec.bitrates
            ),
        ),
        (
            "training",
            f"{checkpoint.step} steps of batch {settings['batch_size']} x "
            f"{settings['segment_seconds']} s windows of cached tokens, AdamW lr "
            f"{settings['learning_rate']:g} (the paper gives no optimiser settings), seed "
            f"{settings['seed']}; {metadata['wall_seconds'] / 60:.0f} min",
        ),
        (
            "hardware",
            f"{metadata.get('device', 'cpu')}, {metadata.get('workers', 1)} worker(s), torch "
            f"{checkpoint.versions.get('torch')}",
        ),
        (
            "training data",
            f"`{settings['data']}`: {metadata['data_seconds'] / 3600:.2f} h built by "
            "`scripts/build_training_corpus.py` (TTS speech in many voices, synthesised music, "
            "general audio; see its PROVENANCE.md)",
        ),
        ("git", _git_fact(metadata.get("git", {}))),
    ]
    table = stats.sort_values(["bitrate", "label", "nfe"], kind="stable").reset_index(drop=True)
    comparison_table = pd.DataFrame(
        {
            "decoding": compared["decoding"],
            "kbps": compared["bitrate"].map(lambda bitrate: f"{bitrate:g}"),
            "NFE": compared["nfe"],
            "metric": compared["metric"],
            "EnCodec": compared["baseline_mean"].map(lambda value: f"{value:.3f}"),
            "SoundStorm": compared["candidate_mean"].map(lambda value: f"{value:.3f}"),
            "difference [95% CI]": [
                f"{row.mean_difference:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
                for row in compared.itertuples()
            ],
            "p": compared["p_value"].map(lambda value: f"{value:.3g}"),
            "verdict": compared["verdict"].str.replace("candidate", "SoundStorm"),
        }
    )
    lines = [
        *card_header(
            "SoundStorm tiny demo checkpoint",
            [
                "**This is the project's small demo model, trained on "
                f"{metadata.get('device', 'cpu')}. It is not the paper's",
                "weights** (there are none published) and is far below SoundStorm's reported "
                "quality.",
                "It lets `bench run --codec soundstorm` work out of the box; pass `--checkpoint` "
                "for a",
                "`bench train soundstorm` model.",
            ],
            facts,
        ),
        "## Measured on held-out real speech",
        "",
        f"The {items} LibriVox and CMU cards utterances of the embedded corpus (never trained",
        "on), scored with `bench run`'s metrics; each cell is the mean [95% bootstrap CI over",
        f"items]. SoundStorm decodes with seed {SEED}; NFE is the first generated level's",
        "iterations (the paper's 16 at most), each further level one greedy pass.",
        "`soundstorm` samples as the paper does (temperature 1); `soundstorm-greedy`",
        "(`soundstorm:top_k=1`) takes each level's most probable tokens.",
        f"`encodec-demo` at {FULL_BITRATE:g} kbps decodes the true tokens of every level",
        "SoundStorm generates: the most its generation could reach with this decoder.",
        f"Run and report: `{run_dir}`.",
        "",
        markdown_table(table),
        "",
        "## Generated tokens equal to EnCodec's own",
        "",
        f"The share of generated tokens equal to EnCodec's {FULL_BITRATE:g} kbps tokens of the",
        f"same audio, per level (seed {SEED}, over all frames of the items); chance is",
        f"{100 / codec.config.codebook_size:.1f} %. Sent levels are checked to be equal. "
        '"most frequent token" guesses each',
        "level's most frequent token over the same items (an oracle: it knows their counts).",
        f'"training" rows: the first {TRAINING_ITEMS} speech items of the training data, '
        f"at NFE {max(NFES)}.",
        "",
        accuracy.to_markdown(index=False, floatfmt=".1f").replace(" nan ", " sent"),
        "",
        "## Does generating the fine levels beat decoding the coarse ones?",
        "",
        *(
            verdict_sentence(compared, decoding, bitrate, nfe) + "\n"
            for decoding in DECODINGS
            for bitrate in SOUNDSTORM_BITRATES
            for nfe in (min(NFES), max(NFES))
        ),
        "Every NFE, paired over items (SoundStorm minus EnCodec at the same bitrate; Wilcoxon",
        "signed-rank test at 5 %):",
        "",
        comparison_table.to_markdown(index=False),
        "",
        "## Why",
        "",
        *diagnosis(accuracy, codec.config.codebook_size),
        "",
        "## Unverified choices",
        "",
        unverified_choices(),
        "",
    ]
    card = path.parent / "MODEL_CARD.md"
    card.write_text("\n".join(lines))
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a `bench train soundstorm` folder")
    parser.add_argument("--target", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--scores", type=Path, default=Path("/tmp/soundstorm_demo_scores"))
    parser.add_argument("--no-score", action="store_true", help="ship the checkpoint only")
    parser.add_argument("--limit", type=int, default=None, help="score the first N items only")
    parser.add_argument("--workers", type=int, default=2, help="scoring processes")
    parser.add_argument("--max-megabytes", type=float, default=MAX_MEGABYTES)
    arguments = parser.parse_args()
    if not arguments.no_score and arguments.scores.exists():
        parser.error(f"--scores {arguments.scores} exists; pass a new folder")
    torch.set_num_threads(1)
    target = arguments.target.resolve()
    checkpoint = ship(arguments.run, target, arguments.max_megabytes)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")
    if arguments.no_score:
        return
    stats, frame, directions, run_dir = score(
        arguments.scores, target, arguments.limit, arguments.workers
    )
    items = held_out_items(arguments.limit)
    codec = SoundStormCodec(None if target == DEMO_CHECKPOINT.resolve() else target)
    card = write_card(
        checkpoint,
        codec,
        stats,
        comparisons(frame, directions),
        token_accuracy(codec, items, training_speech(checkpoint, TRAINING_ITEMS)),
        run_dir,
        len(items),
    )
    print(card.read_text())


if __name__ == "__main__":
    main()
