"""Behaviour descriptors on hand-made trajectories, against a per-episode reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_svpg.behaviour import DESCRIPTORS, Describer, effort, get_descriptor, scale
from evo_svpg.envs import make_batched_env
from evo_svpg.envs.base import ObservationRoles
from evo_svpg.evaluation import Evaluator
from evo_svpg.policy import PolicySpec
from evo_svpg.sampler import Sampler

DISCRETE = PolicySpec(2, 3, True, (8,))
CONTINUOUS = PolicySpec(2, 1, False, (8,), action_low=(-1.0,), action_high=(1.0,))
X_RANGE, V_RANGE = (-1.2, 0.6), (-0.07, 0.07)
XV = ObservationRoles(position=0, velocity=1)  # MountainCar's, as hand-made buffers are


def _describer(name: str, spec: PolicySpec = DISCRETE, n_envs: int = 1) -> Describer:
    return Describer(name, spec, X_RANGE, V_RANGE, 200, n_envs, roles=XV)


def _buffers(xs: list[float], vs: list[float], actions: list[int]):
    """One env, one episode visiting states xs[0] → xs[1] → … → xs[-1] (done at the end)."""
    t = len(xs) - 1
    obs = np.array([[x, v] for x, v in zip(xs[:-1], vs[:-1], strict=True)], np.float32)
    final = np.array([[x, v] for x, v in zip(xs[1:], vs[1:], strict=True)], np.float32)
    done = np.zeros(t, dtype=bool)
    done[-1] = True
    rets = np.zeros((t, 1))
    rets[-1] = 1.0
    shape = (t, 1, 1)
    return (
        obs.reshape(*shape, 2),
        final.reshape(*shape, 2),
        np.array(actions).reshape(shape),
        done.reshape(shape),
        rets,
    )


XS = [-0.5, -0.6, -0.7, -0.4, 0.1, 0.5]
VS = [0.0, -0.01, -0.01, 0.03, 0.05, 0.04]
ACTIONS = [0, 0, 2, 2, 1]  # pushes −1, −1, +1, +1, 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("extremes", [-0.7, 0.5]),
        ("final_state", [0.5, 0.04]),
        ("gep", [0.5, 1.2, 0.1 * 4]),
    ],
)
def test_descriptors_of_a_hand_made_episode(name, expected):
    b = _describer(name).describe(*_buffers(XS, VS, ACTIONS))
    np.testing.assert_allclose(b.descriptors, [expected], atol=1e-6)
    assert b.step.tolist() == [4]
    assert b.particle.tolist() == [0]
    assert b.returns.tolist() == [1.0]
    assert not b.partial_valid.any()  # the episode ended on the last step: nothing was cut


def test_an_episode_cut_by_the_iteration_boundary_carries_over():
    whole = _describer("gep").describe(*_buffers(XS, VS, ACTIONS))
    describer = _describer("gep")
    obs, final, actions, done, rets = _buffers(XS, VS, ACTIONS)
    first = describer.describe(obs[:2], final[:2], actions[:2], done[:2], rets[:2])
    assert first.descriptors.shape == (0, 3)
    assert first.partial_valid.all()
    np.testing.assert_allclose(first.partial[0, 0], [-0.5, 0.2, 0.2], atol=1e-6)  # so far
    second = describer.describe(obs[2:], final[2:], actions[2:], done[2:], rets[2:])
    np.testing.assert_allclose(second.descriptors, whole.descriptors)


def _reference(name, xs0, xs1, vs1, u, done):
    """Per env, per episode, with Python loops: the descriptor's definition."""
    out = []
    t_max, n_envs = done.shape
    starts = np.zeros(n_envs, dtype=int)
    for t in range(t_max):
        for j in range(n_envs):
            if not done[t, j]:
                continue
            s = slice(starts[j], t + 1)
            lo = min(xs0[s, j].min(), xs1[s, j].min())
            hi = max(xs0[s, j].max(), xs1[s, j].max())
            out.append(
                {
                    "extremes": [lo, hi],
                    "final_state": [xs1[t, j], vs1[t, j]],
                    "gep": [hi, hi - lo, float((0.1 * u[s, j] ** 2).sum())],
                }[name]
            )
            starts[j] = t + 1
    return np.array(out).reshape(-1, get_descriptor(name).dim)


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(DESCRIPTORS)),
    seed=st.integers(0, 2**16),
    t_max=st.integers(1, 30),
    split=st.integers(0, 30),
)
def test_batched_descriptors_equal_a_per_episode_reference(name, seed, t_max, split):
    """Random envs (2 particles × 3 envs), random episode ends, consumed in two rollouts."""
    rng = np.random.default_rng(seed)
    n, e = 2, 3
    obs = rng.uniform(-1.2, 0.6, (t_max, n, e, 2)).astype(np.float32)
    final = rng.uniform(-1.2, 0.6, (t_max, n, e, 2)).astype(np.float32)
    actions = rng.integers(0, 3, (t_max, n, e))
    done = rng.random((t_max, n, e)) < 0.2
    rets = rng.normal(size=(t_max, n * e))
    describer = _describer(name, n_envs=n * e)
    cut = min(split, t_max)
    parts = [
        describer.describe(obs[s], final[s], actions[s], done[s], rets[s])
        for s in (slice(0, cut), slice(cut, t_max))
        if s.stop > s.start
    ]
    got = np.concatenate([p.descriptors for p in parts])
    flat = (t_max, n * e)
    expected = _reference(
        name,
        obs[..., 0].reshape(flat).astype(np.float64),
        final[..., 0].reshape(flat).astype(np.float64),
        final[..., 1].reshape(flat).astype(np.float64),
        (actions.reshape(flat) - 1).astype(np.float64),
        done.reshape(flat),
    )
    # Episodes are reported in time-major order within each rollout; so is the reference.
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_particle_means_fall_back_to_cut_episodes():
    describer = _describer("extremes", n_envs=4)  # 2 particles × 2 envs
    t = 3
    obs = np.zeros((t, 2, 2, 2), np.float32)
    final = np.zeros((t, 2, 2, 2), np.float32)
    obs[..., 0] = -0.5
    final[..., 0] = np.array([[-0.6, -0.2], [-0.8, 0.0]], np.float32)
    done = np.zeros((t, 2, 2), dtype=bool)
    done[1, 0, :] = True  # particle 0: both envs end an episode at t = 1; particle 1 never does
    b = describer.describe(obs, final, np.ones((t, 2, 2), int), done, np.zeros((t, 4)))
    means = b.particle_means()
    np.testing.assert_allclose(means[0], [(-0.6 - 0.5) / 2, (-0.5 - 0.2) / 2], atol=1e-6)
    np.testing.assert_allclose(means[1], [(-0.8 - 0.5) / 2, (-0.5 + 0.0) / 2], atol=1e-6)


