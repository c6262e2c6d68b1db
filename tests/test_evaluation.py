"""The batched fresh-episode evaluator: honest step counts, compaction, seeding, resume."""

import logging

import gymnasium
import numpy as np
import pytest
import torch

from evo_svpg.evaluation import Evaluator
from evo_svpg.policy import PolicySpec, forward_numpy

CARTPOLE = PolicySpec(4, 2, True, (8,))
PENDULUM = PolicySpec(3, 1, False, (8,), action_low=(-2.0,), action_high=(2.0,))


def _policies(spec: PolicySpec, m: int, seed: int = 0) -> np.ndarray:
    return spec.init_params(m, torch.Generator().manual_seed(seed)).numpy() * 3


def test_cartpole_steps_spent_equal_the_total_return_of_the_episodes():
    evaluator = Evaluator("CartPole-v1", CARTPOLE, episodes=3, seed=0)
    returns, steps = evaluator.returns(_policies(CARTPOLE, 7))
    assert returns.shape == (7,)
    # CartPole pays 1 per step: the steps counted are exactly the evaluated episodes' steps
    assert steps == round(returns.sum() * 3)
    assert np.all((returns >= 8) & (returns <= 500))


def test_pendulum_episodes_run_to_the_time_limit():
    evaluator = Evaluator("Pendulum-v1", PENDULUM, episodes=2, seed=0)
    returns, steps = evaluator.returns(_policies(PENDULUM, 5))
    assert steps == 5 * 2 * 200
    assert np.all(returns < 0)


def test_evaluation_matches_gymnasium_for_a_deterministic_policy():
    """Pendulum starts vary, so compare the mean over many episodes of one fixed policy."""
    theta = _policies(PENDULUM, 1, seed=3)
    theta[:, -1] = -30.0  # log-std: actions are the mean to float precision
    evaluator = Evaluator("Pendulum-v1", PENDULUM, episodes=200, seed=1)
    ours, _ = evaluator.returns(theta)
    env = gymnasium.make("Pendulum-v1")
    parts = PENDULUM.split(theta)
    totals = []
    for episode in range(200):
        obs, _ = env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            action = forward_numpy(PENDULUM, parts, obs.reshape(1, 1, 3))[0, 0]
            obs, reward, terminated, truncated, _ = env.step(np.clip(action, -2, 2))
            total += reward
            done = terminated or truncated
        totals.append(total)
    # same policy, independent start states: the means agree within sampling error
    assert abs(ours[0] - np.mean(totals)) < 4 * np.std(totals) / np.sqrt(200) * np.sqrt(2)


def test_dropping_finished_policies_changes_the_cost_not_the_results(monkeypatch):
    import evo_svpg.evaluation

    rows = []
    forward = evo_svpg.evaluation.forward_numpy
    monkeypatch.setattr(
        evo_svpg.evaluation,
        "forward_numpy",
        lambda spec, parts, obs: rows.append(obs.shape[0]) or forward(spec, parts, obs),
    )
    theta = _policies(CARTPOLE, 8)
    compact = Evaluator("CartPole-v1", CARTPOLE, episodes=2, seed=5)
    full = Evaluator("CartPole-v1", CARTPOLE, episodes=2, seed=5, compact=False)
    for _ in range(3):
        rows.clear()
        ra, sa = compact.returns(theta)
        assert min(rows) < 8  # finished policies left the forward batch
        rows.clear()
        rb, sb = full.returns(theta)
        assert min(rows) == 8
        assert np.array_equal(ra, rb)
        assert sa == sb


def test_evaluator_state_roundtrip_continues_identically():
    theta = _policies(CARTPOLE, 3)
    a = Evaluator("CartPole-v1", CARTPOLE, episodes=2, seed=0)
    a.returns(theta)
    saved = a.state_dict()
    first = a.returns(theta)
    b = Evaluator("CartPole-v1", CARTPOLE, episodes=2, seed=42)
    b.load_state_dict(saved)
    second = b.returns(theta)
    assert np.array_equal(first[0], second[0])
    assert first[1] == second[1]


def test_bad_episode_count_is_refused():
    with pytest.raises(ValueError, match="episodes"):
        Evaluator("CartPole-v1", CARTPOLE, episodes=0, seed=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # gymnasium on CartPole-v0
def test_generic_env_resume_warns_and_does_not_replay_the_first_evaluations(caplog):
    theta = _policies(CARTPOLE, 3)
    first = Evaluator("CartPole-v0", CARTPOLE, episodes=4, seed=0)  # generic gymnasium path
    replayed = first.returns(theta)
    resumed = Evaluator("CartPole-v0", CARTPOLE, episodes=4, seed=0)
    resumed.load_state_dict(first.state_dict())
    with caplog.at_level(logging.WARNING, logger="evo_svpg"):
        again = resumed.returns(theta)
    assert "not bit-identical" in caplog.text
    assert not np.array_equal(again[0], replayed[0])
