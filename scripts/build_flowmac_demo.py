"""Ship a FlowMAC codec run and a vocoder run as the package's demo checkpoint, with its card.

    python scripts/build_flowmac_demo.py --codec-run /work/flowmac_training/codec \\
        --vocoder-run /work/flowmac_training/vocoder --scores /tmp/flowmac_scores

1. Bundles the codec (the run's ``model.pt``, else its resumable ``last.pt``) and the vocoder
   into one checkpoint, stored in float16 without the codebooks' EMA sums and with the large
   weight matrices in int8 (one scale per output channel; 6.9 MB in float16 alone, over the
   5 MB budget), as ``codecs/flowmac/checkpoints/flowmac_tiny_demo.pt``. The codec loads it
   into float32; the scores are those of the shipped file.
2. Scores it on the held-out real speech of the embedded corpus (LibriVox and CMU cards
   utterances, never trained on) with ``bench run``'s own sweep: 1.5 and 3 kbps at NFE 1 to 32
   with Euler and with Heun, the copy-synthesis condition, the EnCodec and HiFi-Codec demos
   and Opus, and builds the run's report (its quality-against-NFE and -RTF plots).
3. Writes ``MODEL_CARD.md`` beside the checkpoint: data, steps, wall time, the unverified
   choices, the scores and where quality saturates with NFE.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from bench.codecs.checkpoint import Checkpoint, load_checkpoint
from bench.codecs.flowmac.codec import DEMO_CHECKPOINT, FlowMacCodec
from bench.codecs.modules.flow_matching import ot_path
from build_demo_checkpoint import HELD_OUT, _git_fact, card_header, ship_half_precision

from bench import audio as bench_audio
from bench.data import load_dataset
from bench.metrics.signal import mel_distance
from bench.report.build import build_report
from bench.report.stats import metric_directions, results_frame, summary_stats
from bench.report.table import markdown_table
from bench.sweep import SweepSettings, run_sweep

METRICS = ("mel_distance", "pesq_wb", "stoi", "visqol_speech", "dnsmos", "kbps_actual")
# Where quality saturates with NFE, judged by a distance, a perceptual full-reference and a
# no-reference metric (lower is better for the first): a flow's samples can trade distance to
# the reference for realism, so they may disagree.
SATURATION_METRICS = {"mel_distance": -1, "visqol_speech": 1, "dnsmos": 1}
NFES = (1, 2, 4, 8, 16, 32)
CARD = DEMO_CHECKPOINT.parent / "MODEL_CARD.md"
# Measured once, when the demo moved from float16 (6.90 MB) to int8 matrices (3.74 MB).
INT8_NOTE = (
    "The weight tensors of 4096 or more entries, codebooks excepted, are stored as int8 with "
    "one float32 scale per output channel and load as float32; this keeps the file within "
    "the package's 5 MB (6.90 MB in float16 alone). Measured against the float16 file on the "
    "held-out items below: 95% of the codes at 1.5 kbps and 90% at 3 kbps are identical, and "
    "the mean mel distance and ViSQOL at NFE 1 and 8 differ by at most 0.001 and 0.01."
)
# Quality "saturates" at the smallest NFE within this fraction of the best mel distance.
SATURATION_TOLERANCE = 0.02

UNVERIFIED = """## Unverified choices

The paper's body was not retrievable; these are the project's choices, each a config field
(`FlowMacConfig`, `UNetConfig`, `VocoderConfig`, `FlowMacTrainSettings`):

- **Normalisation** per mel band (mean and std over 64 training segments at step 0), where
  the paper says only "mean and std over the dataset".
- **Mel transformers** without positional encoding (the paper names none); width, heads and
  feed-forward size (paper: 6 blocks; tiny: 2 blocks of width 64, 2 heads, FF 128).
- **CFM:** sigma_min 1e-4 and logit-normal t with location 0, scale 1; the U-Net's widths,
  one transformer block per level, 4 heads of 64 (tiny: 2 of 32), dropout, time x 1000 before
  the sinusoidal embedding (Grad-TTS); the CFM gradient reaches the encoder through the coarse
  mel (one network, one total loss).
