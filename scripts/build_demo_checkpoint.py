"""Ship a `bench train` run as the package's EnCodec or HiFi-Codec demo checkpoint, with its
model card.

    python scripts/build_demo_checkpoint.py --run /work/demo_training/run
    python scripts/build_demo_checkpoint.py --codec hificodec --run /work/hifi_training/grvq

1. Stores the run's exported model (``model.pt``) in float16, which halves it to fit the
   5 MB budget, as ``codecs/<codec>/checkpoints/<codec>_tiny_demo.pt``. The codec loads
   it back into float32.
2. Builds the untrained baseline: the same settings at step 0, codebooks k-means
   initialised on the same first batch, so the card shows what training bought.
3. Scores the demo model, the untrained model and Opus (and, for HiFi-Codec, the shipped
   EnCodec demo) on the held-out real speech of the embedded corpus (LibriVox and CMU cards
   utterances, never trained on) with ``bench run``'s own sweep. It writes ``MODEL_CARD.md``
   beside the checkpoint.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd
import torch
from bench.codecs.checkpoint import Checkpoint, int8_weights, load_checkpoint
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.hificodec.codec import HiFiCodecCodec
from bench.codecs.modules.rvq import strip_codebook_sums

from bench import audio as bench_audio
from bench.data import load_dataset
from bench.report.stats import metric_directions, results_frame, summary_stats
from bench.report.table import markdown_table
from bench.sweep import SweepSettings, run_sweep
from bench.train.settings import CodecTrainSettings, recipe_settings
from bench.train.solvers.base import step_seed
from bench.train.solvers.codec_gan import INIT_BATCH, CodecGANSolver, initialise_codebooks


@dataclass(frozen=True)
class Demo:
    """What differs between the codecs' demo checkpoints and cards."""

    codec: str
    title: str
    codec_class: type[EncodecCodec]
    configuration: str
    bitrates: tuple[float, ...]
    real_weights: str
    # Codecs scored beside the demo model: (label, codec, bitrates).
    references: tuple[tuple[str, str, tuple[float, ...]], ...]
    # The heading from which the card's hand-written sections (how it compares with the official
    # code, say) are kept as they are when the card is written again.
    kept_from: str = ""

    @property
    def path(self) -> Path:
        return self.codec_class.demo_checkpoint

    @property
    def card(self) -> Path:
        return self.path.parent / "MODEL_CARD.md"


DEMOS = {
    "encodec": Demo(
        codec="encodec",
        title="EnCodec",
        codec_class=EncodecCodec,
        configuration="`tiny`: 24 kHz mono, causal, 8 base filters, 32-d latent, 75 Hz, "
        "up to 16 codebooks of 1024",
        bitrates=(1.5, 3.0, 6.0, 12.0),
        real_weights="(for example the official `encodec_24khz-d7cc33bc.th`, or "
        "`--checkpoint official:encodec-24khz`, which fetches it)",
        references=(("opus", "opus", (6.0, 12.0)),),
    ),
    "hificodec": Demo(
        codec="hificodec",
        title="HiFi-Codec",
        codec_class=HiFiCodecCodec,
        configuration="`tiny`: 24 kHz mono, non-causal, 8 base filters, 32-d latent in 2 groups "
        "of 16, 75 Hz, 2 groups x up to 4 residual levels of 1024 codes",
        bitrates=(1.5, 3.0, 6.0),
        real_weights=": a `bench train hificodec` checkpoint of the `24khz` config, or an "
        "official AcademiCodec release file, which runs on the released architecture (see "
        "[Two architectures](#two-architectures-the-papers-and-the-released-one))",
        references=(
            ("encodec demo", "encodec", (1.5, 3.0, 6.0)),
            ("opus", "opus", (6.0,)),
        ),
        kept_from="## Two architectures",
    ),
}
METRICS = ("mel_distance", "pesq_wb", "stoi", "visqol_speech", "kbps_actual")
# Held-out real speech: the embedded corpus's LibriVox and CMU cards recordings.
HELD_OUT = dict(data="embedded", tags=("speech",), exclude_tags=("synthetic", "noisy"))


