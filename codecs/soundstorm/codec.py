"""SoundStorm (Borsos et al., 2023) as a generative codec: send EnCodec's coarse levels,
generate the fine ones.

``soundstorm`` encodes with the project's EnCodec and transmits the first ``k`` RVQ levels,
exactly the bitstream EnCodec sends at that bitrate (:class:`~bench.codecs.encodec.codec.
EncodecCodec`'s packing, header included), so ``actual_kbps`` is EnCodec's at the same bitrate
to the byte. The decoder reads those levels back, generates levels ``k + 1`` to ``K`` (the
model's level count) with :func:`~bench.codecs.soundstorm.model.generate`, and decodes all
``K`` with EnCodec's decoder. With the tiny demo: 1.5 kbps sends 2 levels and 3 kbps 4, and
both generate up to the 8 levels of 6 kbps.

**NFE** is the first generated level's iterations, the knob the paper sweeps (its 16 is the
default): ``--nfe 1,2,4,8,16`` means the same thing at every bitrate. A decode spends that many
network passes on the first generated level and one on each further level (the paper's
schedule, greedy after the first level), so ``NFE + g - 1`` passes when ``g`` levels are
generated; :meth:`SoundStormCodec.network_passes` gives the count, ``describe()`` lists it per
bitrate and ``bench run`` prints it. With the demo, NFE 16 is 21 passes at 1.5 kbps (6 levels
generated) and 19 at 3 kbps (4). ``seed`` seeds the generator of every sample, so a seed gives
the same tokens whatever the global random state.

**Prompted continuation** (the paper's voice-prompt setting, with which its speaker-similarity
figures were measured): with ``prompt_seconds``, the first seconds of every level are also
sent, so they are given to the model and only the rest is generated. The payload is then a
SoundStorm frame (:func:`bench.codecs.bitstream.pack`: a JSON header ``{"codec",
"prompt_frames"}``, EnCodec's bitstream, then the prompt's levels ``k + 1`` to ``K`` packed at
``log2(bins)`` bits each) and ``actual_kbps`` counts the prompt's bits.

A checkpoint (``codec="soundstorm"``) holds the model (network ``"soundstorm"``: its
:class:`SoundStormConfig` and weights) and the EnCodec whose tokens it was trained on
(network ``"tokenizer"``, a reference to that EnCodec checkpoint, checked by hash); the
generated tokens mean nothing under another EnCodec. Only unsegmented mono EnCodec models
(the 24 kHz code path) are supported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

import torch
from bench.codecs.base import Encoded, NeuralCodec
from bench.codecs.bitstream import BitstreamError, pack, pack_codes, unpack, unpack_codes
from bench.codecs.checkpoint import (
    Checkpoint,
    CheckpointError,
    Network,
    load_checkpoint,
    load_strictly,
)
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.encodec.model import Segment
from bench.codecs.soundstorm.model import (
    CONFIGS,
    Generation,
    SoundStormConfig,
    SoundStormModel,
    generate,
    paper_schedule,
    soundstorm_loss,
)

DEMO_CHECKPOINT = Path(__file__).parent / "checkpoints" / "soundstorm_tiny_demo.pt"
DEMO_NOTE = "the project's small demo model trained on a CPU, not the paper's weights"
# The first generated level's iterations: the paper's 16, the most the NFE options offer.
PAPER_ITERATIONS = 16
# The network names of a SoundStorm checkpoint.
MODEL_NETWORK = "soundstorm"
TOKENIZER_NETWORK = "tokenizer"


def soundstorm_checkpoint(
    config: SoundStormConfig,
    state_dict: dict,
    tokenizer_checkpoint: str | os.PathLike,
    step: int = 0,
    metadata: dict | None = None,
) -> Checkpoint:
    """A checkpoint of a SoundStorm model trained on the tokens of the EnCodec checkpoint at
    ``tokenizer_checkpoint`` (saved as a reference to it, relative to where it is saved)."""
    return Checkpoint(
        "soundstorm",
        {
            MODEL_NETWORK: Network(config.to_json(), state_dict),
            TOKENIZER_NETWORK: Checkpoint.reference(tokenizer_checkpoint, "codec"),
        },
        step=step,
        metadata=metadata or {},
    )


def check_tokenizer(tokenizer: EncodecCodec, config: SoundStormConfig) -> None:
    """Refuse (``ValueError``) an EnCodec whose tokens ``config``'s model cannot take."""
    tokenizer_config = tokenizer.config
    if (
        tokenizer_config.channels != 1
        or tokenizer_config.segment_seconds is not None
        or tokenizer_config.bins != config.codebook_size
        or tokenizer_config.n_q < config.levels
    ):
        raise ValueError(
            f"expected an unsegmented mono EnCodec with {config.levels} or more levels of "
            f"{config.codebook_size} codes, got {tokenizer.checkpoint_path}: {tokenizer_config}"
        )


