"""`bench train`: adversarial training of the neural codecs, as in the EnCodec paper (Sec. 3.4).

HiFi-Codec (Yang et al. 2023) trains through the same loop: its group-residual quantizer, and
MPD and MSD beside the MS-STFT discriminator (the hinge and feature losses average over all
sub-discriminators of all families, as its paper states).

One step draws a seeded batch of random segments, picks one bandwidth for the batch,
updates the discriminators with probability 2/3 (hinge loss), then the generator with the
time L1, multi-scale mel, hinge adversarial and relative feature-matching losses, weighted
by the loss balancer (or plainly summed with the same weights), plus the commitment loss
outside the balancer. Adam, lr 3e-4, betas (0.5, 0.9).

Every source of randomness is re-seeded from (seed, step) at the start of a step, so a run
resumed from its last checkpoint continues exactly as if it had never stopped. The
switches the ablation tables need are settings: which discriminators, balancer on or off
with the loss weights, and the quantizer. Where several GPUs are present and the process
was started by ``torchrun``, the model is wrapped in DistributedDataParallel.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from bench import audio as bench_audio
from bench.codecs.checkpoint import Checkpoint, load_checkpoint, load_strictly
from bench.codecs.encodec import model as encodec_model
from bench.codecs.encodec.model import EncodecConfig, EncodecModel
from bench.codecs.hificodec import model as hificodec_model
from bench.codecs.modules.conv import init_fan_in_
from bench.codecs.modules.discriminators import (
    MultiDiscriminator,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    MultiScaleSTFTDiscriminator,
)
from bench.codecs.modules.rvq import EuclideanCodebook, bandwidth_to_n_q, sample_n_q
from bench.data import DatasetError, load_dataset
from bench.provenance import backend_versions, git_state
from bench.train.balancer import LossBalancer
from bench.train.losses import (
    MultiScaleMelLoss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    relative_feature_matching,
    time_l1,
)

LAST_CHECKPOINT = "last.pt"
INIT_BATCH = 64
MODEL_CHECKPOINT = "model.pt"
LOG_FILE = "train_log.jsonl"
PAPER_WEIGHTS = {"time": 0.1, "frequency": 1.0, "adversarial": 3.0, "feature": 3.0}
# Discriminator families a run can train against, built from the MS-STFT width ``filters``.
# HiFi-Codec narrows MPD and MSD to the MS-STFT discriminator's parameter count: at the paper's
# 32 filters that is 0.47 M, against 0.65 M for MPD at width 4 and 0.46 M for MSD at 16
# (parameters grow as the width squared; MSD's grouped convs need multiples of 16).
DISCRIMINATORS: dict[str, Callable[[int, int], nn.Module]] = {
    "msstft": lambda channels, filters: MultiScaleSTFTDiscriminator(
        filters=filters, in_channels=channels
    ),
    "mpd": lambda channels, filters: MultiPeriodDiscriminator(
        filters=max(1, round(filters / 8)), in_channels=channels
    ),
    "msd": lambda channels, filters: MultiScaleDiscriminator(
        filters=16 * max(1, round(filters / 32)), in_channels=channels
    ),
}
# The trainable codecs: their configurations, model class and default discriminators.
MODELS: dict[str, tuple[dict[str, EncodecConfig], type[EncodecModel], tuple[str, ...]]] = {
    "encodec": (encodec_model.CONFIGS, EncodecModel, ("msstft",)),
    "hificodec": (
        hificodec_model.CONFIGS,
        hificodec_model.HiFiCodecModel,
        ("msstft", "mpd", "msd"),
    ),
}
# "rvq": one residual quantizer; "grvq": HiFi-Codec's groups (its configurations only).
QUANTIZERS = ("rvq", "grvq")
BANDWIDTH_SAMPLING = ("paper", "uniform")
FREQUENCY_LOSSES = ("paper", "audiocraft")
WEIGHT_INITS = ("fan_in", "pytorch")


@dataclass(frozen=True)
class TrainSettings:
    """Everything that determines a training run (where it writes excluded)."""

    data: str
    steps: int
    codec: str = "encodec"
    config: str = "tiny"
    batch_size: int = 16
    segment_seconds: float = 1.0
    learning_rate: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.9)
    discriminator_probability: float = 2 / 3
    # None: the codec's own (EnCodec: MS-STFT; HiFi-Codec: MS-STFT, MPD and MSD).
    discriminators: tuple[str, ...] | None = None
    # The paper trains one discriminator per bandwidth, updating only the batch's; False
    # shares one across bandwidths (as audiocraft does).
    discriminator_per_bandwidth: bool = True
    # The paper's 32; the CPU demo uses 8, which cuts the discriminator's cost 10x.
    discriminator_filters: int = 32
    balancer: bool = True
    weights: dict[str, float] = field(default_factory=lambda: dict(PAPER_WEIGHTS))
    commitment_weight: float = 1.0
    # "paper": L1 + L2 on the mel magnitudes; "audiocraft": the L2 term on log mels.
    frequency_loss: str = "paper"
    # None: the configuration's own (EnCodec: rvq; HiFi-Codec: grvq).
    quantizer: str | None = None
    bandwidth_sampling: str = "paper"
    # Steps that train encoder and decoder as a plain autoencoder before the codebooks are
    # k-means initialised; 0 is the paper. See `initialise_codebooks` for why a small model
    # needs it.
    quantizer_warmup_steps: int = 0
    # "fan_in": convolutions drawn to keep the signal's variance (`init_fan_in_`);
    # "pytorch": PyTorch's default, as the official model was initialised.
    weight_init: str = "fan_in"
    seed: int = 0
    checkpoint_every: int = 100
    data_limit: int | None = None

    def __post_init__(self) -> None:
        if self.codec not in MODELS:
            raise ValueError(
                f"bench train: expected --codec {' or '.join(MODELS)}, got {self.codec!r}"
            )
        configs, _, default_discriminators = MODELS[self.codec]
        if self.config not in configs:
            raise ValueError(
                f"--config: expected one of {', '.join(configs)} for {self.codec}, "
                f"got {self.config!r}"
            )
        # Defaults resolved here, so a saved run records what it trained with.
        if self.discriminators is None:
            object.__setattr__(self, "discriminators", default_discriminators)
        if self.quantizer is None:
            object.__setattr__(self, "quantizer", configs[self.config].quantizer)
        if (
            self.steps < 1
            or self.batch_size < 1
            or self.segment_seconds <= 0
            or self.quantizer_warmup_steps < 0
        ):
            raise ValueError(
                "expected --steps >= 1, --batch-size >= 1, --segment-seconds > 0 and "
                f"--quantizer-warmup-steps >= 0, got {self.steps}, {self.batch_size}, "
                f"{self.segment_seconds}, {self.quantizer_warmup_steps}"
            )
        unknown = set(self.discriminators) - set(DISCRIMINATORS)
        if unknown:
            raise ValueError(
                f"--discriminators: expected some of {', '.join(DISCRIMINATORS)} (or none), "
                f"got {sorted(unknown)}"
            )
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"--quantizer: expected one of {QUANTIZERS}, got {self.quantizer!r}")
        if self.quantizer == "grvq" and self.codec != "hificodec":
            raise ValueError(
                "--quantizer grvq: group-residual VQ is HiFi-Codec's; train it with "
                "--codec hificodec (its --quantizer rvq is the same model with one group)"
            )
        if self.bandwidth_sampling not in BANDWIDTH_SAMPLING:
            raise ValueError(
                f"--bandwidth-sampling: expected one of {BANDWIDTH_SAMPLING}, "
                f"got {self.bandwidth_sampling!r}"
            )
        if self.weight_init not in WEIGHT_INITS:
            raise ValueError(
                f"--weight-init: expected one of {WEIGHT_INITS}, got {self.weight_init!r}"
            )
        if self.frequency_loss not in FREQUENCY_LOSSES:
            raise ValueError(
                f"--frequency-loss: expected one of {FREQUENCY_LOSSES}, got {self.frequency_loss!r}"
            )
        if set(self.weights) != set(PAPER_WEIGHTS):
            raise ValueError(
                f"loss weights: expected {sorted(PAPER_WEIGHTS)}, got {sorted(self.weights)}"
            )

    def to_json(self) -> dict:
        return asdict(self)

    def model_config(self) -> EncodecConfig:
        """The configuration to build: ``config``'s, with ``quantizer`` applied."""
        config = MODELS[self.codec][0][self.config]
        if self.codec == "hificodec" and self.quantizer == "rvq":
            # One group is the plain residual quantizer. Named apart, so that a bitstream of
            # one variant is refused by the other.
            return replace(config, groups=1, name=f"{config.name}-rvq")
        return config

    @classmethod
    def from_json(cls, data: dict) -> TrainSettings:
        return cls(
            **{
                **data,
                "betas": tuple(data["betas"]),
                "discriminators": (
                    None if data["discriminators"] is None else tuple(data["discriminators"])
                ),
            }
        )


