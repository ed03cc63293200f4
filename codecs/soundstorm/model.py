"""The SoundStorm model (Borsos et al., "SoundStorm: Efficient Parallel Audio Generation", 2023):
a bidirectional Conformer over the frames of residual-VQ tokens, its training mask, and
MaskGIT decoding level by level, coarse to fine.

- **Input.** Per frame, the embeddings of the tokens of every RVQ level (each level has its
  own table, whose last row is that level's mask embedding) and, where the config has a
  conditioning vocabulary, of the time-aligned conditioning token are summed, so the Conformer
  (:mod:`bench.codecs.modules.conformer`) runs over as many positions as there are frames
  whatever the number of levels. **Output:** one dense head per level.
- **Training mask** (:func:`draw_training_mask`), drawn for each example of a batch as the
  paper does: a prompt boundary ``t' ~ U{0, T-1}``, a level ``q ~ U{1, Q}``, ``u ~ U[0, pi/2]``
  and ``p = cos u``; level ``q`` is masked at each frame from ``t'`` on with probability ``p``,
  every finer level at every frame from ``t'`` on; frames before ``t'`` are the prompt and
  never masked. The loss (:func:`soundstorm_loss`) is the cross-entropy of level ``q``'s head
  on the masked tokens of level ``q`` alone.
- **Decoding** (:func:`generate`): levels go coarse to fine with a per-level iteration count
  (the paper's 16, 1, ..., 1: :func:`paper_schedule`); within a level, MaskGIT's
  confidence-based sampling: each pass samples every masked token of the level, keeps the most
  confident and re-masks the rest, the number left masked after pass ``i`` of ``n`` following
  the cosine schedule ``floor(N cos(pi/2 i/n))``; the last pass of a level is greedy. Given
  tokens (a prompt, transmitted levels) are never changed, and the passes are counted.

Where lucidrains/soundstorm-pytorch departs from the paper, the paper's way is taken: the mask
is drawn per example (the community code draws one per batch; with the heads applied per
example it would save nothing, so it is not offered), the schedule is cosine, levels after the
first are decoded greedily, fixed tokens are never re-masked, and no BERT-style random-token
corruption, self-conditioning or token critic is added.

Unverified choices (the paper does not say): the loss averages over all masked level-``q``
tokens of a batch (an example whose Bernoulli draw masked nothing adds nothing); a token's
confidence is the probability of the sampled token under the temperature- and top-k-adjusted
distribution, with no noise added to it; every pass but the last fixes at least one token;
``temperature`` and ``top_k`` apply to the sampled passes only (the last one is greedy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from bench.codecs.modules.conformer import Conformer, ConformerConfig
from torch import nn


@dataclass(frozen=True)
class SoundStormConfig:
    """One SoundStorm model: ``levels`` RVQ levels of ``codebook_size`` codes, and
    ``conditioning_size`` conditioning tokens (0: none) summed into the input."""

    name: str
    levels: int = 8
    codebook_size: int = 1024
    conditioning_size: int = 0
    conformer: ConformerConfig = field(default_factory=ConformerConfig)

    def __post_init__(self) -> None:
        if self.levels < 1 or self.codebook_size < 2 or self.conditioning_size < 0:
            raise ValueError(
                "expected levels >= 1, codebook_size >= 2 and conditioning_size >= 0, got "
                f"{self.levels}, {self.codebook_size}, {self.conditioning_size}"
            )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SoundStormConfig:
        return cls(**{**data, "conformer": ConformerConfig(**data["conformer"])})


CONFIGS = {
    # The paper's Conformer (12 layers, 16 heads, width 1024, feed-forward 4096, kernel 5) over
    # the 8 levels of the project's EnCodec at 6 kbps (the paper's 12 are SoundStream's 6 kbps).
    # No conditioning vocabulary: as a codec, the transmitted levels condition the generation.
    "paper": SoundStormConfig(name="paper"),
    # CPU size, for tests and the demo checkpoint: the same code path, smaller.
    "tiny": SoundStormConfig(
        name="tiny",
        conformer=ConformerConfig(dim=128, heads=4, layers=4, feedforward=512, dropout=0.1),
    ),
}


class SoundStormModel(nn.Module):
    """Token embeddings, the Conformer and one dense head per level."""

    def __init__(self, config: SoundStormConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.conformer.dim
        # The token a masked position holds at every level: the row after its codebook.
        self.mask_token = config.codebook_size
        # One table for all levels, level q's rows at q * (codebook_size + 1).
        self.token_embedding = nn.Embedding(config.levels * (config.codebook_size + 1), dim)
        self.register_buffer(
            "level_offsets",
            torch.arange(config.levels).view(1, -1, 1) * (config.codebook_size + 1),
            persistent=False,
        )
        self.conditioning_embedding = (
            nn.Embedding(config.conditioning_size, dim) if config.conditioning_size else None
        )
        self.conformer = Conformer(config.conformer)
        self.heads = nn.ModuleList(
            nn.Linear(dim, config.codebook_size) for _ in range(config.levels)
        )

    def forward(
        self,
        tokens: torch.Tensor,
        level: torch.Tensor,
        conditioning: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``(batch, frames, codebook_size)`` of each example's ``level`` ``(batch,)``
        from ``tokens`` ``(batch, levels, frames)``, masked positions holding
        :attr:`mask_token`; ``conditioning`` ``(batch, frames)`` where the config has it."""
        self._check_inputs(tokens, level, conditioning)
        hidden = self.token_embedding(tokens + self.level_offsets).sum(dim=1)
        if self.conditioning_embedding is not None:
            hidden = hidden + self.conditioning_embedding(conditioning)
        hidden = self.conformer(hidden)
        logits = hidden.new_empty(*hidden.shape[:2], self.config.codebook_size)
        # Each example through its own level's head.
        for head_level in level.unique().tolist():
            examples = level == head_level
            logits[examples] = self.heads[head_level](hidden[examples])
        return logits

    def _check_inputs(
        self, tokens: torch.Tensor, level: torch.Tensor, conditioning: torch.Tensor | None
    ) -> None:
        config = self.config
        if tokens.dim() != 3 or tokens.shape[1] != config.levels or tokens.is_floating_point():
            raise ValueError(
                f"expected integer tokens shaped (batch, {config.levels}, frames), got "
                f"{tokens.dtype} {tuple(tokens.shape)}"
            )
        if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) <= self.mask_token:
            raise ValueError(
                f"expected tokens in 0..{config.codebook_size - 1} or the mask "
                f"{self.mask_token}, got {int(tokens.min())}..{int(tokens.max())}"
            )
        if level.shape != tokens.shape[:1] or not 0 <= int(level.min()) < config.levels:
            raise ValueError(
                f"expected one level in 0..{config.levels - 1} per example, got {level.tolist()}"
            )
        if (conditioning is None) != (self.conditioning_embedding is None):
            expected = "conditioning tokens" if conditioning is None else "no conditioning"
            raise ValueError(f"config {config.name!r} expects {expected}")
        if conditioning is not None and conditioning.shape != (tokens.shape[0], tokens.shape[2]):
            raise ValueError(
                f"expected conditioning shaped {(tokens.shape[0], tokens.shape[2])}, got "
                f"{tuple(conditioning.shape)}"
            )


