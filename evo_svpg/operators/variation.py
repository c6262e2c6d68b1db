"""Variation around each particle: one search distribution per particle, evaluated together.

Both operators run after the SVPG step. They evaluate the stepped particle together with ``K``
sampled candidates around it, for all ``n`` particles in ONE batched evaluation of ``n·(K+1)``
policies, and move each particle to its search distribution's new mean. Adam moments are kept
as they are: the particle's lineage does not change, it only moves.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import cma
import numpy as np
import torch
from torch import Tensor

from evo_svpg.cem import mirrored_samples, next_floor, sep_cem_update
from evo_svpg.cma_state import capture_state, restore_state
from evo_svpg.operators.base import Build, Context, PopulationState, evaluate, register_operator
from evo_svpg.rng import Randn, numpy_random_state, private_numpy_random
from evo_svpg.settings import (
    Settings,
    finite_nonnegative,
    finite_positive,
    positive_int,
    register_settings,
    setting,
)


@register_settings
@dataclass(frozen=True)
class CEMSettings(Settings):
    """Sources of the defaults: CEM-RL (Pourchot & Sigaud 2019)."""

    section, title = "cem", "CEM (and CMA-ES) around each particle"
    candidates: int = setting(
        8, "K sampled candidates per particle, cem/cmaes (even)", check=positive_int
    )
    elites: int = setting(
        4, "elites among the K+1 evaluated (CEM-RL: half the population)", check=positive_int
    )
    init_var: float = setting(
        1e-3, "initial per-parameter variance (CEM-RL sigma_init)", check=finite_positive
    )
    floor: float = setting(
        1e-3, "initial variance floor; ×0.95 toward cem_floor_limit (CEM-RL)",
        check=finite_positive,
    )  # fmt: skip
    floor_limit: float = setting(
        1e-5, "limit of the decaying variance floor (CEM-RL)", check=finite_nonnegative
    )

    def check_run(self, cfg) -> None:
        if self.candidates % 2:
            raise ValueError(
                f"cem_candidates={self.candidates} must be even (mirrored sampling draws "
                "candidates in ± pairs)"
            )
        if self.elites > self.candidates + 1:
            raise ValueError(
                f"cem_elites={self.elites} must be <= cem_candidates + 1 = "
                f"{self.candidates + 1} (the candidates plus the particle itself)"
            )


@register_settings
@dataclass(frozen=True)
class CMAESSettings(Settings):
    section, title = "cmaes", "separable CMA-ES around each particle (K: cem_candidates)"
    sigma0: float = setting(
        0.0316, "initial CMA-ES step size (√ of cem_init_var by default)", check=finite_positive
    )

    def check_run(self, cfg) -> None:
        CEMSettings.check_run(cfg["cem"], cfg)  # K mirrored as CEM's


@dataclass
class CEMAroundParticles:
    """One sep-CEM per particle (CEM-RL's, see :mod:`evo_svpg.cem`), mean = the particle.

    Each iteration: ``K`` mirrored samples around the SVPG-stepped particle ``μ_i``; ``μ_i`` and
    the samples are evaluated (``K+1`` policies per particle); ``μ_i`` becomes the log-rank
    weighted mean of the ``elites`` best and ``var_i`` their spread plus the decaying floor.
    """

    candidates: int
    elites: int
    init_var: float
    floor: float
    floor_limit: float
    seed: int
    var: Tensor | None = None  # [n, d] per-particle diagonal variance
    generator: torch.Generator = field(init=False)
    needs = frozenset({"evaluator"})

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        mean = state.params
        n, d = mean.shape
        if self.var is None:
            self.var = torch.full((n, d), self.init_var, dtype=mean.dtype)
        samples = mirrored_samples(mean, self.var, self.candidates, self.generator)
        population = torch.cat([mean.unsqueeze(1), samples], dim=1)  # [n, K+1, d]; 0 = particle
        m = population.shape[1]
        fitness = evaluate(state, ctx, population.reshape(n * m, d)).reshape(n, m)
        self.floor = next_floor(self.floor, self.floor_limit)  # CEM-RL decays, then adds it
        new_mean, self.var, elite_index = sep_cem_update(
            mean, population, torch.from_numpy(fitness), self.elites, self.floor
        )
        state.params.copy_(new_mean)
        state.scalars["cem_std_mean"] = float(self.var.sqrt().mean())
        state.scalars["cem_floor"] = self.floor
        # How often the gradient step itself is among the elites (index 0 is the particle).
        state.scalars["cem_particle_elite_rate"] = float((elite_index == 0).any(1).double().mean())
        state.scalars["cem_best_candidate"] = float(fitness.max())
        return state

    def reindex(self, parents: Tensor) -> None:
        if self.var is not None:
            self.var = self.var[parents]

    def state_dict(self) -> dict:
        return {"var": self.var, "floor": self.floor, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.var, self.floor = state["var"], state["floor"]
        self.generator.set_state(state["generator"])


@dataclass
class CMAESAroundParticles:
    """One separable CMA-ES per particle, from the ``cma`` package through ask/tell.

    ``CMA_diagonal=True`` (sep-CMA-ES): a full covariance at d ≈ 7,000 would be a 7k×7k matrix
    with an O(d³) eigendecomposition per particle. Each iteration, as in
    :class:`CEMAroundParticles`, the CMA-ES is centred on the SVPG-stepped particle (its
    ``mean`` set to it before ``ask``; pycma's ``tell`` measures the mean shift, and so its
    evolution paths, from there: they follow the CMA-ES's own moves, not the gradient's), the
    particle is ``inject``-ed as a candidate, ``ask`` returns it with ``K`` samples around it,
    all ``n·(K+1)`` are evaluated in one batch, ``tell`` updates the distribution, and the
    particle becomes the new CMA-ES mean. pycma picks the step-size rule: TPA for d ≥ 300
    (every seed-architecture policy; two of the K samples are then its probes along the last
    mean shift), CSA below (with K ≤ 4 it also adds a selective mirror).

    pycma draws its normals from a private generator (its ``randn`` option) seeded from the run
    seed; ``verbose=-9`` silences it; numpy's global random state is never touched (calls also
    run inside :func:`private_numpy_random` in case an optional pycma path uses it).
    """

    candidates: int
    sigma0: float
    seed: int
    strategies: list = field(default_factory=list)  # n pycma CMAEvolutionStrategy
    numpy_state: dict = field(init=False)
    needs = frozenset({"evaluator"})

    def __post_init__(self) -> None:
        self.numpy_state = numpy_random_state(self.seed)

    def _start(self, params: np.ndarray) -> None:
        self.strategies = self._build(params)

    def _build(self, params: np.ndarray) -> list:
        """One fresh CMA-ES per row of ``params`` (its initial mean), seeded from the run seed."""
        seeds = np.random.SeedSequence([self.seed, 1]).generate_state(len(params))
        options = {
            "CMA_diagonal": True,
            "popsize": self.candidates + 1,
            "seed": np.nan,  # no seeding of np.random; normals come from `randn`
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
        }
        # pycma archives (hashes) every sent solution to map phenotypes back to genotypes; with
        # no transformation they are the same, and the archive cost ~25 % of ask/tell at d ≈ 7k.
        archive = cma.evolution_strategy.archive_sent_solutions
        cma.evolution_strategy.archive_sent_solutions = False
        try:
            return [
                cma.CMAEvolutionStrategy(x0, self.sigma0, {**options, "randn": Randn(int(s))})
                for x0, s in zip(params.astype(np.float64), seeds, strict=True)
            ]
        finally:
            cma.evolution_strategy.archive_sent_solutions = archive

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        params = state.params.numpy()
        n, d = params.shape
        head = params[:, :8].copy()  # first coordinates of the injected particles
        m = self.candidates + 1
        population = np.empty((n, m, d), dtype=np.float32)  # what the evaluator gets
        with private_numpy_random(self.numpy_state):
            if not self.strategies:
                self._start(params)
            asked = []  # pycma's own solution lists, handed back to `tell` unchanged
            for i, (es, particle) in enumerate(zip(self.strategies, params, strict=True)):
                es.mean = particle.astype(np.float64)  # samples around the stepped particle
                es.inject([es.mean.copy()], force=True)
                asked.append(es.ask())
                for j, x in enumerate(asked[-1]):
                    population[i, j] = x
        fitness = evaluate(state, ctx, torch.from_numpy(population.reshape(n * m, d)))
        fitness = fitness.reshape(n, m)
        with private_numpy_random(self.numpy_state):
            for es, x, f in zip(self.strategies, asked, fitness, strict=True):
                es.tell(x, list(-f))  # pycma minimises
            for i, es in enumerate(self.strategies):
                params[i] = es.mean
        # Where the injected particle ranked; pycma may place it after its TPA probes or mirror.
        # (8 coordinates identify it: a sample matching the particle there has probability 0.)
        injected = np.abs(population[:, :, :8] - head[:, None, :])
        injected = injected.max(axis=2).argmin(axis=1)
        rank = (fitness > fitness[np.arange(n), injected][:, None]).sum(axis=1)
        state.scalars["cmaes_sigma_mean"] = float(np.mean([es.sigma for es in self.strategies]))
        state.scalars["cmaes_particle_rank_mean"] = float(rank.mean())
        state.scalars["cmaes_best_candidate"] = float(fitness.max())
        return state

    def reindex(self, parents: Tensor) -> None:
        if self.strategies:
            old = self.strategies
            self.strategies = [
                old[i] if p == i else copy.deepcopy(old[p]) for i, p in enumerate(parents.tolist())
            ]

    def state_dict(self) -> dict:
        """Plain data only (no pickled objects): see :mod:`evo_svpg.cma_state`."""
        return {
            "strategies": [capture_state(es, "", {}) for es in self.strategies],
            "dimension": self.strategies[0].N if self.strategies else None,
            "pycma_version": cma.__version__,
            "numpy_state": copy.deepcopy(self.numpy_state),
        }

    def load_state_dict(self, state: dict) -> None:
        """Build the strategies as :meth:`_start` does, then restore their state into them.

        Raises ValueError if the saved state does not fit what this pycma version builds.
        """
        saved = state["strategies"]
        if not isinstance(saved, list):
            raise ValueError(
                "cmaes state: 'strategies' is not a list of plain-data states (a checkpoint "
                "from before they were saved as data, with pickled pycma objects, is not loaded)"
            )
        numpy_state = copy.deepcopy(state["numpy_state"])
        strategies = []
        if saved:
            dimension = int(state["dimension"])
            # Construction does not draw from np.random, but would run inside this if it did.
            with private_numpy_random(copy.deepcopy(numpy_state)):
                strategies = self._build(np.zeros((len(saved), dimension)))
            versions = f"saved with pycma {state.get('pycma_version')}, this is {cma.__version__}"
            for i, (es, es_state) in enumerate(zip(strategies, saved, strict=True)):
                where = f"(particle {i}; {versions})"
                try:
                    restore_state(es_state, es, "", {})
                except ValueError as e:
                    raise ValueError(f"{e} {where}") from e
                except (KeyError, TypeError, AttributeError) as e:  # a malformed encoding
                    raise ValueError(
                        f"cmaes state: malformed, {type(e).__name__} {e} {where}"
                    ) from e
        self.strategies = strategies
        self.numpy_state = numpy_state


def _cem(b: Build) -> CEMAroundParticles:
    s = b.cfg["cem"]
    return CEMAroundParticles(
        s.candidates, s.elites, s.init_var, s.floor, s.floor_limit, b.subseed(10)
    )


def _cmaes(b: Build) -> CMAESAroundParticles:
    return CMAESAroundParticles(b.cfg["cem"].candidates, b.cfg["cmaes"].sigma0, b.subseed(11))


register_operator("cem", _cem, "sep-CEM around each particle", ("cem", "evaluation"))
register_operator(
    "cmaes", _cmaes, "sep-CMA-ES around each particle", ("cem", "cmaes", "evaluation")
)
