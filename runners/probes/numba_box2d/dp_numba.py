"""@njit (serial) port of evo_svpg's batched Box2D double pendulum step.

A per-env scalar transcription of ``evo_svpg/envs/box2d_double_pendulum.py`` (``_World.step``:
fresh-world warm-start reset, motor, 2 x [_velocities, _positions (clamp, integrate, up to 20
position sweeps with per-env early exit, sleep)], then ``_advance``'s observation and reward).
Every float64 operation is written in the same order as the numpy rows (``_lin(a, x, b, y)``
= ``a*x (op) b*y``), so without FMA contraction (numba's default, fastmath off) the results
can be bit-identical to numpy where libm's sin/cos/sqrt/hypot agree with numpy's.

``NumbaDoublePendulumBatchedEnv`` subclasses the numpy env and only replaces ``_advance``: it
shares the state arrays, reset, autoreset and bookkeeping (``NumpyBatchedEnv.step``).
"""

from __future__ import annotations

import math

import numpy as np

import evo_svpg.envs.box2d_double_pendulum as dp

try:
    from numba import njit
except ImportError:
    raise SystemExit(
        "numba_box2d probe: numba is missing; `pip install numba` (not an evo_svpg dependency)"
    ) from None

# Constants, taken from the numpy module so that they are the same float64 values.
H = float(dp.H)
SUBSTEPS = int(dp.SUBSTEPS)
POS_ITERS = int(dp.POS_ITERS)
TORQUE = float(dp.TORQUE)
K = float(dp._K)
ALPHA = float(dp._ALPHA)
HALF, TWO, ONE = 0.5, 2.0, 1.0
K1I, KM2, NHALF = float(dp._K1I), float(dp._KM2), float(dp._NHALF)
K2, N2K, DET0, KK, RHO = (
    float(dp._2K),
    float(dp._N2K),
    float(dp._DET0),
    float(dp._KK),
    float(dp._RHO),
)
G2, KA, SLOP2, HDV = float(dp._G2), float(dp._KA), float(dp._SLOP2), float(dp._HDV)
A11, A12, A21, NK, TRK, DETA = (
    float(dp._A11),
    float(dp._A12),
    float(dp._A21),
    float(dp._NK),
    float(dp._TRK),
    float(dp._DETA),
)
LIN2, ANG2 = float(dp._LIN2), float(dp._ANG2)
MOTOR = H * 4.0 * dp._K  # as in _World.step: mul(torque, H * 4.0 * _K)
H32 = np.float32(dp._H32)
T_SLEEP = np.float32(dp._TIME_TO_SLEEP)
MAX_STEP, MAX_TURN = 2.0, 0.5 * np.pi


