"""The settings of every solver, as frozen dataclasses: what determines a training run.

Each field that ``bench train`` exposes carries its command-line :class:`Option`, so the
command's options and their defaults come from here and nowhere else. The module imports no
torch: the command line lists every recipe's options at start-up. A settings class names its
solver (``solver``, by import path); a recipe (:class:`bench.codecs.training.TrainingRecipe`)
names a settings class and the defaults of its model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

from bench.codecs.training import TrainingRecipe
from bench.registry import CODECS, DISCRIMINATORS, SOLVERS, load_target

# EnCodec's loss weights (Sec. 3.4): time L1, multi-scale mel, adversarial, feature matching.
PAPER_WEIGHTS = {"time": 0.1, "frequency": 1.0, "adversarial": 3.0, "feature": 3.0}
BANDWIDTH_SAMPLING = ("paper", "uniform")
FREQUENCY_LOSSES = ("paper", "audiocraft")
WEIGHT_INITS = ("fan_in", "pytorch")


@dataclass(frozen=True)
class Option:
    """How a settings field appears on ``bench train``'s command line.

    ``flag`` defaults to ``--field-name``; a boolean field's flag switches it away from its
    default. ``parse`` turns the text of a field that is not a number or a string into its
    value, raising ``ValueError`` naming the option on bad text.
    """

    help: str
    flag: str | None = None
    parse: Callable[[str], Any] | None = None


def option(help: str, flag: str | None = None, parse=None) -> dict:
    """Field metadata that exposes the field as a command-line option."""
    return {"option": Option(help, flag, parse)}


def parse_discriminators(text: str) -> tuple[str, ...]:
    """``msstft,mpd`` -> its families; ``none`` -> no discriminator."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    return () if names == ("none",) else names


def parse_loss_weights(text: str) -> dict[str, float]:
    """``time=0.5,adversarial=1`` over the paper's weights (the rest keep theirs)."""
    weights = dict(PAPER_WEIGHTS)
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        name, _, value = part.partition("=")
        if name not in weights or not value:
            raise ValueError(
                f"--weights: expected NAME=VALUE with NAME in {sorted(weights)}, got {part!r}"
            )
        try:
            weights[name] = float(value)
        except ValueError:
            weights[name] = math.nan
        if not math.isfinite(weights[name]):
            raise ValueError(f"--weights {part!r}: expected a finite number, got {value!r}")
    return weights


def _refuse_out_of_range(at_least: dict[int, dict[str, float]], positive: dict) -> None:
    for minimum, values in at_least.items():
        too_small = {name: value for name, value in values.items() if value < minimum}
        if too_small:
            raise ValueError(f"expected {', '.join(too_small)} >= {minimum}, got {too_small}")
    not_positive = {name: value for name, value in positive.items() if not value > 0}
    if not_positive:
        raise ValueError(f"expected {', '.join(not_positive)} > 0, got {not_positive}")


def _check_discriminators(names: tuple[str, ...]) -> None:
    unknown = set(names) - set(DISCRIMINATORS.names())
    if unknown:
        raise ValueError(
            f"--discriminators: expected some of {', '.join(DISCRIMINATORS.names())} "
            f"(or none), got {sorted(unknown)}"
        )


@dataclass(frozen=True, kw_only=True)
class SolverSettings:
    """What every run has: its data and segments, its steps, seed and checkpoints."""

    # "module:Class" of the solver that trains with these settings.
    solver: ClassVar[str]

    data: str = field(metadata=option("training data: a dataset spec"))
    steps: int = field(metadata=option("train until this step"))
    batch_size: int = field(default=16, metadata=option("segments per step (per worker)"))
    segment_seconds: float = field(default=1.0, metadata=option("training segment length"))
    seed: int = field(default=0, metadata=option("every random draw derives from it"))
    checkpoint_every: int = field(default=100, metadata=option("save the state every N steps"))
    data_limit: int | None = field(default=None, metadata=option("use the first N items of --data"))

    def __post_init__(self) -> None:
        _refuse_out_of_range(*self._ranges())

    def _ranges(self) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
        """Option -> value, by the least value allowed; and the options that must be > 0."""
        counts = {
            "--steps": self.steps,
            "--batch-size": self.batch_size,
            "--checkpoint-every": self.checkpoint_every,
        }
        return {1: counts}, {"--segment-seconds": self.segment_seconds}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SolverSettings:
        # JSON has no tuples; dicts (loss weights) stay dicts.
        return cls(**{name: tuple(v) if isinstance(v, list) else v for name, v in data.items()})

    def resumes(self, saved: SolverSettings) -> bool:
        """Whether a run saved with ``saved`` continues as this one: only ``steps`` may
        differ."""
        return replace(saved, steps=self.steps) == self