class SoundStormCodec(NeuralCodec):
    """SoundStorm over EnCodec tokens at the EnCodec bitrates below the model's level count.

    Args:
        checkpoint: a ``bench train soundstorm`` checkpoint, or ``None`` for the project's demo
            checkpoint :data:`DEMO_CHECKPOINT`.
        prompt_seconds: seconds at the start whose every level is sent and given to the model
            (0: none, the codec setting).
        temperature: divides the logits of the sampled passes (the last pass of each level
            is greedy).
        top_k: sample among the ``top_k`` likeliest codes only (``None``: all).

    Raises:
        CheckpointError: the file is missing, not a SoundStorm checkpoint, or its EnCodec is
            missing, changed or unsupported.
        ValueError: a negative prompt, a temperature that is not positive, a bad ``top_k``.
    """

    name = "soundstorm"
    display_name = "SoundStorm"
    channels = 1
    demo_checkpoint = DEMO_CHECKPOINT
    # What `bench train soundstorm` builds and trains (the harness reaches a codec family only
    # through its registered class).
    configs = CONFIGS
    model_class = SoundStormModel
    loss = staticmethod(soundstorm_loss)
    make_checkpoint = staticmethod(soundstorm_checkpoint)
    tokenizer_class = EncodecCodec
    check_tokenizer = staticmethod(check_tokenizer)

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        prompt_seconds: float = 0.0,
        temperature: float = 1.0,
        top_k: int | None = None,
    ) -> None:
        if not (math.isfinite(prompt_seconds) and prompt_seconds >= 0):
            raise ValueError(f"prompt_seconds: expected a finite value >= 0, got {prompt_seconds}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature: expected a finite value > 0, got {temperature}")
        self.prompt_seconds = float(prompt_seconds)
        self.temperature = float(temperature)
        network = self._read(checkpoint)
        if top_k is not None and not 1 <= top_k <= self.config.codebook_size:
            raise ValueError(
                f"top_k: expected 1..{self.config.codebook_size} or None, got {top_k!r}"
            )
        self.top_k = top_k
        self.model = SoundStormModel(self.config)
        try:
            load_strictly(self.model, network.state_dict, str(self.checkpoint_path))
        except RuntimeError as error:  # shape mismatches
            raise CheckpointError(f"{self.checkpoint_path}: {error}") from None
        self.model.eval().requires_grad_(False)

    def _read(self, checkpoint: str | os.PathLike | None) -> Network:
        """Load the tokenizer and the configuration; returns the model's network."""
        path = Path(checkpoint) if checkpoint is not None else self.demo_checkpoint
        if checkpoint is None and not path.is_file():
            raise CheckpointError(
                f"the SoundStorm demo checkpoint is missing: expected {path}. Pass a checkpoint "
                "from `bench train soundstorm` with --checkpoint PATH"
            )
        contents = load_checkpoint(path, "soundstorm")
        network = contents.network(MODEL_NETWORK)
        tokenizer = contents.network(TOKENIZER_NETWORK)
        if tokenizer.reference is None:
            raise CheckpointError(
                f"{path}: expected the {TOKENIZER_NETWORK!r} network as a reference to an "
                "EnCodec checkpoint, got weights saved inline"
            )
        try:
            self.config = SoundStormConfig.from_json(network.config)
        except (TypeError, KeyError, ValueError) as error:
            raise CheckpointError(f"{path}: bad SoundStorm config: {error}") from None
        self.tokenizer = EncodecCodec(tokenizer.reference.path)
        try:
            check_tokenizer(self.tokenizer, self.config)
        except ValueError as error:
            raise CheckpointError(f"{path}: {error}") from None
        self._bitrates = tuple(
            bitrate
            for bitrate in self.tokenizer.bitrates
            if self.tokenizer.model.n_q_for(bitrate) < self.config.levels
        )
        if not self._bitrates:
            raise CheckpointError(
                f"{path}: every EnCodec bitrate ({self.tokenizer.bitrates}) sends "
                f"{self.config.levels} levels or more: nothing is left to generate"
            )
        self.checkpoint_path = path
        is_demo = path.resolve() == self.demo_checkpoint.resolve()
        self.checkpoint_kind = "demo" if is_demo else "user"
        self.model_note = (
            DEMO_NOTE if is_demo else f"a codec-bench checkpoint trained for {contents.step} steps"
        )
        self._hashes = (network.hash, tokenizer.hash)
        return network

    # Properties of the Codec interface.

    @property
    def sample_rate(self) -> int:
        return self.tokenizer.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.tokenizer.frame_rate

    @property
    def bitrates(self) -> tuple[float, ...]:
        return self._bitrates

    @property
    def num_codebooks(self) -> int:
        return self.config.levels

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def generated_levels(self, n_q: int) -> int:
        """Levels generated when ``n_q`` are sent."""
        return self.config.levels - n_q

    def network_passes(self, bitrate: float, nfe: int | None) -> int:
        """The network passes a decode at ``bitrate`` spends with ``nfe`` iterations on its
        first generated level (``None``: the paper's 16): one per further level."""
        iterations = PAPER_ITERATIONS if nfe is None else self.check_nfe(nfe)
        return iterations + self.generated_levels(self.tokenizer.model.n_q_for(bitrate)) - 1

    @property
    def nfe_options(self) -> tuple[int, ...]:
        return tuple(range(1, PAPER_ITERATIONS + 1))

    @property
    def checkpoint_hash(self) -> str:
        """The model's and EnCodec's weights, and the decoding options, which change the
        audio."""
        options = json.dumps([self.prompt_seconds, self.temperature, self.top_k])
        options_hash = hashlib.sha256(options.encode()).hexdigest()
        return f"{self._hashes[0][:16]}+enc{self._hashes[1][:8]}+dec{options_hash[:8]}"

    def describe(self) -> dict:
        return {
            **super().describe(),
            "tokenizer": self.tokenizer.describe(),
            "generated_levels": {
                f"{bitrate:g}": self.generated_levels(self.tokenizer.model.n_q_for(bitrate))
                for bitrate in self.bitrates
            },
            "notes": [
                "NFE counts the first generated level's iterations; a decode spends "
                + ", ".join(
                    f"NFE + {self.network_passes(bitrate, 1) - 1} passes at {bitrate:g} kbps"
                    for bitrate in self.bitrates
                )
            ],
            "prompt_seconds": self.prompt_seconds,
            "temperature": self.temperature,
            "top_k": self.top_k,
        }

    # Encoding and decoding.

    def _encode(self, audio: torch.Tensor, bitrate: float) -> Encoded:
        sent = self.tokenizer.encode(audio, bitrate)
        frames = sent.codes.shape[-1]
        prompt_frames = min(frames, round(self.prompt_seconds * self.frame_rate))
        if prompt_frames == 0:
            return sent
        n_q = sent.codes.shape[0]
        # RVQ codes of a level do not depend on how many follow: the prompt's finer levels are
        # those of EnCodec's smallest bitrate that reaches the model's level count.
        reaching = min(
            bitrate
            for bitrate in self.tokenizer.bitrates
            if self.tokenizer.model.n_q_for(bitrate) >= self.config.levels
        )
        all_levels = self.tokenizer.encode(audio, reaching).codes[: self.config.levels]
        prompt = all_levels[n_q:, :prompt_frames]
        header = {"codec": self.name, "prompt_frames": prompt_frames}
        prompt_bytes = pack_codes(prompt, self.tokenizer.bits_per_code)
        return dataclasses.replace(sent, payload=pack(header, [sent.payload, prompt_bytes]))

    def _decode(self, encoded: Encoded, nfe: int | None, seed: int | None) -> torch.Tensor:
        generation = self.generate_tokens(encoded, nfe, seed)
        with torch.inference_mode():
            segments = [Segment(generation.tokens, None)]
            return self.tokenizer.model.decode(segments, encoded.num_samples)[0]

    def generate_tokens(
        self, encoded: Encoded, nfe: int | None = None, seed: int | None = None
    ) -> Generation:
        """Every level's tokens ``(1, levels, frames)`` of ``encoded``: the sent ones and the
        prompt as they came, the rest generated with ``nfe`` iterations at the first generated
        level (``None``: the paper's 16) from ``seed``, and the passes spent."""
        nfe = self.check_nfe(nfe)
        sent, prompt_frames, prompt_bytes = self._read_payload(encoded)
        codes = self.tokenizer.read_segments(sent)[0].codes[0]
        n_q, frames = codes.shape
        if n_q >= self.config.levels:
            raise ValueError(
                f"expected fewer than {self.config.levels} levels sent, got {n_q}: nothing to "
                "generate"
            )
        if prompt_frames > frames:
            raise BitstreamError(
                f"expected a prompt of at most {frames} frames, got {prompt_frames}"
            )
        generated = self.generated_levels(n_q)
        iterations = PAPER_ITERATIONS if nfe is None else nfe
        tokens = torch.zeros(1, self.config.levels, frames, dtype=torch.long)
        given = torch.zeros_like(tokens, dtype=torch.bool)
        tokens[0, :n_q], given[:, :n_q] = codes, True
        if prompt_frames:
            prompt = unpack_codes(
                prompt_bytes, generated, prompt_frames, self.tokenizer.bits_per_code
            )
            tokens[0, n_q:, :prompt_frames] = torch.from_numpy(prompt)
            given[:, :, :prompt_frames] = True
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        with torch.inference_mode():
            return generate(
                self.model,
                tokens,
                given,
                (0,) * n_q + paper_schedule(generated, first=iterations),
                generator,
                temperature=self.temperature,
                top_k=self.top_k,
            )

    def _read_payload(self, encoded: Encoded) -> tuple[Encoded, int, bytes]:
        """EnCodec's bitstream of the sent levels, the prompt's frame count and its bytes."""
        bitstream = unpack(encoded.payload)
        header = bitstream.header
        if not isinstance(header, dict):
            raise BitstreamError(f"expected a JSON object as header, got {header!r}")
        if header.get("codec") != self.name:
            return encoded, 0, b""  # EnCodec's own bitstream: no prompt
        prompt_frames = header.get("prompt_frames")
        if (
            isinstance(prompt_frames, bool)
            or not isinstance(prompt_frames, int)
            or prompt_frames < 1
        ):
            raise BitstreamError(f"expected prompt_frames >= 1, got {prompt_frames!r}")
        if len(bitstream.frames) != 2:
            raise BitstreamError(
                "expected two frames (EnCodec's bitstream, the prompt), got "
                f"{len(bitstream.frames)}"
            )
        sent = dataclasses.replace(encoded, payload=bitstream.frames[0])
        return sent, prompt_frames, bitstream.frames[1]
