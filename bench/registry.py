"""Name registries with lazy ``"module:attribute"`` targets and helpful errors.

After lm-evaluation-harness's registry: built-ins are registered by import path so that
listing codecs imports nothing heavy, third-party packages add theirs through an
entry-point group per kind (``bench.codecs``, ``bench.metrics``, ``bench.datasets``,
``bench.solvers``, ``bench.discriminators``, ``bench.executors``, ``bench.weights``),
collisions are errors, and an unknown name gets a "did you mean" and the list of known
names. A kind whose built-ins register themselves as their modules are imported (metrics,
through a decorator) names the package holding them, imported at the first look-up.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

# Imported where used: `bench train`'s options are listed, and reports look metrics up,
# without torch.
if TYPE_CHECKING:
    from bench.codecs.base import Codec, CodecInfo

CODEC_ENTRY_POINT_GROUP = "bench.codecs"
METRIC_ENTRY_POINT_GROUP = "bench.metrics"
DATASET_ENTRY_POINT_GROUP = "bench.datasets"
EXECUTOR_ENTRY_POINT_GROUP = "bench.executors"
SOLVER_ENTRY_POINT_GROUP = "bench.solvers"
DISCRIMINATOR_ENTRY_POINT_GROUP = "bench.discriminators"
WEIGHTS_ENTRY_POINT_GROUP = "bench.weights"


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered; the message suggests the closest known names."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0])


def did_you_mean(kind: str, name: str, known: list[str]) -> str:
    """A message for an unknown ``name``: the closest matches, then every known name."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(match) for match in close)}?" if close else ";"
    return f"unknown {kind} {name!r}{hint} known: {', '.join(sorted(known))}"


def load_target(target: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, _, attribute = target.partition(":")
    if not attribute:
        raise ValueError(f"expected a target 'module:attribute', got {target!r}")
    return getattr(importlib.import_module(module_name), attribute)


class Registry:
    """Maps names to lazily imported factories (classes or callables) or registered objects.

    ``discover`` names a package whose modules register built-ins as they are imported
    (a decorator); every module of it is imported at the first look-up, so adding one
    needs no list to edit.
    """

    def __init__(
        self, kind: str, entry_point_group: str | None = None, discover: str | None = None
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.discover = discover
        self._targets: dict[str, str | Callable[..., Any]] = {}
        self._sources: dict[str, str] = {}
        # Where each target lives, "module:attribute": the lazy target itself, or what the
        # module that registered an object said (see register's ``path``).
        self._paths: dict[str, str] = {}
        self._entry_points_loaded = False
        self._discovered = False

    def register(
        self,
        name: str,
        target: str | Callable[..., Any],
        source: str = "built-in",
        *,
        path: str | None = None,
    ) -> None:
        """Register ``target`` (a ``"module:attr"`` string or a factory) under ``name``.

        ``path`` is where an object ``target`` lives (``"module:attr"``), given by a module
        that registers its own objects as it is imported. An entry point naming that same
        path is then the same registration reached twice, not a collision: the object
        replaces the lazy target, whichever of the two came first.
        """
        path = target if isinstance(target, str) else path
        if name in self._targets:
            if path is None or self._paths.get(name) != path:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered by {self._sources[name]}; "
                    f"cannot register it again from {source}"
                )
            if not isinstance(target, str):
                self._targets[name] = target
            return
        self._targets[name] = target
        self._sources[name] = source
        if path is not None:
            self._paths[name] = path

    def _load(self) -> None:
        """Import the built-in modules and register the entry points, once."""
        self._import_builtins()
        self._load_entry_points()

    def _import_builtins(self) -> None:
        if self._discovered or self.discover is None:
            return
        self._discovered = True  # a module that looks names up while it registers
        try:
            package = importlib.import_module(self.discover)
            for module in pkgutil.iter_modules(package.__path__, prefix=f"{self.discover}."):
                importlib.import_module(module.name)
        except BaseException:
            self._discovered = False  # the error again at the next look-up, not fewer names
            raise

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or self.entry_point_group is None:
            return
        self._entry_points_loaded = True
        for entry_point in entry_points(group=self.entry_point_group):
            distribution = entry_point.dist.name if entry_point.dist else "unknown package"
            self.register(entry_point.name, entry_point.value, source=distribution)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._targets)

    def source(self, name: str) -> str:
        self.check(name)
        return self._sources[name]

    def check(self, name: str) -> str:
        """Return ``name`` if registered, else raise :class:`UnknownNameError`."""
        self._load()
        if name not in self._targets:
            raise UnknownNameError(did_you_mean(self.kind, name, list(self._targets)))
        return name

    def factory(self, name: str) -> Callable[..., Any]:
        target = self._targets[self.check(name)]
        if not isinstance(target, str):
            return target
        loaded = load_target(target)
        # Importing the target's module may have registered the object itself (a decorator).
        registered = self._targets[name]
        return loaded if isinstance(registered, str) else registered

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.factory(name)(**kwargs)


