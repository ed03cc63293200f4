"""An ablation study as a file: a base training configuration, named variants that override
it, the seeds, and one evaluation sweep over held-out data.

DAC keeps its ablations as a base YAML and small override files; here a study is one TOML
file whose ``[base]`` and ``[variants.NAME]`` tables hold the options of a ``bench train``
recipe (:mod:`bench.train.settings`), written as the command line writes them
(``discriminators = "msstft,mpd"``, ``weights = "adversarial=100"``) or as TOML values (a
list, a table of weights merged over the recipe's). Every variant × seed is trained with the
same data, steps, batch, segments and seed schedule; only the variant's overrides differ,
and the study refuses a variant that overrides one of those shared options.

The three studies of EnCodec (Défossez et al. 2022) Table 2 and Table A.4 and of
HiFi-Codec's GRVQ claim (Yang et al. 2023) ship in ``bench/ablate/studies``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bench.registry import SOLVERS, did_you_mean, load_target
from bench.sweep.settings import check_label

STUDIES_DIR = Path(__file__).resolve().parent / "studies"
# Options every variant shares, by design of an ablation: the study or the command line sets
# them, a variant may not (its numbers would then differ by more than its overrides).
SHARED_OPTIONS = ("data", "steps", "seed", "batch_size", "segment_seconds", "data_limit")
# Options a study file may not set in [base] either: they come from the command line.
COMMAND_LINE_OPTIONS = ("data", "seed")
# Recipe fields that identify the model, which the recipe fixes.
FIXED_BY_RECIPE = ("codec",)
# What the evaluation sweep of a study may set (the codecs and their checkpoints are the
# trained variants, so those keys are the study's own).
EVALUATION_KEYS = (
    "data",
    "bitrates",
    "metrics",
    "tags",
    "exclude_tags",
    "items",
    "limit",
    "max_seconds",
)
STUDY_KEYS = (
    "description",
    "recipe",
    "baseline",
    "seeds",
    "published_table",
    "base",
    "variants",
    "evaluation",
    "published_models",
    "comparisons",
)


def study_names() -> list[str]:
    """The studies that ship with the package."""
    return sorted(path.stem for path in STUDIES_DIR.glob("*.toml"))


@dataclass(frozen=True)
class Study:
    """A parsed study: ``recipe`` is the ``bench train`` recipe every variant trains;
    ``base`` its options; ``variants`` each variant's overrides, in the file's order;
    ``evaluation`` the sweep's settings (:class:`bench.sweep.SweepSettings` fields);
    ``published_models`` maps a variant to its row's ``model`` in ``published_table`` of
    ``reports/published``; ``comparisons`` are the pairs of variants (candidate, reference)
    the tables also test against each other, besides every variant against the baseline."""

    name: str
    recipe: str
    baseline: str
    seeds: tuple[int, ...]
    base: dict[str, Any]
    variants: dict[str, dict[str, Any]]
    evaluation: dict[str, Any]
    source: str
    description: str = ""
    published_table: str | None = None
    published_models: dict[str, str] = field(default_factory=dict)
    # Pairs (candidate, reference) tested besides each variant against the baseline.
    comparisons: tuple[tuple[str, str], ...] = ()

    def settings(self, variant: str, seed: int, data: str) -> Any:
        """The training settings of ``variant`` at ``seed`` on ``data``: the recipe's
        defaults, then ``base``, then the variant's overrides."""
        if variant not in self.variants:
            raise ValueError(did_you_mean("variant", variant, list(self.variants)))
        from bench.train.settings import recipe_settings

        options = {**self.base, **self.variants[variant], "data": data, "seed": seed}
        return recipe_settings(self.recipe, **_resolved(self.recipe, options))

    def with_budget(self, steps: int | None = None, seeds: tuple[int, ...] | None = None) -> Study:
        """This study with its steps or seeds replaced (``bench ablate --steps --seeds``)."""
        base = self.base if steps is None else {**self.base, "steps": steps}
        return Study(
            **{
                **{spec.name: getattr(self, spec.name) for spec in fields(self)},
                "base": base,
                "seeds": self.seeds if seeds is None else tuple(seeds),
            }
        )

    def labels(self) -> dict[str, tuple[str, int]]:
        """The evaluation sweep's condition label of each variant × seed: ``VARIANT-sSEED``."""
        return {
            f"{variant}-s{seed}": (variant, seed)
            for variant in self.variants
            for seed in self.seeds
        }


