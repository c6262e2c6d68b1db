"""Agreement of the numba DP step with the numpy one: same reset (seed 0), a fixed action
sequence clip(N(0,1), -1, 1) float32 (seed 1) of 500 steps for 320 envs; then three coverage
scenarios (constant full torque, zero torque, uniform actions over 1100 steps).

From the repository root (numba is not an evo_svpg dependency)::

    pip install numba
    OMP_NUM_THREADS=1 python runners/probes/numba_box2d/check_dp.py
"""

import time

import numpy as np

import evo_svpg.envs.box2d_double_pendulum as dp

N, T = 320, 500


def main():
    t0 = time.perf_counter()
    import dp_numba  # sibling module (this script's directory is on sys.path); imports numba

    import_s = time.perf_counter() - t0
    ref = dp.DoublePendulumBatchedEnv(N, seed=0)
    new = dp_numba.NumbaDoublePendulumBatchedEnv(N, seed=0)
    o_ref, o_new = ref.reset(seed=0), new.reset(seed=0)
    assert np.array_equal(o_ref, o_new)
    t1 = time.perf_counter()
    new.step(np.zeros((N, 1), np.float32))  # triggers compile (or cache load) ...
    compile_s = time.perf_counter() - t1
    ref.step(np.zeros((N, 1), np.float32))  # ... and the same step on the reference
    print(
        f"import {import_s:.2f} s, first numba call (compile or cache load) {compile_s:.2f} s; "
        f"signatures: {len(dp_numba.dp_step.signatures)}"
    )
    acts = np.clip(np.random.default_rng(1).standard_normal((T, N, 1)), -1, 1).astype(np.float32)
    d_obs, d_rew, d_state, n_exact = [], [], [], []
    for t in range(T):
        r_ref, r_new = ref.step(acts[t]), new.step(acts[t])
        d_obs.append(np.abs(r_ref.final_obs.astype(np.float64) - r_new.final_obs).max())
        d_rew.append(np.abs(r_ref.reward - r_new.reward).max())
        d_state.append(max(np.abs(ref._p - new._p).max(), np.abs(ref._v - new._v).max()))
        n_exact.append(int((np.all(ref._p == new._p, 0) & np.all(ref._v == new._v, 0)).sum()))
        assert np.array_equal(r_ref.truncated, r_new.truncated)
    d_obs, d_rew, d_state = map(np.asarray, (d_obs, d_rew, d_state))
    print(
        f"steps 1-50:   max|Δobs| {d_obs[:50].max():.3e}  max|Δreward| {d_rew[:50].max():.3e}  "
        f"max|Δstate p,v| {d_state[:50].max():.3e}"
    )
    for lo, hi in ((50, 100), (100, 200), (200, 300), (300, 400), (400, 500)):
        print(
            f"steps {lo + 1}-{hi}: max|Δobs| {d_obs[lo:hi].max():.3e}  max|Δreward| "
            f"{d_rew[lo:hi].max():.3e}  max|Δstate| {d_state[lo:hi].max():.3e}  "
            f"envs bit-identical in p,v at step {hi}: {n_exact[hi - 1]}/{N}"
        )
    first = np.flatnonzero(d_state > 0)
    print("first step with any state difference:", int(first[0]) + 1 if first.size else None)
    print(
        "per-step max|Δobs| at steps 1,10,50,100,200,300,400,500:",
        " ".join(f"{d_obs[k - 1]:.1e}" for k in (1, 10, 50, 100, 200, 300, 400, 500)),
    )
    for name, a in (("j", "_j"), ("sleep", "_sleep"), ("tr", "_world")):
        x, y = getattr(ref, a), getattr(new, a)
        if name == "tr":
            x, y = x.tr, y.tr
        print(f"final {name}: max|Δ| {np.abs(x.astype(float) - y).max():.1e}")
    extra_scenarios(dp_numba.NumbaDoublePendulumBatchedEnv, dp_numba.step_difference)


def extra_scenarios(numba_env, step_difference):
    """Coverage: constant full torque (spins up: Box2D's clamps?), zero torque (sleep?), and
    uniform actions over 1100 steps (two autoresets of unseeded resets in running worlds)."""
    rng = np.random.default_rng(3)
    for label, gen, steps in (
        ("a = +1 constant", lambda t: np.ones((N, 1), np.float32), 500),
        ("a = 0 constant", lambda t: np.zeros((N, 1), np.float32), 500),
        ("a ~ U(-1.5, 1.5)", lambda t: rng.uniform(-1.5, 1.5, (N, 1)).astype(np.float32), 1100),
    ):
        ref = dp.DoublePendulumBatchedEnv(N, seed=5)
        new = numba_env(N, seed=5)
        ref.reset(seed=5)
        new.reset(seed=5)
        dmax, vmax, nsleep = 0.0, 0.0, 0
        for t in range(steps):
            a = gen(t)
            r1, r2 = ref.step(a), new.step(a)
            dmax = max(dmax, step_difference(ref, new, r1, r2))
            vmax = max(vmax, np.abs(ref._v).max())
            nsleep += int((ref._sleep > 0).sum())
        print(
            f"{label:18s} {steps} steps: max|Δ| over obs, reward, p, v, j, sleep = {dmax:.1e}; "
            f"max|v| seen {vmax:.1f} (clamp above 141); env-steps with a running sleep "
            f"timer {nsleep}"
        )


if __name__ == "__main__":
    main()
