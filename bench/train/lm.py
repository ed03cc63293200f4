"""`bench train --lm`: the entropy-coding LM of EnCodec (Défossez et al. 2022, Sec. 3.3).

A trained codec is frozen. Each step encodes a seeded batch of random segments into codes at
the codec's largest bandwidth, and takes one Adam step on the LM's cross-entropy of each
frame's codes given the frames before it (:func:`lm_loss`), under the same causal window as
the range coder. The result is the codec checkpoint with the LM added
(``extra_states["lm"]``, its ``EntropyLM`` arguments in ``metadata["lm_config"]``), which
``EncodecCodec(checkpoint, entropy_coding=True)`` loads.

The coder sends only the first K codebooks of a bandwidth, and the LM's input is the sum of
their K embeddings, so an LM fed all codebooks in training would meet inputs it never saw at
the lower bandwidths. Each batch is therefore split across the codec's bandwidths. As in
``bench train``, every random draw comes from (seed, step), so a resumed run ends with the
weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from bench.codecs.checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_strictly
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.encodec.entropy import EntropyLM, lm_loss
from bench.codecs.encodec.model import EncodecConfig
from bench.provenance import backend_versions, git_state
from bench.train.trainer import SegmentSampler, resume_log

LM_LAST_CHECKPOINT = "lm_last.pt"
LM_LOG_FILE = "lm_log.jsonl"
LM_MODEL_CHECKPOINT = "model_lm.pt"
# The codec name lm_last.pt records: the resumable LM state is not a codec checkpoint, and
# `load_checkpoint(path, "encodec")` refuses it by this name.
LM_STATE_CODEC = "encodec-lm"


@dataclass(frozen=True)
class LMTrainSettings:
    """Everything that determines an LM training run (where it writes excluded).

    ``checkpoint`` is the codec: a codec-bench EnCodec checkpoint such as ``bench train``'s
    ``model.pt``. The LM defaults are the paper's (d = 200, 5 layers, 8 heads, FFN 4d, a
    3.5 s window, 5 s training sequences); the paper gives no optimiser settings.
    """

    checkpoint: str
    data: str
    steps: int
    batch_size: int = 16
    segment_seconds: float = 5.0
    context_seconds: float = 3.5
    dim: int = 200
    num_heads: int = 8
    num_layers: int = 5
    hidden_scale: float = 4.0
    learning_rate: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 100
    data_limit: int | None = None

    def __post_init__(self) -> None:
        counts = {
            "--steps": self.steps,
            "--batch-size": self.batch_size,
            "--lm-dim": self.dim,
            "--lm-heads": self.num_heads,
            "--lm-layers": self.num_layers,
            "--checkpoint-every": self.checkpoint_every,
        }
        too_small = {name: value for name, value in counts.items() if value < 1}
        if too_small:
            raise ValueError(f"expected {', '.join(too_small)} >= 1, got {too_small}")
        positive = {
            "--segment-seconds": self.segment_seconds,
            "--lm-context-seconds": self.context_seconds,
            "--lm-learning-rate": self.learning_rate,
            "hidden_scale": self.hidden_scale,
        }
        not_positive = {name: value for name, value in positive.items() if not value > 0}
        if not_positive:
            raise ValueError(f"expected {', '.join(not_positive)} > 0, got {not_positive}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> LMTrainSettings:
        return cls(**data)


def lm_config(settings: LMTrainSettings, config: EncodecConfig) -> dict:
    """The ``EntropyLM`` arguments: every codebook of ``config``, the size of ``settings``."""
    return {
        "n_q": config.n_q,
        "card": config.bins,
        "dim": settings.dim,
        "num_heads": settings.num_heads,
        "num_layers": settings.num_layers,
        "hidden_scale": settings.hidden_scale,
        "past_context": int(settings.context_seconds * config.frame_rate),
    }


@dataclass
class LMTrainState:
    """The LM, the arguments that built it and its optimiser, at ``step``."""

    lm: EntropyLM
    config: dict
    optimizer: torch.optim.Optimizer
    step: int = 0


def build_lm_state(settings: LMTrainSettings, config: EncodecConfig) -> LMTrainState:
    torch.manual_seed(settings.seed)
    arguments = lm_config(settings, config)
    lm = EntropyLM(**arguments)
    optimizer = torch.optim.Adam(lm.parameters(), lr=settings.learning_rate)
    return LMTrainState(lm, arguments, optimizer)


def save_lm_state(
    state: LMTrainState, settings: LMTrainSettings, path: Path, metadata: dict
) -> str:
    """The resumable state: LM, optimiser, step, settings and the codec's weights hash."""
    return Checkpoint(
        codec=LM_STATE_CODEC,
        config=state.config,
        state_dict=state.lm.state_dict(),
        step=state.step,
        extra_states={"optimizer": state.optimizer.state_dict()},
        metadata={**metadata, "lm_settings": settings.to_json()},
    ).save(path)


