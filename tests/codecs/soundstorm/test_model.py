"""SoundStorm's model: the training mask follows the paper (cosine share at level q, finer
levels after t' always masked, nothing before t'), the loss scores only the masked tokens of
level q, and MaskGIT decoding spends exactly the scheduled passes (27 for 12 levels at 16, 1,
..., 1), is the greedy argmax at one iteration, never changes given tokens and is
deterministic per seed."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from bench.codecs.modules.conformer import ConformerConfig
from bench.codecs.soundstorm.model import (
    CONFIGS,
    SoundStormConfig,
    SoundStormModel,
    draw_training_mask,
    generate,
    paper_schedule,
    soundstorm_loss,
)

pytestmark = pytest.mark.usefixtures("single_thread")

# The tiny config's code path at test size; 12 levels as the paper's SoundStream.
CONFIG = SoundStormConfig(
    name="test",
    levels=12,
    codebook_size=16,
    conformer=ConformerConfig(dim=32, heads=2, layers=1, feedforward=64),
)


@pytest.fixture(scope="module")
def model() -> SoundStormModel:
    torch.manual_seed(0)
    return SoundStormModel(CONFIG).eval()


def random_tokens(batch: int, frames: int, seed: int = 0, config=CONFIG) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(
        0, config.codebook_size, (batch, config.levels, frames), generator=generator
    )


def test_the_masked_share_at_level_q_follows_the_cosine_schedule():
    frames = 400
    mask = draw_training_mask(4000, 4, frames, torch.Generator().manual_seed(0))
    after = frames - mask.prompt_end
    share = mask.targets.sum(-1) / after
    # p = cos u with u ~ U[0, pi/2]: E[p] = 2/pi and P(p > 1/2) = P(u < pi/3) = 2/3.
    long_enough = after >= 100  # the share of few frames is too coarse a reading of p
    assert float(share[long_enough].mean()) == pytest.approx(2 / math.pi, abs=0.02)
    assert float((share[long_enough] > 0.5).float().mean()) == pytest.approx(2 / 3, abs=0.03)


def test_finer_levels_after_the_prompt_are_all_masked_and_nothing_before_it_is():
    levels, frames = 6, 50
    mask = draw_training_mask(500, levels, frames, torch.Generator().manual_seed(1))
    after_prompt = torch.arange(frames)[None] >= mask.prompt_end[:, None]
    for example in range(500):
        level, masked = int(mask.level[example]), mask.masked[example]
        assert not masked[:, ~after_prompt[example]].any(), "a prompt token was masked"
        assert not masked[:level].any(), "a coarser level was masked"
        assert masked[level + 1 :, after_prompt[example]].all(), "a finer token was kept"
    # Every level and prompt boundary is drawn, the boundary from 0 (no prompt) on.
    assert set(mask.level.tolist()) == set(range(levels))
    assert int(mask.prompt_end.min()) == 0 and int(mask.prompt_end.max()) == frames - 1


def test_the_loss_sees_only_the_masked_tokens_of_level_q(model):
    tokens = random_tokens(8, 30)
    captured = {}

    def keep_gradient(module, inputs, output):
        output.retain_grad()
        captured.setdefault("logits", []).append((module, output))

    hooks = [head.register_forward_hook(keep_gradient) for head in model.heads]
    try:
        result = soundstorm_loss(model, tokens, torch.Generator().manual_seed(3))
        result.loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
        model.zero_grad()
    # Rebuild the (batch, frames) map of positions whose logits got a gradient.
    touched = torch.zeros(8, 30, dtype=torch.bool)
    for module, output in captured["logits"]:
        examples = (result.mask.level == list(model.heads).index(module)).nonzero()[:, 0]
        touched[examples] = output.grad.abs().sum(-1) > 0
    assert result.scored_tokens == int(result.mask.targets.sum()) > 0
    assert torch.equal(touched, result.mask.targets)


def test_the_loss_is_the_cross_entropy_of_the_masked_level_q_tokens(model):
    tokens = random_tokens(4, 20, seed=5)
    result = soundstorm_loss(model, tokens, torch.Generator().manual_seed(4))
    mask = result.mask
    with torch.no_grad():
        logits = model(tokens.masked_fill(mask.masked, model.mask_token), mask.level)
    targets = tokens[torch.arange(4), mask.level]
    expected = torch.nn.functional.cross_entropy(logits[mask.targets], targets[mask.targets])
    torch.testing.assert_close(result.loss.detach(), expected)


def count_passes(model, **arguments):
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        result = generate(model, **arguments)
    finally:
        hook.remove()
    return result, len(calls)


def test_the_paper_schedule_spends_27_passes_on_12_levels(model):
    tokens = random_tokens(1, 40)
    given = torch.zeros_like(tokens, dtype=torch.bool)
    result, passes = count_passes(
        model,
        tokens=tokens,
        given=given,
        iterations=paper_schedule(12),
        generator=torch.Generator().manual_seed(0),
    )
    assert paper_schedule(12) == (16,) + (1,) * 11
    assert passes == result.forward_passes == 27
    assert int(result.tokens.max()) < CONFIG.codebook_size  # nothing left masked


def test_transmitted_levels_cost_no_pass_and_each_generated_level_its_schedule(model):
    tokens = random_tokens(2, 40)
    given = torch.zeros_like(tokens, dtype=torch.bool)
    given[:, :4] = True
    result, passes = count_passes(
        model,
        tokens=tokens,
        given=given,
        iterations=(0,) * 4 + paper_schedule(8, first=5),
        generator=torch.Generator().manual_seed(0),
    )
    assert passes == result.forward_passes == 5 + 7


def test_one_iteration_is_the_greedy_argmax(model):
    tokens = random_tokens(2, 25)
    given = torch.zeros_like(tokens, dtype=torch.bool)
    given[:, :3] = True
    result = generate(
        model, tokens, given, (1,) * 12, torch.Generator().manual_seed(0), temperature=5.0
    )
    # Level by level, the argmax of the level's logits with the finer levels masked.
    expected = tokens.clone()
    expected[:, 3:] = model.mask_token
    with torch.no_grad():
        for level in range(3, 12):
            logits = model(expected, torch.full((2,), level))
            expected[:, level] = logits.argmax(-1)
    assert torch.equal(result.tokens, expected)


def test_given_tokens_are_never_changed(model):
    tokens = random_tokens(2, 40, seed=7)
    given = torch.zeros_like(tokens, dtype=torch.bool)
    given[:, :2] = True  # transmitted levels
    given[:, :, :10] = True  # a prompt of 10 frames at every level
    given[1, 5, 30] = True  # and a lone token
    result = generate(
        model, tokens, given, paper_schedule(12, first=4), torch.Generator().manual_seed(0)
    )
    assert torch.equal(result.tokens[given], tokens[given])
    # The rest was generated: the random model does not reproduce the random tokens.
    assert not torch.equal(result.tokens[~given], tokens[~given])


def test_the_same_seed_generates_the_same_tokens_and_other_seeds_others(model):
    tokens = random_tokens(1, 60)
    given = torch.zeros_like(tokens, dtype=torch.bool)
    given[:, :2] = True

    def tokens_of(seed: int) -> torch.Tensor:
        schedule = (0, 0) + paper_schedule(10, first=8)
        with torch.random.fork_rng():
            torch.manual_seed(seed + 100)  # the global state must not matter
            return generate(
                model, tokens, given, schedule, torch.Generator().manual_seed(seed)
            ).tokens

    assert torch.equal(tokens_of(0), tokens_of(0))
    assert not torch.equal(tokens_of(0), tokens_of(1))


def test_top_k_one_samples_the_argmax_at_every_pass(model):
    tokens = random_tokens(1, 30)
    given = torch.zeros_like(tokens, dtype=torch.bool)
    given[:, :2] = True
    schedule = (0, 0) + paper_schedule(10, first=6)
    first, second = (
        generate(model, tokens, given, schedule, torch.Generator().manual_seed(seed), top_k=1)
        for seed in (0, 1)
    )
    assert torch.equal(first.tokens, second.tokens)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"iterations": (1,) * 11}, "expected 12 iteration counts"),
        ({"iterations": (0,) * 12}, "level 0 has tokens to fill but 0 iterations"),
        ({"temperature": 0.0}, "temperature: expected a value > 0, got 0.0"),
        ({"top_k": 17}, "top_k: expected 1..16 or None, got 17"),
    ],
)
def test_bad_decoding_options_are_refused(model, options, message):
    tokens = random_tokens(1, 5)
    arguments = {
        "tokens": tokens,
        "given": torch.zeros_like(tokens, dtype=torch.bool),
        "iterations": (1,) * 12,
        "generator": torch.Generator().manual_seed(0),
        **options,
    }
    with pytest.raises(ValueError, match=message):
        generate(model, **arguments)


def test_bad_tokens_are_refused(model):
    tokens = random_tokens(1, 5)
    with pytest.raises(
        ValueError, match="shaped \\(batch, 12, frames\\), got torch.int64 \\(1, 5\\)"
    ):
        model(tokens[:, 0], torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="expected tokens in 0..15 or the mask 16, got 0..17"):
        model(tokens.index_fill(2, torch.tensor([0]), 17), torch.zeros(1, dtype=torch.long))


def test_conditioning_tokens_are_summed_in_where_the_config_has_them():
    config = dataclasses.replace(CONFIG, conditioning_size=10)
    torch.manual_seed(0)
    model = SoundStormModel(config).eval()
    tokens = random_tokens(1, 12)
    level = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        first = model(tokens, level, torch.zeros(1, 12, dtype=torch.long))
        second = model(tokens, level, torch.ones(1, 12, dtype=torch.long))
    assert not torch.allclose(first, second)
    with pytest.raises(ValueError, match="expects conditioning tokens"):
        model(tokens, level)


def test_the_paper_config_has_the_papers_conformer_and_the_tiny_one_fits_a_cpu():
    assert CONFIGS["tiny"].levels == CONFIGS["paper"].levels == 8
    paper = CONFIGS["paper"].conformer
    assert (paper.layers, paper.heads, paper.dim, paper.feedforward, paper.conv_kernel) == (
        12,
        16,
        1024,
        4096,
        5,
    )
    tiny = SoundStormModel(CONFIGS["tiny"])
    assert sum(parameter.numel() for parameter in tiny.parameters()) < 5_000_000
