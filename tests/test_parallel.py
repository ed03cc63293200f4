"""Worker pools stay usable after the parent has run multi-threaded torch work."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from helpers import REPO_ROOT

SCRIPT = textwrap.dedent(
    """
    import torch
    from bench.parallel import process_pool

    torch.set_num_threads(2)
    # Start torch's OpenMP pool in the parent: a forked child that used it would hang.
    torch.stft(torch.randn(4, 48000), 2048, return_complex=True).abs().sum()
    (torch.randn(512, 512) @ torch.randn(512, 512)).sum()

    def work(seed):
        generator = torch.Generator().manual_seed(seed)
        signal = torch.randn(4, 48000, generator=generator)
        spectrum = torch.stft(signal, 2048, return_complex=True)
        return torch.get_num_threads(), float(spectrum.abs().sum())

    with process_pool(2) as pool:
        results = list(pool.map(work, range(4)))
    assert all(threads == 1 for threads, _ in results), results
    print("ok")
    """
)


def test_forked_workers_are_pinned_and_do_not_hang():
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ok"
