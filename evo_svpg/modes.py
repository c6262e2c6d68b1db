"""The one registry of modes: each a named composition of operators.

The CLI's choices, the README's mode table and the tests all read :data:`MODES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from evo_svpg.config import erl_elites, migrants_fit, replaces_at_least_one
from evo_svpg.operators import (
    AdamAscent,
    CollectRollouts,
    Every,
    Operator,
    OwnGradient,
    PolicyGradient,
    SteinDirection,
)
from evo_svpg.operators.erl import ERLPopulation
from evo_svpg.operators.novelty import NoveltyFitness, NoveltySignal
from evo_svpg.operators.selection import BottomOverwrite, TournamentReplacement
from evo_svpg.operators.variation import CEMAroundParticles, CMAESAroundParticles

# Random streams of the run seed (RunConfig.subseed): 0 params, 1 sampler, 2 critic,
# 3 evaluator, 4 QD success tests, 10+ operators.


@dataclass(frozen=True)
class Layout:
    """How a run's sample budget is split: ``policies × steps_per_policy`` per iteration."""

    policies: int
    steps_per_policy: int
    envs_per_policy: int


def _as_configured(cfg) -> Layout:
    return Layout(cfg.particles, cfg.steps_per_particle, cfg.envs_per_particle)


def _one_worker_whole_budget(cfg) -> Layout:
    """One policy gets all ``n × steps_per_particle`` steps (and ``n ×`` the envs)."""
    n = cfg.particles
    return Layout(1, n * cfg.steps_per_particle, n * cfg.envs_per_particle)


def svpg_operators(cfg) -> list[Operator]:
    """The SVPG step as operators: the prefix of every SVPG-based mode."""
    return [
        CollectRollouts(),
        PolicyGradient(),
        SteinDirection(cfg.alpha, cfg.bandwidth),
        AdamAscent(cfg.lr),
    ]


def _pure(cfg, spec) -> list[Operator]:
    return svpg_operators(cfg)


def _independent(cfg, spec) -> list[Operator]:
    return [CollectRollouts(), PolicyGradient(), OwnGradient(), AdamAscent(cfg.lr)]


def _cem(cfg, spec) -> list[Operator]:
    cem = CEMAroundParticles(
        cfg.cem_candidates, cfg.cem_elites, cfg.cem_init_var, cfg.cem_floor,
        cfg.cem_floor_limit, cfg.subseed(10),
    )  # fmt: skip
    return [*svpg_operators(cfg), cem]


def _cmaes(cfg, spec) -> list[Operator]:
    return [
        *svpg_operators(cfg),
        CMAESAroundParticles(cfg.cem_candidates, cfg.cmaes_sigma0, cfg.subseed(11)),
    ]


def _select(cfg, spec) -> list[Operator]:
    select = TournamentReplacement(
        cfg.select_fraction, cfg.select_tournament, cfg.select_mutation_std, cfg.subseed(12)
    )
    return [*svpg_operators(cfg), Every(cfg.select_every, select)]


def _evolution(cfg, spec) -> list[Operator]:
    overwrite = BottomOverwrite(cfg.evolution_fraction, cfg.evolution_noise, cfg.subseed(13))
    return [*svpg_operators(cfg), Every(cfg.evolution_every, overwrite)]


def _erl(cfg, spec) -> list[Operator]:
    population = ERLPopulation(
        spec, cfg.erl_population, erl_elites(cfg), cfg.erl_tournament, cfg.erl_sync_every,
        cfg.erl_migrants, cfg.subseed(14),
    )  # fmt: skip
    return [*svpg_operators(cfg), population]


def _novelty_signal(weight: Callable[..., float]) -> Callable[..., list[Operator]]:
    """SVPG whose estimator sees the novelty signal (``weight(cfg)``: 1 = novelty alone)."""

    def build(cfg, spec) -> list[Operator]:
        ops = svpg_operators(cfg)
        ops.insert(1, NoveltySignal(cfg.novelty_k, cfg.archive_size, weight=weight(cfg)))
        return ops

    return build


