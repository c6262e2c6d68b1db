"""What the comparison runners share: launching CLI runs, bootstrap intervals, curves on a grid.

Runners import this module (they run from ``runners/``); they never copy code from ``evo_svpg``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from evo_svpg.plot import load_curves


def launch(run_dir: Path, flags: list[str]) -> float:
    """Run ``evo-svpg run FLAGS --out RUN_DIR`` in its own process; its total wall seconds.

    A directory that already holds a run (an interrupted comparison) is resumed instead, so
    re-running a runner after Ctrl-C loses nothing. The run's output goes to ``RUN_DIR.log``.
    """
    cmd = [sys.executable, "-m", "evo_svpg.cli", "run", *flags, "--out", str(run_dir)]
    if (run_dir / "metrics.csv").exists():
        cmd = [sys.executable, "-m", "evo_svpg.cli", "run", "--resume", str(run_dir)]
    log = run_dir.with_name(run_dir.name + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"run failed (exit {proc.returncode}): {' '.join(cmd)}; see {log}")
    # Wall time accumulates over the sessions of a run (first launch, resumes).
    wall_file = run_dir.with_name(run_dir.name + ".wall")
    before = float(wall_file.read_text()) if wall_file.exists() else 0.0
    total = before + time.perf_counter() - start
    wall_file.write_text(f"{total:.3f}\n")
    return total


NO_ITERATION_LIMIT = 1_000_000  # the budget ends every run


def run_dir(out: Path, mode: str, seed: int) -> Path:
    return out / mode / f"seed{seed}"


def finished(path: Path, budget: int) -> bool:
    """The run in ``path`` has spent ``budget`` env steps (and its wall time is recorded)."""
    summary = path / "summary.json"
    wall = path.with_name(path.name + ".wall")
    if not (summary.exists() and wall.exists()):
        return False
    return json.loads(summary.read_text())["env_steps"] >= budget


def check_settings(out: Path, settings: dict) -> None:
    """Refuse to mix runs: ``out`` keeps the settings it was made with (``runner.json``).

    Re-running a runner with the same settings resumes or re-tabulates; with other settings
    (budget, flags, task) it would label old runs with new settings, so it stops instead.
    """
    path = out / "runner.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != settings:
            changed = sorted(
                k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k)
            )
            raise SystemExit(
                f"error: {out} holds runs made with other settings ({', '.join(changed)}: "
                f"{[saved.get(k) for k in changed]} there, {[settings.get(k) for k in changed]} "
                "now); use another --out, or the same settings to resume and re-tabulate"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def run_all(
    out: Path,
    modes: list[str],
    seeds: int,
    budget: int,
    jobs: int,
    flags: Callable[[str, int], list[str]],
) -> dict[tuple[str, int], float]:
    """Every (mode, seed) run to ``budget`` env steps, ``jobs`` processes at a time.

    ``flags(mode, seed)`` gives the run's own flags; the budget, seed, mode and thread flags are
    added here. Finished runs are skipped, unfinished ones resumed. Returns wall seconds per run.
    """
    threads = max(1, (os.cpu_count() or 1) // jobs)  # each process: its share of the cores

    def one(job: tuple[str, int]) -> float:
        mode, seed = job
        path = run_dir(out, mode, seed)
        if finished(path, budget):  # a re-run of the runner only redoes the tables
            return float(path.with_name(path.name + ".wall").read_text())
        wall = launch(
            path,
            [
                "--mode", mode, "--seed", str(seed), "--budget", str(budget),
                "--iterations", str(NO_ITERATION_LIMIT), "--threads", str(threads),
                *flags(mode, seed),
            ],
        )  # fmt: skip
        print(f"  {mode} seed {seed}: {wall:.0f} s", flush=True)
        return wall

    grid = [(m, s) for m in modes for s in range(seeds)]
    with ThreadPoolExecutor(jobs) as pool:
        return dict(zip(grid, pool.map(one, grid), strict=True))


def write_outputs(out: Path, table: str, summary: dict, plot) -> None:
    """Print ``table``; write ``table.md``, ``summary.json`` and ``plot(out / "curves.png")``."""
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps(_strict(summary), indent=2) + "\n")
    plot(out / "curves.png")
    print(f"wrote {out}/table.md, summary.json, curves.png")


def _strict(value):
    """JSON without the non-standard ``Infinity``/``NaN``: non-finite numbers become null."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def bootstrap_median_ci(
    values: np.ndarray, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """``(median, low, high)``: percentile bootstrap interval of the median over seeds.

    With 5 seeds the interval can only take the values of the seeds themselves; it says how
    much the median would move with other seeds, not more.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (np.nan, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    samples = rng.choice(values, size=(resamples, values.size), replace=True)
    medians = np.median(samples, axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(medians, [tail, 1 - tail])
    return float(np.median(values)), float(low), float(high)


def fmt_ci(stats: tuple[float, float, float]) -> str:
    median, low, high = stats
    return f"{median:.1f} [{low:.1f}, {high:.1f}]"


def curves_on_grid(run_dirs: list[Path], grid: np.ndarray) -> dict[str, np.ndarray]:
    """Best/mean particle return of each run at the env-step ``grid``: ``[runs, len(grid)]``.

    Runs of different modes spend different env steps per iteration; each curve is held at
    its last value until the next iteration (a step function), NaN before its first value.
    """
    out: dict[str, list[np.ndarray]] = {"best": [], "mean": [], "episode_mean": []}
    for run_dir in run_dirs:
        curves = load_curves(run_dir)
        steps = curves["env_steps"]
        index = np.searchsorted(steps, grid, side="right") - 1
        for key in out:
            values = forward_fill(curves[key])
            row = np.where(index >= 0, values[np.clip(index, 0, None)], np.nan)
            out[key].append(row)
    return {key: np.array(rows) for key, rows in out.items()}


def scalar_on_grid(run_dirs: list[Path], name: str, grid: np.ndarray) -> np.ndarray:
    """A ``scalars.csv`` diagnostic of each run at the env-step ``grid`` (held like the curves)."""
    rows = []
    for run_dir in run_dirs:
        steps, values = scalar_series(run_dir, name)
        index = np.searchsorted(steps, grid, side="right") - 1
        rows.append(np.where(index >= 0, values[np.clip(index, 0, None)], np.nan))
    return np.array(rows)


FINAL_SHARE = 0.1  # "final" = the average over the last 10 % of the budget


def final_returns(path: Path, budget: int) -> dict[str, float]:
    """Best/mean particle return (and the all-episode mean return, ``episode_mean``) averaged
    over the iterations in the last 10 % of the budget.

    One iteration's value alone depends on which episodes happened to end in it (on
    MountainCarContinuous, 999-step episodes end every other iteration); iterations where none
    ended hold the previous value.
    """
    curves = load_curves(path)
    late = curves["env_steps"] > (1 - FINAL_SHARE) * budget
    late[-1] = True
    final = {}
    for key in ("best", "mean", "episode_mean"):
        values = forward_fill(curves[key])[late]
        final[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    final["iterations"] = int(curves["iteration"][-1])
    final["env_steps"] = int(curves["env_steps"][-1])
    return final


def forward_fill(values: np.ndarray) -> np.ndarray:
    """Iterations where no episode ended (NaN) keep the previous value."""
    filled = values.copy()
    for i in range(1, filled.size):
        if np.isnan(filled[i]):
            filled[i] = filled[i - 1]
    return filled


def scalar_series(run_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(env_steps, values)`` of one diagnostic from a run's ``scalars.csv``."""
    data = np.atleast_1d(
        np.genfromtxt(run_dir / "scalars.csv", delimiter=",", names=True, dtype=None,
                      encoding="utf-8")
    )  # fmt: skip
    rows = data[data["name"] == name]
    return rows["env_steps"].astype(np.int64), rows["value"].astype(np.float64)
