"""EnCodec (Défossez et al. 2022, "High Fidelity Neural Audio Compression") as a benchmark codec.

Wraps :class:`~bench.codecs.encodec.model.EncodecModel` behind the :class:`Codec` interface.
Weights come from the project's demo checkpoint, a codec-bench checkpoint of any
:class:`EncodecConfig` or an official EnCodec release file (24 kHz mono or 48 kHz stereo).
Codes travel packed at ``log2(bins)`` bits each or, optionally, range-coded under the
checkpoint's entropy-coding LM (Sec. 3.3 of the paper).

Payload (:func:`bench.codecs.bitstream.pack`): magic, version and a JSON header
``{"codec", "config", "entropy_coded", "n_q"}``, then one frame per segment (one at 24 kHz,
one per 1 s segment at 48 kHz): the segment's RMS scale as a little-endian float32 for
normalised configurations, then its codes. Frame counts are not sent: they follow from the
signal length (``Encoded.num_samples``) and the configuration, as the code width follows from
the codebook size.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import struct
from pathlib import Path

import torch
from bench.codecs.base import CodecInfo, Encoded, NeuralCodec
from bench.codecs.bitstream import BitstreamError, pack, pack_codes, unpack, unpack_codes
from bench.codecs.checkpoint import (
    FORMAT,
    Checkpoint,
    CheckpointError,
    Network,
    load_checkpoint,
    load_strictly,
    read_weights_file,
    state_hash,
)
from bench.codecs.encodec.entropy import EntropyLM, decode_codes, encode_codes, lm_loss
from bench.codecs.encodec.model import (
    CONFIGS,
    EncodecConfig,
    EncodecModel,
    Segment,
    official_state_dict,
)
from bench.codecs.modules.conv import fold_weight_norm
from bench.codecs.modules.rvq import restore_codebook_sums
from torch import nn

DEMO_CHECKPOINT = Path(__file__).parent / "checkpoints" / "encodec_tiny_demo.pt"
DEMO_NOTE = "the project's small demo model trained on a CPU, not the paper's weights"

# The official release files carry the first 8 hex digits of their SHA-256 in their names.
_OFFICIAL_NAME = re.compile(r"encodec_(24|48)khz-([0-9a-f]{8})\.th")
_OFFICIAL_LM_NAME = re.compile(r"encodec_lm_(24|48)khz-([0-9a-f]{8})\.th")
# The first convolution's weight tells an official state dict's configuration: its input
# channels are the audio channels. The 24 kHz model has weight norm (weight_v), the 48 kHz one
# group norm (a plain weight).
_OFFICIAL_FIRST_CONV = ("encoder.model.0.conv.conv.weight_v", "encoder.model.0.conv.conv.weight")
_OFFICIAL_CONFIG_BY_CHANNELS = {1: "24khz", 2: "48khz"}
_SCALE = struct.Struct("<f")


class EncodecCodec(NeuralCodec):
    """EnCodec at the bandwidths of its configuration.

    Args:
        checkpoint: a codec-bench checkpoint (``codec="encodec"``), an official EnCodec state
            dict (``encodec_24khz-d7cc33bc.th``, ``encodec_48khz-7e698e3e.th``), or ``None``
            for the project's demo checkpoint :data:`DEMO_CHECKPOINT`.
        entropy_coding: range-code the codes under the checkpoint's LM (its network ``"lm"``,
            built from that network's ``EntropyLM`` arguments) instead of packing them at
            ``log2(codebook_size)`` bits each.

        lm_checkpoint: with ``entropy_coding`` and an official release file, the official
            entropy-coding LM released with it (``encodec_lm_24khz-1608e3c0.th``,
            ``encodec_lm_48khz-7add9fc3.th``), an ``LMModel`` state dict that
            :class:`EntropyLM` loads as is.

    Raises:
        CheckpointError: the file is missing or is neither kind of checkpoint.
        ValueError: ``entropy_coding`` on a checkpoint without an LM, or ``lm_checkpoint``
            without ``entropy_coding`` or with a codec-bench checkpoint (whose LM it holds).
    """

    name = "encodec"
    display_name = "EnCodec"
    # What a subclass for another model of the same code path (HiFi-Codec) replaces; `configs`
    # and `model_class` are also what the codec GAN solver trains (`bench train encodec`).
    config_class: type[EncodecConfig] = EncodecConfig
    configs: dict[str, EncodecConfig] = CONFIGS
    model_class: type[EncodecModel] = EncodecModel
    demo_checkpoint = DEMO_CHECKPOINT
    # The entropy-coding LM and the loss that trains it (`bench train lm`).
    lm_class: type[EntropyLM] = EntropyLM
    lm_loss = staticmethod(lm_loss)

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        entropy_coding: bool = False,
        lm_checkpoint: str | os.PathLike | None = None,
    ) -> None:
        state, lm_network = self._read_weights(checkpoint, entropy_coding, lm_checkpoint)
        path = self.checkpoint_path
        self.model = self.build_model(self.config)
        try:
            # Shipped checkpoints (the demo) leave out the codebooks' training sums.
            load_strictly(self.model, restore_codebook_sums(state), str(path))
        except RuntimeError as error:  # shape mismatches
            raise CheckpointError(f"{path}: {error}") from None
        # Inference only: bake weight norm into plain weights (same outputs, cheaper calls).
        fold_weight_norm(self.model)
        self.model.eval().requires_grad_(False)
        self.lm = None if lm_network is None else _build_lm(lm_network, self.config, path)

    def build_model(self, config: EncodecConfig) -> nn.Module:
        """The network of ``config``: :attr:`model_class`'s, unless a subclass builds another
        architecture for some configurations (HiFi-Codec's official release)."""
        return self.model_class(config)

    @classmethod
    def info(
        cls,
        checkpoint: str | os.PathLike | None = None,
        entropy_coding: bool = False,
        lm_checkpoint: str | os.PathLike | None = None,
    ) -> CodecInfo:
        """The codec's bitrates, hash and description from its checkpoint alone: the file,
        its hash, codec and configuration are checked, no network is built (the key sets
        are checked when the codec is built)."""
        shell = cls.__new__(cls)
        shell._read_weights(checkpoint, entropy_coding, lm_checkpoint)
        return CodecInfo.of(shell)

    def _read_weights(
        self,
        checkpoint: str | os.PathLike | None,
        entropy_coding: bool,
        lm_checkpoint: str | os.PathLike | None = None,
    ) -> tuple[dict, Network | None]:
        """Read the checkpoint into the codec's configuration, hashes and notes; returns the
        model's state dict and, with entropy coding, the LM's network (config and state)."""
        if checkpoint is None:
            if not self.demo_checkpoint.is_file():
                raise CheckpointError(
                    f"the {self.display_name} demo checkpoint is missing: expected "
                    f"{self.demo_checkpoint}, which the project's demo training writes. Pass a "
                    f"checkpoint with --checkpoint PATH ({type(self).__name__}(checkpoint=PATH))"
                )
            checkpoint = self.demo_checkpoint
        if lm_checkpoint is not None and not entropy_coding:
            raise ValueError(
                f"lm_checkpoint={lm_checkpoint}: an LM is for entropy coding; expected "
                "entropy_coding=True with it"
            )
        path = Path(checkpoint)
        contents = read_weights_file(path)

        self.checkpoint_path = path
        self.entropy_coding = entropy_coding
        self._lm_hash = None
        lm_network = None
        if isinstance(contents, dict) and contents.get("format") == FORMAT:
            del contents  # the shared loader reads the file again, with its checks
            checkpoint_data = load_checkpoint(path, self.name)
            network = checkpoint_data.network("codec")
            self.config = self._config_from_json(network.config, path)
            state, self._weights_hash = network.state_dict, network.hash
            is_demo = path.resolve() == self.demo_checkpoint.resolve()
            self.checkpoint_kind = "demo" if is_demo else "user"
            self.model_note = (
                DEMO_NOTE if is_demo else _user_note(checkpoint_data.step, checkpoint_data.metadata)
            )
            if lm_checkpoint is not None:
                raise ValueError(
                    f"lm_checkpoint={lm_checkpoint}: {path} is a codec-bench checkpoint, which "
                    "holds its own LM; expected lm_checkpoint only with an official release file"
                )
            if entropy_coding:
                lm_network = _lm_network(checkpoint_data, path)
                self._lm_hash = lm_network.hash
        else:
            self.config, state, self.model_note = self._read_official(contents, path)
            self._weights_hash = state_hash(state)
            self.checkpoint_kind = "official"
            if entropy_coding:
                if lm_checkpoint is None:
                    raise _no_lm_error(path)
                lm_network = self._read_official_lm(Path(lm_checkpoint))
                self._lm_hash = lm_network.hash
        return state, lm_network

    # Properties of the Codec interface, all from the configuration.

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def bitrates(self) -> tuple[float, ...]:
        return tuple(self.config.bandwidths)

    @property
    def frame_rate(self) -> float:
        return float(self.config.frame_rate)

    @property
    def num_codebooks(self) -> int:
        return self.config.n_q

    @property
    def codebook_size(self) -> int:
        return self.config.bins

    @property
    def bits_per_code(self) -> int:
        return int(math.log2(self.config.bins))

    @property
    def checkpoint_hash(self) -> str:
        """The weights' hash; entropy coding adds the LM's, since it changes the bytes."""
        if self._lm_hash is None:
            return self._weights_hash[:16]
        return f"{self._weights_hash[:16]}+lm{self._lm_hash[:8]}"

    def describe(self) -> dict:
        return {**super().describe(), "entropy_coding": self.entropy_coding}

    # Encoding and decoding.

    def _encode(self, audio: torch.Tensor, bitrate: float) -> Encoded:
        # check_bitrate matched within a tolerance; the model wants the exact listed value.
        bandwidth = min(self.bitrates, key=lambda value: abs(value - bitrate))
        n_q = self.model.n_q_for(bandwidth)
        with torch.inference_mode():
            segments = self.model.encode(audio[None], bandwidth)
        frames = []
        for segment in segments:
            codes = segment.codes[0]
            if self.lm is not None:
                body = encode_codes(self.lm, codes)
            else:
                body = pack_codes(codes, self.bits_per_code)
            scale = b"" if segment.scale is None else _SCALE.pack(float(segment.scale[0]))
            frames.append(scale + body)
        header = {
            "codec": self.name,
            "config": self.config.name,
            "entropy_coded": self.lm is not None,
            "n_q": n_q,
        }
        return Encoded(
            payload=pack(header, frames),
            num_samples=audio.shape[1],
            sample_rate=self.sample_rate,
            nominal_kbps=bandwidth,
            codes=torch.cat([segment.codes[0] for segment in segments], dim=-1),
            codebook_size=self.codebook_size,
        )

    def _decode(self, encoded: Encoded, nfe: int | None, seed: int | None) -> torch.Tensor:
        segments = self.read_segments(encoded)
        with torch.inference_mode():
            return self.model.decode(segments, encoded.num_samples)[0]

    def read_segments(self, encoded: Encoded) -> list[Segment]:
        """The codes and scales of the segments of ``encoded``'s payload (what a token model
        such as SoundStorm works on), checked against its header and length."""
        bitstream = unpack(encoded.payload)
        n_q, entropy_coded = self._check_header(bitstream.header)
        frame_counts = self.segment_frames(encoded.num_samples)
        if len(bitstream.frames) != len(frame_counts):
            raise BitstreamError(
                f"expected {len(frame_counts)} segment(s) for {encoded.num_samples} samples, "
                f"got {len(bitstream.frames)}"
            )
        segments = []
        for frame, num_frames in zip(bitstream.frames, frame_counts, strict=True):
            scale = None
            if self.config.normalize:
                if len(frame) < _SCALE.size:
                    raise BitstreamError("segment too short to hold its scale")
                scale = torch.tensor(_SCALE.unpack_from(frame), dtype=torch.float32)
                frame = frame[_SCALE.size :]
            if entropy_coded:
                codes = decode_codes(self.lm, frame, n_q, num_frames)
            else:
                codes = torch.from_numpy(unpack_codes(frame, n_q, num_frames, self.bits_per_code))
            segments.append(Segment(codes[None], scale))
        return segments

    def segment_frames(self, num_samples: int) -> list[int]:
        """Frames of each segment :meth:`EncodecModel.encode` cuts ``num_samples`` into."""
        segment = self.model.segment_length or num_samples
        stride = self.model.segment_stride or num_samples
        hop = self.config.hop_length
        return [
            math.ceil(min(segment, num_samples - offset) / hop)
            for offset in range(0, num_samples, stride)
        ]

    def _check_header(self, header: object) -> tuple[int, bool]:
        if not isinstance(header, dict):
            raise BitstreamError(f"expected a JSON object as header, got {header!r}")
        if header.get("codec") != self.name or header.get("config") != self.config.name:
            raise ValueError(
                f"expected a bitstream of {self.display_name} {self.config.name} (codec "
                f"'{self.name}', config '{self.config.name}'), got codec "
                f"{header.get('codec')!r}, config {header.get('config')!r}"
            )
        n_q, entropy_coded = header.get("n_q"), header.get("entropy_coded")
        if isinstance(n_q, bool) or not isinstance(n_q, int) or not 1 <= n_q <= self.config.n_q:
            raise BitstreamError(f"expected n_q in 1..{self.config.n_q}, got {n_q!r}")
        if not isinstance(entropy_coded, bool):
            raise BitstreamError(f"expected entropy_coded true or false, got {entropy_coded!r}")
        if entropy_coded and self.lm is None:
            raise ValueError(
                "this bitstream is entropy-coded: decode it with "
                f"{type(self).__name__}(checkpoint, entropy_coding=True) and the checkpoint's LM"
            )
        return n_q, entropy_coded

    def _config_from_json(self, data: dict, path: Path) -> EncodecConfig:
        try:
            return self.config_class.from_json(data)
        except (TypeError, KeyError, ValueError) as error:
            raise CheckpointError(
                f"{path}: the config is not a {self.config_class.__name__}: {error}"
            ) from None

    def _read_official(self, contents: object, path: Path) -> tuple[EncodecConfig, dict, str]:
        """Configuration, state dict and note of a file in the official release format."""
        return _read_official(contents, path)

    def _read_official_lm(self, path: Path) -> Network:
        """The official entropy-coding LM in ``path`` (an ``LMModel`` state dict) as a network
        of the arguments the official code builds it with for this configuration."""
        contents = read_weights_file(path)
        if not isinstance(contents, dict) or not isinstance(
            contents.get("emb.0.weight"), torch.Tensor
        ):
            raise CheckpointError(
                f"{path}: expected an official EnCodec LM state dict "
                "(encodec_lm_24khz-1608e3c0.th, encodec_lm_48khz-7add9fc3.th: keys such as "
                "emb.0.weight), got something else"
            )
        release = _check_release_name(path, _OFFICIAL_LM_NAME)
        if release is not None and f"{release}khz" != self.config.name:
            raise CheckpointError(
                f"{path}: the LM of the {release} kHz model, expected the {self.config.name} one"
            )
        config = {
            "n_q": self.config.n_q,
            "card": self.config.bins,
            # As the official get_lm_model: 3.5 s of past frames.
            "past_context": int(3.5 * self.config.frame_rate),
        }
        return Network(config, contents, state_hash(contents))


def _user_note(step: int, metadata: dict) -> str:
    if step == 0:
        note = "a codec-bench checkpoint at step 0: untrained random weights, for tests only"
    else:
        note = f"a codec-bench checkpoint trained for {step} steps"
    description = metadata.get("description")
    return f"{note}: {description}" if description else note


def _no_lm_error(path: Path) -> ValueError:
    return ValueError(
        f"entropy_coding=True, but this checkpoint has no entropy-coding LM ({path}); "
        "train one with `bench train lm --checkpoint PATH`, or, for an official release file, "
        "pass its LM (lm_checkpoint=PATH, or --checkpoint official:NAME fetches both)"
    )


def _lm_network(checkpoint: Checkpoint, path: Path) -> Network:
    """The checkpoint's entropy-coding LM, its network ``"lm"`` (not built yet)."""
    if "lm" not in checkpoint.networks:
        raise _no_lm_error(path)
    return checkpoint.network("lm")


def _build_lm(network: Network, config: EncodecConfig, path: Path) -> EntropyLM:
    """The entropy-coding LM of ``network``, checked against the codec's codebooks."""
    try:
        lm = EntropyLM(**network.config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: bad LM config {network.config}: {error}") from None
    if lm.card != config.bins or lm.n_q < config.n_q:
        raise CheckpointError(
            f"{path}: expected an LM over {config.n_q} codebooks of {config.bins} codes, "
            f"got n_q={lm.n_q}, card={lm.card}"
        )
    try:
        load_strictly(lm, network.state_dict, f"{path} (lm)")
    except RuntimeError as error:
        raise CheckpointError(f"{path} (lm): {error}") from None
    return lm.eval().requires_grad_(False)


def _read_official(contents: object, path: Path) -> tuple[EncodecConfig, dict, str]:
    """Configuration, state dict under our key names, and note of an official state dict."""
    first_conv = None
    if isinstance(contents, dict):
        first_conv = next((contents[key] for key in _OFFICIAL_FIRST_CONV if key in contents), None)
    config_name = None
    if isinstance(first_conv, torch.Tensor) and first_conv.dim() == 3:
        config_name = _OFFICIAL_CONFIG_BY_CHANNELS.get(first_conv.shape[1])
    if config_name is None:
        raise CheckpointError(
            f"{path}: expected a codec-bench EnCodec checkpoint or an official EnCodec state "
            "dict (encodec_24khz-d7cc33bc.th, encodec_48khz-7e698e3e.th: keys such as "
            f"{_OFFICIAL_FIRST_CONV[0]} with 1 or 2 input channels), got something else"
        )
    note = "a state dict in the official EnCodec format, not a release file"
    release = _check_release_name(path, _OFFICIAL_NAME)
    if release is not None:
        if f"{release}khz" != config_name:
            raise CheckpointError(
                f"{path}: named a {release} kHz release, but its first convolution "
                f"takes {first_conv.shape[1]} channel(s), as the {config_name} model"
            )
        note = "the official EnCodec release weights (Défossez et al. 2022)"
    return CONFIGS[config_name], official_state_dict(contents), note


def _check_release_name(path: Path, pattern: re.Pattern) -> str | None:
    """The sample rate (``"24"``, ``"48"``) a file named as an official release says it is,
    checked as the official loader does: the name carries the file's SHA-256 prefix. None for
    a file named otherwise."""
    release = pattern.fullmatch(path.name)
    if release is None:
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(release.group(2)):
        raise CheckpointError(
            f"{path}: the file's SHA-256 starts {digest[:8]}, its name says "
            f"{release.group(2)}: a damaged or altered download"
        )
    return release.group(1)
