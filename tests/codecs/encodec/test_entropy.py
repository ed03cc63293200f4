"""EnCodec's entropy-coding LM: equality with the official LMModel, exact code round trips
through the range coder, and the training loss. Its transformer's streaming and causal window
are tested in tests/codecs/modules/test_transformer.py."""

from __future__ import annotations

import math
import time

import pytest
import torch
from bench.codecs.bitstream import BitstreamError
from bench.codecs.encodec.entropy import EntropyLM, decode_codes, encode_codes, lm_loss
from helpers import official_encodec

# These tensors are tiny: extra threads only contend (badly on a busy CI machine).
pytestmark = pytest.mark.usefixtures("single_thread")

CARD = 1024


def _tiny_lm(n_q: int = 4, past_context: int = 6, seed: int = 0) -> EntropyLM:
    """The real architecture at toy sizes: fast, and a window shorter than the test clips."""
    torch.manual_seed(seed)
    return EntropyLM(
        n_q=n_q, card=CARD, dim=32, num_heads=4, num_layers=2, past_context=past_context
    )


def _lm_inputs(batch: int, n_q: int, frames: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(CARD + 1, (batch, n_q, frames), generator=generator)


def _sharp_lm(n_q: int, favourites: list[int]) -> EntropyLM:
    """The default LM made nearly certain of one code per codebook, whatever came before."""
    lm = EntropyLM(n_q=n_q)
    with torch.no_grad():
        for head, favourite in zip(lm.linears, favourites, strict=True):
            head.weight.zero_()
            head.bias.zero_()
            head.bias[favourite] = 30.0
    return lm


# The model


def test_output_is_a_distribution_per_codebook_and_step():
    lm = _tiny_lm(n_q=4)
    probabilities, states, offset = lm(_lm_inputs(2, 3, 9), None, 5)
    assert probabilities.shape == (2, CARD, 3, 9)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2, 3, 9))
    assert offset == 14 and len(states) == 2
    with pytest.raises(ValueError, match="1..4 codebooks"):
        lm(_lm_inputs(2, 5, 9))
    with pytest.raises(ValueError, match="divisible"):
        EntropyLM(dim=30, num_heads=8)


# The official LMModel


@pytest.fixture(scope="module")
def official_lm_class() -> type[torch.nn.Module]:
    return official_encodec().model.LMModel


def test_default_config_loads_the_official_24khz_lm_state_dict(official_lm_class):
    """The official ``get_lm_model`` config (n_q 32, past_context int(3.5 * 75)), same keys."""
    official = official_lm_class(n_q=32, card=CARD, num_layers=5, dim=200, past_context=262)
    ours = EntropyLM()
    assert ours.load_state_dict(official.state_dict()).missing_keys == []
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for p in official.parameters()
    )


def test_same_probabilities_as_the_official_lm(official_lm_class):
    torch.manual_seed(0)
    official = official_lm_class(n_q=8, card=CARD, dim=200, past_context=10).eval()
    # Biases and LayerNorm affines start at 0 and 1; perturb them so a dropped one would show.
    with torch.no_grad():
        for name, parameter in official.named_parameters():
            if name.endswith("bias") or "norm" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    ours = EntropyLM(n_q=8, card=CARD, dim=200, past_context=10)
    ours.load_state_dict(official.state_dict())
    inputs = _lm_inputs(2, 8, 50)
    with torch.inference_mode():
        expected, _, _ = official(inputs, None, 7)
        got, _, offset = ours(inputs, None, 7)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        assert offset == 57
        # Frame by frame, and with fewer codebooks than the model has, as at low bitrates.
        official_states, ours_states, offsets = None, None, (0, 0)
        for t in range(50):
            frame = inputs[:, :3, t : t + 1]
            expected, official_states, official_offset = official(
                frame, official_states, offsets[0]
            )
            got, ours_states, ours_offset = ours(frame, ours_states, offsets[1])
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
            offsets = (official_offset, ours_offset)


# Coding


@pytest.mark.parametrize("n_q", [2, 8])
def test_codes_round_trip_with_an_untrained_lm(n_q):
    torch.manual_seed(n_q)
    lm = EntropyLM(n_q=8)
    codes = torch.randint(CARD, (n_q, 50))
    data = encode_codes(lm, codes)
    assert torch.equal(decode_codes(lm, data, n_q, 50), codes)
    assert encode_codes(lm, codes) == data  # deterministic
    # Random codes cost about their 10 bits each, plus the mismatch with a random LM.
    assert 8 * len(data) > n_q * 50 * 10