class SegmentSampler:
    """Random fixed-length segments of a dataset, a pure function of (seed, step).

    Items are loaded once, converted to the model's rate and channel count; items shorter
    than a segment are zero-padded, as short sentences would be. A file that cannot be
    used (too short to evaluate, unreadable) is skipped with a printed note naming it, so
    that one bad file among thousands neither stops training nor goes unnoticed.
    """

    def __init__(self, spec: str, sample_rate: int, channels: int, seconds: float, limit=None):
        dataset = load_dataset(spec, limit=limit)
        self.segment = int(round(seconds * sample_rate))
        self.clips: list[torch.Tensor] = []
        self.skipped = list(dataset.skipped)
        for item in tqdm(dataset.items, desc="loading training audio", unit="item"):
            try:
                loaded = bench_audio.load_audio(item.path)
            except bench_audio.AudioError as error:
                self.skipped.append(f"{item.path}: {error}")
                continue
            audio, _ = bench_audio.prepare(loaded, sample_rate, channels)
            self.clips.append(audio)
        for note in self.skipped:
            tqdm.write(f"note: training data: skipped {note}")
        if not self.clips:
            raise DatasetError(
                f"training data {spec!r}: no usable item; skipped: {'; '.join(self.skipped)}"
            )
        self.durations = np.array([clip.shape[-1] for clip in self.clips], dtype=float)
        self.seconds = float(self.durations.sum() / sample_rate)

    def batch(self, seed: int, step: int, batch_size: int, stream: int = 0) -> torch.Tensor:
        """Segments for ``step``; ``stream`` separates draws for other purposes (init)."""
        rng = np.random.default_rng([seed, step, stream])
        # Longer items hold more distinct segments: sample them in proportion.
        chosen = rng.choice(
            len(self.clips), size=batch_size, p=self.durations / self.durations.sum()
        )
        segments = []
        for index in chosen:
            clip = self.clips[index]
            start = int(rng.integers(0, max(1, clip.shape[-1] - self.segment + 1)))
            segment = clip[..., start : start + self.segment]
            segments.append(nn.functional.pad(segment, (0, self.segment - segment.shape[-1])))
        return torch.stack(segments)