def load_lm_state(
    path: Path, settings: LMTrainSettings, config: EncodecConfig, codec_hash: str
) -> LMTrainState:
    """The run saved at ``path``: same settings but ``steps``, and the same codec weights."""
    checkpoint = load_checkpoint(path, LM_STATE_CODEC)
    saved = LMTrainSettings.from_json(checkpoint.metadata["lm_settings"])
    if replace(saved, steps=settings.steps) != settings:
        raise ValueError(
            f"--resume: {path} was trained with other settings; only --steps may change. "
            f"Saved: {saved.to_json()}"
        )
    if checkpoint.metadata["codec_hash"] != codec_hash:
        raise ValueError(
            f"--resume: {path} was trained on the codes of other codec weights (hash "
            f"{checkpoint.metadata['codec_hash'][:12]}) than {settings.checkpoint} now holds "
            f"({codec_hash[:12]}); start a new run in another --out folder"
        )
    state = build_lm_state(settings, config)
    load_strictly(state.lm, checkpoint.state_dict, str(path))
    state.optimizer.load_state_dict(checkpoint.extra_states["optimizer"])
    state.step = checkpoint.step
    return state


def load_codec(path: str | os.PathLike) -> tuple[Checkpoint, EncodecCodec]:
    """The codec checkpoint (to extend with the LM) and the codec that will code with it.

    Its codes come from the codec's own inference model (weight norm folded), so the LM learns
    exactly the codes the codec sends.
    """
    try:
        checkpoint = load_checkpoint(path, "encodec")
    except CheckpointError as error:
        raise CheckpointError(
            f"--checkpoint: expected an EnCodec checkpoint written by `bench train` (its "
            f"model.pt): {error}"
        ) from None
    if not checkpoint.state_dict:
        raise CheckpointError(f"--checkpoint: {path} holds no codec weights (empty state dict)")
    return checkpoint, EncodecCodec(checkpoint=path)


def check_sequence_length(
    settings: LMTrainSettings, codec: EncodecCodec, past_context: int
) -> None:
    """Refuse training sequences shorter than the context the coder gives the LM.

    The coder attends over up to ``past_context`` earlier frames (or a whole codec segment
    where the configuration cuts audio into segments, each coded on its own); an LM that
    never saw contexts that long would meet them first when coding.
    """
    config = codec.config
    crop = int(round(settings.segment_seconds * config.sample_rate))
    segment = codec.model.segment_length
    frames = math.ceil(min(crop, segment or crop) / config.hop_length)
    longest_stream = math.ceil(segment / config.hop_length) if segment else math.inf
    needed = min(past_context + 1, longest_stream)
    if frames < needed:
        raise ValueError(
            f"--segment-seconds {settings.segment_seconds} gives {frames} frames per training "
            f"sequence, but the coder gives the LM up to {needed} frames of context "
            f"(--lm-context-seconds {settings.context_seconds} at {config.frame_rate} Hz): "
            "use longer segments or a shorter context"
        )


