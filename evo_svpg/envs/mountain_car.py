"""Batched ``MountainCar-v0`` and ``MountainCarContinuous-v0`` (gymnasium 1.4.0).

``MountainCar-v0`` (``TimeLimit(200)``) is plain float64 arithmetic (``math.cos`` equals numpy's
float64 ``cos`` on this platform).

``MountainCarContinuous-v0`` (``TimeLimit(999)``) is subtler, because gymnasium stores its state
as a **float32** array after every step but as a float64 array ``[position, 0]`` after reset,
and because numpy 2 (NEP 50) evaluates ``np.float32 op python_float`` in float32. For a float32
action ``a`` gymnasium therefore computes:

* ``force = min(max(a, -1.0), 1.0)`` is the float32 ``a`` if ``|a| <= 1``, else the Python float
  ±1.0; ``force * power`` is float32 in the first case, float64 (±0.0015) in the second;
* ``velocity += force * power - 0.0025 * math.cos(3 * position)``: ``3 * position`` is float32
  from a float32 state (float64 on the first step after reset), the cosine term is float64,
  and the difference is float32 unless the action was clipped;
* on a float32 state, velocity/position updates, clipping and comparisons are float32 (Python
  float bounds are cast to float32); on the fresh float64 state of the first step they are
  float64 (the new state is only cast to float32 at the end of that step);
* ``reward = 100 * terminated - math.pow(a, 2) * 0.1`` uses the **unclipped** action.

This class reproduces both regimes (``_fresh`` marks envs whose state is still the float64
reset state). Actions are cast to float32 (the action space's dtype) before use, so results
equal gymnasium's for float32 actions such as ``action_space.sample()``.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from evo_svpg.envs.base import NumpyBatchedEnv, ObservationRoles, register_fast_path

__all__ = ["MountainCarBatchedEnv", "MountainCarContinuousBatchedEnv"]

MIN_POSITION = -1.2
MAX_POSITION = 0.6
MAX_SPEED = 0.07
f32 = np.float32


class MountainCarBatchedEnv(NumpyBatchedEnv):
    """``num_envs`` MountainCar-v0 copies; actions are ints in {0, 1, 2} (push left/none/right)."""

    env_id = "MountainCar-v0"
    max_episode_steps = 200
    _STATE_FIELDS = ("_s",)
    GOAL_POSITION = 0.5
    GOAL_VELOCITY = 0
    FORCE = 0.001
    GRAVITY = 0.0025

    def __init__(self, num_envs: int, seed: int | None = None) -> None:
        super().__init__(num_envs, seed)
        low = np.array([MIN_POSITION, -MAX_SPEED], dtype=np.float32)
        high = np.array([MAX_POSITION, MAX_SPEED], dtype=np.float32)
        self.single_observation_space = spaces.Box(low, high, dtype=np.float32)
        self.single_action_space = spaces.Discrete(3)
        self._s = np.zeros((self.num_envs, 2), dtype=np.float64)  # per env: position, velocity
        # (action - 1) * force for action = 0, 1, 2
        self._push_table = np.array([(a - 1) * self.FORCE for a in range(3)])
        self._b = np.empty(self.num_envs)

    def _reset_rows(self, idx: np.ndarray) -> np.ndarray:
        # gymnasium: np.array([self.np_random.uniform(low=-0.6, high=-0.4), 0]) per env.
        init = self.rng.uniform(low=-0.6, high=-0.4, size=idx.size)
        self._s[idx, 0] = init
        self._s[idx, 1] = 0.0
        return self._s[idx].astype(np.float32)

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        push = self._push_table[actions]
        if push.shape != (self.num_envs,):
            raise ValueError(f"{self!r}: actions must have shape ({self.num_envs},)")
        position, velocity = self._s.T
        b = self._b
        # velocity += (action - 1) * force + math.cos(3 * position) * (-gravity)
        np.multiply(position, 3, out=b)
        np.cos(b, out=b)
        b *= -self.GRAVITY
        push += b
        velocity += push
        np.clip(velocity, -MAX_SPEED, MAX_SPEED, out=velocity)
        position += velocity
        np.clip(position, MIN_POSITION, MAX_POSITION, out=position)
        velocity[(position == MIN_POSITION) & (velocity < 0)] = 0.0
        terminated = (position >= self.GOAL_POSITION) & (velocity >= self.GOAL_VELOCITY)
        return self._s.astype(np.float32), np.full(self.num_envs, -1.0), terminated


class MountainCarContinuousBatchedEnv(NumpyBatchedEnv):
    """``num_envs`` MountainCarContinuous-v0 copies; actions are ``[N, 1]`` floats."""

    env_id = "MountainCarContinuous-v0"
    max_episode_steps = 999
    _STATE_FIELDS = ("_s", "_fresh")
    GOAL_POSITION = 0.45
    GOAL_VELOCITY = 0
    POWER = 0.0015

    def __init__(self, num_envs: int, seed: int | None = None) -> None:
        super().__init__(num_envs, seed)
        low = np.array([MIN_POSITION, -MAX_SPEED], dtype=np.float32)
        high = np.array([MAX_POSITION, MAX_SPEED], dtype=np.float32)
        self.single_observation_space = spaces.Box(low=low, high=high, dtype=np.float32)
        self.single_action_space = spaces.Box(low=-1.0, high=1.0, shape=(1,), dtype=np.float32)
        # gymnasium's self.state: float64 [position, 0] right after reset (_fresh), otherwise
        # float32 values (stored exactly in float64).
        self._s = np.zeros((self.num_envs, 2), dtype=np.float64)
        self._fresh = np.zeros(self.num_envs, dtype=bool)

    def _reset_rows(self, idx: np.ndarray) -> np.ndarray:
        init = self.rng.uniform(low=-0.6, high=-0.4, size=idx.size)
        self._s[idx, 0] = init
        self._s[idx, 1] = 0.0
        self._fresh[idx] = True
        return self._s[idx].astype(np.float32)

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self.num_envs
        a = np.asarray(actions, dtype=np.float32)
        if a.shape != (n, 1):
            raise ValueError(f"{self!r}: actions must have shape ({n}, 1)")
        a = a[:, 0]
        clipped = (a > 1.0) | (a < -1.0)
        any_clipped = clipped.any()
        if any_clipped:  # force is the Python float ±1.0, force * power is float64 ±0.0015
            push64 = np.where(a > 1.0, 1.0 * self.POWER, -1.0 * self.POWER)

        fresh_idx = np.flatnonzero(self._fresh) if self._fresh.any() else None
        if fresh_idx is not None:
            fresh_position = self._s[fresh_idx, 0]  # float64 reset positions (a copy)

        # Float32 regime (state stored as float32 by the previous step), computed for all envs.
        position, velocity = self._s.astype(np.float32).T
        cos_term = np.multiply(position, f32(3))  # 3 * position in float32
        cos_term = 0.0025 * np.cos(cos_term.astype(np.float64))  # math.cos: float64
        delta = a * f32(self.POWER) - cos_term.astype(np.float32)
        if any_clipped:
            delta[clipped] = (push64[clipped] - cos_term[clipped]).astype(np.float32)
        velocity += delta
        np.clip(velocity, -f32(MAX_SPEED), f32(MAX_SPEED), out=velocity)
        position += velocity
        np.clip(position, f32(MIN_POSITION), f32(MAX_POSITION), out=position)
        velocity[(position == f32(MIN_POSITION)) & (velocity < 0)] = 0.0
        terminated = (position >= f32(self.GOAL_POSITION)) & (velocity >= self.GOAL_VELOCITY)
        self._s[:, 0] = position
        self._s[:, 1] = velocity

        if fresh_idx is not None:  # first step after reset: float64 state [position, 0.0]
            idx = fresh_idx
            p = fresh_position
            c = 0.0025 * np.cos(3 * p)
            d = (a[idx] * f32(self.POWER) - c.astype(np.float32)).astype(np.float64)
            if any_clipped:
                cl = clipped[idx]
                d[cl] = push64[idx][cl] - c[cl]
            v = 0.0 + d
            np.clip(v, -MAX_SPEED, MAX_SPEED, out=v)
            p = p + v
            np.clip(p, MIN_POSITION, MAX_POSITION, out=p)
            v[(p == MIN_POSITION) & (v < 0)] = 0.0
            terminated[idx] = (p >= self.GOAL_POSITION) & (v >= self.GOAL_VELOCITY)
            self._s[idx, 0] = p.astype(np.float32)
            self._s[idx, 1] = v.astype(np.float32)
            self._fresh[idx] = False

        # reward = (100.0 if terminated else 0) - math.pow(action[0], 2) * 0.1, unclipped action
        reward = np.where(terminated, 100.0, 0.0)
        a64 = a.astype(np.float64)
        reward -= a64 * a64 * 0.1  # exact: a float32's square fits in float64, so it is libm's
        return self._s.astype(np.float32), reward, terminated


# Descriptors read the car's position and velocity: observation[0] and [1].
register_fast_path(MountainCarBatchedEnv, ObservationRoles(position=0, velocity=1))
register_fast_path(MountainCarContinuousBatchedEnv, ObservationRoles(position=0, velocity=1))
