"""Particle shards on worker processes: sampling and ∇J in parallel, operators on the learner.

``--workers N`` splits the population's rows into N contiguous shards. Worker ``k`` owns shard
``k``'s envs, rollout buffers and estimator state (critics, baselines); per iteration it samples
its particles and computes their ``∇J``. The learner (the training process) keeps ``θ`` and
``∇J`` (``[n, d]`` float32) in shared memory, runs every operator (SVGD, selection, ...) and
hands the updated ``θ`` back through the same memory. The operators do not know: the learner's
:class:`ShardedSampler` and :class:`ShardedEstimator` stand where the sampler and the estimator
stand in one process.

With per-particle random streams (:mod:`evo_svpg.streams`) each shard draws what one process
would draw for its particles, and the per-particle computations are the same arithmetic, so a
run's ``metrics.csv`` does not depend on N; checkpoints hold the merged population state
(:mod:`evo_svpg.shard_state`) and resume with any N.

Faults: a worker that dies stops the run with :class:`WorkerDied` naming it (the last
checkpoint stays). Workers ignore SIGINT (the learner decides when to stop) and exit when the
learner's end of their pipe closes, so killing the learner leaves no worker behind; shared
memory is unlinked on close, and by multiprocessing's resource tracker if the learner is killed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing as mp
import signal
import traceback
import weakref
from dataclasses import dataclass
from multiprocessing import connection, shared_memory
from typing import Any

import numpy as np
import torch
from torch import Tensor

from evo_svpg.building import build_shard
from evo_svpg.sampler import NonFiniteError
from evo_svpg.shard_state import merge_states, reindex_state, split_state

logger = logging.getLogger("evo_svpg")


class WorkerDied(RuntimeError):
    """A worker process ended while the run needed it."""


class WorkerError(RuntimeError):
    """A worker raised; the message carries its traceback."""


def shard_bounds(n: int, workers: int) -> list[slice]:
    """``workers`` contiguous row ranges covering ``0 … n − 1``, sizes differing by at most 1."""
    edges = [round(k * n / workers) for k in range(workers + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


@dataclass
class RolloutSummary:
    """What the learner sees of a sharded rollout: each particle's ended episodes and the steps
    taken (the transitions stay with the workers, which compute ∇J from them)."""

    episode_returns: list[np.ndarray]
    episode_lengths: list[np.ndarray]
    steps_taken: int
    valid: None = None
    behaviours: None = None
    episode_signal: None = None

    @property
    def n_particles(self) -> int:
        return len(self.episode_returns)


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
    cfg_data: dict,
    rows: slice,
    population: int,
    theta_name: str,
    grads_name: str,
    d: int,
) -> None:
    """A worker: build the shard, then serve the learner's commands until it says close or
    goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle

    theta = grads = None
    try:
        theta = _SharedArray((population, d), theta_name)
        grads = _SharedArray((population, d), grads_name)
        shard = build_shard(cfg_data, rows, population)
        conn.send(("ready", None))
        rollout = None
        while True:
            try:
                command, arg = conn.recv()
            except (EOFError, OSError):  # the learner is gone
                return
            try:
                if command == "close":
                    conn.send(("ok", None))
                    return
                if command == "collect":
                    own = theta.array[rows].copy()
                    rollout = shard.sampler.collect(own, arg)
                    reply = (
                        [r.copy() for r in rollout.episode_returns],
                        [x.copy() for x in rollout.episode_lengths],
                        rollout.steps_taken,
                    )
                elif command == "gradient":
                    own = torch.from_numpy(theta.array[rows].copy())
                    grads.array[rows] = shard.estimator.gradient(own, rollout).numpy()
                    reply = None
                elif command == "state":
                    reply = {
                        "sampler": shard.sampler.state_dict(),
                        "estimator": shard.estimator.state_dict(),
                    }
                elif command == "load_sampler":
                    shard.sampler.load_state_dict(arg)
                    reply = None
                elif command == "load_estimator":
                    shard.estimator.load_state_dict(arg)
                    reply = None
                else:
                    raise ValueError(f"unknown command {command!r}")
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


