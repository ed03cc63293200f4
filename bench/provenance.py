"""Provenance recorded with every run: library versions, git commit and the machine.

Every number the tool reports is joined to these by run id, so a result can always be
traced to the code, the backends and the hardware that produced it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from bench import __version__

# Distributions whose versions can change a number this tool reports.
TRACKED_DISTRIBUTIONS = (
    "codec-bench",
    "torch",
    "numpy",
    "scipy",
    "soundfile",
    "soxr",
    "av",
    "pandas",
)


def backend_versions() -> dict[str, str]:
    """Versions of Python, the tracked distributions and the native libraries they wrap."""
    import av
    import soundfile

    versions = {"python": sys.version.split()[0], "bench": __version__}
    for distribution in TRACKED_DISTRIBUTIONS:
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[distribution] = "not installed"
    versions["libsndfile"] = soundfile.__libsndfile_version__
    for library, version in sorted(av.library_versions.items()):
        versions[f"ffmpeg {library}"] = ".".join(str(part) for part in version)
    return versions


def git_state(path: str | os.PathLike | None = None) -> dict[str, str | bool | None]:
    """The commit and dirtiness of the checkout holding ``path`` (default: this package)."""
    directory = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "note": "not a git checkout"}
    return {"commit": commit, "dirty": bool(status.strip())}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_fingerprint(threads: int | None = None) -> dict[str, str | int]:
    """CPU model, core count, torch threads and build: what timing figures depend on."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count() or 1,
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "platform": platform.platform(),
    }
