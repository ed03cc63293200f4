"""SoundStorm's solver (Borsos et al. 2023): the masked token model over a frozen EnCodec's
tokens. ``bench train soundstorm --codec-checkpoint ENCODEC.pt`` runs it.

The corpus is encoded once, each item whole (as the codec encodes a signal) at the model's
level count, zero-padded to at least one training window as the audio sampler pads short
items. The tokens are cached on disk under a key of the EnCodec's hash, the level count and
the item's audio; a cache file carries the SHA-256 of its tokens, and one that fails the check
is encoded again. Each step draws windows of ``segment_seconds`` from the cached tokens, items
in proportion to their length, as a pure function of (seed, step), and takes one AdamW step on
:func:`~bench.codecs.soundstorm.model.soundstorm_loss` (the paper's mask, drawn per example).
The export is a SoundStorm checkpoint referencing the EnCodec checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from bench.codecs.checkpoint import Checkpoint, CheckpointError
from bench.registry import CODECS
from bench.store import DEFAULT_CACHE_DIR, content_key, write_atomically
from bench.train.data import SegmentSampler
from bench.train.plots import plot_training_log
from bench.train.settings import SoundStormTrainSettings
from bench.train.solvers.base import Solver, data_parallel, step_seed

# Bump when the cached tokens of an item would change for the same key.
TOKEN_CACHE_VERSION = 1


def _token_bytes(tokens: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, tokens, allow_pickle=False)
    body = buffer.getvalue()
    return hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def _read_tokens(path: Path) -> np.ndarray | None:
    """The tokens of a cache file, or ``None`` if it is missing or fails its hash."""
    if not path.is_file():
        return None
    digest, _, body = path.read_bytes().partition(b"\n")
    if digest.decode("ascii", "replace") != hashlib.sha256(body).hexdigest():
        return None
    return np.load(io.BytesIO(body), allow_pickle=False)


class SoundStormSolver(Solver):
    """The SoundStorm model and its optimiser, over the cached tokens of a frozen EnCodec."""

    settings: SoundStormTrainSettings

    def __init__(
        self, settings: SoundStormTrainSettings, device: torch.device | None = None
    ) -> None:
        super().__init__(settings, device)
        torch.manual_seed(settings.seed)
        self.family = CODECS.factory(settings.codec)
        self.config = self.family.configs[settings.config]
        try:
            self.tokenizer = self.family.tokenizer_class(settings.codec_checkpoint)
            self.family.check_tokenizer(self.tokenizer, self.config)
        except (CheckpointError, ValueError) as error:
            raise ValueError(f"--codec-checkpoint: {error}") from None
        self.name = settings.codec
        self.sample_rate, self.channels = self.tokenizer.sample_rate, 1
        self.window_frames = max(1, round(settings.segment_seconds * self.tokenizer.frame_rate))
        self.model = self.family.model_class(self.config).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=settings.learning_rate)
        self.parallel_model: nn.Module | None = None
        self.tokens: list[np.ndarray] = []
        self.cache_hits = 0

    def networks(self) -> dict[str, tuple[dict, nn.Module]]:
        return {"soundstorm": (self.config.to_json(), self.model)}

    def training_parts(self) -> dict[str, object | None]:
        return {"optimizer": self.optimizer}

    def metadata(self) -> dict:
        return {
            "description": f"SoundStorm {self.config.name}",
            "codec_checkpoint": str(self.settings.codec_checkpoint),
            "codec_hash": self.tokenizer.checkpoint_hash,
        }

    def check_resumable(self, checkpoint: Checkpoint) -> None:
        """The saved model must have learnt the tokens of the EnCodec there is now."""
        saved, now = checkpoint.metadata.get("codec_hash"), self.tokenizer.checkpoint_hash
        if saved != now:
            raise ValueError(
                f"--resume: {checkpoint.path} was trained on the tokens of other EnCodec weights "
                f"(hash {saved}) than {self.settings.codec_checkpoint} now holds ({now}); start "
                "a new run in another --out folder"
            )

    def wrap_for_workers(self, rank: int, world_size: int) -> None:
        super().wrap_for_workers(rank, world_size)
        if world_size > 1:
            self.parallel_model = data_parallel(self.model, self.device)

    def use_data(self, sampler: SegmentSampler | None = None, progress: bool = True) -> None:
        """Load the corpus, then its tokens: from the cache, or encoded once and cached."""
        super().use_data(sampler, progress)
        cache = Path(self.settings.token_cache or DEFAULT_CACHE_DIR / "soundstorm-tokens")
        segment = self.sampler.segment
        for clip in tqdm(
            self.sampler.clips,
            desc="tokens of the training audio",
            unit="item",
            disable=not progress,
        ):
            audio = nn.functional.pad(clip, (0, max(0, segment - clip.shape[-1])))
            key = content_key(
                {
                    "version": TOKEN_CACHE_VERSION,
                    "codec": self.tokenizer.checkpoint_hash,
                    "levels": self.config.levels,
                    "audio": hashlib.sha256(audio.numpy().tobytes()).hexdigest(),
                }
            )
            path = cache / key[:2] / f"{key}.npy"
            tokens = _read_tokens(path)
            if tokens is None:
                tokens = self._encode(audio)
                write_atomically(path, _token_bytes(tokens))
            else:
                self.cache_hits += 1
            self.tokens.append(tokens)

    def _encode(self, audio: torch.Tensor) -> np.ndarray:
        """Tokens ``(levels, frames)`` of ``(1, samples)`` audio, int16."""
        model = self.tokenizer.model
        # The smallest bitrate sending at least the model's levels; RVQ's first levels do not
        # depend on how many follow.
        bitrate = min(
            bitrate
            for bitrate in self.tokenizer.bitrates
            if model.n_q_for(bitrate) >= self.config.levels
        )
        with torch.inference_mode():
            codes = self.tokenizer.encode(audio, bitrate).codes[: self.config.levels]
        return codes.numpy().astype(np.int16)

    def _batch(self, step: int) -> torch.Tensor:
        """Token windows ``(batch, levels, window_frames)`` for ``step``."""
        settings = self.settings
        rng = np.random.default_rng([settings.seed, step, 2 * self.rank])
        lengths = np.array([tokens.shape[-1] for tokens in self.tokens], dtype=float)
        chosen = rng.choice(len(self.tokens), size=settings.batch_size, p=lengths / lengths.sum())
        windows = []
        for index in chosen:
            tokens = self.tokens[index]
            start = int(rng.integers(0, max(1, tokens.shape[-1] - self.window_frames + 1)))
            windows.append(torch.from_numpy(tokens[:, start : start + self.window_frames]))
        return torch.stack(windows).long().to(self.device)

    def run_step(self, step: int) -> dict:
        tokens = self._batch(step)
        generator = torch.Generator().manual_seed(step_seed(self.settings.seed, step))
        torch.manual_seed(step_seed(self.settings.seed, step))  # dropout
        self.model.train()
        result = self.family.loss(self.model, tokens, generator, network=self.parallel_model)
        self.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        self.optimizer.step()
        return {
            "loss": result.loss.item(),
            "scored_tokens": result.scored_tokens,
            "levels": result.mask.level.tolist(),
        }

    def progress(self, log: dict) -> dict[str, str]:
        return {"loss": f"{log['loss']:.3f}", "bits": f"{log['loss'] / math.log(2):.2f}"}

    def export(self, path: Path, step: int, metadata: dict) -> None:
        """The model, with a reference to the EnCodec checkpoint whose tokens it learnt."""
        self.family.make_checkpoint(
            self.config,
            self.model.state_dict(),
            self.settings.codec_checkpoint,
            step=step,
            metadata={**metadata, "train_settings": self.settings.to_json()},
        ).save(path)

    def finish(self, out_dir: Path) -> None:
        plot_training_log(out_dir / self.log_file, out_dir / "train_log.png", ("loss",))