class WorkerPool:
    """N worker processes, each owning a shard of the population (see the module docstring)."""

    def __init__(self, cfg: Any, population: int, d: int, workers: int) -> None:
        self.population, self.d = population, d
        self.bounds = shard_bounds(population, workers)
        self.theta = _SharedArray((population, d))
        self.grads = _SharedArray((population, d))
        self.processes: list[mp.Process] = []
        self.conns: list[connection.Connection] = []
        self._closed = False
        self._starting = True
        # Unlink the memory and stop the workers however this object goes away.
        self._finalizer = weakref.finalize(
            self, _shutdown, self.processes, self.conns, self.theta, self.grads
        )
        context = mp.get_context("spawn")  # no fork: torch and BLAS threads do not survive it
        data = cfg.to_dict()
        try:
            for rows in self.bounds:
                here, there = context.Pipe()
                process = context.Process(
                    target=_worker_main,
                    args=(there, data, rows, population, self.theta.shm.name,
                          self.grads.shm.name, d),
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

    @property
    def workers(self) -> int:
        return len(self.bounds)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- commands --------------------------------------------------------------------------
    def _gather(self, replies: list, expect: str = "ok") -> list:
        """Wait for one reply per worker, in any order; a dead or failed worker raises."""
        pending = dict(enumerate(self.conns))
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
                if status == "error":
                    name, text = value
                    if name == "NonFiniteError":  # the run's own stop, whoever saw it
                        raise NonFiniteError(f"worker {k}: {text.strip().splitlines()[-1]}")
                    raise WorkerError(
                        f"worker {k} (particles {self.bounds[k].start}-"
                        f"{self.bounds[k].stop - 1}) raised {name}:\n{text}"
                    )
                if status != expect:
                    raise WorkerError(f"worker {k} answered {status!r}, expected {expect!r}")
                replies[k] = value
                del pending[k]
        return replies

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
            raise WorkerDied(f"{who} did not start: {how}{hint} (its error is printed above)")
        raise WorkerDied(
            f"{who} died: {how}{hint}; the run stops here, its last checkpoint is kept: "
            "--resume continues it"
        )

    def command(self, command: str, args: list | None = None) -> list:
        """Send ``command`` to every worker (``args[k]`` to worker ``k``); their replies."""
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        args = args if args is not None else [None] * self.workers
        for k, conn in enumerate(self.conns):
            try:
                conn.send((command, args[k]))
            except (BrokenPipeError, OSError):
                self._died(k)
        return self._gather([None] * self.workers)

    def close(self) -> None:
        """Stop the workers and free the shared memory (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()


def _shutdown(processes, conns, theta: _SharedArray, grads: _SharedArray) -> None:
    for conn in conns:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("close", None))
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
    for conn in conns:
        conn.close()
    for arr in (theta, grads):
        arr.close(unlink=True)


class ShardedSampler:
    """Stands in for :class:`~evo_svpg.sampler.Sampler` on the learner."""

    def __init__(self, pool: WorkerPool, whole_episodes: bool, envs_per_particle: int) -> None:
        self.pool, self.whole_episodes = pool, whole_episodes
        self.envs_per_particle = envs_per_particle

    def _slots(self) -> list[slice]:
        e = self.envs_per_particle
        return [slice(b.start * e, b.stop * e) for b in self.pool.bounds]

    def collect(self, theta: np.ndarray, steps_per_env: int) -> RolloutSummary:
        self.pool.theta.array[:] = theta
        replies = self.pool.command("collect", [steps_per_env] * self.pool.workers)
        returns = [r for reply in replies for r in reply[0]]
        lengths = [x for reply in replies for x in reply[1]]
        return RolloutSummary(returns, lengths, sum(reply[2] for reply in replies))

    def state_dict(self) -> dict:
        """The population's sampler state: env slots concatenated, ``num_envs`` summed."""
        states = [s["sampler"] for s in self.pool.command("state")]
        slots = [s.stop - s.start for s in self._slots()]
        trimmed = [_with_num_envs(s, None) for s in states]
        return _with_num_envs(merge_states(trimmed, slots, "sampler"), sum(slots))

    def load_state_dict(self, state: dict) -> None:
        total = self.pool.population * self.envs_per_particle
        parts = [
            _with_num_envs(split_state(state, total, s), s.stop - s.start) for s in self._slots()
        ]
        self.pool.command("load_sampler", parts)


def _with_num_envs(state: dict, num_envs: int | None) -> dict:
    if state.get("env") is None:  # a generic env: nothing snapshotted
        return state
    return {**state, "env": {**state["env"], "num_envs": num_envs}}


class ShardedEstimator:
    """Stands in for the run's estimator on the learner; checkpoints under its name."""

    def __init__(self, pool: WorkerPool, name: str) -> None:
        self.pool, self.checkpoint_name = pool, name

    def gradient(self, theta: Tensor, rollout: RolloutSummary) -> Tensor:
        self.pool.theta.array[:] = theta.numpy()
        self.pool.command("gradient")
        return torch.from_numpy(self.pool.grads.array.copy())

    def state_dict(self) -> dict:
        states = [s["estimator"] for s in self.pool.command("state")]
        return merge_states(states, [b.stop - b.start for b in self.pool.bounds], "estimator")

    def load_state_dict(self, state: dict) -> None:
        n = self.pool.population
        self.pool.command("load_estimator", [split_state(state, n, b) for b in self.pool.bounds])

    def reindex(self, parents: Tensor) -> None:
        """Clones inherit their parent's per-particle state, across workers: the population's
        state is gathered, its per-particle rows reindexed, and handed back."""
        n = self.pool.population
        self.load_state_dict(reindex_state(self.state_dict(), n, parents.numpy()))
