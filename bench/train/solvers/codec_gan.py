"""The codec GAN solver: adversarial training of a neural codec, as in the EnCodec paper
(Sec. 3.4). ``bench train encodec`` and ``bench train hificodec`` run it.

It trains any registered codec whose class declares ``configs`` (of :class:`TrainableConfig`)
and ``model_class`` (EnCodec's code path: ``encoder``, ``quantizer``, and a forward pass that
returns the decoded ``audio``, the ``codes`` and the ``commitment_loss``).
HiFi-Codec (Yang et al. 2023) trains through it with its group-residual quantizer, and MPD and
MSD beside the MS-STFT discriminator (the hinge and feature losses average over all
sub-discriminators of all families, as its paper states).

One step draws a seeded batch of random segments, picks one bandwidth for the batch,
updates the discriminators with probability 2/3 (hinge loss), then the generator with the
time L1, multi-scale mel, hinge adversarial and relative feature-matching losses, weighted
by the loss balancer (or plainly summed with the same weights), plus the commitment loss
outside the balancer. Adam, lr 3e-4, betas (0.5, 0.9). The switches the ablation tables need
are settings: which discriminators, balancer on or off with the loss weights, and the quantizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from bench.codecs.checkpoint import Checkpoint, Network
from bench.codecs.modules.conv import init_fan_in_
from bench.codecs.modules.discriminators import (
    MultiDiscriminator,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    MultiScaleSTFTDiscriminator,
)
from bench.codecs.modules.rvq import EuclideanCodebook, bandwidth_to_n_q, sample_n_q
from bench.registry import CODECS, DISCRIMINATORS
from bench.train.balancer import LossBalancer
from bench.train.losses import (
    MultiScaleMelLoss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    relative_feature_matching,
    time_l1,
)
from bench.train.plots import plot_training_log
from bench.train.settings import CodecTrainSettings
from bench.train.solvers.base import Solver, data_parallel, discriminator_config, step_seed

INIT_BATCH = 64
LOSSES = ("time", "frequency", "adversarial", "feature", "commitment", "discriminator")


class TrainableConfig(Protocol):
    """What the solver reads from a codec's configuration (EnCodec's ``EncodecConfig``)."""

    sample_rate: int
    channels: int
    bandwidths: tuple[float, ...]
    frame_rate: float
    bins: int
    n_q: int
    quantizer_groups: int

    def to_json(self) -> dict: ...


# The discriminator families (registered in bench.registry.DISCRIMINATORS), built from the
# MS-STFT width ``filters``. HiFi-Codec narrows MPD and MSD to the MS-STFT discriminator's
# parameter count: at the paper's 32 filters that is 0.47 M, against 0.65 M for MPD at width 4
# and 0.46 M for MSD at 16 (parameters grow as the width squared; MSD's grouped convs need
# multiples of 16).
def msstft_discriminator(channels: int, filters: int) -> nn.Module:
    return MultiScaleSTFTDiscriminator(filters=filters, in_channels=channels)


def mpd_discriminator(channels: int, filters: int) -> nn.Module:
    return MultiPeriodDiscriminator(filters=max(1, round(filters / 8)), in_channels=channels)


def msd_discriminator(channels: int, filters: int) -> nn.Module:
    return MultiScaleDiscriminator(filters=16 * max(1, round(filters / 32)), in_channels=channels)


def training_n_qs(settings: CodecTrainSettings, config: TrainableConfig) -> list[int]:
    """The numbers of codebooks that bandwidth sampling may draw."""
    if settings.bandwidth_sampling == "paper":
        return [bandwidth_to_n_q(b, config.frame_rate, config.bins) for b in config.bandwidths]
    # Every group spends the same number of codebooks.
    groups = config.quantizer_groups
    return list(range(groups, config.n_q + 1, groups))


def _discriminator_keys(settings: CodecTrainSettings, config: TrainableConfig) -> list[str]:
    if not settings.discriminator_per_bandwidth:
        return ["shared"]
    return [f"n_q={n_q}" for n_q in training_n_qs(settings, config)]


def discriminator_key(
    settings: CodecTrainSettings, config: TrainableConfig, n_q: int | None
) -> str:
    """Which discriminator judges a batch coded with ``n_q`` codebooks (None: unquantized,
    the quantizer warm-up, judged by the highest bandwidth's)."""
    if not settings.discriminator_per_bandwidth:
        return "shared"
    return f"n_q={max(training_n_qs(settings, config)) if n_q is None else n_q}"


def _active_weights(settings: CodecTrainSettings) -> dict[str, float]:
    # Without discriminators the adversarial terms do not exist; the rest keep their weights.
    adversarial = {"adversarial", "feature"}
    return {
        name: weight
        for name, weight in settings.weights.items()
        if settings.discriminators or name not in adversarial
    }


@torch.no_grad()
def initialise_codebooks(
    model: nn.Module, batch: torch.Tensor, seed: int, training_batch_size: int
) -> None:
    """k-means-initialise every codebook on ``batch``, a batch larger than a training one.

    The paper initialises on the first training batch, 4800 vectors for 1024 codes; a CPU
    batch holds a fraction of that, too few for 1024 centroids, so the batch used for the
    initialisation alone is larger (``INIT_BATCH`` segments). Its EMA counts are then
    scaled to a training batch of ``training_batch_size`` segments (over all workers):
    otherwise they start ``INIT_BATCH / training_batch_size`` times too high and an unused
    code stays "alive" for hundreds of steps before dead-code replacement may reseed it.

    ``CodecTrainSettings.quantizer_warmup_steps`` delays this to a trained encoder. With
    PyTorch's default initialisation the untrained encoder maps all audio to nearly one point
    (for the tiny model, the latent varies by 0.002 across frames around an offset of 0.27), so
    the codewords sit in a tiny cloud that the first Adam steps move the whole latent away
    from, and every frame takes the same code on every level. The default ``fan_in`` weight
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


class CodecGANSolver(Solver):
    """The codec, its discriminators (one per bandwidth, or one shared), their optimisers and
    the loss balancer."""

    settings: CodecTrainSettings
    config: TrainableConfig

    def __init__(self, settings: CodecTrainSettings, device: torch.device | None = None) -> None:
        super().__init__(settings, device)
        torch.manual_seed(settings.seed)
        self.config = config = settings.model_config()
        self.name, self.sample_rate, self.channels = (
            settings.codec,
            config.sample_rate,
            config.channels,
        )
        self.model: nn.Module = CODECS.factory(settings.codec).model_class(config)
        if settings.weight_init == "fan_in":
            init_fan_in_(self.model)
        # Keyed by `discriminator_key`: one per bandwidth, or one shared.
        self.discriminator = (
            nn.ModuleDict(
                {
                    key: MultiDiscriminator(
                        [
                            DISCRIMINATORS.create(
                                name,
                                channels=config.channels,
                                filters=settings.discriminator_filters,
                            )
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
        self.model.to(self.device)
        if self.discriminator is not None:
            self.discriminator.to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=settings.learning_rate, betas=settings.betas
        )
        self.discriminator_optimizer = (
            torch.optim.Adam(
                self.discriminator.parameters(), lr=settings.learning_rate, betas=settings.betas
            )
            if self.discriminator is not None
            else None
        )
        self.balancer = LossBalancer(_active_weights(settings)) if settings.balancer else None
        self.mel_loss = MultiScaleMelLoss(
            config.sample_rate, log_l2=settings.frequency_loss == "audiocraft"
        )
        # The DistributedDataParallel wrappers that training forwards go through, when there
        # are several workers; `model` and `discriminator` stay the bare modules either way.
        self.parallel_model: nn.Module | None = None
        self.parallel_discriminators: dict[str, nn.Module] = {}

    def networks(self) -> dict[str, tuple[dict, nn.Module]]:
        networks = {"codec": (self.config.to_json(), self.model)}
        if self.discriminator is not None:
            networks["discriminator"] = (discriminator_config(self.settings), self.discriminator)
        return networks

    def training_parts(self) -> dict[str, object | None]:
        return {
            "optimizer": self.optimizer,
            "discriminator_optimizer": self.discriminator_optimizer,
            "balancer": self.balancer,
        }

    def wrap_for_workers(self, rank: int, world_size: int) -> None:
        """Wrap model and discriminators for gradient averaging over the workers.

        DDP broadcasts rank 0's parameters and buffers (the codebooks included) when it wraps,
        and its buffers again before every forward, so all workers quantize alike.
        """
        super().wrap_for_workers(rank, world_size)
        if world_size == 1:
            return
        self.parallel_model = data_parallel(self.model, self.device)
        # One wrapper per discriminator: a step uses only its bandwidth's, and DDP expects
        # every parameter it wraps to take part.
        for key, discriminator in (self.discriminator or {}).items():
            self.parallel_discriminators[key] = data_parallel(discriminator, self.device)

    def run_step(self, step: int) -> dict:
        settings = self.settings
        # Rank r draws its segments from streams 2r (training) and 2r + 1 (codebook init), so
        # a single worker draws exactly what an undistributed run does.
        if step == settings.quantizer_warmup_steps:
            init_batch = self.sampler.batch(
                settings.seed, step, INIT_BATCH, stream=2 * self.rank + 1
            )
            initialise_codebooks(
                self.model,
                init_batch.to(self.device),
                step_seed(settings.seed, step),
                settings.batch_size * self.world_size,
            )
        batch = self.sampler.batch(settings.seed, step, settings.batch_size, stream=2 * self.rank)
        return self.train_on_batch(batch.to(self.device), step)

    def train_on_batch(self, batch: torch.Tensor, step: int) -> dict:
        """One optimisation step at ``step`` on ``batch``; returns the values to log."""
        settings, config = self.settings, self.config
        generator = torch.Generator().manual_seed(step_seed(settings.seed, step))
        # Codebook k-means initialisation and dead-code replacement draw from torch's global
        # generator: seeding it per step is what makes a resumed run continue exactly.
        torch.manual_seed(step_seed(settings.seed, step))
        n_q = sample_n_q(
            config.n_q,
            generator,
            bandwidths=config.bandwidths if settings.bandwidth_sampling == "paper" else None,
            frame_rate=config.frame_rate,
            bins=config.bins,
            groups=config.quantizer_groups,
        )
        if step < settings.quantizer_warmup_steps:
            n_q = None
        self.model.train()
        output = (self.parallel_model or self.model)(batch, n_q)
        log = {"n_q": n_q or 0}

        update_discriminator = self.discriminator is not None and (
            torch.rand((), generator=generator).item() < settings.discriminator_probability
        )
        if self.discriminator is not None:
            key = discriminator_key(settings, config, n_q)
            discriminator = self.discriminator[key]
        if update_discriminator:
            # Real and fake in one forward: DistributedDataParallel allows one per backward.
            both = self.parallel_discriminators.get(key, discriminator)(
                torch.cat([batch, output.audio.detach()])
            )
            real_logits = [logits[: len(batch)] for logits in both.logits]
            fake_logits = [logits[len(batch) :] for logits in both.logits]
            discriminator_loss = hinge_discriminator_loss(real_logits, fake_logits)
            self.discriminator_optimizer.zero_grad(set_to_none=True)
            discriminator_loss.backward()
            self.discriminator_optimizer.step()
            log["discriminator"] = discriminator_loss.item()

        losses = {
            "time": time_l1(batch, output.audio),
            "frequency": self.mel_loss(batch, output.audio),
        }
        if self.discriminator is not None:
            # The bare module: this step does not update the discriminator, so there is nothing
            # to average across workers. Real features are targets only.
            with torch.no_grad():
                real = discriminator(batch)
            fake = discriminator(output.audio)
            losses["adversarial"] = hinge_generator_loss(fake.logits)
            losses["feature"] = relative_feature_matching(real.feature_maps, fake.feature_maps)
        self.optimizer.zero_grad(set_to_none=True)
        # One backward pass for everything (DDP allows no more). The commitment loss reaches
        # only the encoder and sits outside the balancer.
        if self.balancer is not None:
            gradient, metrics = self.balancer.balanced_gradient(losses, output.audio)
            log.update(metrics)
            roots, gradients = [output.audio], [gradient]
        else:
            weights = _active_weights(settings)
            roots, gradients = [sum(weights[name] * loss for name, loss in losses.items())], [None]
        if output.commitment_loss.requires_grad:
            roots.append(settings.commitment_weight * output.commitment_loss)
            gradients.append(None)
        torch.autograd.backward(roots, gradients)
        if self.discriminator is not None:
            # Generator steps must not move the discriminator.
            self.discriminator.zero_grad(set_to_none=True)
        self.optimizer.step()
        log.update({name: loss.item() for name, loss in losses.items()})
        log["commitment"] = output.commitment_loss.item()
        # Distinct codes per level in this batch: collapse (one level doing all the work, or a
        # level stuck on a handful of codes) shows here long before it shows in the losses.
        log["codes_used"] = [len(torch.unique(level)) for level in output.codes.transpose(0, 1)]
        return log

    def progress(self, log: dict) -> dict[str, str]:
        return {
            "mel": f"{log['frequency']:.3f}",
            "l1": f"{log['time']:.4f}",
            "n_q": str(log["n_q"]),
        }

    def export(self, path: Path, step: int, metadata: dict) -> None:
        """The model alone (no optimiser or discriminator): what a codec loads and ships."""
        Checkpoint(
            codec=self.settings.codec,
            networks={"codec": Network(self.config.to_json(), self.model.state_dict())},
            step=step,
            metadata={**metadata, "train_settings": self.settings.to_json()},
        ).save(path)

    def finish(self, out_dir: Path) -> None:
        plot_training_log(out_dir / self.log_file, out_dir / "train_log.png", LOSSES)
