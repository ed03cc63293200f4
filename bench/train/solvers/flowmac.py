"""FlowMAC's two solvers (Pia et al., ICASSP 2025): the codec and its vocoder.

:class:`FlowMacSolver` trains the mel encoder, residual VQ, mel decoder and CFM U-Net together
by ``L_CFM + 0.01 L_prior + 0.25 L_VQ`` (Adam, 1e-4). At step 0 it computes the per-band mel
normalisation over a larger seeded batch (``NORMALISATION_SEGMENTS`` segments), stored in the
model's buffers and so in every checkpoint. The export bundles the vocoder named by the
settings, so that the codec and its vocoder ship as one file.

:class:`VocoderSolver` trains the BigVGAN-style generator on ground-truth mels (Lee et al.,
ICLR 2023): least-squares GAN against MPD and MSD, L1 feature matching (weight 2) and the L1
distance of log mels (weight 45), AdamW with betas (0.8, 0.99).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.codecs.checkpoint import Checkpoint, CheckpointError, Network, load_checkpoint
from bench.codecs.modules.discriminators import MultiDiscriminator
from bench.registry import CODECS, DISCRIMINATORS
from bench.train.losses import (
    feature_matching_l1,
    least_squares_discriminator_loss,
    least_squares_generator_loss,
)
from bench.train.plots import plot_training_log
from bench.train.settings import FlowMacTrainSettings, VocoderTrainSettings
from bench.train.solvers.base import Solver, data_parallel, discriminator_config, step_seed

NORMALISATION_SEGMENTS = 64
CODEC_LOSSES = ("total", "cfm", "prior", "commitment")
VOCODER_LOSSES = ("mel", "adversarial", "feature", "discriminator")


class FlowMacSolver(Solver):
    """The FlowMAC codec network and its optimiser."""

    settings: FlowMacTrainSettings

    def __init__(self, settings: FlowMacTrainSettings, device: torch.device | None = None) -> None:
        super().__init__(settings, device)
        torch.manual_seed(settings.seed)
        self.family = CODECS.factory(settings.codec)
        self.config = self.family.configs[settings.config]
        self.name, self.sample_rate, self.channels = settings.codec, self.config.sample_rate, 1
        self.model = self.family.model_class(self.config).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.learning_rate)
        self.parallel_model: nn.Module | None = None
        if settings.vocoder is not None:
            self._vocoder()  # refuse a bad vocoder now, not after hours of training

    def _vocoder(self) -> Network:
        path = self.settings.vocoder
        try:
            network = load_checkpoint(path, f"{self.name}-vocoder").network("vocoder")
        except CheckpointError as error:
            raise ValueError(f"--vocoder: {error}") from None
        mel = network.config.get("mel") if isinstance(network.config, dict) else None
        if mel != asdict(self.config.mel):
            raise ValueError(
                f"--vocoder {path}: trained on the mel {mel}, the codec makes {self.config.mel}"
            )
        return Network(network.config, network.state_dict)

    def networks(self) -> dict[str, tuple[dict, nn.Module]]:
        return {"codec": (self.config.to_json(), self.model)}

    def training_parts(self) -> dict[str, object | None]:
        return {"optimizer": self.optimizer}

    def wrap_for_workers(self, rank: int, world_size: int) -> None:
        super().wrap_for_workers(rank, world_size)
        if world_size > 1:
            self.parallel_model = data_parallel(self.model, self.device)

    def _mel(self, audio: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.normalised_mel(audio[:, 0].to(self.device))

    def run_step(self, step: int) -> dict:
        settings = self.settings
        if step == 0:
            segments = self.sampler.batch(
                settings.seed, step, NORMALISATION_SEGMENTS, stream=2 * self.rank + 1
            )
            with torch.no_grad():
                mels = self.family.log_mel(segments[:, 0].to(self.device), self.config.mel)
            self.model.set_normalisation(mels)
        batch = self.sampler.batch(settings.seed, step, settings.batch_size, stream=2 * self.rank)
        generator = torch.Generator().manual_seed(step_seed(settings.seed, step))
        # k-means initialisation, dead-code replacement and dropout draw from the global one.
        torch.manual_seed(step_seed(settings.seed, step))
        n_q = self.config.n_q
        if settings.bandwidth_sampling == "bandwidths":
            choices = [self.model.n_q_for(bandwidth) for bandwidth in self.config.bandwidths]
            n_q = choices[int(torch.randint(len(choices), (), generator=generator))]
        self.model.train()
        output = (self.parallel_model or self.model)(
            self._mel(batch),
            n_q,
            generator,
            time_sampling=settings.time_sampling,
            condition_drop=settings.condition_drop,
        )
        self.optimizer.zero_grad(set_to_none=True)
        output.total.backward()
        self.optimizer.step()
        return {
            "n_q": n_q,
            "total": output.total.item(),
            "cfm": output.cfm.item(),
            "prior": output.prior.item(),
            "commitment": output.commitment.item(),
            "codes_used": [len(torch.unique(level)) for level in output.codes],
        }

    def progress(self, log: dict) -> dict[str, str]:
        return {"cfm": f"{log['cfm']:.3f}", "prior": f"{log['prior']:.3f}"}

    def metadata(self) -> dict:
        return {"description": f"FlowMAC {self.config.name}"}

    def export(self, path: Path, step: int, metadata: dict) -> None:
        """The codec and, when the settings name one, its vocoder, in one checkpoint."""
        networks = {"codec": Network(self.config.to_json(), self.model.state_dict())}
        if self.settings.vocoder is not None:
            networks["vocoder"] = self._vocoder()
        Checkpoint(
            codec=self.settings.codec,
            networks=networks,
            step=step,
            metadata={**metadata, "train_settings": self.settings.to_json()},
        ).save(path)

    def finish(self, out_dir: Path) -> None:
        plot_training_log(out_dir / self.log_file, out_dir / "train_log.png", CODEC_LOSSES)


class VocoderSolver(Solver):
    """The generator, its discriminators and their optimisers."""

    settings: VocoderTrainSettings

    def __init__(self, settings: VocoderTrainSettings, device: torch.device | None = None) -> None:
        super().__init__(settings, device)
        torch.manual_seed(settings.seed)
        self.family = CODECS.factory(settings.codec)
        self.generator_config = self.family.vocoder_configs[settings.config]
        # Every configuration of the family shares its mel front end.
        self.mel = next(iter(self.family.configs.values())).mel
        self.name, self.sample_rate = f"{settings.codec}-vocoder", self.mel.sample_rate
        self.channels = 1
        self.generator = self.family.vocoder_class(self.generator_config).to(self.device)
        self.discriminator = (
            MultiDiscriminator(
                DISCRIMINATORS.create(name, channels=1, filters=settings.discriminator_filters)
                for name in settings.discriminators
            ).to(self.device)
            if settings.discriminators
            else None
        )
        betas = (0.8, 0.99)
        self.optimizer = torch.optim.AdamW(
            self.generator.parameters(), lr=settings.learning_rate, betas=betas
        )
        self.discriminator_optimizer = (
            torch.optim.AdamW(
                self.discriminator.parameters(), lr=settings.learning_rate, betas=betas
            )
            if self.discriminator is not None
            else None
        )
        self.parallel_generator: nn.Module | None = None
        self.parallel_discriminator: nn.Module | None = None

    def network_config(self) -> dict:
        return self.family.vocoder_network_config(self.generator_config, self.mel)

    def networks(self) -> dict[str, tuple[dict, nn.Module]]:
        networks = {"vocoder": (self.network_config(), self.generator)}
        if self.discriminator is not None:
            networks["discriminator"] = (discriminator_config(self.settings), self.discriminator)
        return networks

    def training_parts(self) -> dict[str, object | None]:
        return {
            "optimizer": self.optimizer,
            "discriminator_optimizer": self.discriminator_optimizer,
        }

    def wrap_for_workers(self, rank: int, world_size: int) -> None:
        super().wrap_for_workers(rank, world_size)
        if world_size > 1:
            self.parallel_generator = data_parallel(self.generator, self.device)
            if self.discriminator is not None:
                self.parallel_discriminator = data_parallel(self.discriminator, self.device)

    def run_step(self, step: int) -> dict:
        settings = self.settings
        batch = self.sampler.batch(settings.seed, step, settings.batch_size, stream=2 * self.rank)
        audio = batch.to(self.device)
        torch.manual_seed(step_seed(settings.seed, step))
        with torch.no_grad():
            mel = self.family.log_mel(audio[:, 0], self.mel)
        self.generator.train()
        generated = (self.parallel_generator or self.generator)(mel)[..., : audio.shape[-1]]
        log = {}
        if self.discriminator is not None:
            both = (self.parallel_discriminator or self.discriminator)(
                torch.cat([audio, generated.detach()])
            )
            real = [logits[: len(audio)] for logits in both.logits]
            fake = [logits[len(audio) :] for logits in both.logits]
            discriminator_loss = least_squares_discriminator_loss(real, fake)
            self.discriminator_optimizer.zero_grad(set_to_none=True)
            discriminator_loss.backward()
            self.discriminator_optimizer.step()
            log["discriminator"] = discriminator_loss.item()
        losses = {"mel": F.l1_loss(self.family.log_mel(generated[:, 0], self.mel), mel)}
        total = settings.mel_weight * losses["mel"]
        if self.discriminator is not None:
            with torch.no_grad():
                real_output = self.discriminator(audio)
            fake_output = self.discriminator(generated)
            losses["adversarial"] = least_squares_generator_loss(fake_output.logits)
            losses["feature"] = feature_matching_l1(
                real_output.feature_maps, fake_output.feature_maps
            )
            total = total + losses["adversarial"] + settings.feature_weight * losses["feature"]
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.discriminator is not None:
            self.discriminator.zero_grad(set_to_none=True)
        self.optimizer.step()
        log.update({name: loss.item() for name, loss in losses.items()})
        return log

    def progress(self, log: dict) -> dict[str, str]:
        return {"mel": f"{log['mel']:.3f}"}

    def export(self, path: Path, step: int, metadata: dict) -> None:
        """The generator alone, as the network ``"vocoder"``."""
        Checkpoint(
            codec=self.name,
            networks={"vocoder": Network(self.network_config(), self.generator.state_dict())},
            step=step,
            metadata={**metadata, "train_settings": self.settings.to_json()},
        ).save(path)

    def finish(self, out_dir: Path) -> None:
        plot_training_log(out_dir / self.log_file, out_dir / "train_log.png", VOCODER_LOSSES)