def ship_half_precision(
    model_path: Path, target: Path, codec: str, int8_matrices: bool = False
) -> Checkpoint:
    """The model (with its LM, if trained) in float16, without the codebooks' EMA sums. With
    ``int8_matrices`` its large weight matrices are stored as int8 with per-channel scales
    (:func:`~bench.codecs.checkpoint.int8_weights`), which roughly halves the file again; the
    codec loads them back into float32 either way. A network referenced from another
    checkpoint stays a reference to that file's weights."""
    checkpoint = load_checkpoint(model_path, codec)
    for name, network in checkpoint.networks.items():
        if network.reference is not None:
            continue
        state = network.state_dict
        network.state_dict = {
            key: value.half() if value.is_floating_point() else value
            for key, value in (strip_codebook_sums(state) if name == "codec" else state).items()
        }
        if int8_matrices:
            network.store_as_int8(int8_weights(network.state_dict))
    stored_as = "float16, weight matrices int8" if int8_matrices else "float16"
    checkpoint.metadata = {**checkpoint.metadata, "stored_as": stored_as, "source": str(model_path)}
    checkpoint.save(target)
    return checkpoint


def untrained_checkpoint(settings: CodecTrainSettings, target: Path) -> Path:
    solver = CodecGANSolver(settings)
    solver.use_data()
    initialise_codebooks(
        solver.model,
        solver.sampler.batch(settings.seed, 0, INIT_BATCH, stream=1),
        step_seed(settings.seed, 0),
        settings.batch_size,
    )
    solver.export(target, 0, {"note": "untrained: step 0, k-means init"})
    return target


def score(label: str, codec: str, out: Path, options: dict, bitrates) -> pd.DataFrame:
    settings = SweepSettings(
        codecs=(codec,),
        codec_bitrates={codec: bitrates},
        metrics=METRICS,
        codec_options={codec: options} if options else {},
        listening_items=0,
        **HELD_OUT,
    )
    summary = run_sweep(settings, workers=2, run_dir=out / label, cache_dir=None, progress=True)
    stats = summary_stats(results_frame(summary.run_dir), metric_directions(summary.run_dir))
    return stats.assign(label=label)


def _git_fact(git: dict) -> str:
    commit = f"`{git.get('commit', 'unknown')}`"
    if git.get("dirty"):
        # The run records the tree it started from; say so rather than imply that commit.
        return f"{commit} with uncommitted changes (the trainer as committed right after)"
    return commit


def _train_command(saved: dict) -> str:
    """The `bench train CODEC` command line of ``saved``: the options that differ from the
    recipe's defaults."""
    settings = CodecTrainSettings.from_json(saved).to_json()
    given = ("config", "data", "steps")
    defaults = recipe_settings(saved["codec"], **{name: settings[name] for name in given})
    flags = [f"--{name} {settings[name]}" for name in given]
    for field in fields(CodecTrainSettings):
        option, value = field.metadata.get("option"), settings[field.name]
        if option is None or field.name in given or value == defaults.to_json()[field.name]:
            continue
        flag = option.flag or "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag)
            continue
        if field.name == "weights":
            value = ",".join(f"{loss}={weight:g}" for loss, weight in value.items())
        elif field.name == "discriminators":
            value = ",".join(value) or "none"
        flags.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return f"bench train {saved['codec']} " + " ".join(flags)


def _losses_fact(settings: dict) -> str:
    weights = settings["weights"]
    frequency = (
        "multi-scale mel, L1 on mels + L2 on log mels (audiocraft's form)"
        if settings["frequency_loss"] == "audiocraft"
        else "multi-scale mel, L1 + L2 on mels (the paper's form)"
    )
    terms = [f"time L1 ({weights['time']:g})", f"{frequency} ({weights['frequency']:g})"]
    if settings["discriminators"]:
        # Averaged over every sub-discriminator of every family (HiFi-Codec's 1/K sum).
        terms += [
            f"hinge adversarial ({weights['adversarial']:g})",
            f"relative feature matching ({weights['feature']:g})",
        ]
    combined = "with the loss balancer" if settings["balancer"] else "summed with these weights"
    return f"{', '.join(terms)}, {combined}; commitment ({settings['commitment_weight']:g}) outside"


