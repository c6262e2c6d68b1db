"""Batched ``Acrobot-v1`` (gymnasium 1.4.0 ``AcrobotEnv``, "book" dynamics, + ``TimeLimit(500)``).

Bit-identical to gymnasium, which takes care in three places:

* The initial state is drawn in float64 and cast to **float32**; the reset observation is
  therefore computed with float32 ``cos``/``sin`` (numpy's float32 SIMD kernels, which often
  differ from the float64 result rounded to float32). After the first step the state is
  float64 (``np.append(float32 state, torque)`` promotes to float64).
* gymnasium evaluates ``_dsdt`` on numpy float64 *scalars*, where ``x**2`` calls libm ``pow``
  (not always equal to ``x*x``), so squares of state-dependent quantities go through
  :func:`~evo_svpg.envs.libm.libm_square`, which gives libm's result on any CPU (numpy's array
  ``np.power`` does not on AVX-512).
* Angles are wrapped by repeated ±2π subtraction (``wrap``) and velocities clipped (``bound``)
  after the rk4 step; the terminal test uses the wrapped float64 state.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from evo_svpg.envs.base import NumpyBatchedEnv, register_fast_path
from evo_svpg.envs.libm import libm_square

__all__ = ["AcrobotBatchedEnv"]

pi = np.pi
DT = 0.2
LINK_LENGTH_1 = 1.0
LINK_MASS_1 = 1.0
LINK_MASS_2 = 1.0
LINK_COM_POS_1 = 0.5
LINK_COM_POS_2 = 0.5
LINK_MOI = 1.0
MAX_VEL_1 = 4 * pi
MAX_VEL_2 = 9 * pi
AVAIL_TORQUE = (-1.0, 0.0, 1.0)  # gymnasium's last entry is the int +1; np.append makes it 1.0

# Constant sub-expressions of gymnasium's _dsdt, each evaluated exactly as Python does before
# it first meets an array operand (left-to-right evaluation).
_m1, _m2, _l1 = LINK_MASS_1, LINK_MASS_2, LINK_LENGTH_1
_lc1, _lc2, _I1, _I2, _g = LINK_COM_POS_1, LINK_COM_POS_2, LINK_MOI, LINK_MOI, 9.8
_D1_A = _m1 * _lc1**2  # d1 = A + m2 * (B + C * cos(theta2)) + I1 + I2
_D1_B = _l1**2 + _lc2**2
_D1_C = 2 * _l1 * _lc2
_D2_A = _lc2**2  # d2 = m2 * (A + B * cos(theta2)) + I2
_D2_B = _l1 * _lc2
_PHI2_K = _m2 * _lc2 * _g  # phi2 = K * cos(theta1 + theta2 - pi / 2.0)
_PHI1_K1 = -_m2 * _l1 * _lc2  # K1 * dtheta2**2 * sin(theta2)
_PHI1_K2 = 2 * _m2 * _l1 * _lc2  # K2 * dtheta2 * dtheta1 * sin(theta2)
_PHI1_K3 = (_m1 * _lc1 + _m2 * _l1) * _g  # K3 * cos(theta1 - pi / 2)
_DD2_K = _m2 * _l1 * _lc2  # K * dtheta1**2 * sin(theta2)
_DD2_DEN = _m2 * _lc2**2 + _I2  # denominator: DEN - d2**2 / d1

# rk4 with t = [0, dt] (python list): dt = t[1] - t[0]
_RK_DT = DT - 0
_RK_DT2 = _RK_DT / 2.0
_RK_DT6 = _RK_DT / 6.0
_WRAP_DIFF = pi - (-pi)


def _wrap_(x: np.ndarray, low: float, high: float, diff: float) -> None:
    """In-place vectorised ``wrap``: ``while x > M: x -= diff`` then ``while x < m: x += diff``."""
    mask = x > high
    while mask.any():
        np.subtract(x, diff, out=x, where=mask)
        np.greater(x, high, out=mask)
    np.less(x, low, out=mask)
    while mask.any():
        np.add(x, diff, out=x, where=mask)
        np.less(x, low, out=mask)


class AcrobotBatchedEnv(NumpyBatchedEnv):
    """``num_envs`` Acrobot-v1 copies; actions are ints in {0, 1, 2} (torque -1, 0, +1)."""

    env_id = "Acrobot-v1"
    max_episode_steps = 500
    _STATE_FIELDS = ("_s",)

    def __init__(self, num_envs: int, seed: int | None = None) -> None:
        super().__init__(num_envs, seed)
        high = np.array([1.0, 1.0, 1.0, 1.0, MAX_VEL_1, MAX_VEL_2], dtype=np.float32)
        self.single_observation_space = spaces.Box(low=-high, high=high, dtype=np.float32)
        self.single_action_space = spaces.Discrete(3)
        # Physics state, one row per env: theta1, theta2, dtheta1, dtheta2 (float64).
        self._s = np.zeros((self.num_envs, 4), dtype=np.float64)
        self._torque_table = np.array(AVAIL_TORQUE)

    def _reset_rows(self, idx: np.ndarray) -> np.ndarray:
        # gymnasium: uniform(low=-0.1, high=0.1, size=(4,)).astype(np.float32) per env.
        init = self.rng.uniform(low=-0.1, high=0.1, size=(idx.size, 4)).astype(np.float32)
        self._s[idx] = init
        obs = np.empty((idx.size, 6), dtype=np.float32)
        # float32 state -> float32 trigonometry, exactly as gymnasium's _get_ob after reset.
        np.cos(init[:, 0], out=obs[:, 0])
        np.sin(init[:, 0], out=obs[:, 1])
        np.cos(init[:, 1], out=obs[:, 2])
        np.sin(init[:, 1], out=obs[:, 3])
        obs[:, 4:] = init[:, 2:]
        return obs

    def _dsdt(self, y: np.ndarray, a: np.ndarray) -> np.ndarray:
        """gymnasium's ``_dsdt`` ("book" branch) on ``[N, 4]`` states; returns ``[N, 4]``."""
        theta1, theta2, dtheta1, dtheta2 = y.T
        cos2 = np.cos(theta2)
        sin2 = np.sin(theta2)
        d1 = _D1_A + _m2 * (_D1_B + _D1_C * cos2) + _I1 + _I2
        d2 = _m2 * (_D2_A + _D2_B * cos2) + _I2
        phi2 = _PHI2_K * np.cos(theta1 + theta2 - pi / 2.0)
        sq_dtheta2, sq_dtheta1, sq_d2 = libm_square(np.stack((dtheta2, dtheta1, d2)))  # one call
        phi1 = (
            _PHI1_K1 * sq_dtheta2 * sin2
            - _PHI1_K2 * dtheta2 * dtheta1 * sin2
            + _PHI1_K3 * np.cos(theta1 - pi / 2)
            + phi2
        )
        ddtheta2 = (a + d2 / d1 * phi1 - _DD2_K * sq_dtheta1 * sin2 - phi2) / (
            _DD2_DEN - sq_d2 / d1
        )
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return np.stack((dtheta1, dtheta2, ddtheta1, ddtheta2), axis=1)

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = self._torque_table[actions]
        if a.shape != (self.num_envs,):
            raise ValueError(f"{self!r}: actions must have shape ({self.num_envs},)")
        y0 = self._s
        # rk4 over [0, dt]; the torque component of gymnasium's augmented state stays `a`
        # (its derivative is 0.0 and a + dt2 * 0.0 == a).
        k1 = self._dsdt(y0, a)
        k2 = self._dsdt(y0 + _RK_DT2 * k1, a)
        k3 = self._dsdt(y0 + _RK_DT2 * k2, a)
        k4 = self._dsdt(y0 + _RK_DT * k3, a)
        ns = y0 + _RK_DT6 * (k1 + 2 * k2 + 2 * k3 + k4)
        theta1, theta2, dtheta1, dtheta2 = ns.T
        _wrap_(theta1, -pi, pi, _WRAP_DIFF)
        _wrap_(theta2, -pi, pi, _WRAP_DIFF)
        np.clip(dtheta1, -MAX_VEL_1, MAX_VEL_1, out=dtheta1)
        np.clip(dtheta2, -MAX_VEL_2, MAX_VEL_2, out=dtheta2)
        self._s[...] = ns

        cos1 = np.cos(theta1)
        terminated = -cos1 - np.cos(theta2 + theta1) > 1.0
        reward = np.where(terminated, 0.0, -1.0)
        obs = np.empty((self.num_envs, 6), dtype=np.float32)
        obs[:, 0] = cos1
        obs[:, 1] = np.sin(theta1)
        obs[:, 2] = np.cos(theta2)
        obs[:, 3] = np.sin(theta2)
        obs[:, 4:] = ns[:, 2:]
        return obs, reward, terminated


register_fast_path(AcrobotBatchedEnv)
