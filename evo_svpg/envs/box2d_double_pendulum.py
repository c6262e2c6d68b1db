"""rllab's Box2D double pendulum (``normalize(DoublePendulumEnv())``, link_len 1), batched.

Box2D 2.3's island solver for this one world, step for step, vectorised over envs in float64
numpy (``shared/reference/paper-envs.md`` §3–§5; §4: an ODE is another environment). An
MDP step is ``frame_skip = 2`` world steps of ``h = 0.01`` s, each: (1) gravity, and the elbow
motor (speed ±1e5, max torque |τ|, τ = 50a), which always saturates, so its impulse is exactly
``h τ``; (2) warm start and 20 sequential-impulse sweeps over the joints in island order [elbow,
shoulder]; (3) ``c += h v``, ``θ += h ω`` (Box2D's 2 m and π/2 per-step clamps); (4) up to 20
position sweeps, each env stopping after the first sweep whose joint errors, each measured
before its joint's correction, are ≤ 0.005 m; (5) sleeping (§1): 0.5 s on a float32 timer
(51 world steps) with all |v| ≤ 0.01 m/s and |ω| ≤ 2°/s zeroes the velocities.

(2) in closed form, exact algebra: in link 1's frame (``e_i = (cos θi, sin θi)``) the elbow's
effective mass ``K2`` depends only on ``δ = θ2 − θ1``, the shoulder's ``K1 = diag(2 + κ, 2)`` and
the coupling ``C = J2 M⁻¹ J1ᵀ = diag(κ − 2, −2)`` are constant (κ = r²/I, r = ½ m). Sweep k sets
the elbow's accumulated impulse to ``λ2 = −K2⁻¹(c2 + C λ1)``, then the shoulder's to
``λ1 = −K1⁻¹(c1 + C λ2)`` (``c``: constraint velocities before any impulse): 19 times
``λ1 ← A λ1 + b`` from the warm start, then a last sweep. ``A = K1⁻¹C K2⁻¹C`` has real
eigenvalues μ± in (0, ½], ``μ+ − μ− ≥ 0.0045`` for all δ, so ``h(A) = α_h A + β_h I`` (divided
differences of h at μ±) gives ``A¹⁹`` and ``Σ_{k<19} A^k``. The elbow's and the motor's warm
starts drop out (the first elbow solve overwrites them): the shoulder's impulse is the only one
kept. All arithmetic is on contiguous ``[n]`` rows with 0-d constants: at 320 envs a numpy call
costs ~0.3 µs and broadcast or strided operands 2–5× that, so the cost is the call count.

The reset is rllab's, broken on purpose (§3): θ ~ N(0, 0.1²), ω ~ N(0, 0.01²) are set with each
link left at its built origin and at rest, pulling the elbow apart; the first step repairs it.
An unseeded reset keeps the world (shoulder impulse, sleep timer) as rllab does; a seeded one
starts fresh worlds. Observation ``[sin θ1, cos θ1, ω1, sin θ2, cos θ2, ω2]`` (θ = 0 hanging),
reward ``−‖tip′ − (0, 2)‖`` with rllab's x-mirrored tip, never terminated, 500 steps.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces

from evo_svpg.envs.base import NumpyBatchedEnv, register_fast_path

__all__ = ["DOUBLE_PENDULUM_ID", "DoublePendulumBatchedEnv", "DoublePendulumEnv",
           "register_double_pendulum"]  # fmt: skip

DOUBLE_PENDULUM_ID = "evo_svpg/DoublePendulum-v0"
H, SUBSTEPS, POS_ITERS = 0.01, 2, 20  # the 20 velocity sweeps are folded into _velocities
TORQUE = 50.0  # rllab's ctrllimit; normalize maps a ∈ [−1, 1] to −50 + (a + 1)·50 N·m
_K = 12.0 / (0.5 * (0.1**2 + 1.0)) / 4.0  # κ = r²/I_cm: links of 0.5 kg (1/m = 2), 1 × 0.1 m
_RESET_STD = np.array([0.1, 0.1, 0.01, 0.01])  # θ1, θ2, ω1, ω2
_MAX_V = 141.0  # all |v|, |ω| below it: |h v| < 2 m and |h ω| < π/2, Box2D's clamps are idle
_H32, _TIME_TO_SLEEP = np.float32(H), np.float32(0.5)  # Box2D's sleep timer is float32
_ALPHA = (_K - 2) / (_K + 2)  # K1⁻¹C = diag(α, −1)
mul, add, sub, div = np.multiply, np.add, np.subtract, np.divide
_cos, _sin = np.cos, np.sin
(_HALF, _TWO, _ONE, _KAPPA, _K1I, _KM2, _NHALF, _2K, _N2K, _DET0, _KK, _RHO, _G2, _KA, _SLOP2,
 _HDV, _A11, _A12, _A21, _NK, _TRK, _DETA, _LIN2, _ANG2) = map(np.array, (
    0.5, 2.0, 1.0, _K, 1 / (2 + _K), _K - 2, -0.5, 2 * _K, -2 * _K, 16 + 8 * _K, _K * _K,
    (4 + 2 * _K) / _K, 1 - 2 / (2 + _K), 2 * _K / (2 + _K), 0.005**2, -10.0 * H,
    _ALPHA * (_K - 2), -2 * _ALPHA, 2 - _K, -_K, 8 + 2 * _K, 4 * 2 * _ALPHA * (_K - 2),
    0.01**2, (2 / 180 * np.pi) ** 2))  # fmt: skip


def _lin(a, x, b, y, out, t, op=add):
    """``out = op(a x, b y)``; ``out`` must not be ``b`` or ``y``."""
    mul(a, x, out)
    mul(b, y, t)
    op(out, t, out)


def _rot(c, s, x, y, ox, oy, t):
    """``(ox, oy) = (c x + s y, c y − s x)``: world → link 1's frame for (c, s) = e1 (and back
    for (c, −s))."""
    _lin(c, x, s, y, ox, t)
    _lin(c, y, s, x, oy, t, sub)


class _Scratch:
    """Work rows of width ``k`` for :func:`_sweep`."""

    def __init__(self, k: int) -> None:
        self.c, self.h, self.p = np.empty((2, k)), np.empty((2, k)), np.empty((2, k))
        self.rows, self.ok = [np.empty(k) for _ in range(6)], np.empty(k, bool)


def _sweep(p: np.ndarray, tr: np.ndarray, s: _Scratch) -> np.ndarray:
    """One position sweep (elbow, then shoulder), in place, on ``k`` envs: ``p [c1x, c2x, c1y,
    c2y, θ1, θ2]``, ``tr [cos/sin, link, k]`` the trig of θ (stale on exit). Returns the mask of
    envs whose joint errors were all within slop."""
    c1x, _, c1y, _, a1, a2 = p
    (co1, co2), (s1, s2) = tr
    cc, hh, pp = s.c, s.h, s.p
    (cx, cy), (px, py) = cc, pp
    t, u, e2, d1, d2, r = s.rows
    # Elbow: C = (c2 − c1) + ½(−(sin θ1 + sin θ2), cos θ1 + cos θ2).
    add(tr[:, 0], tr[:, 1], hh)
    mul(hh, _HALF, hh)
    sub(p[1:4:2], p[0:4:2], cc)
    sub(cx, hh[1], cx)
    add(cy, hh[0], cy)
    _lin(cx, cx, cy, cy, e2, t)
    # K2 = 4I + κ Σ e eᵀ: adj K2 = (4 + 2κ)I − κ Σ e eᵀ, det K2 = 16 + 8κ + κ² sin²δ, so the
    # impulse 2p = −2 K2⁻¹C = (2κ/det)(Σ_b e_b (e_b·C) − ρ C), ρ = (4 + 2κ)/κ.
    _lin(co1, cx, s1, cy, d1, t)
    _lin(co2, cx, s2, cy, d2, t)
    _lin(co1, s2, s1, co2, r, t, sub)
    mul(r, r, r)
    mul(r, _KK, r)
    add(r, _DET0, r)
    div(_2K, r, r)
    _lin(co1, d1, co2, d2, px, t)
    _lin(s1, d1, s2, d2, py, t)
    mul(cc, _RHO, hh)
    sub(pp, hh, pp)
    mul(px, r, px)
    mul(py, r, py)
    sub(p[0:4:2], pp, p[0:4:2])  # c1 −= 2p, c2 += 2p (inverse mass 2)
    add(p[1:4:2], pp, p[1:4:2])
    for cb, sb, ab in ((co1, s1, a1), (co2, s2, a2)):  # θ_b −= (r_b × p)/I = κ e_b·2p
        _lin(cb, px, sb, py, t, u)
        mul(t, _KAPPA, t)
        sub(ab, t, ab)
    # Shoulder, anchored at the origin: C = c1 + ½(−sin θ1, cos θ1), K1 = 2I + κ e1e1ᵀ, so
    # c1 + 2p = ½(sin θ1, −cos θ1) − 2γ e1 (e1·C), γ = 1/(2+κ) − ½, θ1 += 2κ/(2+κ) e1·C.
    _cos(a1, co1)
    _sin(a1, s1)
    mul(tr[:, 0], _HALF, hh)
    sub(c1x, hh[1], cx)
    add(c1y, hh[0], cy)
    _lin(cx, cx, cy, cy, d2, t)
    np.maximum(e2, d2, out=e2)
    _lin(co1, cx, s1, cy, d1, t)
    mul(d1, _G2, d2)
    mul(co1, d2, t)
    add(hh[1], t, c1x)
    mul(s1, d2, t)
    sub(t, hh[0], c1y)
    mul(d1, _KA, t)
    add(a1, t, a1)
    return np.less_equal(e2, _SLOP2, s.ok)


class _World:
    """``n`` double-pendulum worlds as float64 rows and Box2D's step. Positions and velocities
    are ``[6, n]`` blocks in matching order, so that integration is one call."""

    def __init__(self, n: int) -> None:
        self.p = np.zeros((6, n))  # centres of mass c1x, c2x, c1y, c2y; angles θ1, θ2
        self.v = np.zeros((6, n))  # v1x, v2x, v1y, v2y, ω1, ω2
        self.j = np.zeros((2, n))  # the shoulder's accumulated impulse (world frame)
        self.sleep = np.zeros(n, np.float32)  # time since a body of the env last moved (s)
        self.fresh = np.ones(n, bool)  # never stepped: the first warm start has dtRatio 0
        self.tr = np.zeros((2, 2, n))  # cos, sin of θ1, θ2 (valid between steps)
        self.tr[0] = 1.0
        self.co, self.si = self.tr
        self.scratch, self.slow = _Scratch(n), np.empty(n, bool)
        self.motor, self.hw, self.dv, self.dw, self.mu, self.m2, self.m19, self.fs = (
            np.zeros((2, n)) for _ in range(8))  # fmt: skip
        self.t6, self.vb = np.empty((6, n)), [np.empty(n) for _ in range(27)]
        self.lin_ok, self.ang_ok = np.empty((2, n), bool), np.empty((2, n), bool)

    def new_worlds(self) -> None:
        """Fresh worlds, as just built: no impulse, sleep timer 0, never stepped."""
        self.j[:], self.sleep[:], self.fresh[:] = 0.0, 0.0, True

    def refresh_trig(self) -> None:
        _cos(self.p[4:6], self.co)
        _sin(self.p[4:6], self.si)

    def step(self, torque: np.ndarray) -> None:
        """``SUBSTEPS`` Box2D steps of every world under elbow torques ``[n]`` (N·m)."""
        if self.fresh.any():  # first warm start of a world: impulse × dtRatio = 0
            self.j[:, self.fresh] = 0.0
            self.fresh[:] = False
        mul(torque, H * 4.0 * _K, self.motor[1])  # Δω = h τ / I on link 2, −h τ / I on link 1
        np.negative(self.motor[1], self.motor[0])
        for _ in range(SUBSTEPS):
            self._velocities()
            self._positions()

    def _velocities(self) -> None:
        """Gravity, motor, warm start and the 20 velocity sweeps (module docstring)."""
        v, j, hw, dv, dw, mu, m2, m19, fs = (self.v, self.j, self.hw, self.dv, self.dw,
                                              self.mu, self.m2, self.m19, self.fs)  # fmt: skip
        (co1, co2), (s1, s2) = self.co, self.si
        (t, u, cd, sd, c1x, c1y, c2x, c2y, x0, x1, i11, i12, i22, a11, a22, y0, y1, tr, dt,
         sq, ag, bg, af, bf, z0, z1, ns1) = self.vb  # fmt: skip
        add(v[2:4], _HDV, v[2:4])  # gravity
        add(v[4:6], self.motor, v[4:6])
        mul(v[4:6], _HALF, hw)
        # Constraint velocities in link 1's frame: shoulder c1 = R v1 − (½ω1, 0), elbow
        # c2 = R(v2 − v1) − ½ω2 (cos δ, sin δ) − (½ω1, 0); warm start x = R j.
        _rot(co1, s1, v[0], v[2], c1x, c1y, t)
        sub(c1x, hw[0], c1x)
        _rot(co1, s1, co2, s2, cd, sd, t)
        sub(v[1:4:2], v[0:4:2], dv)
        _rot(co1, s1, dv[0], dv[1], c2x, c2y, t)
        _lin(hw[1], cd, _ONE, hw[0], u, t)
        sub(c2x, u, c2x)
        mul(hw[1], sd, t)
        sub(c2y, t, c2y)
        _rot(co1, s1, j[0], j[1], x0, x1, t)
        # K2⁻¹ = [[4 + κs², −κcs], [−κcs, 4 + κ + κc²]] u, u = 1/(16 + 8κ + κ²s²), (c, s) of δ.
        mul(sd, sd, t)
        mul(t, _KAPPA, t)
        _lin(t, _KAPPA, _ONE, _DET0, u, y0)
        div(_ONE, u, u)
        add(t, 4.0, i11)
        mul(i11, u, i11)
        _lin(u, _TRK, _ONE, i11, i22, t, sub)
        _lin(cd, sd, _NK, u, i12, t, mul)
        # λ1 ← A λ1 + b: A = K1⁻¹C K2⁻¹C = [[α(κ−2) i11, −2α i12], [(2−κ) i12, 2 i22]],
        # b = K1⁻¹C K2⁻¹ c2 − K1⁻¹ c1.
        mul(i11, _A11, a11)
        mul(i22, _TWO, a22)
        _lin(i11, c2x, i12, c2y, y0, t)
        _lin(i12, c2x, i22, c2y, y1, t)
        _lin(y0, _ALPHA, c1x, _K1I, y0, t, sub)
        mul(c1y, _NHALF, t)
        sub(t, y1, y1)
        # Eigenvalues: tr A = a11 + a22, det A = 2α(κ−2) u; μ± = (tr ± √(tr² − 4 det))/2.
        add(a11, a22, tr)
        _lin(tr, tr, u, _DETA, dt, t, sub)
        np.sqrt(dt, sq)
        add(tr, sq, mu[0])
        sub(tr, sq, mu[1])
        mul(mu, _HALF, mu)
        mul(mu, mu, m2)
        mul(m2, m2, m19)
        mul(m19, m19, m19)
        mul(m19, m19, m19)  # μ¹⁶
        mul(m19, m2, m19)
        mul(m19, mu, m19)  # g(μ) = μ¹⁹
        sub(_ONE, m19, fs)
        sub(_ONE, mu, m2)
        div(fs, m2, fs)  # f(μ) = Σ_{k<19} μ^k
        div(_ONE, sq, sq)
        for hv, al, be in ((m19, ag, bg), (fs, af, bf)):  # h(A) = α_h A + β_h I
            sub(hv[0], hv[1], al)
            mul(al, sq, al)
            _lin(mu[0], hv[1], mu[1], hv[0], be, t, sub)
            mul(be, sq, be)
        # λ1 after 19 sweeps: A(α_f b + α_g x) + β_f b + β_g x.
        for bb, xx, zz, ww in ((y0, x0, z0, tr), (y1, x1, z1, dt)):
            _lin(af, bb, ag, xx, zz, t)
            _lin(bf, bb, bg, xx, ww, t)
        mul(z1, i12, t)
        _lin(a11, z0, _A12, t, x0, u)
        mul(z0, i12, t)
        _lin(_A21, t, a22, z1, x1, u)
        add(x0, tr, x0)
        add(x1, dt, x1)
        # Sweep 20: z = −λ2 = K2⁻¹(c2 + C λ1), then λ1 = −K1⁻¹(c1 − C z) into (y0, y1).
        _lin(x0, _KM2, _ONE, c2x, x0, t)
        mul(x1, _TWO, x1)
        sub(c2y, x1, x1)
        _lin(i11, x0, i12, x1, z0, t)
        _lin(i12, x0, i22, x1, z1, t)
        _lin(z0, _KM2, _ONE, c1x, y0, t, sub)
        mul(y0, _K1I, y0)
        _lin(c1y, _NHALF, _ONE, z1, y1, t, sub)
        # Δω1 = −2κ (λ1 + λ2)ₓ, Δω2 = −2κ e2·λ2 (frame); Δv1 = 2R⁻¹(λ1 − λ2), Δv2 = 2R⁻¹λ2.
        sub(y0, z0, dw[0])
        mul(dw[0], _N2K, dw[0])
        _lin(cd, z0, sd, z1, dw[1], t)
        mul(dw[1], _2K, dw[1])
        add(v[4:6], dw, v[4:6])
        np.negative(s1, ns1)
        _rot(co1, ns1, y0, y1, j[0], j[1], t)  # the new accumulated impulse R⁻¹λ1
        _rot(co1, ns1, z0, z1, dv[0], dv[1], t)
        mul(dv, _TWO, dv)
        sub(v[1:4:2], dv, v[1:4:2])
        add(dv, j, dv)
        add(dv, j, dv)
        add(v[0:4:2], dv, v[0:4:2])

    def _positions(self) -> None:
        """Integration, then position sweeps until each env's joints are within slop."""
        v, p = self.v, self.p
        if v.max() > _MAX_V or v.min() < -_MAX_V:
            self._clamp()
        mul(v, H, self.t6)
        add(p, self.t6, p)
        self.refresh_trig()
        ok, unsolved = _sweep(p, self.tr, self.scratch), None
        if not ok.all():  # the others sweep on, on a subset that shrinks as envs finish
            idx = np.flatnonzero(~ok)
            ps = p[:, idx]
            for it in range(POS_ITERS - 1):
                trs = np.empty((2, 2, idx.size))
                _cos(ps[4:6], trs[0])
                _sin(ps[4:6], trs[1])
                ok = _sweep(ps, trs, _Scratch(idx.size))
                if ok.all():
                    break
                if it == POS_ITERS - 2:
                    unsolved = idx[~ok]  # 20 sweeps without convergence: cannot fall asleep
                    break
                keep = np.flatnonzero(~ok)
                if keep.size < idx.size:
                    p[:, idx] = ps  # the finished envs' final positions (the rest: interim)
                    idx, ps = idx[keep], ps[:, keep]
            p[:, idx] = ps
        self.refresh_trig()
        self._sleep(unsolved)

    def _clamp(self) -> None:
        """Box2D's limits |h v| ≤ 2 m, |h ω| ≤ π/2 per step (rescaling the velocity)."""
        v, step = self.v, np.maximum(np.hypot(self.v[0:2], self.v[2:4]) * H, 1e-300)
        v[0:4] *= np.tile(np.where(step > 2.0, 2.0 / step, 1.0), (2, 1))
        turn = np.maximum(np.abs(v[4:6]) * H, 1e-300)
        v[4:6] *= np.where(turn > 0.5 * np.pi, 0.5 * np.pi / turn, 1.0)

    def _sleep(self, unsolved: np.ndarray | None) -> None:
        """Box2D's sleep rule. The min over bodies of their slow times, which is what it tests,
        is the time since any body of the env was fast: one timer per env."""
        t6, sl, slow, lin_ok, ang_ok = self.t6, self.sleep, self.slow, self.lin_ok, self.ang_ok
        mul(self.v, self.v, t6)
        np.less_equal(t6[4:6], _ANG2, ang_ok)
        np.logical_and(ang_ok[0], ang_ok[1], slow)
        if not slow.any():  # every env turning: all timers restart (the common case)
            sl.fill(0.0)
            return
        add(t6[0:2], t6[2:4], t6[0:2])  # |v1|², |v2|²
        np.less_equal(t6[0:2], _LIN2, lin_ok)
        np.logical_and(lin_ok[0], slow, slow)
        np.logical_and(lin_ok[1], slow, slow)
        add(sl, _H32, sl)
        mul(sl, slow, sl)
        if sl.max() >= _TIME_TO_SLEEP:
            asleep = sl >= _TIME_TO_SLEEP
            if unsolved is not None:
                asleep[unsolved] = False  # Box2D also needs the position solve to converge
            self.v[:, asleep] = 0.0
            sl[asleep] = 0.0


