"""Registries: lazy targets, entry-point plug-ins, collisions and "did you mean"."""

from __future__ import annotations

import math

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


def _package(root, name: str, modules: dict[str, str]) -> None:
    """A package ``name`` under ``root`` whose ``REGISTRY`` discovers its own modules."""
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text(
        f"from bench.registry import Registry\nREGISTRY = Registry('widget', discover={name!r})\n"
    )
    for module, text in modules.items():
        (package / f"{module}.py").write_text(f"from {name} import REGISTRY\n{text}\n")


def test_a_kind_that_registers_as_it_is_imported_finds_every_module_of_its_package(
    tmp_path, monkeypatch
):
    """A new module in the package is found without a list to edit (metrics work so)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    _package(
        tmp_path,
        "discovered_widgets",
        {
            "rounding": "REGISTRY.register('round', round)",
            "flooring": "import math\nREGISTRY.register('floor', math.floor)",
        },
    )
    from discovered_widgets import REGISTRY

    assert REGISTRY.names() == ["floor", "round"]
    assert REGISTRY.create("round", number=2.6) == 3


def test_a_module_that_fails_to_import_fails_every_look_up_rather_than_shrink_the_list(
    tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(tmp_path))
    _package(
        tmp_path,
        "broken_widgets",
        {"fine": "REGISTRY.register('fine', round)", "missing": "import no_such_backend"},
    )
    from broken_widgets import REGISTRY

    for _ in range(2):
        with pytest.raises(ModuleNotFoundError, match="no_such_backend"):
            REGISTRY.names()


def test_an_object_registered_by_its_module_and_named_by_a_lazy_target_is_one_entry():
    registry = Registry("widget")
    registry.register("floor", "math:floor", source="some-plugin")
    registry.register("floor", math.floor, source="math", path="math:floor")
    assert registry.factory("floor") is math.floor
    assert registry.source("floor") == "some-plugin"
    registry.register("ceil", math.ceil, source="math", path="math:ceil")
    registry.register("ceil", "math:ceil", source="some-plugin")
    assert registry.factory("ceil") is math.ceil
    with pytest.raises(ValueError, match="already registered by math"):
        registry.register("ceil", "math:floor", source="another-plugin")
