"""Ship a `bench train` run as the package's EnCodec demo checkpoint, with its model card.

    python scripts/build_demo_checkpoint.py --run /work/demo_training/run

1. Stores the run's exported model (``model.pt``) in float16, which halves it to fit the
   5 MB budget, as ``codecs/encodec/checkpoints/encodec_tiny_demo.pt``. The codec loads
   it back into float32.
2. Builds the untrained baseline: the same settings at step 0, codebooks k-means
   initialised on the same first batch, so the card shows what training bought.
3. Scores the demo model, the untrained model and Opus on the held-out real speech of the
   embedded corpus (LibriVox and CMU cards utterances, never trained on) with
   ``bench run``'s own sweep. It writes ``MODEL_CARD.md`` beside the checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from bench.codecs.checkpoint import Checkpoint, load_checkpoint

from bench.report.stats import metric_directions, results_frame, summary_stats
from bench.report.table import markdown_table
from bench.sweep import SweepSettings, run_sweep
from bench.train.trainer import (
    INIT_BATCH,
    SegmentSampler,
    TrainSettings,
    build_state,
    export_model,
    initialise_codebooks,
)

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = REPO / "codecs" / "encodec" / "checkpoints"
DEMO = CHECKPOINTS / "encodec_tiny_demo.pt"
CARD = CHECKPOINTS / "MODEL_CARD.md"
BITRATES = (1.5, 3.0, 6.0, 12.0)
METRICS = ("mel_distance", "pesq_wb", "stoi", "visqol_speech", "kbps_actual")
# Held-out real speech: the embedded corpus's LibriVox and CMU cards recordings.
HELD_OUT = dict(data="embedded", tags=("speech",), exclude_tags=("synthetic", "noisy"))


def ship_half_precision(model_path: Path, target: Path) -> Checkpoint:
    checkpoint = load_checkpoint(model_path, "encodec")
    checkpoint.state_dict = {
        key: value.half() if value.is_floating_point() else value
        for key, value in checkpoint.state_dict.items()
    }
    checkpoint.metadata = {**checkpoint.metadata, "stored_as": "float16", "source": str(model_path)}
    checkpoint.save(target)
    return checkpoint


def untrained_checkpoint(settings: TrainSettings, target: Path) -> Path:
    state = build_state(settings)
    config = state.model.config
    sampler = SegmentSampler(
        settings.data,
        config.sample_rate,
        config.channels,
        settings.segment_seconds,
        settings.data_limit,
    )
    initialise_codebooks(state.model, sampler.batch(settings.seed, 0, INIT_BATCH, stream=1))
    return export_model(state, settings, target, {"note": "untrained: step 0, k-means init"})


def score(label: str, codec: str, out: Path, options: dict, bitrates) -> pd.DataFrame:
    settings = SweepSettings(
        codecs=(codec,),
        codec_bitrates={codec: bitrates},
        metrics=METRICS,
        codec_options={codec: options} if options else {},
        workers=2,
        listening_items=0,
        **HELD_OUT,
    )
    summary = run_sweep(settings, run_dir=out / label, cache_dir=None, progress=True)
    stats = summary_stats(results_frame(summary.run_dir), metric_directions(summary.run_dir))
    return stats.assign(codec=label)


def write_card(checkpoint: Checkpoint, tables: pd.DataFrame, runs: Path) -> None:
    metadata = checkpoint.metadata
    settings = metadata["train_settings"]
    facts = [
        ("file", f"`{DEMO.name}` ({DEMO.stat().st_size / 1e6:.2f} MB, float16)"),
        ("weights hash (SHA-256)", f"`{checkpoint.hash}`"),
        (
            "configuration",
            "`tiny`: 24 kHz mono, causal, 8 base filters, 32-d latent, 75 Hz, "
            "up to 16 codebooks of 1024",
        ),
        (
            "steps",
            f"{checkpoint.step} of batch {settings['batch_size']} x "
            f"{settings['segment_seconds']} s",
        ),
        (
            "wall time",
            f"{metadata['wall_seconds'] / 60:.0f} min on a shared 2-core Intel Xeon CPU, "
            f"torch {checkpoint.versions.get('torch')}",
        ),
        (
            "training data",
            f"`{settings['data']}`: {metadata['data_seconds'] / 3600:.2f} h built by "
            "`scripts/build_training_corpus.py` (TTS speech in many voices, synthesised "
            "music, general audio; see its PROVENANCE.md)",
        ),
        (
            "losses",
            "time L1 (0.1), multi-scale mel (1), hinge adversarial (3), relative feature "
            "matching (3), with the loss balancer; commitment (1) outside it",
        ),
        (
            "discriminator",
            f"MS-STFT, 5 scales, {settings['discriminator_filters']} filters (paper: 32), "
            "updated with probability 2/3",
        ),
        ("optimiser", f"Adam, lr {settings['learning_rate']}, betas {tuple(settings['betas'])}"),
        ("bandwidth sampling", "one of 1.5/3/6/12 kbps per batch"),
        ("git", f"`{metadata.get('git', {}).get('commit', 'unknown')}`"),
    ]
    lines = [
        "# EnCodec tiny demo checkpoint",
        "",
        "**This is the project's small demo model, trained on a 2-core CPU. It is not the",
        "paper's weights** and is far below the published EnCodec quality. It lets",
        "`bench run --codec encodec` work out of the box; pass `--checkpoint` for real weights",
        "(for example the official `encodec_24khz-d7cc33bc.th`).",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in facts),
        "",
        "## Measured on held-out real speech",
        "",
        "The 10 LibriVox and CMU cards utterances of the embedded corpus (never trained on),",
        "scored with `bench run`'s metrics; each cell is the mean [95% bootstrap CI over",
        'items]. "untrained" is the same model at step 0 with k-means-initialised codebooks.',
        "Opus's lowest bitrate is 6 kbps, so it appears at 6 and 12 only.",
        f"Runs: `{runs}`.",
        "",
        markdown_table(tables),
        "",
    ]
    CARD.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a `bench train` output folder")
    parser.add_argument("--scores", type=Path, default=Path("/tmp/demo_checkpoint_scores"))
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    checkpoint = ship_half_precision(arguments.run / "model.pt", DEMO)
    settings = TrainSettings.from_json(checkpoint.metadata["train_settings"])
    untrained = untrained_checkpoint(settings, arguments.scores / "untrained.pt")
    tables = pd.concat(
        [
            score("encodec demo", "encodec", arguments.scores, {}, BITRATES),
            score(
                "encodec untrained",
                "encodec",
                arguments.scores,
                {"checkpoint": str(untrained)},
                BITRATES,
            ),
            score("opus", "opus", arguments.scores, {}, (6.0, 12.0)),
        ]
    )
    tables = tables.sort_values("bitrate", kind="stable").reset_index(drop=True)
    write_card(checkpoint, tables, arguments.scores)
    print(CARD.read_text())


if __name__ == "__main__":
    main()
