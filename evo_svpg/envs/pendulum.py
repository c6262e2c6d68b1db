"""Batched ``Pendulum-v1`` (gymnasium 1.4.0 ``PendulumEnv`` with g=10, + ``TimeLimit(200)``).

The state (θ, θ̇) is float64. With a float32 action ``u`` (clipped to ±2 in float32), gymnasium
computes ``u**2``, ``0.001 * u**2`` and ``3.0 * u`` in **float32** (NEP 50: Python floats adopt
the float32 dtype) and adds them to float64 terms. Squares of numpy scalars (``th**2``,
``thdot**2``, ``u**2``) are libm ``pow``/``powf`` calls, which differ from ``x*x`` in the last bit
now and then; :func:`~evo_svpg.envs.libm.libm_square` reproduces them on any CPU. The cost uses
``angle_normalize(θ) = ((θ + π) mod 2π) - π`` on the pre-step angle; the angle itself is never
wrapped. Actions are cast to float32 (the action space's dtype) before use.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from evo_svpg.envs.base import NumpyBatchedEnv, register_fast_path
from evo_svpg.envs.libm import libm_square

__all__ = ["PendulumBatchedEnv"]

MAX_SPEED = 8
MAX_TORQUE = 2.0
DT = 0.05
G = 10.0
M = 1.0
L = 1.0
_THDOT_K = 3 * G / (2 * L)  # coefficient of sin(th)
_U_K = 3.0 / (M * L**2)  # coefficient of u
_INIT_HIGH = np.array([np.pi, 1.0])


class PendulumBatchedEnv(NumpyBatchedEnv):
    """``num_envs`` Pendulum-v1 copies; actions are ``[N, 1]`` torques (clipped to ±2)."""

    env_id = "Pendulum-v1"
    max_episode_steps = 200
    _STATE_FIELDS = ("_s",)

    def __init__(self, num_envs: int, seed: int | None = None) -> None:
        super().__init__(num_envs, seed)
        high = np.array([1.0, 1.0, MAX_SPEED], dtype=np.float32)
        self.single_observation_space = spaces.Box(low=-high, high=high, dtype=np.float32)
        self.single_action_space = spaces.Box(
            low=-MAX_TORQUE, high=MAX_TORQUE, shape=(1,), dtype=np.float32
        )
        self._s = np.zeros((self.num_envs, 2), dtype=np.float64)  # per env: th, thdot

    @staticmethod
    def _obs(th: np.ndarray, thdot: np.ndarray) -> np.ndarray:
        obs = np.empty((th.shape[0], 3), dtype=np.float32)
        obs[:, 0] = np.cos(th)
        obs[:, 1] = np.sin(th)
        obs[:, 2] = thdot
        return obs

    def _reset_rows(self, idx: np.ndarray) -> np.ndarray:
        # gymnasium: self.np_random.uniform(low=-high, high=high) with high = [pi, 1] per env.
        init = self.rng.uniform(low=-_INIT_HIGH, high=_INIT_HIGH, size=(idx.size, 2))
        self._s[idx] = init
        return self._obs(init[:, 0], init[:, 1])

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self.num_envs
        u = np.asarray(actions, dtype=np.float32)
        if u.shape != (n, 1):
            raise ValueError(f"{self!r}: actions must have shape ({n}, 1)")
        u = np.clip(u[:, 0], -MAX_TORQUE, MAX_TORQUE)  # float32
        th, thdot = self._s.T

        # costs = angle_normalize(th)**2 + 0.1 * thdot**2 + 0.001 * (u**2)
        norm = (th + np.pi) % (2 * np.pi) - np.pi
        sq_norm, sq_thdot = libm_square(np.stack((norm, thdot)))  # one call for both
        costs = sq_norm + 0.1 * sq_thdot
        costs += np.float32(0.001) * libm_square(u)  # float32 term

        # newthdot = thdot + (3g/(2l) * sin(th) + 3/(m l^2) * u) * dt, clipped to ±8
        newthdot = thdot + (_THDOT_K * np.sin(th) + np.float32(_U_K) * u) * DT
        np.clip(newthdot, -MAX_SPEED, MAX_SPEED, out=newthdot)
        newth = th + newthdot * DT
        th[...] = newth
        thdot[...] = newthdot
        np.negative(costs, out=costs)
        return self._obs(newth, newthdot), costs, np.zeros(n, dtype=bool)


register_fast_path(PendulumBatchedEnv)