@dataclass
class TrainState:
    """The model, discriminators, optimisers and balancer of a run, at ``step``."""

    model: EncodecModel
    # Keyed by `discriminator_key`: one per bandwidth, or one shared.
    discriminator: nn.ModuleDict | None
    optimizer: torch.optim.Optimizer
    discriminator_optimizer: torch.optim.Optimizer | None
    balancer: LossBalancer | None
    step: int = 0
    # The DistributedDataParallel wrappers that training forwards go through, when there are
    # several workers; `model` and `discriminator` stay the bare modules either way.
    parallel_model: nn.Module | None = None
    parallel_discriminators: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def wrap_for_workers(self, distributed: Distributed) -> None:
        """Wrap model and discriminators for gradient averaging over ``distributed``'s workers.

        DDP broadcasts rank 0's parameters and buffers (the codebooks included) when it wraps,
        and its buffers again before every forward, so all workers quantize alike.
        """
        if distributed.world_size == 1:
            return
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.parallel_model = DistributedDataParallel(self.model, device_ids=ids)
        # One wrapper per discriminator: a step uses only its bandwidth's, and DDP expects
        # every parameter it wraps to take part.
        for key, discriminator in (self.discriminator or {}).items():
            self.parallel_discriminators[key] = DistributedDataParallel(
                discriminator, device_ids=ids
            )


