"""What ``paper_table1.py`` (and its records) uses: checking its flags, one runner per output
directory, launching CLI runs, the runs' fresh returns, bootstrap intervals. The comparisons
that used to be runners are sweep specs under ``configs/sweeps/`` (``evo-svpg sweep``).

Runners import this module (they run from ``runners/``); they never copy code from ``evo_svpg``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import numpy as np

from evo_svpg.cli import config_of_flags
from evo_svpg.config import RunConfig, all_keys
from evo_svpg.report import strict_json
from evo_svpg.run_state import RESUME_OVERRIDABLE
from evo_svpg.rundir import RunLock, make_directory


class RunnerParser(argparse.ArgumentParser):
    """A runner's flags: spelled out in full (``--seed`` is not ``--seeds``), and any usage
    error is one line on stderr with exit code 2."""

    def __init__(self, **kwargs) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# What a runner sets in every run itself, and what to use instead of passing it after ``--``.
RESERVED = {
    "--seed": "--seeds N runs seeds 0..N-1",
    "--mode": "--modes M [M ...] chooses the modes",
    "--budget": "the runner's --budget sets every run's env-step budget",
    "--iterations": "every run is stopped by the runner's --budget",
    "--out": "the runner's --out holds every run, as OUT/<mode>/seed<k>",
    "--resume": "re-run the runner with the same settings to resume unfinished runs",
    "--config": "a config file could change the seed, mode or budget: pass its keys as flags",
    "--threads": "each run gets its share of the cores, cpu_count // --jobs",
    "--workers": "each run is one process: runners use the cores with --jobs",
}
# Every flag of `evo-svpg run` (to see which one an abbreviation stands for, as argparse does).
RUN_FLAGS = frozenset(
    ["--" + key.replace("_", "-") for key in all_keys()]
    + ["--config", "--out", "--resume", "--help"]
)


def extra_flag_collision(extra: Sequence[str], reserved: dict[str, str]) -> str | None:
    """The message for the first flag in ``extra`` that would override one the runner sets
    (``--seed 7``, ``--seed=7``, or an abbreviation ``evo-svpg run`` would expand to it), or None.
    """
    for token in extra:
        if not token.startswith("--") or token == "--":
            continue
        name = token.split("=", 1)[0]
        flag = name if name in RUN_FLAGS else _expansion(name)
        if flag in reserved:
            return f"extra run flag {token} collides with the runner's own {flag}: {reserved[flag]}"
    return None


def _expansion(name: str) -> str | None:
    """The `evo-svpg run` flag an unambiguous prefix stands for (argparse's abbreviations)."""
    matches = [flag for flag in RUN_FLAGS if flag.startswith(name)]
    return matches[0] if len(matches) == 1 else None


@contextmanager
def runner_out(parser: argparse.ArgumentParser, out: Path, settings: dict) -> Iterator[None]:
    """Hold ``out`` for this runner (one runner per ``--out``: a second one is refused naming
    the holder) and refuse it if it holds runs made with other settings (:func:`check_settings`).
    Call it after :func:`validate`: nothing is written before the flags are checked."""
    try:
        make_directory(out)
        lock = RunLock(out, "runner")
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    try:
        check_settings(out, settings)
        yield
    finally:
        lock.release()


class RunFailed(RuntimeError):
    """An `evo-svpg run` process ended with an error (its log says which)."""


def launch(run_dir: Path, flags: list[str]) -> float:
    """Run ``evo-svpg run FLAGS --out RUN_DIR`` in its own process; its total wall seconds.

    A directory that already holds a run (an interrupted comparison) is resumed instead, so
    re-running a runner after Ctrl-C loses nothing. The run's output goes to ``RUN_DIR.log``,
    the seconds of all its sessions so far to ``RUN_DIR.sessions``, and, once it has finished,
    their total to ``RUN_DIR.wall`` (:func:`finished`). A session cut short by killing the
    runner itself (SIGKILL) is not counted.
    """
    cmd = [sys.executable, "-m", "evo_svpg.cli", "run", *flags, "--out", str(run_dir)]
    if (run_dir / "config.json").exists() and not (run_dir / "checkpoint.pt").exists():
        # Killed before its first checkpoint: it cannot be resumed. Keep it aside, start again.
        aside = run_dir.with_name(f"{run_dir.name}.unresumable-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(aside)
        print(f"  {run_dir} had no checkpoint to resume from: moved to {aside}, started again")
    if (run_dir / "metrics.csv").exists():
        cmd = [sys.executable, "-m", "evo_svpg.cli", "run", "--resume", str(run_dir)]
    log = run_dir.with_name(run_dir.name + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    # Wall time accumulates over the sessions of a run (first launch, resumes), whether a
    # session ends the run, fails or is interrupted: each one computed.
    sessions = run_dir.with_name(run_dir.name + ".sessions")
    start = time.perf_counter()
    try:
        with open(log, "a") as fh:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    finally:
        spent = float(sessions.read_text()) if sessions.exists() else 0.0
        sessions.write_text(f"{spent + time.perf_counter() - start:.3f}\n")
    if proc.returncode != 0:
        raise RunFailed(f"exit {proc.returncode}, see {log}")
    total = sessions.read_text()
    run_dir.with_name(run_dir.name + ".wall").write_text(total)  # the run has finished
    return float(total)


NO_ITERATION_LIMIT = 1_000_000  # the budget ends every run


def run_dir(out: Path, mode: str, seed: int) -> Path:
    return out / mode / f"seed{seed}"


def finished(path: Path, budget: int | None) -> bool:
    """The run in ``path`` has ended (its wall time is recorded) and, with a ``budget``, spent
    ``budget`` env steps."""
    summary = path / "summary.json"
    wall = path.with_name(path.name + ".wall")
    if not (summary.exists() and wall.exists()):
        return False
    return budget is None or json.loads(summary.read_text())["env_steps"] >= budget


def check_settings(out: Path, settings: dict) -> None:
    """Refuse to mix runs: ``out`` keeps the settings it was made with (``runner.json``).

    Re-running a runner with the same settings resumes or re-tabulates; with other settings
    (budget, flags, task) it would label old runs with new settings, so it stops instead.
    """
    path = out / "runner.json"
    if path.exists():
        # Keys the runner no longer records (its runs check them one by one) don't count.
        saved = {k: v for k, v in json.loads(path.read_text()).items() if k in settings}
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


def _full_flags(
    mode: str, seed: int, budget: int | None, threads: int, flags: list[str], mode_flag: bool
) -> list[str]:
    """The `evo-svpg run` flags of one run of :func:`run_all` (without ``--out``)."""
    limit = [] if budget is None else [
        "--budget", str(budget), "--iterations", str(NO_ITERATION_LIMIT)
    ]  # fmt: skip
    return [
        *(["--mode", mode] if mode_flag else []),
        "--seed",
        str(seed),
        *limit,
        "--threads",
        str(threads),
        "--workers",
        "1",
        *flags,
    ]  # fmt: skip  (runners spread runs over the cores with --jobs, not one run over workers)


# Keys a resume may change without changing what a run computes (threads, device, ...).
_NOT_A_SETTING = frozenset(RESUME_OVERRIDABLE) - {"iterations", "budget"}


def run_setting(cfg: RunConfig) -> dict:
    """What a run computes: its run keys and used sections, flat, without the keys a resume
    may change (threads, device, ...). Unused sections (the kernel of a joint run) don't count."""
    nested = cfg.to_nested()
    nested.pop("unused")
    flat = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif key not in _NOT_A_SETTING:
            flat[key] = value
    return flat


def setting_of_flags(
    mode: str, seed: int, budget: int | None, flags: list[str], *, mode_flag: bool = True
) -> dict:
    """The :func:`run_setting` that :func:`run_all` would launch ``mode``'s run ``seed`` with."""
    return run_setting(config_of_flags(_full_flags(mode, seed, budget, 1, flags, mode_flag)))


def setting_mismatch(
    where: Path,
    saved: dict,
    mode: str,
    seed: int,
    budget: int | None,
    flags: Callable[[str, int], list[str]],
    *,
    mode_flag: bool = True,
) -> str | None:
    """``WHERE: key = saved there, now now, ...`` (first 4 keys) when the setting ``saved``
    (:func:`run_setting`) differs from what the flags give ``mode``'s run ``seed`` now."""
    now = setting_of_flags(mode, seed, budget, flags(mode, seed), mode_flag=mode_flag)
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if not changed:
        return None
    return f"{where}: " + ", ".join(
        f"{k} = {saved.get(k)!r} there, {now.get(k)!r} now" for k in changed[:4]
    )


def check_existing_runs(
    out: Path,
    modes: list[str],
    seeds: int,
    budget: int | None,
    flags: Callable[[str, int], list[str]],
    *,
    mode_flag: bool = True,
) -> None:
    """Refuse (SystemExit) when a run directory under ``out`` was made with another setting
    than the flags would give now: a changed default, an edited config file or other flags
    would otherwise mix runs of two settings in one table. Legacy ``runner.json`` files can't
    say this; each run's ``config.json`` can."""
    problems = []
    for mode in modes:
        for seed in range(seeds):
            path = run_dir(out, mode, seed)
            if not (path / "config.json").is_file():
                continue
            saved_data = json.loads((path / "config.json").read_text())["config"]
            saved = run_setting(RunConfig.from_saved(saved_data, source=str(path / "config.json")))
            problems.append(
                setting_mismatch(path, saved, mode, seed, budget, flags, mode_flag=mode_flag)
            )
    problems = [p for p in problems if p]
    if problems:
        raise SystemExit(
            f"error: {len(problems)} run(s) under {out} were made with another setting than "
            f"these flags give (a default or a config file changed?): {'; '.join(problems[:5])}"
            "; use another --out, or flags that give the runs' setting"
        )


def run_all(
    out: Path,
    modes: list[str],
    seeds: int,
    budget: int | None,
    jobs: int,
    flags: Callable[[str, int], list[str]],
    *,
    mode_flag: bool = True,
    seed_major: bool = False,
    skip: Collection[tuple[str, int]] = (),
    on_finished: Callable[[str, int], None] | None = None,
) -> dict[tuple[str, int], float]:
    """Every (mode, seed) run, ``jobs`` processes at a time: to ``budget`` env steps, or with
    ``budget=None`` for the iterations its flags give.

    ``flags(mode, seed)`` gives the run's own flags; the budget, seed, thread and (with
    ``mode_flag``) ``--mode`` flags are added here; without it ``modes`` are labels (run
    directories ``OUT/<label>/seed<k>``) whose flags name the mode. ``seed_major`` launches
    seed 0 of every label first, so an interrupted grid has comparable first seeds. Finished
    runs and the (mode, seed) runs in ``skip`` (known from elsewhere, e.g. committed records)
    are not launched, unfinished ones are resumed; ``on_finished(mode, seed)`` is called as
    each launched run finishes. Returns the wall seconds of every run not skipped.
    """
    check_existing_runs(out, modes, seeds, budget, flags, mode_flag=mode_flag)
    threads = max(1, (os.cpu_count() or 1) // jobs)  # each process: its share of the cores

    failed: list[str] = []

    def one(job: tuple[str, int]) -> float:
        mode, seed = job
        path = run_dir(out, mode, seed)
        if finished(path, budget):  # a re-run of the runner only redoes the tables
            return float(path.with_name(path.name + ".wall").read_text())
        try:
            wall = launch(
                path, _full_flags(mode, seed, budget, threads, flags(mode, seed), mode_flag)
            )
        except RunFailed as exc:
            failed.append(f"{mode} seed {seed} ({exc})")
            print(f"  {mode} seed {seed}: FAILED ({exc})", flush=True)
            return float("nan")
        print(f"  {mode} seed {seed}: {wall:.0f} s", flush=True)
        if on_finished is not None:
            on_finished(mode, seed)
        return wall

    grid = [(m, s) for m in modes for s in range(seeds)]
    if seed_major:
        grid = [(m, s) for s in range(seeds) for m in modes]
    grid = [job for job in grid if job not in skip]
    with ThreadPoolExecutor(jobs) as pool:
        walls = dict(zip(grid, pool.map(one, grid), strict=True))
    if failed:
        raise SystemExit(
            f"error: {len(failed)} run(s) failed: {'; '.join(failed)}. The others are kept; "
            "run the same command again to resume and tabulate"
        )
    return walls


def write_outputs(out: Path, table: str, summary: dict, plot) -> None:
    """Print ``table``; write ``table.md``, ``summary.json`` and ``plot(out / "curves.png")``."""
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")
    text = json.dumps(strict_json(summary), indent=2, allow_nan=False)
    (out / "summary.json").write_text(text + "\n")
    plot(out / "curves.png")
    print(f"wrote {out}/table.md, summary.json, curves.png")


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


def fmt_ci(stats: tuple[float, float, float], digits: int = 1) -> str:
    """``median [low, high]``; ``n/a`` when no seed has a value."""
    median, low, high = stats
    if not math.isfinite(median):
        return "n/a"
    return f"{median:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


# summary.json's fresh evaluation after training (evo_svpg.report); NaN where a run has none.
FRESH = (
    "fresh_mean_particle_return", "fresh_selected_particle_return", "fresh_best_particle_return",
    "fresh_episodes_per_policy",
)  # fmt: skip


def fresh_returns(path: Path) -> dict[str, float]:
    """The fresh evaluation in the run's ``summary.json``: :data:`FRESH` and any other
    ``fresh_<policy>_return`` (ERL's champion); NaN for what is missing or null."""
    summary_path = path / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    keys = [*FRESH, *(k for k in summary if k.startswith("fresh_") and k.endswith("_return"))]
    return {key: _number(summary.get(key)) for key in dict.fromkeys(keys)}


def _number(value) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def fresh_episodes(values: Sequence[float]) -> str:
    """The runs' fresh episodes per policy, for a table caption: ``10``, ``5/10``, or ``n/a``."""
    known = sorted({int(v) for v in values if math.isfinite(v)})
    return "/".join(str(k) for k in known) or "n/a"
