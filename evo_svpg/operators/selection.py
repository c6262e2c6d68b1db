"""Fitness-based replacement of particles: ``select`` (tournaments) and ``evolution`` (original).

Both rank by ``state.fitness`` (set by :class:`~evo_svpg.operators.CollectRollouts`: each
particle's mean return over this iteration's episodes, measured *before* this iteration's
gradient step, as in the original SVPG code). A particle with no finished episode ranks last.
They overwrite rows of ``params`` in place and set ``state.parents`` so that the clones inherit
their parent's optimiser state (see :mod:`evo_svpg.operators.base`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from deap import tools
from torch import Tensor

from evo_svpg.operators.base import (
    Build,
    Context,
    Every,
    PopulationState,
    ranking_key,
    register_operator,
)
from evo_svpg.rng import PythonRandomState, private_python_random
from evo_svpg.settings import (
    Settings,
    finite_nonnegative,
    finite_positive,
    fraction_count,
    open_unit,
    positive_int,
    register_settings,
    replaces_at_least_one,
    setting,
)


@register_settings
@dataclass(frozen=True)
class SelectSettings(Settings):
    section, title = "select", "tournament replacement of the worst particles"
    every: int = setting(10, "iterations between selections (select)", check=positive_int)
    fraction: float = setting(
        0.25, "worst fraction replaced at each selection (select)", check=open_unit
    )
    tournament: int = setting(
        3, "tournament size among the survivors (select; ERL: 3)", check=positive_int
    )
    mutation_std: float = setting(
        0.005, "std of the Gaussian mutation of copies (select)", check=finite_positive
    )

    def check_run(self, cfg) -> None:
        replaces_at_least_one("select_fraction", self.fraction, cfg.particles)


@register_settings
@dataclass(frozen=True)
class EvolutionSettings(Settings):
    section, title = "evolution", "the original SVPG code's bottom overwrite"
    every: int = setting(
        20, "iterations between replacements (original SVPG code: 20)", check=positive_int
    )
    fraction: float = setting(
        0.25, "bottom fraction overwritten (original SVPG code: 0.25)", check=open_unit
    )
    noise: float = setting(
        0.01, "c in copy + c·(U[0,1) − 0.5) (original SVPG code: 0.01)",
        check=finite_nonnegative,
    )  # fmt: skip

    def check_run(self, cfg) -> None:
        replaces_at_least_one("evolution_fraction", self.fraction, cfg.particles)


class _Individual(NamedTuple):
    """What DEAP's selection operators need: something with a comparable ``fitness``."""

    index: int
    fitness: float


def tournament_winners(
    candidates: np.ndarray, fitness: np.ndarray, k: int, size: int, own: PythonRandomState
) -> np.ndarray:
    """``k`` winners of ``deap.tools.selTournament`` among ``candidates`` (indices into fitness).

    DEAP draws from Python's global ``random``; the draw runs on the caller's private state.
    """
    individuals = [_Individual(int(i), float(fitness[i])) for i in candidates]
    with private_python_random(own):
        chosen = tools.selTournament(individuals, k=k, tournsize=size)
    return np.array([ind.index for ind in chosen], dtype=np.int64)


def worst_first(fitness: np.ndarray) -> np.ndarray:
    """Indices sorted from worst to best (NaN first; ties keep index order)."""
    return np.argsort(ranking_key(fitness), kind="stable")


@dataclass
class TournamentReplacement:
    """The worst ``fraction`` of particles become mutated copies of tournament winners.

    ``int(fraction · n)`` particles are replaced; each replacement is the winner of a
    ``deap.tools.selTournament`` of ``tournament`` survivors (drawn with replacement) plus
    ``N(0, mutation_std²)`` noise on every parameter (DEAP's ``mutGaussian`` with ``indpb=1``,
    done as one tensor op instead of its per-gene Python loop).
    """

    fraction: float
    tournament: int
    mutation_std: float
    seed: int
    python_random: PythonRandomState = field(init=False)
    generator: torch.Generator = field(init=False)
    reads, writes = frozenset({"params", "fitness"}), frozenset({"params", "parents"})

    def __post_init__(self) -> None:
        self.python_random = PythonRandomState(self.seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        n = state.params.shape[0]
        order = worst_first(state.fitness)
        k = fraction_count(self.fraction, n)
        losers, survivors = order[:k], order[k:]
        winners = tournament_winners(
            survivors, ranking_key(state.fitness), losers.size, self.tournament, self.python_random
        )
        noise = torch.randn(
            losers.size, state.params.shape[1], generator=self.generator, dtype=state.params.dtype
        )
        state.params[torch.from_numpy(losers)] = state.params[torch.from_numpy(winners)] + (
            self.mutation_std * noise
        )
        state.parents = _lineage(n, losers, winners)
        state.scalars["selection_replaced"] = float(losers.size)
        return state

    def state_dict(self) -> dict:
        return {"python_random": self.python_random.state, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.python_random.state = state["python_random"]
        self.generator.set_state(state["generator"])


def overwrite_bottom(
    params: Tensor, fitness: np.ndarray, fraction: float, noise: float, rng: np.random.Generator
) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """The original SVPG code's ``evolution`` rule, as a pure function.

    The bottom ``int(fraction · n)`` particles by fitness are each overwritten by a copy of a
    survivor chosen uniformly at random, plus ``noise · (U[0,1) − 0.5)`` on every parameter.
    Returns ``(new params [n, d], replaced indices, their parents)``.
    """
    n, d = params.shape
    order = worst_first(fitness)
    k = fraction_count(fraction, n)
    bottom, survivors = order[:k], order[k:]
    parents = rng.choice(survivors, size=bottom.size, replace=True)
    jitter = noise * (rng.random((bottom.size, d), dtype=np.float32) - 0.5)
    new = params.clone()
    new[torch.from_numpy(bottom)] = params[torch.from_numpy(parents)] + torch.from_numpy(jitter)
    return new, bottom, parents


@dataclass
class BottomOverwrite:
    """``evolution``: :func:`overwrite_bottom` in place (run it through ``Every(20, ...)``)."""

    fraction: float
    noise: float
    seed: int
    rng: np.random.Generator = field(init=False)
    reads, writes = frozenset({"params", "fitness"}), frozenset({"params", "parents"})

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        new, bottom, parents = overwrite_bottom(
            state.params, state.fitness, self.fraction, self.noise, self.rng
        )
        state.params.copy_(new)
        state.parents = _lineage(state.params.shape[0], bottom, parents)
        state.scalars["selection_replaced"] = float(bottom.size)
        return state

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def _lineage(n: int, replaced: np.ndarray, parents: np.ndarray) -> Tensor:
    lineage = np.arange(n)
    lineage[replaced] = parents
    return torch.from_numpy(lineage)


def _select(b: Build) -> Every:
    s = b.cfg["select"]
    return Every(
        s.every, TournamentReplacement(s.fraction, s.tournament, s.mutation_std, b.subseed(12))
    )


def _evolution(b: Build) -> Every:
    s = b.cfg["evolution"]
    return Every(s.every, BottomOverwrite(s.fraction, s.noise, b.subseed(13)))


register_operator("select", _select, "worst particles ← mutated tournament winners", ("select",))
register_operator("evolution", _evolution, "bottom ← copies of survivors", ("evolution",))
