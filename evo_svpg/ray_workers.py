"""Particle shards as Ray actors: ``--backend ray [--address ADDR]``.

The same :class:`~evo_svpg.shard_server.ShardServer` as a local worker process, one per shard,
as a Ray actor asking for one CPU: on a local Ray that the run starts (and stops) when no
address is given, or on the cluster at ``address`` (``ray start --head`` on one machine,
``ray start --address HEAD:6379`` on the others; every machine needs this package installed in
the same Python environment and version of this package). ``θ`` goes to the actors through
Ray's object store, ``∇J`` comes back by value: the same arithmetic as local workers, so the
same results on machines of one CPU type (BLAS picks its float32 kernels by CPU, see the
README's Reproducibility).

An actor that dies (its process killed, its node lost) stops the run with
:class:`~evo_svpg.workers.WorkerDied` naming it; the last checkpoint stays.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import numpy as np

from evo_svpg.sampler import NonFiniteError
from evo_svpg.shard_server import ShardServer
from evo_svpg.shard_state import shard_bounds
from evo_svpg.workers import ShardedPool, WorkerDied, WorkerError

START_TIMEOUT = 600.0  # seconds the actors may take to be placed and built


def _brief(exc: BaseException) -> str:
    """Ray's message about a lost actor, without its boilerplate: the lines that say which
    process and node it was and why (pid, ip, out of memory, ...)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    keep = [line for line in lines if line.startswith(("pid", "ip", "The actor", "Reason"))]
    return f"{type(exc).__name__}: " + " | ".join(dict.fromkeys(keep or lines[:3]))


def _ray():
    try:
        import ray
    except ImportError:
        raise ValueError(
            "backend='ray' needs the ray package: pip install 'evo-svpg[ray]' (or "
            "pip install -e '.[ray]' in a clone)"
        ) from None
    return ray


class RayWorkerPool(ShardedPool):
    """``workers`` Ray actors, each a :class:`ShardServer` of one shard (0: one per CPU of the
    cluster, capped by the particles). A Ray this process already started (``ray.init``) is
    used as it is, whatever ``address`` says."""

    def __init__(self, cfg: Any, population: int, workers: int, address: str) -> None:
        super().__init__()
        self.ray = _ray()
        self.cfg, self.population, self.requested, self.address = cfg, population, workers, address
        self._own_ray = False
        self._closed = False
        self.bounds: list[slice] = []  # set by start: the cluster's CPUs may decide them

    def start(self, needs: frozenset[str]) -> None:
        """Start (or join) Ray and place the actors, each building its shard for operators
        that need ``needs``."""
        self._starting_once()
        ray, address, population = self.ray, self.address, self.population
        self._own_ray = not ray.is_initialized()
        if self._own_ray:  # "local": a new Ray even if RAY_ADDRESS or `ray start` has one
            local = {} if address else {"num_cpus": max(os.cpu_count() or 1, self.requested)}
            ray.init(address=address or "local", include_dashboard=False,
                     logging_level="WARNING", **local)  # fmt: skip
        try:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            workers = self.requested or max(1, min(cpus, population))
            if workers > cpus:
                raise ValueError(
                    f"workers={workers} but the Ray cluster at {address or 'this machine'} has "
                    f"{cpus} CPUs (each worker takes one): use workers <= {cpus}"
                )
            self.bounds = shard_bounds(population, workers)
            actor = ray.remote(num_cpus=1, max_restarts=0)(ShardServer)
            build = (population, frozenset(needs), tuple(self.evaluators))
            data = self.cfg.to_dict()
            self.actors = [actor.remote(data, rows, *build) for rows in self.bounds]
            self._get([a.ready.remote() for a in self.actors], start_timeout=START_TIMEOUT)
        except BaseException:
            self.close()
            raise

    def collect(self, theta: np.ndarray, steps_per_env: int) -> list:
        ref = self.ray.put(theta)
        return self._get([a.collect.remote(ref, steps_per_env) for a in self.actors])

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        ref = self.ray.put(theta)
        return np.concatenate(self._get([a.gradient.remote(ref) for a in self.actors]))

    def call(self, name: str, args: list | None = None) -> list:
        if name not in ShardServer.CALLS:
            raise ValueError(f"unknown call {name!r}; valid: {list(ShardServer.CALLS)}")
        args = args if args is not None else [None] * self.workers
        return self._get(
            [getattr(a, name).remote(x) for a, x in zip(self.actors, args, strict=True)]
        )

    def _get(self, refs: list, start_timeout: float | None = None) -> list:
        """The replies in shard order; a dead actor or one that raised stops the run, naming
        it. ``start_timeout``: seconds for all of them together (the actors' start)."""
        if self._closed or not self.started:
            raise RuntimeError(f"the worker pool is {'closed' if self._closed else 'not started'}")
        errors = self.ray.exceptions
        starting = start_timeout is not None
        deadline = time.monotonic() + (start_timeout or 0.0)
        out = []
        for k, ref in enumerate(refs):
            who = f"ray worker {k} (particles {self.bounds[k].start}-{self.bounds[k].stop - 1})"
            timeout = max(0.0, deadline - time.monotonic()) if starting else None
            try:
                out.append(self.ray.get(ref, timeout=timeout))
            except errors.GetTimeoutError:
                free = self.ray.available_resources().get("CPU", 0)  # before Ray is shut down
                total = self.ray.cluster_resources().get("CPU", 0)
                self.close()
                raise WorkerDied(
                    f"{who} did not start within {start_timeout:.0f} s: the cluster has "
                    f"{free:.0f} CPUs free of {total:.0f} (each worker takes one)"
                ) from None
            except errors.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, NonFiniteError):
                    raise NonFiniteError(f"{who}: {cause}") from None
                raise WorkerError(f"{who} raised:\n{exc}") from None
            except (errors.RayActorError, errors.ObjectLostError, errors.NodeDiedError) as exc:
                self.close()
                if starting:  # e.g. the package missing on a node: Ray's whole message
                    raise WorkerDied(f"{who} did not start: {exc}") from None
                raise WorkerDied(
                    f"{who} died (its process or node was lost): {_brief(exc)}; the run stops "
                    "here, its last checkpoint is kept: --resume continues it"
                ) from None
            except errors.RayError as exc:  # any other failure of Ray's (placement, memory)
                self.close()
                raise WorkerDied(f"{who} failed: {_brief(exc)}") from None
        return out

    def close(self) -> None:
        """Kill the actors; shut down the local Ray this run started (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for actor in getattr(self, "actors", []):
            with contextlib.suppress(Exception):
                self.ray.kill(actor)
        if self._own_ray and self.ray.is_initialized():
            self.ray.shutdown()
