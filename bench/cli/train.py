"""``bench train MODEL``: one subcommand per training recipe (``bench.registry.SOLVERS``), with
the options and defaults of its settings dataclass (``bench.train.settings``)."""

from __future__ import annotations

import argparse
import types
from dataclasses import MISSING, fields
from typing import TYPE_CHECKING, get_type_hints

from bench.cli.common import EPILOG, EXIT_OK, add_subcommand, field_default, finite_float, shown
from bench.registry import SOLVERS, load_target

if TYPE_CHECKING:
    from bench.train.settings import SolverSettings


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    train = subcommands.add_parser(
        "train",
        help="train a model with its solver and export a checkpoint: a neural codec "
        "(adversarial, loss balancer) or the entropy-coding LM of a trained codec",
        epilog=EPILOG,
    )
    train.set_defaults(continue_with=_continue_with)
    models = train.add_subparsers(dest="model", required=True, metavar="MODEL")
    for name in SOLVERS.names():
        _add_recipe_parser(models, name)


def _add_recipe_parser(models: argparse._SubParsersAction, name: str) -> None:
    recipe = SOLVERS.factory(name)
    settings_class = load_target(recipe.settings)
    parser = add_subcommand(
        models, name, train_command, help=recipe.description, description=recipe.description
    )
    parser.add_argument("--out", required=True, help="folder for checkpoints and logs")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    hints = get_type_hints(settings_class)
    options = {}
    for field in fields(settings_class):
        option = field.metadata.get("option")
        if option is None:
            continue
        options[field.name] = option
        default = recipe.defaults.get(field.name, field_default(field))
        flag = option.flag or "--" + field.name.replace("_", "-")
        if hints[field.name] is bool:  # a switch away from the default
            action = "store_false" if default else "store_true"
            parser.add_argument(flag, dest=field.name, action=action, help=option.help)
            continue
        # Numbers parse here; other values (lists, weights) through `option.parse` later,
        # whose errors name the option.
        kind = next((kind for kind in (int, float) if kind in _type_parts(hints[field.name])), str)
        parser.add_argument(
            flag,
            dest=field.name,
            type=finite_float if kind is float else kind,
            required=default is MISSING,
            default=None if default is MISSING else default,
            help=option.help
            if default in (MISSING, None)
            else f"{option.help} (default: {shown(default)})",
        )
    parser.set_defaults(settings_options=options)


def _type_parts(annotation) -> tuple:
    """``int | None`` -> (int, NoneType); any other annotation -> (annotation,)."""
    return annotation.__args__ if isinstance(annotation, types.UnionType) else (annotation,)


def _continue_with(_interrupt: KeyboardInterrupt) -> str:
    return "the same `bench train` command with --resume (the state was saved)"


def train_settings(arguments: argparse.Namespace) -> SolverSettings:
    """The settings of ``bench train MODEL``: its recipe's, with the options given."""
    from bench.train.settings import recipe_settings

    given = {}
    for name, option in arguments.settings_options.items():
        value = getattr(arguments, name)
        given[name] = option.parse(value) if option.parse and isinstance(value, str) else value
    return recipe_settings(arguments.model, **given)


def train_command(arguments: argparse.Namespace) -> int:
    from bench.train.loop import train

    settings = train_settings(arguments)
    model = train(settings, arguments.out, resume=arguments.resume, progress=not arguments.quiet)
    print(f"model: {model}")
    return EXIT_OK
