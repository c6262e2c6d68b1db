"""Compact records of finished runs: what a runner's table is made of, small enough to commit.

A run directory holds checkpoints, metrics and logs (megabytes; never committed). When a run has
finished, the runner writes ``OUT/records/<label>/seed<k>.json``: the run's config (as its
``config.json`` holds it), its wall seconds, its fresh evaluation, its best and mean
particle per iteration and each particle's final training return. Tables are computed from
records only, so committed records rebuild a table on any machine, and a runner whose ``OUT``
holds records launches only the runs they lack (after checking that each record was made with
the setting its flags give now).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import fresh_returns, run_dir, run_setting, setting_mismatch

from evo_svpg.config import RunConfig
from evo_svpg.plot import load_curves
from evo_svpg.rundir import atomic_write_bytes

RECORD_VERSION = 1
CURVES = ("best_particle", "mean_particle")  # per iteration, the training return
ARRAYS = (*CURVES, "final_particle_returns")
FIELDS = {  # key: type, of every record
    "version": int, "label": str, "seed": int, "config": dict, "wall_seconds": float,
    "fresh": dict, "iterations": int, **dict.fromkeys(ARRAYS, list),
}  # fmt: skip


def record_path(out: Path, label: str, seed: int) -> Path:
    return out / "records" / label / f"seed{seed}.json"


def _rounded(values) -> list[float | None]:
    """1e-3 of a return is enough; NaN (no episode ended) is stored as null."""
    return [round(float(v), 3) if math.isfinite(v) else None for v in values]


def write_record(out: Path, label: str, seed: int) -> dict:
    """Write the record of the finished run ``run_dir(out, label, seed)`` (atomically; only if
    its content changed, saying so when it replaces one). Records are derived: a correction
    belongs in the run directory (or its ``.wall``), from which the record is rewritten."""
    run = run_dir(out, label, seed)
    try:
        config = json.loads((run / "config.json").read_text())["config"]
        curves = load_curves(run, window=1)  # whole episodes: every iteration's own episodes
        summary = json.loads((run / "summary.json").read_text())
        record = {
            "version": RECORD_VERSION, "label": label, "seed": seed, "config": config,
            "wall_seconds": float(run.with_name(run.name + ".wall").read_text()),
            "fresh": {k: (v if math.isfinite(v) else None) for k, v in fresh_returns(run).items()},
            "iterations": len(curves["best"]),
            "best_particle": _rounded(curves["best"]), "mean_particle": _rounded(curves["mean"]),
            # each particle's training return over the run's final window (its summary.json)
            "final_particle_returns": _rounded(summary["final_particle_returns"]),
        }  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"error: cannot record the run {run}: {exc!r}") from None
    path = record_path(out, label, seed)
    text = json.dumps(record, allow_nan=False) + "\n"
    if path.is_file():
        if path.read_text() == text:
            return record  # (written as the run finished, or at an earlier tabulation)
        print(f"  {path}: rewritten from its run directory (values changed)", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, lambda fh: fh.write(text.encode()))
    return record


def read_record(path: Path, label: str | None = None, seed: int | None = None) -> dict:
    """A record with its arrays as float arrays (null → NaN); ValueError naming the file if it
    is not a record this version reads (or not the run ``label``/``seed`` its path says)."""
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
        if record.get("version") != RECORD_VERSION:
            raise ValueError(f"version {record.get('version')!r}, this code reads {RECORD_VERSION}")
        for key, kind in FIELDS.items():
            value = record.get(key)
            if not isinstance(value, int | float if kind is float else kind):
                raise ValueError(f"{key} is {value!r}, not a {kind.__name__}")
        for key in ARRAYS:
            record[key] = np.array([np.nan if v is None else v for v in record[key]], float)
        if not len(record["best_particle"]) == len(record["mean_particle"]) == record["iterations"]:
            raise ValueError(f"curves of another length than its {record['iterations']} iterations")
        if (label, seed) != (None, None) and (record["label"], record["seed"]) != (label, seed):
            raise ValueError(
                f"it is {record['label']} seed {record['seed']}, not {label} seed {seed}"
            )
        record["fresh"] = {k: np.nan if v is None else v for k, v in record["fresh"].items()}
        record["setting"] = run_setting(RunConfig.from_saved(record["config"], source=str(path)))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a run record ({exc})") from exc
    return record


def recorded(out: Path, labels: list[str], seeds: int) -> set[tuple[str, int]]:
    """The (label, seed) runs that ``out`` holds records of."""
    return {(lb, s) for lb in labels for s in range(seeds) if record_path(out, lb, s).is_file()}


def check_records(
    out: Path, labels: list[str], seeds: int, flags: Callable[[str, int], list[str]]
) -> None:
    """Refuse (SystemExit) records that aren't records or were made with another setting than
    ``flags(label, seed)`` give now (the check :func:`_common.check_existing_runs` makes for run
    directories; a key added to the config since counts as its default in both). Records
    outside the grid (other cells, seeds ≥ ``seeds``) are named, not used."""
    problems = []
    for label, seed in sorted(recorded(out, labels, seeds)):
        path = record_path(out, label, seed)
        try:
            saved = read_record(path, label, seed)["setting"]
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
        problems.append(setting_mismatch(path, saved, label, seed, None, flags, mode_flag=False))
    problems = [p for p in problems if p]
    if problems:
        raise SystemExit(
            f"error: {len(problems)} record(s) under {out} were made with another setting than "
            f"these flags give: {'; '.join(problems[:5])}; use the flags that give the records' "
            "setting, another --out, or delete the records named to run those runs again"
        )
    grid = {record_path(out, lb, s) for lb in labels for s in range(seeds)}
    outside = sorted(p for p in (out / "records").glob("**/seed*.json") if p not in grid)
    if outside:
        shown = ", ".join(str(p.relative_to(out / "records")) for p in outside[:3])
        print(f"note: {len(outside)} record(s) under {out / 'records'} are outside this grid "
              f"(--estimators, --envs, --variants, --seeds) and not used: {shown}"
              f"{', ...' if len(outside) > 3 else ''}")  # fmt: skip


def collect_records(
    out: Path, labels: list[str], seeds: int, finished: Callable[[Path], bool]
) -> dict[tuple[str, int], dict]:
    """Every run's record: written afresh from its run directory when that has ``finished``
    (a run directory is the source; its record follows it), else read from ``out/records``
    if there; runs with neither are missing from the result."""
    records = {}
    for label in labels:
        for seed in range(seeds):
            if finished(run_dir(out, label, seed)):
                write_record(out, label, seed)
            path = record_path(out, label, seed)
            if path.is_file():
                records[(label, seed)] = read_record(path, label, seed)
    return records
