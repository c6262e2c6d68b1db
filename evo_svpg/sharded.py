"""The learner's stand-ins for the sampler and the estimator when particles live on workers.

Operators call ``ctx.sampler.collect`` and ``ctx.estimator.gradient`` as in one process; these
forward the calls to a pool of shards (local processes, :mod:`evo_svpg.workers`, or Ray
actors, :mod:`evo_svpg.ray_workers`) and gather the replies. Checkpoints get the merged
population state (:mod:`evo_svpg.shard_state`), so they resume with any number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from evo_svpg.behaviour import Behaviours
from evo_svpg.evaluation import EvalEpisodes, EvaluationLog, EvaluatorSpec
from evo_svpg.shard_state import merge_states, reindex_state, shard_bounds, split_state


class Pool(Protocol):
    """What both backends offer: shards in population order, and calls on all of them."""

    bounds: list[slice]
    population: int

    @property
    def workers(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def collect(self, theta: np.ndarray, steps_per_env: int) -> list: ...
    def open_evaluator(self, spec: EvaluatorSpec) -> int: ...
    def start(self, needs: frozenset[str]) -> None: ...
    def gradient(self, theta: np.ndarray) -> np.ndarray: ...
    def call(self, name: str, args: list | None = None) -> list: ...
    def close(self) -> None: ...


@dataclass
class RolloutSummary:
    """What the learner sees of a sharded rollout: each particle's ended episodes, the steps
    taken and the buffers' ``shape (T, n, E)`` (the transitions stay with the workers, which
    compute ∇J from them); with novelty or QD operators also the episodes' behaviours and,
    if an operator reads them, the final observations ``[T, n, E, obs_dim]``."""

    episode_returns: list[np.ndarray]
    episode_lengths: list[np.ndarray]
    steps_taken: int
    shape: tuple[int, int, int]
    behaviours: Behaviours | None = None
    final_obs: np.ndarray | None = None
    episode_signal: np.ndarray | None = None  # set by a novelty operator, sent to the workers
    valid: None = None

    @property
    def n_particles(self) -> int:
        return len(self.episode_returns)

    @classmethod
    def merge(cls, parts: list[RolloutSummary], firsts: list[int]) -> RolloutSummary:
        """The population's summary from its shards' (shard ``k``'s particles start at
        ``firsts[k]``), as one process holding every particle makes it."""
        t_max = max(p.shape[0] for p in parts)
        shape = (t_max, sum(p.shape[1] for p in parts), parts[0].shape[2])
        behaviours = None
        if parts[0].behaviours is not None:
            behaviours = merge_behaviours([p.behaviours for p in parts], firsts)
        final_obs = None
        if parts[0].final_obs is not None:
            final_obs = np.concatenate([p.final_obs for p in parts], axis=1)
        return cls(
            [r for p in parts for r in p.episode_returns],
            [x for p in parts for x in p.episode_lengths],
            sum(p.steps_taken for p in parts), shape, behaviours, final_obs,
        )  # fmt: skip


def merge_behaviours(parts: list[Behaviours], firsts: list[int]) -> Behaviours:
    """The population's :class:`Behaviours` from its shards' (particles numbered from 0 in
    each): ended episodes in one process's order, time-major over the population's envs."""
    envs = parts[0].partial.shape[1]
    particle = np.concatenate([b.particle + f for b, f in zip(parts, firsts, strict=True)])
    env = np.concatenate([b.env for b in parts])
    step = np.concatenate([b.step for b in parts])
    order = np.lexsort((particle * envs + env, step))

    def joined(name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name) for b in parts])

    return Behaviours(
        descriptors=joined("descriptors")[order], step=step[order], particle=particle[order],
        env=env[order], returns=joined("returns")[order], partial=joined("partial"),
        partial_valid=joined("partial_valid"), partial_returns=joined("partial_returns"),
        bounds=parts[0].bounds,
    )  # fmt: skip


class ShardedSampler:
    """Stands in for :class:`~evo_svpg.sampler.Sampler` on the learner."""

    def __init__(self, pool: Pool, whole_episodes: bool, envs_per_particle: int) -> None:
        self.pool, self.whole_episodes = pool, whole_episodes
        self.envs_per_particle = envs_per_particle

    def _slots(self) -> list[slice]:
        e = self.envs_per_particle
        return [slice(b.start * e, b.stop * e) for b in self.pool.bounds]

    def collect(self, theta: np.ndarray, steps_per_env: int) -> RolloutSummary:
        replies = self.pool.collect(theta, steps_per_env)
        return RolloutSummary.merge(replies, [b.start for b in self.pool.bounds])

    def state_dict(self) -> dict:
        """The population's sampler state: env slots concatenated, ``num_envs`` summed."""
        states = self.pool.call("sampler_state")
        slots = [s.stop - s.start for s in self._slots()]
        trimmed = [_with_num_envs(s, None) for s in states]
        return _with_num_envs(merge_states(trimmed, slots, "sampler"), sum(slots))

    def load_state_dict(self, state: dict) -> None:
        total = self.pool.population * self.envs_per_particle
        parts = [
            _with_num_envs(split_state(state, total, s), s.stop - s.start) for s in self._slots()
        ]
        self.pool.call("load_sampler", parts)


