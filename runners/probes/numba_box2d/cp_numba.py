"""@njit (serial) port of evo_svpg's batched Box2D cart-pole step (swing-up and balance share
``CartpoleWorlds.step``); per-env scalar transcription of ``evo_svpg/envs/box2d_cartpole.py`` in
the numpy rows' float64 order. The ``Numba*BatchedEnv`` classes subclass the numpy envs and
replace ``_advance`` only (same state arrays, reset, autoreset and bookkeeping).
"""

from __future__ import annotations

import math

import numpy as np

import evo_svpg.envs.box2d_cartpole as cp

try:
    from numba import njit
except ImportError:
    raise SystemExit(
        "numba_box2d probe: numba is missing; `pip install numba` (not an evo_svpg dependency)"
    ) from None

DT, GRAVITY = float(cp.DT), float(cp.GRAVITY)
DTG = DT * GRAVITY
M_CART, M_POLE, I_POLE, I_PIVOT = (
    float(cp.M_CART),
    float(cp.M_POLE),
    float(cp.I_POLE),
    float(cp.I_PIVOT),
)
MTOT = M_CART + M_POLE
MTOT_IP = (M_CART + M_POLE) * I_PIVOT
NHALF_MP = -0.5 * M_POLE
HALF_MP = 0.5 * M_POLE
MB, IB = float(cp.MB), float(cp.IB)
KD0, KD1 = float(cp.KD0), float(cp.KD1)
AD0, AD1 = float(cp.A_DIAG[0, 0]), float(cp.A_DIAG[1, 0])
HR0, HR1 = float(cp.HALF_R[0, 0]), float(cp.HALF_R[1, 0])
SLOP2 = float(cp.LINEAR_SLOP) ** 2
MAX_SPEED, MAX_SPIN = float(cp.MAX_SPEED), float(cp.MAX_SPIN)
SLEEP_LIN2, SLEEP_ANG2 = float(cp.SLEEP_LIN2), float(cp.SLEEP_ANG2)
SLEEP_DT, TIME_TO_SLEEP = np.float32(cp.SLEEP_DT), np.float32(cp.TIME_TO_SLEEP)
YA_TRACK = float(cp.YA_TRACK)
POS_ITERS = int(cp.POS_ITERS)
FORCE_MAX = float(cp.FORCE_MAX)
X_LIMIT_SWINGUP = 3.0
X_LIMIT_BALANCE, THETA_LIMIT = 2.4, 0.2


@njit(inline="always")
def _sweep(x, ya, px, py, th):
    """One position sweep [pole joint, prismatic] (the cart's height is put back by the caller)."""
    r0 = math.sin(th) * HR0
    r1 = math.cos(th) * HR1
    con0 = px - x
    con1 = py - ya
    con0 = con0 + r0
    con1 = con1 + r1
    ok = con0 * con0 + con1 * con1 <= SLOP2
    t = r0 * con0 + r1 * con1
    det = r0 * r0
    det = det * -KD1
    det = det - KD0
    imp0 = con0 * AD0
    imp1 = con1 * AD1
    imp0 = imp0 + r0 * t
    imp1 = imp1 + r1 * t
    imp0 = imp0 / det
    imp1 = imp1 / det
    x = x - imp0
    px = px + MB * imp0
    py = py + MB * imp1
    turn = r0 * imp1 - r1 * imp0
    turn = turn * IB
    th = th + turn
    return ok, x, px, py, th