def step_seed(seed: int, step: int) -> int:
    """The seed of every random draw at ``step``: what makes a resumed run continue exactly."""
    return seed * 1_000_003 + step


@dataclass(frozen=True)
class Distributed:
    """This process's place among the training workers: ``torchrun`` sets the environment."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> Distributed:
        """Joins the process group when started by ``torchrun`` with several workers.

        One worker per GPU (NCCL) where there are GPUs, else CPU workers over Gloo.
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cpu")
        if torch.cuda.is_available():
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if world_size == 1:
            return cls(device=device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), device)


def build_state(settings: TrainSettings, device: torch.device | None = None) -> TrainState:
    torch.manual_seed(settings.seed)
    config = settings.model_config()
    model = MODELS[settings.codec][1](config)
    if settings.weight_init == "fan_in":
        init_fan_in_(model)
    discriminator = (
        nn.ModuleDict(
            {
                key: MultiDiscriminator(
                    [
                        DISCRIMINATORS[name](config.channels, settings.discriminator_filters)
                        for name in settings.discriminators
                    ]
                )
                for key in _discriminator_keys(settings, config)
            }
        )
        if settings.discriminators
        else None
    )
    # On the device before the optimisers exist, so that their states load onto it too.
    model.to(device)
    if discriminator is not None:
        discriminator.to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.learning_rate, betas=settings.betas
    )
    discriminator_optimizer = (
        torch.optim.Adam(
            discriminator.parameters(), lr=settings.learning_rate, betas=settings.betas
        )
        if discriminator is not None
        else None
    )
    balancer = LossBalancer(_active_weights(settings)) if settings.balancer else None
    return TrainState(model, discriminator, optimizer, discriminator_optimizer, balancer)


def _training_n_qs(settings: TrainSettings, config: EncodecConfig) -> list[int]:
    """The numbers of codebooks that bandwidth sampling may draw."""
    if settings.bandwidth_sampling == "paper":
        return [bandwidth_to_n_q(b, config.frame_rate, config.bins) for b in config.bandwidths]
    # Every group spends the same number of codebooks.
    groups = config.quantizer_groups
    return list(range(groups, config.n_q + 1, groups))


def _discriminator_keys(settings: TrainSettings, config: EncodecConfig) -> list[str]:
    if not settings.discriminator_per_bandwidth:
        return ["shared"]
    return [f"n_q={n_q}" for n_q in _training_n_qs(settings, config)]


def discriminator_key(settings: TrainSettings, config: EncodecConfig, n_q: int | None) -> str:
    """Which discriminator judges a batch coded with ``n_q`` codebooks (None: unquantized,
    the quantizer warm-up, judged by the highest bandwidth's)."""
    if not settings.discriminator_per_bandwidth:
        return "shared"
    return f"n_q={max(_training_n_qs(settings, config)) if n_q is None else n_q}"


def _active_weights(settings: TrainSettings) -> dict[str, float]:
    # Without discriminators the adversarial terms do not exist; the rest keep their weights.
    adversarial = {"adversarial", "feature"}
    return {
        name: weight
        for name, weight in settings.weights.items()
        if settings.discriminators or name not in adversarial
    }


def save_state(state: TrainState, settings: TrainSettings, path: Path, metadata: dict) -> str:
    extra = {
        "optimizer": state.optimizer.state_dict(),
        "balancer": state.balancer.state_dict() if state.balancer is not None else {},
    }
    if state.discriminator is not None:
        extra["discriminator"] = state.discriminator.state_dict()
        extra["discriminator_optimizer"] = state.discriminator_optimizer.state_dict()
    return Checkpoint(
        codec=settings.codec,
        config=state.model.config.to_json(),
        state_dict=state.model.state_dict(),
        step=state.step,
        extra_states=extra,
        metadata={**metadata, "train_settings": settings.to_json()},
    ).save(path)


