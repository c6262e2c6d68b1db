"""Returns, GAE and the batched score-function gradient against direct computations."""

import numpy as np
import pytest
import torch

from evo_svpg.estimators.pg import (
    analytic_score_gradient,
    gae,
    particle_major,
    returns_to_go,
    score_function_gradient,
    standardize,
)
from evo_svpg.policy import PolicySpec, forward_numpy, forward_torch


def test_returns_to_go_by_hand():
    rewards = np.array([1.0, 2.0, 3.0, 4.0])[:, None]
    dones = np.array([False, True, False, False])[:, None]
    got = returns_to_go(rewards, dones, 0.5)[:, 0]
    # episode 1: [1 + 0.5·2, 2]; episode 2 (cut at the end): [3 + 0.5·4, 4]
    np.testing.assert_allclose(got, [2.0, 2.0, 5.0, 4.0])


def test_gae_with_lambda_1_and_zero_values_is_the_return_to_go():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(50, 3))
    dones = rng.random((50, 3)) < 0.1
    zeros = np.zeros_like(rewards)
    np.testing.assert_allclose(
        gae(rewards, zeros, zeros, dones, dones, 0.9, 1.0), returns_to_go(rewards, dones, 0.9)
    )


def test_gae_bootstraps_truncations_but_not_terminations():
    rewards = np.array([[1.0], [1.0]])
    values = np.array([[0.5], [0.5]])
    next_values = np.array([[10.0], [10.0]])
    done = np.array([[True], [True]])
    terminated = np.array([[True], [False]])
    adv = gae(rewards, values, next_values, terminated, done, 0.9, 0.95)[:, 0]
    np.testing.assert_allclose(adv, [1.0 - 0.5, 1.0 + 0.9 * 10.0 - 0.5])


def test_particle_major_and_standardize():
    x = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)  # [T, n, E]
    pm = particle_major(x)
    assert pm.shape == (3, 8)
    np.testing.assert_array_equal(pm[1], np.concatenate([x[0, 1], x[1, 1]]))
    s = standardize(pm)
    np.testing.assert_allclose(s.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(s.std(axis=1), 1, atol=1e-6)


def test_batched_gradient_equals_each_particles_own_autograd_gradient():
    gen = torch.Generator().manual_seed(0)
    spec = PolicySpec(3, 2, True, (5, 4))
    n, m = 3, 2500  # spans several chunks
    theta = torch.randn(n, spec.n_params, generator=gen)
    obs = torch.randn(n, m, 3, generator=gen)
    actions = torch.randint(0, 2, (n, m), generator=gen)
    weights = torch.randn(n, m, generator=gen, dtype=torch.float64)
    got = score_function_gradient(spec, theta, obs.numpy(), actions.numpy(), weights.numpy())
    for i in range(n):
        th = theta[i : i + 1].clone().requires_grad_(True)
        logits = forward_torch(spec, spec.split(th), obs[i : i + 1])[0]
        dist = torch.distributions.Categorical(logits=logits)
        objective = (dist.log_prob(actions[i]) * weights[i].float()).mean()
        (expected,) = torch.autograd.grad(objective, th)
        torch.testing.assert_close(got[i], expected[0], rtol=1e-4, atol=1e-6)


def test_score_function_gradient_is_unbiased_on_a_bandit():
    """One state, logits = bias of the last layer; E[∇ log π · r] = ∇ E[r] = π(r − E r)."""
    spec = PolicySpec(1, 2, True, (1,))
    theta = torch.zeros(1, spec.n_params)
    rng = np.random.default_rng(0)
    m = 200_000
    actions = rng.integers(0, 2, size=(1, m))  # π = (0.5, 0.5) at θ = 0
    rewards = np.where(actions == 1, 1.0, 0.0)
    obs = np.zeros((1, m, 1), dtype=np.float32)
    grad = score_function_gradient(spec, theta, obs, actions, rewards)
    bias_grad = grad[0, -2:].numpy()  # output-layer bias entries = logit gradients
    np.testing.assert_allclose(bias_grad, [-0.25, 0.25], atol=0.005)


@pytest.mark.parametrize(
    ("discrete", "activation", "scaled"),
    [
        (True, "tanh", False), (False, "tanh", False), (True, "relu", False),
        (False, "relu", False), (True, "tanh", True), (False, "relu", True),
    ],
)  # fmt: skip
def test_analytic_backprop_from_sampled_activations_equals_autograd(discrete, activation, scaled):
    """The CPU path (hand backprop through the sampler's activations) against torch autograd,
    with and without observation scaling (which both must apply before the first layer)."""
    scaling = {"obs_shift": (0.5, -1.0, 0.0), "obs_scale": (2.0, 0.1, 14.0)} if scaled else {}
    spec = PolicySpec(3, 2, discrete, (7, 5), activation, (-1.0, -1.0), (1.0, 1.0), **scaling)
    gen = torch.Generator().manual_seed(1)
    n, m = 4, 300
    theta = spec.init_params(n, gen)
    if not discrete:
        theta[:, -2:] = torch.tensor([0.3, -0.5])  # a non-trivial log-std
    obs = torch.randn(n, m, 3, generator=gen).numpy()
    out = [np.empty((n, m, w), dtype=np.float32) for _, w in spec.layer_sizes]
    forward_numpy(spec, spec.split(theta.numpy()), obs, out)
    if discrete:
        actions = torch.randint(0, 2, (n, m), generator=gen).numpy()
    else:
        actions = (torch.from_numpy(out[-1]) + torch.randn(n, m, 2, generator=gen)).numpy()
    weights = torch.randn(n, m, generator=gen, dtype=torch.float64).numpy()
    got = analytic_score_gradient(spec, theta.numpy(), obs, actions, out, weights)
    expected = score_function_gradient(spec, theta, obs, actions, weights)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-6)


