"""Novelty operators, QD records and the novelty modes end to end (CLI, resume, errors)."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

from evo_svpg.behaviour import Describer, scale
from evo_svpg.cli import main
from evo_svpg.config import RunConfig
from evo_svpg.engine import build_run, train
from evo_svpg.envs import make_batched_env
from evo_svpg.novelty import knn_novelty
from evo_svpg.operators import PopulationState
from evo_svpg.operators.novelty import NoveltyFitness, NoveltySignal
from evo_svpg.policy import PolicySpec
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


def test_novelty_signal_puts_each_segments_novelty_on_its_last_step():
    state = _rollout_state()
    b = state.rollout.behaviours
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
    rewards = state.rollout.rewards
    steps = np.concatenate([b.step, np.full(cut_p.size, rewards.shape[0] - 1)])
    where = (steps, np.concatenate([b.particle, cut_p]), np.concatenate([b.env, cut_e]))
    np.testing.assert_allclose(rewards[where], expected, rtol=1e-6)
    mask = np.zeros(rewards.shape, dtype=bool)
    mask[where] = True
    assert (rewards[~mask] == 0).all()
    assert b.descriptors.shape[0] >= 3 * 4 * 2  # 60 steps of 25-step episodes: 2 per env
    assert len(op.archive) == 5 + 3  # one entry per particle per iteration
    np.testing.assert_allclose(op.archive.descriptors[-3:], population)


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
    novelty = pure.rollout.rewards[where].astype(np.float64)
    expected = 0.25 * z(novelty) + 0.75 * z(returns)
    np.testing.assert_allclose(mixed.rollout.rewards[where], expected, rtol=1e-5, atol=1e-6)


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
        mode="independent", env=SPARSE, particles=4, steps_per_particle=200,
        envs_per_particle=2, hidden_sizes=(1,), iterations=2, qd_every=1, lr=1e-6,
    )  # fmt: skip
    run = build_run(cfg)
    _pumping_params(run, np.array([True, False, True, False]))
    records = []

    class Keep:
        def on_start(self, run): ...
        def on_iteration(self, run, record):
            records.append(record)

        def on_end(self, run): ...
        def on_interrupt(self, run, exc): ...

    train(run, [Keep()])
    first = records[0].scalars
    assert first["success_fraction"] == 0.5
    assert first["success_any"] == 1.0
    assert first["first_success_env_steps"] == 4 * 200  # after the first iteration
    assert [first[f"det_return_{i}"] for i in range(4)] == [1.0, 0.0, 1.0, 0.0]
    assert first["qd_best_return"] == 1.0
    assert first["qd_score"] >= 1.0  # offset 0: each cell with a goal-reaching episode adds 1
    assert 0 < first["qd_coverage"] < 1
    assert records[-1].env_steps == 2 * 4 * 200  # the tests' steps are not charged ...
    assert records[-1].scalars["measure_env_steps"] > 0  # ... but reported


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
        assert set(a.files) == {"grid_best", "grid_bounds", "visitation", "visitation_range"}
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert b["visitation"].sum() == 4 * 3 * 120  # every training step, once
    scalars = (part / "scalars.csv").read_text()
    for name in ("qd_coverage", "qd_score", "success_fraction", "det_return_2"):
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
            r"estimator='a2c' is not supported by mode='novelty'; choose estimator='reinforce'",
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
