"""A sweep's settings: what determines a run's results, and the parsing of list options.

This module imports no torch (nor anything that does): the command line takes its defaults
from :class:`SweepSettings` when it starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

# A label is a table's column name and part of file names: no separators, no spaces.
LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# Settings saved by runs from before execution settings were kept out of them.
EXECUTION_KEYS = ("workers", "executor")


@dataclass(frozen=True)
class SweepSettings:
    """Everything that determines a run's results (output locations and how the run is
    executed excluded: see :func:`bench.sweep.run_sweep`).

    ``codecs`` are the conditions' labels, in run order; a label is its codec's registered
    name unless ``label_codecs`` maps it to a codec (``{"ours": "encodec"}``), so that one
    codec can run under two labels with two sets of options. ``codec_bitrates`` and
    ``codec_options`` are keyed by label. ``bitrates=None`` sweeps every bitrate of each
    codec; ``codec_bitrates`` gives some labels bitrates of their own (a suite mixes Opus at
    6 kbps with MP3 at 32 kbps); ``nfes`` applies to iterative decoders only;
    ``metrics=None`` scores every registered metric; ``metric_options`` maps a metric to its
    options (``{"wer": {"model": "PATH"}}``).
    """

    codecs: tuple[str, ...]
    bitrates: tuple[float, ...] | None = None
    nfes: tuple[int, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    data: str = "embedded"
    limit: int | None = None
    max_seconds: float | None = None
    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    metrics: tuple[str, ...] | None = None
    metric_options: dict[str, dict[str, str]] = field(default_factory=dict)
    codec_bitrates: dict[str, tuple[float, ...]] = field(default_factory=dict)
    items: tuple[str, ...] | None = None
    # Constructor options per label, e.g. {"encodec": {"checkpoint": "x.pt"}}.
    codec_options: dict[str, dict] = field(default_factory=dict)
    # Items whose reference and decoded audio the run keeps for the report's listening section.
    listening_items: int = 3
    # The registered codec of each label that is not itself a codec's name.
    label_codecs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.codecs:
            raise ValueError("expected at least one codec, got none")
        # A crop shorter than the shortest scorable input would be scored anyway (the
        # length check runs on the whole file), with bitrates inflated by frame overhead.
        # Imported here: bench.audio brings torch, and the command line reads this class's
        # defaults at start-up.
        from bench.audio import MIN_DURATION_SECONDS as shortest

        if self.max_seconds is not None and not (
            math.isfinite(self.max_seconds) and self.max_seconds >= shortest
        ):
            raise ValueError(
                f"expected --max-seconds to be a finite number of at least "
                f"{shortest:g} s (the shortest input that can be "
                f"scored), got {self.max_seconds!r}"
            )
        for name in ("codecs", "bitrates", "nfes", "seeds", "metrics", "items", "tags"):
            refuse_duplicates(getattr(self, name) or (), name)
        refuse_duplicates(self.exclude_tags, "exclude_tags")
        for label, bitrates in self.codec_bitrates.items():
            refuse_duplicates(bitrates, f"the bitrates of {label}")
        if not self.seeds:
            raise ValueError("expected at least one seed, got none")
        if self.listening_items < 0:
            raise ValueError(f"expected listening items >= 0, got {self.listening_items}")
        unknown = (
            set(self.codec_bitrates) | set(self.codec_options) | set(self.label_codecs)
        ) - set(self.codecs)
        if unknown:
            raise ValueError(
                f"bitrates, options or codecs given for labels not in the sweep: "
                f"{sorted(unknown)}; labels: {list(self.codecs)}"
            )
        for label, codec in self.label_codecs.items():
            check_label(label)
            if not isinstance(codec, str) or not codec:
                raise ValueError(f"label {label!r}: expected a codec name, got {codec!r}")

    def codec_of(self, label: str) -> str:
        """The registered codec that ``label`` runs."""
        return self.label_codecs.get(label, label)

    def options_of(self, label: str) -> dict:
        """The codec options of ``label`` (a checkpoint, entropy coding, ...)."""
        return self.codec_options.get(label, {})

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SweepSettings:
        def as_tuple(name: str, value):
            # tuple("opus") would be a sweep over the codecs "o", "p", "u" and "s".
            if isinstance(value, str):
                raise ValueError(f"{name}: expected a list, got the string {value!r}")
            return None if value is None else tuple(value)

        settings = {key: value for key, value in data.items() if key not in EXECUTION_KEYS}
        return cls(
            **{
                **settings,
                **{
                    name: as_tuple(name, data.get(name))
                    for name in ("codecs", "bitrates", "nfes", "seeds", "metrics", "items")
                    if name in data  # a suite file may leave out what has a default
                },
                "tags": as_tuple("tags", data.get("tags", ())),
                "metric_options": data.get("metric_options", {}),
                "exclude_tags": as_tuple("exclude_tags", data.get("exclude_tags", ())),
                "codec_options": data.get("codec_options", {}),
                "label_codecs": data.get("label_codecs", {}),
                "codec_bitrates": {
                    name: tuple(float(bitrate) for bitrate in bitrates)
                    for name, bitrates in data.get("codec_bitrates", {}).items()
                },
            }
        )


def check_label(label: str) -> str:
    """``label`` if it can name a condition, else ``ValueError`` saying what can."""
    if not isinstance(label, str) or not LABEL_PATTERN.fullmatch(label):
        raise ValueError(
            f"expected a condition label of letters, digits, '-' and '_' (starting with a "
            f"letter or digit), got {label!r}"
        )
    return label


def refuse_duplicates(values: Iterable, option: str) -> None:
    """Raise ``ValueError`` if a value repeats: each repeat would write duplicate rows."""
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{option}: expected each value once, got {value!r} more than once")
        seen.add(value)


def parse_list(text: str, kind: type, option: str) -> tuple:
    """Parse ``"1.5,3,6"`` into a tuple of ``kind``; raise ``ValueError`` naming the option.

    Numbers must be finite and no value may repeat.
    """
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = kind(part)
        except ValueError:
            raise ValueError(
                f"{option}: expected comma-separated {kind.__name__} values, got {part!r}"
            ) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{option}: expected finite numbers, got {part!r}")
        values.append(value)
    if not values:
        raise ValueError(f"{option}: expected at least one value, got {text!r}")
    refuse_duplicates(values, option)
    return tuple(values)