@njit(cache=True, nogil=True, boundscheck=False)
def cp_step(actions, body, trig, timers, obs, reward, terminated, balance=False):
    """One swing-up (or, with ``balance``, balancing) MDP step of every env, in place.

    ``body [10, n]``, ``trig [2, n]`` (sin, cos), ``timers [2, n]`` float32; outputs
    ``obs [n, 4]`` float32, ``reward [n]``, ``terminated [n]``.
    """
    n = body.shape[1]
    for i in range(n):
        f = actions[i, 0]
        if f > 1.0:
            f = np.float32(1.0)
        if f < -1.0:
            f = np.float32(-1.0)
        force = np.float64(f) * FORCE_MAX
        imp = force * DT
        x, ya, px, py, th = body[0, i], body[1, i], body[2, i], body[3, i], body[4, i]
        u, vc, vx, vy, w = body[5, i], body[6, i], body[7, i], body[8, i], body[9, i]
        s, c = trig[0, i], trig[1, i]
        # 1. velocities: converged sweeps = kinetic-energy projection.
        vy = vy - DTG
        p1 = vx * M_POLE
        p1 = p1 + u
        p1 = p1 + imp
        p2 = c * vx + s * vy
        p2 = p2 * NHALF_MP
        p2 = p2 + I_POLE * w
        mc = c * HALF_MP
        det = MTOT_IP - mc * mc
        w = p2 * MTOT
        w = w + mc * p1
        w = w / det
        u = mc * w
        u = u + p1
        u = u / MTOT
        hw = w * -0.5
        vx = c * hw
        vy = s * hw
        vx = vx + u
        # 2. clamps (numpy applies them only when some squared velocity > MAX_SPEED²/2, where
        #    they are identities for the other envs) and integration.
        if u < -MAX_SPEED:
            u = -MAX_SPEED
        elif u > MAX_SPEED:
            u = MAX_SPEED
        if w < -MAX_SPIN:
            w = -MAX_SPIN
        elif w > MAX_SPIN:
            w = MAX_SPIN
        speed = math.hypot(vx, vy)
        if speed > MAX_SPEED:
            k = MAX_SPEED / speed
            vx = vx * k
            vy = vy * k
        sq_u, sq_vx, sq_vy, sq_w = u * u, vx * vx, vy * vy, w * w
        x = x + DT * u
        ya = ya + DT * vc
        px = px + DT * vx
        py = py + DT * vy
        th = th + DT * w
        # 3. position sweeps with early exit
        solved = ya == YA_TRACK
        ok, x, px, py, th = _sweep(x, ya, px, py, th)
        solved = solved and ok
        ya = YA_TRACK
        for _ in range(POS_ITERS - 1):
            if solved:
                break
            solved, x, px, py, th = _sweep(x, ya, px, py, th)
        s = math.sin(th)
        c = math.cos(th)
        # sleep
        t0, t1 = timers[0, i], timers[1, i]
        slow_cart = sq_u <= SLEEP_LIN2
        spin_ok = sq_w <= SLEEP_ANG2
        slow_pole = (sq_vx + sq_vy <= SLEEP_LIN2) and spin_ok
        t0 = np.float32(t0 + SLEEP_DT) if slow_pole else np.float32(0.0)
        t1 = np.float32(t1 + SLEEP_DT) if slow_cart else np.float32(0.0)
        if min(t0, t1) >= TIME_TO_SLEEP and solved:
            u = vc = vx = vy = w = 0.0
            t0 = t1 = np.float32(0.0)
        timers[0, i], timers[1, i] = t0, t1
        body[0, i], body[1, i], body[2, i], body[3, i], body[4, i] = x, ya, px, py, th
        body[5, i], body[6, i], body[7, i], body[8, i], body[9, i] = u, vc, vx, vy, w
        trig[0, i], trig[1, i] = s, c
        obs[i, 0], obs[i, 1], obs[i, 2], obs[i, 3] = x, u, th, w
        if balance:
            term = abs(x) > X_LIMIT_BALANCE or abs(th) > THETA_LIMIT
            cost = force * force
            cost = cost * 1e-5
            rw = c - cost
            rw = rw + 9.0
            reward[i] = 0.0 if term else rw
        else:
            term = abs(x) > X_LIMIT_SWINGUP
            reward[i] = -100.0 if term else c
        terminated[i] = term


def _advance_compiled(env, actions, balance: bool):
    """What the numpy ``_advance`` returns, computed by :func:`cp_step` on ``env``'s arrays."""
    a = np.asarray(actions)
    n = env.num_envs
    if a.shape != (n, 1):
        raise ValueError(f"{env!r}: actions must have shape ({n}, 1)")
    obs = np.empty((n, 4), dtype=np.float32)
    reward, terminated = np.empty(n), np.empty(n, dtype=bool)
    cp_step(a, env._body, env._trig, env._sleep_time, obs, reward, terminated, balance)
    return obs, reward, terminated


class NumbaCartpoleSwingupBatchedEnv(cp.CartpoleSwingupBatchedEnv):
    """The numpy swing-up env with ``_advance`` replaced by :func:`cp_step`."""

    def _advance(self, actions):
        return _advance_compiled(self, actions, False)


class NumbaRllabCartpoleBatchedEnv(cp.RllabCartpoleBatchedEnv):
    """The numpy balancing env (rllab's cart-pole) with ``_advance`` replaced by :func:`cp_step`."""

    def _advance(self, actions):
        return _advance_compiled(self, actions, True)
