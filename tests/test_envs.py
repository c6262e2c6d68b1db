"""Batched environments against gymnasium 1.4.0, transition by transition.

The fast paths reproduce gymnasium's arithmetic operation for operation (same dtypes, same
operand order, libm ``pow`` where gymnasium squares numpy scalars, float32 where NEP 50 makes
gymnasium compute in float32), so observations, rewards and flags are compared for EXACT
equality, on any x86-64 CPU: squares go through ``libm_square`` (tests/test_libm.py), never
through numpy's array ``np.power``, whose AVX-512 SIMD path differs from libm in the last bit.
This relies on numpy's float64 ``sin``/``cos`` giving the same result for an array as for a
scalar and on ``math.cos`` equalling ``np.cos`` (both libm on x86-64 Linux); ``.ci/run`` runs
these tests a second time on numpy's AVX2 paths (``NPY_DISABLE_CPU_FEATURES``).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest

from evo_svpg.envs import FAST_PATH_IDS, BatchedEnv, StepResult, make_batched_env

N = 8
STEPS = 1250  # x 8 envs = 10,000 transitions per id

Policy = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _cartpole_policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # envs 0-3: random (terminations); envs 4-7: a balancing controller that survives the
    # 500 steps (truncations).
    balance = (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)
    return np.where(np.arange(len(obs)) < 4, rng.integers(0, 2, len(obs)), balance)


def _acrobot_policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # envs 0-3: random (truncations at 500); envs 4-7: pump energy with the sign of dθ2
    # (reaches the goal line in ~90 steps: terminations).
    pump = np.where(obs[:, 5] > 0, 2, 0)
    return np.where(np.arange(len(obs)) < 4, rng.integers(0, 3, len(obs)), pump)


def _mountain_car_policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Push along the velocity 80 % of the time: reaches the goal sometimes, not always.
    pump = np.where(obs[:, 1] >= 0, 2, 0)
    return np.where(rng.random(len(obs)) < 0.2, rng.integers(0, 3, len(obs)), pump)


def _mountain_car_continuous_policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Pump with magnitudes inside, on and beyond the ±1 bound (the env clips the force but
    # charges the unclipped action), 30 % uniform in ±1.5; env 7 only jiggles in ±0.2 and
    # never reaches the goal (truncation at 999).
    n = len(obs)
    pump = np.sign(obs[:, 1]) * rng.choice([0.3, 1.0, 1.5], n)
    act = np.where(rng.random(n) < 0.3, rng.uniform(-1.5, 1.5, n), pump)
    act[-1] = rng.uniform(-0.2, 0.2)
    return act.astype(np.float32)[:, None]


def _pendulum_policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-3.0, 3.0, (len(obs), 1)).astype(np.float32)  # clipped to ±2


# id -> (policy, expect terminations, expect truncations)
CASES: dict[str, tuple[Policy, bool, bool]] = {
    "CartPole-v1": (_cartpole_policy, True, True),
    "Acrobot-v1": (_acrobot_policy, True, True),
    "MountainCar-v0": (_mountain_car_policy, True, True),
    "MountainCarContinuous-v0": (_mountain_car_continuous_policy, True, True),
    "Pendulum-v1": (_pendulum_policy, False, True),
    # Sparse rewards, same dynamics: the same policies reach the goal (reward 1) and time out.
    "evo_svpg/MountainCarSparse-v0": (_mountain_car_policy, True, True),
    "evo_svpg/MountainCarContinuousSparse-v0": (_mountain_car_continuous_policy, True, True),
}

# ids whose physics has MountainCarContinuous' float64-after-reset / float32-after-step state
CONTINUOUS_CARS = ("MountainCarContinuous-v0", "evo_svpg/MountainCarContinuousSparse-v0")


def test_cases_cover_every_fast_path_id() -> None:
    assert set(CASES) == set(FAST_PATH_IDS)


def _gym_reset_state(env_id: str, state_row: np.ndarray) -> np.ndarray:
    """Env i's freshly drawn initial state as gymnasium's ``reset`` leaves ``env.state``."""
    if env_id == "Acrobot-v1":
        return state_row.astype(np.float32)  # gymnasium casts Acrobot's initial state
    return np.array(state_row, dtype=np.float64)


def _gym_obs(env: gym.Env) -> np.ndarray:
    """gymnasium's observation of its env's current state."""
    inner = env.unwrapped
    if hasattr(inner, "_get_ob"):
        return inner._get_ob()
    if hasattr(inner, "_get_obs"):
        return inner._get_obs()
    return np.array(inner.state, dtype=np.float32)


def _gym_action(benv: BatchedEnv, action: np.ndarray):
    if isinstance(benv.single_action_space, gym.spaces.Discrete):
        return int(action)
    return np.array(action, dtype=np.float32)


def _sync_reset(env_id: str, benv: BatchedEnv, genv: gym.Env, i: int, batched_obs: np.ndarray):
    """Restart gymnasium env i (TimeLimit counter included) from the batched env's draw."""
    genv.reset()
    genv.unwrapped.state = _gym_reset_state(env_id, benv.get_state()["physics"]["_s"][i])
    np.testing.assert_array_equal(batched_obs, _gym_obs(genv), err_msg=f"reset obs of env {i}")


