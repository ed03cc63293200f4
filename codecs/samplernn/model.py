"""SampleRNN (Mehri et al., "SampleRNN: An Unconditional End-to-End Neural Audio Generation
Model", ICLR 2017): a hierarchy of frame-level RNN tiers over non-overlapping frames and a
sample-level MLP with a softmax over 256 quantization levels, trained by teacher forcing and
sampled one sample at a time.

- **Frame tiers**, top first. Tier ``k`` with frame size ``FS_k`` reads the ``FS_k`` samples
  before its frame, rescaled to [-2, 2], through ``W_x`` (a linear map), adds the
  conditioning from the tier above and runs a GRU (LSTM as an option, forget-gate bias 3) from
  a learned initial state. Its output is upsampled by ``r = FS_k / FS_(k+1)`` learned linear
  maps, ``c_((t-1)r+j) = W_j h_t`` (one ``Linear(d, r*d)`` reshaped), for the tier below.
- **Sample-level MLP.** The ``FS_1`` previous samples (``FS_1`` = the lowest frame size) as
  quantized levels, each embedded, concatenated and mapped to the MLP width (a convolution of
  kernel ``FS_1`` over the embeddings, which is the same map without building the windows),
  plus the upsampled conditioning, then two ReLU layers and a linear map to 256 logits.
- **Quantization.** 8-bit: linear as in the paper, mu-law (mu = 255) as an option. The
  normalisation is FIXED: audio in [-1, 1] full scale maps to the 256 levels, level 128 being
  exactly zero, whatever the file holds. The code's per-sequence min-max would make the
  decoder depend on the whole file, which a codec decoder must not.
- **Conditioning** (for the codec's decoder): a stream of ``condition_dim``-d frames, one per
  ``condition_hop`` samples, held to the top tier's frame rate (each top frame takes the
  stream frame under its centre, :meth:`SampleRnn.align_condition`) and added to the top
  tier's input through a learned linear map.
- **Likelihood.** Cross-entropy in bits per sample, nats x log2 e (:func:`bits_per_sample`).
- **Generation** (:class:`IncrementalGenerator`) starts from a top frame of the zero level,
  runs each tier once per its frame size, keeps what a tier computed until its next frame,
  and computes the first MLP layer as ``FS_1`` table look-ups (the embedding times each
  position's weights, precomputed once per generation). Batched; temperature; a seed.

Choices the paper leaves open or where we follow it against the official code (each is a
config field where the code differs):

- The paper's MLP has a ReLU after its input layer (``input_layer_relu``, unverified: the
  paper says "MLP"); the official Theano code has none there (``input_layer_relu=False``).
- Upsampling maps without bias, as the paper's ``W_j h_t`` (``upsample_bias``: the code's).
- Learned initial states start at zero; every layer keeps PyTorch's default initialisation
  (the paper names none). ``initialisation="code"`` takes the PyTorch port's instead: He
  uniform for ``W_x`` and the ReLU layers of the MLP, LeCun uniform for the RNNs' input maps,
  their recurrent update and reset maps and the output layer, orthogonal for the recurrent
  candidate map, uniform +-sqrt(6 / d) for the upsampling maps, zero biases.
- No weight normalisation by default (the paper does not mention it); ``weight_norm=True``
  reparametrises every linear map and convolution outside the RNNs as the Theano code's
  ``--weight_norm`` flag does (which layers it covers there is unverified).
- The 3-tier code's extra "independent predictions" head is left out (the code does not
  train it).
- Conditioning held (sample-and-hold) rather than interpolated; our choice, not the paper's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

# What its checkpoints carry as their model's name.
NAME = "samplernn"
Q_LEVELS = 256
ZERO_LEVEL = Q_LEVELS // 2
MU = 255.0
LOG2_E = math.log2(math.e)
QUANTIZATIONS = ("linear", "mu-law")
RNNS = ("gru", "lstm")
LSTM_FORGET_BIAS = 3.0
INITIALISATIONS = ("pytorch", "code")


@dataclass(frozen=True)
class SampleRnnConfig:
    """One SampleRNN. ``frame_sizes`` are in samples, top tier first; each divides the one
    above it, and the last is the sample MLP's window ``FS_1``. ``rnn_layers`` gives each frame
    tier's RNN depth. ``condition_dim`` 0 is the unconditional model."""

    name: str
    frame_sizes: tuple[int, ...] = (16,)
    rnn_layers: tuple[int, ...] = (3,)
    rnn_dim: int = 1024
    rnn: str = "gru"
    embedding_dim: int = 256
    mlp_dim: int = 1024
    input_layer_relu: bool = True
    upsample_bias: bool = False
    quantization: str = "linear"
    sample_rate: int = 16_000
    condition_dim: int = 0
    condition_hop: float = 0.0
    initialisation: str = "pytorch"
    weight_norm: bool = False

    def __post_init__(self) -> None:
        if not self.frame_sizes or any(size < 1 for size in self.frame_sizes):
            raise ValueError(f"expected positive frame sizes, got {self.frame_sizes}")
        for upper, lower in pairwise(self.frame_sizes):
            if upper % lower:
                raise ValueError(
                    f"expected each frame size to divide the one above, got {self.frame_sizes}"
                )
        if len(self.rnn_layers) != len(self.frame_sizes) or min(self.rnn_layers) < 1:
            raise ValueError(
                f"expected one positive RNN depth per frame tier ({len(self.frame_sizes)}), "
                f"got rnn_layers={self.rnn_layers}"
            )
        if self.rnn not in RNNS:
            raise ValueError(f"expected rnn in {RNNS}, got {self.rnn!r}")
        if self.initialisation not in INITIALISATIONS:
            raise ValueError(
                f"expected initialisation in {INITIALISATIONS}, got {self.initialisation!r}"
            )
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"expected quantization in {QUANTIZATIONS}, got {self.quantization!r}")
        if self.condition_dim < 0 or (self.condition_dim > 0) != (self.condition_hop > 0):
            raise ValueError(
                "expected condition_dim > 0 with a condition_hop > 0 (samples per condition "
                f"frame), or both 0; got {self.condition_dim} and {self.condition_hop}"
            )

    @property
    def history(self) -> int:
        """Samples before the first target: the top tier's first frame reads them."""
        return self.frame_sizes[0]

    @property
    def upsampling(self) -> tuple[int, ...]:
        """Each frame tier's ratio to the tier below (the last: to samples)."""
        return tuple(upper // lower for upper, lower in pairwise(self.frame_sizes)) + (
            self.frame_sizes[-1],
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SampleRnnConfig:
        return cls(**{key: tuple(v) if isinstance(v, list) else v for key, v in data.items()})


CONFIGS = {
    # The paper's best settings (models.md §5): frame 16 and a 3-layer GRU of 1024 ...
    "2-tier": SampleRnnConfig(name="2-tier"),
    # ... and big frame 8, frame 2, one GRU layer of 1024 per tier.
    "3-tier": SampleRnnConfig(name="3-tier", frame_sizes=(8, 2), rnn_layers=(1, 1)),
    # CPU sizes on the same code path, for tests and the demo checkpoints.
    "tiny": SampleRnnConfig(name="tiny", rnn_layers=(1,), rnn_dim=64, embedding_dim=16, mlp_dim=64),
    # Twice the tiny width: the demo codec decoder, which must carry the conditioning too.
    "small": SampleRnnConfig(
        name="small", rnn_layers=(1,), rnn_dim=128, embedding_dim=16, mlp_dim=128
    ),
    "tiny-3-tier": SampleRnnConfig(
        name="tiny-3-tier",
        frame_sizes=(8, 2),
        rnn_layers=(1, 1),
        rnn_dim=64,
        embedding_dim=16,
        mlp_dim=64,
    ),
}


def quantize(audio: torch.Tensor, quantization: str = "linear") -> torch.Tensor:
    """Audio in [-1, 1] (clipped beyond) -> int64 levels in [0, 255], level 128 = 0.0.

    Linear: round(x * 128) + 128. Mu-law: the same on the mu-law companded value.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"expected quantization in {QUANTIZATIONS}, got {quantization!r}")
    if not torch.is_floating_point(audio):
        raise ValueError(f"expected float audio in [-1, 1], got dtype {audio.dtype}")
    audio = audio.clamp(-1.0, 1.0)
    if quantization == "mu-law":
        audio = torch.sign(audio) * torch.log1p(MU * audio.abs()) / math.log1p(MU)
    levels = torch.round(audio * ZERO_LEVEL).long() + ZERO_LEVEL
    return levels.clamp(0, Q_LEVELS - 1)


def dequantize(levels: torch.Tensor, quantization: str = "linear") -> torch.Tensor:
    """Levels in [0, 255] -> float32 audio in [-1, 127/128] (the inverse of :func:`quantize`)."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"expected quantization in {QUANTIZATIONS}, got {quantization!r}")
    audio = (levels.float() - ZERO_LEVEL) / ZERO_LEVEL
    if quantization == "mu-law":
        audio = torch.sign(audio) * torch.expm1(audio.abs() * math.log1p(MU)) / MU
    return audio


def lecun_uniform_(weight: torch.Tensor) -> None:
    """LeCun's uniform initialisation, U(-sqrt(3 / fan_in), sqrt(3 / fan_in)), in place."""
    bound = math.sqrt(3.0 / weight[0].numel())
    nn.init.uniform_(weight, -bound, bound)


def rescale(levels: torch.Tensor) -> torch.Tensor:
    """Levels -> the frame tiers' real inputs in [-2, 2) (the paper's rescaling)."""
    return 4.0 * levels.float() / Q_LEVELS - 2.0


def bits_per_sample(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood in bits per sample: cross-entropy (nats) x log2 e.

    ``logits`` ``(..., 256)``, ``targets`` the levels ``(...)``.
    """
    if logits.shape[:-1] != targets.shape or logits.shape[-1] != Q_LEVELS:
        raise ValueError(
            f"expected logits (..., {Q_LEVELS}) over targets (...), got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    nats = F.cross_entropy(logits.reshape(-1, Q_LEVELS), targets.reshape(-1))
    return nats * LOG2_E


class FrameTier(nn.Module):
    """One frame-level tier: ``W_x`` over a frame plus the conditioning from above, an RNN from
    a learned initial state, and ``r`` learned linear upsampling maps to ``out_dim``.

    The state is one tensor: ``(layers, batch, dim)`` for a GRU, ``(2, layers, batch, dim)``
    (hidden and cell) for an LSTM.
    """

    def __init__(self, config: SampleRnnConfig, tier: int, out_dim: int) -> None:
        super().__init__()
        dim, layers = config.rnn_dim, config.rnn_layers[tier]
        self.frame_size, self.ratio, self.out_dim = (
            config.frame_sizes[tier],
            config.upsampling[tier],
            out_dim,
        )
        self.lstm = config.rnn == "lstm"
        self.frame_input = nn.Linear(self.frame_size, dim)
        self.rnn = (nn.LSTM if self.lstm else nn.GRU)(dim, dim, layers, batch_first=True)
        self.set_forget_bias()
        state_shape = (2, layers, dim) if self.lstm else (layers, dim)
        self.initial_state = nn.Parameter(torch.zeros(state_shape))
        self.upsample = nn.Linear(dim, self.ratio * out_dim, bias=config.upsample_bias)

    @torch.no_grad()
    def set_forget_bias(self) -> None:
        """An LSTM's forget-gate bias at 3 (a GRU has none). PyTorch's gate order is input,
        forget, cell, output: the forget bias is the second quarter (in one of the two bias
        vectors, which add up)."""
        if not self.lstm:
            return
        dim = self.rnn.hidden_size
        for name, bias in self.rnn.named_parameters():
            if name.startswith("bias_ih"):
                bias[dim : 2 * dim] = LSTM_FORGET_BIAS

    @torch.no_grad()
    def code_initialisation(self) -> None:
        """The PyTorch port's initialisation of this tier; see the module docstring."""
        nn.init.kaiming_uniform_(self.frame_input.weight, nonlinearity="relu")
        nn.init.zeros_(self.frame_input.bias)
        dim = self.rnn.hidden_size
        gates = 4 if self.lstm else 3
        candidate = 2  # GRU (reset, update, new) and LSTM (input, forget, cell, output)
        for name, parameter in self.rnn.named_parameters():
            if name.startswith("bias"):
                nn.init.zeros_(parameter)
                continue
            for gate in range(gates):
                block = parameter[gate * dim : (gate + 1) * dim]
                if name.startswith("weight_hh") and gate == candidate:
                    nn.init.orthogonal_(block)
                else:
                    lecun_uniform_(block)
        self.set_forget_bias()
        bound = math.sqrt(6.0 / dim)
        nn.init.uniform_(self.upsample.weight, -bound, bound)
        if self.upsample.bias is not None:
            nn.init.zeros_(self.upsample.bias)

    def start(self, batch_size: int) -> torch.Tensor:
        """The learned initial state for ``batch_size`` sequences."""
        state = self.initial_state.unsqueeze(-2)
        return state.expand(*state.shape[:-2], batch_size, state.shape[-1]).contiguous()

    def forward(
        self, frames: torch.Tensor, conditioning: torch.Tensor | None, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``frames`` ``(batch, steps, frame_size)`` levels, ``conditioning`` ``(batch, steps,
        dim)`` or None -> ``((batch, steps * ratio, out_dim), new state)``."""
        inputs = self.frame_input(rescale(frames))
        if conditioning is not None:
            inputs = inputs + conditioning
        if self.lstm:
            outputs, (hidden, cell) = self.rnn(inputs, (state[0], state[1]))
            state = torch.stack([hidden, cell])
        else:
            outputs, state = self.rnn(inputs, state)
        batch, steps, _ = outputs.shape
        return self.upsample(outputs).reshape(batch, steps * self.ratio, self.out_dim), state


class SampleMlp(nn.Module):
    """The sample-level tier: embeddings of the ``window`` previous levels, concatenated and
    mapped to ``dim`` (a kernel-``window`` convolution), plus the conditioning, then the
    ``head``: [ReLU], two ReLU layers and the 256 logits."""

    def __init__(self, config: SampleRnnConfig) -> None:
        super().__init__()
        self.window = config.frame_sizes[-1]
        self.embedding = nn.Embedding(Q_LEVELS, config.embedding_dim)
        self.window_input = nn.Conv1d(config.embedding_dim, config.mlp_dim, self.window, bias=False)
        dim = config.mlp_dim
        self.head = nn.Sequential(
            nn.ReLU() if config.input_layer_relu else nn.Identity(),
            nn.Linear(dim, dim),
            nn.ReLU(),
            nn.Linear(dim, dim),
            nn.ReLU(),
            nn.Linear(dim, Q_LEVELS),
        )

    @torch.no_grad()
    def code_initialisation(self) -> None:
        """The PyTorch port's initialisation of the MLP; see the module docstring."""
        nn.init.kaiming_uniform_(self.window_input.weight, nonlinearity="relu")
        *hidden, output = [layer for layer in self.head if isinstance(layer, nn.Linear)]
        for layer in hidden:
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        lecun_uniform_(output.weight)
        nn.init.zeros_(output.bias)

    def forward(self, levels: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        """``levels`` ``(batch, steps + window - 1)``, ``conditioning`` ``(batch, steps, dim)``
        -> logits ``(batch, steps, 256)``, step ``t`` from levels ``t .. t + window - 1``."""
        embedded = self.embedding(levels).transpose(1, 2)
        return self.head(self.window_input(embedded).transpose(1, 2) + conditioning)

    def window_tables(self) -> torch.Tensor:
        """``(window * 256, dim)``: row ``j * 256 + q`` is the input layer's response to level
        ``q`` at window position ``j``, so that the input layer is ``window`` look-ups."""
        tables = torch.einsum("qe,dej->jqd", self.embedding.weight, self.window_input.weight)
        return tables.reshape(self.window * Q_LEVELS, -1)


@dataclass(frozen=True)
class SampleRnnOutput:
    """A teacher-forced pass: ``logits`` ``(batch, samples, 256)`` of the targets and each
    frame tier's ``state`` after it (what the next TBPTT chunk of the sequences starts from)."""

    logits: torch.Tensor
    state: tuple[torch.Tensor, ...]


class SampleRnn(nn.Module):
    """The SampleRNN network of ``config``; see the module docstring."""

    def __init__(self, config: SampleRnnConfig) -> None:
        super().__init__()
        self.config = config
        below = [config.rnn_dim] * (len(config.frame_sizes) - 1) + [config.mlp_dim]
        self.tiers = nn.ModuleList(
            FrameTier(config, tier, out_dim) for tier, out_dim in enumerate(below)
        )
        self.sample_mlp = SampleMlp(config)
        self.condition_input = (
            nn.Linear(config.condition_dim, config.rnn_dim) if config.condition_dim else None
        )
        if config.initialisation == "code":
            for part in (*self.tiers, self.sample_mlp):
                part.code_initialisation()
        if config.weight_norm:
            for module in self.modules():
                if isinstance(module, nn.Linear | nn.Conv1d):
                    nn.utils.parametrizations.weight_norm(module)

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """Every tier's learned initial state: where each sequence starts."""
        return tuple(tier.start(batch_size) for tier in self.tiers)

    def top_frames(self, num_samples: int) -> int:
        """Top-tier frames that cover ``num_samples`` generated samples."""
        return -(-num_samples // self.config.frame_sizes[0])

    def align_condition(self, stream: torch.Tensor, num_samples: int) -> torch.Tensor:
        """A conditioning stream ``(batch, frames, condition_dim)`` at ``condition_hop`` samples
        per frame -> one frame per top-tier frame of ``num_samples`` samples ``(batch,
        top_frames, condition_dim)``: the stream frame under each top frame's centre, the last
        one repeated where the stream is short."""
        config = self.config
        if self.condition_input is None:
            raise ValueError(f"the config {config.name!r} is unconditional (condition_dim 0)")
        if stream.dim() != 3 or stream.shape[-1] != config.condition_dim or stream.shape[1] < 1:
            raise ValueError(
                f"expected a condition stream (batch, frames >= 1, {config.condition_dim}), "
                f"got {tuple(stream.shape)}"
            )
        centres = (torch.arange(self.top_frames(num_samples)) + 0.5) * config.frame_sizes[0]
        index = torch.floor(centres / config.condition_hop).long().clamp(max=stream.shape[1] - 1)
        return stream[:, index]

    def _check_condition(self, condition: torch.Tensor | None, batch: int, frames: int) -> None:
        config = self.config
        if self.condition_input is None:
            if condition is not None:
                raise ValueError(f"the config {config.name!r} is unconditional; got a condition")
            return
        expected = (batch, frames, config.condition_dim)
        if condition is None or tuple(condition.shape) != expected:
            got = None if condition is None else tuple(condition.shape)
            raise ValueError(
                f"expected a condition aligned to the top tier {expected} "
                f"(see align_condition), got {got}"
            )

    def forward(
        self,
        levels: torch.Tensor,
        condition: torch.Tensor | None = None,
        state: tuple[torch.Tensor, ...] | None = None,
    ) -> SampleRnnOutput:
        """Teacher forcing. ``levels`` ``(batch, history + samples)`` int64 in [0, 255], where
        ``history`` is the top frame size and ``samples`` a multiple of it; the targets are
        ``levels[:, history:]``. ``condition`` ``(batch, samples / top frame, condition_dim)``
        (see :meth:`align_condition`). ``state`` continues a sequence (None: its start)."""
        config = self.config
        history = config.history
        if levels.dim() != 2 or levels.dtype != torch.long:
            raise ValueError(
                f"expected int64 levels (batch, samples), got {levels.dtype} {tuple(levels.shape)}"
            )
        samples = levels.shape[1] - history
        if samples <= 0 or samples % history:
            raise ValueError(
                f"expected {history} history samples plus a positive multiple of {history}, "
                f"got {levels.shape[1]} samples"
            )
        if levels.min() < 0 or levels.max() >= Q_LEVELS:
            raise ValueError(
                f"expected levels in [0, {Q_LEVELS - 1}], got {levels.min()}..{levels.max()}"
            )
        batch = levels.shape[0]
        self._check_condition(condition, batch, samples // history)
        state = self.initial_state(batch) if state is None else state
        conditioning = None if condition is None else self.condition_input(condition)
        new_state = []
        for tier, tier_state in zip(self.tiers, state, strict=True):
            size = tier.frame_size
            frames = levels[:, history - size : history + samples - size]
            conditioning, tier_state = tier(
                frames.reshape(batch, samples // size, size), conditioning, tier_state
            )
            new_state.append(tier_state)
        window = self.sample_mlp.window
        logits = self.sample_mlp(levels[:, history - window : -1], conditioning)
        return SampleRnnOutput(logits, tuple(new_state))

    def targets(self, levels: torch.Tensor) -> torch.Tensor:
        """What :meth:`forward` of ``levels`` predicts: all but the history."""
        return levels[:, self.config.history :]

    @torch.no_grad()
    def sequence_bits(
        self,
        levels: torch.Tensor,
        condition: torch.Tensor | None = None,
        chunk_samples: int = 16_384,
    ) -> float:
        """Total NLL in bits of ``levels[:, history:]`` (teacher forcing): the exact forward
        pass over the whole sequence, run ``chunk_samples`` at a time (rounded down to whole
        top frames) with the state carried, so that the logits' memory stays bounded.
        ``levels`` and ``condition`` as in :meth:`forward`."""
        history = self.config.history
        chunk = max(history, chunk_samples // history * history)
        samples = levels.shape[1] - history
        state, nats = None, 0.0
        for start in range(0, samples, chunk):
            length = min(chunk, samples - start)
            window = levels[:, start : start + history + length]
            given = None
            if condition is not None:
                given = condition[:, start // history : (start + length) // history]
            output = self(window, given, state=state)
            nats += F.cross_entropy(
                output.logits.reshape(-1, Q_LEVELS),
                self.targets(window).reshape(-1),
                reduction="sum",
            ).item()
            state = output.state
        return nats * LOG2_E

    @torch.no_grad()
    def generate(
        self,
        num_samples: int,
        batch_size: int = 1,
        condition: torch.Tensor | None = None,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> torch.Tensor:
        """Sample ``(batch, num_samples)`` levels, from a top frame of the zero level.

        ``condition``: aligned to the top tier as in :meth:`forward`, ``(batch,
        ceil(num_samples / top frame), condition_dim)``; it sets the batch size. Each level is
        drawn from ``softmax(logits / temperature)`` by inverse CDF with uniforms from a
        generator seeded by ``seed``, so a seed gives the same samples.
        """
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"expected a positive number of samples, got {num_samples!r}")
        if not temperature > 0:
            raise ValueError(f"expected a temperature > 0, got {temperature!r}")
        if condition is not None:
            batch_size = condition.shape[0]
        uniforms = torch.rand(
            num_samples, batch_size, 1, generator=torch.Generator().manual_seed(seed)
        )
        levels = torch.empty(batch_size, num_samples, dtype=torch.long)
        # Weight-normalised maps compute their weight once for the whole generation, not at
        # every step.
        with parametrize.cached():
            generator = IncrementalGenerator(self, batch_size, condition, num_samples)
            for step in range(num_samples):
                probabilities = torch.softmax(generator.next_logits() / temperature, dim=-1)
                drawn = torch.searchsorted(probabilities.cumsum(-1), uniforms[step])
                drawn = drawn.clamp_(max=Q_LEVELS - 1)[:, 0]
                generator.append(drawn)
                levels[:, step] = drawn
        return levels


class IncrementalGenerator:
    """SampleRNN's state while generating: each frame tier runs once per its frame size, on
    the frame just completed, and its upsampled output serves the next ``ratio`` steps of the
    tier below; the sample MLP's input layer is ``window`` table look-ups.

    Call :meth:`next_logits` for the logits of the next sample, then :meth:`append` with the
    level chosen (sampled, or a given signal: teacher forcing, step by step).
    """

    def __init__(
        self,
        model: SampleRnn,
        batch_size: int,
        condition: torch.Tensor | None,
        num_samples: int,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"expected a batch size >= 1, got {batch_size}")
        model._check_condition(condition, batch_size, model.top_frames(num_samples))
        self.model = model
        self.num_samples = num_samples
        self.history = torch.full((batch_size, model.config.history), ZERO_LEVEL)
        self.state = list(model.initial_state(batch_size))
        # Computed once for the whole generation: the projected top-tier conditioning and the
        # input layer's tables (what the sample MLP would otherwise recompute every sample).
        with torch.no_grad():
            self.conditioning = None if condition is None else model.condition_input(condition)
            self.tables = model.sample_mlp.window_tables()
        window = model.sample_mlp.window
        self.table_offsets = torch.arange(window) * Q_LEVELS
        # Each tier's upsampled output for its current frame: (batch, ratio, out_dim).
        self.tier_outputs: list[torch.Tensor | None] = [None] * len(model.tiers)
        self.position = 0

    @torch.no_grad()
    def next_logits(self) -> torch.Tensor:
        """Logits ``(batch, 256)`` of sample ``position``."""
        if self.position >= self.num_samples:
            raise ValueError(f"all {self.num_samples} samples are generated already")
        position = self.position
        model, history = self.model, self.history
        for index, tier in enumerate(model.tiers):
            size = tier.frame_size
            if position % size:
                continue  # between this tier's frames: its output of the last frame serves
            if index > 0:
                step = (position // size) % model.tiers[index - 1].ratio
                conditioning = self.tier_outputs[index - 1][:, step : step + 1]
            elif self.conditioning is not None:
                frame = position // size
                conditioning = self.conditioning[:, frame : frame + 1]
            else:
                conditioning = None
            self.tier_outputs[index], self.state[index] = tier(
                history[:, None, -size:], conditioning, self.state[index]
            )
        lowest = self.tier_outputs[-1][:, position % model.tiers[-1].ratio]
        window = model.sample_mlp.window
        first_layer = F.embedding(history[:, -window:] + self.table_offsets, self.tables).sum(1)
        return model.sample_mlp.head(first_layer + lowest)

    def append(self, levels: torch.Tensor) -> None:
        """Take ``levels`` ``(batch,)`` as sample ``position`` and move to the next."""
        if levels.shape != (self.history.shape[0],):
            raise ValueError(
                f"expected one level per item ({self.history.shape[0]},), got {tuple(levels.shape)}"
            )
        self.history = torch.cat([self.history[:, 1:], levels[:, None].long()], dim=1)
        self.position += 1