def test_effort_and_scaling():
    np.testing.assert_array_equal(effort(DISCRETE, np.array([0, 1, 2])), [-1.0, 0.0, 1.0])
    two_actions = PolicySpec(4, 2, True, (8,))
    np.testing.assert_array_equal(effort(two_actions, np.array([0, 1])), [-1.0, 1.0])
    u = effort(CONTINUOUS, np.array([[-3.0], [0.5], [1.0]]))  # clipped to the bounds
    np.testing.assert_allclose(u, [1.0, 0.5, 1.0])
    np.testing.assert_allclose(scale(np.array([[-1.2, 0.6]]), [X_RANGE, X_RANGE]), [[0.0, 1.0]])


def test_bad_descriptor_settings_get_clear_errors():
    with pytest.raises(ValueError, match=r"descriptor='speed'.*'extremes', 'final_state', 'gep'"):
        get_descriptor("speed")
    with pytest.raises(ValueError, match=r"reads observation\[0, 1\] \(x, v\).*1 dimension"):
        Describer("extremes", PolicySpec(1, 2, True, (4,)), X_RANGE, V_RANGE, 200, 1, roles=XV)
    with pytest.raises(ValueError, match=r"needs finite observation bounds"):
        Describer("final_state", DISCRETE, X_RANGE, (-np.inf, np.inf), 200, 1, roles=XV)


