"""Ship two SampleRNN runs as the package's demo checkpoints, with their card.

    python scripts/build_samplernn_demo.py --unconditional-run /work/samplernn_training/uncond \\
        --decoder-run /work/samplernn_training/decoder --scores /tmp/samplernn_scores

1. Ships each run's model (its ``model.pt``, else its resumable ``last.pt``) in float16 under
   ``codecs/samplernn/checkpoints/``: the unconditional model as ``samplernn_tiny_demo.pt``
   and the codec decoder as ``samplernn_decoder_demo.pt``, which references the shipped
   EnCodec demo whose latent it learnt (checked by hash). Both within 5 MB together.
2. Scores the held-out NLL in bits per sample with ``bench nll``'s library: real speech (the
   embedded corpus's LibriVox and CMU cards utterances), the training corpus's validation
   speech (TTS voices never trained on) and music (the embedded corpus's and the validation
   set's); the unconditional model, and the decoder on the bitstream of 1.5, 3 and 6 kbps.
3. Scores the ``samplernn`` codec against the EnCodec demo on the same bits (1.5, 3 and
   6 kbps) on the held-out real speech with ``bench run``'s own sweep, paired per metric.
4. Writes ``MODEL_CARD.md`` beside the checkpoints: facts, the NLL beside the paper's Table 1
   (other data: Blizzard, Onomatopoeia and the piano sonatas are not available here), the
   codec scores, generation speed from ``reports/samplernn_speed.json`` and the unverified
   choices (from the model's docstring).

``--no-score`` ships the checkpoints only; ``--limit N`` scores the first N items of each set
(a quick try of the card, not a card to ship). Rerun with the same ``--scores`` to rebuild the
card (after the speed benchmark, say): the scored runs there are resumed, not redone.
"""

from __future__ import annotations

import argparse
import inspect
import json
import tempfile
from pathlib import Path

import pandas as pd
import torch
from bench.codecs.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from bench.codecs.encodec.codec import DEMO_CHECKPOINT as ENCODEC_DEMO
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.samplernn import model as samplernn_model
from bench.codecs.samplernn.codec import DEMO_DECODER, DEMO_UNCONDITIONAL, load_samplernn
from bench.codecs.samplernn.conditioning import (
    MODEL_NETWORK,
    TOKENIZER_NETWORK,
    samplernn_checkpoint,
)
from bench.codecs.samplernn.model import ZERO_LEVEL, quantize
from build_demo_checkpoint import HELD_OUT, _git_fact, card_header, ship_half_precision

from bench.audio import load_audio, resample
from bench.data import load_dataset
from bench.likelihood import RESULTS_FILE, NllSettings, run_nll, summary
from bench.report.build import build_report
from bench.report.stats import (
    ConditionKey,
    bootstrap_mean_ci,
    metric_directions,
    paired_comparison,
    results_frame,
    summary_stats,
)
from bench.report.table import markdown_table
from bench.sweep import SweepSettings, run_sweep

REPO = Path(__file__).resolve().parents[1]
SPEED_REPORT = REPO / "reports" / "samplernn_speed.json"
VALIDATION = "manifest:/work/training_corpus/MANIFEST.valid.jsonl"
# The held-out NLL sets: (name, [(dataset spec, tags, excluded tags)]); music pools two sources.
NLL_SETS = (
    ("real speech (LibriVox, CMU cards)", [("embedded", ("speech",), ("synthetic", "noisy"))]),
    ("validation TTS speech", [(VALIDATION, ("speech",), None)]),
    ("music", [("embedded", ("music",), None), (VALIDATION, ("music",), None)]),
)
BITRATES = (1.5, 3.0, 6.0)
METRICS = ("mel_distance", "pesq_wb", "stoi", "visqol_speech", "kbps_actual")
COMPARED_METRICS = ("mel_distance", "pesq_wb", "stoi", "visqol_speech")
MAX_MEGABYTES = 5.0
SEED = 0
# The paper's sampling (temperature 1, the codec's default) and a cooler one, our choice: a
# weak model's samples carry its uncertainty as noise, which a lower temperature trades for
# a flatter, more predictable signal.
DECODINGS = {"samplernn": {}, "samplernn-cool": {"temperature": 0.7}}
# The paper's Table 1, test NLL in bits per sample (models.md section 5).
PAPER_TABLE_1 = {
    "2-tier": {"Blizzard": 1.392, "Onomatopoeia": 2.026, "Music": 1.076},
    "3-tier": {"Blizzard": 1.387, "Onomatopoeia": 1.990, "Music": 1.159},
}


