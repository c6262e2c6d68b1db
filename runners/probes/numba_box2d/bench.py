"""numpy vs numba batched steps, and the sampler ratio, interleaved in one process.

Part A (env alone, no policy): µs per env-transition of ``env.step`` (the full BatchedEnv step
with autoreset bookkeeping) and of the bare numba kernel, for DoublePendulum and
CartpoleSwingup at 320 and 1024 envs; actions clip(N(0,1), -1, 1) (seed-policy-like), fixed.
Part B (sampler): ``Sampler.collect`` transitions/s with the seed policy (100-50-25) at 16
particles x 20 envs on CartPole-v1, DP, swing-up and balancing cart-pole (numpy and numba
each), and on a null env with the DP's spaces (its step returns a cached observation: the
sampler's own cost per transition: policy forward, Gaussian sampling, buffers).
Every repetition runs all configurations once, in an order that alternates between reps; the
first repetition is a warm-up; medians over the others.

From the repository root (numba is not an evo_svpg dependency)::

    pip install numba
    OMP_NUM_THREADS=1 python runners/probes/numba_box2d/bench.py

Options (see ``--help``): ``--reps`` (7), ``--steps`` (60, part A), ``--sampler-steps`` (60).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import evo_svpg.envs.box2d_cartpole as cp
import evo_svpg.envs.box2d_double_pendulum as dp
from evo_svpg.config import RunConfig
from evo_svpg.engine import policy_spec_for, set_threads
from evo_svpg.envs import make_batched_env
from evo_svpg.envs.base import NumpyBatchedEnv
from evo_svpg.sampler import Sampler

# isort: split
# Sibling modules of this probe (the script's directory is on sys.path).
from cp_numba import NumbaCartpoleSwingupBatchedEnv, NumbaRllabCartpoleBatchedEnv, cp_step
from dp_numba import NumbaDoublePendulumBatchedEnv, dp_step

N_PART, E = 16, 20


class NullDP(NumpyBatchedEnv):
    """The DP's spaces, no physics: isolates the sampler's per-transition cost."""

    env_id = dp.DOUBLE_PENDULUM_ID
    max_episode_steps = 500

    def __init__(self, num_envs, seed=None):
        super().__init__(num_envs, seed)
        ref = dp.DoublePendulumBatchedEnv(1)
        self.single_observation_space = ref.single_observation_space
        self.single_action_space = ref.single_action_space
        self._o = np.random.default_rng(0).uniform(-1, 1, (num_envs, 6)).astype(np.float32)

    def _reset_rows(self, idx):
        return self._o[idx]

    def _advance(self, actions):
        return self._o.copy(), np.zeros(self.num_envs), np.zeros(self.num_envs, bool)


def step_configs(n, steps):
    acts = np.clip(np.random.default_rng(1).standard_normal((steps, n, 1)), -1, 1).astype("f4")
    out = {}
    for label, cls in (
        ("DP numpy", dp.DoublePendulumBatchedEnv),
        ("DP numba", NumbaDoublePendulumBatchedEnv),
        ("CPswing numpy", cp.CartpoleSwingupBatchedEnv),
        ("CPswing numba", NumbaCartpoleSwingupBatchedEnv),
    ):
        env = cls(n, seed=0)
        env.reset(seed=0)

        def run(env=env):
            for a in acts:
                env.step(a)

        out[f"{label} env.step n={n}"] = (run, steps * n)
    # bare kernels on their own worlds
    dpe = NumbaDoublePendulumBatchedEnv(n, seed=0)
    dpe.reset(seed=0)
    w = dpe._world
    obs, rew = np.empty((n, 6), np.float32), np.empty(n)

    def run_dp_kernel():
        for a in acts:
            dp_step(a, w.p, w.v, w.j, w.sleep, w.fresh, w.tr, obs, rew)

    out[f"DP numba kernel n={n}"] = (run_dp_kernel, steps * n)
    cpe = NumbaCartpoleSwingupBatchedEnv(n, seed=0)
    cpe.reset(seed=0)
    cobs, crew, cterm = np.empty((n, 4), np.float32), np.empty(n), np.empty(n, bool)

    def run_cp_kernel():  # no autoreset: envs that leave the track keep going (same cost)
        for a in acts:
            cp_step(a, cpe._body, cpe._trig, cpe._sleep_time, cobs, crew, cterm)

    out[f"CPswing numba kernel n={n}"] = (run_cp_kernel, steps * n)
    return out


def sampler_configs(steps_per_env):
    n_envs = N_PART * E
    out = {}
    for label, make in (
        ("CartPole-v1", lambda: make_batched_env("CartPole-v1", n_envs, seed=0)),
        ("DP numpy", lambda: dp.DoublePendulumBatchedEnv(n_envs, seed=0)),
        ("DP numba", lambda: NumbaDoublePendulumBatchedEnv(n_envs, seed=0)),
        ("CPswing numpy", lambda: cp.CartpoleSwingupBatchedEnv(n_envs, seed=0)),
        ("CPswing numba", lambda: NumbaCartpoleSwingupBatchedEnv(n_envs, seed=0)),
        ("CPbalance numpy", lambda: cp.RllabCartpoleBatchedEnv(n_envs, seed=0)),
        ("CPbalance numba", lambda: NumbaRllabCartpoleBatchedEnv(n_envs, seed=0)),
        ("null env (DP spaces)", lambda: NullDP(n_envs, seed=0)),
    ):
        env = make()
        env_id = "CartPole-v1" if label == "CartPole-v1" else env.env_id
        spec = policy_spec_for(env, RunConfig(env=env_id))
        theta = spec.init_params(N_PART, torch.Generator().manual_seed(0)).numpy()
        sampler = Sampler(env, spec, N_PART, seed=0)

        def run(sampler=sampler, theta=theta):
            sampler.collect(theta, steps_per_env)

        out[f"sampler {label}"] = (run, steps_per_env * n_envs)
    return out


def interleaved(configs, reps):
    names = list(configs)
    res = {k: [] for k in names}
    for r in range(reps + 1):
        order = names if r % 2 == 0 else names[::-1]
        for k in order:
            fn, count = configs[k]
            t = time.perf_counter()
            fn()
            if r:
                res[k].append((time.perf_counter() - t) / count * 1e6)
    return {k: (statistics.median(v), min(v), max(v)) for k, v in res.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--steps", type=int, default=60, help="env steps per rep, part A")
    ap.add_argument("--sampler-steps", type=int, default=60, help="steps per env per collect")
    args = ap.parse_args()
    set_threads(1)
    np.seterr(all="ignore")
    t = time.perf_counter()
    e = NumbaDoublePendulumBatchedEnv(4, seed=0)
    e.reset(seed=0)
    e.step(np.zeros((4, 1), "f4"))
    c = NumbaCartpoleSwingupBatchedEnv(4, seed=0)
    c.reset(seed=0)
    c.step(np.zeros((4, 1), "f4"))
    print(f"numba first calls (compile or cache load): {time.perf_counter() - t:.2f} s")

    print(
        f"\nA. env alone, µs per env-transition (median [min-max] of {args.reps} interleaved "
        f"reps of {args.steps} steps)"
    )
    for n in (320, 1024):
        res = interleaved(step_configs(n, args.steps), args.reps)
        for k, (med, lo, hi) in res.items():
            print(f"  {k:34s} {med:7.3f}  [{lo:.3f}-{hi:.3f}]")
        for env in ("DP", "CPswing"):
            a = res[f"{env} numpy env.step n={n}"][0]
            b = res[f"{env} numba env.step n={n}"][0]
            kb = res[f"{env} numba kernel n={n}"][0]
            print(
                f"  -> {env} n={n}: numba env.step {a / b:.1f}x faster than numpy "
                f"(kernel alone {a / kb:.1f}x)"
            )

    print(
        f"\nB. sampler, 16 particles x 20 envs, {args.sampler_steps} steps per env per collect, "
        f"µs per transition (median [min-max] of {args.reps} interleaved reps)"
    )
    res = interleaved(sampler_configs(args.sampler_steps), args.reps)
    base = res["sampler CartPole-v1"][0]
    for k, (med, lo, hi) in res.items():
        print(
            f"  {k:32s} {med:7.3f}  [{lo:.3f}-{hi:.3f}]  {1e6 / med:12,.0f} transitions/s  "
            f"{base / med:5.2f}x CartPole-v1"
        )


if __name__ == "__main__":
    main()
