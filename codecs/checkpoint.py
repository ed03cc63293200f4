"""Self-describing checkpoints for the neural codecs: named networks plus what made them.

A checkpoint is one ``torch.save`` file holding a dict: the format name and version, the
codec, its networks by name (``"codec"``, and e.g. ``"lm"`` for the entropy-coding LM or a
``"vocoder"``), each with the arguments that build it, its state dict and a SHA-256 over its
tensors; then the training step, the state of a resumable training run (optimisers, loss
balancer), library versions and free-form metadata. Loading checks the format and every
network's hash, so a truncated file, a file for another codec or weights edited after saving
are refused with a message saying which; :func:`load_strictly` checks a network's key set
against the module it loads into.

A network may live in another checkpoint file and be *referenced* (a vocoder shared by several
codecs): the entry then holds the file's path, relative to the referring checkpoint's folder,
the network's name there and its hash when referenced. Loading resolves the reference and
refuses a file whose network changed since.

A network may store its large weight matrices as int8 with one float32 scale per output
channel (symmetric, absolute maximum to 127: the usual weight-only scheme), which halves a
float16 demo again; :func:`int8_weights` picks those matrices. The file then holds the int8
tensors and an ``int8_scales`` dict beside the state dict, the hash covers both, and loading
returns the weights dequantised to float32, so that no codec sees the storage.

Format 1 held a single network (top-level ``config``, ``state_dict`` and ``hash``) and kept the
LM and a training run's state in ``extra_states``; it is still read, upgraded on loading
(:func:`upgrade_format_1`).
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

FORMAT = "codec-bench checkpoint"
VERSION = 2
# A network's file may reference a network of a file that references another...; deeper
# chains than this are taken for a cycle.
MAX_REFERENCE_DEPTH = 8


class CheckpointError(ValueError):
    """A file that is not a valid checkpoint for what asked for it."""


def state_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state dict, in key order."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def int8_weights(state_dict: dict[str, torch.Tensor], min_elements: int = 4096) -> tuple[str, ...]:
    """The keys worth storing as int8: floating matrices and kernels (2 or more dimensions) of
    at least ``min_elements``, except VQ codebooks, whose entries are compared to each other
    by distance, not multiplied, so a per-row scale would move the decision boundaries."""
    return tuple(
        key
        for key, value in state_dict.items()
        if value.is_floating_point()
        and value.ndim >= 2
        and value.numel() >= min_elements
        and "codebook" not in key
    )


def int8_scale(weight: torch.Tensor) -> torch.Tensor:
    """One float32 scale per output channel (dim 0): its largest magnitude over 127; 1 for an
    all-zero channel, whose codes are all 0 anyway. Per channel rather than per tensor because
    output channels of one conv differ in range by orders of magnitude (weight norm's ``v``)."""
    largest = weight.detach().float().abs().reshape(weight.shape[0], -1).amax(dim=1)
    return torch.where(largest > 0, largest / 127, torch.ones_like(largest))


def _per_channel(scale: torch.Tensor, ndim: int) -> torch.Tensor:
    return scale.reshape(-1, *([1] * (ndim - 1)))


def quantize_int8(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``weight`` rounded to int8 steps of ``scale`` (per output channel)."""
    steps = weight.detach().float() / _per_channel(scale, weight.ndim)
    return steps.round().clamp(-127, 127).to(torch.int8)


def dequantize_int8(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 weight that int8 ``codes`` with per-channel ``scale`` stand for; quantising
    it again with the same scale gives the same codes."""
    return codes.float() * _per_channel(scale.float(), codes.ndim)


def stored_state_hash(state_dict: dict[str, torch.Tensor], scales: dict[str, torch.Tensor]) -> str:
    """:func:`state_hash` of a stored state dict, its int8 scales included (under
    ``<key>#int8_scale``; a network without any hashes as its plain state dict)."""
    return state_hash({**state_dict, **{f"{key}#int8_scale": s for key, s in scales.items()}})


@dataclass
class Network:
    """One named network of a checkpoint: the arguments that build it and its weights.

    ``hash`` is filled on saving and loading. ``reference`` is set for a network kept in
    another checkpoint file (see :meth:`Checkpoint.reference`): saving writes the reference,
    not the weights.
    """

    config: dict
    state_dict: dict[str, torch.Tensor]
    hash: str = ""
    reference: NetworkReference | None = None
    # Keys saved as int8, with their per-output-channel scales; ``state_dict`` holds them
    # dequantised. Kept from loading, so that a re-saved or referenced network writes the very
    # bytes (so the hash) it was read from, not a recomputation of them.
    int8_scales: dict[str, torch.Tensor] = field(default_factory=dict)

    def store_as_int8(self, keys: tuple[str, ...]) -> None:
        """Save ``keys`` (see :func:`int8_weights`) as int8 from now on."""
        self.int8_scales = {key: int8_scale(self.state_dict[key]) for key in keys}

    def stored(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The state dict as written to the file, and the scales of its int8 tensors."""
        scales = self.int8_scales
        state = {
            key: quantize_int8(value, scales[key]) if key in scales else value
            for key, value in self.state_dict.items()
        }
        return state, scales

    def stored_hash(self) -> str:
        """The hash of the weights as stored: see :func:`stored_state_hash`."""
        return stored_state_hash(*self.stored())


@dataclass(frozen=True)
class NetworkReference:
    """Where a shared network lives: the checkpoint file (absolute once loaded) and its name
    there."""

    path: Path
    network: str


@dataclass
class Checkpoint:
    """What a checkpoint file holds; see the module docstring."""

    codec: str
    networks: dict[str, Network]
    step: int = 0
    # A resumable training run's state beside its networks: optimisers, the loss balancer.
    training_state: dict[str, dict] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    # The file it was read from (None until saved or loaded), for messages.
    path: Path | None = None

    def network(self, name: str) -> Network:
        """The network called ``name``; :class:`CheckpointError` names those there are."""
        if name not in self.networks:
            raise CheckpointError(
                f"{self.path or 'checkpoint'}: expected a network {name!r}, got "
                f"{', '.join(sorted(self.networks)) or 'none'}"
            )
        return self.networks[name]

    @staticmethod
    def reference(path: str | os.PathLike, name: str) -> Network:
        """Network ``name`` of the checkpoint at ``path``, to be saved as a reference to it."""
        network = load_checkpoint(path).network(name)
        return Network(
            network.config,
            network.state_dict,
            network.hash,
            NetworkReference(Path(path).resolve(), name),
            network.int8_scales,
        )

    def save(self, path: str | os.PathLike) -> dict[str, str]:
        """Write atomically (temporary file, then rename); returns each network's hash."""
        path = Path(path)
        versions = self.versions or {
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        # Plain strings only: weights_only loading refuses other classes (TorchVersion).
        self.versions = {name: str(value) for name, value in versions.items()}
        networks = {}
        for name, network in self.networks.items():
            state, scales = network.stored()
            weights_hash = stored_state_hash(state, scales)
            if network.reference is not None and weights_hash != network.hash:
                # A reference writes no weights: changed ones would be silently dropped.
                raise CheckpointError(
                    f"network {name!r} is shared from {network.reference.path} but was changed "
                    "since it was read; save it inline (reference=None) or into that file"
                )
            network.hash = weights_hash
            if network.reference is None:
                networks[name] = {
                    "config": network.config,
                    "state_dict": state,
                    "hash": network.hash,
                }
                if scales:
                    networks[name]["int8_scales"] = scales
            else:
                # Relative to this file's folder, so that the two files can move together.
                where = os.path.relpath(network.reference.path, path.parent.resolve())
                networks[name] = {
                    "reference": where,
                    "network": network.reference.network,
                    "hash": network.hash,
                }
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "codec": self.codec,
            "networks": networks,
            "step": self.step,
            "training_state": self.training_state,
            "metadata": self.metadata,
            "versions": self.versions,
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            os.fchmod(descriptor, 0o644)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(buffer.getvalue())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.path = path
        return {name: network.hash for name, network in self.networks.items()}


def read_weights_file(path: str | os.PathLike) -> object:
    """``torch.load`` of a weights file without running code from it (``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"expected a checkpoint file, got {path} (no such file)")
    try:
        # TorchVersion is a str subclass that early checkpoints stored as the torch version;
        # allowing it keeps weights_only loading (no arbitrary code) for those files.
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"cannot read {path} as a checkpoint: {error}") from None


def upgrade_format_1(payload: dict) -> dict:
    """A format-1 payload in the format-2 layout, weights untouched.

    Format 1's one network becomes ``"codec"`` (its recorded hash kept, so it is still
    checked), or ``"lm"`` for the resumable state of an LM run (codec ``"<codec>-lm"``,
    settings under ``metadata["lm_settings"]``). Its ``extra_states`` split into networks
    (the LM, built from ``metadata["lm_config"]``, and a training run's discriminator; format
    1 recorded no hash for these) and the training state (optimisers, balancer).
    """
    extra = dict(payload.get("extra_states", {}))
    metadata = dict(payload.get("metadata", {}))
    primary = {"config": payload.get("config"), "state_dict": payload.get("state_dict")}
    primary["hash"] = payload.get("hash")
    networks = {}
    if str(payload.get("codec")).endswith("-lm"):
        networks["lm"] = primary
        metadata["train_settings"] = metadata.pop("lm_settings", None)
    else:
        networks["codec"] = primary
    for name, config in (("lm", metadata.pop("lm_config", {})), ("discriminator", {})):
        if name in extra:
            state = extra.pop(name)
            networks[name] = {"config": config, "state_dict": state, "hash": state_hash(state)}
    return {
        **payload,
        "version": VERSION,
        "networks": networks,
        "training_state": extra,
        "metadata": metadata,
    }


def _read_payload(path: Path) -> dict:
    payload = read_weights_file(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: expected a {FORMAT!r} file, got something else (an official EnCodec "
            "state dict is loaded by the codec itself)"
        )
    if payload.get("version") == 1:
        payload = upgrade_format_1(payload)
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: expected checkpoint version 1 or {VERSION}, got {payload.get('version')}"
        )
    if not isinstance(payload.get("networks"), dict):
        raise CheckpointError(
            f"{path}: expected a dict of networks, got {payload.get('networks')!r}"
        )
    return payload


def _check_hash(path: Path, name: str, recorded: object, actual: str) -> None:
    if actual != recorded:
        raise CheckpointError(
            f"{path}: network {name!r}: weights do not match the recorded hash "
            f"(recorded {str(recorded)[:12]}, computed {actual[:12]})"
        )


def _dequantized(path: Path, name: str, state_dict: dict, scales: dict) -> dict[str, torch.Tensor]:
    for key, scale in scales.items():
        codes = state_dict.get(key)
        if codes is None or codes.dtype != torch.int8 or scale.shape != codes.shape[:1]:
            raise CheckpointError(
                f"{path}: network {name!r}: expected {key!r} as int8 with one scale per output "
                f"channel, got {None if codes is None else (codes.dtype, tuple(codes.shape))} "
                f"with scales of shape {tuple(scale.shape)}"
            )
    return {
        key: dequantize_int8(value, scales[key]) if key in scales else value
        for key, value in state_dict.items()
    }


def _load_network(path: Path, name: str, entry: object, depth: int) -> Network:
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: network {name!r}: expected a dict, got {entry!r}")
    if "reference" not in entry:
        state_dict = entry.get("state_dict")
        if not isinstance(state_dict, dict):
            raise CheckpointError(f"{path}: network {name!r} holds no state dict")
        scales = entry.get("int8_scales") or {}
        actual = stored_state_hash(state_dict, scales)
        _check_hash(path, name, entry.get("hash"), actual)
        return Network(
            entry.get("config") or {},
            _dequantized(path, name, state_dict, scales),
            actual,
            int8_scales=scales,
        )
    if depth >= MAX_REFERENCE_DEPTH:
        raise CheckpointError(
            f"{path}: network {name!r}: more than {MAX_REFERENCE_DEPTH} references deep "
            "(a cycle of checkpoints referencing each other?)"
        )
    target = (path.parent / str(entry["reference"])).resolve()
    target_name = str(entry.get("network", name))
    try:
        shared = _load(target, depth + 1).network(target_name)
    except CheckpointError as error:
        raise CheckpointError(
            f"{path}: network {name!r} is shared from {target}: {error}"
        ) from None
    if shared.hash != entry.get("hash"):
        raise CheckpointError(
            f"{path}: network {name!r} is shared from {target}, whose {target_name!r} changed "
            f"since (recorded hash {str(entry.get('hash'))[:12]}, now {shared.hash[:12]})"
        )
    return Network(
        shared.config,
        shared.state_dict,
        shared.hash,
        NetworkReference(target, target_name),
        shared.int8_scales,
    )


def _load(path: Path, depth: int) -> Checkpoint:
    payload = _read_payload(path)
    networks = {
        name: _load_network(path, name, entry, depth) for name, entry in payload["networks"].items()
    }
    return Checkpoint(
        codec=payload.get("codec"),
        networks=networks,
        step=payload.get("step", 0),
        training_state=payload.get("training_state", {}),
        metadata=payload.get("metadata", {}),
        versions=payload.get("versions", {}),
        path=path,
    )


def load_checkpoint(path: str | os.PathLike, codec: str | None = None) -> Checkpoint:
    """Read a checkpoint (of ``codec``, unless None); :class:`CheckpointError` says what is
    wrong."""
    checkpoint = _load(Path(path), depth=0)
    if codec is not None and checkpoint.codec != codec:
        raise CheckpointError(f"{path}: expected a {codec} checkpoint, got {checkpoint.codec}")
    return checkpoint


def load_strictly(module: torch.nn.Module, state_dict: dict, source: str) -> None:
    """``load_state_dict(strict=True)`` with missing and unexpected keys named in the error."""
    expected, given = set(module.state_dict()), set(state_dict)
    if expected != given:
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        raise CheckpointError(
            f"{source}: the key set differs from the model's: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}"
        )
    module.load_state_dict(state_dict, strict=True)