def _with_num_envs(state: dict, num_envs: int | None) -> dict:
    if state.get("env") is None:  # a generic env: nothing snapshotted
        return state
    return {**state, "env": {**state["env"], "num_envs": num_envs}}


class ShardedEstimator:
    """Stands in for the run's estimator on the learner; checkpoints under its name."""

    def __init__(self, pool: Pool, name: str) -> None:
        self.pool, self.checkpoint_name = pool, name

    def gradient(self, theta: Tensor, rollout: RolloutSummary) -> Tensor:
        signal = rollout.episode_signal  # an operator's per-episode signal (novelty): ship it
        if signal is not None:
            self.pool.call("episode_signal", [signal[:, b] for b in self.pool.bounds])
        return torch.from_numpy(self.pool.gradient(theta.numpy()))

    def state_dict(self) -> dict:
        states = self.pool.call("estimator_state")
        return merge_states(states, [b.stop - b.start for b in self.pool.bounds], "estimator")

    def load_state_dict(self, state: dict) -> None:
        n = self.pool.population
        self.pool.call("load_estimator", [split_state(state, n, b) for b in self.pool.bounds])

    def reindex(self, parents: Tensor) -> None:
        """Clones inherit their parent's per-particle state, across workers: the population's
        state is gathered, its per-particle rows reindexed, and handed back."""
        n = self.pool.population
        self.load_state_dict(reindex_state(self.state_dict(), n, parents.numpy()))


class ShardedEvaluator(EvaluationLog):
    """Stands in for an :class:`~evo_svpg.evaluation.Evaluator` on the learner: every worker
    builds one from the same ``spec``; the ``m`` candidates of an evaluation are split over
    the workers (rows in order), each evaluates its share with per-candidate streams, the
    results are joined (and logged here, if ``spec.log``: the QD grid archive reads them)."""

    def __init__(self, pool: Pool, spec: EvaluatorSpec) -> None:
        self.pool, self.key = pool, pool.open_evaluator(spec)
        self.log: list[EvalEpisodes] | None = [] if spec.log else None

    def returns(self, theta: np.ndarray) -> tuple[np.ndarray, int]:
        result = self.episodes_of(theta)
        return result.returns.mean(axis=1), result.steps

    def episodes_of(self, theta: np.ndarray) -> EvalEpisodes:
        theta = np.ascontiguousarray(theta, dtype=np.float32)
        bounds = shard_bounds(theta.shape[0], self.pool.workers)
        parts = self.pool.call("evaluate", [(self.key, b.start, theta[b]) for b in bounds])
        described = [p[3] for p in parts if p[3] is not None]  # an empty share has none
        return self._logged(EvalEpisodes(
            np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            sum(p[2] for p in parts), np.concatenate(described) if described else None,
        ))  # fmt: skip

    def state_dict(self) -> dict:
        states = self.pool.call("evaluator_state", [self.key] * self.pool.workers)
        return merge_states(states, [-1] * len(states), "evaluator")  # shared: a call count

    def load_state_dict(self, state: dict) -> None:
        self.pool.call("load_evaluator", [(self.key, state)] * self.pool.workers)
