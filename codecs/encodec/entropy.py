"""EnCodec's entropy coding of RVQ codes: a small streaming transformer LM and a range coder.

Follows Défossez et al. (2022), "High Fidelity Neural Audio Compression", Sec. 3.3, and the
language model of the official EnCodec code (``LMModel``): 5 post-norm transformer layers with
an input LayerNorm, d = 200, 8 heads, FFN 800, GELU, sinusoidal positions, a causal window of
3.5 s (262 frames at 75 Hz): the shared ``bench.codecs.modules.transformer``. Its input at
step t is the sum of one embedding per codebook of the codes at t - 1 (shifted by one, 0
standing for "no previous frame"), and one linear head per codebook gives independent
distributions over the next codes.

The module and parameter names are those of the official model, so an official state dict loads
with ``EntropyLM.load_state_dict`` as is (``transformer.norm_in``, ``transformer.layers.{i}``
with ``self_attn.in_proj_weight``/``in_proj_bias``/``out_proj``, ``linear1``, ``linear2``,
``norm1``, ``norm2``; ``emb.{k}``; ``linears.{k}``), and gives the same probabilities.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from bench.codecs.bitstream import BitstreamError
from bench.codecs.modules.range_coder import (
    BitReader,
    BitWriter,
    RangeDecoder,
    RangeEncoder,
    build_stable_quantized_cdf,
)
from bench.codecs.modules.transformer import StreamingTransformer, TransformerStates
from torch import nn


class EntropyLM(nn.Module):
    """Transformer LM over RVQ frames that gives, per codebook, the next code's distribution.

    Args:
        n_q: number of codebooks it can model; fewer (the first ones) can be passed.
        card: codebook size.
        dim: transformer width.
        num_heads: attention heads.
        num_layers: transformer layers.
        hidden_scale: FFN width as a multiple of ``dim``.
        past_context: frames before the current one that each layer's attention sees,
            ``int(3.5 * frame_rate)`` in the official models (262 at 24 kHz, 525 at 48 kHz).
        max_period: longest period of the sinusoidal positions, in frames.
    """

    def __init__(
        self,
        n_q: int = 32,
        card: int = 1024,
        dim: int = 200,
        num_heads: int = 8,
        num_layers: int = 5,
        hidden_scale: float = 4.0,
        past_context: int = 262,
        max_period: float = 10_000.0,
    ) -> None:
        super().__init__()
        self.n_q = n_q
        self.card = card
        self.dim = dim
        self.transformer = StreamingTransformer(
            dim, num_heads, num_layers, hidden_scale, past_context, max_period
        )
        # card + 1 entries: index 0 means "no previous frame" (the first step).
        self.emb = nn.ModuleList(nn.Embedding(card + 1, dim) for _ in range(n_q))
        self.linears = nn.ModuleList(nn.Linear(dim, card) for _ in range(n_q))

    def logits(
        self, indices: torch.Tensor, states: TransformerStates | None = None, offset: int = 0
    ) -> tuple[torch.Tensor, TransformerStates, int]:
        """Like :meth:`forward`, with unnormalised log-probabilities ``(B, card, K, T)``."""
        if indices.dim() != 3 or not 1 <= indices.shape[1] <= self.n_q:
            raise ValueError(
                f"expected indices of shape (batch, 1..{self.n_q} codebooks, frames), "
                f"got {tuple(indices.shape)}"
            )
        num_codebooks = indices.shape[1]
        x = sum(self.emb[k](indices[:, k]) for k in range(num_codebooks))
        out, states, offset = self.transformer(x, states, offset)
        logits = torch.stack([self.linears[k](out) for k in range(num_codebooks)], dim=1)
        return logits.permute(0, 3, 1, 2), states, offset

    def forward(
        self, indices: torch.Tensor, states: TransformerStates | None = None, offset: int = 0
    ) -> tuple[torch.Tensor, TransformerStates, int]:
        """Distributions of the codes at each step given the codes before it.

        Args:
            indices: ``(B, K, T)`` codes of the *previous* step plus 1, with 0 where there is
                none (step 0 of a stream); ``K <= n_q``.
            states: what a previous call returned, to continue its stream; ``None`` starts one.
            offset: position of the first frame (the previous call's returned offset, or a
                random one in training).

        Returns:
            ``(probabilities (B, card, K, T), states, offset + T)``.
        """
        logits, states, offset = self.logits(indices, states, offset)
        return torch.softmax(logits, dim=1), states, offset


def _shifted_inputs(codes: torch.Tensor) -> torch.Tensor:
    """``(B, K, T)`` codes -> the LM inputs: 0 at step 0, then the codes of t - 1 plus 1."""
    return F.pad(codes[..., :-1] + 1, (1, 0))


def lm_loss(
    lm: EntropyLM,
    codes: torch.Tensor,
    max_offset: int = 2**15,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cross-entropy (nats per code, averaged over batch, codebooks and frames) of ``codes``.

    Args:
        lm: the model to train.
        codes: ``(B, K, T)`` integer codes in ``[0, card)``, ``K <= lm.n_q``.
        max_offset: the first position is drawn uniformly from ``[0, max_offset)``. Coding
            runs over whole files, far longer than the training excerpts, so the model must
            not rely on absolute positions; the default covers about 7 min at 75 Hz.
        generator: for a reproducible offset.

    Divide by ``ln 2`` for bits per code, the coded size the LM would reach.
    """
    if codes.dim() != 3 or codes.dtype.is_floating_point:
        raise ValueError(f"expected integer codes (batch, codebooks, frames), got {codes.shape}")
    offset = int(torch.randint(max_offset, (), generator=generator))
    logits, _, _ = lm.logits(_shifted_inputs(codes), None, offset)
    return F.cross_entropy(logits, codes)