def _assert_same(batched: np.ndarray, gymnasium_: np.ndarray, what: str, t: int) -> None:
    if not np.array_equal(batched, gymnasium_):  # fast path; the assert explains a failure
        np.testing.assert_array_equal(batched, gymnasium_, err_msg=f"{what} at step {t}")


@pytest.mark.parametrize("env_id", FAST_PATH_IDS)
def test_matches_gymnasium_step_for_step(env_id: str) -> None:
    policy, expect_term, expect_trunc = CASES[env_id]
    benv = make_batched_env(env_id, N, seed=0)
    assert benv.is_fast_path
    genvs = [gym.make(env_id) for _ in range(N)]
    assert benv.max_episode_steps == genvs[0].spec.max_episode_steps
    obs = benv.reset(seed=123)
    for i, genv in enumerate(genvs):
        _sync_reset(env_id, benv, genv, i, obs[i])
    rng = np.random.default_rng(2024)
    n_term = n_trunc = 0
    g_obs = np.empty((N, benv.single_observation_space.shape[0]), dtype=np.float32)
    g_rew = np.empty(N)
    g_term = np.empty(N, dtype=bool)
    g_trunc = np.empty(N, dtype=bool)
    g_state: np.ndarray | None = None
    for t in range(STEPS):
        actions = policy(obs, rng)
        res = benv.step(actions)
        assert res.obs.dtype == np.float32
        assert res.final_obs.dtype == np.float32
        assert res.reward.dtype == np.float64
        assert res.terminated.dtype == bool
        assert res.truncated.dtype == bool
        physics = benv.get_state()["physics"]["_s"]
        if g_state is None:
            g_state = np.empty_like(physics)
        for i, genv in enumerate(genvs):
            g_obs[i], g_rew[i], g_term[i], g_trunc[i], _ = genv.step(_gym_action(benv, actions[i]))
            g_state[i] = np.asarray(genv.unwrapped.state, dtype=np.float64)
        _assert_same(res.final_obs, g_obs, "obs", t)
        _assert_same(res.reward, g_rew, "reward", t)
        _assert_same(res.terminated, g_term, "terminated", t)
        _assert_same(res.truncated, g_trunc, "truncated", t)
        ended = g_term | g_trunc
        # Envs that go on: obs is final_obs, and the float64 physics state matches too, not
        # only its float32 image (a last-bit difference, e.g. x*x instead of gymnasium's
        # pow(x, 2), rarely shows in a float32 observation within one episode).
        _assert_same(res.obs[~ended], res.final_obs[~ended], "obs of continuing envs", t)
        _assert_same(physics[~ended], g_state[~ended], "physics state", t)
        for i in np.flatnonzero(ended):
            _sync_reset(env_id, benv, genvs[i], i, res.obs[i])
        n_term += int(res.terminated.sum())
        n_trunc += int(res.truncated.sum())
        obs = res.obs
    assert (n_term > 0) == expect_term, (n_term, n_trunc)
    assert (n_trunc > 0) == expect_trunc, (n_term, n_trunc)


@pytest.mark.parametrize("env_id", FAST_PATH_IDS)
def test_reset_stream_matches_gymnasium(env_id: str) -> None:
    genv = gym.make(env_id)
    # N = 1: reset(seed) then reset() continue the same stream as gymnasium's single env.
    benv = make_batched_env(env_id, 1)
    np.testing.assert_array_equal(benv.reset(seed=7)[0], genv.reset(seed=7)[0])
    for _ in range(3):
        np.testing.assert_array_equal(benv.reset()[0], genv.reset()[0])
    # Many envs: one draw for all, rows in env order = consecutive single-env resets. Many,
    # because Acrobot's reset observation uses float32 cos/sin, which differ from the
    # float64 result rounded to float32 for only ~0.05 % of initial angles.
    n = 4000
    benv = make_batched_env(env_id, n, seed=11)
    expected = [genv.reset(seed=11)[0]] + [genv.reset()[0] for _ in range(n - 1)]
    np.testing.assert_array_equal(benv.reset(), np.stack(expected))
    assert benv.single_observation_space == genv.observation_space
    assert benv.single_action_space == genv.action_space


