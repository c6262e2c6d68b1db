"""A sweep's spec: seeds × the Cartesian product of a grid of run-config values.

``SPEC.toml``::

    seeds = [0, 1, 2, 3, 4]
    [base]               # any run-config keys every run gets (flat, or section tables)
    env = "CartPole-v1"
    [grid]               # key -> list of values; every combination is one setting
    mode = ["pure", "independent"]
    alpha = [1, 10]

Settings that are not one product (SVPG under two kernels beside independent workers, which
have no kernel) are several grids, each an ``[[grid]]`` table; the settings are the union of
their products, in order::

    [[grid]]
    mode = ["pure"]
    bandwidth = ["svgd", "svpg_code"]
    [[grid]]
    mode = ["independent", "joint"]

A setting is named by its grid values, ``key=value`` pairs sorted by key and joined by ``,``
(``alpha=10,mode=pure``); its runs live in ``OUT/<setting>/seed<k>/``. Everything is checked
before anything is launched or written: a key that is not a run key, a grid key also in
``base``, an empty grid or value list, a bad seed list, every setting's config (as ``evo-svpg
run`` would check it), and two settings with equal configs, each with a message naming the
problem. (Settings that differ only in a key their mode ignores, such as ``bandwidth`` for
``independent`` workers, are not caught: they run the same thing twice.)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from evo_svpg.config import RunConfig, all_keys, flatten, load_toml

SPEC_KEYS = ("seeds", "base", "grid")
# Set per run by the sweep itself; a spec that sets them is refused with what to use instead.
SWEEP_OWNED = {"seed": "list the seeds in `seeds = [...]`"}


@dataclass(frozen=True)
class Setting:
    """One point of the grid: its name and its grid values."""

    name: str
    values: dict[str, Any]


@dataclass(frozen=True)
class SweepSpec:
    seeds: tuple[int, ...]
    base: dict[str, Any]  # flat run keys every run gets
    grids: tuple[dict[str, tuple], ...]  # each: flat run key -> its values, keys sorted

    @classmethod
    def load(cls, path: str | Path) -> SweepSpec:
        return cls.from_dict(load_toml(path), source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "spec") -> SweepSpec:
        """The spec of ``data`` (a parsed TOML or ``sweep.json``'s ``spec``); ValueError naming
        ``source`` and the problem otherwise."""
        unknown = sorted(set(data) - set(SPEC_KEYS))
        if unknown:
            raise ValueError(
                f"{source}: unknown key(s) {unknown}; a spec has {list(SPEC_KEYS)} (run keys go "
                "in [base] or [grid])"
            )
        seeds = check_seeds(data.get("seeds"), source)
        base = check_base(data.get("base", {}), source)
        grids = _grids(data.get("grid"), source)
        for i, grid in enumerate(grids):
            check_run_keys(grid, "grid" if len(grids) == 1 else f"grid #{i + 1}", base, source)
        spec = cls(seeds, base, grids)
        names = [s.name for s in spec.settings()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"{source}: grid values give the same setting name twice: {twice}")
        return spec

    def to_dict(self) -> dict[str, Any]:
        """The spec as data (``sweep.json``; lists where TOML has lists; one grid as a table)."""
        grids = [{k: list(v) for k, v in grid.items()} for grid in self.grids]
        grid = grids[0] if len(grids) == 1 else grids
        return {"seeds": list(self.seeds), "base": dict(self.base), "grid": grid}

    def settings(self) -> list[Setting]:
        """Every combination of each grid's values, grid after grid, in its key order."""
        points = [
            dict(zip(grid, combo, strict=True))
            for grid in self.grids
            for combo in itertools.product(*grid.values())
        ]
        return [Setting(setting_name(values), values) for values in points]

    def run_keys(self, setting: Setting, seed: int) -> dict[str, Any]:
        """The run-config keys of ``setting``'s run ``seed``."""
        return {**self.base, **setting.values, "seed": seed}

    def check_configs(self, source: str = "spec") -> list[RunConfig]:
        """Every setting's config (at its first seed), checked as values; ValueError naming the
        setting otherwise, or naming two settings whose configs are equal (a grid key set to its
        default in one ``[[grid]]``, ``1`` beside ``1.0``): they would be the same runs twice."""
        configs, seen = [], []  # seen: (config as data, setting name); == makes 10 equal 10.0
        for setting in self.settings():
            try:
                cfg = RunConfig.from_dict(self.run_keys(setting, self.seeds[0]))
            except ValueError as exc:
                raise ValueError(f"{source}: setting {setting.name}: {exc}") from None
            data = cfg.to_dict()
            same = next((name for other, name in seen if other == data), None)
            if same is not None:
                raise ValueError(
                    f"{source}: settings {same} and {setting.name} give the same run config; "
                    "drop one, or give them a key that differs"
                )
            seen.append((data, setting.name))
            configs.append(cfg)
        return configs


def check_base(base: Any, source: str) -> dict[str, Any]:
    """``[base]`` as flat run keys; ValueError naming the first bad one."""
    if not isinstance(base, dict):
        raise ValueError(f"{source}: base must be a table of run keys, not {base!r}")
    try:
        base = flatten(base)
    except ValueError as exc:
        raise ValueError(f"{source}: [base]: {exc}") from None
    check_run_keys(base, "base", {}, source)
    return base


def check_run_keys(keys: dict[str, Any], where: str, base: dict[str, Any], source: str) -> None:
    """Every key of table ``where`` a run key the sweep does not own, and none also in base."""
    valid = set(all_keys())
    for key in keys:
        if key in SWEEP_OWNED:
            raise ValueError(f"{source}: [{where}] sets {key!r}: {SWEEP_OWNED[key]}")
        if key not in valid:
            raise ValueError(
                f"{source}: [{where}] key {key!r} is not a run key (`evo-svpg run --help` "
                "lists them, as --flag-names with - for _)"
            )
    both = sorted(set(base) & set(keys))
    if both:
        raise ValueError(f"{source}: {both} in both [base] and [{where}]: keep each in one")


def check_seeds(value: Any, source: str) -> tuple[int, ...]:
    ok = (
        isinstance(value, list)
        and value
        and all(type(s) is int and s >= 0 for s in value)
        and len(set(value)) == len(value)
    )
    if not ok:
        raise ValueError(
            f"{source}: seeds={value!r} must be a non-empty list of distinct integers >= 0, "
            "e.g. seeds = [0, 1, 2, 3, 4]"
        )
    return tuple(value)


def _grids(value: Any, source: str) -> tuple[dict[str, tuple], ...]:
    """``[grid]`` (one table) or ``[[grid]]`` (a list of tables), each checked."""
    if isinstance(value, list) and value and all(isinstance(g, dict) for g in value):
        where = [f"[[grid]] {i + 1}" for i in range(len(value))]
        return tuple(_grid(g, source, w) for g, w in zip(value, where, strict=True))
    return (_grid(value, source, "[grid]"),)


def _grid(value: Any, source: str, where: str) -> dict[str, tuple]:
    if not isinstance(value, dict) or not value:
        raise ValueError(
            f"{source}: {where} is empty: give it at least one run key with a list of "
            'values, e.g. mode = ["pure", "independent"]'
        )
    grid = {}
    for key in sorted(value):
        values = value[key]
        if not isinstance(values, list) or not values:
            raise ValueError(
                f"{source}: {where} {key} = {values!r} must be a non-empty list of values, e.g. "
                f"{key} = [...]"
            )
        texts = [render(v) for v in values]
        if len(set(texts)) != len(texts):
            raise ValueError(f"{source}: {where} {key} = {values!r} lists a value twice")
        grid[key] = tuple(values)
    return grid


def render(value: Any) -> str:
    """A grid value as it appears in a setting name: file-name safe (``/`` becomes ``%2F``)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple):
        text = "-".join(render(v) for v in value)
    else:
        text = str(value)
    return quote(text, safe="-_.+~")


def setting_name(values: dict[str, Any]) -> str:
    """``key=value`` pairs sorted by key, joined by ``,`` (``alpha=10,mode=pure``)."""
    return ",".join(f"{k}={render(values[k])}" for k in sorted(values))
