"""SampleRNN (Mehri et al., ICLR 2017) as a codec decoder: another codec's bitstream, decoded
sample by sample by a conditional SampleRNN at 16 kHz.

``samplernn`` encodes with the encoder codec its checkpoint references: the project's EnCodec
demo for the shipped decoder, or a FlowMAC (its mel tokens) for a decoder trained with
``bench train samplernn --codec-checkpoint FLOWMAC.pt``. It sends exactly that codec's
bitstream at each of its bitrates, so its payload and ``actual_kbps`` equal that codec's to
the byte, and the table compares two decoder families on identical bits (after Klejsa et al.,
ICASSP 2019, who decoded a parametric codec's bitstream with a SampleRNN). The decoder
dequantizes the levels sent (:mod:`bench.codecs.samplernn.conditioning`), which condition the
model's top tier, and draws 16 kHz samples, the rate of the paper's models. The codec's rate
is the encoder codec's (24 kHz with the EnCodec demo): the 16 kHz output is resampled to it
with :func:`bench.audio.resample` (libsoxr VHQ), so nothing above 8 kHz is decoded.

Decoding draws samples, so ``seed`` sets them (the same seed, the same audio); there is no NFE:
the cost is one step of the sample-level MLP per sample, whatever the bitrate. ``temperature``
divides the logits (1: the model's distribution, as the paper samples).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from bench.codecs.base import Encoded, NeuralCodec, fit_length
from bench.codecs.checkpoint import CheckpointError, load_checkpoint, load_strictly
from bench.codecs.samplernn.conditioning import (
    MODEL_NETWORK,
    TOKENIZER_NETWORK,
    Tokenizer,
    load_tokenizer,
)
from bench.codecs.samplernn.model import (
    NAME,
    ZERO_LEVEL,
    SampleRnn,
    SampleRnnConfig,
    dequantize,
    quantize,
)

from bench.audio import resample

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"
DEMO_DECODER = CHECKPOINT_DIR / "samplernn_decoder_demo.pt"
DEMO_UNCONDITIONAL = CHECKPOINT_DIR / "samplernn_tiny_demo.pt"
DEMO_NOTE = "the project's small demo model trained on a CPU, not the paper's weights"


@dataclass(frozen=True)
class LoadedSampleRnn:
    """A SampleRNN checkpoint, loaded: the model (eval, frozen), its weights' hash, the encoder
    codec whose bitstream it decodes (``None``: an unconditional model), and the checkpoint's
    step."""

    path: Path
    model: SampleRnn
    hash: str
    tokenizer: Tokenizer | None
    tokenizer_hash: str | None
    step: int

    def check_bitrate(self, bitrate: float | None) -> float | None:
        """The encoder codec's listed bitrate ``bitrate`` means (a decoder needs one; an
        unconditional model takes none); ``ValueError`` naming what was expected."""
        if self.tokenizer is None:
            if bitrate is not None:
                raise ValueError(
                    f"--bitrate: {self.path} is an unconditional SampleRNN, which reads no "
                    f"bitstream; got {bitrate:g} kbps"
                )
            return None
        if bitrate is None:
            raise ValueError(
                f"--bitrate: {self.path} decodes a {self.tokenizer.family} bitstream; expected "
                f"one of {', '.join(f'{value:g}' for value in self.tokenizer.codec.bitrates)} kbps"
            )
        return self.tokenizer.codec.check_bitrate(bitrate)

    def bits(
        self, audio: torch.Tensor, sample_rate: int, bitrate: float | None = None
    ) -> tuple[float, int]:
        """The NLL in bits of ``audio`` ``(channels, samples)`` at ``sample_rate`` and the
        samples it covers: mixed to mono, resampled to the model's rate, quantized and cut to
        whole top frames, after one top frame of the zero level (where generation starts). A
        decoder reads the stream its encoder codec sends at ``bitrate``, encoded from the audio
        as given, as the codec would send it."""
        config = self.model.config
        mono = audio.mean(dim=0, keepdim=True)
        resampled = resample(mono, sample_rate, config.sample_rate)[0]
        samples = resampled.shape[0] // config.history * config.history
        if samples == 0:
            raise ValueError(
                f"expected at least {config.history} samples at {config.sample_rate} Hz, got "
                f"{resampled.shape[0]}"
            )
        levels = torch.cat(
            [
                torch.full((config.history,), ZERO_LEVEL),
                quantize(resampled[:samples], config.quantization),
            ]
        )[None]
        condition = None
        if self.tokenizer is not None:
            latent = self.tokenizer.encode_latent(mono, sample_rate, self.check_bitrate(bitrate))
            condition = self.model.align_condition(latent, samples)
        return self.model.sequence_bits(levels, condition), samples


def load_samplernn(path: str | os.PathLike) -> LoadedSampleRnn:
    """A ``bench train samplernn`` checkpoint, conditional or not.

    Raises:
        CheckpointError: missing, not a SampleRNN checkpoint, a bad configuration or weights,
            or a conditional one whose encoder codec is missing, changed or unsupported.
    """
    path = Path(path)
    contents = load_checkpoint(path, NAME)
    network = contents.network(MODEL_NETWORK)
    try:
        config = SampleRnnConfig.from_json(network.config)
    except (TypeError, KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: bad SampleRNN config: {error}") from None
    tokenizer, tokenizer_hash = None, None
    if config.condition_dim:
        if TOKENIZER_NETWORK not in contents.networks:
            raise CheckpointError(
                f"{path}: a conditional SampleRNN without the {TOKENIZER_NETWORK!r} network "
                "(the codec whose bitstream it decodes); a training run's last.pt holds the "
                "model alone: pass the run's model.pt"
            )
        reference = contents.network(TOKENIZER_NETWORK)
        if reference.reference is None:
            raise CheckpointError(
                f"{path}: expected the {TOKENIZER_NETWORK!r} network as a reference to an "
                "EnCodec or FlowMAC checkpoint, got weights saved inline"
            )
        try:
            tokenizer = load_tokenizer(reference.reference.path)
        except ValueError as error:  # CheckpointError too
            raise CheckpointError(f"{path}: {error}") from None
        tokenizer_hash = reference.hash
        expected_hop = config.sample_rate / tokenizer.codec.frame_rate
        if (config.condition_dim, config.condition_hop) != (tokenizer.dimension, expected_hop):
            raise CheckpointError(
                f"{path}: the model is conditioned on {config.condition_dim}-d frames every "
                f"{config.condition_hop} samples, its {tokenizer.family} gives "
                f"{tokenizer.dimension}-d frames every {expected_hop}"
            )
    model = SampleRnn(config)
    try:
        load_strictly(model, network.state_dict, str(path))
    except RuntimeError as error:  # shape mismatches
        raise CheckpointError(f"{path}: {error}") from None
    model.eval().requires_grad_(False)
    return LoadedSampleRnn(path, model, network.hash, tokenizer, tokenizer_hash, contents.step)


class SampleRnnCodec(NeuralCodec):
    """An encoder codec's bitstream decoded by a conditional SampleRNN; see the module
    docstring.

    Args:
        checkpoint: a conditional ``bench train samplernn --codec-checkpoint ...`` checkpoint,
            or ``None`` for the project's demo decoder :data:`DEMO_DECODER`.
        temperature: divides the logits before sampling (1: the model's distribution).

    Raises:
        CheckpointError: the file is missing or not a conditional SampleRNN checkpoint, or its
            encoder codec is missing, changed or unsupported.
        ValueError: a temperature that is not a finite positive number.
    """

    name = "samplernn"
    display_name = "SampleRNN"
    channels = 1
    nfe_options = None
    demo_checkpoint = DEMO_DECODER
    # What `bench nll` loads a checkpoint of this family with (the harness reaches it through
    # the registry, by the checkpoint's codec name).
    likelihood_model = staticmethod(load_samplernn)

    def __init__(
        self, checkpoint: str | os.PathLike | None = None, temperature: float = 1.0
    ) -> None:
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature: expected a finite value > 0, got {temperature}")
        self.temperature = float(temperature)
        path = Path(checkpoint) if checkpoint is not None else self.demo_checkpoint
        if checkpoint is None and not path.is_file():
            raise CheckpointError(
                f"the SampleRNN demo decoder is missing: expected {path}. Pass a checkpoint from "
                "`bench train samplernn --codec-checkpoint ENCODEC.pt` with --checkpoint PATH"
            )
        loaded = load_samplernn(path)
        if loaded.tokenizer is None:
            raise CheckpointError(
                f"{path}: an unconditional SampleRNN cannot decode a bitstream; train a decoder "
                "with `bench train samplernn --codec-checkpoint ENCODEC.pt` (an unconditional "
                "model's figure of merit is `bench nll`)"
            )
        self.loaded = loaded
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.config = loaded.model.config
        self.checkpoint_path = path
        is_demo = path.resolve() == self.demo_checkpoint.resolve()
        self.checkpoint_kind = "demo" if is_demo else "user"
        self.model_note = (
            DEMO_NOTE if is_demo else f"a codec-bench checkpoint trained for {loaded.step} steps"
        )

    # Properties of the Codec interface: the encoder codec's, whose bitstream is sent.

    @property
    def sample_rate(self) -> int:
        return self.tokenizer.codec.sample_rate

    @property
    def bitrates(self) -> tuple[float, ...]:
        return self.tokenizer.codec.bitrates

    @property
    def frame_rate(self) -> float:
        return self.tokenizer.codec.frame_rate

    @property
    def num_codebooks(self) -> int:
        return self.tokenizer.codec.num_codebooks

    @property
    def codebook_size(self) -> int:
        return self.tokenizer.codec.codebook_size

    @property
    def checkpoint_hash(self) -> str:
        """The decoder's weights and those of the codec whose bitstream it reads."""
        return f"{self.loaded.hash[:16]}+enc{self.loaded.tokenizer_hash[:8]}"

    def describe(self) -> dict:
        return {
            **super().describe(),
            "tokenizer": self.tokenizer.codec.describe(),
            "decoder_sample_rate": self.config.sample_rate,
            "temperature": self.temperature,
            "notes": [
                f"sends {self.tokenizer.family}'s bitstream; SampleRNN decodes at "
                f"{self.config.sample_rate} Hz, "
                f"resampled to {self.sample_rate} Hz with bench.audio.resample (libsoxr VHQ)"
            ],
        }

    # Encoding and decoding.

    def _encode(self, audio: torch.Tensor, bitrate: float) -> Encoded:
        return self.tokenizer.codec.encode(audio, bitrate)

    def decoder_samples(self, num_samples: int) -> int:
        """Samples the model draws, at its rate, for ``num_samples`` at the codec's."""
        return max(1, math.ceil(num_samples * self.config.sample_rate / self.sample_rate))

    def _decode(self, encoded: Encoded, nfe: int | None, seed: int | None) -> torch.Tensor:
        samples = self.decoder_samples(encoded.num_samples)
        condition = self.model.align_condition(self.tokenizer.latent_of_payload(encoded), samples)
        levels = self.model.generate(
            samples,
            condition=condition,
            temperature=self.temperature,
            seed=0 if seed is None else seed,
        )
        audio = dequantize(levels, self.config.quantization)
        audio = resample(audio, self.config.sample_rate, self.sample_rate)
        return fit_length(audio, encoded.num_samples)