# Why the decoder rebuilds the encoder's CDFs bit for bit: both get them from _frame_cdfs, on
# the CPU in float32 under inference_mode, on one thread, with the same module calls on tensors
# of the same shapes in the same order (one frame at a time, the cache growing identically),
# and IEEE float operations are deterministic for a given kernel and input. The CDF is then a
# pure function of those floats, and the range coder is exact integer arithmetic. What could
# break it: a different kernel for the same call, i.e. another torch build, CPU instruction set
# (AVX2 vs AVX-512) or BLAS, or another device or dtype. The encoder must not compute all
# frames in one offline pass either: batched matmuls round differently from the frame-by-frame
# ones. Rounding the probabilities down to `roundoff` makes a mismatch rarer but cannot exclude
# it (a value near a rounding boundary still flips), so a stream is only guaranteed to decode
# with the same software on the same kind of machine, as with the official EnCodec.
@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the previous count.

    A thread count could change how a kernel splits its sums, and so the CDFs; and the
    per-frame tensors are tiny, so threads only add synchronisation (tens of times slower on
    a busy machine). The setting is process-wide while coding runs.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_cpu_float32(lm: EntropyLM) -> None:
    parameter = next(lm.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        raise ValueError(
            "entropy coding runs the LM in float32 on the CPU so that the decoder rebuilds "
            f"the same CDFs; got {parameter.dtype} on {parameter.device}"
        )


def _frame_cdfs(
    lm: EntropyLM, previous: torch.Tensor, states: TransformerStates | None, offset: int
) -> tuple[list[list[int]], TransformerStates, int]:
    """One LM step: ``previous`` ``(1, K, 1)`` inputs -> K quantized CDFs as lists."""
    probabilities, states, offset = lm(previous, states, offset)
    cdfs = build_stable_quantized_cdf(probabilities[0, :, :, 0].T)
    return cdfs.tolist(), states, offset


@_one_thread()
@torch.inference_mode()
def encode_codes(lm: EntropyLM, codes: torch.Tensor) -> bytes:
    """Range-code ``(K, T)`` codes frame by frame under ``lm``'s predictions.

    ``K <= lm.n_q`` and ``T`` are not stored: :func:`decode_codes` needs them.
    """
    _check_cpu_float32(lm)
    if codes.dim() != 2 or codes.dtype.is_floating_point or not 1 <= len(codes) <= lm.n_q:
        raise ValueError(
            f"expected integer codes (1..{lm.n_q} codebooks, frames), "
            f"got {codes.dtype} of shape {tuple(codes.shape)}"
        )
    if codes.numel() and not 0 <= int(codes.min()) <= int(codes.max()) < lm.card:
        raise ValueError(f"codes must lie in [0, {lm.card})")
    num_codebooks = len(codes)
    codes = codes.to("cpu", torch.long)
    writer = BitWriter()
    encoder = RangeEncoder(writer)
    previous = torch.zeros(1, num_codebooks, 1, dtype=torch.long)
    states, offset = None, 0
    for frame in codes.T:
        cdfs, states, offset = _frame_cdfs(lm, previous, states, offset)
        for symbol, cdf in zip(frame.tolist(), cdfs, strict=True):
            encoder.push(symbol, cdf)
        previous = (frame + 1).view(1, num_codebooks, 1)
    encoder.flush()
    return writer.getvalue()


@_one_thread()
@torch.inference_mode()
def decode_codes(lm: EntropyLM, data: bytes, n_q: int, num_frames: int) -> torch.Tensor:
    """Inverse of :func:`encode_codes`: returns ``(n_q, num_frames)`` ``int64`` codes.

    Raises:
        BitstreamError: ``data`` is truncated, corrupt or longer than the codes it holds.
    """
    _check_cpu_float32(lm)
    if not 1 <= n_q <= lm.n_q or num_frames < 0:
        raise ValueError(f"need 1 <= n_q <= {lm.n_q} and num_frames >= 0, got {n_q}, {num_frames}")
    reader = BitReader(data)
    decoder = RangeDecoder(reader)
    codes = torch.empty(n_q, num_frames, dtype=torch.long)
    previous = torch.zeros(1, n_q, 1, dtype=torch.long)
    states, offset = None, 0
    for t in range(num_frames):
        cdfs, states, offset = _frame_cdfs(lm, previous, states, offset)
        codes[:, t] = torch.tensor([decoder.pull(cdf) for cdf in cdfs])
        previous = (codes[:, t] + 1).view(1, n_q, 1)
    # The decoder reads exactly the bits the encoder wrote, so only the zero padding of the
    # last byte may remain.
    if reader.bits_left >= 8:
        raise BitstreamError(f"{reader.bits_left // 8} bytes left after the last code")
    return codes