@dataclass(frozen=True)
class TrainingMask:
    """One draw of the training mask for a batch: per example the prompt boundary
    ``prompt_end`` (``t'``, frames before it are the prompt), the level ``level`` (``q``, from
    0) and ``masked`` ``(batch, levels, frames)``, the tokens replaced by the mask."""

    prompt_end: torch.Tensor
    level: torch.Tensor
    masked: torch.Tensor

    @property
    def targets(self) -> torch.Tensor:
        """``(batch, frames)``: the masked tokens of each example's level, which the loss
        scores."""
        return self.masked[torch.arange(len(self.level), device=self.level.device), self.level]

    def to(self, device: torch.device | str) -> TrainingMask:
        return TrainingMask(
            self.prompt_end.to(device), self.level.to(device), self.masked.to(device)
        )


def draw_training_mask(
    batch: int, levels: int, frames: int, generator: torch.Generator
) -> TrainingMask:
    """The paper's mask, drawn independently for each of ``batch`` examples (module
    docstring)."""
    prompt_end = torch.randint(0, frames, (batch,), generator=generator)
    level = torch.randint(0, levels, (batch,), generator=generator)
    mask_probability = torch.cos(torch.rand(batch, generator=generator) * (math.pi / 2))
    drawn = torch.rand(batch, frames, generator=generator) < mask_probability[:, None]
    after_prompt = torch.arange(frames)[None] >= prompt_end[:, None]
    level_index = torch.arange(levels)[None]
    at_level = (level_index == level[:, None])[..., None] & drawn[:, None]
    finer = (level_index > level[:, None])[..., None]
    return TrainingMask(prompt_end, level, after_prompt[:, None] & (at_level | finer))


@dataclass(frozen=True)
class SoundStormLoss:
    """A training step's loss, the mask it was drawn under and how many tokens it scored."""

    loss: torch.Tensor
    mask: TrainingMask
    scored_tokens: int