def _discriminator_fact(settings: dict) -> str:
    if not settings["discriminators"]:
        return (
            "none: on a 2-core CPU an hour buys about 4x more reconstruction-only steps than "
            "adversarial ones, and the metrics here reward reconstruction"
        )
    return (
        f"{', '.join(settings['discriminators'])} at MS-STFT width "
        f"{settings['discriminator_filters']} (paper: 32), updated with probability 2/3"
    )


def entropy_coded_rates(demo: Demo) -> pd.DataFrame:
    """Mean kbps of the bit-packed and the LM range-coded payloads over the held-out items."""
    bitrates = demo.bitrates
    packed = demo.codec_class(demo.path)
    coded = demo.codec_class(demo.path, entropy_coding=True)
    items = load_dataset(
        HELD_OUT["data"], tags=HELD_OUT["tags"], exclude_tags=HELD_OUT["exclude_tags"]
    ).items
    rows = []
    for item in items:
        audio, _ = bench_audio.prepare(bench_audio.load_audio(item.path), packed.sample_rate, 1)
        seconds = audio.shape[-1] / packed.sample_rate
        for bitrate in bitrates:
            with_lm = coded.encode(audio, bitrate)
            without = packed.encode(audio, bitrate)
            if not torch.equal(coded.decode(with_lm), packed.decode(without)):
                raise RuntimeError(
                    f"{item.id} at {bitrate} kbps: the LM payload decodes differently"
                )
            rows.append(
                {
                    "bitrate": bitrate,
                    "packed kbps": len(without.payload) * 8 / seconds / 1000,
                    "entropy-coded kbps": len(with_lm.payload) * 8 / seconds / 1000,
                }
            )
    table = pd.DataFrame(rows).groupby("bitrate").mean().reset_index()
    table["saving %"] = 100 * (1 - table["entropy-coded kbps"] / table["packed kbps"])
    return table.round(3)


def card_header(title: str, disclaimer: list[str], facts: list[tuple[str, str]]) -> list[str]:
    """A model card's opening lines: the title, the paragraph saying what the model is (and is
    not), and the table of facts, then a blank line."""
    return [
        f"# {title}",
        "",
        *disclaimer,
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in facts),
        "",
    ]


