"""The batched Box2D cart-poles (evo_svpg/envs/box2d_cartpole.py) against pybox2d running
rllab's world (tests/box2d_cartpole_reference.py), and their contracts as fast paths.

The port is float64 and computes the limit of Box2D's velocity sweeps; pybox2d is float32, so
observations agree to Box2D's rounding, not bit for bit. Measured max |port − pybox2d| with
this file's seeds (x, ẋ, θ, θ̇; whole episodes, fixed action sequences): swing-up zero force
(884 steps) 2.9e-6, 1.2e-6, 2.1e-6, 7.6e-6; ±10 N 9.5e-7, 1.9e-6, 4.8e-7, 3.1e-6; random
2.9e-6, 1.2e-6, 9.5e-7, 2.9e-6; balance zero 4.5e-8, 1.3e-7, 1.1e-6, 4.0e-6; ±10 N ≤ 1.2e-6;
random ≤ 7.2e-7; LQR in closed loop (each simulator acting on its own observations, 10,000
steps, 932 of them asleep in both) ≤ 3.0e-7. Rewards agree to 8e-7. Longer zero-force swing-up
episodes (500 steps) reach 1.7e-5 on θ̇ (rad/s), hence the tolerance. Against a literal
float64 copy of Box2D's 8 sweeps with warm starting (not shipped), the port agrees to 4e-8.
"""

from __future__ import annotations

import copy

import gymnasium
import numpy as np
import pytest
from scipy import stats

from evo_svpg.envs import make_batched_env
from evo_svpg.envs.box2d_cartpole import (
    CARTPOLE_SWINGUP_ID,
    RLLAB_CARTPOLE_ID,
    CartpoleSwingupBatchedEnv,
    RllabCartpoleBatchedEnv,
)
from evo_svpg.testing import check_fast_path

CLASSES = {"swingup": CartpoleSwingupBatchedEnv, "balance": RllabCartpoleBatchedEnv}
OBS_ATOL = {"swingup": 5e-5, "balance": 2e-5}


@pytest.fixture(scope="module")
def ref():
    pytest.importorskip("Box2D", reason="pybox2d (pip install box2d==2.3.10) is the reference")
    import box2d_cartpole_reference

    return box2d_cartpole_reference


def _fixed_actions(mode: str, rng: np.random.Generator):
    if mode == "random":
        return lambda: np.float32(rng.uniform(-1.0, 1.0))
    value = np.float32({"zero": 0.0, "push": 1.0, "pull": -1.0}[mode])
    return lambda: value


@pytest.mark.parametrize("task", ["swingup", "balance"])
@pytest.mark.parametrize("mode", ["zero", "push", "pull", "random", "feedback"])
def test_steps_match_pybox2d(ref, task, mode):
    """Whole episodes from the same resets (the port's autoreset draws what the reference
    draws): observations, rewards, termination and sleeping, step by step."""
    if task == "swingup" and mode == "feedback":
        pytest.skip("closed-loop swing-up amplifies float32 noise (1e-3 after 500 steps)")
    seed, episodes = 7, (20 if task == "balance" else 5)
    env, world = CLASSES[task](1, seed=seed), ref.Box2DCartpole(task)
    reset_rng = np.random.default_rng(seed)
    obs, ref_obs = env.reset()[0], world.reset(rng=reset_rng)
    np.testing.assert_array_equal(obs, ref_obs)
    policy = ref.feedback_policy(task)
    fixed = _fixed_actions(mode, np.random.default_rng(seed + 1)) if mode != "feedback" else None
    worst, sleeps, ended = 0.0, 0, 0
    while ended < episodes:
        if fixed is None:  # each simulator acts on its own observation
            a_port, a_ref = np.float32(policy(obs)), np.float32(policy(ref_obs))
        else:
            a_port = a_ref = fixed()
        res = env.step(np.array([[a_port]], dtype=np.float32))
        ref_obs, reward, done = world.step(float(a_ref))
        worst = max(worst, float(np.abs(res.final_obs[0] - ref_obs).max()))
        assert worst < OBS_ATOL[task], (res.final_obs[0], ref_obs)
        assert res.reward[0] == pytest.approx(reward, abs=5e-5)
        assert res.terminated[0] == done
        asleep = not world.pole.awake
        sleeps += asleep
        assert asleep == (res.final_obs[0, 1] == 0 and res.final_obs[0, 3] == 0)
        obs = res.obs[0]
        if res.terminated[0] or res.truncated[0]:
            ended += 1
            ref_obs = world.reset(rng=reset_rng)
            np.testing.assert_array_equal(obs, ref_obs)
    if mode == "feedback":
        assert sleeps > 100  # the LQR brings the world to rest: Box2D sleeps every 10 steps


