"""``make_batched_env``: numpy fast path for the classic-control ids, gymnasium otherwise."""

from __future__ import annotations

import gymnasium

from evo_svpg.envs.acrobot import AcrobotBatchedEnv
from evo_svpg.envs.base import BatchedEnv, NumpyBatchedEnv, check_num_envs
from evo_svpg.envs.cartpole import CartPoleBatchedEnv
from evo_svpg.envs.generic import GenericVectorEnv
from evo_svpg.envs.mountain_car import MountainCarBatchedEnv, MountainCarContinuousBatchedEnv
from evo_svpg.envs.pendulum import PendulumBatchedEnv

__all__ = ["FAST_PATH_IDS", "make_batched_env"]

_FAST_PATH: dict[str, type[NumpyBatchedEnv]] = {
    cls.env_id: cls
    for cls in (
        CartPoleBatchedEnv,
        AcrobotBatchedEnv,
        MountainCarBatchedEnv,
        MountainCarContinuousBatchedEnv,
        PendulumBatchedEnv,
    )
}

FAST_PATH_IDS: tuple[str, ...] = tuple(_FAST_PATH)


def make_batched_env(env_id: str, num_envs: int, seed: int | None = None) -> BatchedEnv:
    """``num_envs`` copies of ``env_id`` with gymnasium's time limit and same-step autoreset.

    The ids in :data:`FAST_PATH_IDS` get a vectorised numpy implementation that reproduces
    gymnasium's dynamics bit for bit; any other id registered with gymnasium is wrapped in a
    ``SyncVectorEnv`` (:class:`~evo_svpg.envs.generic.GenericVectorEnv`, slower, no snapshots).
    ``seed`` seeds the environment's generator (``reset()`` without a seed then starts from it).
    """
    num_envs = check_num_envs(num_envs)
    cls = _FAST_PATH.get(env_id)
    if cls is not None:
        return cls(num_envs, seed=seed)
    try:
        gymnasium.spec(env_id)  # also imports the module of a "module:EnvName-vN" id
    except (gymnasium.error.Error, ModuleNotFoundError) as err:
        raise ValueError(
            f"unknown environment id {env_id!r} ({err}): the fast-path ids are "
            f"{', '.join(FAST_PATH_IDS)}; any id registered with gymnasium also works "
            "(through the slower generic path)"
        ) from err
    return GenericVectorEnv(
        env_id, num_envs, seed=seed, reason=f"it is not one of the fast-path ids {FAST_PATH_IDS}"
    )
