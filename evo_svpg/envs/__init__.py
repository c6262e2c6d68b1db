"""Batched environments: numpy fast paths for classic control, gymnasium for the rest.

Importing this package also registers the sparse-reward MountainCar ids with gymnasium
(:mod:`evo_svpg.envs.sparse_mountain_car`), so ``gymnasium.make`` finds them.
"""

from evo_svpg.envs.base import BatchedEnv, StepResult
from evo_svpg.envs.registry import FAST_PATH_IDS, make_batched_env
from evo_svpg.envs.sparse_mountain_car import (
    MOUNTAIN_CAR_CONTINUOUS_SPARSE_ID,
    MOUNTAIN_CAR_SPARSE_ID,
)

__all__ = [
    "FAST_PATH_IDS",
    "MOUNTAIN_CAR_CONTINUOUS_SPARSE_ID",
    "MOUNTAIN_CAR_SPARSE_ID",
    "BatchedEnv",
    "StepResult",
    "make_batched_env",
]
