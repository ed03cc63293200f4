"""SampleRNN's model (Mehri et al., ICLR 2017): NLL accounting in bits, the tier schedule of
generation counted on the RNNs themselves, incremental generation against teacher forcing,
the state carried across chunks, the fixed 8-bit quantization, seeds and bad input."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from bench.codecs.samplernn.model import (
    CONFIGS,
    LSTM_FORGET_BIAS,
    Q_LEVELS,
    ZERO_LEVEL,
    IncrementalGenerator,
    SampleRnn,
    SampleRnnConfig,
    bits_per_sample,
    dequantize,
    quantize,
)

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = CONFIGS["tiny"]
TINY_3 = CONFIGS["tiny-3-tier"]
CONDITIONAL = replace(TINY_3, name="conditional", condition_dim=5, condition_hop=12.0)


def model_of(config: SampleRnnConfig, seed: int = 0) -> SampleRnn:
    torch.manual_seed(seed)
    return SampleRnn(config).eval()


def random_levels(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(Q_LEVELS, (batch, samples), generator=torch.Generator().manual_seed(seed))


def condition_for(model: SampleRnn, batch: int, samples: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    frames = math.ceil(samples / model.config.condition_hop)
    stream = torch.randn(batch, frames, model.config.condition_dim, generator=generator)
    return model.align_condition(stream, samples)


def test_bits_are_nats_times_log2_e_on_a_hand_computed_case():
    # Row 1 gives the target probability 1/2 (1 bit), row 2 is uniform over 256 (8 bits).
    half = torch.full((Q_LEVELS,), math.log(0.5 / (Q_LEVELS - 1)))
    half[7] = math.log(0.5)
    logits = torch.stack([half, torch.zeros(Q_LEVELS)])
    targets = torch.tensor([7, 200])
    nats = (math.log(2) + math.log(256)) / 2
    assert bits_per_sample(logits, targets).item() == pytest.approx(4.5, abs=1e-5)
    assert bits_per_sample(logits, targets).item() == pytest.approx(nats * math.log2(math.e))


def test_a_model_fitted_to_a_constant_signal_has_nll_near_zero():
    model = model_of(TINY).train()
    levels = torch.full((2, TINY.history + 64), 150)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    initial = bits_per_sample(model(levels).logits, model.targets(levels)).item()
    for _ in range(40):
        loss = bits_per_sample(model(levels).logits, model.targets(levels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    fitted = bits_per_sample(model(levels).logits, model.targets(levels)).item()
    assert initial > 7.0
    assert fitted < 0.05


def test_each_tier_fires_once_per_its_frame_size_over_a_generated_second():
    model = model_of(TINY_3)
    calls = {}

    def counter(name):
        def hook(module, inputs, output):
            # One frame (one RNN step) per call: a tier that recomputed past frames would
            # show more steps.
            steps = inputs[0].shape[1] if name != "sample" else 1
            calls[name] = calls.get(name, 0) + steps

        return hook

    for index, tier in enumerate(model.tiers):
        tier.rnn.register_forward_hook(counter(index))
    model.sample_mlp.head.register_forward_hook(counter("sample"))
    second = TINY_3.sample_rate
    levels = model.generate(second, seed=3)
    assert levels.shape == (1, second)
    assert calls == {0: second // 8, 1: second // 2, "sample": second}


@pytest.mark.parametrize(
    "config",
    [
        TINY,
        TINY_3,
        replace(TINY_3, name="lstm", rnn="lstm"),
        CONDITIONAL,
        replace(CONDITIONAL, name="code-init-wn", initialisation="code", weight_norm=True),
    ],
    ids=lambda config: config.name,
)
def test_incremental_generation_gives_the_teacher_forced_logits(config):
    model = model_of(config)
    samples = 48
    levels = random_levels(2, config.history + samples)
    # The generator starts from a top frame of the zero level.
    levels[:, : config.history] = ZERO_LEVEL
    condition = condition_for(model, 2, samples) if config.condition_dim else None
    with torch.no_grad():
        expected = model(levels, condition).logits
    generator = IncrementalGenerator(model, 2, condition, samples)
    stepped = []
    for step in range(samples):
        stepped.append(generator.next_logits())
        generator.append(model.targets(levels)[:, step])
    torch.testing.assert_close(torch.stack(stepped, dim=1), expected, atol=2e-5, rtol=1e-4)


def test_generated_samples_are_the_argmax_of_their_teacher_forced_logits_when_cold():
    model = model_of(CONDITIONAL)
    samples = 40
    condition = condition_for(model, 3, samples)
    generated = model.generate(samples, condition=condition, temperature=1e-6, seed=0)
    history = torch.full((3, CONDITIONAL.history), ZERO_LEVEL)
    with torch.no_grad():
        logits = model(torch.cat([history, generated], dim=1), condition).logits
    assert torch.equal(generated, logits.argmax(-1))


def test_the_state_carries_across_chunks_as_one_pass():
    model = model_of(TINY_3)
    levels = random_levels(2, TINY_3.history + 64)
    with torch.no_grad():
        whole = model(levels).logits
        first = model(levels[:, : TINY_3.history + 32])
        second = model(levels[:, 32:], state=first.state)
        restarted = model(levels[:, 32:]).logits
    torch.testing.assert_close(torch.cat([first.logits, second.logits], dim=1), whole)
    assert not torch.allclose(restarted, second.logits)


def test_same_seed_same_samples_and_another_seed_others():
    model = model_of(TINY_3)
    first = model.generate(300, batch_size=2, seed=5)
    assert torch.equal(first, model.generate(300, batch_size=2, seed=5))
    assert not torch.equal(first, model.generate(300, batch_size=2, seed=6))
    assert first.min() >= 0 and first.max() < Q_LEVELS


def test_learned_initial_states_and_the_lstm_forget_bias():
    model = model_of(replace(TINY_3, name="lstm", rnn="lstm")).train()
    levels = random_levels(1, TINY_3.history + 16)
    bits_per_sample(model(levels).logits, model.targets(levels)).backward()
    for tier in model.tiers:
        assert tier.initial_state.grad.abs().sum() > 0
        forget = tier.rnn.bias_ih_l0[64:128] + tier.rnn.bias_hh_l0[64:128]
        assert torch.all((forget - LSTM_FORGET_BIAS).abs() < 0.2)


@pytest.mark.parametrize("quantization", ["linear", "mu-law"])
def test_fixed_8_bit_quantization(quantization):
    audio = torch.linspace(-1, 1, 1001)
    levels = quantize(audio, quantization)
    assert levels.dtype == torch.long and levels.min() == 0 and levels.max() == Q_LEVELS - 1
    assert quantize(torch.zeros(1), quantization).item() == ZERO_LEVEL
    assert dequantize(torch.tensor([ZERO_LEVEL]), quantization).item() == 0.0
    assert torch.equal(quantize(dequantize(levels, quantization), quantization), levels)
    if quantization == "linear":
        # Half a step everywhere but above 127/128, where the top level clips.
        inside = audio <= 127 / 128
        assert (dequantize(levels) - audio)[inside].abs().max() <= 1 / 256 + 1e-6
    else:
        # Mu-law spends its levels near zero: finer there than linear's 1/256.
        quiet = torch.linspace(-0.01, 0.01, 101)
        assert (dequantize(quantize(quiet, "mu-law"), "mu-law") - quiet).abs().max() < 1 / 512
    # No per-file normalisation: the levels of a prefix do not depend on what follows it.
    loud_end = torch.cat([0.01 * audio, audio])
    assert torch.equal(
        quantize(loud_end, quantization)[:1001], quantize(0.01 * audio, quantization)
    )


def test_the_condition_is_held_to_the_top_frames():
    model = model_of(replace(TINY, name="held", condition_dim=1, condition_hop=32.0))
    stream = torch.arange(3.0).reshape(1, 3, 1)
    # Top frames of 16 samples: centres 8, 24, 40, ... under stream frames 0, 0, 1, 1, 2, 2
    # and past the stream's end the last frame.
    aligned = model.align_condition(stream, 16 * 8)
    assert aligned[0, :, 0].tolist() == [0, 0, 1, 1, 2, 2, 2, 2]


def test_the_paper_configs():
    two, three = CONFIGS["2-tier"], CONFIGS["3-tier"]
    assert (two.frame_sizes, two.rnn_layers, two.rnn_dim, two.mlp_dim) == ((16,), (3,), 1024, 1024)
    assert (three.frame_sizes, three.rnn_layers, three.upsampling) == ((8, 2), (1, 1), (4, 2))
    assert two.embedding_dim == three.embedding_dim == 256
    assert SampleRnnConfig.from_json(three.to_json()) == three


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"frame_sizes": (6, 4), "rnn_layers": (1, 1)}, "divide the one above"),
        ({"rnn_layers": (1, 1)}, "one positive RNN depth per frame tier"),
        ({"rnn": "rnn"}, "expected rnn in"),
        ({"quantization": "a-law"}, "expected quantization in"),
        ({"condition_dim": 4}, "condition_hop > 0"),
        ({"initialisation": "he"}, "expected initialisation in"),
    ],
)
def test_bad_configs(fields, message):
    with pytest.raises(ValueError, match=message):
        replace(TINY, **fields)


def test_bad_input():
    model = model_of(TINY)
    conditional = model_of(CONDITIONAL)
    good = random_levels(1, TINY.history + 16)
    with pytest.raises(ValueError, match="expected int64 levels"):
        model(good.float())
    with pytest.raises(ValueError, match="positive multiple of 16"):
        model(good[:, :-3])
    with pytest.raises(ValueError, match=r"levels in \[0, 255\]"):
        model(good + 300)
    with pytest.raises(ValueError, match="unconditional"):
        model(good, torch.zeros(1, 1, 5))
    with pytest.raises(ValueError, match="expected a condition aligned to the top tier"):
        conditional(random_levels(1, TINY_3.history + 16))
    with pytest.raises(ValueError, match="expected a condition stream"):
        conditional.align_condition(torch.zeros(1, 4, 3), 16)
    with pytest.raises(ValueError, match="temperature > 0"):
        model.generate(10, temperature=0.0)
    with pytest.raises(ValueError, match="positive number of samples"):
        model.generate(0)
    with pytest.raises(ValueError, match="expected float audio"):
        quantize(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"logits \(\.\.\., 256\)"):
        bits_per_sample(torch.zeros(3, 10), torch.zeros(3, dtype=torch.long))
    generator = IncrementalGenerator(model, 2, None, 1)
    with pytest.raises(ValueError, match=r"one level per item \(2,\)"):
        generator.append(torch.zeros(3, dtype=torch.long))
    generator.next_logits()
    generator.append(torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="all 1 samples are generated"):
        generator.next_logits()


def test_the_code_initialisation_option():
    torch.manual_seed(0)
    config = replace(TINY_3, name="code-init", initialisation="code")
    model = SampleRnn(config)
    for tier in model.tiers:
        dim = config.rnn_dim
        candidate = tier.rnn.weight_hh_l0[2 * dim :]
        # Orthogonal: its rows are orthonormal.
        torch.testing.assert_close(candidate @ candidate.T, torch.eye(dim), atol=1e-5, rtol=0)
        assert tier.rnn.weight_ih_l0.abs().max() <= math.sqrt(3 / tier.rnn.input_size)
        assert all(not bias.any() for name, bias in tier.rnn.named_parameters() if "bias" in name)
        assert tier.upsample.weight.abs().max() <= math.sqrt(6 / dim)
    output = model.sample_mlp.head[-1]
    assert output.weight.abs().max() <= math.sqrt(3 / config.mlp_dim) and not output.bias.any()
    lstm = SampleRnn(replace(config, rnn="lstm"))
    forget = lstm.tiers[0].rnn.bias_ih_l0[config.rnn_dim : 2 * config.rnn_dim]
    assert torch.all(forget == 3.0)  # kept through the zeroed biases


def test_weight_norm_reparametrises_the_maps_outside_the_rnns():
    model = SampleRnn(replace(CONDITIONAL, name="wn", weight_norm=True))
    normalised = [
        name for name, module in model.named_modules() if hasattr(module, "parametrizations")
    ]
    assert "tiers.0.frame_input" in normalised and "sample_mlp.window_input" in normalised
    assert "condition_input" in normalised and "tiers.0.upsample" in normalised
    assert not any(name.endswith(".rnn") for name in normalised)
    assert SampleRnn(CONDITIONAL).state_dict().keys() != model.state_dict().keys()
