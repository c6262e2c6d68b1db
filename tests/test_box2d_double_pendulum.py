"""The numpy double pendulum (evo_svpg.envs.box2d_double_pendulum) against Box2D itself.

The reference is pybox2d 2.3.10 running rllab's world (tests/box2d_double_pendulum_reference.py),
in float32; the port is float64, so the two agree to float32 rounding at first and then drift
apart as the chaotic dynamics amplify it (paper-envs.md §5). Measured over 10 resets per action
sequence (seeds 0–9; error = max over the observation entries and the reward):

* zero action:   max |error| over 50 steps 4.8e-6, never above 1e-4 within an episode (500);
* random a:      max |error| over 50 steps 1.1e-4 (median 3.8e-5); first step above 1e-4:
                 38–71 (min–median), above 1e-2: 114–198;
* constant ±1:   |ω| reaches 30–70 rad/s, so the float32 rounding is larger in absolute terms:
                 max |error| over 50 steps 9.8e-4, relative error |error|/(1 + |x|) ≤ 1.8e-5;
                 first step above 1e-4: 14–26, above 1e-2: 203–406.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from scipy import stats

import evo_svpg.envs.box2d_double_pendulum as dp
from evo_svpg.envs import make_batched_env
from evo_svpg.testing import check_fast_path


@pytest.fixture(scope="module")
def ref():
    """The pybox2d reference (pip ``box2d`` 2.3.10); its tests skip without it."""
    pytest.importorskip("Box2D", reason="the reference needs pybox2d: pip install box2d==2.3.10")
    import box2d_double_pendulum_reference

    return box2d_double_pendulum_reference


ACTIONS = {
    "zero": lambda rng, n: np.zeros(n),
    "plus": lambda rng, n: np.ones(n),
    "minus": lambda rng, n: -np.ones(n),
    "random": lambda rng, n: rng.uniform(-1.0, 1.0, n),
}


def _paired_errors(ref, seed: int, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute and relative per-step errors of the port against pybox2d from one reset."""
    env = dp.DoublePendulumBatchedEnv(1, seed=seed)
    obs = env.reset()
    box = ref.ReferenceDoublePendulum()
    obs_ref = box.reset(np.random.default_rng(seed).standard_normal(4) * ref.RESET_STD)
    assert np.abs(obs[0] - obs_ref).max() < 1e-7  # the same reset draw
    abs_err, rel_err = [], []
    for a in actions.astype(np.float32):
        res = env.step(np.array([[a]]))
        obs_ref, reward_ref = box.step(a)
        err = np.abs(res.final_obs[0] - obs_ref)
        abs_err.append(max(err.max(), abs(res.reward[0] - reward_ref)))
        rel_err.append((err / (1.0 + np.abs(obs_ref))).max())
    return np.array(abs_err), np.array(rel_err)


@pytest.mark.parametrize("kind", ACTIONS)
def test_steps_agree_with_pybox2d(ref, kind):
    rng = np.random.default_rng(7)
    for seed in range(3):
        abs_err, rel_err = _paired_errors(ref, seed, ACTIONS[kind](rng, 50))
        if kind in ("zero", "random"):
            assert abs_err.max() < (1e-5 if kind == "zero" else 3e-4), (seed, abs_err.max())
        assert rel_err.max() < 1e-4, (seed, rel_err.max())


def _errors_from(ref, init, steps: int) -> np.ndarray:
    """Per-step max |error| of zero-action steps from rllab's reset with ``init`` (θ1, θ2,
    ω1, ω2) in both implementations."""
    env = dp.DoublePendulumBatchedEnv(1, seed=0)
    env.reset()
    th = np.array(init[:2])
    env._p[:, 0] = [*0.5 * np.sin(th), *(-0.5 * np.cos(th) - [0, 1]), *th]
    env._v[:] = 0.0
    env._v[4:6, 0] = init[2:]
    env._world.refresh_trig()
    box = ref.ReferenceDoublePendulum()
    box.reset(np.array(init))
    return np.array([np.abs(env.step(np.zeros((1, 1))).final_obs[0] - box.step(0.0)[0]).max()
                     for _ in range(steps)])  # fmt: skip


def test_sleeping_matches_pybox2d(ref, monkeypatch):
    """Near rest Box2D zeroes the velocities every 51 world steps (its timer is float32); the
    port follows pybox2d to 6e-8, and would be 0.025 off without sleeping."""
    init = [2e-3, -1e-3, 0.0, 0.0]
    assert _errors_from(ref, init, 120).max() < 1e-6
    monkeypatch.setattr(dp, "_TIME_TO_SLEEP", np.float32(1e9))
    assert _errors_from(ref, init, 120).max() > 1e-3


def test_velocity_clamps_match_pybox2d(ref):
    """|ω| is limited to (π/2)/h = 157 rad/s in a world step (measured error ≤ 9e-5)."""
    assert _errors_from(ref, [0.3, 0.1, -3000.0, 1000.0], 3).max() < 1e-3
    assert _errors_from(ref, [0.0, 0.0, 2000.0, 2000.0], 3).max() < 1e-3


