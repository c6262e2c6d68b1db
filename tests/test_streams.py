"""Per-particle random streams: a shard of the population samples what the whole one does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_svpg.config import RunConfig
from evo_svpg.envs import make_batched_env
from evo_svpg.policy import PolicySpec
from evo_svpg.sampler import Sampler
from evo_svpg.streams import ParticleStreams, ResetDraws


def _normal(g, shape):
    return g.standard_normal(shape, dtype=np.float32)


@settings(max_examples=30, deadline=None)
@given(
    first=st.integers(0, 4),
    count=st.integers(1, 3),
    steps=st.lists(st.integers(0, 200), min_size=1, max_size=12, unique=True),
)
def test_a_shard_draws_the_population_draws_of_its_particles(first, count, steps):
    """Particle p's draws at step t depend on (seed, p, rollout, t) only: not on which other
    particles share the streams, nor on which steps were asked for before."""
    whole = ParticleStreams(seed=7, first=0, n=8, chunk=16)
    part = ParticleStreams(seed=7, first=first, n=count, chunk=16)
    for _ in range(2):
        whole.start(), part.start()
        every = [whole.at("x", t, (3, 2), _normal).copy() for t in range(max(steps) + 1)]
        for t in sorted(steps):
            np.testing.assert_array_equal(
                part.at("x", t, (3, 2), _normal), every[t][first : first + count]
            )
    part.at("x", max(steps) + 16, (3, 2), _normal)  # a later block: earlier steps are gone
    with pytest.raises(RuntimeError, match="after a later step"):
        part.at("x", max(steps), (3, 2), _normal)


def test_reset_draws_give_each_reset_slot_its_particles_row():
    streams = ParticleStreams(seed=3, first=0, n=2, chunk=4)
    streams.start()
    draws = ResetDraws(streams, envs_per_particle=3)
    draws.step, draws.rows = 5, np.array([1, 4])
    got = draws.uniform(-1.0, 1.0, size=(2, 2))
    table = streams.at("reset:random:2", 5, (3, 2), None).reshape(6, 2)
    np.testing.assert_array_equal(got, -1.0 + 2.0 * table[[1, 4]])
    with pytest.raises(ValueError, match="one row per reset env"):
        draws.random((3, 2))
    with pytest.raises(RuntimeError, match=r"reset:random:2 drawn twice at step 5"):
        draws.random((2, 2))  # the same rows again: it would repeat them


GENERIC = "CartPole-v0"  # gymnasium's own CartPole-v0: the generic path


def _rollouts(env_id, first, count, theta, whole_episodes, steps):
    spec = _spec(env_id)
    env = make_batched_env(env_id, count * 3, max_episode_steps=60)
    sampler = Sampler(env, spec, count, seed=11, whole_episodes=whole_episodes,
                      random_streams="per-particle", first_particle=first)  # fmt: skip
    out = []
    for _ in range(3):
        r = sampler.collect(theta[first : first + count], steps)
        out.append({
            "obs": r.obs.copy(), "actions": r.actions.copy(), "rewards": r.rewards.copy(),
            "terminated": r.terminated.copy(), "returns": [x.copy() for x in r.episode_returns],
            "steps": r.steps_taken,
            "valid": None if r.valid is None else r.valid.copy(),
        })  # fmt: skip
    return out


def _spec(env_id):
    env = make_batched_env(env_id, 1)
    obs, act = env.single_observation_space, env.single_action_space
    if hasattr(act, "n"):
        return PolicySpec(obs.shape[0], int(act.n), True, (8,), "tanh")
    return PolicySpec(obs.shape[0], act.shape[0], False, (8,), "tanh",
                      tuple(act.low.tolist()), tuple(act.high.tolist()))  # fmt: skip


@pytest.mark.filterwarnings("ignore:.*CartPole-v0 is out of date")
@pytest.mark.parametrize("whole_episodes", [False, True])
@pytest.mark.parametrize(
    "env_id", ["CartPole-v1", "Pendulum-v1", "evo_svpg/DoublePendulum-v0", "Acrobot-v1", GENERIC]
)
def test_shards_sample_exactly_what_the_whole_population_samples(env_id, whole_episodes):
    """Particles 0-1 and 2-4 sampled apart (two workers) give the rollout of all five."""
    if whole_episodes and env_id not in ("CartPole-v1", GENERIC):
        pytest.skip("whole episodes: CartPole (fast path) and a generic env are enough")
    spec = _spec(env_id)
    theta = spec.init_params(5, torch.Generator().manual_seed(0)).numpy()
    steps = 40
    whole = _rollouts(env_id, 0, 5, theta, whole_episodes, steps)
    parts = [_rollouts(env_id, a, b - a, theta, whole_episodes, steps) for a, b in [(0, 2), (2, 5)]]
    for i, w in enumerate(whole):
        lo, hi = parts[0][i], parts[1][i]
        assert w["steps"] == lo["steps"] + hi["steps"]
        for a, b in zip(w["returns"], lo["returns"] + hi["returns"], strict=True):
            np.testing.assert_array_equal(a, b)
        for key in ("obs", "actions", "rewards", "terminated"):
            joined = [_steps_of(lo, key, p) for p in range(2)] + [
                _steps_of(hi, key, p) for p in range(3)
            ]
            for p in range(5):
                np.testing.assert_array_equal(_steps_of(w, key, p), joined[p], err_msg=key)


def _steps_of(rollout: dict, key: str, p: int) -> np.ndarray:
    """Particle ``p``'s counted steps of ``key`` (all of them, or the valid ones)."""
    values = rollout[key][:, p]
    return values if rollout["valid"] is None else values[rollout["valid"][:, p]]


def test_a_saved_config_without_random_streams_is_a_shared_stream_run():
    """Runs saved before the setting existed drew from one stream: reading them back must not
    turn them into per-particle runs (their numbers would not be reproduced)."""
    new = RunConfig()
    assert new["sampling"].random_streams == "per-particle"
    saved = new.to_dict()
    del saved["random_streams"]
    assert RunConfig.from_saved(saved)["sampling"].random_streams == "shared"
    assert RunConfig.from_dict(saved)["sampling"].random_streams == "per-particle"
    with pytest.raises(ValueError, match=r"random_streams='one'.*per-particle.*shared"):
        RunConfig(random_streams="one")
