"""Observers of the training loop: CSV metrics, TensorBoard, checkpoints, progress.

None of them changes the course of a run. Each sees ``on_start``, ``on_iteration`` (with the
iteration's :class:`~evo_svpg.loop.IterationRecord`), then ``on_end`` or, if the loop (or an
``on_end``) stopped on an exception (Ctrl-C), ``on_interrupt``, which must only save what is
needed to resume (the engine, in the main thread, holds further SIGINT and SIGTERM meanwhile),
and finally ``on_close`` to release resources (TensorBoard's writer, files), which may be slow
and stays interruptible.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from evo_svpg.checkpoint import save_checkpoint
from evo_svpg.engine import Run
from evo_svpg.loop import IterationRecord
from evo_svpg.report import final_training_returns, fresh_evaluation, last_scalars, strict_json
from evo_svpg.run_state import run_state_dict
from evo_svpg.rundir import atomic_write_bytes

METRIC_COLUMNS = (
    "iteration", "particle", "return_mean", "return_min", "return_max", "episodes",
    "episode_length_mean", "grad_norm", "bandwidth", "env_steps",
)  # fmt: skip
CHECKPOINT = "checkpoint.pt"


class Callback:
    def on_start(self, run: Run) -> None: ...
    def on_iteration(self, run: Run, record: IterationRecord) -> None: ...
    def on_end(self, run: Run) -> None: ...
    def on_interrupt(self, run: Run, exc: BaseException) -> None: ...
    def on_close(self, run: Run) -> None: ...


class _ResumableCSV(Callback):
    """A CSV flushed every iteration whose first column is the iteration.

    On resume, rows after the checkpoint's iteration (written before the run was killed) are
    dropped, so the finished file equals an uninterrupted run's; the file is rewritten
    atomically. Rows are never dropped otherwise: a run starting at iteration 0 refuses a file
    that already has rows, and a resumed one (with ``every_iteration``) a file that lacks some.
    """

    name = ""
    columns: tuple[str, ...] = ()
    every_iteration = False  # each iteration writes at least one row

    def __init__(self, out: Path) -> None:
        self.path = out / self.name

    def on_start(self, run: Run) -> None:
        done = run.state.iteration
        rows: list[list[str]] = []
        if self.path.exists():
            with open(self.path, newline="") as fh:
                rows = [row for row in list(csv.reader(fh))[1:] if row]
        if rows and not done:
            raise ValueError(
                f"{self.path} already has {len(rows)} rows; a run starting at iteration 0 would "
                "overwrite them"
            )
        kept = [row for row in rows if int(row[0]) <= done]
        missing = sorted(set(range(1, done + 1)) - {int(row[0]) for row in kept})
        if self.every_iteration and missing:
            raise ValueError(
                f"{self.path} lacks iterations {missing[0]}..{missing[-1]} of the {done} the "
                "checkpoint has done; the run cannot continue it without a gap"
            )
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(self.columns)
        writer.writerows(kept)
        atomic_write_bytes(self.path, lambda fh: fh.write(text.getvalue().encode()))
        self.fh = open(self.path, "a", newline="")  # noqa: SIM115 (kept open for the run)
        self.writer = csv.writer(self.fh)

    def on_iteration(self, run: Run, record: IterationRecord) -> None:
        self.writer.writerows(self.rows(record))
        self.fh.flush()

    def rows(self, record: IterationRecord) -> list[list]:
        raise NotImplementedError

    def on_close(self, run: Run) -> None:
        if hasattr(self, "fh"):
            self.fh.close()


class MetricsCSV(_ResumableCSV):
    """``metrics.csv``: one row per particle per iteration (:data:`METRIC_COLUMNS`)."""

    name, columns = "metrics.csv", METRIC_COLUMNS
    every_iteration = True

    def rows(self, record: IterationRecord) -> list[list]:
        h = record.scalars.get("bandwidth", float("nan"))
        return [
            [
                record.iteration, i, _num(record.return_mean[i]), _num(record.return_min[i]),
                _num(record.return_max[i]), int(record.episodes[i]),
                _num(record.episode_length_mean[i]), _num(record.grad_norm[i]), _num(h),
                record.env_steps,
            ]
            for i in range(record.return_mean.size)
        ]  # fmt: skip


class ScalarsCSV(_ResumableCSV):
    """``scalars.csv``: every per-iteration diagnostic of the operators, one row each.

    Long format (``iteration, env_steps, name, value``) because modes log different names
    (``cem_std_mean``, ``erl_champion``, ``erl_rl_elite_rate``, ...; README "Outputs").
    """

    name, columns = "scalars.csv", ("iteration", "env_steps", "name", "value")

    def rows(self, record: IterationRecord) -> list[list]:
        return [
            [record.iteration, record.env_steps, name, _num(value)]
            for name, value in sorted(record.scalars.items())
        ]


def _num(x: float) -> str:
    return "nan" if not np.isfinite(x) else repr(float(x))


class TensorBoardScalars(Callback):
    """Best/mean particle return, env steps/s and diagnostics under ``DIR/tensorboard``."""

    def __init__(self, out: Path) -> None:
        self.log_dir = out / "tensorboard"

    def on_start(self, run: Run) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow import; only when used

        self.writer = SummaryWriter(str(self.log_dir), purge_step=run.state.iteration + 1)

    def on_iteration(self, run: Run, record: IterationRecord) -> None:
        step = record.iteration
        self.writer.add_scalar("return/best_particle", record.window_best, step)
        self.writer.add_scalar("return/mean_particle", record.window_mean, step)
        self.writer.add_scalar("perf/env_steps", record.env_steps, step)
        steps_per_s = record.iteration_env_steps / record.seconds
        self.writer.add_scalar("perf/env_steps_per_s", steps_per_s, step)
        for name, value in record.scalars.items():
            self.writer.add_scalar(f"diag/{name}", value, step)
        self.writer.flush()

    def on_close(self, run: Run) -> None:
        if hasattr(self, "writer"):
            self.writer.close()


class Checkpointer(Callback):
    """``checkpoint.pt`` every ``every`` iterations, at the end, and when the run is stopped at
    an iteration's end (Ctrl-C, SIGTERM), written atomically.

    Nothing is copied in between: a run stopped mid-iteration (a second Ctrl-C, a non-finite
    gradient) keeps the checkpoint already on disk, never the half-done iteration's state. Put
    it after the callbacks whose records must match the checkpoint (``metrics.csv``): it saves
    an iteration only once its own ``on_iteration`` ran for it, i.e. once they recorded it.
    """

    def __init__(self, out: Path, every: int) -> None:
        self.path, self.every = out / CHECKPOINT, every
        self.saved_iteration = 0  # the iteration of the checkpoint on disk (0: none)
        self.seen_iteration = 0  # the last iteration this callback (and those before it) saw

    def on_start(self, run: Run) -> None:
        self.saved_iteration = self.seen_iteration = run.state.iteration  # a resumed run's

    def on_iteration(self, run: Run, record: IterationRecord) -> None:
        self.seen_iteration = record.iteration
        if record.iteration % self.every == 0:
            self._save(run)

    def _save(self, run: Run) -> None:
        iteration = run.state.iteration
        recorded = run.at_boundary and iteration == self.seen_iteration
        if recorded and iteration != self.saved_iteration:
            save_checkpoint(self.path, run_state_dict(run))
            self.saved_iteration = iteration

    def on_end(self, run: Run) -> None:
        self._save(run)

    def on_interrupt(self, run: Run, exc: BaseException) -> None:
        if run.pool is not None and run.pool.closed:  # a worker died: its shard's state is gone
            return  # (the checkpoint on disk stays)
        self._save(run)


@runtime_checkable
class WritesArrays(Protocol):
    """An operator whose records are arrays for figures (``MeasureQD``: ``qd.npz``)."""

    arrays_file: str

    def arrays(self) -> dict[str, np.ndarray]: ...


class OperatorArrays(Callback):
    """Each :class:`WritesArrays` operator's ``arrays()`` in ``DIR/<arrays_file>``, written with
    each checkpoint, at the end and when stopped at an iteration's end (like the checkpoint)."""

    def __init__(self, out: Path, every: int) -> None:
        self.out, self.every = out, every
        self.seen_iteration = 0

    def on_start(self, run: Run) -> None:
        self.seen_iteration = run.state.iteration
        if run.state.iteration:  # a resumed run that ends at once still writes its arrays
            self._save(run)

    def on_iteration(self, run: Run, record: IterationRecord) -> None:
        self.seen_iteration = record.iteration
        if record.iteration % self.every == 0:
            self._save(run)

    def on_end(self, run: Run) -> None:
        self._save(run)

    def on_interrupt(self, run: Run, exc: BaseException) -> None:
        self._save(run)

    def _save(self, run: Run) -> None:
        iteration = run.state.iteration
        if not (run.at_boundary and iteration and iteration == self.seen_iteration):
            return
        for op in run.operators:
            if isinstance(op, WritesArrays):
                arrays = op.arrays()
                atomic_write_bytes(
                    self.out / op.arrays_file, lambda fh, a=arrays: np.savez(fh, **a)
                )


