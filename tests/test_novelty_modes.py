"""Novelty operators, QD records and the novelty modes end to end (CLI, resume, errors)."""

from __future__ import annotations

import copy
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from evo_svpg.behaviour import Describer, scale
from evo_svpg.callbacks import Callback
from evo_svpg.cli import main
from evo_svpg.config import RunConfig
from evo_svpg.engine import build_run
from evo_svpg.envs import make_batched_env
from evo_svpg.estimators import A2C, Reinforce
from evo_svpg.estimators.pg import particle_major, score_function_gradient
from evo_svpg.evaluation import EvalEpisodes
from evo_svpg.loop import train
from evo_svpg.novelty import knn_novelty
from evo_svpg.operators import PopulationState
from evo_svpg.operators.measure import MeasureQD
from evo_svpg.operators.novelty import NoveltyFitness, NoveltySignal
from evo_svpg.policy import PolicySpec
from evo_svpg.qd import GridArchive, Visitation
from evo_svpg.sampler import Sampler

SPARSE = "evo_svpg/MountainCarSparse-v0"
SPEC = PolicySpec(2, 3, True, (8,))
TINY_QD = [
    "--env", SPARSE, "--particles", "3", "--steps-per-particle", "120", "--envs-per-particle",
    "4", "--hidden-sizes", "8", "--iterations", "4", "--seed", "3", "--qd-every", "1",
    "--select-every", "2", "--select-fraction", "0.34", "--max-episode-steps", "25",
    "--qd-cells", "8",
]  # fmt: skip


def _rollout_state(n: int = 3, e: int = 4, steps: int = 60, seed: int = 0) -> PopulationState:
    """A real rollout of random policies on the sparse car (episodes cut at 25 steps)."""
    env = make_batched_env(SPARSE, n * e, max_episode_steps=25)
    sampler = Sampler(env, SPEC, n, seed, Describer.for_env("extremes", SPEC, env))
    params = SPEC.init_params(n, torch.Generator().manual_seed(seed))
    state = PopulationState(params)
    state.rollout = sampler.collect(params.numpy(), steps)
    return state


def _segment_signal_by_loop(rollout, ends: list[tuple[int, int, int]], signal) -> np.ndarray:
    """Reference: walk every env's steps; each step takes the signal of the segment it is in."""
    t_max, n, e = rollout.rewards.shape
    value = dict(zip(ends, signal, strict=True))
    out = np.full((t_max, n, e), np.nan)
    for p in range(n):
        for k in range(e):
            pending = []
            for t in range(t_max):
                pending.append(t)
                if (t, p, k) in value:
                    out[pending, p, k] = value[(t, p, k)]
                    pending = []
            assert not pending  # the iteration cut ends every env's last segment
    return out


def test_novelty_signal_credits_every_step_of_a_segment_with_its_novelty():
    state = _rollout_state()
    b = state.rollout.behaviours
    env_rewards = state.rollout.rewards.copy()
    op = NoveltySignal(k=3, archive_size=100)
    prior = np.random.default_rng(0).uniform(size=(5, 2))
    op._archive(2).add(prior)
    state = op(state, None)

    population = scale(b.particle_means(), b.bounds)
    cut_p, cut_e = np.nonzero(b.partial_valid)
    segments = np.concatenate([b.descriptors, b.partial[cut_p, cut_e]])
    # Each segment against the archive and the OTHER particles' behaviours (own one excluded).
    own = 5 + np.concatenate([b.particle, cut_p])  # index of its particle's row in the reference
    reference = np.concatenate([prior, population])
    expected = knn_novelty(scale(segments, b.bounds), reference, 3, exclude=own)
    assert not np.allclose(expected, knn_novelty(scale(segments, b.bounds), reference, 3))
    last = state.rollout.rewards.shape[0] - 1
    steps = np.concatenate([b.step, np.full(cut_p.size, last)])
    ends = list(zip(steps, np.concatenate([b.particle, cut_p]), np.concatenate([b.env, cut_e]),
                    strict=True))  # fmt: skip
    signal = state.rollout.episode_signal
    np.testing.assert_allclose(signal, _segment_signal_by_loop(state.rollout, ends, expected))
    assert len(np.unique(signal[:, 0, 0])) > 1  # several segments, each with its own value
    np.testing.assert_array_equal(state.rollout.rewards, env_rewards)  # the env's rewards stay
    assert b.descriptors.shape[0] >= 3 * 4 * 2  # 60 steps of 25-step episodes: 2 per env
    assert len(op.archive) == 5 + 3  # one entry per particle per iteration
    np.testing.assert_allclose(op.archive.descriptors[-3:], population)


