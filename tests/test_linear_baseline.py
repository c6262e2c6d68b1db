"""The linear-baseline estimator against a direct, per-path computation written as rllab's
``LinearFeatureBaseline`` and ``BatchSampler.process_samples`` do it, on hand-made paths."""

from __future__ import annotations

import numpy as np
import pytest

from evo_svpg.estimators.linear_baseline import (
    baseline_advantages,
    fit_linear_baseline,
    linear_features,
)
from evo_svpg.estimators.pg import particle_major
from evo_svpg.sampler import Rollout
from evo_svpg.testing import check_estimator

T, N, E, OD = 7, 2, 2, 3
GAMMA = 0.9


def _rollout(seed: int = 0) -> Rollout:
    """Hand-made buffers: episode ends at chosen steps, env (1, 0) continuing an episode that
    began 40 steps before this iteration, every segment cut at the last step."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(0, 6, (T, N, E, OD)).astype(np.float32)  # some beyond the ±10 clip
    rewards = rng.normal(0, 1, (T, N, E)).astype(np.float32)
    terminated = np.zeros((T, N, E), dtype=bool)
    truncated = np.zeros((T, N, E), dtype=bool)
    terminated[2, 0, 0] = terminated[4, 1, 1] = True
    truncated[3, 0, 1] = True
    truncated[-1] |= ~terminated[-1]  # the iteration boundary
    step = np.zeros((T, N, E), dtype=np.int64)
    start = np.zeros((N, E), dtype=np.int64)
    start[1, 0] = 40
    for t in range(T):
        step[t] = start
        start = np.where(terminated[t] | truncated[t], 0, start + 1)
    zeros = np.zeros((T, N, E), dtype=np.int64)
    return Rollout(obs, zeros, rewards, terminated, truncated, obs, [], [],
                   step_in_episode=step)  # fmt: skip


def _paths(r: Rollout, i: int) -> list[dict]:
    """Particle ``i``'s paths, each with its observations, rewards and first step index."""
    paths = []
    for e in range(E):
        begin = 0
        for t in range(T):
            if r.terminated[t, i, e] or r.truncated[t, i, e]:
                seg = slice(begin, t + 1)
                paths.append({
                    "observations": r.obs[seg, i, e].astype(np.float64),
                    "rewards": r.rewards[seg, i, e].astype(np.float64),
                    "t0": int(r.step_in_episode[begin, i, e]), "env": e, "begin": begin,
                })  # fmt: skip
                begin = t + 1
    return paths


def _features(path: dict) -> np.ndarray:  # rllab's _features, with the episode's time index
    o = np.clip(path["observations"], -10, 10)
    length = len(path["rewards"])
    al = (path["t0"] + np.arange(length)).reshape(-1, 1) / 100.0
    return np.concatenate([o, o**2, al, al**2, al**3, np.ones((length, 1))], axis=1)


def _discount_cumsum(x: np.ndarray, discount: float) -> np.ndarray:
    out, running = np.zeros_like(x), 0.0
    for t in range(len(x) - 1, -1, -1):
        running = x[t] + discount * running
        out[t] = running
    return out


def _fit(paths: list[dict], reg: float = 1e-5) -> np.ndarray:  # rllab's fit
    featmat = np.concatenate([_features(p) for p in paths])
    returns = np.concatenate([_discount_cumsum(p["rewards"], GAMMA) for p in paths])
    return np.linalg.lstsq(
        featmat.T @ featmat + reg * np.identity(featmat.shape[1]), featmat.T @ returns, rcond=None
    )[0]


@pytest.mark.parametrize("lam", [1.0, 0.7])
def test_advantages_and_fit_equal_rllabs_per_path_computation(lam):
    r = _rollout()
    prev = np.random.default_rng(1).normal(0, 0.1, (N, 2 * OD + 4))  # last iteration's fit
    advantages, features, returns = baseline_advantages(r, prev, GAMMA, lam)
    for i in range(N):
        for path in _paths(r, i):
            b = np.append(_features(path) @ prev[i], 0.0)  # rllab: 0 after the last step
            deltas = path["rewards"] + GAMMA * b[1:] - b[:-1]
            expected = _discount_cumsum(deltas, GAMMA * lam)
            seg = slice(path["begin"], path["begin"] + len(expected))
            np.testing.assert_allclose(advantages[seg, i, path["env"]], expected, rtol=1e-12)
    coeffs = fit_linear_baseline(particle_major(features), particle_major(returns), 1e-5)
    for i in range(N):
        np.testing.assert_allclose(coeffs[i], _fit(_paths(r, i)), rtol=1e-6, atol=1e-9)


def test_lambda_one_is_the_return_minus_the_baseline_and_no_fit_means_zero():
    r = _rollout(3)
    advantages, features, returns = baseline_advantages(r, None, GAMMA, 1.0)
    np.testing.assert_allclose(advantages, returns)  # b = 0 before the first fit
    coeffs = np.ones((N, 2 * OD + 4))
    advantages, features, returns = baseline_advantages(r, coeffs, GAMMA, 1.0)
    np.testing.assert_allclose(advantages, returns - features.sum(axis=-1), rtol=1e-12)


def test_features_clip_observations_and_scale_time():
    f = linear_features(np.array([[12.0, -3.0]]), np.array([250]))
    np.testing.assert_allclose(f, [[10.0, -3.0, 100.0, 9.0, 2.5, 6.25, 15.625, 1.0]])


def test_the_estimator_checkpoints_resumes_and_reindexes():
    check_estimator("linear-baseline")