- **Guidance** as `v_u + s (v_c - v_u)`; the paper's "CFG factor 1" is read as s = 2 (64 NFE
  for 32 Euler steps). The codec's default is s = 1 (no guidance, one pass per step).
- **Quantizer:** the project's EMA codebooks with k-means initialisation and dead-code
  replacement, each stage's lookup in a 16-d projection with the straight-through estimator
  inside it (as DAC's factorised codes), so both projections learn from the output losses.
- **Vocoder:** BigVGAN's generator and losses (least squares GAN, feature matching 2, mel
  L1 45) at demo size; the paper's "1024 initial channels plus an additional upsampling layer"
  is the `paper` config.
- **Windows:** signals longer than 512 frames (10.9 s) are coded in independent windows
  (attention is quadratic in length); the vocoder runs in chunks of 256 frames with 16 frames
  of context, which gives the same audio as one pass.
"""


HISTORY = """## History: the first demo's quantizer passed nothing on

The first shipped demo (codec hash `c1eed647...`, 4750 steps) lost quality as it trained
(held-out mel distance at 3 kbps, Euler NFE 1: 0.324 at step 750 on 4 utterances, 0.432 at
step 4750 on all 10) and its quality fell with NFE (0.432 at NFE 1, 0.461 at NFE 32). The
cause was the quantizer: its projected stages applied the straight-through estimator around
the whole stage, so `project_in` learnt from the commitment loss alone, which discarding the input
minimises. On held-out speech its quantized latent was as far from the encoder's output as
the output itself (relative error 1.00 at 4 and 8 stages), its coarse mel no better than the
per-band mean (normalised L1 0.82 against 0.86), and the flow, conditioned on nothing, drew
ever more confident samples of some speech. The estimator now acts inside each stage's 16-d
projection (tested by `test_a_projected_quantizer_learns_to_pass_its_input_on` in
`tests/codecs/modules/test_rvq.py`).

A second run with that fix (4350 steps) coded well (coarse mel L1 0.39, held-out mel distance
about 0.22) but its flow still could not denoise: its U-Net's first level had 64 channels for
128 mel bands, so the velocity from noise could not cancel the noise in every band. A linear
fit of noise to velocity had rank about 45 of 128, the NFE-1 output kept 71% of the noise and
its per-band temporal spread (std) was 2.4 times the reference's at every NFE. The `tiny` U-Net
now has 128 channels, and a config whose first level is narrower than the mel is refused.
These weights were trained after both fixes.
"""


def bundle(codec_run: Path, vocoder_run: Path, target: Path) -> Checkpoint:
    """The codec and vocoder runs' networks in one float32 checkpoint at ``target``."""
    source = codec_run / "model.pt"
    codec = load_checkpoint(source if source.exists() else codec_run / "last.pt", "flowmac")
    vocoder_source = vocoder_run / "model.pt"
    if not vocoder_source.exists():
        vocoder_source = vocoder_run / "last.pt"
    vocoder = load_checkpoint(vocoder_source, "flowmac-vocoder")
    metadata = {key: value for key, value in codec.metadata.items() if key != "train_settings"}
    Checkpoint(
        codec="flowmac",
        networks={"codec": codec.network("codec"), "vocoder": vocoder.network("vocoder")},
        step=codec.step,
        metadata={
            **metadata,
            "train_settings": codec.metadata["train_settings"],
            "vocoder_training": {
                "step": vocoder.step,
                "wall_seconds": vocoder.metadata.get("wall_seconds"),
                "train_settings": vocoder.metadata.get("train_settings"),
                "git": vocoder.metadata.get("git"),
            },
        },
    ).save(target)
    return load_checkpoint(target, "flowmac")