@njit(cache=True, nogil=True, boundscheck=False)
def dp_step(actions, p, v, j, sleep, fresh, tr, obs, reward):
    """One MDP step of every env, in place.

    ``actions [n, 1]`` (any float dtype, converted to float64 as numpy does), ``p, v [6, n]``,
    ``j [2, n]``, ``sleep [n]`` float32, ``fresh [n]`` bool, ``tr [2, 2, n]`` (cos/sin, link);
    outputs ``obs [n, 6]`` float32 and ``reward [n]`` float64.
    """
    n = p.shape[1]
    for i in range(n):
        # rllab's normalize: lb + (a + 1)·½·(ub − lb), clipped.
        a = np.float64(actions[i, 0])
        tq = -TORQUE + (a + 1.0) * 0.5 * (2.0 * TORQUE)
        if tq < -TORQUE:
            tq = -TORQUE
        elif tq > TORQUE:
            tq = TORQUE
        m1 = tq * MOTOR
        m0 = -m1
        c1x, c2x, c1y, c2y, a1, a2 = p[0, i], p[1, i], p[2, i], p[3, i], p[4, i], p[5, i]
        v0, v1, v2, v3, v4, v5 = v[0, i], v[1, i], v[2, i], v[3, i], v[4, i], v[5, i]
        if fresh[i]:
            j0 = 0.0
            j1 = 0.0
            fresh[i] = False
        else:
            j0, j1 = j[0, i], j[1, i]
        co1, co2, s1, s2 = tr[0, 0, i], tr[0, 1, i], tr[1, 0, i], tr[1, 1, i]
        sl = sleep[i]
        for _ in range(SUBSTEPS):
            # ---------------- _velocities ----------------
            v2 = v2 + HDV
            v3 = v3 + HDV
            v4 = v4 + m0
            v5 = v5 + m1
            hw0 = v4 * HALF
            hw1 = v5 * HALF
            q1x = co1 * v0 + s1 * v2
            q1y = co1 * v2 - s1 * v0
            q1x = q1x - hw0
            cd = co1 * co2 + s1 * s2
            sd = co1 * s2 - s1 * co2
            dv0 = v1 - v0
            dv1 = v3 - v2
            q2x = co1 * dv0 + s1 * dv1
            q2y = co1 * dv1 - s1 * dv0
            u = hw1 * cd + ONE * hw0
            q2x = q2x - u
            t = hw1 * sd
            q2y = q2y - t
            x0 = co1 * j0 + s1 * j1
            x1 = co1 * j1 - s1 * j0
            t = sd * sd
            t = t * K
            u = t * K + ONE * DET0
            u = ONE / u
            i11 = t + 4.0
            i11 = i11 * u
            i22 = u * TRK - ONE * i11
            i12 = (cd * sd) * (NK * u)
            a11 = i11 * A11
            a22 = i22 * TWO
            y0 = i11 * q2x + i12 * q2y
            y1 = i12 * q2x + i22 * q2y
            y0 = y0 * ALPHA - q1x * K1I
            t = q1y * NHALF
            y1 = t - y1
            trc = a11 + a22
            dt = trc * trc - u * DETA
            sq = math.sqrt(dt)
            mu0 = (trc + sq) * HALF
            mu1 = (trc - sq) * HALF
            p0 = mu0 * mu0
            p1 = mu1 * mu1
            g0 = p0 * p0
            g1 = p1 * p1
            g0 = g0 * g0
            g1 = g1 * g1
            g0 = g0 * g0
            g1 = g1 * g1  # μ¹⁶
            g0 = g0 * p0
            g1 = g1 * p1
            g0 = g0 * mu0
            g1 = g1 * mu1  # μ¹⁹
            f0 = (ONE - g0) / (ONE - mu0)
            f1 = (ONE - g1) / (ONE - mu1)
            sq = ONE / sq
            ag = (g0 - g1) * sq
            bg = (mu0 * g1 - mu1 * g0) * sq
            af = (f0 - f1) * sq
            bf = (mu0 * f1 - mu1 * f0) * sq
            z0 = af * y0 + ag * x0
            w0 = bf * y0 + bg * x0
            z1 = af * y1 + ag * x1
            w1 = bf * y1 + bg * x1
            t = z1 * i12
            x0 = a11 * z0 + A12 * t
            t = z0 * i12
            x1 = A21 * t + a22 * z1
            x0 = x0 + w0
            x1 = x1 + w1
            x0 = x0 * KM2 + ONE * q2x
            x1 = x1 * TWO
            x1 = q2y - x1
            z0 = i11 * x0 + i12 * x1
            z1 = i12 * x0 + i22 * x1
            y0 = z0 * KM2 - ONE * q1x
            y0 = y0 * K1I
            y1 = q1y * NHALF - ONE * z1
            dw0 = (y0 - z0) * N2K
            dw1 = (cd * z0 + sd * z1) * K2
            v4 = v4 + dw0
            v5 = v5 + dw1
            ns1 = -s1
            j0 = co1 * y0 + ns1 * y1
            j1 = co1 * y1 - ns1 * y0
            dv0 = co1 * z0 + ns1 * z1
            dv1 = co1 * z1 - ns1 * z0
            dv0 = dv0 * TWO
            dv1 = dv1 * TWO
            v1 = v1 - dv0
            v3 = v3 - dv1
            dv0 = dv0 + j0
            dv1 = dv1 + j1
            dv0 = dv0 + j0
            dv1 = dv1 + j1
            v0 = v0 + dv0
            v2 = v2 + dv1
            # ---------------- _positions ----------------
            # Box2D's clamps (numpy applies them only when some |v| > 141, where they are
            # identities for every other env: same result).
            st = math.hypot(v0, v2) * H
            if st > MAX_STEP:
                r = MAX_STEP / st
                v0 = v0 * r
                v2 = v2 * r
            st = math.hypot(v1, v3) * H
            if st > MAX_STEP:
                r = MAX_STEP / st
                v1 = v1 * r
                v3 = v3 * r
            tn = abs(v4) * H
            if tn > MAX_TURN:
                v4 = v4 * (MAX_TURN / tn)
            tn = abs(v5) * H
            if tn > MAX_TURN:
                v5 = v5 * (MAX_TURN / tn)
            c1x = c1x + v0 * H
            c2x = c2x + v1 * H
            c1y = c1y + v2 * H
            c2y = c2y + v3 * H
            a1 = a1 + v4 * H
            a2 = a2 + v5 * H
            ok = False
            for _it in range(POS_ITERS):
                co1 = math.cos(a1)
                co2 = math.cos(a2)
                s1 = math.sin(a1)
                s2 = math.sin(a2)
                # --- _sweep: elbow ---
                hh0 = (co1 + co2) * HALF
                hh1 = (s1 + s2) * HALF
                cx = c2x - c1x
                cy = c2y - c1y
                cx = cx - hh1
                cy = cy + hh0
                e2 = cx * cx + cy * cy
                d1 = co1 * cx + s1 * cy
                d2 = co2 * cx + s2 * cy
                r = co1 * s2 - s1 * co2
                r = r * r
                r = r * KK
                r = r + DET0
                r = K2 / r
                px = co1 * d1 + co2 * d2
                py = s1 * d1 + s2 * d2
                px = px - cx * RHO
                py = py - cy * RHO
                px = px * r
                py = py * r
                c1x = c1x - px
                c1y = c1y - py
                c2x = c2x + px
                c2y = c2y + py
                t = co1 * px + s1 * py
                a1 = a1 - t * K
                t = co2 * px + s2 * py
                a2 = a2 - t * K
                # --- _sweep: shoulder ---
                co1 = math.cos(a1)
                s1 = math.sin(a1)
                hh0 = co1 * HALF
                hh1 = s1 * HALF
                cx = c1x - hh1
                cy = c1y + hh0
                d2 = cx * cx + cy * cy
                if d2 > e2:
                    e2 = d2
                d1 = co1 * cx + s1 * cy
                d2 = d1 * G2
                c1x = hh1 + co1 * d2
                c1y = s1 * d2 - hh0
                a1 = a1 + d1 * KA
                if e2 <= SLOP2:
                    ok = True
                    break
            co1 = math.cos(a1)
            co2 = math.cos(a2)
            s1 = math.sin(a1)
            s2 = math.sin(a2)
            # ---------------- _sleep ----------------
            slow = (v4 * v4 <= ANG2) and (v5 * v5 <= ANG2)
            if slow:
                slow = (v0 * v0 + v2 * v2 <= LIN2) and (v1 * v1 + v3 * v3 <= LIN2)
            sl = np.float32(sl + H32) if slow else np.float32(0.0)
            if sl >= T_SLEEP and ok:
                v0 = v1 = v2 = v3 = v4 = v5 = 0.0
                sl = np.float32(0.0)
        p[0, i], p[1, i], p[2, i], p[3, i], p[4, i], p[5, i] = c1x, c2x, c1y, c2y, a1, a2
        v[0, i], v[1, i], v[2, i], v[3, i], v[4, i], v[5, i] = v0, v1, v2, v3, v4, v5
        j[0, i], j[1, i] = j0, j1
        tr[0, 0, i], tr[0, 1, i], tr[1, 0, i], tr[1, 1, i] = co1, co2, s1, s2
        sleep[i] = sl
        # ---------------- observation and reward (_advance) ----------------
        obs[i, 0] = s1
        obs[i, 1] = co1
        obs[i, 2] = v4
        obs[i, 3] = s2
        obs[i, 4] = co2
        obs[i, 5] = v5
        tx = s2 * -1.5 + ONE * c2x
        ty = co2 * -0.5
        ty = ty + c2y
        ty = ty - 2.0
        reward[i] = -math.sqrt(tx * tx + ty * ty)


