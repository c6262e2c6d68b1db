"""``make_batched_env``: numpy fast path for the classic-control ids, gymnasium otherwise."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

# The built-in fast paths register themselves (register_fast_path) when their module loads.
from evo_svpg.envs import acrobot, cartpole, mountain_car, pendulum, sparse_mountain_car
from evo_svpg.envs.base import BatchedEnv, check_num_envs
from evo_svpg.envs.generic import GenericVectorEnv
from evo_svpg.registry import FAST_PATHS

__all__ = ["FAST_PATH_IDS", "make_batched_env"]

_GYMNASIUM_TWINS = {
    m.__name__ for m in (acrobot, cartpole, mountain_car, pendulum, sparse_mountain_car)
}
# The fast paths of gymnasium's classic-control envs (and the sparse cars built on them), which
# tests/test_envs.py checks against gymnasium itself; FAST_PATHS has every registered one.
FAST_PATH_IDS: tuple[str, ...] = tuple(
    name for name, cls in FAST_PATHS.items() if cls.__module__ in _GYMNASIUM_TWINS
)


def _check_max_episode_steps(max_episode_steps: Any) -> int | None:
    """Validate a time-limit override: None (keep the env's limit) or an int >= 1.

    Checked here, before either path, so both reject the same values with the same message:
    gymnasium's ``make`` treats ``-1`` as "no ``TimeLimit`` at all" (episodes that never end),
    which a typo should not select; the fast path would accept 0 or negatives silently
    (truncating every step); and a bool would pass as the int 0 or 1.
    """
    if max_episode_steps is None:
        return None
    valid = "None (keep the environment's registered limit) or an int >= 1"
    if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int | np.integer):
        raise ValueError(f"max_episode_steps must be {valid}, got {max_episode_steps!r}")
    if max_episode_steps < 1:
        raise ValueError(
            f"max_episode_steps must be {valid}, got max_episode_steps={max_episode_steps}"
        )
    return int(max_episode_steps)


def make_batched_env(
    env_id: str, num_envs: int, seed: int | None = None, max_episode_steps: int | None = None
) -> BatchedEnv:
    """``num_envs`` copies of ``env_id`` with gymnasium's time limit and same-step autoreset.

    The ids in :data:`FAST_PATH_IDS` get a vectorised numpy implementation that reproduces
    gymnasium's dynamics bit for bit; any other id registered with gymnasium is wrapped in a
    ``SyncVectorEnv`` (:class:`~evo_svpg.envs.generic.GenericVectorEnv`, slower, no snapshots).
    ``seed`` seeds the environment's generator (``reset()`` without a seed then starts from it).
    ``max_episode_steps`` replaces the registered time limit (None keeps it), with the same
    effect as ``gymnasium.make(env_id, max_episode_steps=...)`` on both paths.
    """
    num_envs = check_num_envs(num_envs)
    max_episode_steps = _check_max_episode_steps(max_episode_steps)
    if env_id in FAST_PATHS:
        cls = FAST_PATHS.get(env_id)
        env = cls(num_envs, seed=seed)
        if max_episode_steps is not None:  # shadows the class default for this instance only
            env.max_episode_steps = max_episode_steps
        return env
    try:
        gymnasium.spec(env_id)  # also imports the module of a "module:EnvName-vN" id
    except (gymnasium.error.Error, ModuleNotFoundError) as err:
        raise ValueError(
            f"unknown environment id {env_id!r} ({err}): the fast-path ids are "
            f"{', '.join(FAST_PATHS.names())}; any id registered with gymnasium also works "
            "(through the slower generic path)"
        ) from err
    return GenericVectorEnv(
        env_id,
        num_envs,
        seed=seed,
        reason=f"it is not one of the fast-path ids {tuple(FAST_PATHS.names())}",
        max_episode_steps=max_episode_steps,
    )