def load_state(
    path: Path, settings: TrainSettings, device: torch.device | None = None
) -> TrainState:
    """The run saved at ``path``; its settings must equal ``settings`` (an exact resume)."""
    checkpoint = load_checkpoint(path, settings.codec)
    saved = TrainSettings.from_json(checkpoint.metadata["train_settings"])
    if replace(saved, steps=settings.steps) != settings:
        raise ValueError(
            f"--resume: {path} was trained with other settings; only --steps may change. "
            f"Saved: {saved.to_json()}"
        )
    state = build_state(settings, device)
    load_strictly(state.model, checkpoint.state_dict, str(path))
    state.optimizer.load_state_dict(checkpoint.extra_states["optimizer"])
    if state.discriminator is not None:
        load_strictly(state.discriminator, checkpoint.extra_states["discriminator"], str(path))
        state.discriminator_optimizer.load_state_dict(
            checkpoint.extra_states["discriminator_optimizer"]
        )
    if state.balancer is not None:
        state.balancer.load_state_dict(checkpoint.extra_states["balancer"])
    state.step = checkpoint.step
    return state


def train_step(
    state: TrainState,
    settings: TrainSettings,
    batch: torch.Tensor,
    mel_loss: MultiScaleMelLoss,
) -> dict[str, float]:
    """One optimisation step at ``state.step``; returns the values to log."""
    config = state.model.config
    generator = torch.Generator().manual_seed(step_seed(settings.seed, state.step))
    # Codebook k-means initialisation and dead-code replacement draw from torch's global
    # generator: seeding it per step is what makes a resumed run continue exactly.
    torch.manual_seed(step_seed(settings.seed, state.step))
    n_q = sample_n_q(
        config.n_q,
        generator,
        bandwidths=config.bandwidths if settings.bandwidth_sampling == "paper" else None,
        frame_rate=config.frame_rate,
        bins=config.bins,
        groups=config.quantizer_groups,
    )
    if state.step < settings.quantizer_warmup_steps:
        n_q = None
    state.model.train()
    output = (state.parallel_model or state.model)(batch, n_q)
    log = {"n_q": n_q or 0}

    update_discriminator = state.discriminator is not None and (
        torch.rand((), generator=generator).item() < settings.discriminator_probability
    )
    if state.discriminator is not None:
        key = discriminator_key(settings, config, n_q)
        discriminator = state.discriminator[key]
    if update_discriminator:
        # Real and fake in one forward: DistributedDataParallel allows one per backward.
        both = state.parallel_discriminators.get(key, discriminator)(
            torch.cat([batch, output.audio.detach()])
        )
        real_logits = [logits[: len(batch)] for logits in both.logits]
        fake_logits = [logits[len(batch) :] for logits in both.logits]
        discriminator_loss = hinge_discriminator_loss(real_logits, fake_logits)
        state.discriminator_optimizer.zero_grad(set_to_none=True)
        discriminator_loss.backward()
        state.discriminator_optimizer.step()
        log["discriminator"] = discriminator_loss.item()

    losses = {
        "time": time_l1(batch, output.audio),
        "frequency": mel_loss(batch, output.audio),
    }
    if state.discriminator is not None:
        # The bare module: this step does not update the discriminator, so there is nothing
        # to average across workers. Real features are targets only.
        with torch.no_grad():
            real = discriminator(batch)
        fake = discriminator(output.audio)
        losses["adversarial"] = hinge_generator_loss(fake.logits)
        losses["feature"] = relative_feature_matching(real.feature_maps, fake.feature_maps)
    state.optimizer.zero_grad(set_to_none=True)
    # One backward pass for everything (DDP allows no more). The commitment loss reaches
    # only the encoder and sits outside the balancer.
    if state.balancer is not None:
        gradient, metrics = state.balancer.balanced_gradient(losses, output.audio)
        log.update(metrics)
        roots, gradients = [output.audio], [gradient]
    else:
        weights = _active_weights(settings)
        roots, gradients = [sum(weights[name] * loss for name, loss in losses.items())], [None]
    if output.commitment_loss.requires_grad:
        roots.append(settings.commitment_weight * output.commitment_loss)
        gradients.append(None)
    torch.autograd.backward(roots, gradients)
    if state.discriminator is not None:
        # Generator steps must not move the discriminator.
        state.discriminator.zero_grad(set_to_none=True)
    state.optimizer.step()
    state.step += 1
    log.update({name: loss.item() for name, loss in losses.items()})
    log["commitment"] = output.commitment_loss.item()
    # Distinct codes per level in this batch: collapse (one level doing all the work, or a
    # level stuck on a handful of codes) shows here long before it shows in the losses.
    log["codes_used"] = [len(torch.unique(level)) for level in output.codes.transpose(0, 1)]
    return log


