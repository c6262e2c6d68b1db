"""``evo-svpg sweep SPEC.toml --out DIR``: every run of a spec (:mod:`evo_svpg.sweep_spec`),
on local processes (``--jobs N``) or as tasks on a Ray cluster (``--backend ray``).

Each run is an ordinary ``evo-svpg run`` process: ``DIR/<setting>/seed<k>/`` is its run
directory, ``seed<k>.config.json`` beside it the keys it was started with, ``seed<k>.log`` its
output, and, once it has finished, ``seed<k>.record.json`` its record
(:mod:`evo_svpg.sweep_records`: small, meant to be committed). The same command again finishes
the sweep: runs with a record (or a finished run directory) are skipped, interrupted ones
resumed from their checkpoint (bit-identical, as ``evo-svpg run --resume`` is), and one killed
before its first checkpoint starts again. ``DIR/sweep.json`` keeps the spec; another
spec into the same directory is refused. A failed run is reported with its log and does not
stop the others.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evo_svpg.config import RunConfig
from evo_svpg.engine import check_run_config
from evo_svpg.loop import reached
from evo_svpg.rundir import RunLock, atomic_write_bytes, make_directory
from evo_svpg.sweep_records import (
    make_record,
    read_record,
    read_seconds,
    record_path,
    write_record,
)
from evo_svpg.sweep_spec import Setting, SweepSpec

SWEEP_FILE = "sweep.json"
EXECUTION_KEYS = ("workers", "threads")  # how a run is executed, not what it computes


@dataclass(frozen=True)
class SweepRun:
    setting: Setting
    seed: int
    path: Path  # DIR/<setting>/seed<k>: the run directory
    keys: dict[str, Any]  # its run-config keys

    @property
    def label(self) -> str:
        return f"{self.setting.name} seed {self.seed}"

    @property
    def config_file(self) -> Path:
        return self.path.with_name(f"seed{self.seed}.config.json")

    @property
    def log(self) -> Path:
        return self.path.with_name(f"seed{self.seed}.log")

    @property
    def seconds_file(self) -> Path:
        """Wall seconds of its processes so far, all sessions (the report's compute)."""
        return self.path.with_name(f"seed{self.seed}.seconds")

    @property
    def record(self) -> Path:
        return record_path(self.path)

    def seconds(self) -> float | None:
        return read_seconds(self.seconds_file)

    def write_record(self) -> None:
        """Its record, from its finished run directory (:mod:`evo_svpg.sweep_records`), with the
        keys it was started with (another ``--jobs`` now plans other threads)."""
        started = self.config_file
        keys = json.loads(started.read_text()) if started.is_file() else self.keys
        record = make_record(self.path, self.setting.name, self.seed, keys, self.seconds())
        write_record(self.record, record)

    def check_record(self) -> None:
        """ValueError naming the record if it is not this run's: broken, or made with other keys
        (the execution's ``workers`` and ``threads`` aside: they do not change the results)."""
        record = read_record(self.record, self.setting.name, self.seed)
        made, planned = (
            {k: v for k, v in keys.items() if k not in EXECUTION_KEYS}
            for keys in (record["keys"], json.loads(json.dumps(self.keys)))
        )
        if made != planned:
            differ = sorted(
                k for k in made.keys() | planned.keys() if made.get(k) != planned.get(k)
            )
            raise ValueError(
                f"{self.record} was made with other keys ({', '.join(differ)}: "
                f"{[made.get(k) for k in differ]} there, {[planned.get(k) for k in differ]} now); "
                "remove it (and its run directory) to run this run again"
            )

    def finished(self, until: dict[str, int] | None = None) -> bool:
        """It has a record (written once it had finished), or its ``summary.json`` shows the
        iterations (or the env-step budget) of its config done (an interrupted run writes one
        too, short of them); ``until``: these instead (``{"iterations": k}`` or
        ``{"budget": b}``, a stage of a tune trial)."""
        if until is None and self.record.is_file():
            self.check_record()
            return True
        summary = self.path / "summary.json"
        if not summary.is_file():
            return False
        done = json.loads(summary.read_text())
        cfg = RunConfig.from_dict({**self.keys, **(until or {})})
        return reached(cfg, done["iterations"], done["env_steps"])

    def arguments(self, until: dict[str, int] | None = None) -> list[str]:
        """``evo-svpg run`` arguments that continue it (to ``until``'s iterations or budget, if
        given): a resume if it has a checkpoint, else a fresh start (what a run killed before
        its first checkpoint left is cleared, unless a process still holds it: the fresh start
        computes it again exactly)."""
        extend = [f"--{k}={v}" for k, v in (until or {}).items()]
        if (self.path / "checkpoint.pt").exists():
            return ["run", "--resume", str(self.path), *extend]
        if self.path.exists():
            try:  # not while a run (of an earlier sweep process) still writes it
                RunLock(self.path).release()
            except ValueError:
                pass  # `evo-svpg run` refuses it too, naming the holder: a failure in its log
            else:
                shutil.rmtree(self.path)
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(self.keys, indent=2) + "\n")  # the whole run's
        return ["run", "--config", str(self.config_file), "--out", str(self.path), *extend]


