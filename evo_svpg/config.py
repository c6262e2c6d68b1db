"""Run configuration: the run-level settings composed with the settings of every component.

``RunConfig(**keys)`` takes the flat keys users type (TOML keys, ``--flags`` with ``-`` for
``_``): the run-level ones below and those of every registered settings section
(:data:`~evo_svpg.registry.SECTIONS`, each declared in its component's module). A section is
``cfg["cem"]``; a run-level field is ``cfg.particles``. ``config.json`` shows the structure:
the run-level keys, then one table per section the run uses, then the sections it does not use.

Defaults follow the SVPG paper's CartPole settings (16 particles, α = 10, 10,000 env steps per
particle per iteration, 50 iterations, MLP 100-50-25 tanh, Adam lr 5e-3 and the kernel as in the
original code), on gymnasium's CartPole-v1.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

import evo_svpg.estimators
import evo_svpg.modes
from evo_svpg.policy import ACTIVATIONS, OBS_SCALINGS
from evo_svpg.registry import ESTIMATORS, MODES, OPERATORS, SECTIONS
from evo_svpg.settings import (
    Settings,
    closed_unit,
    nonempty_name,
    nonnegative_int,
    parse_sizes,
    positive_int,
    positive_sizes,
    setting,
)

BACKENDS = ("local", "ray")


def _address(key: str, value: Any) -> None:
    """'', 'auto' (the cluster `ray start` made on this machine) or HOST:PORT (Ray client
    addresses ``ray://HOST:PORT`` too)."""
    address = re.compile(r"(ray://)?[^\s:/]+:\d+")
    valid = isinstance(value, str) and (value in ("", "auto") or address.fullmatch(value))
    if not valid:
        raise ValueError(
            f"{key}={value!r} is not a Ray address: give HOST:PORT such as '10.0.0.1:6379' "
            "(ray start --head prints it), 'auto' for the cluster started on this machine, or "
            "'' for a local Ray that the run starts"
        )


@dataclass(frozen=True)
class RunSettings(Settings):
    """The settings of the run itself (its population, env, budget, policy and bookkeeping)."""

    title = "the run: population, env, budget, policy, bookkeeping"
    mode: str = setting("pure", "composition of operators, see `evo-svpg modes`",
                        choices=MODES.names)  # fmt: skip
    env: str = setting(
        "CartPole-v1", "gymnasium id (fast path: CartPole-v1, Acrobot-v1, ...)",
        check=nonempty_name("a gymnasium id such as 'CartPole-v1'"),
    )  # fmt: skip
    particles: int = setting(16, "number of policies n in the population", check=positive_int)
    iterations: int = setting(50, "training iterations", check=positive_int)
    steps_per_particle: int = setting(
        10_000, "env steps per particle per iteration (seed: 10,000)", check=positive_int
    )
    envs_per_particle: int = setting(
        20, "parallel envs per particle; must divide the steps", check=positive_int
    )
    estimator: str = setting("reinforce", "policy-gradient estimator", choices=ESTIMATORS.names)
    gamma: float = setting(0.99, "discount factor γ", check=closed_unit)
    hidden_sizes: tuple[int, ...] = setting(
        (100, 50, 25), "policy MLP hidden sizes (seed: 100,50,25)", check=positive_sizes,
        parse=parse_sizes,
    )  # fmt: skip
    activation: str = setting("tanh", "hidden activation", choices=lambda: ACTIVATIONS)
    obs_scaling: str = setting(
        "none", "policy input: raw obs, or obs bounds mapped to [-1, 1]",
        choices=lambda: OBS_SCALINGS,
    )  # fmt: skip
    seed: int = setting(
        0, "random seed; the same seed gives the same metrics.csv", check=nonnegative_int()
    )
    device: str = setting(
        "cpu", "torch device for the gradient computation",
        check=nonempty_name("a torch device name such as 'cpu'"),
    )  # fmt: skip
    checkpoint_every: int = setting(
        5, "iterations between checkpoints (and at the end)", check=positive_int
    )
    threads: int = setting(
        2, "particle shards computed in parallel threads (results don't change)",
        check=positive_int,
    )  # fmt: skip
    workers: int = setting(
        0, "worker processes, each sampling a shard of the particles and computing its ∇J "
        "(results don't change); 0: one per usable core, capped by the particles, when an "
        "iteration has at least 50,000 env steps, else 1 (backend='ray': one per CPU of the "
        "cluster)", check=nonnegative_int("0: auto"),
    )  # fmt: skip
    backend: str = setting(
        "local", "where workers run: local processes, or Ray actors on a local Ray or a cluster "
        "(pip install 'evo-svpg[ray]'); results don't change", choices=lambda: BACKENDS,
    )  # fmt: skip
    address: str = setting(
        "", "the Ray cluster's address for backend='ray' (HEAD:6379); '': a local Ray that the "
        "run starts", check=_address,
    )  # fmt: skip
    budget: int = setting(
        0,
        "stop once this many env steps are spent (0: `iterations` alone)",
        check=nonnegative_int("0: no budget"),
    )
    final_eval_episodes: int = setting(
        10, "fresh episodes per particle after training, not charged to env_steps (0: none)",
        check=nonnegative_int(),
    )  # fmt: skip
    max_episode_steps: int = setting(
        0,
        "episode time limit; 0: gymnasium's (MountainCar: 200)",
        check=nonnegative_int("0: off/default"),
    )

    def check_run(self, cfg: RunConfig) -> None:
        if self.address and self.backend != "ray":
            raise ValueError(
                f"address={self.address!r} is a Ray cluster's address: it needs backend='ray' "
                f"(backend={self.backend!r})"
            )
        if self.steps_per_particle % self.envs_per_particle:
            raise ValueError(
                f"steps_per_particle={self.steps_per_particle} must be a multiple of "
                f"envs_per_particle={self.envs_per_particle} (every env takes the same "
                "number of steps per iteration)"
            )


RUN_KEYS = tuple(f.name for f in fields(RunSettings))


def all_keys() -> list[str]:
    """Every flat key: the run's, then each registered section's (ValueError if a section
    claims a run-level key)."""
    keys = [*RUN_KEYS]
    for name, cls in SECTIONS.items():
        clash = sorted(set(cls.keys()) & set(RUN_KEYS))
        if clash:
            raise ValueError(f"section {name!r} declares run-level key(s) {clash}")
        keys += cls.keys()
    return keys


class RunConfig:
    """Everything that determines a run; saved as ``config.json`` next to its results.

    Immutable: :meth:`replace` returns a new config. Construction validates every setting's
    own range, then, for the components the run uses only, the checks that relate settings.
    """

    __slots__ = ("_sections", "run")

    def __init__(self, **keys: Any) -> None:
        unknown = sorted(set(keys) - set(all_keys()))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; valid keys: {all_keys()}")
        object.__setattr__(self, "run", RunSettings.from_flat(keys))
        sections = {name: cls.from_flat(keys) for name, cls in SECTIONS.items()}
        object.__setattr__(self, "_sections", sections)
        self.run.check_run(self)
        for name in self.used_sections:
            self[name].check_run(self)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "run":  # not built yet (copy, pickle): no recursion
            raise AttributeError(name)
        if name in RUN_KEYS:
            return getattr(self.run, name)
        raise AttributeError(
            f"RunConfig has no run-level setting {name!r}; a component's settings are a "
            f"section, e.g. cfg['cem'].candidates (sections: {list(self._sections)})"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("RunConfig is immutable: use cfg.replace(key=value)")

    def __getitem__(self, section: str) -> Any:
        if section not in self._sections:
            raise KeyError(f"no settings section {section!r}; sections: {list(self._sections)}")
        return self._sections[section]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunConfig) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple:
        """Copies and pickles are rebuilt (and so re-validated) from the flat keys."""
        return (_from_flat, (self.to_dict(),))

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.to_dict().items() if v != _DEFAULTS().get(k)}
        return f"RunConfig({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # -- composition ------------------------------------------------------------------------

    @property
    def operator_names(self) -> list[str]:
        """The registered operators this run applies, in order (mode, then measures)."""
        return evo_svpg.modes.operator_names(self)

    @property
    def used_sections(self) -> list[str]:
        """Sections read by the run's operators and estimator, in registration order."""
        used = set(ESTIMATORS.get(self.run.estimator).sections)
        for name in self.operator_names:
            used.update(OPERATORS.get(name).sections)
        return [name for name in self._sections if name in used]

    def unused_changes(self) -> dict[str, Any]:
        """Keys of sections this run does not use whose value is not the default."""
        defaults = _DEFAULTS()
        return {
            key: value
            for name, section in self._sections.items() if name not in self.used_sections
            for key, value in section.to_flat().items() if value != defaults[key]
        }  # fmt: skip

    # -- conversions ------------------------------------------------------------------------

    def subseed(self, stream: int) -> int:
        """Independent seed of random stream ``stream`` (sampler, evaluator, CEM, ...)."""
        return int(np.random.SeedSequence([self.run.seed, stream]).generate_state(1)[0])

    @property
    def steps_per_env(self) -> int:
        return self.run.steps_per_particle // self.run.envs_per_particle

    def replace(self, **changes: Any) -> RunConfig:
        return RunConfig(**{**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Every flat key and its value (what checkpoints compare on ``--resume``)."""
        out = self.run.to_flat()
        for section in self._sections.values():
            out.update(section.to_flat())
        return out

    def to_nested(self) -> dict[str, Any]:
        """``config.json``'s view: run keys, a table per used section, then the unused ones."""
        used = self.used_sections
        out: dict[str, Any] = self.run.to_table()
        for name in used:
            out[name] = self[name].to_table()
        out["unused"] = {n: s.to_table() for n, s in self._sections.items() if n not in used}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        """Build from plain data (TOML/JSON): flat keys, section tables, or both (the nested
        form of ``config.json``); unknown keys are an error listing the valid ones."""
        try:
            return cls(**flatten(data))
        except ValueError as exc:
            if str(exc).startswith("unknown key"):
                raise ValueError(f"{source}: {exc}") from None
            raise

    @classmethod
    def from_saved(cls, data: dict[str, Any], source: str = "saved config") -> RunConfig:
        """A config saved by a run (``config.json``, a checkpoint, a runner's record): a key it
        lacks because it was written before the key existed takes the value runs had then
        (``setting(absent=...)``), not today's default."""
        return cls.from_dict({**absent_values(), **flatten(data)}, source=source)

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(load_toml(path), source=str(path))


def _from_flat(data: dict[str, Any]) -> RunConfig:
    return RunConfig(**data)


def flatten(data: dict[str, Any]) -> dict[str, Any]:
    """Section tables (``{"cem": {"candidates": 4}}``, ``[cem]`` in TOML, config.json's
    ``unused``) turned into flat keys (``cem_candidates``)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "unused" and isinstance(value, dict):
            flat.update(flatten(value))
            continue
        if key in SECTIONS and isinstance(value, dict):
            section = SECTIONS.get(key)
            names = {f.name for f in fields(section)}
            unknown = sorted(set(value) - names)
            if unknown:
                raise ValueError(
                    f"unknown key(s) {unknown} in section [{key}]; valid keys: {sorted(names)}"
                )
            pairs = [(section.key_of(name), v) for name, v in value.items()]
        else:
            pairs = [(key, value)]
        for flat_key, v in pairs:
            if flat_key in flat and flat[flat_key] != v:
                raise ValueError(
                    f"{flat_key} is given twice, {flat[flat_key]!r} and {v!r} (a flat key and "
                    "its section table)"
                )
            flat[flat_key] = v
    return flat


def absent_values() -> dict[str, Any]:
    """``{flat key: value}`` of every setting declared with ``absent`` (see ``from_saved``)."""
    out = RunSettings.absent_values()
    for _, cls in SECTIONS.items():
        out.update(cls.absent_values())
    return out


def _DEFAULTS() -> dict[str, Any]:
    out = RunSettings.defaults()
    for _, cls in SECTIONS.items():
        out.update(cls.defaults())
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file: TOML, or JSON if its name ends in ``.json`` (what ``evo-svpg sweep``
    writes for each run); any problem becomes a ValueError naming the file."""
    is_json = str(path).endswith(".json")
    try:
        with open(path, "rb") as fh:
            data = json.load(fh) if is_json else tomllib.load(fh)
    except OSError as exc:
        raise ValueError(f"cannot read config {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise ValueError(
            f"config {path} is not valid {'JSON' if is_json else 'TOML'}: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must hold a table of keys, not {type(data).__name__}")
    return data


def sections_for_help() -> list[tuple[str, type[Settings]]]:
    """``(title, settings class)``: the run's, then the sections in the order the modes' operators
    first use them, the estimators', and any others (the CLI's flag groups)."""
    order: list[str] = []
    for mode in MODES:
        for op in MODES.get(mode).operators:
            order += OPERATORS.get(op).sections
    for _, entry in [*OPERATORS.items(), *ESTIMATORS.items()]:
        order += entry.sections
    order += SECTIONS.names()
    names = list(dict.fromkeys(order))
    return [
        (RunSettings.title, RunSettings),
        *((SECTIONS.get(n).title or n, SECTIONS.get(n)) for n in names),
    ]
