"""Shared fixtures: real speech from ../shared/data and a registered test codec."""

from __future__ import annotations

from pathlib import Path

import pytest
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
