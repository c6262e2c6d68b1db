"""Particle shards on worker processes: sampling and ∇J in parallel, operators on the learner.

``--workers N`` splits the population's rows into N contiguous shards. Worker ``k`` owns shard
``k``'s envs, rollout buffers and estimator state (critics, baselines); per iteration it samples
its particles and computes their ``∇J``. The learner (the training process) keeps ``θ`` and
``∇J`` (``[n, d]`` float32) in shared memory, runs every operator (SVGD, selection, ...) and
hands the updated ``θ`` back through the same memory. The operators do not know: the learner's
stand-ins (:mod:`evo_svpg.sharded`) stand where the sampler and the estimator stand in one
process; each worker serves a :class:`~evo_svpg.shard_server.ShardServer`.

With per-particle random streams (:mod:`evo_svpg.streams`) each shard draws what one process
would draw for its particles, and the per-particle computations are the same arithmetic, so a
run's ``metrics.csv`` does not depend on N; checkpoints hold the merged population state
(:mod:`evo_svpg.shard_state`) and resume with any N.

Faults: a worker that dies stops the run with :class:`WorkerDied` naming it (the last
checkpoint stays). Workers ignore SIGINT and SIGTERM (a terminal's Ctrl-C and a batch
system's SIGTERM reach the whole process group: the learner decides when to stop, and stops
them) and exit when the learner's end of their pipe closes, so killing the learner leaves no
worker behind; shared memory is unlinked on close, and by multiprocessing's resource tracker if
the learner is killed.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import time
import traceback
from multiprocessing import connection, shared_memory
from multiprocessing import util as mp_util
from typing import Any

import numpy as np

from evo_svpg.sampler import NonFiniteError
from evo_svpg.shard_server import ShardServer
from evo_svpg.shard_state import shard_bounds


class WorkerDied(RuntimeError):
    """A worker process ended while the run needed it."""


class WorkerError(RuntimeError):
    """A worker raised; the message carries its traceback."""


class ShardedPool:
    """What both backends share: a pool is planned (its evaluators opened, see
    :class:`~evo_svpg.sharded.ShardedEvaluator`) while the run's operators are built, then
    started with what they need; the shards' row ranges; whether the pool is closed."""

    bounds: list[slice]
    _closed: bool = False

    def __init__(self) -> None:
        self.evaluators: list = []  # EvaluatorSpec of every evaluator opened, by key
        self.started = False

    def _starting_once(self) -> None:
        if self.started or self._closed:
            raise RuntimeError(f"this worker pool has {'closed' if self._closed else 'started'}")
        self.started = True

    def open_evaluator(self, spec) -> int:
        """Have every worker build an evaluator from ``spec``; its key."""
        if self.started:
            raise RuntimeError("evaluators are opened before the worker pool starts")
        self.evaluators.append(spec)
        return len(self.evaluators) - 1

    @property
    def workers(self) -> int:
        return len(self.bounds)

    @property
    def closed(self) -> bool:
        return self._closed


class _SharedArray:
    """A float32 ``[rows, cols]`` array in a named shared-memory segment."""

    def __init__(self, shape: tuple[int, int], name: str | None = None) -> None:
        size = max(1, int(np.prod(shape)) * 4)
        self.shm = shared_memory.SharedMemory(name=name, create=name is None, size=size)
        self.array = np.ndarray(shape, dtype=np.float32, buffer=self.shm.buf)

    def close(self, unlink: bool) -> None:
        self.array = None
        self.shm.close()
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                self.shm.unlink()


def _worker_main(
    conn: connection.Connection,
    rows: slice,
    theta_name: str,
    grads_name: str,
    d: int,
    build: tuple,
) -> None:
    """A worker process: build the shard (``build``: the :class:`ShardServer` arguments after
    ``rows``), then serve the learner's commands until it says close or goes away. ``θ`` is
    read from, ``∇J`` written to shared memory."""
    for stop in (signal.SIGINT, signal.SIGTERM):  # the learner's to handle (module docstring)
        signal.signal(stop, signal.SIG_IGN)
    theta = grads = None
    try:
        cfg_data, population, needs, evaluators = build
        theta = _SharedArray((population, d), theta_name)
        grads = _SharedArray((population, d), grads_name)
        server = ShardServer(cfg_data, rows, population, needs, evaluators)
        conn.send(("ready", None))
        while True:
            try:
                command, arg = conn.recv()
            except (EOFError, OSError):  # the learner is gone
                return
            try:
                if command == "close":
                    return
                if command == "collect":
                    reply = server.collect(theta.array, arg)
                elif command == "gradient":
                    grads.array[rows] = server.gradient(theta.array)
                    reply = None
                elif command in ShardServer.CALLS:
                    reply = getattr(server, command)(arg)
                else:
                    valid = ["collect", "gradient", *ShardServer.CALLS, "close"]
                    raise ValueError(f"unknown command {command!r}; valid: {valid}")
                conn.send(("ok", reply))
            except Exception as exc:  # the learner re-raises it, naming this worker
                conn.send(("error", (type(exc).__name__, traceback.format_exc())))
    except Exception:
        with contextlib.suppress(OSError):
            conn.send(("error", ("BuildError", traceback.format_exc())))
    finally:
        for arr in (theta, grads):
            if arr is not None:
                arr.close(unlink=False)