def test_first_step_from_the_broken_reset(ref):
    """300 resets: the state after one step equals pybox2d's env by env, and the broken
    joint moves it far from the reset state (θ by up to ~1.7 rad, as −1.6·x0 on average)."""
    n, seed = 300, 3
    env = CartpoleSwingupBatchedEnv(n, seed=seed)
    start = env.reset().astype(np.float64)
    port = env.step(np.zeros((n, 1), dtype=np.float32)).final_obs.astype(np.float64)
    world, rng = ref.Box2DCartpole("swingup"), np.random.default_rng(seed)
    pybox2d = np.empty((n, 4))
    for i in range(n):
        np.testing.assert_array_equal(world.reset(rng=rng), start[i])
        pybox2d[i] = world.step(0.0)[0]
    np.testing.assert_allclose(port, pybox2d, rtol=0, atol=5e-6)
    for after in (port, pybox2d):
        moved = after[:, 2] - start[:, 2]
        assert np.median(np.abs(moved)) > 0.5
        slope = np.polyfit(start[:, 0], moved, 1)[0]
        assert -1.8 < slope < -1.4
    ks = stats.ks_2samp(port[:, 2] - start[:, 2], pybox2d[:, 2] - start[:, 2], method="asymp")
    assert ks.pvalue > 0.5


def _port_returns(cls, policy, n: int, seed: int) -> np.ndarray:
    """Return of the first episode of each of ``n`` batched envs."""
    env, rng = cls(n, seed=seed), np.random.default_rng(seed + 1)
    obs, returns, done = env.reset(), np.zeros(n), np.zeros(n, dtype=bool)
    for _ in range(env.max_episode_steps):
        res = env.step(np.asarray(policy(obs, rng), dtype=np.float32).reshape(n, 1))
        returns += np.where(done, 0.0, res.reward)
        done |= res.terminated | res.truncated
        obs = res.obs
        if done.all():
            break
    return returns


def _policy(ref, task: str, name: str):
    if name == "zero":
        return lambda obs, rng: np.zeros(obs.shape[:-1])
    if name == "random":
        return lambda obs, rng: rng.uniform(-1.0, 1.0, obs.shape[:-1])
    return ref.feedback_policy(task)


# Independent seeds for the port and the reference. Measured, port vs pybox2d (mean ± s.d.,
# Welch p, KS p): swing-up zero −197 ± 107 vs −189 ± 100 (0.32, 0.72), random −158 ± 53 vs
# −155 ± 46 (0.54, 0.52), feedback (100 episodes) 303 ± 256 vs 261 ± 276 (0.27, 0.28);
# balance zero 135 ± 51 vs 129 ± 42 (0.12, 0.52), random 81 ± 48 vs 73 ± 41 (0.036, 0.25),
# LQR (100 episodes) 4999.998 ± 0.001 in both (0.79, 0.47).
@pytest.mark.parametrize("task", ["swingup", "balance"])
@pytest.mark.parametrize("name", ["zero", "random", "feedback"])
def test_return_distributions_match_pybox2d(ref, task, name):
    n = 100 if name == "feedback" else 300  # pybox2d runs ~30 µs per step
    policy = _policy(ref, task, name)
    port = _port_returns(CLASSES[task], policy, n, seed=11)
    pybox2d = ref.run_episodes(task, policy, n, seed=12)
    welch = stats.ttest_ind(port, pybox2d, equal_var=False).pvalue
    ks = stats.ks_2samp(port, pybox2d).pvalue
    assert welch > 1e-3, (port.mean(), pybox2d.mean(), welch)
    assert ks > 1e-3, (port.mean(), pybox2d.mean(), ks)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["swingup", "balance"])
def test_feedback_return_distributions_500_episodes(ref, task):
    policy = _policy(ref, task, "feedback")
    port = _port_returns(CLASSES[task], policy, 500, seed=21)
    pybox2d = ref.run_episodes(task, policy, 500, seed=22)
    assert stats.ttest_ind(port, pybox2d, equal_var=False).pvalue > 1e-3
    assert stats.ks_2samp(port, pybox2d).pvalue > 1e-3