class Progress(Callback):
    """A rich progress bar on a terminal; one plain line per iteration otherwise (logs, CI)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.bar = None

    def on_start(self, run: Run) -> None:
        if self.stream.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("iter"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
            )  # fmt: skip
            self.bar.start()
            total, done = _progress(run, run.state.iteration, run.state.env_steps)
            self.task = self.bar.add_task("train", total=total, completed=done, info="")

    def on_iteration(self, run: Run, record: IterationRecord) -> None:
        rate = record.iteration_env_steps / record.seconds / 1e6
        info = (
            f"env steps {record.env_steps:,} | {rate:.2f}M steps/s | "
            f"best {record.window_best:.1f} | mean {record.window_mean:.1f}"
        )
        scalars = record.scalars
        if "qd_coverage" in scalars:  # sparse tasks: the returns alone say little
            info += f" | coverage {scalars['qd_coverage']:.3f}"
            if "success_fraction" in scalars:
                info += f" | success {scalars['success_fraction']:.0%}"
        if self.bar is not None:
            _, done = _progress(run, record.iteration, record.env_steps)
            self.bar.update(self.task, completed=done, info=info)
        else:
            budget = f" (budget {run.config.budget:,})" if run.config.budget else ""
            line = f"iter {record.iteration}/{run.config.iterations}{budget} | {info}"
            print(line, file=self.stream)

    def on_close(self, run: Run) -> None:
        if self.bar is not None:
            self.bar.stop()


def _progress(run: Run, iteration: int, env_steps: int) -> tuple[int, int]:
    """``(total, completed)`` in env steps under a budget, in iterations otherwise."""
    if run.config.budget:
        return run.config.budget, min(env_steps, run.config.budget)
    return run.config.iterations, iteration


class Summary(Callback):
    """``summary.json`` at the end (:mod:`evo_svpg.report`): the final window's pooled training
    returns, a fresh evaluation of every particle, wall time; strict JSON (no ``NaN``)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / "summary.json"

    def on_start(self, run: Run) -> None:
        self.start = time.perf_counter()
        self.seconds = 0.0

    def on_iteration(self, run: Run, record: IterationRecord) -> None:
        self.seconds += record.seconds

    def on_end(self, run: Run) -> None:
        if not (self.out / "metrics.csv").exists() or run.state.iteration == 0:
            return
        training = final_training_returns(self.out, run.pooling_window, run.config.budget)
        summary = {
            "iterations": run.state.iteration,
            "env_steps": run.state.env_steps,
            "pooling_window": run.pooling_window,
            **training,
            **fresh_evaluation(run, training["final_particle_returns"]),
            **last_scalars(self.out),
            "wall_seconds_this_session": round(time.perf_counter() - self.start, 3),
            "training_seconds_this_session": round(self.seconds, 3),
        }
        text = json.dumps(strict_json(summary), indent=2, allow_nan=False) + "\n"
        atomic_write_bytes(self.path, lambda fh: fh.write(text.encode()))
