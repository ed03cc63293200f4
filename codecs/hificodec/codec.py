"""HiFi-Codec (Yang et al. 2023, arXiv 2305.02765) as a benchmark codec.

The model shares EnCodec's code path (see :mod:`bench.codecs.hificodec.model`), so the codec is
:class:`~bench.codecs.encodec.codec.EncodecCodec` with HiFi-Codec's configuration, model and
demo checkpoint. The payload is the same: a JSON header ``{"codec": "hificodec", "config",
"entropy_coded", "n_q"}`` and the codes packed at ``log2(bins)`` bits each, group-major
(all levels of group 0, then group 1), one frame for the whole signal.

There is no entropy coding (``entropy_coded`` is always false). EnCodec's LM reads the first K
code rows of every bandwidth through the same K embeddings, but group-major rows change meaning
with the bandwidth (the second row is group 1's first level at 1.5 kbps, group 0's second level
at 3 kbps), so that LM does not apply as it stands.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.codecs.checkpoint import CheckpointError
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.hificodec.model import CONFIGS, HiFiCodecConfig, HiFiCodecModel

DEMO_CHECKPOINT = Path(__file__).parent / "checkpoints" / "hificodec_tiny_demo.pt"


class HiFiCodecCodec(EncodecCodec):
    """HiFi-Codec at the bandwidths of its configuration (tiny demo: 1.5, 3 and 6 kbps).

    Args:
        checkpoint: a codec-bench checkpoint (``codec="hificodec"``, from ``bench train
            hificodec``), or ``None`` for the project's demo checkpoint :data:`DEMO_CHECKPOINT`.

    Raises:
        CheckpointError: the file is missing or not a codec-bench HiFi-Codec checkpoint (the
            official AcademiCodec files are another architecture; see :meth:`_read_official`).
    """

    name = "hificodec"
    display_name = "HiFi-Codec"
    config_class = HiFiCodecConfig
    configs = CONFIGS
    model_class = HiFiCodecModel
    demo_checkpoint = DEMO_CHECKPOINT

    def __init__(self, checkpoint: str | os.PathLike | None = None) -> None:
        # No `entropy_coding`: what the harness offers a codec follows from its options.
        super().__init__(checkpoint)

    def _read_official(self, contents: object, path: Path) -> tuple[HiFiCodecConfig, dict, str]:
        raise CheckpointError(
            f"{path}: expected a codec-bench HiFi-Codec checkpoint (from `bench train "
            "hificodec`), got another kind of file. The official AcademiCodec checkpoints do "
            "not load: their decoder is a HiFi-GAN generator, while this reference "
            "implementation follows the paper's mirrored SEANet decoder"
        )