def test_reinforce_weights_every_step_by_its_episode_signal():
    state = _rollout_state()
    b = state.rollout.behaviours
    NoveltySignal(k=3, archive_size=100)(state, None)
    rollout = state.rollout
    t_max, n, e = rollout.rewards.shape
    cut_p, cut_e = np.nonzero(b.partial_valid)
    ends = list(zip(np.concatenate([b.step, np.full(cut_p.size, t_max - 1)]),
                    np.concatenate([b.particle, cut_p]), np.concatenate([b.env, cut_e]),
                    strict=True))  # fmt: skip
    scores = [rollout.episode_signal[end] for end in ends]
    per_step = _segment_signal_by_loop(rollout, ends, scores)  # [T, n, E], by hand
    weights = np.empty((n, t_max * e))
    for p in range(n):  # REINFORCE's weights: the signal standardised over the particle's batch
        w = per_step[:, p, :].reshape(-1)
        weights[p] = (w - w.mean()) / (w.std() + 1e-8)
    obs, actions = particle_major(rollout.obs), particle_major(rollout.actions)
    expected = score_function_gradient(SPEC, state.params, obs, actions, weights)  # autograd
    grad = Reinforce(SPEC).gradient(state.params, rollout)
    np.testing.assert_allclose(grad.numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="episode-level signal"):
        A2C(SPEC, 3, seed=0).gradient(state.params, rollout)


def test_novelty_reward_mixes_standardised_novelty_and_return():
    pure, mixed = _rollout_state(seed=1), _rollout_state(seed=1)
    b = mixed.rollout.behaviours
    returns = np.concatenate([b.returns, b.partial_returns[b.partial_valid]])
    returns[::3] = 1.0  # some segments "reached the goal"
    b.returns[:] = returns[: b.returns.size]
    b.partial_returns[b.partial_valid] = returns[b.returns.size :]
    pure_b = pure.rollout.behaviours
    pure_b.returns[:] = b.returns
    NoveltySignal(k=3, archive_size=100)(pure, None)
    NoveltySignal(k=3, archive_size=100, weight=0.25)(mixed, None)

    def z(x):
        return (x - x.mean()) / (x.std() + 1e-8)

    cut = np.nonzero(b.partial_valid)
    last = pure.rollout.rewards.shape[0] - 1
    where_steps = np.concatenate([b.step, np.full(cut[0].size, last)])
    where = (where_steps, np.concatenate([b.particle, cut[0]]), np.concatenate([b.env, cut[1]]))
    novelty = pure.rollout.episode_signal[where]
    expected = 0.25 * z(novelty) + 0.75 * z(returns)
    np.testing.assert_allclose(mixed.rollout.episode_signal[where], expected, rtol=1e-5, atol=1e-6)


def test_novelty_fitness_excludes_each_particles_own_behaviour():
    state = _rollout_state(n=5)
    population = scale(state.rollout.behaviours.particle_means(), state.rollout.behaviours.bounds)
    op = NoveltyFitness(k=2, archive_size=100)
    state = op(state, None)
    np.testing.assert_allclose(
        state.fitness, knn_novelty(population, population, 2, exclude=np.arange(5))
    )
    restored = NoveltyFitness(k=2, archive_size=100)
    restored.load_state_dict(copy.deepcopy(op.state_dict()))
    np.testing.assert_array_equal(restored.archive.descriptors, op.archive.descriptors)


