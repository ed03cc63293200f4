"""Check codec-bench's HiFi-Codec release architecture against the official AcademiCodec code.

For each released configuration (16k-320d, 24k-320d, 24k-240d) this builds the OFFICIAL
``Encoder``, ``Quantizer`` and ``Generator`` of an AcademiCodec checkout from its
``egs/HiFi-Codec-*/config_*.json``, draws seeded random weights for them, saves them in the
release file layout (``{'generator', 'encoder', 'quantizer'}`` state dicts, under the release's
file name), and loads that file twice: through the official ``VQVAE`` (``vqvae.py``) and through
:class:`bench.codecs.hificodec.codec.HiFiCodecCodec`. The same audio then runs through both, and
the script prints the largest absolute differences of the encoder latents and the decoded
waveforms, and whether the codes are identical. It exits with status 1 where the codes differ
or a difference exceeds float rounding.

Weights: the official initialisation (PyTorch's defaults; its ``init_weights`` redraws only the
encoder's last conv, as weight norm recomputes the others' weights from ``weight_g`` and
``weight_v``) with every weight-norm magnitude and GroupNorm scale and shift perturbed, so that
none keeps a default value a mix-up could hide behind. The official codebooks (uniform in
+-1/1024) are far smaller than the latents; they are redrawn from a Gaussian fitted to the
latents (level 0) and to level 0's residuals (level 1) of another signal, so that the nearest
codeword search works as in a trained model.

Audio: a tone plus low-passed noise, 1 s (a whole number of hops in every configuration) and
0.771 s, which is not: the official code does not pad, so for that one it is given the input
zero-padded to a whole number of hops, as codec-bench pads it (see
:mod:`bench.codecs.hificodec.official`).

``academicodec/utils.py`` imports matplotlib and yaml for its logging helpers, which the modules
checked here do not use; where either is not installed a stub module stands in for it.

Run from the repository root, with an AcademiCodec checkout (a directory holding
``academicodec/`` and ``egs/``; at commit b6ac134 for the figures in the model card):

    python scripts/check_hificodec_official.py --academicodec PATH_TO_CHECKOUT
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

import torch
from bench.codecs.hificodec.codec import HiFiCodecCodec
from bench.codecs.hificodec.official import OFFICIAL_CONFIGS

# Configuration -> (release file name, its configuration in the checkout).
RELEASES = {
    "official-16k-320d": ("HiFi-Codec-16k-320d", "egs/HiFi-Codec-16k-320d/config_16k_320d.json"),
    "official-24k-320d": ("HiFi-Codec-24k-320d", "egs/HiFi-Codec-24k-320d/config_24k_320d.json"),
    "official-24k-240d": ("HiFi-Codec-24k-240d", "egs/HiFi-Codec-24k-240d/config_24k_240d.json"),
}
DURATIONS = (1.0, 0.771)
# Float rounding: latents relative to their largest magnitude, waveforms absolute (in [-1, 1]).
LATENT_TOLERANCE = 1e-5
WAVEFORM_TOLERANCE = 1e-5


def import_official(checkout: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """The official ``models`` and ``vqvae`` modules of the checkout."""
    if not (checkout / "academicodec" / "models" / "hificodec" / "models.py").is_file():
        raise SystemExit(
            f"expected an AcademiCodec checkout with academicodec/models/hificodec/models.py, "
            f"got {checkout}"
        )
    for name in ("matplotlib", "yaml"):
        if importlib.util.find_spec(name) is None:
            stub = types.ModuleType(name)
            stub.use = lambda *args, **kwargs: None
            sys.modules[name] = stub
            if name == "matplotlib":
                sys.modules["matplotlib.pylab"] = types.ModuleType("matplotlib.pylab")
    sys.path.insert(0, str(checkout))
    from academicodec.models.hificodec import models, vqvae

    return models, vqvae


def check_signal(samples: int, sample_rate: int, seed: int) -> torch.Tensor:
    """A 220 Hz tone plus low-passed noise, ``(1, samples)``, peak about 0.5."""
    generator = torch.Generator().manual_seed(seed)
    time = torch.arange(samples) / sample_rate
    noise = torch.randn(1, 1, samples, generator=generator)
    noise = torch.nn.functional.avg_pool1d(noise, 5, 1, 2)[0]
    return 0.3 * torch.sin(2 * torch.pi * 220 * time)[None] + 0.2 * noise


@torch.no_grad()
def official_weights(models: types.ModuleType, h: dict, sample_rate: int, seed: int) -> dict:
    """Seeded official modules, perturbed and with fitted codebooks, as their state dicts."""
    torch.manual_seed(seed)
    encoder, quantizer, generator = models.Encoder(h), models.Quantizer(h), models.Generator(h)
    for module in (encoder, generator):
        for name, parameter in module.named_parameters():
            if name.endswith("weight_g"):
                parameter.mul_(1 + 0.2 * torch.randn_like(parameter))
        for norm in module.modules():
            if isinstance(norm, torch.nn.GroupNorm):
                norm.weight.copy_(1 + 0.2 * torch.randn_like(norm.weight))
                norm.bias.copy_(0.1 * torch.randn_like(norm.bias))
    latent = encoder(check_signal(2 * sample_rate, sample_rate, seed + 1)[None])
    _fit_codebooks(quantizer.quantizer_modules, latent)
    level_zero, _, _ = quantizer.for_one_step(latent, 0)
    _fit_codebooks(quantizer.quantizer_modules2, latent - level_zero)
    return {
        "generator": generator.state_dict(),
        "encoder": encoder.state_dict(),
        "quantizer": quantizer.state_dict(),
    }


def _fit_codebooks(codebooks: torch.nn.ModuleList, latent: torch.Tensor) -> None:
    """Each group's codewords drawn from a Gaussian with the latent's per-channel mean and std."""
    frames = latent.transpose(1, 2).reshape(-1, latent.shape[1])
    for book, group in zip(codebooks, frames.chunk(len(codebooks), dim=-1), strict=True):
        weight = book.embedding.weight
        weight.copy_(group.mean(0) + group.std(0) * torch.randn_like(weight))


@torch.no_grad()
def compare(name: str, models, vqvae, checkout: Path, folder: Path, seed: int) -> list[dict]:
    """Rows of differences between the official code and codec-bench for configuration
    ``name``."""
    file_name, config_path = RELEASES[name]
    config = OFFICIAL_CONFIGS[name]
    h = json.loads((checkout / config_path).read_text())
    assert h["sampling_rate"] == config.sample_rate
    path = folder / file_name
    torch.save(official_weights(models, vqvae.AttrDict(h), config.sample_rate, seed), path)
    official = vqvae.VQVAE(str(checkout / config_path), str(path), with_encoder=True).eval()
    ours = HiFiCodecCodec(checkpoint=path)
    assert ours.checkpoint_kind == "official" and ours.config.name == name
    rows = []
    for duration in DURATIONS:
        samples = round(duration * config.sample_rate)
        audio = check_signal(samples, config.sample_rate, seed + 2)
        # The official code does not pad: give it the input as codec-bench pads it.
        padded = torch.nn.functional.pad(audio, (0, -samples % config.hop_length))
        official_latent = official.encoder(padded[None])
        latent = ours.model.encoder(padded[None])
        official_codes = official.encode(padded)[0].T  # (T, 4) -> (4, T)
        official_audio = official(official_codes.T[None])[0, :, :samples]
        encoded = ours.encode(audio, config.bandwidths[0])
        decoded = ours.decode(encoded)
        rows.append(
            {
                "config": name,
                "seconds": duration,
                "frames": official_codes.shape[1],
                "latent_max": official_latent.abs().max().item(),
                "latent_diff": (latent - official_latent).abs().max().item(),
                "codes_equal": torch.equal(encoded.codes, official_codes),
                "code_mismatches": int((encoded.codes != official_codes).sum()),
                "audio_max": official_audio.abs().max().item(),
                "audio_diff": (decoded - official_audio).abs().max().item(),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--academicodec", type=Path, required=True, help="AcademiCodec checkout")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    checkout = args.academicodec.resolve()
    models, vqvae = import_official(checkout)
    failed = False
    print(
        f"{'config':<18} {'s':>5} {'frames':>6} {'|latent|':>9} {'latent diff':>11} "
        f"{'codes':>9} {'|audio|':>8} {'audio diff':>10}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for name in RELEASES:
            for row in compare(name, models, vqvae, checkout, Path(folder), args.seed):
                codes = "equal" if row["codes_equal"] else f"{row['code_mismatches']} differ"
                print(
                    f"{row['config']:<18} {row['seconds']:>5g} {row['frames']:>6} "
                    f"{row['latent_max']:>9.3g} {row['latent_diff']:>11.2e} {codes:>9} "
                    f"{row['audio_max']:>8.3g} {row['audio_diff']:>10.2e}"
                )
                failed |= (
                    not row["codes_equal"]
                    or row["latent_diff"] > LATENT_TOLERANCE * row["latent_max"]
                    or row["audio_diff"] > WAVEFORM_TOLERANCE
                )
    print("FAILED: see above" if failed else "OK: codes identical, differences within rounding")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
