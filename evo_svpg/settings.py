"""Settings that a component owns: declared, documented and validated in its own module.

A component (operator, estimator, the evaluator, the behaviour descriptor, ...) declares a frozen
dataclass subclass of :class:`Settings` with a ``section`` name and registers it in
:data:`~evo_svpg.registry.SECTIONS`. Every field is made with :func:`setting`: its default, the
line ``--help`` shows, its flat key (the TOML key and ``--flag`` users type, by default
``<section>_<field>``), and a check run on construction. Checks that involve other settings or
the run (``cem_elites <= cem_candidates + 1``, ``select_fraction × particles >= 1``) go in
:meth:`Settings.check_run`, which a run calls only for the sections its components use: ERL's
settings cannot fail a ``pure`` run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

from evo_svpg.registry import SECTIONS

Check = Callable[[str, Any], None]  # (key, value) -> None, ValueError naming both


def setting(
    default: Any,
    doc: str,
    *,
    key: str | None = None,
    check: Check | None = None,
    parse: Callable[[str], Any] | None = None,
    choices: Callable[[], Iterable[str]] | None = None,
    absent: Any = MISSING,
) -> Any:
    """A settings field. ``parse`` turns a ``--flag`` string into a value (default: the type of
    ``default``); ``choices`` lists valid values for ``--help`` and errors; ``absent``: the
    value that runs saved before this setting existed had, when it differs from the default
    (:meth:`evo_svpg.config.RunConfig.from_saved` reads a saved config with it)."""
    meta = {"doc": doc, "key": key, "check": check, "parse": parse, "choices": choices}
    if absent is not MISSING:
        meta["absent"] = absent
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Base of a component's settings. Subclasses set ``section`` and ``title``."""

    section: ClassVar[str] = ""
    title: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # TOML/JSON lists of sizes
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            choices = f.metadata.get("choices")
            if choices is not None:
                choice(self.key_of(f.name), value, list(choices()))
            check = f.metadata.get("check")
            if check is not None:
                check(self.key_of(f.name), value)

    def check_run(self, cfg: Any) -> None:
        """Checks that need other settings of the run (``cfg``: the RunConfig); called only
        when the run uses this section."""

    @classmethod
    def key_of(cls, name: str) -> str:
        for f in fields(cls):
            if f.name == name:
                return f.metadata.get("key") or (f"{cls.section}_{name}" if cls.section else name)
        raise KeyError(name)

    @classmethod
    def keys(cls) -> dict[str, str]:
        """``{flat key: field name}`` in declaration order."""
        return {cls.key_of(f.name): f.name for f in fields(cls)}

    @classmethod
    def from_flat(cls, data: dict[str, Any]) -> Settings:
        """Build from flat keys (the ones this section owns; missing ones take defaults)."""
        return cls(**{name: data[key] for key, name in cls.keys().items() if key in data})

    def to_flat(self) -> dict[str, Any]:
        return {self.key_of(f.name): plain(getattr(self, f.name)) for f in fields(self)}

    def to_table(self) -> dict[str, Any]:
        """``{field: value}``: the section as ``config.json`` shows it."""
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        out = {}
        for f in fields(cls):
            value = f.default if f.default is not MISSING else f.default_factory()
            out[cls.key_of(f.name)] = plain(value)
        return out

    @classmethod
    def absent_values(cls) -> dict[str, Any]:
        """``{flat key: value}`` for the fields declared with ``absent``: what a config saved
        before the field existed meant."""
        return {cls.key_of(f.name): f.metadata["absent"] for f in fields(cls)
                if "absent" in f.metadata}  # fmt: skip

    @classmethod
    def field_help(cls) -> list[tuple[str, str, Any, dict]]:
        """``(key, doc, default, metadata)`` per field, for the CLI's flags."""
        defaults = cls.defaults()
        return [
            (cls.key_of(f.name), f.metadata.get("doc", ""), defaults[cls.key_of(f.name)],
             dict(f.metadata))
            for f in fields(cls)
        ]  # fmt: skip


def register_settings(cls: type[Settings]) -> type[Settings]:
    """Class decorator: add ``cls`` to :data:`SECTIONS` under ``cls.section``."""
    if not cls.section:
        raise ValueError(f"{cls.__name__} must set a section name")
    for name, other in SECTIONS.items():
        shared = sorted(set(cls.keys()) & set(other.keys()))
        if shared and name != cls.section:
            raise ValueError(
                f"{cls.__name__} (section {cls.section!r}) declares key(s) {shared}, which "
                f"section {name!r} ({other.__name__}) owns: give them another key"
            )
    SECTIONS.add(cls.section, cls)
    return cls


def plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# -- checks: (key, value) -> None ------------------------------------------------------------


def choice(key: str, value: Any, valid: list[str], extra: str = "") -> None:
    if value not in valid:
        tail = f" {extra}" if extra else ""
        raise ValueError(f"{key}={value!r} is not valid; choose one of {list(valid)}{tail}")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r} must be a positive integer")


def nonnegative_int(note: str = "") -> Check:
    """An int >= 0 (not a bool); ``note`` says what 0 means."""
    tail = f" ({note})" if note else ""

    def check(key: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key}={value!r} must be an integer >= 0{tail}")

    return check


def finite_positive(key: str, value: Any) -> None:
    if not is_number(value) or not 0 < value < math.inf:
        raise ValueError(f"{key}={value!r} must be a finite number > 0")


def finite_nonnegative(key: str, value: Any) -> None:
    if not is_number(value) or not 0 <= value < math.inf:
        raise ValueError(f"{key}={value!r} must be a finite number >= 0")


def finite(key: str, value: Any) -> None:
    if not is_number(value) or not math.isfinite(value):
        raise ValueError(f"{key}={value!r} must be a finite number")


def open_unit(key: str, value: Any) -> None:
    if not is_number(value) or not 0 < value < 1:
        raise ValueError(f"{key}={value!r} must be a number in (0, 1)")


def closed_unit(key: str, value: Any) -> None:
    if not is_number(value) or not 0 <= value <= 1:
        raise ValueError(f"{key}={value!r} must be a number in [0, 1]")


def positive_sizes(key: str, value: Any) -> None:
    if (
        not isinstance(value, tuple | list)
        or not value
        or not all(type(h) is int and h > 0 for h in value)
    ):
        shown = list(value) if isinstance(value, tuple) else value
        raise ValueError(f"{key}={shown!r} must be a non-empty list of positive ints")


def nonempty_name(what: str) -> Check:
    def check(key: str, value: Any) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key}={value!r} must be {what}")

    return check


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a comma-separated list of ints") from exc


def fraction_count(fraction: float, n: int) -> int:
    """``floor(fraction · n)``, robust to float error (0.29 × 100 is 28.999…, counted as 29)."""
    return math.floor(fraction * n + 1e-9)


def replaces_at_least_one(key: str, fraction: float, particles: int) -> None:
    """Selection of ``int(fraction · particles)`` particles must select someone."""
    if fraction_count(fraction, particles) < 1:
        raise ValueError(
            f"{key}={fraction!r} replaces int({fraction!r} × particles={particles}) = 0 "
            f"particles; use at least {1 / particles:.3g} or more particles"
        )