def score(out: Path) -> tuple[pd.DataFrame, Path]:
    labels = {
        "flowmac-euler": ("flowmac", {"solver": "euler"}, (1.5, 3.0)),
        "flowmac-heun": ("flowmac", {"solver": "heun"}, (1.5, 3.0)),
        "flowmac-cfg2": ("flowmac", {"solver": "euler", "guidance": 2.0}, (1.5, 3.0)),
        "flowmac-vocoder": ("flowmac-vocoder", {}, (96.0,)),
        "encodec-demo": ("encodec", {}, (1.5, 3.0)),
        "hificodec-demo": ("hificodec", {}, (1.5, 3.0)),
        "opus": ("opus", {}, (6.0,)),
    }
    settings = SweepSettings(
        codecs=tuple(labels),
        label_codecs={label: codec for label, (codec, _, _) in labels.items() if label != codec},
        codec_options={label: options for label, (_, options, _) in labels.items() if options},
        codec_bitrates={label: rates for label, (_, _, rates) in labels.items()},
        nfes=NFES,
        metrics=METRICS,
        listening_items=2,
        **HELD_OUT,
    )
    summary = run_sweep(settings, workers=2, run_dir=out, cache_dir=None, progress=True)
    build_report(summary.run_dir)
    stats = summary_stats(results_frame(summary.run_dir), metric_directions(summary.run_dir))
    return stats, summary.run_dir


def saturation(stats: pd.DataFrame) -> list[str]:
    """Per metric, condition and bitrate: the mean at each NFE and the smallest NFE within
    ``SATURATION_TOLERANCE`` of the best."""
    lines = []
    for metric, sign in SATURATION_METRICS.items():
        rows = stats[(stats["metric"] == metric) & stats["nfe"].notna()]
        for (label, bitrate), group in rows.groupby(["label", "bitrate"], sort=False):
            group = group.sort_values("nfe")
            best = (sign * group["mean"]).max()
            within = sign * group["mean"] >= best - SATURATION_TOLERANCE * abs(best)
            curve = ", ".join(
                f"{int(nfe)}: {mean:.3f}"
                for nfe, mean in zip(group["nfe"], group["mean"], strict=True)
            )
            saturated = int(group[within]["nfe"].min())
            lines.append(
                f"- {metric}, {label} at {bitrate:g} kbps, by NFE: {curve}; within "
                f"{SATURATION_TOLERANCE:.0%} of its best from NFE {saturated}."
            )
    return lines


def _held_out_speech(codec: FlowMacCodec) -> list[torch.Tensor]:
    """The held-out speech items, each ``(1, samples)`` at the codec's rate."""
    items = load_dataset(
        HELD_OUT["data"], tags=HELD_OUT["tags"], exclude_tags=HELD_OUT["exclude_tags"]
    ).items
    return [
        bench_audio.prepare(bench_audio.load_audio(item.path), codec.sample_rate, 1)[0]
        for item in items
    ]


def velocity_error_by_time(
    codec: FlowMacCodec, speech: list[torch.Tensor], times=(0.0, 0.05, 0.2, 0.5, 0.8, 0.95)
) -> dict[float, float]:
    """The demo U-Net's mean squared velocity error at fixed times t on the held-out speech
    at 3 kbps (one noise draw per item): how well each part of the path was learnt. A single
    Euler step (NFE 1) evaluates the network at t = 0 alone."""
    generator = torch.Generator().manual_seed(0)
    errors = {time: [] for time in times}
    for audio in speech:
        with torch.inference_mode():
            data = codec.model.normalised_mel(audio)
            condition = codec.model.coarse_mel(codec.encode(audio, 3.0).codes)
            noise = torch.randn(data.shape, generator=generator)
            for time in times:
                t = torch.tensor([time])
                point, target = ot_path(noise, data, t)
                velocity = codec.model.velocity(point, t, condition)
                errors[time].append(float((velocity - target).pow(2).mean()))
    return {time: sum(values) / len(values) for time, values in errors.items()}


def noise_left_after_one_step(codec: FlowMacCodec, speech: list[torch.Tensor]) -> float:
    """The share of the initial noise left in the NFE-1 output on the held-out speech at 3
    kbps: the least-squares coefficient of ``x0`` in ``x0 + v(x0, 0, c) - c``. A velocity
    network that cancels the noise in every band gives about 0."""
    generator = torch.Generator().manual_seed(0)
    residuals, noises = [], []
    for audio in speech:
        with torch.inference_mode():
            condition = codec.model.coarse_mel(codec.encode(audio, 3.0).codes)
            noise = torch.randn(condition.shape, generator=generator)
            velocity = codec.model.velocity(noise, torch.zeros(1), condition)
        residuals.append((noise + velocity - condition).flatten())
        noises.append(noise.flatten())
    residual, noise = torch.cat(residuals), torch.cat(noises)
    return float(residual @ noise / (noise @ noise))


