"""rllab's Box2D cart-poles as used by SVPG (Table 1), batched and as gymnasium envs:
``evo_svpg/CartpoleSwingup-v0`` = ``normalize(CartpoleSwingupEnv())`` and
``evo_svpg/RllabCartpole-v0`` = ``normalize(CartpoleEnv())``.

The physics is not an ODE (paper-envs.md §4) but a float64 numpy copy of what Box2D 2.3's island
solver does to rllab's world (§2, §5), for all envs at once. Per step (dt = 0.05 s):

1. **velocities**: gravity (0, −10) on both bodies and the force on the cart, then 8
   sequential-impulse sweeps over [pole joint, track–cart prismatic]. For this world they
   converge to float32 precision: each sweep's correction is the previous one times
   G = K⁻¹·diag(I_cart⁻¹(h/2)², M⁻¹), and ‖G‖ ≤ 1.08/11 < 0.1 (K ⪰ 11·I is the pole joint's
   inverse effective mass), so the 8th is ≤ 0.098⁷ < 2⁻²³ of the first. We compute their limit
   exactly: the kinetic-energy (M-orthogonal) projection of the velocities onto the joints, a
   2×2 solve in (ẋ, θ̇). The warm-start impulses (and the dtRatio 0 of a world's first step
   that scales them) only speed that convergence up, and the projection removes them: they
   are not state here. Measured against a literal float64 copy of the 8 warm-started sweeps:
   observations within 4e-8 under constant forces and 7e-7 under random ones on whole
   episodes, while either differs from pybox2d by 1e-6 to 2e-5. The projection removes
   kinetic energy every step, as Box2D does (§4).
2. **positions**: Box2D's clamps (≤ 2 m and π/2 rad per step), then up to 3 position sweeps
   [pole joint, prismatic] with per-env early exit once the pole joint's error is ≤ 0.005 m
   (the prismatic errors are then within the slop too). They correct positions only, so their
   leftovers (up to the slop) carry into the next step: this is where a faithful port differs
   most from an ODE. The prismatic joint has zero local anchors: it pins the cart's centre to
   the track's origin height y = −0.1 m (not h/2, which rllab's initial pose gives it) and
   its angle to 0.
3. **sleeping** (§1, on despite rllab's flag): per-body float32 timers accumulate while
   |v| ≤ 0.01 m/s and |ω| ≤ 2°/s; when both reach 0.5 s (and the positions were solved) all
   velocities are zeroed (a balancing controller at rest sleeps every 10 steps). Box2D then
   builds the next island from the cart, with the joint order reversed for that step; the
   order only moves unconverged residuals (measured < 1e-9 over 188 wake-ups): not modelled.

**The broken reset** (§2): rllab restores the initial poses and velocities, then sets only the
cart's x, ẋ and the pole's angle and angular velocity: the pole's origin stays at (0, h) with a
zero centre-of-mass velocity, the cart at height h/2. The first step repairs the joints, which
moves the state a lot; the timers persist across resets (the world does).

Observations [x, ẋ, θ, θ̇] (m, m/s, rad unwrapped counter-clockwise from upright, rad/s),
float32; actions a ∈ [−1, 1], the force F = 10·clip(a, ±1) N (``normalize``, §1).
Swing-up: reward cos θ, or −100 and terminated when |x| > 3. Balance: reset uniform within ±5 %
of (2.4, 4, 0.2, 4); reward 10 − (1 − cos θ) − 1e-5·F² (F in N) while alive, 0 and terminated
once |x| > 2.4 or |θ| > 0.2. TimeLimit(500) truncates.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces

from evo_svpg.envs.base import NumpyBatchedEnv, ObservationRoles, register_fast_path

__all__ = [
    "CARTPOLE_SWINGUP_ID",
    "RLLAB_CARTPOLE_ID",
    "CartpoleSwingupBatchedEnv",
    "CartpoleSwingupEnv",
    "CartpoleWorlds",
    "RllabCartpoleBatchedEnv",
    "RllabCartpoleEnv",
    "register_box2d_cartpoles",
]

CARTPOLE_SWINGUP_ID = "evo_svpg/CartpoleSwingup-v0"
RLLAB_CARTPOLE_ID = "evo_svpg/RllabCartpole-v0"

DT, GRAVITY = 0.05, 10.0
CART_H = 3.0 / math.sqrt(12.0)  # cart box 4/√12 × 3/√12 m, density 1
HH = CART_H / 2  # pole joint anchor above the cart's centre; the cart's reset height
TRACK_Y = -0.1  # the prismatic joint holds the cart's centre at the track's origin height
M_CART, I_CART = 1.0, (16.0 / 12 + 9.0 / 12) / 12  # kg, kg m² (about the centre)
M_POLE, I_POLE = 0.1, 0.1 * (0.1**2 + 1.0) / 12  # 1 × 0.1 m rod; its centre 0.5 m from the pivot
I_PIVOT = I_POLE + M_POLE * 0.25  # the pole's inertia about its pivot
FORCE_MAX = 10.0  # N, the control's ctrllimit
# Inverse masses/inertias as Box2D uses them (A = cart, B = pole in the pole joint).
MA, MB, IA, IB = 1 / M_CART, 1 / M_POLE, 1 / I_CART, 1 / I_POLE
# Position sweep: K = [[A1 + β c², β s c], [β s c, A2 + β s²]], det K = DET0 + DET1 s²;
# the sweep works with K / 4β.
A1, A2, BETA = MA + MB + IA * HH * HH, MA + MB, 0.25 * IB
DET0, DET1 = A1 * A2 + BETA * A2, BETA * (A1 - A2)
KD0, KD1 = DET0 / (4 * BETA), DET1 / BETA
A_DIAG = np.array([[A2], [A1]]) / (4 * BETA)
HALF_R = np.array([[0.5], [-0.5]])  # (sin θ, cos θ) → r = R(θ)(0, −½), pivot − centre of mass
LINEAR_SLOP = 0.005  # b2Settings.h (the angular slop, 2°, never binds here: see _sweep)
MAX_SPEED, MAX_SPIN = 2.0 / DT, 0.5 * math.pi / DT  # b2_maxTranslation, b2_maxRotation per step
SLEEP_LIN2, SLEEP_ANG2 = 0.01**2, (2 / 180 * math.pi) ** 2  # sleep tolerances, squared
SLEEP_DT, TIME_TO_SLEEP = np.float32(DT), np.float32(0.5)
POS_ITERS = 3
# Rows of CartpoleWorlds.body: positions, then their velocities in the same order.
X, YA, PX, PY, TH, U, VC, VX, VY, W = range(10)
OBS_ROWS = [X, U, TH, W]
YA_TRACK = TRACK_Y + HH  # anchor height of a cart on its track


class CartpoleWorlds:
    """``n`` independent copies of rllab's cart-pole world.

    ``body [10, n]`` float64, per env: positions (cart x; height of the pole joint's anchor on
    the cart, i.e. the cart's centre + h/2; the pole's centre of mass PX, PY; its angle θ) in m
    and rad, then their velocities in the same order (ẋ; the cart's vertical velocity, always
    0; VX, VY; θ̇) in m/s and rad/s. The anchor height is h after a reset and h/2 − 0.1 after
    a step; the cart's angle and spin are then 0 (the prismatic joint solves last).
    ``trig [2, n]`` caches (sin θ, cos θ); ``sleep_time [2, n]`` float32 are Box2D's sleep
    timers of (pole, cart), in s.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.body = np.zeros((10, n))
        self.body[YA] = YA_TRACK
        self.trig = np.zeros((2, n))
        self.trig[1] = 1.0
        self.sleep_time = np.zeros((2, n), dtype=np.float32)

    def place(self, idx: np.ndarray, init: np.ndarray) -> None:
        """rllab's broken reset of envs ``idx`` to ``init [k, 4]`` = (x, ẋ, θ, θ̇)."""
        new = np.zeros((10, idx.size))
        new[OBS_ROWS] = init.T
        trig = np.empty((2, idx.size))
        np.sin(new[TH], out=trig[0])
        np.cos(new[TH], out=trig[1])
        np.multiply(trig, -HALF_R, out=new[PX : PY + 1])  # origin (0, h) + R(θ)(0, ½)
        new[PY] += CART_H
        new[YA] = CART_H
        self.body[:, idx] = new
        self.trig[:, idx] = trig

    def observe(self) -> np.ndarray:
        """``[n, 4]`` float32 observations (x, ẋ, θ, θ̇)."""
        obs = np.empty((self.n, 4), dtype=np.float32)
        for i, row in enumerate(OBS_ROWS):
            obs[:, i] = self.body[row]
        return obs

    def step(self, impulse: np.ndarray) -> None:
        """Advance every world by one ``world.Step(0.05, 8, 3)``; ``impulse [n]`` = F·dt (N s)."""
        b, trig = self.body, self.trig
        # 1. Velocity sweeps, converged: the kinetic-energy projection onto the joints of the
        #    integrated velocities, in (ẋ, θ̇); the pole's centre moves at (ẋ, 0) − θ̇(c, s)/2.
        b[VY] -= DT * GRAVITY
        p1 = b[VX] * M_POLE  # momentum along ẋ (M_CART = 1 kg) ...
        p1 += b[U]
        p1 += impulse
        p2 = trig[::-1] * b[VX : VY + 1]  # ... and along θ̇: −m/2 (c, s)·v + I θ̇
        p2 = np.add(p2[0], p2[1], out=p2[0])
        p2 *= -0.5 * M_POLE
        p2 += I_POLE * b[W]
        mc = trig[1] * (0.5 * M_POLE)  # mass matrix [[M + m, −mc], [−mc, I_pivot]]
        det = mc * mc
        np.subtract((M_CART + M_POLE) * I_PIVOT, det, out=det)
        w = np.multiply(p2, M_CART + M_POLE, out=b[W])
        w += mc * p1
        w /= det
        u = np.multiply(mc, w, out=b[U])
        u += p1
        u /= M_CART + M_POLE
        np.multiply(trig[::-1], w * -0.5, out=b[VX : VY + 1])
        b[VX] += u
        # 2. Integrate positions, after Box2D's clamps (≤ 2 m and π/2 rad per step).
        vel = b[U:]
        sq = vel * vel  # positions move next, velocities stay: the sleep test reuses these
        if sq.max() > MAX_SPEED**2 / 2:  # rare: check each clamp exactly
            np.clip(b[U], -MAX_SPEED, MAX_SPEED, out=b[U])
            np.clip(b[W], -MAX_SPIN, MAX_SPIN, out=b[W])
            speed = np.hypot(b[VX], b[VY])
            fast = speed > MAX_SPEED
            b[VX : VY + 1, fast] *= MAX_SPEED / speed[fast]
            np.multiply(vel, vel, out=sq)
        b[:U] += DT * vel
        # 3. Position sweeps with per-env early exit; the first one covers every env.
        solved = b[YA] == YA_TRACK  # a reset cart is off its track: its first sweep fails
        solved &= self._sweep(b)
        b[YA] = YA_TRACK
        for _ in range(POS_ITERS - 1):  # the next sweeps of the envs still unsolved
            idx = np.flatnonzero(~solved)
            if idx.size == 0:
                break
            sub = b[:U, idx]
            solved[idx] = self._sweep(sub)
            b[:U, idx] = sub
        np.sin(b[TH], out=trig[0])
        np.cos(b[TH], out=trig[1])
        self._sleep(solved, sq)

    @staticmethod
    def _sweep(b: np.ndarray) -> np.ndarray:
        """One position sweep [pole joint, prismatic] on the columns of ``b`` (in place, but
        for the cart's height, which the caller puts back on the track). True where solved.

        The pole joint moves the bodies by the impulse −K⁻¹C, with C = (PX, PY) + r − anchor
        and r = R(θ)(0, −½); the prismatic joint then puts the cart back on its track. Its
        errors (|Δy| and the cart's angle IA·(h/2)·|impulse_x|) are within the slop whenever
        |C| is, as ‖K⁻¹‖ ≤ 1/11, except just after a reset: the caller fails those envs.
        """
        r = np.empty((2, b.shape[1]))
        np.sin(b[TH], out=r[0])
        np.cos(b[TH], out=r[1])
        r *= HALF_R
        con = b[PX : PY + 1] - b[X : YA + 1]
        con += r
        sq = con * con
        ok = np.add(sq[0], sq[1], out=sq[0]) <= LINEAR_SLOP**2
        t = np.multiply(r, con, out=sq)  # (s Cx − c Cy) / 2
        t = np.add(t[0], t[1], out=t[0])
        det = r[0] * r[0]  # −det K / 4β, with s² = 4 r0²
        det *= -KD1
        det -= KD0
        imp = con * A_DIAG  # (A2 Cx + β s (s Cx − c Cy), A1 Cy − β c (…)) / −det K
        imp += r * t
        imp /= det
        b[X] -= imp[0]  # MA = 1
        b[PX : PY + 1] += MB * imp
        turn = np.multiply(r[::-1], imp, out=r)  # IB·(r × impulse)
        turn = np.subtract(turn[1], turn[0], out=turn[1])
        turn *= IB
        b[TH] += turn
        return ok

    def _sleep(self, solved: np.ndarray, sq: np.ndarray) -> None:
        """Box2D's sleep test; ``solved`` marks the envs whose positions were solved, ``sq``
        holds the squared velocities (rows as in ``body[U:]``)."""
        b, timers = self.body, self.sleep_time
        slow_cart = sq[0] <= SLEEP_LIN2
        spin_ok = sq[4] <= SLEEP_ANG2
        if not (np.count_nonzero(slow_cart) or np.count_nonzero(spin_ok)):
            timers.fill(0.0)  # common case: every cart moves and every pole turns
            return
        slow_pole = np.add(sq[2], sq[3], out=sq[2]) <= SLEEP_LIN2
        slow_pole &= spin_ok
        timers += SLEEP_DT
        timers[0] *= slow_pole
        timers[1] *= slow_cart
        asleep = np.minimum(timers[0], timers[1]) >= TIME_TO_SLEEP
        asleep &= solved
        if np.count_nonzero(asleep):
            b[U:, asleep] = 0.0
            timers[:, asleep] = 0.0


