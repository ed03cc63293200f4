"""Worker pools stay usable after the parent has run multi-threaded torch work, and their
processes do not outlive the parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import REPO_ROOT, process_alive, write_tone

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


NUMBA_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    from bench.data.embedded import EMBEDDED_DIR
    from bench.scoring import bind_metrics, score_pair, score_paths

    # ViSQOL runs numba-parallel kernels in this process first, as a first sweep with one
    # worker does; a pool forked afterwards must still work.
    speech = EMBEDDED_DIR / "librivox_0880.flac"
    metrics = bind_metrics(("visqol_audio",))
    assert score_pair(speech, speech, metrics).failures == {}
    folder = Path(sys.argv[1])
    for name in ("a", "b"):
        (folder / "ref").mkdir(exist_ok=True)
        (folder / "deg").mkdir(exist_ok=True)
        (folder / "ref" / f"{name}.flac").write_bytes(speech.read_bytes())
        (folder / "deg" / f"{name}.flac").write_bytes(speech.read_bytes())
    results = score_paths(folder / "ref", folder / "deg", metrics, workers=2)
    assert all(result.failures == {} for result in results), results
    print("ok")
    """
)


def test_a_pool_forked_after_numba_ran_in_the_parent_works(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-c", NUMBA_SCRIPT, str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().endswith("ok")


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


# The portable fallback of exit_with_parent, taken on Linux by posing as macOS.
ORPHAN_SCRIPT = textwrap.dedent(
    """
    import os
    import sys
    import time

    from bench.parallel import exit_with_parent

    parent = os.getpid()
    child = os.fork()
    if child == 0:
        sys.platform = "darwin"
        exit_with_parent(parent)
        time.sleep(600)
        os._exit(0)
    print(child, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc")
def test_without_prctl_a_child_still_exits_when_its_parent_is_killed():
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while process_alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphaned = process_alive(child)
    if orphaned:
        os.kill(child, signal.SIGKILL)
    assert not orphaned, "the child outlived its killed parent"


# A sweep whose workers report what they hold after their tasks: the modules of the heavy
# metric backends and the metrics whose set-up (model loading, kernel compilation) ran.
LOADED_SCRIPT = textwrap.dedent(
    """
    import json
    import os
    import sys
    from pathlib import Path

    import bench.scoring
    import bench.sweep
    import bench.sweep.evaluate

    HEAVY = sys.argv[2].split(",")
    folder, evaluate = Path(sys.argv[1]), bench.sweep.evaluate.evaluate_in_worker

    def evaluate_and_report(task):
        result = evaluate(task)
        loaded = {
            "modules": [name for name in HEAVY if name in sys.modules],
            "set_up": sorted(name for name, _ in bench.scoring._SET_UP),
        }
        (folder / f"worker-{os.getpid()}.json").write_text(json.dumps(loaded))
        return result

    bench.sweep.evaluate.evaluate_in_worker = evaluate_and_report
    settings = bench.sweep.SweepSettings(
        codecs=("identity",), data=f"folder:{folder / 'data'}", metrics=("si_sdr",)
    )
    bench.sweep.run_sweep(
        settings, workers=2, out_root=folder / "runs", cache_dir=None, progress=False
    )
    """
)
# What the model-based metrics import: Whisper, ViSQOL, DNSMOS, Resemblyzer and friends.
HEAVY_MODULES = (
    "faster_whisper",
    "ctranslate2",
    "visqol",
    "numba",
    "ai_edge_litert",
    "onnxruntime",
    "speechmos",
    "resemblyzer",
    "librosa",
    "pesq",
    "pystoi",
)


def test_an_si_sdr_worker_loads_no_model_and_imports_no_heavy_backend(tmp_path):
    for index in range(4):
        write_tone(tmp_path / "data" / f"tone{index}.wav", frequency=300 + 50 * index)
    completed = subprocess.run(
        [sys.executable, "-c", LOADED_SCRIPT, str(tmp_path), ",".join(HEAVY_MODULES)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    reports = [json.loads(path.read_text()) for path in tmp_path.glob("worker-*.json")]
    assert len(reports) == 2, "expected a report from each of the two workers"
    # si_sdr has no set-up of its own; no other metric's ran.
    assert reports == [{"modules": [], "set_up": ["si_sdr"]}] * 2


def test_the_progress_bar_names_the_models_the_workers_load(tmp_path):
    write_tone(tmp_path / "data" / "tone.wav")
    command = [sys.executable, "-m", "bench.cli", "run", "--codec", "identity", "--no-report"]
    command += ["--data", f"folder:{tmp_path / 'data'}", "--metrics", "si_sdr,dnsmos"]
    command += ["--workers", "1", "--no-cache", "--out", str(tmp_path / "runs")]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    expected = "bench run: loading dnsmos (once per worker)"
    shown = ""
    try:
        # The bar redraws with carriage returns: read until the description shows up.
        while expected not in shown and (character := process.stderr.read(1)):
            shown += character
    finally:
        process.kill()
        process.wait()
    assert expected in shown, shown