def test_evaluator_describes_its_episodes_consistently_with_their_outcome():
    """Deterministic MountainCarSparse episodes: return 1 ⇔ terminated ⇔ max x reached 0.5."""
    spec = PolicySpec(2, 3, True, (1,))
    # Layout W0 [2, 1], b0 [1], W1 [1, 3], b1 [3]: h = tanh(g·v), logits = h·(−10, 0, 10).
    # g > 0 pushes along the velocity (reaches the goal); g = 0 never pushes (never does).
    gains = np.repeat([0.0, 5.0, 100.0, 1000.0], 8)
    theta = np.zeros((gains.size, spec.n_params), np.float32)
    theta[:, 1] = gains
    theta[:, 3:6] = [-10.0, 0.0, 10.0]
    evaluator = Evaluator(
        "evo_svpg/MountainCarSparse-v0", spec, 2, seed=0, deterministic=True,
        descriptor="extremes",
    )  # fmt: skip
    result = evaluator.episodes_of(theta)
    reached = result.descriptors[..., 1] >= 0.5
    np.testing.assert_array_equal(result.terminated, reached)
    np.testing.assert_array_equal(result.returns, reached.astype(float))
    assert not reached[:8].any()
    assert reached[16:].all()
    assert (result.descriptors[..., 0] <= -0.4).all()  # every start is in [−0.6, −0.4]
    again = Evaluator(
        "evo_svpg/MountainCarSparse-v0", spec, 2, seed=0, deterministic=True,
        descriptor="extremes",
    ).episodes_of(theta)  # fmt: skip
    np.testing.assert_array_equal(again.descriptors, result.descriptors)


@pytest.mark.parametrize(
    ("env_id", "name"),
    [
        ("evo_svpg/MountainCarSparse-v0", "gep"),
        ("evo_svpg/MountainCarContinuousSparse-v0", "gep"),
        ("evo_svpg/MountainCarSparse-v0", "final_state"),
    ],
)
def test_sampler_descriptors_equal_each_episodes_own_trajectory(env_id, name):
    """Real rollouts (autoreset, 17-step limit, 13-step iterations): every described episode
    equals the descriptor computed from that episode's own states and actions alone."""
    n, e = 2, 3
    env = make_batched_env(env_id, n * e, max_episode_steps=17)
    continuous = env_id.endswith("ContinuousSparse-v0")
    spec = CONTINUOUS if continuous else DISCRETE
    sampler = Sampler(env, spec, n, seed=4, describer=Describer.for_env(name, spec, env))
    theta = spec.init_params(n, torch.Generator().manual_seed(0)).numpy()
    states = [[] for _ in range(n * e)]  # per env: states of its running episode
    efforts = [[] for _ in range(n * e)]
    expected, got = [], []
    for _ in range(4):
        rollout = sampler.collect(theta, 13)
        got.append(rollout.behaviours.descriptors)
        done = (rollout.terminated | rollout.truncated).reshape(13, n * e)
        done[-1] = sampler.running_length == 0  # true episode ends, not the iteration cut
        obs = rollout.obs.reshape(13, n * e, 2)
        final = rollout.final_obs.reshape(13, n * e, 2)
        u = effort(spec, rollout.actions).reshape(13, n * e)
        for t in range(13):
            for j in range(n * e):
                if not states[j]:
                    states[j].append(obs[t, j].copy())  # the buffers are reused
                states[j].append(final[t, j].copy())
                efforts[j].append(u[t, j])
                if done[t, j]:
                    xs = np.array(states[j], dtype=np.float64)
                    lo, hi = xs[:, 0].min(), xs[:, 0].max()
                    expected.append(
                        {
                            "gep": [hi, hi - lo, 0.1 * float(np.sum(np.square(efforts[j])))],
                            "final_state": list(xs[-1]),
                        }[name]
                    )
                    states[j], efforts[j] = [], []
    got = np.concatenate(got)
    assert len(got) >= 6  # several episodes ended, some of them across iteration boundaries
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-12, atol=1e-12)


def test_evaluator_descriptors_do_not_depend_on_compaction():
    spec = PolicySpec(2, 1, False, (8,), action_low=(-1.0,), action_high=(1.0,))
    theta = spec.init_params(12, torch.Generator().manual_seed(2)).numpy()
    env_id = "evo_svpg/MountainCarContinuousSparse-v0"
    options = {"descriptor": "gep", "max_episode_steps": 60}
    results = [
        Evaluator(env_id, spec, 2, seed=1, compact=compact, **options).episodes_of(theta)
        for compact in (True, False)
    ]
    np.testing.assert_array_equal(results[0].descriptors, results[1].descriptors)
    np.testing.assert_array_equal(results[0].returns, results[1].returns)
    assert results[0].steps == results[1].steps
