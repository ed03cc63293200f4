"""Self-describing checkpoints for the neural codecs: weights plus what made them.

A checkpoint is one ``torch.save`` file holding a dict: the format name and version, the
codec and its configuration, the model's state dict, optional extra state dicts (the
entropy-coding LM, the discriminator and optimisers of a training run), the training step,
library versions, free-form metadata, and a SHA-256 over the model's tensors. Loading
checks the format, the hash and the key set, so a truncated file, a file for another
codec or weights edited after saving are refused with a message saying which.
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
VERSION = 1


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


@dataclass
class Checkpoint:
    """What a checkpoint file holds; see the module docstring."""

    codec: str
    config: dict
    state_dict: dict[str, torch.Tensor]
    step: int = 0
    extra_states: dict[str, dict] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    hash: str = ""

    def save(self, path: str | os.PathLike) -> str:
        """Write atomically (temporary file, then rename); returns the weights' hash."""
        self.hash = state_hash(self.state_dict)
        versions = self.versions or {
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        # Plain strings only: weights_only loading refuses other classes (TorchVersion).
        self.versions = {name: str(value) for name, value in versions.items()}
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "codec": self.codec,
            "config": self.config,
            "state_dict": self.state_dict,
            "step": self.step,
            "extra_states": self.extra_states,
            "metadata": self.metadata,
            "versions": self.versions,
            "hash": self.hash,
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        path = Path(path)
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
        return self.hash


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


def load_checkpoint(path: str | os.PathLike, codec: str) -> Checkpoint:
    """Read a checkpoint of ``codec``; :class:`CheckpointError` says what is wrong."""
    payload = read_weights_file(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: expected a {FORMAT!r} file, got something else (an official EnCodec "
            "state dict is loaded by the codec itself)"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: expected checkpoint version {VERSION}, got {payload.get('version')}"
        )
    if payload.get("codec") != codec:
        raise CheckpointError(f"{path}: expected a {codec} checkpoint, got {payload.get('codec')}")
    actual = state_hash(payload["state_dict"])
    if actual != payload.get("hash"):
        raise CheckpointError(
            f"{path}: weights do not match the recorded hash "
            f"(recorded {str(payload.get('hash'))[:12]}, computed {actual[:12]})"
        )
    return Checkpoint(
        codec=payload["codec"],
        config=payload["config"],
        state_dict=payload["state_dict"],
        step=payload.get("step", 0),
        extra_states=payload.get("extra_states", {}),
        metadata=payload.get("metadata", {}),
        versions=payload.get("versions", {}),
        hash=actual,
    )


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
