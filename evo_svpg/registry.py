"""Name → component registries: what the CLI, ``evo-svpg modes``, the README tables and the
tests read. A component registers itself in its own module; nothing here imports evo_svpg.

=================== ======================================================================
registry            entries
=================== ======================================================================
``SECTIONS``        a component's settings (:class:`evo_svpg.settings.Settings` subclass)
``OPERATORS``       :class:`ComponentEntry`: builds an operator of a run
``ESTIMATORS``      :class:`ComponentEntry`: builds the run's policy-gradient estimator
``MODES``           :class:`evo_svpg.modes.Mode`: a named composition of operators
``FAST_PATHS``      a numpy batched env class per gymnasium id
``DESCRIPTORS``     :class:`evo_svpg.behaviour.Descriptor`: what an episode did
``OBSERVATION_ROLES`` per env id, which observation entries a descriptor reads (x, v)
=================== ======================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered ``name → entry`` map whose lookups fail with the valid choices.

    ``field`` is the config key a user types to pick an entry (``mode``, ``estimator``, ...):
    errors name it, the value and the registered names.
    """

    def __init__(self, field: str) -> None:
        self.field = field
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.field} needs a non-empty name, got {name!r}")
        old = self._entries.get(name)
        if old is not None and old is not entry and _origin(old) != _origin(entry):
            raise ValueError(f"{self.field} {name!r} is already registered ({_origin(old)})")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def remove(self, name: str) -> None:
        """Forget ``name`` (tests and notebooks that register a component temporarily)."""
        self._entries.pop(name, None)

    def get(self, name: Any) -> T:
        if name not in self._entries:
            raise ValueError(f"{self.field}={name!r} is not valid; choose one of {self.names()}")
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)


def _origin(entry: Any) -> str:
    """Where an entry was defined: the same name from the same place is a module reload (it
    replaces the entry), from anywhere else a clash."""
    target = getattr(entry, "build", entry)
    if not hasattr(target, "__qualname__"):
        target = type(target)
    return f"{getattr(target, '__module__', '?')}.{target.__qualname__}"


@dataclass(frozen=True)
class ComponentEntry:
    """A registered operator or estimator.

    ``build(b)`` returns the component for a run (``b``: :class:`evo_svpg.operators.Build`);
    ``sections`` names the settings sections it reads (so a run knows which settings it uses);
    ``doc`` is a one-line description for tables; ``capabilities`` holds an estimator's
    declared abilities (:class:`evo_svpg.estimators.Capabilities`).
    """

    name: str
    build: Callable[..., Any]
    sections: tuple[str, ...] = ()
    doc: str = ""
    capabilities: Any = None
    appended_when: Callable[[Any], bool] | None = None  # measures: appended if this(cfg)


SECTIONS: Registry[Any] = Registry("settings section")
OPERATORS: Registry[ComponentEntry] = Registry("operator")
ESTIMATORS: Registry[ComponentEntry] = Registry("estimator")
MODES: Registry[Any] = Registry("mode")
FAST_PATHS: Registry[Any] = Registry("env")
DESCRIPTORS: Registry[Any] = Registry("descriptor")
OBSERVATION_ROLES: Registry[Any] = Registry("env")
