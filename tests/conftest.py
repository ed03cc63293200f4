"""Shared fixtures: real speech from ../shared/data, a registered test codec and one torch
thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import SHARED_DATA, QuantizingCodec

from bench.registry import CODECS


@pytest.fixture(scope="session", autouse=True)
def test_codec_registered():
    """Registers ``test-quantizer`` for inline sweeps (worker processes do not see it)."""
    if "test-quantizer" not in CODECS.names():
        CODECS.register("test-quantizer", QuantizingCodec, source="tests")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real speech not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op torch thread for a whole test module, which asks for it with
    ``pytestmark = pytest.mark.usefixtures("single_thread")``. For tiny models and many small
    calls one thread is fastest, and on a busy machine OpenMP's spin-waiting made streaming tests
    a hundred times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
