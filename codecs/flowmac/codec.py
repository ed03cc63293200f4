"""FlowMAC (Pia et al., ICASSP 2025) as a benchmark codec, and its copy-synthesis condition.

``flowmac`` encodes the normalised log mel to residual-VQ codes and decodes them through the
mel decoder, the flow-matching ODE (``nfe`` network evaluations, from noise drawn from
``seed``) and the vocoder. Payload (:func:`bench.codecs.bitstream.pack`): a JSON header
``{"codec", "config", "n_q"}`` and one frame of the codes packed at ``log2(bins)`` bits each;
the frame count follows from ``Encoded.num_samples``.

NFE counts network passes (see :mod:`bench.codecs.modules.flow_matching`): ``solver`` steps
times its vector-field calls per step times guidance passes (1 at guidance scale 0 or 1, 2
otherwise). The default is the conditional field alone (scale 1, one pass), so NFE 1 with
Euler is FlowMAC-LC; the paper's "CFG factor 1" is ``guidance=2``.

``flowmac-vocoder`` is copy synthesis: the vocoder on the unquantized input mel, sent as
float16 (96 kbps at 128 bands and 46.875 frames/s), to show how much of the loss is the
vocoder's.

A checkpoint holds the codec (``"codec"``) and the vocoder (``"vocoder"``) together; one
without a vocoder is refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from bench.codecs.base import Encoded, NeuralCodec, fit_length
from bench.codecs.bitstream import BitstreamError, pack, pack_codes, unpack, unpack_codes
from bench.codecs.checkpoint import CheckpointError, Network, load_checkpoint, load_strictly
from bench.codecs.flowmac.model import (
    CONFIGS,
    VOCODER_CONFIGS,
    FlowMacConfig,
    FlowMacModel,
    MelConfig,
    log_mel,
    vocoder_network_config,
)
from bench.codecs.modules.bigvgan import BigVGANGenerator, VocoderConfig
from bench.codecs.modules.flow_matching import Guidance, nfe_per_step, sample
from bench.codecs.modules.ode import get_solver
from bench.codecs.modules.rvq import restore_codebook_sums

DEMO_CHECKPOINT = Path(__file__).parent / "checkpoints" / "flowmac_tiny_demo.pt"
DEMO_NOTE = "the project's small demo model trained on a CPU, not the paper's weights"
# The step counts offered: powers of two up to the paper's 32; an NFE is steps x the network
# passes per step of the solver and guidance.
STEP_COUNTS = (1, 2, 4, 8, 16, 32)
# The vocoder runs over chunks of mel frames with this much context on each side, far beyond
# its receptive field, so chunked output equals the whole signal's and memory stays bounded.
VOCODER_CHUNK_FRAMES = 256
VOCODER_CONTEXT_FRAMES = 16


def vocode(vocoder: BigVGANGenerator, mel: torch.Tensor) -> torch.Tensor:
    """Audio ``(1, frames * hop)`` of a log mel ``(1, n_mels, frames)``, chunk by chunk."""
    hop, frames = vocoder.hop_length, mel.shape[-1]
    parts = []
    for start in range(0, frames, VOCODER_CHUNK_FRAMES):
        end = min(start + VOCODER_CHUNK_FRAMES, frames)
        left = max(0, start - VOCODER_CONTEXT_FRAMES)
        right = min(frames, end + VOCODER_CONTEXT_FRAMES)
        audio = vocoder(mel[..., left:right])[0]
        parts.append(audio[:, (start - left) * hop : (end - left) * hop])
    return torch.cat(parts, dim=-1)


class _FlowMacCheckpoint(NeuralCodec):
    """What both FlowMAC codecs read: the checkpoint's codec and vocoder networks."""

    display_name = "FlowMAC"
    channels = 1
    demo_checkpoint = DEMO_CHECKPOINT
    # What `bench train flowmac` and `bench train flowmac-vocoder` build and train (the
    # harness reaches a codec family only through its registered class).
    configs = CONFIGS
    model_class = FlowMacModel
    vocoder_configs = VOCODER_CONFIGS
    vocoder_class = BigVGANGenerator
    log_mel = staticmethod(log_mel)
    vocoder_network_config = staticmethod(vocoder_network_config)

    def _read(self, checkpoint: str | os.PathLike | None) -> Network:
        """Load the vocoder and the configuration; returns the codec network (not built)."""
        path = Path(checkpoint) if checkpoint is not None else self.demo_checkpoint
        if checkpoint is None and not path.is_file():
            raise CheckpointError(
                f"the FlowMAC demo checkpoint is missing: expected {path}. Pass a checkpoint "
                "from `bench train flowmac` with --checkpoint PATH"
            )
        contents = load_checkpoint(path, "flowmac")
        codec = contents.network("codec")
        if "vocoder" not in contents.networks:
            raise CheckpointError(
                f"{path}: holds no vocoder, so it cannot make audio. Train one with `bench "
                "train flowmac-vocoder` and pass its model.pt to `bench train flowmac "
                "--vocoder PATH`, which bundles it into the exported checkpoint"
            )
        vocoder = contents.network("vocoder")
        self.checkpoint_path = path
        is_demo = path.resolve() == self.demo_checkpoint.resolve()
        self.checkpoint_kind = "demo" if is_demo else "user"
        self.model_note = (
            DEMO_NOTE if is_demo else f"a codec-bench checkpoint trained for {contents.step} steps"
        )
        self._hashes = (codec.hash, vocoder.hash)
        try:
            self.config = FlowMacConfig.from_json(codec.config)
            self.vocoder_config = VocoderConfig.from_json(vocoder.config["generator"])
            vocoder_mel = MelConfig(**vocoder.config["mel"])
        except (TypeError, KeyError, ValueError) as error:
            raise CheckpointError(f"{path}: bad FlowMAC or vocoder config: {error}") from None
        if (
            vocoder_mel != self.config.mel
            or self.vocoder_config.hop_length != vocoder_mel.hop_length
        ):
            raise CheckpointError(
                f"{path}: the vocoder was trained on {vocoder_mel} (upsampling "
                f"{self.vocoder_config.hop_length}x), the codec makes {self.config.mel}"
            )
        self.vocoder = BigVGANGenerator(self.vocoder_config)
        self._load(self.vocoder, vocoder.state_dict, f"{path} (vocoder)")
        self.vocoder.remove_weight_norm()
        self.vocoder.eval().requires_grad_(False)
        return codec

    @staticmethod
    def _load(module: torch.nn.Module, state: dict, source: str) -> None:
        try:
            load_strictly(module, state, source)
        except RuntimeError as error:  # shape mismatches
            raise CheckpointError(f"{source}: {error}") from None

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def checkpoint_hash(self) -> str:
        return f"{self._hashes[0][:16]}+voc{self._hashes[1][:8]}"

    def describe(self) -> dict:
        return {**super().describe(), "vocoder_config": self.vocoder_config.to_json()}

    def _check_header(self, payload: bytes) -> tuple[dict, list[bytes]]:
        bitstream = unpack(payload)
        header = bitstream.header
        if not isinstance(header, dict):
            raise BitstreamError(f"expected a JSON object as header, got {header!r}")
        if header.get("codec") != self.name or header.get("config") != self.config.name:
            raise ValueError(
                f"expected a bitstream of {self.name} {self.config.name}, got codec "
                f"{header.get('codec')!r}, config {header.get('config')!r}"
            )
        if len(bitstream.frames) != 1:
            raise BitstreamError(f"expected one frame, got {len(bitstream.frames)}")
        return header, bitstream.frames

    def audio_of_mel(self, mel: torch.Tensor, num_samples: int) -> torch.Tensor:
        """The vocoder's ``(1, num_samples)`` audio of a log mel ``(1, n_mels, frames)``."""
        return fit_length(vocode(self.vocoder, mel), num_samples)