def run_checkpoint(run: Path) -> Path:
    """The run's exported model, else its resumable state."""
    exported = run / "model.pt"
    return exported if exported.exists() else run / "last.pt"


def ship(run: Path, target: Path, conditional: bool) -> Checkpoint:
    """The run's model in float16 at ``target``; a decoder referencing the shipped EnCodec."""
    source = run_checkpoint(run)
    trained = load_checkpoint(source, "samplernn")
    network = trained.network(MODEL_NETWORK)
    tokenizer = None
    if conditional:
        trained_on, shipped = trained.metadata.get("codec_hash"), EncodecCodec().checkpoint_hash
        if trained_on != shipped:
            raise CheckpointError(
                f"{source} learnt the latent of another EnCodec (hash {trained_on}) than the "
                f"shipped demo {ENCODEC_DEMO} ({shipped})"
            )
        tokenizer = ENCODEC_DEMO
    with tempfile.TemporaryDirectory() as folder:
        bundled = Path(folder) / "bundle.pt"
        samplernn_checkpoint(
            samplernn_model.SampleRnnConfig.from_json(network.config),
            network.state_dict,
            tokenizer,
            step=trained.step,
            metadata=trained.metadata,
        ).save(bundled)
        ship_half_precision(bundled, bundled, "samplernn")
        shipped = load_checkpoint(bundled, "samplernn")
        shipped.metadata["source"] = str(source.resolve())
        shipped.save(target)
    shipped = load_checkpoint(target, "samplernn")
    if conditional and shipped.network(TOKENIZER_NETWORK).reference.path != ENCODEC_DEMO.resolve():
        raise CheckpointError(f"{target}: expected its EnCodec to be {ENCODEC_DEMO}")
    return shipped


def nll_table(out: Path, limit: int | None) -> pd.DataFrame:
    """Held-out NLL (mean over items [95% CI], items) per model and set."""
    models = [("unconditional", DEMO_UNCONDITIONAL, None)] + [
        (f"decoder on {bitrate:g} kbps", DEMO_DECODER, bitrate) for bitrate in BITRATES
    ]
    records = []
    for label, path, bitrate in models:
        for name, sources in NLL_SETS:
            rows = []
            for index, (spec, tags, excluded) in enumerate(sources):
                run_dir = out / "nll" / f"{label}-{name}-{index}".replace(" ", "_")
                settings = NllSettings(
                    model=str(path),
                    data=spec,
                    bitrate=bitrate,
                    limit=limit,
                    tags=tags,
                    exclude_tags=excluded,
                )
                run_nll(settings, run_dir)
                rows += [json.loads(line) for line in (run_dir / RESULTS_FILE).open()]
            result = summary(rows)["all"]
            records.append(
                {
                    "model": label,
                    "set": name,
                    "items": result["items"],
                    "bits/sample [95% CI]": f"{result['bits_per_sample']:.3f} "
                    f"[{result['ci_low']:.3f}, {result['ci_high']:.3f}]",
                    "pooled": f"{result['pooled_bits_per_sample']:.3f}",
                }
            )
    return pd.DataFrame(records)


