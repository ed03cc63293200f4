"""SampleRNN's solver (Mehri et al., ICLR 2017): truncated BPTT on the NLL in bits per sample.

Each sequence is a batch of segments of ``segment_seconds``, quantized to 8 bits by the model's
fixed normalisation and preceded by one top frame of the zero level (where generation starts
too). It is cut into chunks of ``tbptt_samples``: one optimiser step per chunk, in order, the
tiers' hidden state carried (detached) from one chunk to the next and reset to the learned
initial state at each new sequence. Adam at 1e-3; every gradient element clipped to
+-``gradient_clip``. The carried state is part of the resumable state, so that a run resumed
mid-sequence continues exactly.

With ``codec_checkpoint`` (an EnCodec or a FlowMAC) the model is the codec's conditional
decoder: each sequence is also encoded by that codec at one of its bitrates, drawn per sequence
(from the seed and the sequence's index, so a resumed run draws the same), and its dequantized
stream conditions the top tier (:mod:`bench.codecs.samplernn.conditioning`). The codec reads
the training audio resampled from SampleRNN's rate to its own, so it codes audio band-limited
to 8 kHz.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.codecs.checkpoint import Checkpoint, CheckpointError
from bench.train.plots import plot_training_log
from bench.train.settings import SampleRnnTrainSettings
from bench.train.solvers.base import Solver, data_parallel

LOSSES = ("bits",)


@dataclass(frozen=True)
class Sequence:
    """One training sequence: ``levels`` ``(batch, history + samples)``; for a decoder its
    ``condition`` aligned to the top tier and the encoder codec's ``bandwidth`` (kbps)."""

    levels: torch.Tensor
    condition: torch.Tensor | None
    bandwidth: float | None