def _pumping_params(run, pumping: np.ndarray) -> None:
    """hidden (1,): h = tanh(g·v), logits = h·(−10, 0, 10); g = 1000 pumps, g = 0 idles."""
    params = run.state.params
    params.zero_()
    params[:, 1] = torch.tensor(np.where(pumping, 1000.0, 0.0), dtype=torch.float32)
    params[:, 3:6] = torch.tensor([-10.0, 0.0, 10.0])


def test_success_is_measured_on_the_deterministic_policies_and_not_charged():
    cfg = RunConfig(
        mode="independent", env=SPARSE, particles=4, steps_per_particle=100,
        envs_per_particle=2, hidden_sizes=(1,), iterations=2, qd_every=1, lr=1e-6,
    )  # fmt: skip
    run = build_run(cfg)
    _pumping_params(run, np.array([True, False, True, False]))
    records = []

    class Keep(Callback):
        def on_iteration(self, run, record):
            records.append(record)

    train(run, [Keep()])
    first = records[0].scalars
    assert first["success_fraction"] == 0.5
    assert first["success_any"] == 1.0
    assert first["first_success_env_steps"] == 4 * 100  # after the first iteration
    assert [first[f"det_return_{i}"] for i in range(4)] == [1.0, 0.0, 1.0, 0.0]
    # No charged episode ended in iteration 1 (50 steps per env: too few to reach the goal from
    # rest, and a 200-step limit): the tests' goal-reaching episodes are not in the QD records
    # of the learning budget ...
    assert (first["qd_coverage"], first["qd_score"]) == (0.0, 0.0)
    assert np.isnan(first["qd_best_return"])
    assert records[-1].env_steps == 2 * 4 * 100  # the tests' steps are not charged ...
    assert records[-1].scalars["measure_env_steps"] > 0  # ... but reported
    assert first["qd_test_score"] >= 1.0  # ... they fill a grid of their own
    assert 0 < first["qd_test_coverage"] < 1


def test_qd_grid_counts_only_charged_episodes_and_the_tests_fill_their_own():
    """Training and candidate episodes go to ``qd_*``; the free deterministic tests (which
    reach the goal here, in a cell no charged episode visits) only to ``qd_test_*``."""
    bounds = [(-1.2, 0.6), (-1.2, 0.6)]
    training = SimpleNamespace(  # two training episodes, one candidate evaluation below
        behaviours=SimpleNamespace(descriptors=np.array([[-1.0, -0.5], [-0.9, -0.4]]),
                                   returns=np.array([0.0, 0.0])),
        final_obs=np.zeros((1, 1, 1, 2), dtype=np.float32),
    )  # fmt: skip
    candidate = EvalEpisodes(np.array([[0.0]]), np.array([[False]]), 10, np.array([[[-0.5, 0.0]]]))
    test = EvalEpisodes(np.array([[1.0]]), np.array([[True]]), 7, np.array([[[-0.2, 0.55]]]))
    tester = SimpleNamespace(episodes_of=lambda theta: test)
    measure = MeasureQD(
        tester, 1, GridArchive(bounds, 4), GridArchive(bounds, 4), Visitation([-1, -1], [1, 1])
    )
    state = PopulationState(torch.zeros(1, 3), rollout=training)
    ctx = SimpleNamespace(evaluator=SimpleNamespace(take_log=lambda: [candidate]))
    scalars = measure(state, ctx).scalars
    charged = GridArchive(bounds, 4)
    charged.add(np.array([[-1.0, -0.5], [-0.9, -0.4], [-0.5, 0.0]]), np.zeros(3))
    assert (scalars["qd_coverage"], scalars["qd_score"]) == (charged.coverage, 0.0)
    assert scalars["qd_best_return"] == 0.0  # the goal was reached only in a free test
    assert (scalars["qd_test_coverage"], scalars["qd_test_score"]) == (1 / 16, 1.0)
    assert scalars["measure_env_steps"] == 7