def coarse_mel_distance(codec: FlowMacCodec, speech: list[torch.Tensor]) -> dict[float, float]:
    """Per bitrate, the held-out mean mel distance of the coarse mel sent straight to the
    vocoder, without the flow: what the CFM decoder adds to (or takes from) the mel decoder's
    regression output."""
    distances = {}
    for bitrate in codec.bitrates:
        values = []
        for audio in speech:
            with torch.inference_mode():
                coarse = codec.model.coarse_mel(codec.encode(audio, bitrate).codes)
                decoded = codec.audio_of_mel(codec.model.denormalise(coarse), audio.shape[-1])
            values.append(mel_distance(audio, decoded.reshape(audio.shape), codec.sample_rate))
        distances[bitrate] = sum(values) / len(values)
    return distances


def write_card(checkpoint: Checkpoint, stats: pd.DataFrame, run_dir: Path) -> None:
    metadata, settings = checkpoint.metadata, checkpoint.metadata["train_settings"]
    vocoder = metadata["vocoder_training"]
    vocoder_settings = vocoder["train_settings"]
    codec_network, vocoder_network = checkpoint.network("codec"), checkpoint.network("vocoder")
    parameters = {
        name: sum(value.numel() for value in network.state_dict.values())
        for name, network in (("codec", codec_network), ("vocoder", vocoder_network))
    }
    generator = vocoder_network.config["generator"]
    facts = [
        (
            "file",
            f"`{DEMO_CHECKPOINT.name}` ({DEMO_CHECKPOINT.stat().st_size / 1e6:.2f} MB, "
            f"{checkpoint.metadata['stored_as']}; see below)",
        ),
        (
            "weights hashes (SHA-256)",
            f"codec `{codec_network.hash}`, vocoder `{vocoder_network.hash}`",
        ),
        (
            "codec",
            f"`{settings['config']}`: 24 kHz, 128 mels at hop 512 (46.875 frames/s); "
            f"{parameters['codec'] / 1e6:.2f} M parameters; 8 stages x 256 codes in 16-d "
            "projections (3 kbps; 4 stages: 1.5 kbps)",
        ),
        (
            "vocoder",
            f"`{vocoder_settings['config']}`: BigVGAN-style, {generator['initial_channels']} "
            f"initial channels, upsampling {'x'.join(map(str, generator['upsample_rates']))}, "
            f"kernels {tuple(generator['resblock_kernels'])}, anti-aliasing "
            f"{'on' if generator['anti_alias'] else 'off'}; "
            f"{parameters['vocoder'] / 1e6:.2f} M parameters",
        ),
        (
            "codec training",
            f"{checkpoint.step} steps of batch {settings['batch_size']} x "
            f"{settings['segment_seconds']} s, Adam lr {settings['learning_rate']:g} "
            "(paper: 1e-4), "
            f"t {settings['time_sampling']}, condition drop {settings['condition_drop']}, "
            f"bandwidth sampling `{settings['bandwidth_sampling']}`; "
            f"{metadata['wall_seconds'] / 60:.0f} min",
        ),
        (
            "vocoder training",
            f"{vocoder['step']} steps of batch {vocoder_settings['batch_size']} x "
            f"{vocoder_settings['segment_seconds']} s, AdamW lr "
            f"{vocoder_settings['learning_rate']:g}, "
            f"discriminators {', '.join(vocoder_settings['discriminators']) or 'none'}; "
            f"{vocoder['wall_seconds'] / 60:.0f} min",
        ),
        (
            "hardware",
            "a shared 2-core CPU, other work running beside it, torch "
            f"{checkpoint.versions.get('torch')}",
        ),
        (
            "training data",
            f"`{settings['data']}`: {metadata['data_seconds'] / 3600:.2f} h built by "
            "`scripts/build_training_corpus.py` (TTS speech in many voices, synthesised music, "
            "general audio; see its PROVENANCE.md)",
        ),
        (
            "git",
            f"codec {_git_fact(metadata.get('git', {}))}; "
            f"vocoder {_git_fact(vocoder.get('git') or {})}",
        ),
    ]
    # The diagnostics below share one demo codec and one read of the held-out speech.
    codec = FlowMacCodec()
    speech = _held_out_speech(codec)
    noise_left = noise_left_after_one_step(codec, speech)
    table = stats.sort_values(["bitrate", "label", "nfe"], kind="stable").reset_index(drop=True)
    lines = [
        *card_header(
            "FlowMAC tiny demo checkpoint",
            [
                "**This is the project's small demo model, trained on a 2-core CPU. It is not the",
                "paper's weights** (there are none published) and is far below FlowMAC's reported",
                "quality. It lets `bench run --codec flowmac` work out of the box; pass "
                "`--checkpoint`",
                "for a `bench train flowmac` model bundled with its vocoder.",
            ],
            facts,
        ),
        INT8_NOTE,
        "",
        "## Measured on held-out real speech",
        "",
        "The 10 LibriVox and CMU cards utterances of the embedded corpus (never trained on),",
        "scored with `bench run`'s metrics; each cell is the mean [95% bootstrap CI over items].",
        "FlowMAC decodes with seed 0; `flowmac-euler` and `flowmac-heun` at guidance scale 1",
        "(no guidance), `flowmac-cfg2` with Euler at the paper's CFG factor 1 (scale 2, two",
        "passes per step). Heun and guidance spend two network evaluations per step, so they",
        "have no NFE 1. `flowmac-vocoder` is copy synthesis: the vocoder on the unquantized",
        "mel, sent as float16 (96 kbps).",
        f"Run and report (with the quality-against-NFE and -RTF plots): `{run_dir}`.",
        "",
        markdown_table(table),
        "",
        "## Quality against NFE",
        "",
        *saturation(stats),
        "",
        "The coarse mel sent straight to the vocoder, without the flow, has a mel distance of "
        + ", ".join(f"{d:.3f} at {b:g} kbps" for b, d in coarse_mel_distance(codec, speech).items())
        + ".",
        "",
        "Why a distance to the reference rewards the flow's first steps most, and can favour",
        "the coarse mel: from noise x0 at t = 0 the ideal OT velocity is",
        "E[x1 | condition] - (1 - sigma_min) x0, so one Euler step lands on the conditional",
        "mean, and the mel decoder's regression output is such a mean too. More steps follow",
        "the flow to a sample of the conditional distribution: realistic detail that is not",
        "the reference's, which a distance to the reference does not reward. The no-reference",
        "DNSMOS column says what the listener-facing quality does.",
        "",
        "A single Euler step (NFE 1) evaluates the velocity at t = 0 only, which the paper's",
        "logit-normal time sampling rarely trains (`bench train flowmac --time-sampling",
        "uniform` trains every t alike). The demo U-Net's mean squared velocity error on the",
        "held-out items at 3 kbps, by t: "
        + ", ".join(
            f"{time:g}: {error:.2f}"
            for time, error in velocity_error_by_time(codec, speech).items()
        )
        + ". The share of "
        f"the initial noise left in the NFE-1 output: {noise_left:.2f} (the "
        "first demo's 64-channel U-Net left 0.71; see the history below).",
        "",
        UNVERIFIED,
        HISTORY,
    ]
    CARD.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec-run", type=Path, required=True)
    parser.add_argument("--vocoder-run", type=Path, required=True)
    parser.add_argument("--scores", type=Path, default=Path("/tmp/flowmac_demo_scores"))
    parser.add_argument("--no-score", action="store_true", help="ship the checkpoint only")
    arguments = parser.parse_args()
    if not arguments.no_score and arguments.scores.exists():
        parser.error(f"--scores {arguments.scores} exists; pass a new folder")
    torch.set_num_threads(1)
    bundled = arguments.codec_run.parent / "bundle.pt"
    bundle(arguments.codec_run, arguments.vocoder_run, bundled)
    ship_half_precision(bundled, DEMO_CHECKPOINT, "flowmac", int8_matrices=True)
    print(f"wrote {DEMO_CHECKPOINT} ({DEMO_CHECKPOINT.stat().st_size / 1e6:.2f} MB)")
    if arguments.no_score:
        return
    stats, run_dir = score(arguments.scores)
    write_card(load_checkpoint(DEMO_CHECKPOINT, "flowmac"), stats, run_dir)
    print(CARD.read_text())


if __name__ == "__main__":
    main()