def _random_states(env_id: str, m: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Physics states spread over (and onto the edges of) each env's reachable region."""
    if env_id == "CartPole-v1":
        s = rng.uniform([-2.4, -3.0, -0.21, -3.0], [2.4, 3.0, 0.21, 3.0], (m, 4))
    elif env_id == "Acrobot-v1":
        lim = np.array([np.pi, np.pi, 4 * np.pi, 9 * np.pi])
        s = rng.uniform(-lim, lim, (m, 4))
        s[: m // 10, 2:] = np.sign(s[: m // 10, 2:]) * lim[2:]  # on the velocity bounds
    elif env_id == "Pendulum-v1":
        s = rng.uniform([-3 * np.pi, -8.0], [3 * np.pi, 8.0], (m, 2))  # θ is never wrapped
    else:  # mountain cars: against the wall, at the speed limit, near the goal
        s = rng.uniform([-1.2, -0.07], [0.6, 0.07], (m, 2))
        s[: m // 10, 0] = -1.2
        s[m // 10 : m // 5, 1] = rng.choice([-0.07, 0.07], m // 10)
        s[m // 5 : m // 4, 0] = rng.uniform(0.4, 0.55, m // 4 - m // 5)
    if env_id not in CONTINUOUS_CARS:
        return {"_s": s}
    # gymnasium's state is float32 after a step, float64 [position, 0.0] after a reset
    fresh = rng.random(m) < 0.3
    s = s.astype(np.float32).astype(np.float64)
    s[fresh, 0] = rng.uniform(-0.6, -0.4, int(fresh.sum()))
    s[fresh, 1] = 0.0
    return {"_s": s, "_fresh": fresh}


def _gym_state(env_id: str, physics: dict[str, np.ndarray], i: int) -> np.ndarray:
    """Env i's physics state with the dtype gymnasium keeps in ``env.state`` mid-episode."""
    if env_id in CONTINUOUS_CARS and not physics["_fresh"][i]:
        return physics["_s"][i].astype(np.float32)
    return physics["_s"][i].copy()


@pytest.mark.parametrize("env_id", FAST_PATH_IDS)
def test_one_step_matches_gymnasium_on_random_states(env_id: str) -> None:
    """One transition from each of many unrelated states: rare last-bit effects (libm pow vs
    x*x, float32 rounding points, clipping edges) show up here far more often than along a
    few long, correlated trajectories."""
    m = 3000
    rng = np.random.default_rng(17)
    benv = make_batched_env(env_id, m, seed=0)
    benv.reset()
    snapshot = benv.get_state()
    snapshot["physics"] = _random_states(env_id, m, rng)
    benv.set_state(snapshot)
    space = benv.single_action_space
    if isinstance(space, gym.spaces.Discrete):
        actions = rng.integers(0, space.n, m)
    else:  # inside, on and beyond the bounds
        actions = rng.uniform(-1.5, 1.5, (m, 1)) * space.high
        actions[: m // 10] = rng.choice([-1.0, 1.0], (m // 10, 1)) * space.high
        actions = actions.astype(np.float32)
    res = benv.step(actions)
    after = benv.get_state()["physics"]["_s"]
    genv = gym.make(env_id)
    genv.reset(seed=0)
    g_obs = np.empty_like(res.final_obs)
    g_rew = np.empty(m)
    g_term = np.empty(m, dtype=bool)
    g_state = np.empty_like(after)
    for i in range(m):
        genv.reset()
        genv.unwrapped.state = _gym_state(env_id, snapshot["physics"], i)
        g_obs[i], g_rew[i], g_term[i], _, _ = genv.step(_gym_action(benv, actions[i]))
        g_state[i] = np.asarray(genv.unwrapped.state, dtype=np.float64)
    _assert_same(res.final_obs, g_obs, "obs", 0)
    _assert_same(res.reward, g_rew, "reward", 0)
    _assert_same(res.terminated, g_term, "terminated", 0)
    _assert_same(after[~g_term], g_state[~g_term], "physics state", 0)


def _run(
    benv: BatchedEnv, env_id: str, obs: np.ndarray, steps: int, seed: int
) -> tuple[list[StepResult], np.ndarray]:
    policy = CASES[env_id][0]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        res = benv.step(policy(obs, rng))
        out.append(res)
        obs = res.obs
    return out, obs


@pytest.mark.parametrize("env_id", FAST_PATH_IDS)
def test_get_set_state_continues_bit_identically(env_id: str) -> None:
    benv = make_batched_env(env_id, N, seed=3)
    _, obs = _run(benv, env_id, benv.reset(), 100, seed=0)
    snapshot = pickle.loads(pickle.dumps(benv.get_state()))
    first, _ = _run(benv, env_id, obs, 300, seed=1)

    other = make_batched_env(env_id, N, seed=99)
    _run(other, env_id, other.reset(), 7, seed=2)  # some unrelated state to overwrite
    other.set_state(snapshot)
    second, _ = _run(other, env_id, obs, 300, seed=1)

    n_done = 0
    for a, b in zip(first, second, strict=True):
        for field in ("obs", "reward", "terminated", "truncated", "final_obs"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
        n_done += int((a.terminated | a.truncated).sum())
    assert n_done > 0, "no reset happened in the recorded stretch"


def test_step_before_reset_and_bad_shapes_raise() -> None:
    benv = make_batched_env("CartPole-v1", 4, seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        benv.step(np.zeros(4, dtype=np.int64))
    benv.reset()
    with pytest.raises(ValueError, match="shape"):
        benv.step(np.zeros(3, dtype=np.int64))
    pend = make_batched_env("Pendulum-v1", 4, seed=0)
    pend.reset()
    with pytest.raises(ValueError, match="shape"):
        pend.step(np.zeros(4, dtype=np.float32))
    other = make_batched_env("Acrobot-v1", 4, seed=0)
    with pytest.raises(ValueError, match="CartPole-v1"):
        other.set_state(benv.get_state())


def test_generic_path_same_step_autoreset(caplog: pytest.LogCaptureFixture) -> None:
    env_id = "CartPole-v0"  # registered with gymnasium, not on the fast path (200-step limit)
    assert env_id not in FAST_PATH_IDS
    with (
        caplog.at_level(logging.INFO, logger="evo_svpg"),
        pytest.warns(DeprecationWarning, match="out of date"),
    ):
        benv = make_batched_env(env_id, 3, seed=0)
    records = [r for r in caplog.records if r.name == "evo_svpg"]
    assert len(records) == 1
    assert records[0].levelno == logging.INFO
    assert "generic" in records[0].getMessage()
    assert not benv.is_fast_path
    assert benv.max_episode_steps == 200
    with pytest.raises(NotImplementedError, match="snapshot"):
        benv.get_state()

    obs = benv.reset()
    assert obs.shape == (3, 4)
    assert obs.dtype == np.float32
    rng = np.random.default_rng(0)
    thresholds = np.array([2.4, 12 * 2 * np.pi / 360])
    n_done = 0
    for _ in range(200):
        res = benv.step(rng.integers(0, 2, 3))
        assert res.obs.shape == res.final_obs.shape == (3, 4)
        assert res.obs.dtype == res.final_obs.dtype == np.float32
        assert res.reward.shape == res.terminated.shape == res.truncated.shape == (3,)
        assert res.reward.dtype == np.float64
        assert res.terminated.dtype == bool
        assert res.truncated.dtype == bool
        done = res.terminated | res.truncated
        np.testing.assert_array_equal(res.obs[~done], res.final_obs[~done])
        for i in np.flatnonzero(res.terminated):
            # same step: final_obs is past a threshold, obs is already a fresh start state
            assert (np.abs(res.final_obs[i, [0, 2]]) > thresholds).any()
            assert (np.abs(res.obs[i]) <= 0.05).all()
        n_done += int(done.sum())
    assert n_done > 0
    benv.close()


def test_generic_path_rejects_unsupported_spaces() -> None:
    with pytest.raises(ValueError, match="Discrete"):
        make_batched_env("FrozenLake-v1", 2)


def test_unknown_id_and_bad_num_envs() -> None:
    with pytest.raises(ValueError, match="NoSuchEnv-v9") as info:
        make_batched_env("NoSuchEnv-v9", 4)
    for env_id in FAST_PATH_IDS:
        assert env_id in str(info.value)
    for bad in (0, -3):
        with pytest.raises(ValueError, match=f"num_envs.*{bad}"):
            make_batched_env("CartPole-v1", bad)
    with pytest.raises(ValueError, match="num_envs"):
        make_batched_env("CartPole-v0", 0)
