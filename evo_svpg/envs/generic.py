"""Slow path: any gymnasium-registered environment behind the :class:`BatchedEnv` interface.

Wraps ``gymnasium.make_vec(env_id, num_envs, vectorization_mode="sync")`` with same-step
autoreset. Only rank-1 ``Box`` observation spaces and ``Discrete`` / ``Box`` action spaces are
supported. Snapshots are not: a gymnasium environment's internal state cannot be captured
generically, so :meth:`GenericVectorEnv.get_state` / :meth:`~GenericVectorEnv.set_state` raise
``NotImplementedError``.
"""

from __future__ import annotations

import logging
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from evo_svpg.envs.base import BatchedEnv, StepResult, check_num_envs

__all__ = ["GenericVectorEnv"]

logger = logging.getLogger("evo_svpg")


class GenericVectorEnv(BatchedEnv):
    """``num_envs`` copies of a gymnasium environment in a ``SyncVectorEnv`` (one Python call
    per env per step).

    ``reset(seed=s)`` seeds copy ``i`` with ``s + i`` (gymnasium's vector-env convention); a
    ``seed`` given to the constructor is used by the first ``reset()`` without a seed.
    Rewards are float64, observations float32. ``max_episode_steps`` (validated by
    :func:`~evo_svpg.envs.make_batched_env`) replaces the registered time limit; None keeps it.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        seed: int | None = None,
        reason: str = "",
        max_episode_steps: int | None = None,
    ) -> None:
        self.num_envs = check_num_envs(num_envs)
        self.env_id = env_id
        # make_vec hands keyword arguments it does not know to gymnasium.make for every copy,
        # and make's own max_episode_steps replaces the spec's TimeLimit. Only passed when set,
        # so without an override the env is built exactly as gymnasium registers it.
        limit = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
        try:
            self._envs = gymnasium.make_vec(
                env_id,
                num_envs=self.num_envs,
                vectorization_mode="sync",
                vector_kwargs={"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP},
                **limit,
            )
        except (gymnasium.error.DependencyNotInstalled, ImportError) as exc:
            raise ValueError(
                f"{env_id} needs a package that is not installed ({exc}); install it, or use one "
                "of the fast-path ids"
            ) from None
        try:
            obs_space = self._envs.single_observation_space
            act_space = self._envs.single_action_space
            if not (isinstance(obs_space, spaces.Box) and len(obs_space.shape) == 1):
                raise ValueError(
                    f"{env_id}: unsupported observation space {obs_space!r} "
                    "(only rank-1 Box observations are supported)"
                )
            if not isinstance(act_space, spaces.Discrete | spaces.Box):
                raise ValueError(
                    f"{env_id}: unsupported action space {act_space!r} "
                    "(only Discrete and Box actions are supported)"
                )
        except ValueError:
            self._envs.close()
            raise
        if obs_space.dtype != np.float32:  # observations are handed out as float32
            obs_space = spaces.Box(
                obs_space.low.astype(np.float32),
                obs_space.high.astype(np.float32),
                dtype=np.float32,
            )
        self.single_observation_space = obs_space
        self.single_action_space = act_space
        spec = self._envs.envs[0].spec  # the copies' spec carries an overridden limit
        self.max_episode_steps = int(spec.max_episode_steps) if spec.max_episode_steps else 0
        self._seed = seed
        self._needs_reset = True
        logger.info(
            "%s: using the slower generic gymnasium path (SyncVectorEnv, %d envs) because %s",
            env_id,
            self.num_envs,
            reason or "it has no batched numpy implementation",
        )

    @property
    def is_fast_path(self) -> bool:
        return False

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is None:
            seed, self._seed = self._seed, None
        obs, _ = self._envs.reset(seed=seed)
        self._needs_reset = False
        return np.asarray(obs, dtype=np.float32)

    def step(self, actions: np.ndarray) -> StepResult:
        if self._needs_reset:
            raise RuntimeError(f"{self!r}: call reset() before step()")
        obs, reward, terminated, truncated, infos = self._envs.step(np.asarray(actions))
        obs = np.array(obs, dtype=np.float32)
        final_obs = obs.copy()
        ended = infos.get("_final_obs")
        if ended is not None and np.any(ended):
            for i in np.flatnonzero(ended):
                final_obs[i] = infos["final_obs"][i]
        return StepResult(
            obs=obs,
            reward=np.asarray(reward, dtype=np.float64),
            terminated=np.asarray(terminated, dtype=bool),
            truncated=np.asarray(truncated, dtype=bool),
            final_obs=final_obs,
        )

    def get_state(self) -> dict[str, Any]:
        raise NotImplementedError(
            f"{self.env_id} runs on the generic gymnasium path, whose environments cannot be "
            "snapshotted generically; get_state/set_state need a fast-path env "
            "(see evo_svpg.envs.FAST_PATH_IDS)"
        )

    def set_state(self, state: dict[str, Any]) -> None:
        self.get_state()

    def close(self) -> None:
        self._envs.close()
