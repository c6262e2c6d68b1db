"""The batched sampler: exact step budget, recorded activations, episode bookkeeping."""

import numpy as np
import pytest
import torch

from evo_svpg.envs import make_batched_env
from evo_svpg.estimators.pg import particle_major
from evo_svpg.policy import PolicySpec, forward_numpy
from evo_svpg.sampler import Sampler


def _sampler(n: int = 5, e: int = 3, env_id: str = "CartPole-v1"):
    env = make_batched_env(env_id, n * e, seed=None)
    obs_dim = env.single_observation_space.shape[0]
    space = env.single_action_space
    if hasattr(space, "n"):
        spec = PolicySpec(obs_dim, int(space.n), True, (8, 6))
    else:
        low, high = tuple(space.low.tolist()), tuple(space.high.tolist())
        spec = PolicySpec(obs_dim, space.shape[0], False, (8, 6), "tanh", low, high)
    theta = spec.init_params(n, torch.Generator().manual_seed(0)).numpy()
    return Sampler(env, spec, n, seed=1), spec, theta


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_recorded_activations_are_every_particles_forward_pass(env_id):
    sampler, spec, theta = _sampler(env_id=env_id)
    rollout = sampler.collect(theta, 40)
    obs = particle_major(rollout.obs)
    out = [np.empty((5, 120, w), dtype=np.float32) for _, w in spec.layer_sizes]
    forward_numpy(spec, spec.split(theta), obs, out)
    for got, expected in zip(rollout.activations, out, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_an_episode_cut_at_the_boundary_continues_and_is_reported_where_it_ends():
    """Pendulum always truncates at 200 steps: with 150 steps per iteration, no episode ends in
    the first iteration and every env ends exactly one, of length 200, in the second."""
    sampler, _, theta = _sampler(n=3, e=2, env_id="Pendulum-v1")
    first = sampler.collect(theta, 150)
    assert all(v.size == 0 for v in first.episode_returns)
    assert first.truncated[-1].all()  # the cut is a truncation for the estimators
    assert not first.terminated.any()
    first_rewards = first.rewards.copy()  # buffers are reused by the next collect
    second = sampler.collect(theta, 150)
    assert second.rewards.shape == (150, 3, 2)  # exactly T·E steps per particle
    for i in range(3):
        np.testing.assert_array_equal(second.episode_lengths[i], [200, 200])
        expected = first_rewards[:, i].sum(0) + second.rewards[:50, i].sum(0)  # per env
        np.testing.assert_allclose(np.sort(second.episode_returns[i]), np.sort(expected), rtol=1e-5)
    assert second.truncated[49].all()
    assert not second.truncated[50:-1].any()