@pytest.mark.parametrize("n_q", [2, 8])
def test_codes_round_trip_with_a_sharp_lm_in_far_fewer_bits(n_q):
    generator = torch.Generator().manual_seed(n_q)
    favourites = torch.randint(CARD, (n_q,), generator=generator)
    lm = _sharp_lm(n_q, favourites.tolist())
    codes = favourites.view(n_q, 1).repeat(1, 50)
    # A few codes the LM deems impossible still go through, at ~23 bits each.
    surprises = torch.rand(codes.shape, generator=generator) < 0.02
    codes[surprises] = torch.randint(CARD, (int(surprises.sum()),), generator=generator)
    data = encode_codes(lm, codes)
    assert torch.equal(decode_codes(lm, data, n_q, 50), codes)
    assert 8 * len(data) < 0.1 * n_q * 50 * 10


def test_decoding_refuses_damaged_or_mismatched_streams():
    torch.manual_seed(0)
    lm = EntropyLM(n_q=4, num_layers=1)
    codes = torch.randint(CARD, (4, 20))
    data = encode_codes(lm, codes)
    with pytest.raises(BitstreamError, match="truncated"):
        decode_codes(lm, data[:-1], 4, 20)
    with pytest.raises(BitstreamError, match="left after the last code"):
        decode_codes(lm, data + b"\x00", 4, 20)
    assert encode_codes(lm, codes[:, :0]) == b""
    assert decode_codes(lm, b"", 4, 0).shape == (4, 0)


def test_coding_rejects_bad_arguments():
    lm = EntropyLM(n_q=2, num_layers=1)
    with pytest.raises(ValueError, match=r"\[0, 1024\)"):
        encode_codes(lm, torch.full((2, 5), CARD))
    with pytest.raises(ValueError, match="integer codes"):
        encode_codes(lm, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="n_q"):
        decode_codes(lm, b"", 3, 5)
    with pytest.raises(ValueError, match="float32 on the CPU"):
        encode_codes(lm.double(), torch.zeros(2, 5, dtype=torch.long))


def test_coding_speed_report(capsys):
    """Frames per second of the default LM at n_q = 8 (6 kbps at 24 kHz); printed only."""
    torch.manual_seed(0)
    lm = EntropyLM(n_q=32)
    codes = torch.randint(CARD, (8, 150))
    encode_codes(lm, codes[:, :5])  # warm-up
    start = time.perf_counter()
    data = encode_codes(lm, codes)
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decode_codes(lm, data, 8, 150)
    decode_seconds = time.perf_counter() - start
    assert torch.equal(decoded, codes)
    with capsys.disabled():
        print(
            "\nentropy coding, n_q 8, one thread: "
            f"encode {150 / encode_seconds:.0f} frames/s, "
            f"decode {150 / decode_seconds:.0f} frames/s (real time: 75)"
        )


# Training


def test_lm_loss_is_the_cross_entropy_of_next_codes():
    lm = _tiny_lm()
    codes = torch.randint(CARD, (2, 4, 12), generator=torch.Generator().manual_seed(1))
    loss = lm_loss(lm, codes, max_offset=1)  # offset 0
    inputs = torch.cat([torch.zeros(2, 4, 1, dtype=torch.long), codes[..., :-1] + 1], dim=-1)
    probabilities, _, _ = lm(inputs)
    expected = -probabilities.gather(1, codes.unsqueeze(1)).log().mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is not None for p in lm.parameters())
    # The offset is random but reproducible.
    first = lm_loss(lm, codes, generator=torch.Generator().manual_seed(3))
    again = lm_loss(lm, codes, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    with pytest.raises(ValueError, match="integer codes"):
        lm_loss(lm, codes.float())


def test_training_shrinks_the_coded_size_to_the_loss():
    """A few steps on a predictable sequence: the loss falls, and the range-coded size matches
    the cross-entropy, which checks that training and coding shift the inputs alike."""
    lm = _tiny_lm(n_q=2)
    # Each codebook cycles through 5 codes, so the next code follows from the previous one.
    cycle = torch.tensor([[3, 141, 59, 265, 358], [979, 323, 846, 264, 338]])
    codes = cycle.repeat(1, 8).unsqueeze(0)  # (1, 2, 40)
    optimizer = torch.optim.Adam(lm.parameters(), lr=3e-3)
    first_loss = lm_loss(lm, codes, max_offset=1).item()
    for _ in range(60):
        optimizer.zero_grad()
        loss = lm_loss(lm, codes, max_offset=1)
        loss.backward()
        optimizer.step()
    final_loss = lm_loss(lm, codes, max_offset=1).item()
    assert final_loss < 0.25 * first_loss
    coded_bits = 8 * len(encode_codes(lm, codes[0]))
    expected_bits = final_loss / math.log(2) * codes.numel()
    assert abs(coded_bits - expected_bits) <= 0.1 * expected_bits + 40
