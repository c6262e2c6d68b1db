"""Agreement of the numba cart-pole step with the numpy one, swing-up and balancing (same
reset, fixed or seeded actions: clip(N(0,1)), uniform over [-1.5, 1.5], constant +1 and 0).

From the repository root (numba is not an evo_svpg dependency)::

    pip install numba
    OMP_NUM_THREADS=1 python runners/probes/numba_box2d/check_cp.py
"""

import time

import numpy as np

import evo_svpg.envs.box2d_cartpole as cp

# isort: split
# Sibling module of this probe (the script's directory is on sys.path).
from cp_numba import NumbaCartpoleSwingupBatchedEnv, NumbaRllabCartpoleBatchedEnv

N = 320


SWINGUP = (cp.CartpoleSwingupBatchedEnv, NumbaCartpoleSwingupBatchedEnv)
BALANCE = (cp.RllabCartpoleBatchedEnv, NumbaRllabCartpoleBatchedEnv)


def run(label, gen, steps, seed=0, pair=SWINGUP):
    ref = pair[0](N, seed=seed)
    new = pair[1](N, seed=seed)
    assert np.array_equal(ref.reset(seed=seed), new.reset(seed=seed))
    d = {"obs": [], "reward": [], "state": []}
    nterm, nsleep, vmax = 0, 0, 0.0
    for t in range(steps):
        a = gen(t)
        r1, r2 = ref.step(a), new.step(a)
        d["obs"].append(np.abs(r1.final_obs.astype(float) - r2.final_obs).max())
        d["reward"].append(np.abs(r1.reward - r2.reward).max())
        d["state"].append(
            max(
                np.abs(ref._body - new._body).max(),
                np.abs(ref._trig - new._trig).max(),
                np.abs(ref._sleep_time - new._sleep_time).max(),
            )
        )
        assert np.array_equal(r1.terminated, r2.terminated)
        assert np.array_equal(r1.obs, r2.obs)
        nterm += int(r1.terminated.sum())
        nsleep += int((ref._sleep_time > 0).sum())
        vmax = max(vmax, np.abs(ref._body[cp.U :]).max())
    d = {k: np.asarray(v) for k, v in d.items()}
    print(
        f"{label:22s} {steps} steps: steps 1-50 max|Δobs| {d['obs'][:50].max():.1e} "
        f"max|Δreward| {d['reward'][:50].max():.1e}; all steps max|Δobs| {d['obs'].max():.1e} "
        f"max|Δreward| {d['reward'].max():.1e} max|Δstate| {d['state'].max():.1e}; "
        f"terminations {nterm}, env-steps with a running sleep timer {nsleep}, "
        f"max|vel| {vmax:.1f}"
    )


def main():
    t = time.perf_counter()
    e = NumbaCartpoleSwingupBatchedEnv(2, seed=0)
    e.reset(seed=0)
    e.step(np.zeros((2, 1), np.float32))
    print(f"first numba call (compile or cache load) {time.perf_counter() - t:.2f} s")
    acts = np.clip(np.random.default_rng(1).standard_normal((500, N, 1)), -1, 1).astype(np.float32)
    run("a = clip(N(0,1))", lambda t: acts[t], 500)
    rng = np.random.default_rng(2)
    run("a ~ U(-1.5, 1.5)", lambda t: rng.uniform(-1.5, 1.5, (N, 1)).astype(np.float32), 1100)
    run("a = +1 constant", lambda t: np.ones((N, 1), np.float32), 300)
    run("a = 0 constant", lambda t: np.zeros((N, 1), np.float32), 300)
    run("balance clip(N(0,1))", lambda t: acts[t], 500, pair=BALANCE)
    run("balance a = 0", lambda t: np.zeros((N, 1), np.float32), 500, pair=BALANCE)


if __name__ == "__main__":
    main()
