"""Selection operators (select, evolution, ERL's SSNE) and what clones inherit."""

import copy
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_svpg.operators import AdamAscent, Context, PopulationState
from evo_svpg.operators.erl import ERLPopulation, crossover, mutate
from evo_svpg.operators.selection import (
    BottomOverwrite,
    TournamentReplacement,
    overwrite_bottom,
    worst_first,
)
from evo_svpg.policy import PolicySpec
from evo_svpg.svgd import svpg_direction

SPEC = PolicySpec(3, 2, False, (4, 5), action_low=(-1.0, -1.0), action_high=(1.0, 1.0))


@given(
    fitness=st.lists(st.floats(-1e3, 1e3) | st.just(float("nan")), min_size=2, max_size=20),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**31),
)
@settings(max_examples=60, deadline=None)
def test_select_replaces_exactly_the_worst_fraction(fitness, fraction, seed):
    fitness = np.array(fitness)
    n = fitness.size
    k = int(fraction * n)
    params = torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, 3) * 100
    state = PopulationState(params.clone(), fitness=fitness)
    op = TournamentReplacement(fraction, tournament=3, mutation_std=0.01, seed=seed)
    random.seed(1)
    python_state = random.getstate()
    state = op(state, None)
    assert random.getstate() == python_state  # DEAP drew from the operator's private stream
    changed = (state.params != params).any(dim=1).numpy()
    worst = worst_first(fitness)[:k]
    assert set(np.flatnonzero(changed)) == set(worst.tolist())
    lineage = state.parents.numpy()
    assert np.all(lineage[~changed] == np.flatnonzero(~changed))
    for i in worst:  # a mutated copy of a surviving tournament winner
        parent = lineage[i]
        assert parent not in worst
        assert torch.allclose(state.params[i], params[parent], atol=0.1)


def test_nan_fitness_ranks_below_every_measured_one():
    assert worst_first(np.array([1.0, np.nan, -5.0, 3.0])).tolist() == [1, 2, 0, 3]


def test_evolution_reproduces_the_original_rule_on_a_hand_made_population():
    d = 1000
    params = torch.stack([torch.full((d,), float(v)) for v in (10, 20, 30, 40, 50, 60, 70, 80)])
    fitness = np.array([5.0, 1.0, 7.0, 8.0, 2.0, 6.0, 4.0, 3.0])  # bottom 25 %: rows 1 and 4
    new, bottom, parents = overwrite_bottom(params, fitness, 0.25, 0.01, np.random.default_rng(0))
    assert sorted(bottom.tolist()) == [1, 4]
    untouched = [0, 2, 3, 5, 6, 7]
    assert torch.equal(new[untouched], params[untouched])
    for row, parent in zip(bottom, parents, strict=True):
        assert parent in untouched
        noise = (new[row] - params[parent]).numpy()
        # 0.01 · (U[0,1) − 0.5): in [−0.005, 0.005), mean 0, variance 0.01² / 12
        assert noise.min() >= -0.005
        assert noise.max() < 0.005
        assert abs(noise.mean()) < 3 * 0.01 / np.sqrt(12 * d)
        assert np.isclose(noise.std(), 0.01 / np.sqrt(12), rtol=0.1)
    # survivors are chosen uniformly: over many draws every survivor is a parent
    rng = np.random.default_rng(1)
    drawn = {int(p) for _ in range(200) for p in overwrite_bottom(params, fitness, 0.25, 0, rng)[2]}
    assert drawn == set(untouched)


def test_evolution_operator_sets_lineage_and_exact_clones_keep_svpg_finite():
    params = torch.randn(8, 50)
    state = PopulationState(params.clone(), fitness=np.arange(8.0))
    state = BottomOverwrite(0.5, noise=0.0, seed=0)(state, None)  # exact clones
    lineage = state.parents.numpy()
    assert np.all(lineage[4:] == np.arange(4, 8))
    assert np.all(lineage[:4] >= 4)
    assert torch.equal(state.params[:4], params[lineage[:4]])
    direction = svpg_direction(state.params, torch.randn(8, 50), alpha=10.0)
    assert torch.isfinite(direction).all()
    identical = svpg_direction(params[:1].repeat(5, 1), torch.randn(5, 50), alpha=10.0)
    assert torch.isfinite(identical).all()


def test_clones_inherit_their_parents_adam_moments():
    adam = AdamAscent(lr=0.1)
    state = PopulationState(torch.zeros(3, 2), direction=torch.tensor([[1.0, 2], [3, 4], [5, 6]]))
    adam(state, None)
    m, v = adam.m.clone(), adam.v.clone()
    adam.reindex(torch.tensor([0, 0, 2]))
    assert torch.equal(adam.m[1], m[0])
    assert torch.equal(adam.v[1], v[0])
    assert torch.equal(adam.m[2], m[2])