def load_study(name_or_path: str) -> Study:
    """The study shipped as ``name`` (``discriminator``, ``balancer``, ``quantizer``) or in the
    TOML file at ``name_or_path``. Raises ``ValueError`` naming the file and its fault."""
    path = Path(name_or_path)
    # A shipped study's name wins over a folder of that name (its study folder, say).
    if not path.is_file():
        if name_or_path in study_names():
            path = STUDIES_DIR / f"{name_or_path}.toml"
        elif not path.suffix:
            raise ValueError(did_you_mean("study", name_or_path, study_names()))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"study file {str(path)!r}: cannot read it: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"study file {str(path)!r}: expected TOML: {error}") from None
    try:
        return _parse(path, data)
    except ValueError as error:
        raise ValueError(f"study file {str(path)!r}: {error}") from None


def _parse(path: Path, data: dict) -> Study:
    _refuse_unknown(data, STUDY_KEYS, "key")
    recipe = data.get("recipe")
    if recipe not in SOLVERS.names():
        raise ValueError(
            f"recipe: {did_you_mean('bench train recipe', str(recipe), SOLVERS.names())}"
        )
    options = _recipe_options(recipe)
    base = _table(data, "base")
    for name in base:
        if name in COMMAND_LINE_OPTIONS:
            raise ValueError(
                f"[base] sets {name!r}, which `bench ablate` takes from its command line"
            )
    _refuse_unknown(base, options, "option in [base]")
    variants = _table(data, "variants")
    if not variants:
        raise ValueError("expected at least one [variants.NAME] table, got none")
    for variant, overrides in variants.items():
        check_label(variant)
        if not isinstance(overrides, dict):
            raise ValueError(f"variant {variant!r}: expected a table, got {overrides!r}")
        shared = sorted(set(overrides) & set(SHARED_OPTIONS))
        if shared:
            raise ValueError(
                f"variant {variant!r} overrides {shared}, which every variant shares "
                f"(set them in [base] or on the command line)"
            )
        _refuse_unknown(overrides, options, f"option in variant {variant!r}")
    baseline = data.get("baseline")
    if baseline not in variants:
        raise ValueError(f"baseline: {did_you_mean('variant', str(baseline), list(variants))}")
    seeds = data.get("seeds", [0])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)):
        raise ValueError(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    evaluation = _table(data, "evaluation")
    _refuse_unknown(evaluation, EVALUATION_KEYS, "key in [evaluation]")
    if "data" not in evaluation:
        raise ValueError("[evaluation]: expected `data`, the held-out dataset spec")
    published_models = _table(data, "published_models")
    _refuse_unknown(published_models, list(variants), "variant in [published_models]")
    comparisons = data.get("comparisons", [])
    if not isinstance(comparisons, list) or not all(
        isinstance(pair, list) and len(pair) == 2 for pair in comparisons
    ):
        raise ValueError(
            f"comparisons: expected a list of [candidate, reference] pairs, got {comparisons!r}"
        )
    for variant in (name for pair in comparisons for name in pair):
        if variant not in variants:
            raise ValueError(
                f"comparisons: {did_you_mean('variant', str(variant), list(variants))}"
            )
    study = Study(
        name=path.stem,
        recipe=recipe,
        baseline=baseline,
        seeds=tuple(seeds),
        base=base,
        variants=variants,
        evaluation=evaluation,
        source=str(path),
        description=str(data.get("description", "")),
        published_table=data.get("published_table"),
        published_models=published_models,
        comparisons=tuple(tuple(pair) for pair in comparisons),
    )
    for variant in variants:  # every value checked by the recipe's own settings
        try:
            study.settings(variant, study.seeds[0], data="embedded")
        except (TypeError, ValueError) as error:
            raise ValueError(f"variant {variant!r}: {error}") from None
    return study


def _table(data: dict, key: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{key}: expected a table, got {value!r}")
    return value


def _refuse_unknown(given: dict, known, what: str) -> None:
    for name in given:
        if name not in known:
            raise ValueError(did_you_mean(what, name, sorted(known)))


def _recipe_options(recipe: str) -> list[str]:
    """The fields a study may set for ``recipe``: its settings' fields but those the recipe
    fixes."""
    settings_class = load_target(SOLVERS.factory(recipe).settings)
    return [spec.name for spec in fields(settings_class) if spec.name not in FIXED_BY_RECIPE]


def _resolved(recipe: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` as the settings class takes them: text through the option's parser, lists
    as tuples, a table of weights merged over the recipe's default."""
    from bench.cli.common import field_default
    from bench.train.settings import Option

    recipe_spec = SOLVERS.factory(recipe)
    specs = {spec.name: spec for spec in fields(load_target(recipe_spec.settings))}
    resolved = {}
    for name, value in options.items():
        option: Option | None = specs[name].metadata.get("option")
        if isinstance(value, str) and option is not None and option.parse is not None:
            value = option.parse(value)
        elif isinstance(value, list):
            value = tuple(value)
        elif isinstance(value, dict):
            default = recipe_spec.defaults.get(name, field_default(specs[name]))
            value = {**(default if isinstance(default, dict) else {}), **value}
        resolved[name] = value
    return resolved
