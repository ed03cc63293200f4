"""How a model is trained, declared by the package that owns it: a :class:`TrainingRecipe`.

``bench train NAME`` runs the recipe registered as ``NAME`` (built-ins in ``bench.registry``,
third-party ones through the ``bench.solvers`` entry-point group). A recipe names the harness's
settings class by import path, so that a codec never imports the harness and declaring a
recipe imports nothing heavy (the command line lists every recipe's options).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainingRecipe:
    """What ``bench train NAME`` runs.

    Args:
        description: one line for ``bench train --help``.
        settings: ``"module:Class"`` of the settings dataclass; its fields are the command's
            options, and it names the solver that trains with them.
        defaults: settings that differ from the class's defaults for this model; those that
            are not command-line options are fixed (the codec a solver trains, for one).
    """

    description: str
    settings: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
