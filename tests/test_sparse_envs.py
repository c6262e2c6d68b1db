"""Sparse-reward MountainCar ids and configurable time limits of ``make_batched_env``.

The step-for-step equality of the sparse fast paths with their gymnasium environments is in
``test_envs.py`` (both ids are in its ``CASES``); here the gymnasium sparse environments are
checked against the ORIGINAL gymnasium cars, which is what makes "same dynamics, only the
reward differs" true rather than merely self-consistent.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import evo_svpg.envs.sparse_mountain_car as sparse_module
from evo_svpg.envs import (
    FAST_PATH_IDS,
    MOUNTAIN_CAR_CONTINUOUS_SPARSE_ID,
    MOUNTAIN_CAR_SPARSE_ID,
    make_batched_env,
)

SPARSE_TO_ORIGINAL = {
    MOUNTAIN_CAR_SPARSE_ID: "MountainCar-v0",
    MOUNTAIN_CAR_CONTINUOUS_SPARSE_ID: "MountainCarContinuous-v0",
}


def _pump(env_id: str, obs: np.ndarray, t: int, rng: np.random.Generator) -> Any:
    """Push along the velocity (reaches the goal in ~100-150 steps), with some noise and, for
    the continuous car, magnitudes inside, on and beyond the ±1 bound."""
    if env_id == MOUNTAIN_CAR_SPARSE_ID:
        return int(rng.integers(0, 3)) if rng.random() < 0.1 else (2 if obs[1] >= 0 else 0)
    direction = 1.0 if obs[1] >= 0 else -1.0
    return np.array([direction * rng.choice([0.5, 1.0, 1.7])], dtype=np.float32)


def _idle(env_id: str, obs: np.ndarray, t: int, rng: np.random.Generator) -> Any:
    """Never reaches the goal: the episode is truncated by the time limit."""
    if env_id == MOUNTAIN_CAR_SPARSE_ID:
        return 1
    return np.array([rng.uniform(-0.2, 0.2)], dtype=np.float32)


@pytest.mark.parametrize("env_id", list(SPARSE_TO_ORIGINAL))
def test_sparse_gymnasium_env_matches_original_dynamics(env_id: str) -> None:
    sparse = gym.make(env_id)
    original = gym.make(SPARSE_TO_ORIGINAL[env_id])
    rng = np.random.default_rng(5)
    n_goal = n_trunc = 0
    for episode, policy in enumerate([_pump, _pump, _idle, _pump]):
        obs, info = sparse.reset(seed=episode)
        o_obs, o_info = original.reset(seed=episode)
        np.testing.assert_array_equal(obs, o_obs)
        assert info == o_info
        for t in range(2000):
            action = policy(env_id, obs, t, rng)
            obs, reward, terminated, truncated, info = sparse.step(action)
            o_obs, _, o_terminated, o_truncated, o_info = original.step(action)
            np.testing.assert_array_equal(obs, o_obs, err_msg=f"episode {episode}, step {t}")
            assert obs.dtype == o_obs.dtype
            # the hidden state too (dtype included: the continuous car's float32/float64 quirk)
            s, o_s = np.asarray(sparse.unwrapped.state), np.asarray(original.unwrapped.state)
            np.testing.assert_array_equal(s, o_s)
            assert s.dtype == o_s.dtype
            assert (terminated, truncated, info) == (o_terminated, o_truncated, o_info)
            assert type(reward) is float
            assert reward == (1.0 if terminated else 0.0), (episode, t, reward, terminated)
            if terminated or truncated:
                n_goal += terminated
                n_trunc += truncated
                break
        else:
            pytest.fail("episode did not end")
    assert n_goal == 3, "the pumping episodes must reach the goal (the reward-1 step)"
    assert n_trunc == 1


@pytest.mark.parametrize("env_id", list(SPARSE_TO_ORIGINAL))
def test_sparse_specs_and_gymnasium_time_limit(env_id: str) -> None:
    expected = {MOUNTAIN_CAR_SPARSE_ID: 200, MOUNTAIN_CAR_CONTINUOUS_SPARSE_ID: 999}[env_id]
    env = gym.make(env_id)
    assert env.spec is not None
    assert env.spec.max_episode_steps == expected
    assert gym.spec(env_id).max_episode_steps == expected
    assert gym.spec(env_id).entry_point.startswith("evo_svpg.envs.sparse_mountain_car:")
    original = gym.make(SPARSE_TO_ORIGINAL[env_id])
    assert env.observation_space == original.observation_space
    assert env.action_space == original.action_space
    assert env.unwrapped.metadata == original.unwrapped.metadata  # render modes, fps
    short = gym.make(env_id, max_episode_steps=50)
    assert short.spec.max_episode_steps == 50
    assert make_batched_env(env_id, 2).max_episode_steps == expected


def test_registration_is_idempotent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium warns when an id is registered twice
        importlib.reload(sparse_module)
        importlib.reload(sparse_module)
        sparse_module.register_sparse_envs()
        importlib.import_module("evo_svpg")
    for env_id in SPARSE_TO_ORIGINAL:
        assert gym.make(env_id).unwrapped.spec.id == env_id


@pytest.mark.parametrize("env_id", FAST_PATH_IDS)
def test_fast_path_time_limit_override_matches_gymnasium(env_id: str) -> None:
    """N = 1: the batched env's resets continue the same stream as gymnasium's ``reset()``,
    so whole sequences of episodes can be compared without copying states across."""
    limit = 50
    benv = make_batched_env(env_id, 1, seed=0, max_episode_steps=limit)
    assert benv.is_fast_path
    assert benv.max_episode_steps == limit
    assert type(benv).max_episode_steps != limit  # the class default is left alone
    assert make_batched_env(env_id, 1).max_episode_steps == gym.spec(env_id).max_episode_steps
    genv = gym.make(env_id, max_episode_steps=limit)
    genv.action_space.seed(1)
    obs = benv.reset(seed=3)
    g_obs, _ = genv.reset(seed=3)
    np.testing.assert_array_equal(obs[0], g_obs)
    discrete = isinstance(benv.single_action_space, spaces.Discrete)
    length = n_trunc = 0
    for t in range(400):
        action = genv.action_space.sample()
        if env_id == "CartPole-v1":  # balance, or random play never lasts 50 steps
            action = int(g_obs[2] + 0.5 * g_obs[3] > 0)
        res = benv.step(np.array([action]) if discrete else action[None])
        g_obs, g_rew, g_term, g_trunc, _ = genv.step(action)
        length += 1
        np.testing.assert_array_equal(res.final_obs[0], g_obs, err_msg=f"step {t}")
        assert (res.reward[0], res.terminated[0], res.truncated[0]) == (g_rew, g_term, g_trunc)
        assert bool(res.truncated[0]) == (length == limit)
        if g_term or g_trunc:
            n_trunc += bool(g_trunc)
            np.testing.assert_array_equal(res.obs[0], genv.reset()[0])
            length = 0
    assert n_trunc > 0


class _CounterEnv(gym.Env):
    """Never terminates; the observation counts the steps, so ``final_obs`` shows exactly
    when the time limit cut the episode."""

    observation_space = spaces.Box(0.0, np.inf, (1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._t += 1
        return np.array([self._t], dtype=np.float32), 0.0, False, False, {}


COUNTER_ID = "evo_svpg_test/Counter-v0"
if COUNTER_ID not in gym.registry:
    gym.register(COUNTER_ID, entry_point=_CounterEnv, max_episode_steps=30)


@pytest.mark.parametrize(("override", "expected"), [(None, 30), (7, 7), (np.int64(45), 45)])
def test_generic_path_time_limit(override: int | None, expected: int) -> None:
    assert COUNTER_ID not in FAST_PATH_IDS
    benv = make_batched_env(COUNTER_ID, 3, seed=0, max_episode_steps=override)
    assert not benv.is_fast_path
    assert benv.max_episode_steps == expected
    benv.reset()
    n_trunc = 0
    for t in range(1, 2 * expected + 1):
        res = benv.step(np.zeros(3, dtype=np.int64))
        assert not res.terminated.any()
        ended = t % expected == 0
        np.testing.assert_array_equal(res.truncated, np.full(3, ended))
        np.testing.assert_array_equal(
            res.final_obs[:, 0], np.full(3, expected if ended else t % expected)
        )
        n_trunc += int(res.truncated.sum())
    assert n_trunc == 6
    benv.close()


BAD_LIMITS: list[Any] = [0, -1, -200, True, False, 2.5, 50.0, "50", [50]]


@pytest.mark.parametrize("bad", BAD_LIMITS, ids=repr)
@pytest.mark.parametrize("env_id", ["MountainCar-v0", COUNTER_ID])
def test_bad_max_episode_steps_raise(env_id: str, bad: Any) -> None:
    with pytest.raises(ValueError, match="max_episode_steps") as info:
        make_batched_env(env_id, 2, max_episode_steps=bad)
    message = str(info.value)
    assert repr(bad) in message or str(bad) in message
    assert ">= 1" in message
    assert "None" in message