class FlowMacCodec(_FlowMacCheckpoint):
    """FlowMAC at the bitrates of its configuration (tiny demo: 1.5 and 3 kbps).

    Args:
        checkpoint: a ``bench train flowmac`` checkpoint with its vocoder, or ``None`` for the
            project's demo checkpoint :data:`DEMO_CHECKPOINT`.
        solver: the ODE solver, ``euler`` (the paper's), ``midpoint`` or ``heun``.
        guidance: the classifier-free guidance scale ``s`` of ``v_u + s (v_c - v_u)``; 1 is
            the conditional field (one pass per call), the paper's CFG factor 1 is 2.

    Raises:
        CheckpointError: the file is missing, not a FlowMAC checkpoint, or has no vocoder.
        ValueError: an unknown solver.
    """

    name = "flowmac"

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        solver: str = "euler",
        guidance: float = 1.0,
    ) -> None:
        self.solver = get_solver(solver)
        self.guidance = Guidance(_guidance_scale(guidance))
        codec = self._read(checkpoint)
        self.model = FlowMacModel(self.config)
        self._load(self.model, restore_codebook_sums(codec.state_dict), f"{self.checkpoint_path}")
        self.model.eval().requires_grad_(False)

    @property
    def bitrates(self) -> tuple[float, ...]:
        return tuple(self.config.bandwidths)

    @property
    def num_codebooks(self) -> int:
        return self.config.n_q

    @property
    def codebook_size(self) -> int:
        return self.config.bins

    @property
    def nfe_options(self) -> tuple[int, ...]:
        per_step = nfe_per_step(self.solver, self.guidance)
        return tuple(steps * per_step for steps in STEP_COUNTS)

    def describe(self) -> dict:
        return {**super().describe(), "solver": self.solver.name, "guidance": self.guidance.scale}

    def _encode(self, audio: torch.Tensor, bitrate: float) -> Encoded:
        n_q = self.model.n_q_for(bitrate)
        with torch.inference_mode():
            codes = self.model.encode(self.model.normalised_mel(audio), n_q)
        header = {"codec": self.name, "config": self.config.name, "n_q": n_q}
        return Encoded(
            payload=pack(header, [pack_codes(codes, self.model.bits_per_code())]),
            num_samples=audio.shape[1],
            sample_rate=self.sample_rate,
            nominal_kbps=bitrate,
            codes=codes,
            codebook_size=self.codebook_size,
        )

    def _decode(self, encoded: Encoded, nfe: int | None, seed: int | None) -> torch.Tensor:
        codes = self.read_codes(encoded)
        # Without an NFE, the most the codec offers: the paper's 32 steps.
        nfe = nfe if nfe is not None else max(self.nfe_options)
        with torch.inference_mode():
            mel = self.refined_mel(codes, nfe, seed)
            return self.audio_of_mel(self.model.denormalise(mel), encoded.num_samples)

    def read_codes(self, encoded: Encoded) -> torch.Tensor:
        """The codes ``(n_q, frames)`` of ``encoded``'s payload, checked against its header and
        length (what a decoder of another family, such as SampleRNN's, reads)."""
        header, frames = self._check_header(encoded.payload)
        n_q = header.get("n_q")
        if isinstance(n_q, bool) or not isinstance(n_q, int) or not 1 <= n_q <= self.config.n_q:
            raise BitstreamError(f"expected n_q in 1..{self.config.n_q}, got {n_q!r}")
        num_frames = self.model.frames_for(encoded.num_samples)
        return torch.from_numpy(
            unpack_codes(frames[0], n_q, num_frames, self.model.bits_per_code())
        )

    def refined_mel(self, codes: torch.Tensor, nfe: int, seed: int | None) -> torch.Tensor:
        """The normalised mel the ODE integrates from the coarse mel of ``codes``, starting
        from the noise ``seed`` draws (``None``: seed 0), window by window."""
        coarse = self.model.coarse_mel(codes)
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        noise = torch.randn(coarse.shape, generator=generator)
        parts = [
            sample(
                self.model.velocity,
                coarse[..., window],
                noise[..., window],
                nfe,
                self.solver,
                self.guidance,
            )
            for window in self.model.windows(coarse.shape[-1])
        ]
        return torch.cat(parts, dim=-1)


