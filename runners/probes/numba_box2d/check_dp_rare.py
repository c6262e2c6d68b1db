"""DP rare branches, numpy vs numba from identical hand-set states: envs at exact rest (sleep
zeroing), spinning at |ω| up to 400 rad/s (Box2D's clamps), joints pulled far apart (many /
non-converging position sweeps). 200 steps, zero and random actions. The numpy world's
``_clamp`` and ``_sleep`` are wrapped to count how often these branches are taken.

From the repository root (numba is not an evo_svpg dependency)::

    pip install numba
    OMP_NUM_THREADS=1 python runners/probes/numba_box2d/check_dp_rare.py
"""

import numpy as np

import evo_svpg.envs.box2d_double_pendulum as dp

# isort: split
# Sibling module of this probe (the script's directory is on sys.path).
from dp_numba import NumbaDoublePendulumBatchedEnv, step_difference

N, STEPS = 320, 200


def hand_set_envs():
    """A numpy and a numba env in the same hand-set state (three groups of envs)."""
    envs = [dp.DoublePendulumBatchedEnv(N, seed=3), NumbaDoublePendulumBatchedEnv(N, seed=3)]
    for e in envs:
        e.reset(seed=3)
    st = envs[0].get_state()
    p, v = st["physics"]["_p"], st["physics"]["_v"]
    r = slice(0, 100)  # exact rest, hanging
    p[:, r] = np.array([[0.0], [0.0], [-0.5], [-1.5], [0.0], [0.0]])
    v[:, r] = 0.0
    s = slice(100, 200)  # fast spin: clamps
    v[4, s] = np.linspace(-400, 400, 100)
    v[5, s] = np.linspace(300, -300, 100)
    v[0, s] = np.linspace(-250, 250, 100)
    q = slice(200, 320)  # joints pulled apart
    p[1, q] += np.linspace(-3, 3, 120)
    p[3, q] += np.linspace(2, -2, 120)
    for e in envs:
        e.set_state(st)
    return envs


def run(label, gen):
    ref, new = hand_set_envs()
    cnt = {"unsolved": 0, "clamped": 0}
    slept, dmax = 0, 0.0
    orig_sleep, orig_clamp = dp._World._sleep, dp._World._clamp

    def spy_sleep(self, u):
        if u is not None:
            cnt["unsolved"] += u.size
        return orig_sleep(self, u)

    def spy_clamp(self):
        cnt["clamped"] += 1
        return orig_clamp(self)

    dp._World._sleep, dp._World._clamp = spy_sleep, spy_clamp
    try:
        for _ in range(STEPS):
            a = gen()
            r1, r2 = ref.step(a), new.step(a)
            slept += int(np.all(ref._v == 0.0, 0).sum())
            dmax = max(dmax, step_difference(ref, new, r1, r2))
    finally:
        dp._World._sleep, dp._World._clamp = orig_sleep, orig_clamp
    print(
        f"{label}: {STEPS} steps, max|Δ| over obs, reward, p, v, j, sleep = {dmax:.1e}; "
        f"numpy branch hits: clamp calls {cnt['clamped']}, env-steps asleep (v == 0) {slept}, "
        f"env-world-steps unsolved after 20 sweeps {cnt['unsolved']}"
    )


def main():
    rng = np.random.default_rng(7)
    run("a=0", lambda: np.zeros((N, 1), np.float32))
    run("a~clipN", lambda: np.clip(rng.standard_normal((N, 1)), -1, 1).astype(np.float32))


if __name__ == "__main__":
    main()
