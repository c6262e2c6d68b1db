"""The flat-population MLP against per-particle torch modules and torch.distributions."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_svpg.policy import PolicySpec, forward_numpy, forward_torch, log_prob, sample_actions


def _one_particle_forward(spec: PolicySpec, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Straightforward reference: slice one particle's vector into nn.Linear-style layers."""
    pos = 0
    sizes = spec.layer_sizes
    for k, (fan_in, fan_out) in enumerate(sizes):
        w = flat[pos : pos + fan_in * fan_out].reshape(fan_in, fan_out)
        pos += fan_in * fan_out
        b = flat[pos : pos + fan_out]
        pos += fan_out
        x = F.linear(x, w.T, b)
        if k < len(sizes) - 1:
            x = torch.tanh(x) if spec.activation == "tanh" else torch.relu(x)
    return x


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 5),
    hidden=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    activation=st.sampled_from(["tanh", "relu"]),
    discrete=st.booleans(),
)
def test_batched_forward_matches_per_particle_modules(n, hidden, activation, discrete):
    spec = PolicySpec(3, 2, discrete, tuple(hidden), activation, (-1.0, -1.0), (1.0, 1.0))
    theta = torch.randn(n, spec.n_params, generator=torch.Generator().manual_seed(0))
    obs = torch.randn(n, 7, 3, generator=torch.Generator().manual_seed(1))
    expected = torch.stack([_one_particle_forward(spec, theta[i], obs[i]) for i in range(n)])
    got_torch = forward_torch(spec, spec.split(theta), obs)
    got_numpy = forward_numpy(spec, spec.split(theta.numpy()), obs.numpy())
    torch.testing.assert_close(got_torch, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_numpy, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_cartpole_seed_architecture_has_6877_parameters_and_glorot_init():
    spec = PolicySpec(4, 2, True)
    assert spec.n_params == 6877  # (4·100+100) + (100·50+50) + (50·25+25) + (25·2+2)
    theta = spec.init_params(3, torch.Generator().manual_seed(0))
    parts = spec.split(theta)
    for w, b in zip(parts[::2], parts[1::2], strict=True):
        fan_in, fan_out = w.shape[1:]
        limit = math.sqrt(6 / (fan_in + fan_out))
        assert w.abs().max() <= limit
        assert w.abs().max() > 0.9 * limit  # really uniform over the whole range
        assert torch.all(b == 0)
    assert not torch.equal(theta[0], theta[1])  # particles are independent draws


def test_gaussian_head_log_std_is_part_of_the_particle_and_starts_at_std_1():
    spec = PolicySpec(3, 2, False, (8,), "tanh", (-2.0, -2.0), (2.0, 2.0))
    theta = spec.init_params(4, torch.Generator().manual_seed(0))
    assert spec.n_params == 3 * 8 + 8 + 8 * 2 + 2 + 2
    assert torch.all(spec.log_std(theta) == 0)
    theta[:, -2:] = 0.7  # the view reads the last act_dim entries
    assert torch.all(spec.log_std(theta) == 0.7)


def test_log_prob_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    disc = PolicySpec(3, 4, True, (6,))
    theta = torch.randn(2, disc.n_params, generator=gen)
    obs = torch.randn(2, 5, 3, generator=gen)
    actions = torch.randint(0, 4, (2, 5), generator=gen)
    logits = forward_torch(disc, disc.split(theta), obs)
    expected = torch.distributions.Categorical(logits=logits).log_prob(actions)
    torch.testing.assert_close(log_prob(disc, disc.split(theta), obs, actions), expected)

    cont = PolicySpec(3, 2, False, (6,), "tanh", (-1.0, -1.0), (1.0, 1.0))
    theta = torch.randn(2, cont.n_params, generator=gen)
    actions = torch.randn(2, 5, 2, generator=gen)
    mean = forward_torch(cont, cont.split(theta), obs)
    std = cont.log_std(theta).exp().unsqueeze(1)
    expected = torch.distributions.Normal(mean, std).log_prob(actions).sum(-1)
    torch.testing.assert_close(log_prob(cont, cont.split(theta), obs, actions), expected)


def test_gumbel_max_sampling_follows_the_softmax():
    spec = PolicySpec(1, 3, True, (1,))
    logits = np.log(np.array([0.2, 0.5, 0.3], dtype=np.float32))
    out = np.broadcast_to(logits, (2, 50_000, 3))
    actions = sample_actions(spec, out, None, np.random.default_rng(0))
    freq = np.bincount(actions.ravel(), minlength=3) / actions.size
    np.testing.assert_allclose(freq, [0.2, 0.5, 0.3], atol=0.005)


def test_gaussian_sampling_uses_each_particles_std():
    spec = PolicySpec(1, 1, False, (1,), "tanh", (-1.0,), (1.0,))
    means = np.zeros((2, 40_000, 1), dtype=np.float32)
    log_std = np.log(np.array([[0.5], [2.0]], dtype=np.float32))
    actions = sample_actions(spec, means, log_std, np.random.default_rng(0))
    np.testing.assert_allclose(actions.std(axis=(1, 2)), [0.5, 2.0], rtol=0.02)


def test_unknown_activation_lists_the_choices():
    with pytest.raises(ValueError, match=r"'tanh', 'relu'"):
        PolicySpec(4, 2, True, (8,), "gelu")