def run_defaults(jobs: int) -> dict[str, int]:
    """What a sweep's or a study's run gets unless its spec says otherwise: one worker process,
    and its share of the usable cores (``jobs`` runs at once) as gradient threads."""
    return {"workers": 1, "threads": max(1, len(os.sched_getaffinity(0)) // max(jobs, 1))}


def plan(spec: SweepSpec, out: Path, jobs: int) -> list[SweepRun]:
    """Every run of ``spec`` under ``out``, seed-major (seed 0 of every setting first, so a
    sweep stopped early has comparable first seeds). Runs get one worker process and their
    share of the cores as gradient threads, unless the spec sets ``workers``/``threads``."""
    defaults = run_defaults(jobs)
    out = out.resolve()  # Ray tasks may start elsewhere: absolute paths
    return [
        SweepRun(s, seed, out / s.name / f"seed{seed}", {**defaults, **spec.run_keys(s, seed)})
        for seed in spec.seeds
        for s in spec.settings()
    ]


def check_spec(spec: SweepSpec, source: str) -> None:
    """Every setting's config checked as ``evo-svpg run`` checks it (values, then building
    the run: env, estimator, mode), before anything is written."""
    for cfg, setting in zip(spec.check_configs(source), spec.settings(), strict=True):
        try:
            check_run_config(cfg)
        except ValueError as exc:
            raise ValueError(f"{source}: setting {setting.name}: {exc}") from None


def claim(out: Path, spec: dict[str, Any], file: str = SWEEP_FILE, what: str = "sweep") -> RunLock:
    """Hold ``out`` for this ``what`` and record its ``spec`` (data) in ``out/file``;
    ValueError if another process holds it or it holds another spec's runs."""
    make_directory(out)
    lock = RunLock(out, what)
    try:
        path = out / file
        mine = json.loads(json.dumps(spec))
        if path.exists():
            saved = json.loads(path.read_text()).get("spec") or {}
            if saved != mine:
                diff = [k for k in mine if saved.get(k) != mine[k]]
                raise ValueError(
                    f"--out {out} holds a {what} of another spec ({', '.join(diff)} differ: "
                    f"{[saved.get(k) for k in diff]} there, {[mine[k] for k in diff]} here); "
                    f"use another --out, or the same spec to continue that {what}"
                )
        else:
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            path.write_text(json.dumps({"spec": mine, "created": stamp}, indent=2) + "\n")
    except BaseException:
        lock.release()
        raise
    return lock


def run_cli(arguments: list[str], log: str, seconds_file: str) -> tuple[int, float]:
    """``evo-svpg ARGUMENTS`` in a process of its own, output appended to ``log``, its wall
    seconds added to ``seconds_file``; its exit code and wall seconds. (The same function runs
    locally and in a Ray task. It counts the seconds itself, so a run stopped by Ctrl-C, which
    the sweep stops waiting for, still has them.)"""
    start = time.perf_counter()
    try:
        with open(log, "a") as fh:
            fh.write(f"\n$ evo-svpg {' '.join(arguments)}\n")
            fh.flush()
            cmd = [sys.executable, "-m", "evo_svpg.cli", *arguments]
            code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    finally:
        elapsed = time.perf_counter() - start
        add_seconds(Path(seconds_file), elapsed)
    return code, elapsed


def add_seconds(path: Path, seconds: float) -> None:
    """Add ``seconds`` to the total in ``path`` (a run's processes, all sessions)."""
    text = f"{(read_seconds(path) or 0.0) + seconds:.3f}\n"
    atomic_write_bytes(path, lambda fh: fh.write(text.encode()))


Jobs = list[tuple[SweepRun, list[str]]]  # each run and the `evo-svpg` arguments to launch


def local_backend(todo: Jobs, jobs: int, address: str) -> Iterator[tuple]:
    """``(run, exit code, seconds)`` as runs end, ``jobs`` processes at a time."""
    with ThreadPoolExecutor(jobs) as pool:
        futures = {
            pool.submit(run_cli, args, str(r.log), str(r.seconds_file)): r for r, args in todo
        }
        try:
            for future in as_completed(futures):
                yield (futures[future], *future.result())
        except BaseException:  # Ctrl-C: the runs got it too (one process group) and save
            for future in futures:
                future.cancel()
            raise


def start_ray(address: str):
    """Ray, joined to the cluster at ``address`` (or a new local Ray) unless this process has
    one already; and whether this call started it (then the caller shuts it down)."""
    from evo_svpg.ray_workers import _ray

    ray = _ray()
    own = not ray.is_initialized()
    if own:
        ray.init(address=address or "local", include_dashboard=False, logging_level="WARNING")
    return ray, own


def ray_backend(todo: Jobs, jobs: int, address: str) -> Iterator[tuple]:
    """Each run a Ray task asking for as many CPUs as it has gradient threads (``--jobs``: at
    most that many at once; 0: as many as the cluster has CPUs), on a local Ray or the cluster
    at ``address``. Every machine needs this package installed and ``--out`` on a filesystem
    they all see."""
    ray, own = start_ray(address)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_cli)
        limit = jobs or max(1, int(ray.cluster_resources().get("CPU", 1)))
        queue, running = list(todo), {}
        while queue or running:
            while queue and len(running) < limit:
                r, args = queue.pop(0)  # as many CPUs as the run has gradient threads
                ref = task.options(num_cpus=r.keys.get("threads", 1)).remote(
                    args, str(r.log), str(r.seconds_file)
                )
                running[ref] = r
            ready, _ = ray.wait(list(running), num_returns=1)
            r = running.pop(ready[0])
            try:
                yield (r, *ray.get(ready[0]))
            except ray.exceptions.RayError as exc:  # its node lost: the run resumes next time
                with r.log.open("a") as fh:
                    fh.write(f"\nthe Ray task was lost: {exc}\n")
                yield (r, -1, 0.0)
    finally:
        if own:
            ray.shutdown()


BACKENDS = {"local": local_backend, "ray": ray_backend}


class SweepProgress:
    """A line per ended run, and on a terminal a rich bar over the whole sweep."""

    def __init__(self, total: int, done: int) -> None:
        self.total, self.done, self.bar = total, done, None
        if sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("sweep"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn()
            )
            self.bar.start()
            self.task = self.bar.add_task("sweep", total=total, completed=done)

    def ended(self, text: str) -> None:
        self.done += 1
        line = f"[{self.done}/{self.total}] {text}"
        if self.bar is None:
            print(line, flush=True)
        else:
            self.bar.console.print(line)
            self.bar.update(self.task, completed=self.done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _ended(run: SweepRun, code: int, seconds: float) -> tuple[bool, str]:
    """Whether ``run`` is finished now (then its record is written), and its progress line."""
    if code == 0 and run.finished():
        problem = _write_record(run)
        if problem:
            return False, f"{run.label}: finished, but {problem}; its log: {run.log}"
        summary = json.loads((run.path / "summary.json").read_text())
        value = summary.get("final_mean_particle_return")
        shown = "n/a" if value is None else f"{value:.1f}"
        return True, f"{run.label}: finished in {seconds:.0f} s (final mean particle {shown})"
    why = {130: "interrupted", 143: "terminated"}.get(code, f"failed (exit {code})")
    return False, f"{run.label}: {why}; its log: {run.log}"


def _write_record(run: SweepRun) -> str:
    """Write ``run``'s record; what went wrong if it could not (the next sweep tries again)."""
    try:
        run.write_record()
    except (OSError, ValueError, KeyError) as exc:
        return f"its record could not be written ({type(exc).__name__}: {exc})"
    return ""


def check_backend(backend: str, jobs: int, address: str) -> None:
    """ValueError naming the flag for a backend, ``--jobs`` or ``--address`` that cannot be
    used (Ray not installed included), before anything is written."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r}: choose one of {list(BACKENDS)}")
    if jobs < (1 if backend == "local" else 0):
        least = "1" if backend == "local" else "0 (0: one per CPU of the cluster)"
        raise ValueError(f"--jobs {jobs}: must be >= {least}")
    if backend == "local" and address:
        raise ValueError(f"--address {address} is for --backend ray; the local backend has none")
    if backend == "ray":
        from evo_svpg.ray_workers import _ray

        _ray()


def run_sweep(spec_path: Path, out: Path, jobs: int, backend: str, address: str = "") -> int:
    """``evo-svpg sweep``: every unfinished run of the spec at ``spec_path`` under ``out``. Exit
    code 0 when all have finished, 1 if one failed (the others still ran), 130 on Ctrl-C."""
    check_backend(backend, jobs, address)
    spec = SweepSpec.load(spec_path)
    check_spec(spec, str(spec_path))
    lock = claim(out, spec.to_dict())
    progress = None
    try:
        runs = plan(spec, out, jobs or os.cpu_count() or 1)
        for run in runs:  # finished by a sweep before records, or killed before its record
            if not run.record.is_file() and run.finished():
                problem = _write_record(run)
                if problem:
                    print(f"{run.label}: finished, but {problem}", flush=True)
        todo = [r for r in runs if not r.finished()]
        resumed = sum((r.path / "checkpoint.pt").exists() for r in todo)
        print(
            f"sweep {out}: {len(spec.settings())} setting(s) × {len(spec.seeds)} seed(s) = "
            f"{len(runs)} runs; {len(runs) - len(todo)} finished, {len(todo)} to run "
            f"({resumed} resumed), {backend} backend",
            flush=True,
        )
        progress = SweepProgress(len(runs), len(runs) - len(todo))
        failed = []
        launches = [(r, r.arguments()) for r in todo]
        for run, code, seconds in BACKENDS[backend](launches, jobs, address):
            ok, line = _ended(run, code, seconds)
            progress.ended(line)
            if not ok:
                failed.append(run)
    except KeyboardInterrupt:
        print("\ninterrupted; the runs save at their iteration's end. Finish: the same command")
        return 130
    finally:
        if progress is not None:
            progress.close()
        lock.release()
    if failed:
        shown = "; ".join(f"{r.label} ({r.log})" for r in failed[:5])
        print(f"{len(failed)} run(s) did not finish: {shown}. The same command resumes them")
        return 1
    print(f"all {len(runs)} runs finished; their statistics: evo-svpg report {out}")
    return 0
