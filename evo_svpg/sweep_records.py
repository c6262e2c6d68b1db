"""A finished sweep run's record: ``DIR/<setting>/seed<k>.record.json``, small enough to commit.

A run directory holds checkpoints, metrics and logs (megabytes). When a run of a sweep has
finished, the sweep writes its record beside it: the keys it was started with, its whole
``summary.json``, the wall seconds of its processes and its training curves (best and mean
particle return per iteration, pooled over the run's window, as :func:`evo_svpg.plot.load_curves`
gives them; rounded to 1e-3). ``evo-svpg report`` reads a run from its record when it has one,
and a sweep counts a run with a record as finished, so a sweep directory whose run directories
were lost (a new machine, a fresh clone of committed records) keeps its finished runs and runs
only the others.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from evo_svpg.plot import load_curves
from evo_svpg.report import strict_json
from evo_svpg.rundir import atomic_write_bytes

RECORD_VERSION = 1
CURVES = ("env_steps", "best", "mean")  # per iteration
FIELDS = {"version": int, "setting": str, "seed": int, "keys": dict, "summary": dict,
          "seconds": (int, float, type(None)), "curves": dict}  # fmt: skip


def read_seconds(path: Path) -> float | None:
    """The total in a run's ``seed<k>.seconds`` (its processes' wall seconds, all sessions), or
    None if it has none."""
    return float(path.read_text()) if path.exists() else None


def record_path(run_path: Path) -> Path:
    """``DIR/<setting>/seed<k>.record.json`` of the run directory ``DIR/<setting>/seed<k>``."""
    return run_path.with_name(run_path.name + ".record.json")


def _rounded(values: np.ndarray) -> list[float | None]:
    return [round(float(v), 3) if math.isfinite(v) else None for v in values]


def run_curves(run_path: Path) -> dict[str, list]:
    """The record's curves of the run in ``run_path``: env steps, and the best and mean particle
    return per iteration rounded to 1e-3 (``None`` where no episode ended). A report reads a run
    without a record through this too, so both give the same numbers."""
    curves = load_curves(run_path)
    return {
        "env_steps": [int(s) for s in curves["env_steps"]],
        "best": _rounded(curves["best"]),
        "mean": _rounded(curves["mean"]),
    }


def as_arrays(curves: dict[str, list]) -> dict[str, np.ndarray]:
    """Curves as float arrays, ``None`` as NaN."""
    return {
        k: np.array([math.nan if v is None else v for v in curves[k]], dtype=float) for k in CURVES
    }


def make_record(
    run_path: Path, setting: str, seed: int, keys: dict[str, Any], seconds: float | None
) -> dict[str, Any]:
    """The record of the finished run in ``run_path`` (its ``summary.json`` and ``metrics.csv``)."""
    summary = json.loads((run_path / "summary.json").read_text())
    return {
        "version": RECORD_VERSION,
        "setting": setting,
        "seed": seed,
        "keys": keys,
        "summary": strict_json(summary),
        "seconds": None if seconds is None else round(float(seconds), 3),
        "curves": run_curves(run_path),
    }


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` whole or not at all (one line of JSON)."""
    text = json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n"
    atomic_write_bytes(path, lambda fh: fh.write(text.encode()))


def read_record(path: Path, setting: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """The record in ``path`` (curves as float arrays, ``None`` as NaN); ValueError naming the
    file and the problem if it is not a record (of ``setting``'s run ``seed``, if given)."""
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not a run record ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a run record (a JSON object was expected)")
    for key, kind in FIELDS.items():
        if not isinstance(record.get(key), kind):
            raise ValueError(f"{path}: field {key!r} = {record.get(key)!r} is missing or wrong")
    if record["version"] != RECORD_VERSION:
        raise ValueError(
            f"{path}: record version {record['version']}; this evo_svpg reads {RECORD_VERSION}"
        )
    for key, expected in (("setting", setting), ("seed", seed)):
        if expected is not None and record[key] != expected:
            raise ValueError(f"{path}: the record of {key} {record[key]!r}, not {expected!r}")
    curves = record["curves"]
    lengths = {len(curves.get(k) or []) for k in CURVES}
    if set(curves) != set(CURVES) or len(lengths) != 1 or not lengths.pop():
        raise ValueError(f"{path}: curves must hold {list(CURVES)}, non-empty, of one length")
    record["curves"] = as_arrays(curves)
    return record
