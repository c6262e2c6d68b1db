"""Profile the numpy batched DoublePendulum step alone (no policy) at 320 envs.

Actions: clip(N(0, 1), -1, 1), like the seed policy (means ~0, log_std 0), fixed seed.
Part 1: wall µs per env-transition of env.step (after a warm-up of 100 steps).
Part 2: section timing by wrapping the port's functions (perf_counter, ~0.1 µs each).
Part 3: cProfile top entries.

numba is not needed here. From the repository root::

    OMP_NUM_THREADS=1 python runners/probes/numba_box2d/profile_dp.py
"""

import cProfile
import pstats
import statistics
import time
from collections import defaultdict

import numpy as np

import evo_svpg.envs.box2d_double_pendulum as dp
from evo_svpg.envs.base import NumpyBatchedEnv

N, STEPS = 320, 300


def actions(steps, n, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal((steps, n, 1)), -1, 1).astype(np.float32)


def run(env, acts):
    for a in acts:
        env.step(a)


def main():
    env = dp.DoublePendulumBatchedEnv(N, seed=0)
    env.reset(seed=0)
    acts = actions(STEPS, N)
    run(env, actions(100, N, 2))  # warm-up
    per = []
    for _ in range(5):
        t = time.perf_counter()
        run(env, acts)
        per.append((time.perf_counter() - t) / (STEPS * N) * 1e6)
    print(
        f"numpy DP env.step, {N} envs: median {statistics.median(per):.3f} µs/env-transition "
        f"(min {min(per):.3f}, max {max(per):.3f}; {STEPS} steps x 5)"
    )

    # --- section timing -------------------------------------------------------------------
    acc = defaultdict(float)
    cnt = defaultdict(int)
    subset_sizes = []

    def wrap(owner, name, label):
        fn = getattr(owner, name)

        def w(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[label] += time.perf_counter() - t
                cnt[label] += 1

        setattr(owner, name, w)
        return owner, name, fn

    denv, world = dp.DoublePendulumBatchedEnv, dp._World
    orig = [
        wrap(NumpyBatchedEnv, "step", "env.step total"),
        wrap(denv, "_advance", "_advance (physics+obs+reward)"),
        wrap(world, "step", "_World.step (2 substeps)"),
        wrap(world, "_velocities", "_velocities (grav, motor, 20 vel sweeps closed form)"),
        wrap(world, "_positions", "_positions (integrate + pos sweeps + sleep)"),
        wrap(world, "_sleep", "  _sleep"),
        wrap(denv, "_obs", "_obs"),
        wrap(denv, "_reset_rows", "_reset_rows (autoreset)"),
    ]
    sweep_orig = dp._sweep
    first_label = f"  _sweep first (all {N} envs)"

    def sweep_w(p, tr, s):
        t = time.perf_counter()
        r = sweep_orig(p, tr, s)
        el = time.perf_counter() - t
        if p.shape[1] == N:
            acc[first_label] += el
            cnt[first_label] += 1
        else:
            acc["  _sweep on subsets"] += el
            cnt["  _sweep on subsets"] += 1
            subset_sizes.append(p.shape[1])
        return r

    dp._sweep = sweep_w
    env2 = dp.DoublePendulumBatchedEnv(N, seed=0)
    env2.reset(seed=0)
    run(env2, actions(100, N, 2))
    acc.clear()
    cnt.clear()
    subset_sizes.clear()
    t0 = time.perf_counter()
    run(env2, acts)
    wall = time.perf_counter() - t0
    dp._sweep = sweep_orig
    for owner, name, fn in orig:  # restore
        setattr(owner, name, fn)
    tot = acc["env.step total"]
    print(
        f"\nsection timing over {STEPS} MDP steps x {N} envs "
        f"(wall {wall * 1e6 / STEPS:.1f} µs/step, incl. timer overhead):"
    )
    print(f"{'section':58s} {'µs/MDP step':>11s} {'% of step':>9s} {'calls/step':>10s}")
    for k in acc:
        us, share = acc[k] * 1e6 / STEPS, 100 * acc[k] / tot
        print(f"{k:58s} {us:11.1f} {share:9.1f} {cnt[k] / STEPS:10.2f}")
    ws = STEPS * dp.SUBSTEPS
    mean_subset = np.mean(subset_sizes) if subset_sizes else 0
    env_sweeps = (N * cnt[first_label] + sum(subset_sizes)) / (ws * N)
    print(
        f"position sweeps per world step: 1 full + {cnt['  _sweep on subsets'] / ws:.2f} subset "
        f"sweeps (mean subset size {mean_subset:.1f} envs); env-sweeps per env per world step: "
        f"{env_sweeps:.2f}"
    )

    # --- cProfile ---------------------------------------------------------------------------
    env3 = dp.DoublePendulumBatchedEnv(N, seed=0)
    env3.reset(seed=0)
    run(env3, actions(100, N, 2))
    pr = cProfile.Profile()
    pr.enable()
    run(env3, acts)
    pr.disable()
    st = pstats.Stats(pr)
    st.sort_stats("tottime")
    print("\ncProfile (tottime, top 22; includes profiler overhead per call):")
    st.print_stats(22)


if __name__ == "__main__":
    main()