CODECS = Registry("codec", entry_point_group=CODEC_ENTRY_POINT_GROUP)
for _name, _target in {
    "identity": "bench.codecs.classic.identity:IdentityCodec",
    "lowpass3k5": "bench.codecs.classic.lowpass:Lowpass3k5Codec",
    "lowpass7k": "bench.codecs.classic.lowpass:Lowpass7kCodec",
    "mp3": "bench.codecs.classic.mp3:Mp3Codec",
    "opus": "bench.codecs.classic.opus:OpusCodec",
    "encodec": "bench.codecs.encodec.codec:EncodecCodec",
    "hificodec": "bench.codecs.hificodec.codec:HiFiCodecCodec",
    "flowmac": "bench.codecs.flowmac.codec:FlowMacCodec",
    "flowmac-vocoder": "bench.codecs.flowmac.codec:FlowMacVocoderCodec",
    "soundstorm": "bench.codecs.soundstorm.codec:SoundStormCodec",
    "samplernn": "bench.codecs.samplernn.codec:SampleRnnCodec",
}.items():
    CODECS.register(_name, _target)
DATASETS = Registry("dataset scheme", entry_point_group=DATASET_ENTRY_POINT_GROUP)
for _name, _target in {
    "embedded": "bench.data.embedded:SCHEME",
    "folder": "bench.data.folder:SCHEME",
    "librispeech": "bench.data.librispeech:SCHEME",
    "manifest": "bench.data.manifest:SCHEME",
}.items():
    DATASETS.register(_name, _target)
# Each module of bench.metrics registers its metrics with the @metric decorator.
METRICS = Registry("metric", entry_point_group=METRIC_ENTRY_POINT_GROUP, discover="bench.metrics")


# `bench train NAME`: the training recipes (`bench.codecs.training.TrainingRecipe`), each
# declared by the package that owns the model.
SOLVERS = Registry("solver", entry_point_group=SOLVER_ENTRY_POINT_GROUP)
for _name, _target in {
    "encodec": "bench.codecs.encodec:TRAINING",
    "hificodec": "bench.codecs.hificodec:TRAINING",
    "flowmac": "bench.codecs.flowmac:TRAINING",
    "flowmac-vocoder": "bench.codecs.flowmac:VOCODER_TRAINING",
    "soundstorm": "bench.codecs.soundstorm:TRAINING",
    "samplernn": "bench.codecs.samplernn:TRAINING",
    "lm": "bench.train.settings:ENTROPY_LM_TRAINING",
}.items():
    SOLVERS.register(_name, _target)

# Published weights (`bench weights`, `--checkpoint official:NAME`): each codec package's tuple
# of `bench.codecs.weights.PublishedWeights`, under the package's name.
PUBLISHED_WEIGHTS = Registry(
    "published weights catalogue", entry_point_group=WEIGHTS_ENTRY_POINT_GROUP
)
for _name in ("encodec", "hificodec"):
    PUBLISHED_WEIGHTS.register(_name, f"bench.codecs.{_name}:PUBLISHED_WEIGHTS")