class _RllabCartpole(NumpyBatchedEnv):
    """Shared bookkeeping of the two batched tasks (rllab's reset, reward and done)."""

    max_episode_steps = 500
    _STATE_FIELDS = ("_body", "_trig", "_sleep_time")
    _RESET_LOW: np.ndarray
    _RESET_HIGH: np.ndarray
    _X_LIMIT: float

    def __init__(self, num_envs: int, seed: int | None = None) -> None:
        super().__init__(num_envs, seed)
        # x within twice its limit (a step moves ≤ 2 m), Box2D's speed clamps bound ẋ and θ̇.
        high = np.array([2 * self._X_LIMIT, MAX_SPEED, np.inf, MAX_SPIN], dtype=np.float32)
        self.single_observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.single_action_space = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
        self.world = CartpoleWorlds(self.num_envs)
        self._body, self._trig = self.world.body, self.world.trig
        self._sleep_time = self.world.sleep_time

    def _reset_rows(self, idx: np.ndarray) -> np.ndarray:
        # rllab: np.random.uniform(low, high) over (x, ẋ, θ, θ̇), one row per env; numpy's
        # uniform is low + (high − low)·random() (bit for bit), which is 3x faster written out.
        init = self.rng.random((idx.size, 4))
        init *= self._RESET_HIGH - self._RESET_LOW
        init += self._RESET_LOW
        self.world.place(idx, init)
        return init.astype(np.float32)

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = np.asarray(actions)
        if a.shape != (self.num_envs, 1):
            raise ValueError(f"{self!r}: actions must have shape ({self.num_envs}, 1)")
        # normalize's lb + (a + 1)·½·(ub − lb) clipped to (lb, ub) = (−10, 10) N: 10·clip(a, ±1)
        # (equal up to the last bit; Box2D rounds the force to float32 anyway).
        force = np.minimum(a[:, 0], 1.0)
        np.maximum(force, -1.0, out=force)
        force = np.multiply(force, FORCE_MAX, dtype=np.float64)
        self.world.step(force * DT)
        reward, terminated = self._reward(force)
        return self.world.observe(), reward, terminated


