"""Registries: lazy targets, entry-point plug-ins, collisions and "did you mean"."""

from __future__ import annotations

import pytest
from helpers import install_plugin

from bench.registry import CODEC_ENTRY_POINT_GROUP, CODECS, Registry, UnknownNameError


def test_unknown_codec_suggests_the_closest_names():
    with pytest.raises(UnknownNameError) as caught:
        CODECS.check("opsu")
    message = str(caught.value)
    assert message.startswith("unknown codec 'opsu'; did you mean 'opus'?")
    assert "known: " in message and "mp3" in message


def test_collisions_are_errors():
    registry = Registry("widget")
    registry.register("a", "fractions:Fraction")
    with pytest.raises(ValueError, match="already registered by built-in"):
        registry.register("a", "math:floor", source="some-plugin")
    assert registry.create("a", numerator=4, denominator=8) == 0.5


def test_third_party_codecs_register_through_the_entry_point_group(tmp_path, monkeypatch):
    env = install_plugin(tmp_path)
    for path in reversed(env["PYTHONPATH"].split(":")):
        if path:
            monkeypatch.syspath_prepend(path)
    registry = Registry("codec", entry_point_group=CODEC_ENTRY_POINT_GROUP)
    assert "slow-quantizer" in registry.names()
    assert registry.source("slow-quantizer") == "bench-test-plugin"
    codec = registry.create("slow-quantizer")
    assert codec.bitrates == (128.0,)