def lm_train_step(
    state: LMTrainState,
    codes: torch.Tensor,
    levels: list[tuple[float, int]],
    frame_rate: float,
    seed: int,
) -> dict:
    """One Adam step on ``codes`` ``(batch, n_q, frames)``; returns the values to log.

    Batch item ``i`` trains bandwidth ``levels[(step + i) % len(levels)]`` (its first
    ``n_q`` codebooks), so every bandwidth gets items in every batch of at least
    ``len(levels)``. The loss is the mean cross-entropy per code over the batch, i.e. the
    batch's coded size; per bandwidth, it gives the estimated kbps ``bits per code x n_q x
    frame_rate / 1000``.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + state.step)
    total, count, kbps = 0.0, 0, {}
    for index, (bandwidth, n_q) in enumerate(levels):
        group = codes[(index - state.step) % len(levels) :: len(levels), :n_q]
        if not len(group):
            continue
        loss = lm_loss(state.lm, group, generator=generator)
        total = total + loss * group.numel()
        count += group.numel()
        kbps[f"{bandwidth:g}"] = loss.item() / math.log(2) * n_q * frame_rate / 1000
    loss = total / count
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    state.step += 1
    return {"loss": loss.item(), "bits_per_code": loss.item() / math.log(2), "kbps": kbps}


def train_lm(
    settings: LMTrainSettings,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    sampler: SegmentSampler | None = None,
) -> Path:
    """Train to ``settings.steps``; returns the path of the codec checkpoint with the LM.

    ``out_dir`` receives ``lm_last.pt`` (resumable state), ``lm_log.jsonl`` (one line per
    step) and ``model_lm.pt`` (the codec checkpoint plus the LM).
    """
    out_dir = Path(out_dir)
    last = out_dir / LM_LAST_CHECKPOINT
    codec_checkpoint, codec = load_codec(settings.checkpoint)
    config = codec.config
    if resume:
        if not last.exists():
            raise ValueError(f"--resume: expected {last} from an earlier run, found none")
        state = load_lm_state(last, settings, config, codec_checkpoint.hash)
    else:
        if last.exists():
            raise ValueError(f"{out_dir} already holds an LM training run; pass --resume")
        state = build_lm_state(settings, config)
    check_sequence_length(settings, codec, state.config["past_context"])
    sampler = sampler or SegmentSampler(
        settings.data,
        config.sample_rate,
        config.channels,
        settings.segment_seconds,
        settings.data_limit,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / LM_LOG_FILE
    elapsed_before = resume_log(log_path, state.step) if resume else 0.0
    metadata = {
        "codec_checkpoint": str(settings.checkpoint),
        "codec_hash": codec_checkpoint.hash,
        "data": settings.data,
        "data_seconds": sampler.seconds,
        "versions": backend_versions(),
        "git": git_state(),
    }
    levels = [(bandwidth, codec.model.n_q_for(bandwidth)) for bandwidth in config.bandwidths]
    started = time.perf_counter()
    bar = tqdm(
        total=settings.steps, initial=state.step, desc="bench train --lm", disable=not progress
    )
    interrupted = False
    with bar, open(log_path, "a", encoding="utf-8") as log_file:
        try:
            while state.step < settings.steps:
                batch = sampler.batch(settings.seed, state.step, settings.batch_size)
                # Where the configuration codes audio in separate segments (48 kHz), one
                # segment is the longest stream the coder sees: train on the first.
                batch = batch[..., : codec.model.segment_length]
                codes = codec.model.encode(batch, max(config.bandwidths))[0].codes
                log = lm_train_step(state, codes, levels, config.frame_rate, settings.seed)
                log.update(
                    step=state.step,
                    wall_seconds=elapsed_before + time.perf_counter() - started,
                )
                log_file.write(json.dumps(log) + "\n")
                log_file.flush()
                bar.update(1)
                bar.set_postfix(bits_per_code=f"{log['bits_per_code']:.3f}")
                if state.step % settings.checkpoint_every == 0 or state.step == settings.steps:
                    save_lm_state(
                        state, settings, last, {**metadata, "wall_seconds": log["wall_seconds"]}
                    )
        except KeyboardInterrupt:
            # As `bench train`: keep every finished step, export, and let --resume continue.
            interrupted = True
            save_lm_state(
                state,
                settings,
                last,
                {**metadata, "wall_seconds": elapsed_before + time.perf_counter() - started},
            )
    wall = elapsed_before + time.perf_counter() - started
    model_path = export_codec_with_lm(
        codec_checkpoint,
        state,
        settings,
        out_dir / LM_MODEL_CHECKPOINT,
        {**metadata, "wall_seconds": wall},
    )
    if interrupted:
        raise KeyboardInterrupt(f"stopped at step {state.step}; model exported to {model_path}")
    return model_path


def export_codec_with_lm(
    codec_checkpoint: Checkpoint,
    state: LMTrainState,
    settings: LMTrainSettings,
    path: Path,
    metadata: dict,
) -> Path:
    """The codec checkpoint with ``extra_states["lm"]`` and ``metadata["lm_config"]``.

    The codec's weights, configuration, step and metadata are kept; any other extra state
    (the optimisers of a ``last.pt``) and any earlier LM are left out, as the codec needs none.
    """
    Checkpoint(
        codec=codec_checkpoint.codec,
        config=codec_checkpoint.config,
        state_dict=codec_checkpoint.state_dict,
        step=codec_checkpoint.step,
        extra_states={"lm": state.lm.state_dict()},
        metadata={
            **codec_checkpoint.metadata,
            "lm_config": state.config,
            "lm_training": {**metadata, "steps": state.step, "settings": settings.to_json()},
        },
    ).save(path)
    return path