# Discriminator families of the codec GAN solver: (channels, MS-STFT width) -> module.
DISCRIMINATORS = Registry("discriminator", entry_point_group=DISCRIMINATOR_ENTRY_POINT_GROUP)
for _name in ("msstft", "mpd", "msd"):
    DISCRIMINATORS.register(_name, f"bench.train.solvers.codec_gan:{_name}_discriminator")


def codec_options(name: str) -> dict[str, Any]:
    """The keyword options codec ``name``'s factory accepts, each with its default
    (``inspect.Parameter.empty`` where it has none): ``{"checkpoint": None, ...}``."""
    parameters = inspect.signature(CODECS.factory(name)).parameters.values()
    return {
        parameter.name: parameter.default
        for parameter in parameters
        if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    }


def codec_option_kinds(name: str) -> dict[str, type | None]:
    """What a text value of each option of codec ``name`` is parsed as: ``bool``, ``int`` or
    ``float`` where the default's type or, for a default of None, the annotation says so
    (``top_k: int | None = None`` is an int); None for anything else (kept as text: a path).
    """
    factory = CODECS.factory(name)
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:  # noqa: BLE001 - an annotation naming a type-checking-only import
        hints = {}
    kinds = {}
    for option, default in codec_options(name).items():
        if default is not None and default is not inspect.Parameter.empty:
            candidates = (type(default),)
        else:
            hint = hints.get(option)
            candidates = typing.get_args(hint) or (hint,)
        kinds[option] = next((kind for kind in (bool, int, float) if kind in candidates), None)
    return kinds


def _published(name: str, options: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """``options`` with ``checkpoint="official:NAME"`` fetched (:mod:`bench.weights`), and
    what a run records of those weights (``{}`` for other options)."""
    from bench.weights import resolve_codec_options

    return resolve_codec_options(name, options)


def create_codec(name: str, **options: Any) -> Codec:
    """Instantiate the codec registered as ``name`` with ``options`` (a checkpoint, say, or
    ``"official:NAME"`` of the published weights), checking it implements the interface."""
    from bench.codecs.base import Codec

    options, _ = _published(name, options)
    codec = CODECS.create(name, **options)
    if not isinstance(codec, Codec):
        raise TypeError(
            f"codec {name!r} from {CODECS.source(name)} is a {type(codec).__name__}; "
            "expected a bench.codecs.base.Codec"
        )
    return codec


def codec_info(name: str, **options: Any) -> CodecInfo:
    """What planning needs to know of codec ``name`` with ``options`` (bitrates, NFE options,
    checkpoint hash, description), without building its networks (:meth:`Codec.info`).

    A factory that is not a :class:`Codec` subclass (a plain function) cannot be asked
    without being called, so its codec is built.
    """
    from bench.codecs.base import Codec, CodecInfo

    factory = CODECS.factory(name)
    options, published = _published(name, options)
    if isinstance(factory, type) and issubclass(factory, Codec):
        info = factory.info(**options)
    else:
        info = CodecInfo.of(create_codec(name, **options))
    if published:
        # The catalogue entry (name, URL, hash, licence) beside the codec's own description.
        info = replace(info, description={**info.description, "published_weights": published})
    return info


# Where a sweep's tasks run (see bench.executors); a third-party package adds one through
# the ``bench.executors`` entry-point group.
EXECUTORS = Registry("executor", entry_point_group=EXECUTOR_ENTRY_POINT_GROUP)
EXECUTORS.register("inline", "bench.executors.inline:InlineExecutor")
EXECUTORS.register("process", "bench.executors.process:ProcessExecutor")
EXECUTORS.register("ray", "bench.executors.ray_cluster:RayExecutor")