def condition_use(limit: int | None) -> pd.DataFrame:
    """Does the decoder read the bitstream? Its NLL on each held-out real speech item with the
    stream of the item (at each bitrate) against the same stream time-reversed (the same
    frames, out of place) and against none (zeros): what the true stream saves, in bits per
    sample."""
    loaded = load_samplernn(DEMO_DECODER)
    model, config = loaded.model, loaded.model.config
    records = []
    spec, tags, excluded = NLL_SETS[0][1][0]
    for item in load_dataset(spec, tags=tags, exclude_tags=excluded, limit=limit):
        read = load_audio(item.path)
        mono = read.audio.mean(dim=0, keepdim=True)
        audio = resample(mono, read.sample_rate, config.sample_rate)[0]
        samples = audio.shape[0] // config.history * config.history
        levels = torch.cat([torch.full((config.history,), ZERO_LEVEL), quantize(audio[:samples])])[
            None
        ]
        for bitrate in BITRATES:
            latent = loaded.tokenizer.encode_latent(mono, read.sample_rate, bitrate)
            condition = model.align_condition(latent, samples)
            true = model.sequence_bits(levels, condition) / samples
            records.append(
                {
                    "item": item.id,
                    "kbps": bitrate,
                    "true": true,
                    "reversed": model.sequence_bits(levels, condition.flip(1)) / samples - true,
                    "zeros": model.sequence_bits(levels, torch.zeros_like(condition)) / samples
                    - true,
                }
            )
    frame = pd.DataFrame(records)
    rows = []
    for bitrate, group in frame.groupby("kbps"):
        row = {
            "kbps": f"{bitrate:g}",
            "items": len(group),
            "NLL, true stream": group["true"].mean(),
        }
        for column, name in (("reversed", "reversed"), ("zeros", "zeros")):
            low, high = bootstrap_mean_ci(group[column].to_numpy())
            row[f"extra bits, {name} stream [95% CI]"] = (
                f"{group[column].mean():+.3f} [{low:+.3f}, {high:+.3f}]"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def score(out: Path, limit: int | None, workers: int) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """The codec sweep's summary, the paired comparisons and the run."""
    settings = SweepSettings(
        codecs=(*DECODINGS, "encodec-demo"),
        label_codecs={"encodec-demo": "encodec", "samplernn-cool": "samplernn"},
        codec_options={label: options for label, options in DECODINGS.items() if options},
        codec_bitrates={label: BITRATES for label in (*DECODINGS, "encodec-demo")},
        seeds=(SEED,),
        metrics=METRICS,
        listening_items=2,
        limit=limit,
        **HELD_OUT,
    )
    run_dir = out / "codec"
    if (run_dir / "config.json").exists():  # a rebuild of the card resumes the scored run
        result = run_sweep(workers=workers, resume=run_dir)
    else:
        result = run_sweep(settings, workers=workers, run_dir=run_dir, cache_dir=None)
    build_report(result.run_dir)
    frame, directions = results_frame(result.run_dir), metric_directions(result.run_dir)
    compared = pd.concat(
        [
            paired_comparison(
                frame,
                ConditionKey("encodec-demo", bitrate),
                ConditionKey(decoding, bitrate),
                directions,
                metrics=list(COMPARED_METRICS),
            ).assign(decoding=decoding, bitrate=bitrate)
            for decoding in DECODINGS
            for bitrate in BITRATES
        ],
        ignore_index=True,
    )
    return summary_stats(frame, directions), compared, result.run_dir


def speed_lines() -> list[str]:
    """Generation speed from the benchmark's report, if it has been run."""
    if not SPEED_REPORT.exists():
        return ["Not measured yet: run `python benchmarks/samplernn_speed.py`."]
    report = json.loads(SPEED_REPORT.read_text())
    lines = [
        f"From `reports/samplernn_speed.json` ({report['threads']} thread(s), "
        f"{report['device']['cpu_model']}, median of {report['rounds']} rounds); x real time "
        "> 1 is faster than real time.",
        "",
        "| model | parameters | samples/s | x real time | incremental / naive |",
        "|---|---|---|---|---|",
    ]
    for name, figures in report["samplernn"].items():
        naive = figures["naive_comparison"]
        lines.append(
            f"| SampleRNN `{name}` (16 kHz) | {figures['parameters'] / 1e6:.2f} M | "
            f"{figures['samples_per_second']:.0f} | {figures['x_real_time']:.3f} | "
            f"{naive['speed_up']:.1f}x over {naive['samples']} samples |"
        )
    for name, key in (
        ("`samplernn` codec", "samplernn_codec_decode"),
        ("EnCodec demo", "encodec_decode"),
    ):
        for bitrate, figures in report[key].items():
            lines.append(
                f"| {name} decode, {bitrate} kbps (24 kHz out) | | "
                f"{figures['samples_per_second']:.0f} | {figures['x_real_time']:.3g} | |"
            )
    return lines


def facts(checkpoint: Checkpoint, what: str) -> list[tuple[str, str]]:
    metadata, settings = checkpoint.metadata, checkpoint.metadata["train_settings"]
    network = checkpoint.network(MODEL_NETWORK)
    config = samplernn_model.SampleRnnConfig.from_json(network.config)
    parameters = sum(value.numel() for value in network.state_dict.values())
    path = checkpoint.path
    return [
        (
            f"{what}: file",
            f"`{path.name}` ({path.stat().st_size / 1e6:.2f} MB, {metadata['stored_as']}; "
            "loaded as float32), weights hash "
            f"`{network.hash}`",
        ),
        (
            f"{what}: model",
            f"`{config.name}`: frame sizes {list(config.frame_sizes)}, "
            f"{config.rnn.upper()} {list(config.rnn_layers)} layer(s) of {config.rnn_dim}, "
            f"embedding {config.embedding_dim}, MLP {config.mlp_dim}, {config.quantization} "
            f"8-bit at {config.sample_rate} Hz; {parameters / 1e6:.2f} M parameters"
            + (
                f"; conditioned on the EnCodec demo's {config.condition_dim}-d latent, one frame "
                f"every {config.condition_hop:.2f} samples"
                if config.condition_dim
                else ""
            ),
        ),
        (
            f"{what}: training",
            f"{checkpoint.step} steps (TBPTT chunks of {settings['tbptt_samples']} samples, "
            f"batch {settings['batch_size']} x {settings['segment_seconds']} s sequences), Adam "
            f"lr {settings['learning_rate']:g}, clip +-{settings['gradient_clip']:g}, seed "
            f"{settings['seed']}; {metadata['wall_seconds'] / 60:.0f} min on "
            f"{metadata.get('device', 'cpu')}, torch {checkpoint.versions.get('torch')}; git "
            f"{_git_fact(metadata.get('git', {}))}",
        ),
        (
            f"{what}: data",
            f"`{settings['data']}`: {metadata['data_seconds'] / 3600:.2f} h built by "
            "`scripts/build_training_corpus.py` (TTS speech in many voices, synthesised music, "
            "general audio; see its PROVENANCE.md)",
        ),
    ]


def comparison_table(compared: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "decoding": compared["decoding"],
            "kbps": compared["bitrate"].map(lambda bitrate: f"{bitrate:g}"),
            "metric": compared["metric"],
            "EnCodec": compared["baseline_mean"].map(lambda value: f"{value:.3f}"),
            "SampleRNN": compared["candidate_mean"].map(lambda value: f"{value:.3f}"),
            "difference [95% CI]": [
                f"{row.mean_difference:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
                for row in compared.itertuples()
            ],
            "p": compared["p_value"].map(lambda value: f"{value:.3g}"),
            "verdict": compared["verdict"].str.replace("candidate", "SampleRNN"),
        }
    )


