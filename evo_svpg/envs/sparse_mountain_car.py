"""Sparse-reward MountainCar: reward 1 on reaching the goal, 0 on every other step.

gymnasium's ``MountainCar-v0`` pays -1 per step and ``MountainCarContinuous-v0`` pays +100 at
the goal minus an action cost; both give a dense signal (step count, action energy) that a
policy can improve on without ever reaching the goal. The sparse variants keep only the
success event, which is the hard-exploration setting population methods are evaluated on:

* ``evo_svpg/MountainCarSparse-v0``: ``MountainCar-v0`` dynamics, ``TimeLimit(200)``;
* ``evo_svpg/MountainCarContinuousSparse-v0``: ``MountainCarContinuous-v0`` dynamics,
  ``TimeLimit(999)``.

Reward is ``1.0`` on the step where gymnasium's own ``terminated`` is True (position >= goal
position and velocity >= goal velocity), ``0.0`` otherwise, with no action cost; the episode
still ends at the goal. Everything else (observations, info, rendering, the float32/float64
state quirks of the continuous car) is gymnasium's, because ``step`` calls the parent's ``step``
and only replaces the reward. The batched fast paths likewise reuse the bit-exact dynamics of
:mod:`evo_svpg.envs.mountain_car` and replace only the reward.

Both ids are registered with gymnasium when this module is imported (``import evo_svpg`` does
that), so ``gymnasium.make("evo_svpg/MountainCarSparse-v0")`` works; registration skips ids
already present, so re-importing or reloading neither warns nor fails.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium.envs.classic_control import Continuous_MountainCarEnv, MountainCarEnv

from evo_svpg.envs.base import ObservationRoles, register_fast_path
from evo_svpg.envs.mountain_car import MountainCarBatchedEnv, MountainCarContinuousBatchedEnv

__all__ = [
    "MOUNTAIN_CAR_CONTINUOUS_SPARSE_ID",
    "MOUNTAIN_CAR_SPARSE_ID",
    "MountainCarContinuousSparseBatchedEnv",
    "MountainCarContinuousSparseEnv",
    "MountainCarSparseBatchedEnv",
    "MountainCarSparseEnv",
    "register_sparse_envs",
]

MOUNTAIN_CAR_SPARSE_ID = "evo_svpg/MountainCarSparse-v0"
MOUNTAIN_CAR_CONTINUOUS_SPARSE_ID = "evo_svpg/MountainCarContinuousSparse-v0"


def _sparse_reward(terminated: bool) -> float:
    return 1.0 if terminated else 0.0


class MountainCarSparseEnv(MountainCarEnv):
    """gymnasium's ``MountainCar-v0`` with reward 1.0 at the goal, 0.0 otherwise."""

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, _, terminated, truncated, info = super().step(action)
        return obs, _sparse_reward(terminated), terminated, truncated, info


class MountainCarContinuousSparseEnv(Continuous_MountainCarEnv):
    """gymnasium's ``MountainCarContinuous-v0`` with reward 1.0 at the goal, 0.0 otherwise (no
    action cost)."""

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, _, terminated, truncated, info = super().step(action)
        return obs, _sparse_reward(terminated), terminated, truncated, info


class _SparseReward:
    """Mixin for a batched car: the parent's dynamics, reward 1.0 exactly where it terminates."""

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs, _, terminated = super()._advance(actions)
        return obs, terminated.astype(np.float64), terminated


class MountainCarSparseBatchedEnv(_SparseReward, MountainCarBatchedEnv):
    """``num_envs`` copies of ``evo_svpg/MountainCarSparse-v0`` (MountainCar-v0 dynamics)."""

    env_id = MOUNTAIN_CAR_SPARSE_ID
    max_episode_steps = 200


class MountainCarContinuousSparseBatchedEnv(_SparseReward, MountainCarContinuousBatchedEnv):
    """``num_envs`` copies of ``evo_svpg/MountainCarContinuousSparse-v0``
    (MountainCarContinuous-v0 dynamics)."""

    env_id = MOUNTAIN_CAR_CONTINUOUS_SPARSE_ID
    max_episode_steps = 999


_SPECS: dict[str, tuple[str, int]] = {
    MOUNTAIN_CAR_SPARSE_ID: ("MountainCarSparseEnv", MountainCarSparseBatchedEnv.max_episode_steps),
    MOUNTAIN_CAR_CONTINUOUS_SPARSE_ID: (
        "MountainCarContinuousSparseEnv",
        MountainCarContinuousSparseBatchedEnv.max_episode_steps,
    ),
}


def register_sparse_envs() -> None:
    """Register both sparse ids with gymnasium, skipping ids already registered.

    ``gymnasium.register`` warns when it overrides an id, so a plain call would warn on every
    ``importlib.reload``; the entry points are strings, so an existing registration always
    resolves to the current module's classes anyway.
    """
    for env_id, (class_name, max_episode_steps) in _SPECS.items():
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(
            id=env_id,
            entry_point=f"evo_svpg.envs.sparse_mountain_car:{class_name}",
            max_episode_steps=max_episode_steps,
        )


register_sparse_envs()
for _cls in (MountainCarSparseBatchedEnv, MountainCarContinuousSparseBatchedEnv):
    register_fast_path(_cls, ObservationRoles(position=0, velocity=1))