def write_card(
    demo: Demo,
    checkpoint: Checkpoint,
    tables: pd.DataFrame,
    runs: Path,
    rates: pd.DataFrame | None,
) -> None:
    metadata = checkpoint.metadata
    settings = metadata["train_settings"]
    size_mb = demo.path.stat().st_size / 1e6
    facts = [
        ("file", f"`{demo.path.name}` ({size_mb:.2f} MB, float16)"),
        ("weights hash (SHA-256)", f"`{checkpoint.network('codec').hash}`"),
        ("configuration", demo.configuration),
        ("quantizer", settings["quantizer"]),
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
        ("losses", _losses_fact(settings)),
        ("discriminator", _discriminator_fact(settings)),
        (
            "optimiser",
            f"Adam, lr {settings['learning_rate']:g} (paper: 3e-4), betas "
            f"{tuple(settings['betas'])}; convolutions initialised `{settings['weight_init']}`",
        ),
        (
            "bandwidth sampling",
            f"one of {'/'.join(f'{rate:g}' for rate in demo.bitrates)} kbps per batch",
        ),
        ("git", _git_fact(metadata.get("git", {}))),
        ("command", f"`{_train_command(settings)}`"),
    ]
    lines = [
        *card_header(
            f"{demo.title} tiny demo checkpoint",
            [
                "**This is the project's small demo model, trained on a 2-core CPU. It is not the",
                f"paper's weights** and is far below the published {demo.title} quality. It lets",
                f"`bench run --codec {demo.codec}` work out of the box; pass `--checkpoint` for "
                f"real weights{'' if demo.real_weights.startswith(':') else ' '}"
                f"{demo.real_weights}.",
            ],
            facts,
        ),
        "## Measured on held-out real speech",
        "",
        "The 10 LibriVox and CMU cards utterances of the embedded corpus (never trained on),",
        "scored with `bench run`'s metrics; each cell is the mean [95% bootstrap CI over",
        'items]. "untrained" is the same model at step 0 with k-means-initialised codebooks.',
        "Opus's lowest bitrate is 6 kbps, so it appears from 6 kbps only.",
        f"Runs: `{runs}`.",
        "",
        markdown_table(tables),
        "",
    ]
    if rates is not None:
        lm = checkpoint.network("lm").config
        training = checkpoint.metadata["lm_training"]
        lines += [
            "## Entropy coding (`--entropy-coding`)",
            "",
            f"The checkpoint carries an entropy-coding LM ({lm['num_layers']} layers, "
            f"width {lm['dim']}, {lm['num_heads']} heads; paper: 5 x 200), trained by "
            f"`bench train lm` for {training['steps']} steps (batch "
            f"{training['settings']['batch_size']} x {training['settings']['segment_seconds']} s,"
            f" {training['wall_seconds'] / 60:.0f} min) on the codes of the same training "
            "corpus. Mean payload rate over the same held-out items (headers included), codes "
            "restored bit-exactly (checked per item):",
            "",
            rates.to_markdown(index=False),
            "",
        ]
    old_card = demo.card.read_text() if demo.card.is_file() else ""
    if demo.kept_from and demo.kept_from in old_card:
        lines += [old_card[old_card.index(demo.kept_from) :]]
    demo.card.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", choices=sorted(DEMOS), default="encodec")
    parser.add_argument("--run", type=Path, required=True, help="a `bench train` output folder")
    parser.add_argument(
        "--lm-run", type=Path, help="a `bench train lm` folder: its LM ships in the checkpoint"
    )
    parser.add_argument("--scores", type=Path, default=Path("/tmp/demo_checkpoint_scores"))
    arguments = parser.parse_args()
    if arguments.scores.exists() and any(arguments.scores.iterdir()):
        parser.error(f"--scores {arguments.scores} already holds runs; pass an empty folder")
    torch.set_num_threads(1)
    demo = DEMOS[arguments.codec]
    source = arguments.run / "model.pt"
    if arguments.lm_run is not None:
        with_lm = arguments.lm_run / "model_lm.pt"
        trained_on = load_checkpoint(with_lm, demo.codec).network("codec").hash
        if trained_on != load_checkpoint(source, demo.codec).network("codec").hash:
            raise SystemExit(f"{with_lm}: its LM was trained on another codec than {source}")
        source = with_lm
    checkpoint = ship_half_precision(source, demo.path, demo.codec)
    settings = CodecTrainSettings.from_json(checkpoint.metadata["train_settings"])
    untrained = untrained_checkpoint(settings, arguments.scores / "untrained.pt")
    scores = arguments.scores
    tables = pd.concat(
        [
            score(f"{demo.codec} demo", demo.codec, scores, {}, demo.bitrates),
            score(
                f"{demo.codec} untrained",
                demo.codec,
                scores,
                {"checkpoint": str(untrained)},
                demo.bitrates,
            ),
            *(score(label, codec, scores, {}, rates) for label, codec, rates in demo.references),
        ]
    )
    tables = tables.sort_values("bitrate", kind="stable").reset_index(drop=True)
    rates = entropy_coded_rates(demo) if arguments.lm_run is not None else None
    write_card(demo, checkpoint, tables, scores, rates)
    print(demo.card.read_text())


if __name__ == "__main__":
    main()