@pytest.mark.parametrize("mode", ["novelty", "novelty-reward", "select-novelty", "erl"])
def test_novelty_and_qd_runs_resume_to_the_same_records(mode, tmp_path):
    args = ["--mode", mode, *TINY_QD, "--erl-population", "4", "--erl-migrants", "1"]
    assert main(["run", *args, "--out", str(tmp_path / "full")]) == 0
    part = tmp_path / "part"
    assert main(["run", *args, "--iterations", "3", "--out", str(part)]) == 0
    assert main(["run", "--resume", str(part), "--iterations", "4"]) == 0
    for name in ("metrics.csv", "scalars.csv"):
        assert (part / name).read_text() == (tmp_path / "full" / name).read_text(), name
    with np.load(part / "qd.npz") as a, np.load(tmp_path / "full" / "qd.npz") as b:
        assert set(a.files) == {
            "grid_best", "test_grid_best", "grid_bounds", "visitation", "visitation_range"
        }  # fmt: skip
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert b["visitation"].sum() == 4 * 3 * 120  # every training step, once
    scalars = (part / "scalars.csv").read_text()
    for name in ("qd_coverage", "qd_score", "qd_test_coverage", "success_fraction", "det_return_2"):
        assert f",{name}," in scalars
    if mode != "erl":
        name = "novelty_fitness_mean" if mode == "select-novelty" else "novelty_mean"
        assert f",{name}," in scalars
        assert ",archive_size," in scalars


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--descriptor", "speed"], r"invalid choice: 'speed'.*'extremes', 'final_state', 'gep'"),
        (["--novelty-weight", "1.5"], r"novelty_weight=1.5 must be a number in \(0, 1\)"),
        (["--archive-size", "0"], r"archive_size=0 must be a positive integer"),
        (["--novelty-k", "0"], r"novelty_k=0 must be a positive integer"),
        (["--qd-every", "-1"], r"qd_every=-1 must be an integer >= 0"),
        (
            ["--mode", "novelty", "--estimator", "a2c"],
            r"estimator='a2c' is not supported by mode='novelty'.*choose one of \['reinforce'\]",
        ),
        (["--max-episode-steps", "-5"], r"max_episode_steps=-5 must be an integer >= 0"),
        (["--obs-scaling", "bounds"], r"obs_scaling='bounds' needs finite observation bounds"),
        (["--qd-every", "1"], r"qd_every=1 records the \(x, v\).*needs bounded observations"),
        (
            ["--mode", "novelty", "--descriptor", "final_state"],
            r"descriptor='final_state' needs finite observation bounds",
        ),
    ],
)
def test_bad_novelty_and_qd_settings_get_clear_errors(args, message, capsys, tmp_path):
    """On CartPole (the default env), whose velocities are unbounded."""
    # An env that declares no (x, v) observation roles is refused by every descriptor.
    try:
        code = main(["run", *args, "--iterations", "1", "--out", str(tmp_path / "x")])
    except SystemExit as exc:  # argparse's own choice errors
        code = exc.code
    assert code == 2
    assert re.search(message, capsys.readouterr().err), args


def test_obs_scaling_maps_the_observation_box_to_the_unit_cube():
    run = build_run(RunConfig(env=SPARSE, obs_scaling="bounds", particles=2, iterations=1))
    spec = run.spec
    corners = np.array([[-1.2, -0.07], [0.6, 0.07]], dtype=np.float32)
    np.testing.assert_allclose(spec.network_input(corners), [[-1, -1], [1, 1]], atol=1e-6)
    torch_input = spec.network_input(torch.from_numpy(corners))
    np.testing.assert_allclose(torch_input.numpy(), [[-1, -1], [1, 1]], atol=1e-6)