def test_a2c_critic_fits_its_targets_and_stays_out_of_the_particles():
    from evo_svpg.envs import make_batched_env
    from evo_svpg.estimators import A2C
    from evo_svpg.sampler import Sampler

    spec = PolicySpec(4, 2, True, (16,))
    n = 3
    theta = spec.init_params(n, torch.Generator().manual_seed(0))
    sampler = Sampler(make_batched_env("CartPole-v1", n * 4, seed=0), spec, n, seed=0)
    a2c = A2C(spec, n, seed=0, critic_epochs=1)
    rollout = sampler.collect(theta.numpy(), 500)
    obs = particle_major(rollout.obs)
    dones = rollout.terminated | rollout.truncated
    returns = particle_major(returns_to_go(rollout.rewards, dones, a2c.gamma))

    def critic_error() -> float:
        return float(np.mean((a2c._values(obs) - returns) ** 2))

    assert critic_error() > returns.var(axis=1).mean()  # untrained: worse than the mean
    for _ in range(100):
        a2c._fit_critic(obs, returns)
    # Trained: clearly better than predicting each particle's mean return.
    assert critic_error() < 0.85 * returns.var(axis=1).mean()

    critic_before = a2c.critic.detach().clone()
    grad = a2c.gradient(theta, rollout)
    assert grad.shape == theta.shape  # policy gradient only: critics are not particles
    assert not torch.equal(a2c.critic, critic_before)


def test_a2c_target_renormalisation_keeps_predictions():
    from evo_svpg.estimators import A2C

    a2c = A2C(PolicySpec(4, 2, True, (8,)), 2, seed=0)
    obs = np.random.default_rng(0).normal(size=(2, 50, 4)).astype(np.float32)
    before = a2c._values(obs)
    a2c._renormalise(torch.tensor([[10.0, 30.0, 50.0], [-5.0, 0.0, 2.0]]))
    assert a2c.target_mean.tolist() == pytest.approx([30.0, -1.0])
    np.testing.assert_allclose(a2c._values(obs), before, rtol=1e-5, atol=1e-5)