def test_first_step_distribution_matches_pybox2d(ref):
    """The broken reset (§3): the first step repairs the elbow. 300 resets of each, continuing
    one world through short episodes (its warm start carries over, as in rllab)."""
    n, rng = 300, np.random.default_rng(1)
    box, first_ref = ref.ReferenceDoublePendulum(), []
    for _ in range(n):
        box.reset(rng.standard_normal(4) * ref.RESET_STD)
        first_ref.append(box.step(0.0)[0])
        for _ in range(4):
            box.step(0.0)
    env = make_batched_env(dp.DOUBLE_PENDULUM_ID, n, seed=2, max_episode_steps=5)
    env.reset()
    first = [env.step(np.zeros((n, 1))).final_obs for _ in range(10)]
    first = np.concatenate([first[0], first[5]])  # first steps of two episodes per env

    def state(o):  # θ1, ω1, θ2, ω2
        return np.stack([np.arctan2(o[:, 0], o[:, 1]), o[:, 2], np.arctan2(o[:, 3], o[:, 4]),
                         o[:, 5]], 1)  # fmt: skip

    a, b = state(np.array(first_ref)), state(first)
    # Measured s.d. (pybox2d / port): 0.052 / 0.056, 0.048 / 0.052, 0.125 / 0.124,
    # 0.097 / 0.100; KS p-values 0.54, 0.19, 0.73, 0.50.
    assert np.allclose(a.std(0), [0.052, 0.05, 0.122, 0.10], rtol=0.15)  # paper-envs.md §3
    for i in range(4):
        assert stats.ks_2samp(a[:, i], b[:, i]).pvalue > 1e-3, i
        assert stats.levene(a[:, i], b[:, i]).pvalue > 1e-3, i


POLICIES = {
    "zero": lambda obs, rng: np.zeros(len(obs)),
    "random": lambda obs, rng: rng.uniform(-1.0, 1.0, len(obs)),
    "feedback": lambda obs, rng: np.clip(0.3 * obs[:, 5] - 0.3 * obs[:, 2], -1.0, 1.0),
}


@pytest.mark.parametrize("name", POLICIES)
def test_return_distributions_match_pybox2d(ref, name):
    """200 full episodes (500 steps) of each policy. Measured (pybox2d / port, mean ± s.d.):
    zero −1998.8 ± 1.2 / −1998.8 ± 1.4; random −1301.7 ± 95 / −1299.9 ± 94; feedback
    −1140.7 ± 1.5 / −1140.6 ± 1.4; Welch p 0.95, 0.85, 0.57; KS p 0.92, 0.99, 0.79."""
    n, policy = 200, POLICIES[name]
    returns_ref, _ = ref.run_returns(lambda o, r: float(policy(o[None], r)[0]), n, seed=0)
    env = make_batched_env(dp.DOUBLE_PENDULUM_ID, n, seed=1)
    obs, rng, returns = env.reset(), np.random.default_rng(1), np.zeros(n)
    for _ in range(500):
        res = env.step(policy(obs, rng)[:, None].astype(np.float32))
        returns += res.reward
        obs = res.obs
    assert res.truncated.all()
    assert stats.ttest_ind(returns_ref, returns, equal_var=False).pvalue > 1e-3
    assert stats.ks_2samp(returns_ref, returns).pvalue > 1e-3


def test_check_fast_path_and_gymnasium_contract():
    check_fast_path(dp.DOUBLE_PENDULUM_ID, steps=1200)
    env = gymnasium.make(dp.DOUBLE_PENDULUM_ID)
    assert env.spec.max_episode_steps == 500
    # A seeded reset starts a fresh world, so seeded episodes repeat exactly.
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=3)
        runs.append([obs] + [env.step(np.array([0.7], np.float32))[0] for _ in range(30)])
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0][0], env.reset()[0])  # unseeded: the stream goes on


def test_batch_equals_single_envs():
    n, rng = 6, np.random.default_rng(0)
    batch = dp.DoublePendulumBatchedEnv(n, seed=4)
    batch.reset()
    for _ in range(30):  # spin them up: several position sweeps per step
        batch.step(rng.choice([-1.0, 1.0], (n, 1)).astype(np.float32))
    snap = batch.get_state()
    actions = rng.uniform(-1, 1, (60, n, 1)).astype(np.float32)
    out = [batch.step(a) for a in actions]
    for i in range(n):
        single = dp.DoublePendulumBatchedEnv(1)
        physics = {k: v[..., i : i + 1] for k, v in snap["physics"].items()}
        single.set_state({**snap, "num_envs": 1, "physics": physics,
                          "elapsed": snap["elapsed"][i : i + 1]})  # fmt: skip
        for a, res in zip(actions, out, strict=True):
            r = single.step(a[i : i + 1])
            assert np.array_equal(r.final_obs[0], res.final_obs[i])
            assert r.reward[0] == res.reward[i]


def test_snapshot_continues_bit_identically():
    env = dp.DoublePendulumBatchedEnv(5, seed=0)
    env.reset()
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, (540, 5, 1)).astype(np.float32)
    for a in actions[:40]:
        env.step(a)
    snap = env.get_state()
    first = [env.step(a) for a in actions[40:]]  # crosses the 500-step autoreset
    other = dp.DoublePendulumBatchedEnv(5, seed=99)
    other.reset()
    for env_ in (env, other):
        env_.set_state(snap)
        for a, res in zip(actions[40:], first, strict=True):
            r = env_.step(a)
            assert np.array_equal(r.obs, res.obs)
            assert np.array_equal(r.reward, res.reward)
            assert np.array_equal(r.truncated, res.truncated)
