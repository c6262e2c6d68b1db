"""Batched ``CartPole-v1`` (gymnasium 1.4.0 ``CartPoleEnv`` + ``TimeLimit(500)``).

Bit-identical to gymnasium: the state is float64 throughout (the initial state is the raw
float64 uniform draw), observations are the float32 cast of the state, every expression keeps
gymnasium's operand order (only commutative swaps), and every step pays reward 1.0, including
the terminating one.
"""

from __future__ import annotations

import math

import numpy as np
from gymnasium import spaces

from evo_svpg.envs.base import NumpyBatchedEnv, ObservationRoles, register_fast_path

__all__ = ["CartPoleBatchedEnv"]

GRAVITY = 9.8
MASSCART = 1.0
MASSPOLE = 0.1
TOTAL_MASS = MASSPOLE + MASSCART
LENGTH = 0.5  # half the pole's length
POLEMASS_LENGTH = MASSPOLE * LENGTH
FORCE_MAG = 10.0
TAU = 0.02
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4


class CartPoleBatchedEnv(NumpyBatchedEnv):
    """``num_envs`` CartPole-v1 copies; actions are ints in {0, 1} (1 pushes right)."""

    env_id = "CartPole-v1"
    max_episode_steps = 500
    _STATE_FIELDS = ("_s",)

    def __init__(self, num_envs: int, seed: int | None = None) -> None:
        super().__init__(num_envs, seed)
        high = np.array([X_THRESHOLD * 2, np.inf, THETA_THRESHOLD * 2, np.inf], dtype=np.float32)
        self.single_observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.single_action_space = spaces.Discrete(2)
        n = self.num_envs
        # Physics state, one row per env: x, x_dot, theta, theta_dot (float64).
        self._s = np.zeros((n, 4), dtype=np.float64)
        # Euler increments: tau * (x_dot, xacc, theta_dot, thetaacc).
        self._d = np.empty((n, 4), dtype=np.float64)
        self._cos = np.empty(n)
        self._sin = np.empty(n)
        self._b = np.empty(n)
        self._abs = np.empty((n, 2))
        self._out = np.empty((n, 2), dtype=bool)
        self._force_table = np.array([-FORCE_MAG, FORCE_MAG])
        self._thresholds = np.array([X_THRESHOLD, THETA_THRESHOLD])

    def _reset_rows(self, idx: np.ndarray) -> np.ndarray:
        # gymnasium: self.np_random.uniform(low=-0.05, high=0.05, size=(4,)) per env.
        init = self.rng.uniform(low=-0.05, high=0.05, size=(idx.size, 4))
        self._s[idx] = init
        return init.astype(np.float32)

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # `force_mag if action == 1 else -force_mag`, as a table lookup (0 -> -10, 1 -> +10).
        force = self._force_table[actions]
        if force.shape != (self.num_envs,):
            raise ValueError(f"{self!r}: actions must have shape ({self.num_envs},)")
        s, d, b = self._s, self._d, self._b
        theta = s[:, 2]
        theta_dot = s[:, 3]
        cos = np.cos(theta, out=self._cos)
        sin = np.sin(theta, out=self._sin)
        temp = d[:, 1]  # becomes xacc in place
        thetaacc = d[:, 3]

        # temp = (force + polemass_length * theta_dot**2 * sintheta) / total_mass
        np.multiply(theta_dot, theta_dot, out=temp)
        temp *= POLEMASS_LENGTH
        temp *= sin
        temp += force
        temp /= TOTAL_MASS
        # thetaacc = (gravity * sin - cos * temp)
        #            / (length * (4/3 - masspole * cos**2 / total_mass))
        np.multiply(cos, cos, out=b)
        b *= MASSPOLE
        b /= TOTAL_MASS
        np.subtract(4.0 / 3.0, b, out=b)
        b *= LENGTH
        np.multiply(sin, GRAVITY, out=thetaacc)
        np.multiply(cos, temp, out=sin)  # sin is not needed any more
        thetaacc -= sin
        thetaacc /= b
        # xacc = temp - polemass_length * thetaacc * cos / total_mass
        np.multiply(thetaacc, POLEMASS_LENGTH, out=b)
        b *= cos
        b /= TOTAL_MASS
        temp -= b
        # Explicit Euler: (x, x_dot, theta, theta_dot) += tau * (x_dot, xacc, theta_dot, thetaacc)
        d[:, ::2] = s[:, 1::2]
        d *= TAU
        s += d

        # x < -2.4 or x > 2.4 or theta < -thr or theta > thr  <=>  |x| > 2.4 or |theta| > thr
        np.abs(s[:, ::2], out=self._abs)
        np.greater(self._abs, self._thresholds, out=self._out)
        terminated = self._out[:, 0] | self._out[:, 1]
        return s.astype(np.float32), np.ones(self.num_envs), terminated


# Descriptors read the cart's position and velocity: observation[0] and [1].
register_fast_path(CartPoleBatchedEnv, ObservationRoles(position=0, velocity=1))