def _reinforce_only(cfg) -> None:
    """A bootstrapping critic would count a cut segment's novelty twice (its partial signal,
    then V(s_T) of the rest of the episode): the signal modes need REINFORCE."""
    if cfg.estimator != "reinforce":
        raise ValueError(
            f"estimator={cfg.estimator!r} is not supported by mode={cfg.mode!r}; choose "
            "estimator='reinforce' (its episode-level novelty signal is cut at the iteration "
            "boundary, which a2c's critic would bootstrap past)"
        )


def _select_novelty(cfg, spec) -> list[Operator]:
    *svpg, select = _select(cfg, spec)
    return [*svpg, NoveltyFitness(cfg.novelty_k, cfg.archive_size), select]


@dataclass(frozen=True)
class Mode:
    """``build(cfg, spec)`` returns the operators run once per iteration, in order."""

    description: str
    build: Callable[..., list[Operator]]
    layout: Callable[..., Layout] = _as_configured
    validate: Callable[..., None] = lambda cfg: None  # checks of this mode's own settings


MODES: dict[str, Mode] = {
    "pure": Mode("exact SVPG (seed eq. 6): kernel-smoothed ∇J/α plus repulsion, Adam", _pure),
    "independent": Mode("n independent policy-gradient workers, no kernel", _independent),
    "joint": Mode(
        "one worker with the whole budget (n × steps per iteration)",
        _independent,
        _one_worker_whole_budget,
    ),
    "cem-per-particle": Mode(
        "SVPG, then one sep-CEM per particle: the stepped particle and K mirrored samples "
        "around it are evaluated, the particle moves to the elites' weighted mean",
        _cem,
    ),
    "cmaes-per-particle": Mode(
        "SVPG, then one separable CMA-ES per particle (pycma ask/tell) centred on the stepped "
        "particle: the particle becomes the new CMA-ES mean",
        _cmaes,
    ),
    "select": Mode(
        "SVPG; every select_every iterations the worst fraction become mutated copies of "
        "DEAP tournament winners",
        _select,
        validate=lambda cfg: replaces_at_least_one(cfg, "select_fraction"),
    ),
    "evolution": Mode(
        "SVPG; every 20 iterations the bottom 25% become copies of random survivors + "
        "0.01·(U[0,1)−0.5) (the original code's unreleased option)",
        _evolution,
        validate=lambda cfg: replaces_at_least_one(cfg, "evolution_fraction"),
    ),
    "erl": Mode(
        "SVPG beside an ERL population (10 actors: elitism, tournaments, crossover, "
        "mutation); the best particles migrate into it every erl_sync_every iterations",
        _erl,
        validate=lambda cfg: migrants_fit(cfg),
    ),
    "novelty": Mode(
        "SVPG on novelty: each episode's return signal is its novelty (mean distance to the k "
        "nearest behaviours in the archive and population)",
        _novelty_signal(lambda cfg: 1.0),
        validate=_reinforce_only,
    ),
    "novelty-reward": Mode(
        "SVPG on novelty_weight·z(novelty) + (1 − novelty_weight)·z(return) per episode "
        "(NSR-style)",
        _novelty_signal(lambda cfg: cfg.novelty_weight),
        validate=_reinforce_only,
    ),
    "select-novelty": Mode(
        "select, with each particle's novelty as its fitness instead of its return",
        _select_novelty,
        validate=lambda cfg: replaces_at_least_one(cfg, "select_fraction"),
    ),
}


def describe_operators(ops: list[Operator]) -> str:
    """``"CollectRollouts → ... → Every(10, TournamentReplacement)"``."""

    def name(op) -> str:
        if isinstance(op, Every):
            return f"Every({op.period}, {name(op.op)})"
        return type(op).__name__

    return " → ".join(name(op) for op in ops)


def operator_names(mode: str) -> str:
    """The operators of ``mode`` with the default settings (the README table, `evo-svpg modes`)."""
    from evo_svpg.config import RunConfig
    from evo_svpg.policy import PolicySpec

    return describe_operators(MODES[mode].build(RunConfig(mode=mode), PolicySpec(4, 2, True)))
