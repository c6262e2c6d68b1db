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

from evo_svpg.evaluation import EvalEpisodes
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
    def gradient(self, theta: np.ndarray) -> np.ndarray: ...
    def call(self, name: str, args: list | None = None) -> list: ...
    def close(self) -> None: ...


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
        returns = [r for reply in replies for r in reply[0]]
        lengths = [x for reply in replies for x in reply[1]]
        return RolloutSummary(returns, lengths, sum(reply[2] for reply in replies))

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


class ShardedEvaluator:
    """Stands in for the candidate :class:`~evo_svpg.evaluation.Evaluator` on the learner:
    the ``m`` candidates of an evaluation are split over the workers (rows in order), each
    evaluates its share with per-candidate streams, the results are joined."""

    log = None  # no QD records with workers (refused by build_run)

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def returns(self, theta: np.ndarray) -> tuple[np.ndarray, int]:
        result = self.episodes_of(theta)
        return result.returns.mean(axis=1), result.steps

    def episodes_of(self, theta: np.ndarray) -> EvalEpisodes:
        theta = np.ascontiguousarray(theta, dtype=np.float32)
        bounds = shard_bounds(theta.shape[0], self.pool.workers)
        parts = self.pool.call("evaluate", [(b.start, theta[b]) for b in bounds])
        returns = np.concatenate([p[0] for p in parts])
        terminated = np.concatenate([p[1] for p in parts])
        return EvalEpisodes(returns, terminated, sum(p[2] for p in parts), None)

    def take_log(self) -> list:
        return []

    def state_dict(self) -> dict:
        states = self.pool.call("evaluator_state")
        return merge_states(states, [-1] * len(states), "evaluator")  # shared: a call count

    def load_state_dict(self, state: dict) -> None:
        self.pool.call("load_evaluator", [state] * self.pool.workers)