def train(
    settings: TrainSettings,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    sampler: SegmentSampler | None = None,
) -> Path:
    """Train to ``settings.steps``; returns the path of the exported model checkpoint.

    Under ``torchrun`` with several workers, each draws its own ``settings.batch_size``
    segments per step and gradients are averaged (DistributedDataParallel); only rank 0
    writes the log and checkpoints.
    """
    distributed = Distributed.from_environment()
    out_dir = Path(out_dir)
    last = out_dir / LAST_CHECKPOINT
    if resume:
        if not last.exists():
            raise ValueError(f"--resume: expected {last} from an earlier run, found none")
        state = load_state(last, settings, distributed.device)
    else:
        if last.exists():
            raise ValueError(f"{out_dir} already holds a training run; pass --resume to continue")
        state = build_state(settings, distributed.device)
    state.wrap_for_workers(distributed)
    config = state.model.config
    sampler = sampler or SegmentSampler(
        settings.data,
        config.sample_rate,
        config.channels,
        settings.segment_seconds,
        settings.data_limit,
    )
    mel_loss = MultiScaleMelLoss(config.sample_rate, log_l2=settings.frequency_loss == "audiocraft")
    if distributed.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    metadata = {
        "data": settings.data,
        "data_seconds": sampler.seconds,
        "workers": distributed.world_size,
        "device": str(distributed.device),
        "versions": backend_versions(),
        "git": git_state(),
    }
    # Rank r draws its segments from streams 2r (training) and 2r + 1 (codebook init), so a
    # single worker draws exactly what an undistributed run does.
    streams = (2 * distributed.rank, 2 * distributed.rank + 1)
    started = time.perf_counter()
    # Rank 0 alone keeps the log (and the wall time the card reports).
    elapsed_before = (
        resume_log(out_dir / LOG_FILE, state.step) if resume and distributed.is_main else 0.0
    )
    bar = tqdm(
        total=settings.steps,
        initial=state.step,
        desc="bench train",
        disable=not (progress and distributed.is_main),
    )
    log_file = (
        open(out_dir / LOG_FILE, "a", encoding="utf-8")
        if distributed.is_main
        else contextlib.nullcontext()
    )
    interrupted = False
    with bar, log_file:
        try:
            while state.step < settings.steps:
                if state.step == settings.quantizer_warmup_steps:
                    init_batch = sampler.batch(
                        settings.seed, state.step, INIT_BATCH, stream=streams[1]
                    )
                    initialise_codebooks(
                        state.model,
                        init_batch.to(state.device),
                        step_seed(settings.seed, state.step),
                        settings.batch_size * distributed.world_size,
                    )
                batch = sampler.batch(
                    settings.seed, state.step, settings.batch_size, stream=streams[0]
                )
                log = train_step(state, settings, batch.to(state.device), mel_loss)
                if not distributed.is_main:
                    continue
                log.update(
                    step=state.step,
                    wall_seconds=elapsed_before + time.perf_counter() - started,
                )
                log_file.write(json.dumps(log) + "\n")
                log_file.flush()
                bar.update(1)
                bar.set_postfix(
                    mel=f"{log['frequency']:.3f}", l1=f"{log['time']:.4f}", n_q=log["n_q"]
                )
                if state.step % settings.checkpoint_every == 0 or state.step == settings.steps:
                    save_state(
                        state, settings, last, {**metadata, "wall_seconds": log["wall_seconds"]}
                    )
        except KeyboardInterrupt:
            # Stopping early keeps every finished step: the state is saved where it stands
            # and the model exported; `--resume` continues from here.
            interrupted = True
            if distributed.is_main:
                save_state(
                    state,
                    settings,
                    last,
                    {**metadata, "wall_seconds": elapsed_before + time.perf_counter() - started},
                )
    wall = elapsed_before + time.perf_counter() - started
    model_path = out_dir / MODEL_CHECKPOINT
    if distributed.is_main:
        export_model(state, settings, model_path, {**metadata, "wall_seconds": wall})
        plot_training_log(out_dir / LOG_FILE, out_dir / "train_log.png")
    if distributed.world_size > 1 and not interrupted:
        # Every worker returns only once the model is written.
        dist.barrier()
    if interrupted:
        raise KeyboardInterrupt(f"stopped at step {state.step}; model exported to {model_path}")
    return model_path


