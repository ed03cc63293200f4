"""HiFi-Codec (Yang et al. 2023, arXiv 2305.02765) as a benchmark codec.

Two architectures run behind one codec:

- the paper's, which shares EnCodec's code path (see :mod:`bench.codecs.hificodec.model`): the
  project's demo checkpoint and what ``bench train hificodec`` trains, at 1.5, 3 and 6 kbps;
- the officially released one (:mod:`bench.codecs.hificodec.official`: AcademiCodec's encoder
  with GroupNorm and its HiFi-GAN generator), which loads the release files
  ``HiFi-Codec-16k-320d`` (and ``-large-universal``), ``HiFi-Codec-24k-320d`` and
  ``HiFi-Codec-24k-240d``, each at its one bitrate (2, 3 and 4 kbps).

The codec is :class:`~bench.codecs.encodec.codec.EncodecCodec` with HiFi-Codec's
configurations, models and demo checkpoint. The payload is the same: a JSON header
``{"codec": "hificodec", "config", "entropy_coded", "n_q"}`` and the codes packed at
``log2(bins)`` bits each, one frame for the whole signal: group-major (all levels of group 0,
then group 1) for the paper's model, level-major as the official ``VQVAE.encode`` stacks them
for the released one.

There is no entropy coding (``entropy_coded`` is always false). EnCodec's LM reads the first K
code rows of every bandwidth through the same K embeddings, but group-major rows change meaning
with the bandwidth (the second row is group 1's first level at 1.5 kbps, group 0's second level
at 3 kbps), so that LM does not apply as it stands.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from bench.codecs.base import CodecInfo
from bench.codecs.checkpoint import CheckpointError
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.encodec.model import EncodecConfig
from bench.codecs.hificodec.model import CONFIGS, HiFiCodecConfig, HiFiCodecModel
from bench.codecs.hificodec.official import (
    OFFICIAL_CONFIGS,
    OfficialHiFiCodecConfig,
    OfficialHiFiCodecModel,
)
from bench.codecs.modules.conv import official_key_mapping
from torch import nn

DEMO_CHECKPOINT = Path(__file__).parent / "checkpoints" / "hificodec_tiny_demo.pt"
OFFICIAL_NOTE = "the official HiFi-Codec release weights (AcademiCodec, Yang et al. 2023)"

# The released files (HuggingFace Dongchao/AcademiCodec) and their configurations. The 16 kHz
# and 24 kHz 320d models have the same shapes, so only the name (or `official_config`) tells
# the sample rate.
RELEASE_FILES = {
    "HiFi-Codec-16k-320d": "official-16k-320d",
    "HiFi-Codec-16k-320d-large-universal": "official-16k-320d",
    "HiFi-Codec-24k-320d": "official-24k-320d",
    "HiFi-Codec-24k-240d": "official-24k-240d",
}
# An official file: the state dicts of the three modules AcademiCodec's VQVAE loads.
OFFICIAL_PARTS = ("encoder", "quantizer", "generator")


class HiFiCodecCodec(EncodecCodec):
    """HiFi-Codec at the bandwidths of its configuration (tiny demo: 1.5, 3 and 6 kbps; an
    official release: its one bitrate).

    Args:
        checkpoint: a codec-bench checkpoint (``codec="hificodec"``, from ``bench train
            hificodec``), an official AcademiCodec release file (a dict of ``encoder``,
            ``quantizer`` and ``generator`` state dicts, named as released, e.g.
            ``HiFi-Codec-24k-320d``, optionally with an extension), or ``None`` for the
            project's demo checkpoint :data:`DEMO_CHECKPOINT`.
        official_config: for an official file, its configuration, one of
            :data:`~bench.codecs.hificodec.official.OFFICIAL_CONFIGS` (``official-16k-320d``,
            ``official-24k-320d``, ``official-24k-240d``); needed where the file is not named
            as released, and only then.

    Raises:
        CheckpointError: the file is missing, is neither kind of checkpoint, or its shapes are
            not those of its configuration.
        ValueError: an unknown ``official_config``, or one given with a codec-bench checkpoint
            or contradicting the release file's name.
    """

    name = "hificodec"
    display_name = "HiFi-Codec"
    config_class = HiFiCodecConfig
    configs = CONFIGS
    model_class = HiFiCodecModel
    demo_checkpoint = DEMO_CHECKPOINT

    def __init__(
        self, checkpoint: str | os.PathLike | None = None, official_config: str | None = None
    ) -> None:
        # No `entropy_coding`: what the harness offers a codec follows from its options.
        self.official_config = _checked_official_config(official_config)
        super().__init__(checkpoint)

    @classmethod
    def info(
        cls, checkpoint: str | os.PathLike | None = None, official_config: str | None = None
    ) -> CodecInfo:
        """As :meth:`EncodecCodec.info`, for the codec built with these options."""
        shell = cls.__new__(cls)
        shell.official_config = _checked_official_config(official_config)
        shell._read_weights(checkpoint, entropy_coding=False)
        return CodecInfo.of(shell)

    def build_model(self, config: EncodecConfig | OfficialHiFiCodecConfig) -> nn.Module:
        if isinstance(config, OfficialHiFiCodecConfig):
            return OfficialHiFiCodecModel(config)
        return super().build_model(config)

    def _read_weights(self, *args, **kwargs) -> tuple:
        """As :meth:`EncodecCodec._read_weights`, and ``official_config`` only for an official
        file."""
        weights = super()._read_weights(*args, **kwargs)
        if self.official_config is not None and self.checkpoint_kind != "official":
            raise ValueError(
                f"official_config={self.official_config!r} is for an official AcademiCodec "
                f"file; got the codec-bench {self.checkpoint_kind} checkpoint "
                f"{self.checkpoint_path}, which carries its own configuration"
            )
        return weights

    def _read_official(
        self, contents: object, path: Path
    ) -> tuple[OfficialHiFiCodecConfig, dict, str]:
        """Configuration, state dict under our key names and note of an official file. Its key
        set and shapes are checked as the model loads; the upsampling kernels, which tell the
        240d model from the 320d ones, here."""
        if not (
            isinstance(contents, dict)
            and all(isinstance(contents.get(part), dict) for part in OFFICIAL_PARTS)
        ):
            found = sorted(contents) if isinstance(contents, dict) else type(contents).__name__
            raise CheckpointError(
                f"{path}: expected a codec-bench HiFi-Codec checkpoint (from `bench train "
                "hificodec`) or an official AcademiCodec file (a dict of 'encoder', 'quantizer' "
                "and 'generator' state dicts: the encoder, the group-residual quantizer and the "
                f"HiFi-GAN generator), got {found}"
            )
        release = RELEASE_FILES.get(path.name.partition(".")[0])
        name = self._official_config_name(release, path)
        config = OFFICIAL_CONFIGS[name]
        _check_upsample_kernels(contents["generator"], config, path)
        state = official_key_mapping(
            {
                f"{part}.{key}": value
                for part in OFFICIAL_PARTS
                for key, value in contents[part].items()
            }
        )
        if release is not None:
            return config, state, OFFICIAL_NOTE
        return config, state, f"official AcademiCodec weights not under a release's name, as {name}"

    def _official_config_name(self, release: str | None, path: Path) -> str:
        """The configuration of an official file: ``official_config``, else the one of the
        release ``path`` is named as."""
        name = self.official_config or release
        if name is None:
            raise CheckpointError(
                f"{path}: an official AcademiCodec file whose name is not a release's: expected "
                f"the released name ({', '.join(RELEASE_FILES)}, optionally with an extension) "
                f"or official_config= one of {', '.join(OFFICIAL_CONFIGS)}. The 16 kHz and "
                "24 kHz 320d models have the same shapes, so the weights cannot tell"
            )
        if release is not None and release != name:
            raise ValueError(
                f"{path}: named as the {release} release, but official_config={name!r}"
            )
        return name


def _checked_official_config(name: str | None) -> str | None:
    if name is not None and name not in OFFICIAL_CONFIGS:
        raise ValueError(
            f"expected official_config among {', '.join(OFFICIAL_CONFIGS)}, got {name!r}"
        )
    return name


def _check_upsample_kernels(generator: dict, config: OfficialHiFiCodecConfig, path: Path) -> None:
    """Refuses an official generator whose upsampling kernels are not ``config``'s (one with
    none is left to the key check)."""
    kernels = _upsample_kernels(generator)
    if kernels and kernels != config.upsample_kernel_sizes:
        alike = [name for name, c in OFFICIAL_CONFIGS.items() if c.upsample_kernel_sizes == kernels]
        raise CheckpointError(
            f"{path}: not the weights of {config.name}: the generator upsamples with kernels "
            f"{kernels}, {config.name}'s are {config.upsample_kernel_sizes}"
            + (f" (those of {' and '.join(alike)})" if alike else "")
        )


def _upsample_kernels(generator: dict) -> tuple[int, ...]:
    """The kernel sizes of an official generator's upsampling convs, from their weights."""
    kernels = []
    while isinstance(weight := generator.get(f"ups.{len(kernels)}.weight_v"), torch.Tensor):
        kernels.append(weight.shape[-1])
    return tuple(kernels)