class SampleRnnSolver(Solver):
    """The SampleRNN network, its optimiser and the state carried between chunks."""

    settings: SampleRnnTrainSettings

    def __init__(
        self, settings: SampleRnnTrainSettings, device: torch.device | None = None
    ) -> None:
        super().__init__(settings, device)
        torch.manual_seed(settings.seed)
        self.family = importlib.import_module(settings.model)
        self.config = self.family.CONFIGS[settings.config]
        self.conditioning = importlib.import_module(settings.conditioning)
        self.tokenizer = None
        if settings.codec_checkpoint is not None:
            try:
                self.tokenizer = self.conditioning.load_tokenizer(settings.codec_checkpoint)
            except (CheckpointError, ValueError) as error:
                raise ValueError(f"--codec-checkpoint: {error}") from None
            self.config = self.conditioning.conditioned_config(self.config, self.tokenizer)
        self.name, self.sample_rate, self.channels = self.family.NAME, self.config.sample_rate, 1
        self.model = self.family.SampleRnn(self.config).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.learning_rate)
        self.parallel_model: nn.Module | None = None
        self.chunks = settings.chunks_per_sequence(self.sample_rate)
        # The tiers' state after the last chunk (None at a sequence's start), and the sequence
        # being trained on, by its index.
        self.carried: tuple[torch.Tensor, ...] | None = None
        self.sequence: tuple[int, Sequence] | None = None

    def networks(self) -> dict[str, tuple[dict, nn.Module]]:
        return {"model": (self.config.to_json(), self.model)}

    def training_parts(self) -> dict[str, object | None]:
        return {"optimizer": self.optimizer}

    def training_state(self) -> dict[str, dict]:
        carried = [] if self.carried is None else [state.cpu() for state in self.carried]
        return {**super().training_state(), "carried": {"state": carried}}

    def load_training_state(self, state: dict[str, dict]) -> None:
        super().load_training_state({"optimizer": state["optimizer"]})
        carried = state["carried"]["state"]
        self.carried = tuple(tensor.to(self.device) for tensor in carried) or None

    def wrap_for_workers(self, rank: int, world_size: int) -> None:
        super().wrap_for_workers(rank, world_size)
        if world_size > 1:
            self.parallel_model = data_parallel(self.model, self.device)

    def metadata(self) -> dict:
        metadata = {"description": f"SampleRNN {self.config.name}"}
        if self.tokenizer is not None:
            metadata["description"] += f" decoding a {self.tokenizer.family} bitstream"
            metadata["codec_checkpoint"] = str(self.settings.codec_checkpoint)
            metadata["codec_hash"] = self.tokenizer.codec.checkpoint_hash
        return metadata

    def check_resumable(self, checkpoint: Checkpoint) -> None:
        """A decoder must go on learning the stream of the codec weights it started on."""
        saved = checkpoint.metadata.get("codec_hash")
        now = None if self.tokenizer is None else self.tokenizer.codec.checkpoint_hash
        if saved != now:
            raise ValueError(
                f"--resume: {checkpoint.path} was conditioned on codec weights of hash {saved}, "
                f"not on those of --codec-checkpoint {self.settings.codec_checkpoint} ({now}); "
                "start a new run in another --out folder"
            )

    def sequence_of(self, index: int) -> Sequence:
        """Sequence ``index``: its levels and, for a decoder, its conditioning."""
        if self.sequence is None or self.sequence[0] != index:
            settings = self.settings
            audio = self.sampler.batch(settings.seed, index, settings.batch_size, stream=self.rank)
            used = audio[:, 0, : self.chunks * settings.tbptt_samples]
            levels = self.family.quantize(used, self.config.quantization)
            start = torch.full((len(levels), self.config.history), self.family.ZERO_LEVEL)
            levels = torch.cat([start, levels], dim=1).to(self.device)
            condition, bandwidth = None, None
            if self.tokenizer is not None:
                bitrates = self.tokenizer.codec.bitrates
                draw = np.random.default_rng([settings.seed, self.rank, index])
                bandwidth = bitrates[int(draw.integers(len(bitrates)))]
                latent = self.tokenizer.encode_latent(used, self.sample_rate, bandwidth)
                condition = self.model.align_condition(latent, used.shape[1]).to(self.device)
            self.sequence = (index, Sequence(levels, condition, bandwidth))
        return self.sequence[1]

    def run_step(self, step: int) -> dict:
        settings = self.settings
        sequence, chunk = divmod(step, self.chunks)
        if chunk == 0:
            self.carried = None  # a new sequence starts from the learned initial state
        length = settings.tbptt_samples
        start = chunk * length
        data = self.sequence_of(sequence)
        levels = data.levels[:, start : start + self.config.history + length]
        condition = None
        if data.condition is not None:
            frame = self.config.history  # the top frame size
            condition = data.condition[:, start // frame : (start + length) // frame]
        self.model.train()
        output = (self.parallel_model or self.model)(levels, condition, state=self.carried)
        bits = self.family.bits_per_sample(output.logits, self.model.targets(levels))
        self.optimizer.zero_grad(set_to_none=True)
        bits.backward()
        nn.utils.clip_grad_value_(self.model.parameters(), settings.gradient_clip)
        self.optimizer.step()
        self.carried = tuple(state.detach() for state in output.state)
        log = {"bits": bits.item(), "sequence": sequence, "chunk": chunk}
        if data.bandwidth is not None:
            log["kbps"] = data.bandwidth
        return log

    def progress(self, log: dict) -> dict[str, str]:
        return {"bits": f"{log['bits']:.3f}"}

    def export(self, path: Path, step: int, metadata: dict) -> None:
        """The network as ``"model"``; a decoder's with a reference to its encoder codec."""
        self.conditioning.samplernn_checkpoint(
            self.config,
            self.model.state_dict(),
            self.settings.codec_checkpoint,
            step=step,
            metadata={**metadata, "train_settings": self.settings.to_json()},
        ).save(path)

    def finish(self, out_dir: Path) -> None:
        plot_training_log(out_dir / self.log_file, out_dir / "train_log.png", LOSSES)