class CartpoleSwingupBatchedEnv(_RllabCartpole):
    """``num_envs`` copies of rllab's ``normalize(CartpoleSwingupEnv())``."""

    env_id = CARTPOLE_SWINGUP_ID
    _RESET_LOW = np.array([-1.0, -2.0, np.pi - 1, -3.0])
    _RESET_HIGH = np.array([1.0, 2.0, np.pi + 1, 3.0])
    _X_LIMIT = 3.0

    def _reward(self, force: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # −100 when done, else cos θ (rllab's −1 branch needs |x| > 3 without done: never).
        terminated = np.abs(self._body[X]) > self._X_LIMIT
        return np.where(terminated, -100.0, self._trig[1]), terminated


class RllabCartpoleBatchedEnv(_RllabCartpole):
    """``num_envs`` copies of rllab's balancing ``normalize(CartpoleEnv())`` (the paper's
    "CartPole": 10 per step, at most 5000)."""

    env_id = RLLAB_CARTPOLE_ID
    _RESET_LOW = -0.05 * np.array([2.4, 4.0, 0.2, 4.0])
    _RESET_HIGH = 0.05 * np.array([2.4, 4.0, 0.2, 4.0])
    _X_LIMIT, _THETA_LIMIT = 2.4, 0.2
    _LIMITS = np.array([[_X_LIMIT], [_THETA_LIMIT]])

    def _reward(self, force: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.abs(self._body[X : TH + 1 : TH - X]) > self._LIMITS  # |x|, |θ| beyond limits
        terminated = np.logical_or(out[0], out[1], out=out[0])
        # notdone·10 − notdone·(1 − cos θ) − notdone·1e-5·F²: F in N (rllab's own action).
        cost = np.multiply(force, force, out=force)
        cost *= 1e-5
        reward = np.subtract(self._trig[1], cost, out=cost)
        reward += 9.0
        reward[terminated] = 0.0
        return reward, terminated


class _Box2DCartpoleEnv(gymnasium.Env):
    """One env of the batched solver as a ``gymnasium.Env``: resets drawn from
    ``self.np_random`` exactly as the batched env draws them from its generator."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    _BATCHED: type[_RllabCartpole]

    def __init__(self) -> None:
        self._env = self._BATCHED(1)
        self.observation_space = self._env.single_observation_space
        self.action_space = self._env.single_action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._env.rng = self.np_random
        return self._env._reset_rows(self._env._all_rows)[0], {}

    def step(self, action):
        obs, reward, terminated = self._env._advance(np.asarray(action).reshape(1, 1))
        return obs[0], float(reward[0]), bool(terminated[0]), False, {}


class CartpoleSwingupEnv(_Box2DCartpoleEnv):
    """gymnasium twin of :class:`CartpoleSwingupBatchedEnv`."""

    _BATCHED = CartpoleSwingupBatchedEnv


class RllabCartpoleEnv(_Box2DCartpoleEnv):
    """gymnasium twin of :class:`RllabCartpoleBatchedEnv`."""

    _BATCHED = RllabCartpoleBatchedEnv


def register_box2d_cartpoles() -> None:
    """Register both ids with gymnasium (skipping ids already registered, so reloads neither
    warn nor fail) and their batched classes as fast paths, x and ẋ as position and velocity."""
    for env_id, name in ((CARTPOLE_SWINGUP_ID, "CartpoleSwingupEnv"),
                         (RLLAB_CARTPOLE_ID, "RllabCartpoleEnv")):  # fmt: skip
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=f"{__name__}:{name}", max_episode_steps=500)
    for cls in (CartpoleSwingupBatchedEnv, RllabCartpoleBatchedEnv):
        register_fast_path(cls, ObservationRoles(position=0, velocity=1))


register_box2d_cartpoles()