def soundstorm_loss(
    model: SoundStormModel,
    tokens: torch.Tensor,
    generator: torch.Generator,
    conditioning: torch.Tensor | None = None,
    network: nn.Module | None = None,
) -> SoundStormLoss:
    """Cross-entropy on the masked level-``q`` tokens of ``tokens`` ``(batch, levels,
    frames)`` under a fresh :func:`draw_training_mask`; ``network`` is what to call in place
    of ``model`` (its DistributedDataParallel wrapper)."""
    batch, levels, frames = tokens.shape
    mask = draw_training_mask(batch, levels, frames, generator).to(tokens.device)
    inputs = tokens.masked_fill(mask.masked, model.mask_token)
    logits = (network or model)(inputs, mask.level, conditioning)
    scored = mask.targets
    level_tokens = tokens[torch.arange(batch, device=tokens.device), mask.level]
    if not scored.any():
        # Nothing masked in the whole batch: no gradient, but a graph the optimiser can step.
        return SoundStormLoss(logits.sum() * 0.0, mask, 0)
    loss = F.cross_entropy(logits[scored], level_tokens[scored])
    return SoundStormLoss(loss, mask, int(scored.sum()))


def paper_schedule(levels: int, first: int = 16) -> tuple[int, ...]:
    """The paper's iterations per level: ``first`` at the first level, one at each other."""
    return (first,) + (1,) * (levels - 1)


@dataclass(frozen=True)
class Generation:
    """What :func:`generate` made: every level's tokens and the network passes it spent."""

    tokens: torch.Tensor
    forward_passes: int


def _sample(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A token per position of ``logits`` ``(batch, frames, codes)`` and its probability."""
    logits = logits / temperature
    if top_k is not None:
        threshold = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < threshold, -math.inf)
    probabilities = logits.softmax(dim=-1)
    flat = probabilities.flatten(0, 1)
    choice = torch.multinomial(flat, 1, generator=generator).view(logits.shape[:2])
    return choice, probabilities.gather(-1, choice[..., None])[..., 0]


@torch.no_grad()
def generate(
    model: SoundStormModel,
    tokens: torch.Tensor,
    given: torch.Tensor,
    iterations: Sequence[int],
    generator: torch.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    conditioning: torch.Tensor | None = None,
) -> Generation:
    """Fill the tokens of ``tokens`` ``(batch, levels, frames)`` where ``given`` (same shape,
    bool) is false, level by level, with ``iterations[q]`` passes at level ``q`` (a level
    with nothing to fill spends none); ``generator`` draws every sample.

    Raises:
        ValueError: ``iterations`` not one count per level, a level to fill given fewer than
            one pass, a temperature that is not positive, a ``top_k`` outside 1..codebook_size.
    """
    config = model.config
    batch, levels, frames = tokens.shape
    if given.shape != tokens.shape or given.dtype != torch.bool:
        raise ValueError(
            f"expected given as a bool mask shaped {tuple(tokens.shape)}, got "
            f"{given.dtype} {tuple(given.shape)}"
        )
    if len(iterations) != levels:
        raise ValueError(f"expected {levels} iteration counts, one per level, got {iterations}")
    if not temperature > 0:
        raise ValueError(f"temperature: expected a value > 0, got {temperature}")
    if top_k is not None and not 1 <= top_k <= config.codebook_size:
        raise ValueError(f"top_k: expected 1..{config.codebook_size} or None, got {top_k}")
    decided = given.clone()
    tokens = tokens.masked_fill(~decided, model.mask_token)
    forward_passes = 0
    for level in range(levels):
        to_fill = ~decided[:, level]
        if not to_fill.any():
            continue
        steps = iterations[level]
        if steps < 1:
            raise ValueError(f"level {level} has tokens to fill but {steps} iterations")
        total = to_fill.sum(dim=-1)
        level_index = torch.full((batch,), level, device=tokens.device)
        for step in range(1, steps + 1):
            logits = model(tokens, level_index, conditioning)
            forward_passes += 1
            masked = ~decided[:, level]
            if step == steps:
                choice, fix = logits.argmax(dim=-1), masked
            else:
                choice, confidence = _sample(logits, temperature, top_k, generator)
                remaining = masked.sum(dim=-1)
                left_masked = torch.floor(total * math.cos(math.pi / 2 * step / steps)).long()
                left_masked = torch.minimum(left_masked, (remaining - 1).clamp_min(0))
                confidence = confidence.masked_fill(~masked, -1.0)
                rank = confidence.argsort(dim=-1, descending=True).argsort(dim=-1)
                fix = masked & (rank < (remaining - left_masked)[:, None])
            tokens[:, level] = torch.where(fix, choice, tokens[:, level])
            decided[:, level] |= fix
    return Generation(tokens, forward_passes)