def unverified_choices() -> str:
    docstring = inspect.getdoc(samplernn_model)
    return docstring[docstring.index("Choices the paper leaves open") :]


def write_card(
    unconditional: Checkpoint,
    decoder: Checkpoint,
    nll: pd.DataFrame | None,
    use: pd.DataFrame | None,
    codec_scores: tuple[pd.DataFrame, pd.DataFrame, Path] | None,
) -> Path:
    paper = pd.DataFrame(PAPER_TABLE_1).T.reset_index(names="SampleRNN (paper, Table 1)")
    lines = [
        *card_header(
            "SampleRNN demo checkpoints",
            [
                "**These are the project's small demo models, trained on a 2-core CPU. They are "
                "not the",
                "paper's weights** (none are published) and far smaller than its models. The "
                "unconditional",
                "model is scored by `bench nll`; the decoder lets `bench run --codec samplernn` "
                "work out of",
                "the box (pass `--checkpoint` for a `bench train samplernn --codec-checkpoint` "
                "model).",
            ],
            facts(unconditional, "unconditional") + facts(decoder, "decoder"),
        ),
        "## Held-out NLL in bits per sample",
        "",
        "Teacher-forced test NLL (`bench nll`), the mean over items [95% BCa bootstrap CI]",
        "and the bits pooled over all samples. The decoder is scored on the latent EnCodec",
        "sends at each bitrate. **Other data than the paper's:** Blizzard, Onomatopoeia and",
        "the Beethoven sonatas are not available here; and our quantization is fixed full",
        "scale, where the paper's code min-max normalises each 8 s sequence. Our items are",
        "loudness-normalised to -20 LUFS, so they use fewer of the 256 levels, which lowers",
        "the NLL of any model: the figures are not comparable across the two tables.",
        "",
        nll.to_markdown(index=False) if nll is not None else "(not scored: --no-score)",
        "",
        paper.to_markdown(index=False, floatfmt=".3f"),
        "",
        "## Does the decoder read the bitstream?",
        "",
        "The decoder's NLL on the held-out real speech with each item's own stream, and the",
        "bits per sample it loses when the same stream is time-reversed (right frames, wrong",
        "places) or replaced by zeros; mean over items [95% BCa bootstrap CI]. The bits it",
        "saves are the information it takes from the bitstream: little, if these are small.",
        "",
        use.to_markdown(index=False, floatfmt=".3f") if use is not None else "(not scored)",
        "",
    ]
    if codec_scores is not None:
        stats, compared, run_dir = codec_scores
        table = stats.sort_values(["bitrate", "label"], kind="stable").reset_index(drop=True)
        lines += [
            "## As a codec decoder, beside the EnCodec demo on the same bits",
            "",
            f"The {int(compared['pairs'].max())} LibriVox and CMU cards utterances of the "
            "embedded corpus (never trained on),",
            "scored with `bench run`'s metrics; each cell is the mean [95% bootstrap CI over",
            f"items]. SampleRNN decodes with seed {SEED} at 16 kHz, resampled to 24 kHz;",
            "`samplernn` samples at temperature 1 as the paper does, `samplernn-cool`",
            "(`samplernn:temperature=0.7`) cooler. All decode EnCodec's bitstream, so",
            "`kbps_actual` is equal by construction.",
            f"Run and report: `{run_dir}`.",
            "",
            markdown_table(table),
            "",
            "Paired over items (SampleRNN minus EnCodec; Wilcoxon signed-rank test at 5 %):",
            "",
            comparison_table(compared).to_markdown(index=False),
            "",
        ]
    lines += [
        "## Generation speed",
        "",
        *speed_lines(),
        "",
        "## Unverified choices",
        "",
        "From `bench.codecs.samplernn.model`:",
        "",
        unverified_choices(),
        "",
        "The codec decoder's, ours (Klejsa et al. conditioned on a parametric codec's features; no",
        "paper fixes how SampleRNN reads EnCodec's): the dequantized latent of the levels sent,",
        "into the top tier only; one decoder for every bitrate, trained on a bitrate drawn per",
        "sequence; during training EnCodec codes the 16 kHz training audio upsampled to 24 kHz,",
        "so it never sees content above 8 kHz there; the `small` width (twice `tiny`'s) so that",
        "the top tier has room for the conditioning.",
        "",
    ]
    card = DEMO_DECODER.parent / "MODEL_CARD.md"
    card.write_text("\n".join(lines))
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unconditional-run", type=Path, required=True)
    parser.add_argument("--decoder-run", type=Path, required=True)
    parser.add_argument("--scores", type=Path, default=Path("/tmp/samplernn_demo_scores"))
    parser.add_argument("--no-score", action="store_true", help="ship the checkpoints only")
    parser.add_argument("--limit", type=int, default=None, help="score the first N items only")
    parser.add_argument("--workers", type=int, default=2)
    arguments = parser.parse_args()
    unconditional = ship(arguments.unconditional_run, DEMO_UNCONDITIONAL, conditional=False)
    decoder = ship(arguments.decoder_run, DEMO_DECODER, conditional=True)
    megabytes = (DEMO_UNCONDITIONAL.stat().st_size + DEMO_DECODER.stat().st_size) / 1e6
    if megabytes > MAX_MEGABYTES:
        raise SystemExit(f"the checkpoints are {megabytes:.2f} MB, over {MAX_MEGABYTES:g} MB")
    print(f"shipped {DEMO_UNCONDITIONAL.name} and {DEMO_DECODER.name}: {megabytes:.2f} MB")
    nll, use, codec_scores = None, None, None
    if not arguments.no_score:
        nll = nll_table(arguments.scores, arguments.limit)
        use = condition_use(arguments.limit)
        codec_scores = score(arguments.scores, arguments.limit, arguments.workers)
    print(f"card: {write_card(unconditional, decoder, nll, use, codec_scores)}")


if __name__ == "__main__":
    main()
