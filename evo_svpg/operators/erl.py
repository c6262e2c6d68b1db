"""An ERL-style evolutionary population beside the SVPG particles (Khadka & Tumer, NeurIPS 2018).

ERL's SSNE (``core/mod_neuro_evo.py``, commit 14d04a1) on a ``[P, d]`` population of policies
with the particles' architecture, batched over the population:

* evaluate all ``P`` actors (fresh episodes, one batched call), rank by return;
* the ``int(elite_fraction·P)`` best (at least 1) are elites, copied unchanged into free slots;
* ``deap.tools.selTournament`` (size 3) picks ``P − elites`` winners, kept once each;
* the other slots get a copy of (a random elite, a random winner) pair, then crossover;
* every non-elite is mutated with probability 0.9.

Mutation and crossover act on whole weight matrices (biases and the Gaussian log-std are not
mutated, as in ERL). Two deliberate batched simplifications: ERL draws ``c`` mutation positions
with replacement and applies them one by one; here each weight is mutated independently with
probability ``c / size`` (same expected count). ERL's crossover swaps ``c < 2·out`` random rows
one after another; here each output unit (its incoming weights and its bias) is copied a←b or
b←a with probability ``c / (2·out)`` each.

Every ``sync_every`` iterations the best ``migrants`` SVPG particles (ranked by this
iteration's rollout return, measured before their gradient step; the copies are the stepped
particles) are copied over the worst non-elite actors; ERL's "RL selection rate" counts,
at the next selection, whether each migrant became an elite, was selected, or was discarded.
Nothing flows back to the particles (ERL's RL learner only gains from the shared replay
buffer, which an on-policy SVPG cannot use).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from evo_svpg.operators.base import (
    Build,
    Context,
    PopulationState,
    evaluate,
    ranking_key,
    register_operator,
)
from evo_svpg.operators.selection import tournament_winners, worst_first
from evo_svpg.policy import PolicySpec
from evo_svpg.rng import PythonRandomState, private_python_random
from evo_svpg.settings import (
    Settings,
    fraction_count,
    open_unit,
    positive_int,
    register_settings,
    setting,
)

MUTATION_PROB = 0.9  # per non-elite actor
MUTATION_FRACTION = 0.1  # up to ceil(0.1 · size) weights per matrix
MUTATION_STRENGTH = 0.1  # w += N(0, (0.1 w)²)
SUPER_MUTATION_PROB, SUPER_MUTATION_STRENGTH = 0.05, 10.0  # w += N(0, (10 w)²)
RESET_PROB = 0.05  # w = N(0, 1)
WEIGHT_CLAMP = 1e6


@register_settings
@dataclass(frozen=True)
class ERLSettings(Settings):
    section, title = "erl", "an ERL population beside the particles"
    population: int = setting(
        10, "actors of the evolutionary population (ERL: 10)", check=positive_int
    )
    elite_fraction: float = setting(
        0.2, "elite fraction of that population (ERL: 0.1-0.3)", check=open_unit
    )
    tournament: int = setting(3, "tournament size of ERL's selection (ERL: 3)", check=positive_int)
    sync_every: int = setting(
        5, "iterations between copies of particles into it (ERL: 1-10)", check=positive_int
    )
    migrants: int = setting(
        2, "best SVPG particles copied over its worst members per sync", check=positive_int
    )

    @property
    def elites(self) -> int:
        """``int(fraction · size)``, at least 1 (as in ERL's code)."""
        return max(1, fraction_count(self.elite_fraction, self.population))

    def check_run(self, cfg) -> None:
        if self.migrants > self.population - self.elites:
            raise ValueError(
                f"erl_migrants={self.migrants} must be <= erl_population - elites = "
                f"{self.population - self.elites} (migrants never overwrite the elites)"
            )
        if self.migrants > cfg.particles:
            raise ValueError(
                f"erl_migrants={self.migrants} must be <= particles={cfg.particles} (each sync "
                "copies that many distinct particles)"
            )


def mutate(spec: PolicySpec, pop: Tensor, rows: Tensor, generator: torch.Generator) -> None:
    """ERL's ``mutate_inplace`` on the weight matrices of ``pop[rows]`` (in place)."""
    weights = spec.split(pop)[0 : 2 * len(spec.layer_sizes) : 2]  # [P, in, out] views
    for w in weights:
        p, size = rows.numel(), w[0].numel()
        shape = (p, *w.shape[1:])
        # Each matrix is mutated with probability min(2u, 1), u ~ U(0, 1), as in ERL.
        chosen = torch.rand(p, generator=generator) < 2 * torch.rand(p, generator=generator)
        count = torch.randint(0, math.ceil(MUTATION_FRACTION * size), (p,), generator=generator)
        rate = (count / size) * chosen
        hit = torch.rand(shape, generator=generator) < rate.view(p, 1, 1)
        kind = torch.rand(shape, generator=generator)
        gauss = torch.randn(shape, generator=generator)
        old = w[rows]
        super_mutation = kind < SUPER_MUTATION_PROB
        strength = torch.where(super_mutation, SUPER_MUTATION_STRENGTH, MUTATION_STRENGTH)
        reset = ~super_mutation & (kind < SUPER_MUTATION_PROB + RESET_PROB)
        new = torch.where(reset, gauss, old + gauss * strength * old)
        w[rows] = torch.where(hit, new, old).clamp(-WEIGHT_CLAMP, WEIGHT_CLAMP)


def crossover(spec: PolicySpec, pop: Tensor, a: Tensor, b: Tensor, generator: torch.Generator):
    """ERL's ``crossover_inplace`` for the pairs ``(a[k], b[k])``: units copied between them."""
    parts = spec.split(pop)
    for layer, (_, out) in enumerate(spec.layer_sizes):
        w, bias = parts[2 * layer], parts[2 * layer + 1]  # [P, in, out], [P, 1, out]
        pairs = a.numel()
        count = torch.randint(0, 2 * out, (pairs, 1), generator=generator)
        u = torch.rand(pairs, out, generator=generator)
        a_gets = u < count / (2 * out)
        b_gets = (u >= count / (2 * out)) & (u < count / out)
        for block in (w, bias):
            block_a, block_b = block[a].clone(), block[b].clone()
            block[a] = torch.where(a_gets.unsqueeze(1), block_b, block_a)
            block[b] = torch.where(b_gets.unsqueeze(1), block_a, block_b)


@dataclass
class ERLPopulation:
    """The evolutionary population of ``erl`` mode (see the module docstring)."""

    spec: PolicySpec
    size: int
    elites: int
    tournament: int
    sync_every: int
    migrants: int
    seed: int
    pop: Tensor | None = None  # [P, d]
    fitness: np.ndarray | None = None  # [P] at the last evaluation
    protected: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    injected: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    outcomes: dict[str, int] = field(
        default_factory=lambda: {"elite": 0, "selected": 0, "discarded": 0}
    )
    generator: torch.Generator = field(init=False)
    python_random: PythonRandomState = field(init=False)
    needs = frozenset({"evaluator"})
    reads, writes = frozenset({"params", "fitness"}), frozenset()

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)
        self.python_random = PythonRandomState(self.seed)

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        if self.pop is None:
            self.pop = self.spec.init_params(self.size, self.generator)
            self.fitness = np.full(self.size, np.nan)
        if state.current_iteration % self.sync_every == 0:
            self._migrate(state)
        self.fitness = evaluate(state, ctx, self.pop)
        self._epoch()
        rates = {k: v / max(1, sum(self.outcomes.values())) for k, v in self.outcomes.items()}
        state.scalars["erl_champion"] = float(self.fitness.max())
        state.scalars["erl_mean"] = float(self.fitness.mean())
        for outcome, rate in rates.items():
            state.scalars[f"erl_rl_{outcome}_rate"] = rate
        return state

    def _migrate(self, state: PopulationState) -> None:
        """The best SVPG particles overwrite the worst actors that are not fresh elites."""
        best_particles = worst_first(state.fitness)[::-1][: self.migrants].copy()
        slots = [i for i in worst_first(self.fitness) if i not in set(self.protected.tolist())]
        self.injected = np.array(slots[: self.migrants], dtype=np.int64)
        self.pop[torch.from_numpy(self.injected)] = state.params[torch.from_numpy(best_particles)]

    def _epoch(self) -> None:
        """SSNE selection and variation of ``pop`` by ``fitness`` (ERL's ``epoch``)."""
        key = ranking_key(self.fitness)
        rank = np.argsort(-key, kind="stable")
        elite_index = rank[: self.elites]
        winners = tournament_winners(
            np.arange(self.size), key, self.size - self.elites, self.tournament, self.python_random
        )
        offspring = sorted(set(winners.tolist()))
        for slot in self.injected.tolist():
            outcome = "elite" if slot in elite_index else "selected" if slot in offspring else None
            self.outcomes[outcome or "discarded"] += 1
        self.injected = np.zeros(0, dtype=np.int64)
        free = [i for i in range(self.size) if i not in offspring and i not in elite_index]
        with private_python_random(self.python_random):
            random.shuffle(free)  # as ERL shuffles its unselected slots
        new_elites = []
        for e in elite_index.tolist():  # elites are copied into free slots, never mutated
            slot = free.pop(0) if free else offspring.pop(0)
            self.pop[slot] = self.pop[e]
            new_elites.append(slot)
        with private_python_random(self.python_random):
            if len(free) % 2:
                free.append(random.choice(free))
            pairs = list(zip(free[0::2], free[1::2], strict=True))
            donors = offspring or new_elites
            sources = [(random.choice(new_elites), random.choice(donors)) for _ in pairs]
            mutate_mask = [random.random() < MUTATION_PROB for _ in range(self.size)]
        if pairs:
            a = torch.tensor([i for i, _ in pairs])
            b = torch.tensor([j for _, j in pairs])
            self.pop[a] = self.pop[torch.tensor([s for s, _ in sources])]
            self.pop[b] = self.pop[torch.tensor([s for _, s in sources])]
            crossover(self.spec, self.pop, a, b, self.generator)
        rows = [i for i in range(self.size) if i not in new_elites and mutate_mask[i]]
        if rows:
            mutate(self.spec, self.pop, torch.tensor(rows), self.generator)
        self.protected = np.array(new_elites, dtype=np.int64)

    def reported_policies(self) -> dict[str, Tensor]:
        """The champion of the last evaluation: its unmutated copy, the first elite slot."""
        if self.pop is None or not self.protected.size:
            return {}
        best = int(self.protected[0])
        return {"erl_champion": self.pop[best : best + 1]}

    def state_dict(self) -> dict:
        return {
            "pop": self.pop, "fitness": self.fitness, "protected": self.protected,
            "injected": self.injected, "outcomes": dict(self.outcomes),
            "generator": self.generator.get_state(), "python_random": self.python_random.state,
        }  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.pop, self.fitness = state["pop"], state["fitness"]
        self.protected, self.injected = state["protected"], state["injected"]
        self.outcomes = dict(state["outcomes"])
        self.generator.set_state(state["generator"])
        self.python_random.state = state["python_random"]


def _erl(b: Build) -> ERLPopulation:
    s = b.cfg["erl"]
    return ERLPopulation(
        b.spec, s.population, s.elites, s.tournament, s.sync_every, s.migrants, b.subseed(14)
    )


register_operator("erl", _erl, "an ERL population beside SVPG", ("erl", "evaluation"))