@pytest.mark.parametrize("env_id", [CARTPOLE_SWINGUP_ID, RLLAB_CARTPOLE_ID])
def test_fast_path_equals_its_gymnasium_twin(env_id):
    check_fast_path(env_id)
    env = gymnasium.make(env_id)
    assert env.spec.max_episode_steps == 500
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    batched = make_batched_env(env_id, 3, seed=0)
    assert batched.is_fast_path
    assert batched.single_action_space.shape == (1,)


def _single(state: dict, i: int) -> dict:
    """Env ``i`` of a batched snapshot, as the snapshot of a 1-env batched env."""
    one = copy.deepcopy(state)
    one["num_envs"] = 1
    one["physics"] = {k: v[:, i : i + 1].copy() for k, v in state["physics"].items()}
    one["elapsed"] = state["elapsed"][i : i + 1].copy()
    return one


@pytest.mark.parametrize("cls", [CartpoleSwingupBatchedEnv, RllabCartpoleBatchedEnv])
def test_batch_equals_single_envs(cls):
    """N envs stepped together give bit for bit what N 1-env copies give from the same
    states (a snapshot's columns, or rows placed directly) under the same actions."""
    n, steps = 6, 400
    batch = cls(n, seed=5)
    batch.reset()
    for _ in range(3):  # mid-episode states, sleep timers included
        batch.step(np.zeros((n, 1), dtype=np.float32))
    state = batch.get_state()
    singles = [cls(1) for _ in range(n)]
    for i, single in enumerate(singles):
        single.set_state(_single(state, i))
    placed = cls(n, seed=9)
    placed.reset()
    init = np.random.default_rng(0).uniform(-0.05, 0.05, (n, 4))
    placed.world.place(np.arange(n), init)
    placed_singles = [cls(1, seed=9) for _ in range(n)]
    for i, single in enumerate(placed_singles):
        single.reset()
        single.world.place(np.arange(1), init[i : i + 1])
    actions = np.random.default_rng(1).uniform(-1, 1, (steps, n, 1)).astype(np.float32)
    for envs, group in ((batch, singles), (placed, placed_singles)):
        live = np.ones(n, dtype=bool)  # compare each env up to its first episode end
        for t in range(steps):
            res = envs.step(actions[t])
            for i, single in enumerate(group):
                if live[i]:
                    one = single.step(actions[t, i : i + 1])
                    assert np.array_equal(res.final_obs[i], one.final_obs[0]), (t, i)
                    assert res.reward[i] == one.reward[0]
                    assert res.terminated[i] == one.terminated[0]
            live &= ~(res.terminated | res.truncated)
        assert not live.all()  # episodes did end, so the comparison covered resets' neighbours


@pytest.mark.parametrize("cls", [CartpoleSwingupBatchedEnv, RllabCartpoleBatchedEnv])
def test_snapshots_continue_bit_identically(cls):
    n, steps = 16, 120
    env = cls(n, seed=3)
    env.reset()
    actions = np.random.default_rng(2).uniform(-1, 1, (2 * steps, n, 1)).astype(np.float32)
    for t in range(steps):
        env.step(actions[t])
    state = env.get_state()
    assert set(state["physics"]) == set(cls._STATE_FIELDS)

    def rollout(e):
        out = [e.step(actions[t]) for t in range(steps, 2 * steps)]
        return [np.concatenate([r.obs.ravel(), r.final_obs.ravel(), r.reward,
                                r.terminated, r.truncated]) for r in out]  # fmt: skip

    first = rollout(env)
    assert any(r[-2 * n :].any() for r in first)  # autoresets happened
    for target in (env, cls(n)):
        target.set_state(state)
        again = rollout(target)
        for a, b in zip(first, again, strict=True):
            np.testing.assert_array_equal(a, b)


def test_observation_bounds_hold():
    """ẋ and θ̇ stay within Box2D's per-step clamps (the observation space's bounds), and
    the terminal observation stays within twice the cart's limit."""
    for cls in CLASSES.values():
        env = cls(64, seed=4)
        env.reset()
        rng = np.random.default_rng(4)
        space = env.single_observation_space
        for _ in range(300):
            res = env.step(np.sign(rng.uniform(-1, 1, (64, 1))).astype(np.float32))
            assert all(space.contains(o) for o in res.final_obs)