class WorkerPool(ShardedPool):
    """N worker processes, each owning a shard of the population (see the module docstring)."""

    def __init__(self, cfg: Any, population: int, d: int, workers: int) -> None:
        super().__init__()
        self.cfg, self.population, self.d = cfg, population, d
        self.bounds = shard_bounds(population, workers)
        self.processes: list[mp.Process] = []
        self.conns: list[connection.Connection] = []
        self._closed = False
        self._starting = True
        self._finalizer = None

    def start(self, needs: frozenset[str]) -> None:
        """Spawn the workers, each building its shard for operators that need ``needs``."""
        self._starting_once()
        population, d = self.population, self.d
        arrays: list[_SharedArray] = []
        try:
            while len(arrays) < 2:
                arrays.append(_SharedArray((population, d)))
        except BaseException:
            for arr in arrays:
                arr.close(unlink=True)
            raise
        self.theta, self.grads = arrays
        # Unlink the memory and stop the workers however this object goes away; at exit this
        # runs before multiprocessing joins its children (which ignore its SIGTERM).
        self._finalizer = mp_util.Finalize(
            self, _shutdown, args=(self.processes, self.conns, self.theta, self.grads),
            exitpriority=10,
        )  # fmt: skip
        context = mp.get_context("spawn")  # no fork: torch and BLAS threads do not survive it
        build = (self.cfg.to_dict(), population, frozenset(needs), tuple(self.evaluators))
        try:
            for rows in self.bounds:
                here, there = context.Pipe()
                process = context.Process(
                    target=_worker_main,
                    args=(there, rows, self.theta.shm.name, self.grads.shm.name, d, build),
                    name=f"evo-svpg-worker-{len(self.processes)}",
                    daemon=True,
                )  # fmt: skip
                process.start()
                there.close()
                self.processes.append(process)
                self.conns.append(here)
            self._gather([None] * len(self.conns), expect="ready")
            self._starting = False
        except BaseException:
            self.close()
            raise

    # -- commands --------------------------------------------------------------------------
    def _gather(self, replies: list, expect: str = "ok") -> list:
        """Wait for one reply per worker, in any order. Every reply is read before a failed
        worker's error is raised, so the pool stays in step; a dead worker closes it."""
        pending = dict(enumerate(self.conns))
        failure: Exception | None = None
        while pending:
            sentinels = {self.processes[k].sentinel: k for k in pending}
            ready = connection.wait([*pending.values(), *sentinels])
            for item in ready:
                if item in sentinels:  # a process ended: is there still a reply to read?
                    k = sentinels[item]
                    if k in pending and not pending[k].poll():
                        self._died(k)
                    continue
                k = next(i for i, c in pending.items() if c is item)
                try:
                    status, value = item.recv()
                except (EOFError, OSError):
                    self._died(k)
                del pending[k]
                if status == "error" and failure is None:
                    failure = self._failure(k, *value)
                elif status != expect and failure is None:
                    failure = WorkerError(f"worker {k} answered {status!r}, not {expect!r}")
                else:
                    replies[k] = value
        if failure is not None:
            raise failure
        return replies

    def _failure(self, k: int, name: str, text: str) -> Exception:
        who = f"worker {k} (particles {self.bounds[k].start}-{self.bounds[k].stop - 1})"
        if name == "NonFiniteError":  # the run's own stop, whoever saw it
            return NonFiniteError(f"{who}: {text.strip().splitlines()[-1]}")
        return WorkerError(f"{who} raised {name}:\n{text}")

    def _died(self, k: int) -> None:
        process = self.processes[k]
        process.join(timeout=1)
        code = process.exitcode
        how = (
            f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0
            else f"exit code {code}"
        )  # fmt: skip
        hint = " (SIGKILL: out of memory, or killed)" if code == -signal.SIGKILL else ""
        self.close()
        who = f"worker {k} (pid {process.pid}, particles {self.bounds[k].start}-" + (
            f"{self.bounds[k].stop - 1})"
        )
        if self._starting:
            raise WorkerDied(
                f"{who} did not start: {how}{hint}. Its error is printed above; a script that "
                'builds a run with workers must do so under `if __name__ == "__main__":` '
                "(workers are spawned processes that import the script), or set workers=1"
            )
        raise WorkerDied(
            f"{who} died: {how}{hint}; the run stops here, its last checkpoint is kept: "
            "--resume continues it"
        )

    def collect(self, theta: np.ndarray, steps_per_env: int) -> list:
        """Every shard samples with its rows of ``theta [n, d]``; their replies in order."""
        self.theta.array[:] = theta
        return self.command("collect", [steps_per_env] * self.workers)

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        """``∇J [n, d]`` of every shard's last rollout at ``theta``."""
        self.theta.array[:] = theta
        self.command("gradient")
        return self.grads.array.copy()

    def call(self, name: str, args: list | None = None) -> list:
        """:class:`ShardServer` method ``name`` on every shard (``args[k]`` to shard ``k``)."""
        return self.command(name, args)

    def command(self, command: str, args: list | None = None) -> list:
        """Send ``command`` to every worker (``args[k]`` to worker ``k``); their replies."""
        if self._closed or not self.started:
            raise RuntimeError(f"the worker pool is {'closed' if self._closed else 'not started'}")
        args = args if args is not None else [None] * self.workers
        try:
            for k, conn in enumerate(self.conns):
                try:
                    conn.send((command, args[k]))
                except (BrokenPipeError, OSError):
                    self._died(k)
            return self._gather([None] * self.workers)
        except (KeyboardInterrupt, SystemExit):  # replies left unread: the pool is out of step
            self.close()
            raise

    def close(self) -> None:
        """Stop the workers and free the shared memory (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()


def _shutdown(processes, conns, theta: _SharedArray, grads: _SharedArray) -> None:
    """Ask every worker to stop, close the pipes (a worker blocked sending gets an error and
    exits), give them 5 s together, kill what is left, free the shared memory."""
    for conn in conns:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("close", None))
    for conn in conns:
        conn.close()
    deadline = time.monotonic() + 5
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
    for arr in (theta, grads):
        arr.close(unlink=True)