def recipe_settings(name: str, **given: Any) -> SolverSettings:
    """The settings of ``bench train NAME``: its recipe's defaults, then ``given``."""
    recipe: TrainingRecipe = SOLVERS.factory(name)
    return load_target(recipe.settings)(**{**recipe.defaults, **given})


@dataclass(frozen=True, kw_only=True)
class CodecTrainSettings(SolverSettings):
    """The codec GAN solver (EnCodec Sec. 3.4, HiFi-Codec): a registered codec whose class
    declares ``configs`` and ``model_class``, trained adversarially with the loss balancer."""

    solver: ClassVar[str] = "bench.train.solvers.codec_gan:CodecGANSolver"

    # The registered codec whose model is trained; its recipe fixes it.
    codec: str
    config: str = field(default="tiny", metadata=option("model configuration"))
    learning_rate: float = field(default=3e-4, metadata=option("Adam (paper: 3e-4)"))
    betas: tuple[float, float] = (0.5, 0.9)
    discriminator_probability: float = 2 / 3
    discriminators: tuple[str, ...] = field(
        default=("msstft",),
        metadata=option(
            "comma-separated discriminator families (msstft, mpd, msd), or 'none'",
            parse=parse_discriminators,
        ),
    )
    # The paper trains one discriminator per bandwidth, updating only the batch's; False
    # shares one across bandwidths (as audiocraft does).
    discriminator_per_bandwidth: bool = field(
        default=True,
        metadata=option(
            "one discriminator for all bandwidths (the paper trains one per bandwidth)",
            flag="--shared-discriminator",
        ),
    )
    # The paper's 32; the CPU demo uses 8, which cuts the discriminator's cost 10x.
    discriminator_filters: int = field(
        default=32, metadata=option("MS-STFT discriminator width (MPD and MSD match its size)")
    )
    balancer: bool = field(
        default=True, metadata=option("sum the weighted losses", flag="--no-balancer")
    )
    weights: dict[str, float] = field(
        default_factory=lambda: dict(PAPER_WEIGHTS),
        metadata=option(
            "loss weights as NAME=VALUE,...; the losses not named keep the paper's",
            parse=parse_loss_weights,
        ),
    )
    commitment_weight: float = field(default=1.0, metadata=option("commitment loss weight"))
    # "paper": L1 + L2 on the mel magnitudes; "audiocraft": the L2 term on log mels.
    frequency_loss: str = field(
        default="paper",
        metadata=option("paper (L1+L2 on mels) | audiocraft (the L2 term on log mels)"),
    )
    # None: the configuration's own (EnCodec: rvq; HiFi-Codec: grvq).
    quantizer: str | None = field(
        default=None,
        metadata=option("rvq or grvq (HiFi-Codec's group-residual VQ; default: the config's)"),
    )
    bandwidth_sampling: str = field(default="paper", metadata=option("paper | uniform"))
    # Steps that train encoder and decoder as a plain autoencoder before the codebooks are
    # k-means initialised; 0 is the paper. See `initialise_codebooks` for why a small model
    # needs it.
    quantizer_warmup_steps: int = field(
        default=0, metadata=option("train as a plain autoencoder this many steps before k-means")
    )
    # "fan_in": convolutions drawn to keep the signal's variance (`init_fan_in_`);
    # "pytorch": PyTorch's default, as the official model was initialised.
    weight_init: str = field(
        default="fan_in",
        metadata=option("fan_in (variance-preserving convolutions) | pytorch (PyTorch's default)"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        configs = self.configs()
        if self.config not in configs:
            raise ValueError(
                f"--config: expected one of {', '.join(configs)} for {self.codec}, "
                f"got {self.config!r}"
            )
        # Resolved here, so a saved run records what it trained with.
        if self.quantizer is None:
            object.__setattr__(self, "quantizer", configs[self.config].quantizer)
        _check_discriminators(self.discriminators)
        quantizers = configs[self.config].quantizers
        if self.quantizer not in quantizers:
            raise ValueError(
                f"--quantizer: expected one of {', '.join(quantizers)} for {self.codec} "
                f"{self.config}, got {self.quantizer!r}"
            )
        for name, value, allowed in (
            ("--bandwidth-sampling", self.bandwidth_sampling, BANDWIDTH_SAMPLING),
            ("--weight-init", self.weight_init, WEIGHT_INITS),
            ("--frequency-loss", self.frequency_loss, FREQUENCY_LOSSES),
        ):
            if value not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {value!r}")
        if set(self.weights) != set(PAPER_WEIGHTS):
            raise ValueError(
                f"loss weights: expected {sorted(PAPER_WEIGHTS)}, got {sorted(self.weights)}"
            )

    def _ranges(self) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
        at_least, positive = super()._ranges()
        return {**at_least, 0: {"--quantizer-warmup-steps": self.quantizer_warmup_steps}}, positive

    def configs(self) -> dict:
        """The configurations the codec's class declares (``configs``)."""
        configs = getattr(CODECS.factory(self.codec), "configs", None)
        if not configs:
            raise ValueError(
                f"codec {self.codec!r} declares no configurations to train (its class has no "
                "`configs` and `model_class`)"
            )
        return configs

    def model_config(self) -> Any:
        """The configuration to build (the codec's configuration class): ``config``'s, with
        ``quantizer`` applied."""
        return self.configs()[self.config].with_quantizer(self.quantizer)


@dataclass(frozen=True, kw_only=True)
class LMTrainSettings(SolverSettings):
    """The entropy-coding LM of a trained codec (EnCodec Sec. 3.3).

    ``checkpoint`` is the codec: a checkpoint of a registered codec with entropy coding, such as
    ``bench train encodec``'s ``model.pt``. The LM defaults are the paper's (d = 200, 5 layers,
    8 heads, FFN 4d, a 3.5 s window, 5 s training sequences); the paper gives no optimiser
    settings.
    """

    solver: ClassVar[str] = "bench.train.solvers.entropy_lm:EntropyLMSolver"

    checkpoint: str = field(
        metadata=option("the trained codec: a `bench train` checkpoint (its model.pt)")
    )
    segment_seconds: float = field(default=5.0, metadata=option("training segment length"))
    context_seconds: float = field(
        default=3.5, metadata=option("causal attention window", flag="--lm-context-seconds")
    )
    dim: int = field(default=200, metadata=option("transformer width", flag="--lm-dim"))
    num_heads: int = field(default=8, metadata=option("attention heads", flag="--lm-heads"))
    num_layers: int = field(default=5, metadata=option("transformer layers", flag="--lm-layers"))
    hidden_scale: float = 4.0
    learning_rate: float = field(
        default=1e-3, metadata=option("Adam learning rate", flag="--lm-learning-rate")
    )

    def _ranges(self) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
        at_least, positive = super()._ranges()
        sizes = {"--lm-dim": self.dim, "--lm-heads": self.num_heads, "--lm-layers": self.num_layers}
        return {1: {**at_least[1], **sizes}}, {
            **positive,
            "--lm-context-seconds": self.context_seconds,
            "--lm-learning-rate": self.learning_rate,
            "hidden_scale": self.hidden_scale,
        }


# `bench train lm`: the LM is trained on any codec that entropy-codes, so the harness declares it.
ENTROPY_LM_TRAINING = TrainingRecipe(
    description="the entropy-coding LM of a trained codec (EnCodec Sec. 3.3), added to its "
    "checkpoint",
    settings="bench.train.settings:LMTrainSettings",
)


def _check_choices(choices: dict[str, tuple[object, tuple]]) -> None:
    """Refuse an option whose value is not among its choices: ``{flag: (value, choices)}``."""
    for flag, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(
                f"{flag}: expected one of {', '.join(map(str, allowed))}, got {value!r}"
            )


@dataclass(frozen=True, kw_only=True)
class FlowMacTrainSettings(SolverSettings):
    """FlowMAC's codec (Pia et al. 2025): mel encoder, RVQ, mel decoder and the CFM U-Net,
    trained by ``L_CFM + 0.01 L_prior + 0.25 L_VQ`` with Adam at the paper's 1e-4.

    ``vocoder`` is a ``bench train flowmac-vocoder`` model, bundled into the export so that
    the codec and its vocoder ship as one checkpoint; it does not change training, so a run
    may be resumed with another.
    """

    solver: ClassVar[str] = "bench.train.solvers.flowmac:FlowMacSolver"

    # The registered codec whose class declares the model (`configs`, `model_class`).
    codec: str = "flowmac"
    config: str = field(default="tiny", metadata=option("model configuration"))
    segment_seconds: float = field(default=2.0, metadata=option("training segment length"))
    learning_rate: float = field(default=1e-4, metadata=option("Adam (paper: 1e-4)"))
    time_sampling: str = field(
        default="logit-normal", metadata=option("logit-normal (the paper's) | uniform")
    )
    condition_drop: float = field(
        default=0.2, metadata=option("probability of zeroing the condition (for guidance)")
    )
    # "all": every batch through all stages, lower bitrates only by dropping stages at
    # inference (the paper's reading); "bandwidths": one of the config's bitrates per batch.
    bandwidth_sampling: str = field(
        default="all", metadata=option("all (every stage, the paper's) | bandwidths")
    )
    vocoder: str | None = field(
        default=None, metadata=option("a flowmac-vocoder model.pt to bundle into the export")
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choices(
            {
                "--config": (self.config, tuple(CODECS.factory(self.codec).configs)),
                "--time-sampling": (self.time_sampling, ("logit-normal", "uniform")),
                "--bandwidth-sampling": (self.bandwidth_sampling, ("all", "bandwidths")),
            }
        )
        if not 0 <= self.condition_drop < 1:
            raise ValueError(
                f"--condition-drop: expected a value in [0, 1), got {self.condition_drop}"
            )

    def _ranges(self) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
        at_least, positive = super()._ranges()
        return at_least, {**positive, "--learning-rate": self.learning_rate}

    def resumes(self, saved: SolverSettings) -> bool:
        return replace(saved, steps=self.steps, vocoder=self.vocoder) == self


@dataclass(frozen=True, kw_only=True)
class VocoderTrainSettings(SolverSettings):
    """FlowMAC's BigVGAN-style vocoder on ground-truth mels: least-squares GAN against the
    discriminators, L1 feature matching (weight 2) and L1 log-mel loss (weight 45), AdamW
    betas (0.8, 0.99) as BigVGAN."""

    solver: ClassVar[str] = "bench.train.solvers.flowmac:VocoderSolver"

    # The registered codec whose class declares the vocoder (`vocoder_configs`, ...).
    codec: str = "flowmac"
    config: str = field(default="tiny", metadata=option("vocoder configuration"))
    segment_seconds: float = field(default=0.5, metadata=option("training segment length"))
    learning_rate: float = field(default=2e-4, metadata=option("AdamW learning rate"))
    discriminators: tuple[str, ...] = field(
        default=("mpd", "msd"),
        metadata=option(
            "comma-separated discriminator families (msstft, mpd, msd), or 'none'",
            parse=parse_discriminators,
        ),
    )
    discriminator_filters: int = field(
        default=32, metadata=option("discriminator width (as the codec GAN solver's)")
    )
    mel_weight: float = 45.0
    feature_weight: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        configs = tuple(CODECS.factory(self.codec).vocoder_configs)
        _check_choices({"--config": (self.config, configs)})
        _check_discriminators(self.discriminators)


@dataclass(frozen=True, kw_only=True)
class SoundStormTrainSettings(SolverSettings):
    """SoundStorm (Borsos et al. 2023) over the tokens of a trained EnCodec: the paper's
    per-example mask and the cross-entropy of the masked tokens of the drawn level. The paper
    gives no optimiser settings; AdamW at 3e-4 is the project's choice.

    ``codec_checkpoint`` is the EnCodec whose tokens are modelled; the corpus is encoded once
    into ``token_cache`` (``None``: ``$BENCH_CACHE/soundstorm-tokens``), keyed and checked by
    hash, and training windows are drawn from the cached tokens.
    """

    solver: ClassVar[str] = "bench.train.solvers.soundstorm:SoundStormSolver"

    # The registered codec whose class declares the model (`configs`, `model_class`, ...).
    codec: str = "soundstorm"
    codec_checkpoint: str = field(
        metadata=option("the EnCodec checkpoint whose tokens the model learns")
    )
    config: str = field(default="tiny", metadata=option("model configuration"))
    segment_seconds: float = field(default=4.0, metadata=option("training window length"))
    learning_rate: float = field(default=3e-4, metadata=option("AdamW learning rate"))
    token_cache: str | None = field(
        default=None, metadata=option("folder of the cached corpus tokens")
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choices({"--config": (self.config, tuple(CODECS.factory(self.codec).configs))})

    def _ranges(self) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
        at_least, positive = super()._ranges()
        return at_least, {**positive, "--learning-rate": self.learning_rate}

    def resumes(self, saved: SolverSettings) -> bool:
        # Where the tokens are cached does not change them.
        return replace(saved, steps=self.steps, token_cache=self.token_cache) == self


@dataclass(frozen=True, kw_only=True)
class SampleRnnTrainSettings(SolverSettings):
    """SampleRNN (Mehri et al. 2017) by truncated BPTT: each sequence (a segment of
    ``segment_seconds``) is cut into chunks of ``tbptt_samples``, one optimiser step per chunk,
    the tiers' hidden state carried from chunk to chunk and reset at each new sequence. Adam at
    the paper's 1e-3, each gradient element clipped to +-``gradient_clip`` as in the paper."""

    solver: ClassVar[str] = "bench.train.solvers.samplernn:SampleRnnSolver"

    # The module that declares the model (`CONFIGS`, `SampleRnn`, `quantize`,
    # `bits_per_sample`) and the one that conditions it on a codec's bitstream
    # (`load_tokenizer`, `conditioned_config`, `encode_latent`, `samplernn_checkpoint`); the
    # recipe of the package that owns them fixes both.
    model: str
    conditioning: str
    codec_checkpoint: str | None = field(
        default=None,
        metadata=option(
            "the EnCodec or FlowMAC checkpoint whose bitstream conditions the model, a codec "
            "decoder (default: unconditional)"
        ),
    )
    config: str = field(default="tiny", metadata=option("model configuration"))
    segment_seconds: float = field(
        default=8.0, metadata=option("sequence length, reset between (paper: 8 s)")
    )
    tbptt_samples: int = field(
        default=1024,
        metadata=option("samples per truncated-BPTT chunk (paper: 1024 2-tier, 512 3-tier)"),
    )
    learning_rate: float = field(default=1e-3, metadata=option("Adam (paper: 1e-3)"))
    gradient_clip: float = field(
        default=1.0, metadata=option("clip each gradient element to +-this (paper: 1)")
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        configs = load_target(f"{self.model}:CONFIGS")
        _check_choices({"--config": (self.config, tuple(configs))})
        top_frame = configs[self.config].frame_sizes[0]
        if self.tbptt_samples % top_frame:
            raise ValueError(
                f"--tbptt-samples: expected a multiple of the top frame size {top_frame}, "
                f"got {self.tbptt_samples}"
            )
        if self.chunks_per_sequence(configs[self.config].sample_rate) < 1:
            raise ValueError(
                f"--segment-seconds: expected at least one chunk of {self.tbptt_samples} "
                f"samples, got {self.segment_seconds} s"
            )

    def chunks_per_sequence(self, sample_rate: int) -> int:
        """TBPTT chunks (optimiser steps) per sequence; the remainder of a segment is unused."""
        return int(round(self.segment_seconds * sample_rate)) // self.tbptt_samples

    def _ranges(self) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
        at_least, positive = super()._ranges()
        return {1: {**at_least[1], "--tbptt-samples": self.tbptt_samples}}, {
            **positive,
            "--learning-rate": self.learning_rate,
            "--gradient-clip": self.gradient_clip,
        }