def _torque(actions: np.ndarray) -> np.ndarray:
    """rllab's ``normalize``: ``lb + (a + 1)·½·(ub − lb)`` clipped to [lb, ub] (float64)."""
    a = np.asarray(actions, dtype=np.float64)
    return np.clip(-TORQUE + (a + 1.0) * 0.5 * (2.0 * TORQUE), -TORQUE, TORQUE)


class DoublePendulumBatchedEnv(NumpyBatchedEnv):
    """``num_envs`` double pendulums; actions ``[N, 1]`` in [−1, 1] (elbow torque 50a N·m)."""

    env_id = DOUBLE_PENDULUM_ID
    max_episode_steps = 500
    # The links' centres and angles [c1x, c2x, c1y, c2y, θ1, θ2] and velocities [v1x, v2x, v1y,
    # v2y, ω1, ω2], the shoulder's accumulated impulse, the sleep timer, the never-stepped flag.
    _STATE_FIELDS = ("_p", "_v", "_j", "_sleep", "_fresh")

    def __init__(self, num_envs: int, seed: int | None = None) -> None:
        super().__init__(num_envs, seed)
        high = np.array([1.0, 1.0, np.inf, 1.0, 1.0, np.inf], dtype=np.float32)
        self.single_observation_space = spaces.Box(low=-high, high=high, dtype=np.float32)
        self.single_action_space = spaces.Box(low=-1.0, high=1.0, shape=(1,), dtype=np.float32)
        self._world = w = _World(self.num_envs)
        self._p, self._v, self._j, self._sleep, self._fresh = w.p, w.v, w.j, w.sleep, w.fresh
        self._obs_t = np.empty((6, self.num_envs), dtype=np.float32)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Unseeded: rllab's reset in the running worlds. Seeded: in fresh worlds, so that a
        seeded episode repeats exactly (gymnasium's contract)."""
        if seed is not None:
            self._world.new_worlds()
        return super().reset(seed)

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._world.refresh_trig()

    def _obs(self) -> np.ndarray:
        o, w = self._obs_t, self._world
        o[0::3], o[1::3], o[2::3] = w.si, w.co, self._v[4:6]
        return o.T.copy()

    def _reset_rows(self, idx: np.ndarray) -> np.ndarray:
        # rllab: θ1, θ2, ω1, ω2 = randn(4) * std. Each link goes back to its built origin ((0, 0)
        # and (0, −1)) at rest and turns about it: centre = origin + R(θ)(0, −½).
        init = self.rng.standard_normal((idx.size, 4)) * _RESET_STD
        th = init[:, :2].T
        sin, cos = _sin(th), _cos(th)
        p, v, w = self._p, self._v, self._world
        p[4:6, idx], p[0:2, idx], p[2:4, idx] = th, 0.5 * sin, -0.5 * cos - [[0.0], [1.0]]
        v[:4, idx], v[4:6, idx] = 0.0, init[:, 2:].T
        w.co[:, idx], w.si[:, idx] = cos, sin
        obs = np.stack([sin[0], cos[0], v[4, idx], sin[1], cos[1], v[5, idx]], 1)
        return obs.astype(np.float32)

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, w = self.num_envs, self._world
        actions = np.asarray(actions)
        if actions.shape != (n, 1):
            raise ValueError(f"{self!r}: actions must have shape ({n}, 1)")
        w.step(_torque(actions[:, 0]))
        # tip′ = link 2's origin c2 − R(θ2)(0, −½), plus (−sin θ2, −cos θ2): so tip′ − (0, 2) =
        # (c2x − 1.5 sin θ2, c2y − ½ cos θ2 − 2).
        tip = np.empty((2, n))
        _lin(w.si[1], -1.5, _ONE, self._p[1], tip[0], tip[1])
        mul(w.co[1], -0.5, tip[1])
        add(tip[1], self._p[3], tip[1])
        sub(tip[1], 2.0, tip[1])
        mul(tip, tip, tip)
        reward = np.sqrt(add(tip[0], tip[1], tip[0]))
        return self._obs(), np.negative(reward, reward), np.zeros(n, dtype=bool)


class DoublePendulumEnv(gymnasium.Env):
    """gymnasium twin of one env: a 1-env :class:`DoublePendulumBatchedEnv` drawing its resets
    from ``self.np_random``, so both match step for step from the same seed."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self) -> None:
        self._env = DoublePendulumBatchedEnv(1)
        self.observation_space = self._env.single_observation_space
        self.action_space = self._env.single_action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env._world.new_worlds()
        self._env.rng = self.np_random
        return self._env._reset_rows(np.zeros(1, dtype=np.int64))[0], {}

    def step(self, action):
        obs, reward, terminated = self._env._advance(np.asarray(action).reshape(1, 1))
        return obs[0], float(reward[0]), bool(terminated[0]), False, {}


def register_double_pendulum() -> None:
    """Register the gymnasium id (TimeLimit 500; skipped if present) and the fast path."""
    if DOUBLE_PENDULUM_ID not in gymnasium.registry:
        gymnasium.register(
            id=DOUBLE_PENDULUM_ID,
            entry_point="evo_svpg.envs.box2d_double_pendulum:DoublePendulumEnv",
            max_episode_steps=DoublePendulumBatchedEnv.max_episode_steps,
        )
    register_fast_path(DoublePendulumBatchedEnv)


register_double_pendulum()
