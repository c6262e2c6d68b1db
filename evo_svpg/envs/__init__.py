"""Batched environments: numpy fast paths for classic control, gymnasium for the rest.

Importing this package also registers with gymnasium the sparse-reward MountainCar ids
(:mod:`evo_svpg.envs.sparse_mountain_car`) and the SVPG paper's rllab Box2D envs
(:mod:`evo_svpg.envs.box2d_cartpole`, :mod:`evo_svpg.envs.box2d_double_pendulum`), with their
batched fast paths, so ``gymnasium.make`` finds them. :data:`FAST_PATH_IDS` are the fast paths of
gymnasium's own envs (tested against them); :data:`PAPER_ENV_IDS` are tested against pybox2d.
"""

from evo_svpg.envs.base import BatchedEnv, StepResult
from evo_svpg.envs.box2d_cartpole import CARTPOLE_SWINGUP_ID, RLLAB_CARTPOLE_ID
from evo_svpg.envs.box2d_double_pendulum import DOUBLE_PENDULUM_ID
from evo_svpg.envs.registry import FAST_PATH_IDS, make_batched_env
from evo_svpg.envs.sparse_mountain_car import (
    MOUNTAIN_CAR_CONTINUOUS_SPARSE_ID,
    MOUNTAIN_CAR_SPARSE_ID,
)

PAPER_ENV_IDS = (CARTPOLE_SWINGUP_ID, DOUBLE_PENDULUM_ID, RLLAB_CARTPOLE_ID)

__all__ = [
    "FAST_PATH_IDS",
    "MOUNTAIN_CAR_CONTINUOUS_SPARSE_ID",
    "MOUNTAIN_CAR_SPARSE_ID",
    "PAPER_ENV_IDS",
    "BatchedEnv",
    "StepResult",
    "make_batched_env",
]
