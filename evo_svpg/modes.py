"""The modes: each a named composition of registered operators (:data:`~evo_svpg.registry.MODES`).

The CLI's choices, ``evo-svpg modes``, the README's mode table and the tests all read the
registry. A mode names its operators; their settings come from the run config's sections, so a
mode holds no settings of its own. A new mode is one ``MODES.add(...)`` line (README "Recipes").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import evo_svpg.operators  # noqa: F401  (the built-in operators register themselves)
from evo_svpg.operators.base import Every
from evo_svpg.registry import MODES, OPERATORS

# Random streams of the run seed (RunConfig.subseed): 0 params, 1 sampler, 2 critic,
# 3 evaluator, 4 QD success tests, 5 final evaluation, 10+ operators.


@dataclass(frozen=True)
class Layout:
    """How a run's sample budget is split: ``policies × steps_per_policy`` per iteration."""

    policies: int
    steps_per_policy: int
    envs_per_policy: int


def as_configured(cfg) -> Layout:
    return Layout(cfg.particles, cfg.steps_per_particle, cfg.envs_per_particle)


def one_worker_whole_budget(cfg) -> Layout:
    """One policy gets all ``n × steps_per_particle`` steps (and ``n ×`` the envs)."""
    n = cfg.particles
    return Layout(1, n * cfg.steps_per_particle, n * cfg.envs_per_particle)


@dataclass(frozen=True)
class Mode:
    """``operators``: registered operator names, run in this order once per iteration."""

    description: str
    operators: tuple[str, ...]
    layout: Callable[..., Layout] = as_configured

    def __post_init__(self) -> None:
        for name in self.operators:
            OPERATORS.get(name)  # a typo fails when the mode is registered


SVPG = ("collect", "policy-gradient", "stein", "adam")
INDEPENDENT = ("collect", "policy-gradient", "own-gradient", "adam")


def operator_names(cfg) -> list[str]:
    """The registered operators of ``cfg``'s run: its mode's, then the measures it enables."""
    measures = [
        name for name, entry in OPERATORS.items()
        if entry.appended_when is not None and entry.appended_when(cfg)
    ]  # fmt: skip
    return [*MODES.get(cfg.mode).operators, *measures]


for _name, _mode in {
    "pure": Mode("exact SVPG (seed eq. 6): kernel-smoothed ∇J/α plus repulsion, Adam", SVPG),
    "independent": Mode("n independent policy-gradient workers, no kernel", INDEPENDENT),
    "langevin": Mode(
        "n independent particles sampling exp(J/α) by preconditioned SGLD (pSGLD): a step "
        "along ∇J/α plus Gaussian noise, no kernel (the released code's extra baseline)",
        ("collect", "policy-gradient", "langevin"),
    ),
    "joint": Mode(
        "one worker with the whole budget (n × steps per iteration)",
        INDEPENDENT,
        one_worker_whole_budget,
    ),
    "cem-per-particle": Mode(
        "SVPG, then one sep-CEM per particle: the stepped particle and K mirrored samples "
        "around it are evaluated, the particle moves to the elites' weighted mean",
        (*SVPG, "cem"),
    ),
    "cmaes-per-particle": Mode(
        "SVPG, then one separable CMA-ES per particle (pycma ask/tell) centred on the stepped "
        "particle: the particle becomes the new CMA-ES mean",
        (*SVPG, "cmaes"),
    ),
    "select": Mode(
        "SVPG; every select_every iterations the worst fraction become mutated copies of "
        "DEAP tournament winners",
        (*SVPG, "select"),
    ),
    "evolution": Mode(
        "SVPG; every 20 iterations the bottom 25% become copies of random survivors + "
        "0.01·(U[0,1)−0.5) (the original code's unreleased option)",
        (*SVPG, "evolution"),
    ),
    "erl": Mode(
        "SVPG beside an ERL population (10 actors: elitism, tournaments, crossover, "
        "mutation); the best particles migrate into it every erl_sync_every iterations",
        (*SVPG, "erl"),
    ),
    "novelty": Mode(
        "SVPG on novelty: each episode's return signal is its novelty (mean distance to the k "
        "nearest behaviours in the archive and population)",
        ("collect", "novelty-signal", *SVPG[1:]),
    ),
    "novelty-reward": Mode(
        "SVPG on novelty_weight·z(novelty) + (1 − novelty_weight)·z(return) per episode "
        "(NSR-style)",
        ("collect", "novelty-reward-signal", *SVPG[1:]),
    ),
    "select-novelty": Mode(
        "select, with each particle's novelty as its fitness instead of its return",
        (*SVPG, "novelty-fitness", "select"),
    ),
}.items():
    MODES.add(_name, _mode)


def describe_operators(ops: list) -> str:
    """``"CollectRollouts → ... → Every(10, TournamentReplacement)"``: built operators."""

    def name(op) -> str:
        if isinstance(op, Every):
            return f"Every({op.period}, {name(op.op)})"
        return type(op).__name__

    return " → ".join(name(op) for op in ops)


def mode_operators(mode: str) -> str:
    """``"collect → policy-gradient → stein → adam"``: the registered operators of ``mode``
    (the README table and ``evo-svpg modes``)."""
    return " → ".join(MODES.get(mode).operators)
