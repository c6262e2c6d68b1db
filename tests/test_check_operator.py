"""``evo_svpg.testing.check_operator``: every shipped operator keeps the contract, and operators
that break a rule are rejected with that rule named."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from evo_svpg.operators import Stateless, evaluate
from evo_svpg.registry import MODES, OPERATORS
from evo_svpg.testing import check_operator

# Small settings under which every operator acts within 3 iterations of 4 particles.
ACTIVE = {
    "select_every": 1, "select_fraction": 0.5, "evolution_every": 1, "evolution_fraction": 0.5,
    "erl_sync_every": 1, "erl_population": 5, "cem_candidates": 2, "cem_elites": 2,
}  # fmt: skip
SPARSE = "evo_svpg/MountainCarSparse-v0"  # bounded (x, v): what descriptors and QD records need


def _operators_of_every_mode() -> list[str]:
    names = {name for mode in MODES for name in MODES[mode].operators}
    return sorted(names | {"measure-qd"})


@pytest.mark.parametrize("name", _operators_of_every_mode())
def test_every_shipped_operator_passes(name):
    if "behaviour" in OPERATORS[name].sections:  # QD records on too: they share the evaluator
        check_operator(OPERATORS[name].build, env=SPARSE, settings={**ACTIVE, "qd_every": 1})
    else:
        check_operator(OPERATORS[name].build, settings=ACTIVE)


class Scale(Stateless):
    """Returns a *new* state (the engine must continue with it) with params scaled."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def __call__(self, state, ctx):
        return dataclasses.replace(state, params=state.params * self.factor)


def test_an_operator_returning_a_new_state_passes_and_is_used():
    check_operator(Scale(0.99))


class Truncate(Stateless):
    def __call__(self, state, ctx):
        return dataclasses.replace(state, params=state.params[:, :-1].contiguous())


class Poison(Stateless):
    def __call__(self, state, ctx):
        state.params[0, 0] = float("nan")
        return state


class SilentFitness(Stateless):  # writes fitness, declares only the default (params)
    def __call__(self, state, ctx):
        state.fitness = np.zeros(state.params.shape[0])
        return state


class UnpaidEvaluation(Stateless):
    needs = frozenset({"evaluator"})

    def __call__(self, state, ctx):
        ctx.evaluator.returns(state.params.numpy())  # steps taken, never added to env_steps
        return state


class PaidEvaluation(Stateless):
    needs = frozenset({"evaluator"})
    writes = frozenset({"fitness"})

    def __call__(self, state, ctx):
        state.fitness = evaluate(state, ctx, state.params)
        return state


class ForgetfulNoise:
    """Its generator is not in its state_dict: a resumed run draws other noise."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def __call__(self, state, ctx):
        noise = self.rng.normal(0, 1e-3, tuple(state.params.shape)).astype(np.float32)
        state.params.add_(torch.from_numpy(noise))
        return state

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class Momentum:
    """Per-particle state ``[n, d]`` without ``reindex``."""

    def __init__(self) -> None:
        self.velocity = None

    def __call__(self, state, ctx):
        if self.velocity is None:
            self.velocity = state.params.clone()  # differs from particle to particle
        self.velocity.mul_(0.5)
        return state

    def state_dict(self):
        return {"velocity": self.velocity}

    def load_state_dict(self, state):
        self.velocity = state["velocity"]


class WrongReindex(Momentum):
    def reindex(self, parents):
        pass  # keeps the rows where they were


class Unsaveable(Stateless):
    def state_dict(self):
        return {"rng": np.random.default_rng(0)}

    def __call__(self, state, ctx):
        return state


class ReadsTheSignal(Stateless):
    reads = frozenset({"episode_signal"})

    def __call__(self, state, ctx):
        return state


class ReturnsNothing(Stateless):
    def __call__(self, state, ctx):
        return None


@pytest.mark.parametrize(
    ("op", "rule", "detail"),
    [
        (Truncate(), "params", r"changed params from \(4, \d+\)"),
        (Poison(), "params", "non-finite params"),
        (SilentFitness(), "declared writes", r"changed \['fitness'\] but declares"),
        (UnpaidEvaluation(), "env steps", r"added 0 to env_steps but .* took \d+ steps"),
        (ForgetfulNoise(), "checkpoint", "differs from the uninterrupted run"),
        (Momentum(), "reindex", r"state\['velocity'\]: leading size n=4\) but has no reindex"),
        (WrongReindex(), "reindex", r"did not move state\['velocity'\] with its particles"),
        (Unsaveable(), "checkpoint", "data only: cannot checkpoint a Generator"),
        (ReadsTheSignal(), "composition", r"reads \['episode_signal'\], which no operator"),
        (ReturnsNothing(), "returns a state", "returned NoneType, not a PopulationState"),
    ],
)
def test_broken_operators_are_rejected_naming_the_rule(op, rule, detail):
    with pytest.raises(AssertionError, match=rf"rule '{rule}': .*{detail}"):
        check_operator(op)


def test_a_paying_evaluator_passes():
    check_operator(PaidEvaluation())


class InPlaceFitness(Stateless):  # changes fitness in place, declares it read, not written
    reads = frozenset({"params", "fitness"})

    def __call__(self, state, ctx):
        state.fitness[:] = 0.0
        return state


class ReadsUndeclared(Stateless):  # reads fitness, declares only params
    def __call__(self, state, ctx):
        best = int(state.fitness.argmax())
        state.params[best] *= 1.0
        return state


@pytest.mark.parametrize(
    ("op", "rule", "detail"),
    [
        (InPlaceFitness(), "declared writes", r"changed \['fitness'\]"),
        (ReadsUndeclared(), "declared reads", r"raised AttributeError.*\(\['direction', 'fitness'"),
    ],
)
def test_undeclared_reads_and_in_place_writes_are_caught(op, rule, detail):
    with pytest.raises(AssertionError, match=rf"rule '{rule}': .*{detail}"):
        check_operator(op)