def _guidance_scale(value: object) -> float:
    try:
        scale = float(value)
    except (TypeError, ValueError):
        scale = math.nan
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"guidance: expected a finite scale >= 0 (1: none), got {value!r}")
    return scale


class FlowMacVocoderCodec(_FlowMacCheckpoint):
    """Copy synthesis: FlowMAC's vocoder on the unquantized log mel, sent as float16.

    Args:
        checkpoint: as :class:`FlowMacCodec`'s (its vocoder and mel front end are used).
    """

    name = "flowmac-vocoder"
    display_name = "FlowMAC vocoder (copy synthesis)"

    def __init__(self, checkpoint: str | os.PathLike | None = None) -> None:
        self._read(checkpoint)

    @property
    def checkpoint_hash(self) -> str:
        # Its audio depends on the vocoder alone: retraining the codec keeps its cache.
        return f"voc{self._hashes[1][:16]}"

    @property
    def bitrates(self) -> tuple[float, ...]:
        # 16 bits per band and frame.
        return (self.config.mel.n_mels * 16 * self.frame_rate / 1000,)

    def _encode(self, audio: torch.Tensor, bitrate: float) -> Encoded:
        with torch.inference_mode():
            mel = log_mel(audio, self.config.mel)[0]
        body = mel.numpy().astype("<f2").tobytes()
        return Encoded(
            payload=pack({"codec": self.name, "config": self.config.name}, [body]),
            num_samples=audio.shape[1],
            sample_rate=self.sample_rate,
            nominal_kbps=bitrate,
        )

    def _decode(self, encoded: Encoded, nfe: int | None, seed: int | None) -> torch.Tensor:
        _, frames = self._check_header(encoded.payload)
        shape = (self.config.mel.n_mels, self.config.mel.frames(encoded.num_samples))
        if len(frames[0]) != 2 * shape[0] * shape[1]:
            raise BitstreamError(
                f"expected {2 * shape[0] * shape[1]} bytes of float16 mel {shape}, "
                f"got {len(frames[0])}"
            )
        mel = np.frombuffer(frames[0], dtype="<f2").reshape(shape).astype(np.float32)
        with torch.inference_mode():
            return self.audio_of_mel(torch.from_numpy(mel)[None], encoded.num_samples)