class NumbaDoublePendulumBatchedEnv(dp.DoublePendulumBatchedEnv):
    """The numpy env with ``_advance`` replaced by :func:`dp_step` (same state arrays)."""

    def __init__(self, num_envs: int, seed: int | None = None) -> None:
        super().__init__(num_envs, seed)
        w = self._world
        self._tr = w.tr

    def _advance(self, actions):
        n, w = self.num_envs, self._world
        actions = np.asarray(actions)
        if actions.shape != (n, 1):
            raise ValueError(f"{self!r}: actions must have shape ({n}, 1)")
        obs = np.empty((n, 6), dtype=np.float32)
        reward = np.empty(n)
        dp_step(actions, w.p, w.v, w.j, w.sleep, w.fresh, w.tr, obs, reward)
        return obs, reward, np.zeros(n, dtype=bool)


def step_difference(ref, new, ref_result, new_result) -> float:
    """Largest absolute difference after one step of the numpy env ``ref`` and the numba env
    ``new``: observations, rewards and every state array (positions, velocities, joint
    impulses, sleep timers)."""
    return max(
        np.abs(ref_result.final_obs.astype(float) - new_result.final_obs).max(),
        np.abs(ref_result.reward - new_result.reward).max(),
        *(np.abs(getattr(ref, k) - getattr(new, k)).max() for k in ("_p", "_v", "_j", "_sleep")),
    )
