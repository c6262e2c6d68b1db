"""Whole-episode sampling (rllab's): fresh episodes each iteration, none cut, at least
``steps_per_particle`` counted steps per particle, idle steps never counted or learned from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evo_svpg.cli import main
from evo_svpg.config import RunConfig
from evo_svpg.engine import build_run
from evo_svpg.envs import make_batched_env
from evo_svpg.estimators.pg import particle_major, returns_to_go, score_gradient, standardize
from evo_svpg.estimators.reinforce import Reinforce
from evo_svpg.loop import run_iteration
from evo_svpg.policy import PolicySpec
from evo_svpg.sampler import Sampler
from evo_svpg.testing import check_estimator

N, E, STEPS_PER_ENV = 3, 4, 25
NEED = STEPS_PER_ENV * E


def _rollout(seed: int = 0, env_id: str = "CartPole-v1"):
    env = make_batched_env(env_id, N * E, seed=seed)
    spec = PolicySpec(env.single_observation_space.shape[0], 2, True, (8,))
    theta = spec.init_params(N, torch.Generator().manual_seed(seed))
    sampler = Sampler(env, spec, N, seed=seed, whole_episodes=True)
    sampler.collect(theta.numpy(), STEPS_PER_ENV)  # a second iteration starts afresh too
    return spec, theta, sampler.collect(theta.numpy(), STEPS_PER_ENV)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_episode_is_whole_and_each_particle_has_just_enough(seed):
    _, _, r = _rollout(seed)
    valid, done = r.valid, r.terminated | r.truncated
    assert not (r.rewards[~valid]).any()
    assert not done[~valid].any()
    for i in range(N):
        taken = valid[:, i].sum(axis=1).cumsum()  # the particle's counted steps through row t
        assert taken[-1] >= NEED
        for e in range(E):
            steps = np.flatnonzero(valid[:, i, e])
            assert (steps == np.arange(steps.size)).all()  # active, then idle for good
            assert done[steps[-1], i, e]  # its last episode ended: nothing is cut
            assert r.step_in_episode[0, i, e] == 0  # the iteration began with a reset
            ends = np.flatnonzero(done[:, i, e])
            for end in ends[:-1]:  # it went on after an episode only while the particle lacked
                assert taken[end] < NEED
            assert taken[ends[-1]] >= NEED  # and stopped once it had enough
        lengths, returns = r.episode_lengths[i], r.episode_returns[i]
        assert lengths.sum() == valid[:, i].sum()
        assert returns.sum() == pytest.approx(r.rewards[:, i].sum())


def test_reinforce_learns_from_the_valid_steps_alone():
    spec, theta, r = _rollout(3)
    got = Reinforce(spec, gamma=0.99).gradient(theta, r)
    returns = particle_major(returns_to_go(r.rewards, r.terminated | r.truncated, 0.99))
    valid = particle_major(r.valid)
    obs, actions = particle_major(r.obs), particle_major(r.actions)
    for i in range(N):
        keep = valid[i]
        w = standardize(returns[i : i + 1, keep])
        acts = [a[i : i + 1, keep] for a in r.activations]
        expected = score_gradient(
            spec, theta[i : i + 1], obs[i : i + 1, keep], actions[i : i + 1, keep], acts, w
        )
        torch.testing.assert_close(got[i : i + 1], expected, rtol=1e-5, atol=1e-7)


def test_env_steps_count_the_episodes_steps_exactly():
    run = build_run(RunConfig(sampling="whole-episodes", particles=N, envs_per_particle=E,
                              steps_per_particle=NEED, hidden_sizes=(8,)))  # fmt: skip
    for _ in range(2):
        record = run_iteration(run)
        in_episodes = int((record.episodes * record.episode_length_mean).sum())
        assert record.iteration_env_steps == in_episodes >= N * NEED


@pytest.mark.parametrize("estimator", ["reinforce", "linear-baseline"])
def test_whole_episode_runs_checkpoint_and_resume_exactly(estimator):
    check_estimator(estimator, settings={"sampling": "whole-episodes"})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"estimator": "a2c"}, r"estimator='a2c' does not support sampling='whole-episodes'"),
        ({"mode": "novelty"}, r"cannot describe behaviours, which mode='novelty' needs"),
        ({"sampling": "whole", "mode": "pure"}, r"sampling='whole' is not valid; choose one of"),
    ],
)
def test_what_whole_episodes_cannot_do_is_refused(keys, message):
    with pytest.raises(ValueError, match=message):
        build_run(
            RunConfig(
                **{
                    "sampling": "whole-episodes",
                    "particles": 2,
                    "steps_per_particle": 40,
                    "envs_per_particle": 2,
                    **keys,
                }
            )
        )


def test_the_cli_runs_and_resumes_whole_episode_sampling(tmp_path):
    args = ["--sampling", "whole-episodes", "--estimator", "linear-baseline", "--particles", "3",
            "--steps-per-particle", "200", "--envs-per-particle", "4", "--hidden-sizes", "8",
            "--iterations", "4", "--final-eval-episodes", "1"]  # fmt: skip
    assert main(["run", *args, "--out", str(tmp_path / "full")]) == 0
    assert main(["run", *args, "--iterations", "2", "--out", str(tmp_path / "part")]) == 0
    assert main(["run", "--resume", str(tmp_path / "part"), "--iterations", "4"]) == 0
    for name in ("metrics.csv", "scalars.csv"):
        full = (tmp_path / "full" / name).read_text()
        assert (tmp_path / "part" / name).read_text() == full