def test_erl_mutation_touches_only_weight_matrices_of_the_given_rows():
    pop = SPEC.init_params(6, torch.Generator().manual_seed(0))
    pop[:, -2:] = 0.3  # log-std
    parts = SPEC.split(pop)
    for b in parts[1:-1:2]:
        b.fill_(0.7)
    before = pop.clone()
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        mutate(SPEC, pop, torch.tensor([1, 4]), generator)
    changed = (pop != before).any(dim=1)
    assert changed.tolist() == [False, True, False, False, True, False]
    after = SPEC.split(pop)
    for b in after[1:-1:2]:
        assert torch.all(b == 0.7)
    assert torch.all(pop[:, -2:] == 0.3)
    assert torch.isfinite(pop).all()
    assert pop.abs().max() <= 1e6


def test_erl_crossover_moves_whole_units_between_partners():
    pop = torch.cat([torch.zeros(1, SPEC.n_params), torch.ones(1, SPEC.n_params)])
    crossover(SPEC, pop, torch.tensor([0]), torch.tensor([1]), torch.Generator().manual_seed(3))
    parts = SPEC.split(pop)
    moved = 0
    for layer in range(len(SPEC.layer_sizes)):
        w, b = parts[2 * layer], parts[2 * layer + 1]
        for row in (0, 1):
            # every output unit (a column of W and its bias) is wholly from one parent
            unit_values = torch.cat([w[row], b[row]], dim=0)  # [in + 1, out]
            assert torch.all(unit_values == unit_values[:1])
            moved += int((unit_values[0] != row).sum())
    assert moved > 0
    assert torch.all(pop[0, -2:] == 0)
    assert torch.all(pop[1, -2:] == 1)


class ScoreByFirstWeight:
    """Fitness of an actor = its first parameter (deterministic, costs 1 step per actor)."""

    def returns(self, theta):
        return theta[:, 0].astype(np.float64), theta.shape[0]


def test_erl_keeps_elites_injects_the_best_particles_and_counts_their_fate():
    ctx = Context(SPEC, None, None, 0, ScoreByFirstWeight())
    op = ERLPopulation(SPEC, 10, elites=2, tournament=3, sync_every=1, migrants=2, seed=0)
    particles = torch.randn(5, SPEC.n_params)
    particles[:, 0] = torch.tensor([100.0, -5.0, 50.0, -7.0, 0.0])  # best: rows 0 and 2
    state = PopulationState(particles, fitness=particles[:, 0].double().numpy())
    state = op(state, ctx)
    # both migrants beat every random actor: they were the elites, kept unchanged
    assert op.outcomes == {"elite": 2, "selected": 0, "discarded": 0}
    assert state.scalars["erl_rl_elite_rate"] == 1.0
    assert state.scalars["erl_champion"] == 100.0
    kept = {tuple(row.tolist()) for row in op.pop[torch.from_numpy(op.protected)]}
    assert kept == {tuple(particles[0].tolist()), tuple(particles[2].tolist())}
    assert state.env_steps == 10
    # the next sync overwrites non-elites only: the champion survives it
    again = op(PopulationState(particles, fitness=state.fitness), ctx)
    assert again.scalars["erl_champion"] == 100.0
    assert op.outcomes["elite"] + op.outcomes["selected"] + op.outcomes["discarded"] == 4
    assert torch.isfinite(op.pop).all()


def test_erl_population_resumes_identically():
    ctx = Context(SPEC, None, None, 0, ScoreByFirstWeight())
    particles = torch.randn(4, SPEC.n_params)
    fitness = np.arange(4.0)

    def step(op, k):
        for _ in range(k):
            op(PopulationState(particles, fitness=fitness), ctx)

    a = ERLPopulation(SPEC, 6, 1, 3, 2, 1, seed=4)
    step(a, 3)
    b = ERLPopulation(SPEC, 6, 1, 3, 2, 1, seed=9)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as a checkpoint does: no shared tensors
    step(a, 3)
    step(b, 3)
    assert torch.equal(a.pop, b.pop)
    assert a.outcomes == b.outcomes


@pytest.mark.parametrize("op", ["select", "evolution"])
def test_selection_operators_resume_identically(op):
    def make(seed):
        if op == "select":
            return TournamentReplacement(0.5, 2, 0.1, seed)
        return BottomOverwrite(0.5, 0.01, seed)

    fitness = np.array([3.0, 1.0, 2.0, 0.0])
    a, b = make(1), make(2)
    pa = PopulationState(torch.randn(4, 3), fitness=fitness)
    a(pa, None)
    b.load_state_dict(a.state_dict())
    pb = PopulationState(pa.params.clone(), fitness=fitness)
    assert torch.equal(a(pa, None).params, b(pb, None).params)
