"""The entropy-LM solver: the entropy-coding LM of a trained codec (EnCodec, Défossez et al.
2022, Sec. 3.3). ``bench train lm --checkpoint model.pt`` runs it.

The codec, found through the registry by the name its checkpoint records, must take
``entropy_coding`` (it range-codes its codes under the LM) and declare its LM (``lm_class``)
and the LM's loss (``lm_loss``); it is frozen. Each step encodes a seeded batch of random
segments into codes at the codec's largest bandwidth, and takes one Adam step on the LM's
cross-entropy of each frame's codes given the frames before it, under the same causal window as
the range coder. The export is the codec checkpoint with the LM added as its network ``"lm"``,
which the codec loads with ``entropy_coding=True``.

The coder sends only the first K codebooks of a bandwidth, and the LM's input is the sum of
their K embeddings, so an LM fed all codebooks in training would meet inputs it never saw at
the lower bandwidths. Each batch is therefore split across the codec's bandwidths.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from bench.codecs.base import Codec
from bench.codecs.checkpoint import Checkpoint, CheckpointError, Network, load_checkpoint
from bench.registry import CODECS, codec_options, create_codec
from bench.train.settings import LMTrainSettings
from bench.train.solvers.base import Solver, step_seed


def load_codec(path: str | os.PathLike) -> tuple[Checkpoint, Codec]:
    """The codec checkpoint (to extend with the LM) and the codec that will code with it.

    Its codes come from the codec's own inference model (weight norm folded), so the LM learns
    exactly the codes the codec sends.
    """
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as error:
        raise CheckpointError(
            f"--checkpoint: expected a codec checkpoint written by `bench train` (its "
            f"model.pt): {error}"
        ) from None
    name = checkpoint.codec
    if not (
        name in CODECS.names()
        and "entropy_coding" in codec_options(name)
        and hasattr(CODECS.factory(name), "lm_class")
    ):
        raise ValueError(
            "--checkpoint: expected the checkpoint of a codec with entropy coding (a registered "
            f"codec that takes entropy_coding and declares its lm_class), got a {name!r} "
            f"checkpoint ({path})"
        )
    if not checkpoint.network("codec").state_dict:
        raise CheckpointError(f"--checkpoint: {path} holds no codec weights (empty state dict)")
    return checkpoint, create_codec(checkpoint.codec, checkpoint=path)


class EntropyLMSolver(Solver):
    """The LM and its optimiser, over the codes of a frozen codec."""

    # Beside the codec's own run files, so that its folder can hold both.
    last_checkpoint = "lm_last.pt"
    model_checkpoint = "model_lm.pt"
    log_file = "lm_log.jsonl"
    settings: LMTrainSettings

    def __init__(self, settings: LMTrainSettings, device: torch.device | None = None) -> None:
        # The codec codes on the CPU, where its range coder runs; so does the LM beside it.
        super().__init__(settings, torch.device("cpu"))
        self.codec_checkpoint, self.codec = load_codec(settings.checkpoint)
        config = self.codec.config
        self.name = f"{self.codec_checkpoint.codec}-lm"
        self.sample_rate, self.channels = self.codec.sample_rate, self.codec.channels
        torch.manual_seed(settings.seed)
        # The `EntropyLM` arguments: every codebook of the codec, the size of the settings.
        self.lm_config = {
            "n_q": config.n_q,
            "card": config.bins,
            "dim": settings.dim,
            "num_heads": settings.num_heads,
            "num_layers": settings.num_layers,
            "hidden_scale": settings.hidden_scale,
            "past_context": int(settings.context_seconds * config.frame_rate),
        }
        self.lm = type(self.codec).lm_class(**self.lm_config)
        self.optimizer = torch.optim.Adam(self.lm.parameters(), lr=settings.learning_rate)
        self._check_sequence_length()
        self.levels = [
            (bandwidth, self.codec.model.n_q_for(bandwidth)) for bandwidth in config.bandwidths
        ]

    def _check_sequence_length(self) -> None:
        """Refuse training sequences shorter than the context the coder gives the LM.

        The coder attends over up to ``past_context`` earlier frames (or a whole codec segment
        where the configuration cuts audio into segments, each coded on its own); an LM that
        never saw contexts that long would meet them first when coding.
        """
        settings, config = self.settings, self.codec.config
        crop = int(round(settings.segment_seconds * config.sample_rate))
        segment = self.codec.model.segment_length
        frames = math.ceil(min(crop, segment or crop) / config.hop_length)
        longest_stream = math.ceil(segment / config.hop_length) if segment else math.inf
        needed = min(self.lm_config["past_context"] + 1, longest_stream)
        if frames < needed:
            raise ValueError(
                f"--segment-seconds {settings.segment_seconds} gives {frames} frames per "
                f"training sequence, but the coder gives the LM up to {needed} frames of context "
                f"(--lm-context-seconds {settings.context_seconds} at {config.frame_rate} Hz): "
                "use longer segments or a shorter context"
            )

    def networks(self) -> dict[str, tuple[dict, nn.Module]]:
        return {"lm": (self.lm_config, self.lm)}

    def training_parts(self) -> dict[str, object | None]:
        return {"optimizer": self.optimizer}

    def metadata(self) -> dict:
        return {
            "codec_checkpoint": str(self.settings.checkpoint),
            "codec_hash": self.codec_checkpoint.network("codec").hash,
        }

    def check_resumable(self, checkpoint: Checkpoint) -> None:
        """The saved LM must have learnt the codes of the codec weights there are now."""
        saved, now = checkpoint.metadata.get("codec_hash"), self.metadata()["codec_hash"]
        if saved != now:
            raise ValueError(
                f"--resume: {checkpoint.path} was trained on the codes of other codec weights "
                f"(hash {str(saved)[:12]}) than {self.settings.checkpoint} now holds "
                f"({now[:12]}); start a new run in another --out folder"
            )

    def wrap_for_workers(self, rank: int, world_size: int) -> None:
        if world_size > 1:
            # A step runs one LM forward per bandwidth before its backward, which
            # DistributedDataParallel does not allow.
            raise ValueError(
                f"bench train lm: expected one worker, got {world_size} (the LM trains in one "
                "process; start it without torchrun)"
            )
        super().wrap_for_workers(rank, world_size)

    def run_step(self, step: int) -> dict:
        settings, model = self.settings, self.codec.model
        batch = self.sampler.batch(settings.seed, step, settings.batch_size)
        # Where the configuration codes audio in separate segments (48 kHz), one segment is
        # the longest stream the coder sees: train on the first.
        batch = batch[..., : model.segment_length]
        codes = model.encode(batch, max(self.codec.config.bandwidths))[0].codes
        return self.train_on_codes(codes, step)

    def train_on_codes(self, codes: torch.Tensor, step: int) -> dict:
        """One Adam step on ``codes`` ``(batch, n_q, frames)``; returns the values to log.

        Batch item ``i`` trains bandwidth ``levels[(step + i) % len(levels)]`` (its first
        ``n_q`` codebooks), so every bandwidth gets items in every batch of at least
        ``len(levels)``. The loss is the mean cross-entropy per code over the batch, i.e. the
        batch's coded size; per bandwidth, it gives the estimated kbps ``bits per code x n_q x
        frame_rate / 1000``.
        """
        levels, frame_rate = self.levels, self.codec.config.frame_rate
        generator = torch.Generator().manual_seed(step_seed(self.settings.seed, step))
        total, count, kbps = 0.0, 0, {}
        for index, (bandwidth, n_q) in enumerate(levels):
            group = codes[(index - step) % len(levels) :: len(levels), :n_q]
            if not len(group):
                continue
            loss = type(self.codec).lm_loss(self.lm, group, generator=generator)
            total = total + loss * group.numel()
            count += group.numel()
            kbps[f"{bandwidth:g}"] = loss.item() / math.log(2) * n_q * frame_rate / 1000
        loss = total / count
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "bits_per_code": loss.item() / math.log(2), "kbps": kbps}

    def progress(self, log: dict) -> dict[str, str]:
        return {"bits_per_code": f"{log['bits_per_code']:.3f}"}

    def export(self, path: Path, step: int, metadata: dict) -> None:
        """The codec checkpoint with the LM as its network ``"lm"``.

        The codec's networks (any earlier LM replaced), step and metadata are kept; its
        training state (the optimisers of a ``last.pt``) is left out, as the codec needs none.
        """
        codec = self.codec_checkpoint
        Checkpoint(
            codec=codec.codec,
            networks={**codec.networks, "lm": Network(self.lm_config, self.lm.state_dict())},
            step=codec.step,
            metadata={
                **codec.metadata,
                "lm_training": {
                    **metadata,
                    "steps": step,
                    "settings": self.settings.to_json(),
                },
            },
        ).save(path)