@torch.no_grad()
def initialise_codebooks(
    model: EncodecModel, batch: torch.Tensor, seed: int, training_batch_size: int
) -> None:
    """k-means-initialise every codebook on ``batch``, a batch larger than a training one.

    The paper initialises on the first training batch, 4800 vectors for 1024 codes; a CPU
    batch holds a fraction of that, too few for 1024 centroids, so the batch used for the
    initialisation alone is larger (``INIT_BATCH`` segments). Its EMA counts are then
    scaled to a training batch of ``training_batch_size`` segments (over all workers):
    otherwise they start ``INIT_BATCH / training_batch_size`` times too high and an unused
    code stays "alive" for hundreds of steps before dead-code replacement may reseed it.

    ``TrainSettings.quantizer_warmup_steps`` delays this to a trained encoder. With PyTorch's
    default initialisation the untrained encoder maps all audio to nearly one point (for the
    tiny model, the latent varies by 0.002 across frames around an offset of 0.27), so the
    codewords sit in a tiny cloud that the first Adam steps move the whole latent away from,
    and every frame takes the same code on every level. The default ``fan_in`` weight
    initialisation avoids that, so the warm-up defaults to 0 steps, as in the paper.
    """
    torch.manual_seed(seed)
    model.train()
    model.quantizer(model.encoder(batch))  # every level of every group
    for codebook in model.quantizer.modules():
        if not isinstance(codebook, EuclideanCodebook):
            continue
        codebook.cluster_size.mul_(training_batch_size / len(batch))
        codebook.embed_avg.mul_(training_batch_size / len(batch))


def resume_log(log_path: Path, step: int) -> float:
    """Drop log lines past ``step`` (written after the last save); the wall time until then.

    A resumed run repeats those steps, so its log then equals an uninterrupted run's.
    """
    lines = log_path.read_text().splitlines() if log_path.exists() else []
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    log_path.write_text("".join(line + "\n" for line in kept))
    return json.loads(kept[-1])["wall_seconds"] if kept else 0.0


def export_model(state: TrainState, settings: TrainSettings, path: Path, metadata: dict) -> Path:
    """The model alone (no optimiser or discriminator): what a codec loads and ships."""
    Checkpoint(
        codec=settings.codec,
        config=state.model.config.to_json(),
        state_dict=state.model.state_dict(),
        step=state.step,
        metadata={**metadata, "train_settings": settings.to_json()},
    ).save(path)
    return path


def plot_training_log(log_path: Path, out_path: Path) -> Path:
    """Losses against step, one panel per loss, log scale where positive."""
    import pandas as pd
    from matplotlib.figure import Figure

    log = pd.read_json(log_path, lines=True)
    names = [
        name
        for name in ("time", "frequency", "adversarial", "feature", "commitment", "discriminator")
        if name in log
    ]
    figure = Figure(figsize=(10, 2.2 * math.ceil(len(names) / 2)), layout="constrained")
    axes = figure.subplots(math.ceil(len(names) / 2), 2, squeeze=False).ravel()
    for panel, name in zip(axes, names, strict=False):
        values = log[["step", name]].dropna()
        panel.plot(values["step"], values[name], linewidth=0.6, alpha=0.4)
        smoothed = values[name].rolling(max(1, len(values) // 50), min_periods=1).mean()
        panel.plot(values["step"], smoothed, linewidth=1.5)
        panel.set_title(f"{name} loss")
        panel.set_xlabel("step")
        if (values[name] > 0).all():
            panel.set_yscale("log")
    for panel in axes[len(names) :]:
        panel.set_visible(False)
    figure.savefig(out_path, dpi=120)
    return out_path
