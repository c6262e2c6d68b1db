"""The one registry of modes: each a named composition of operators.

The CLI's choices, the README's mode table and the tests all read :data:`MODES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from evo_svpg.operators import (
    AdamAscent,
    CollectRollouts,
    Operator,
    OwnGradient,
    PolicyGradient,
    SteinDirection,
)


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


def _svpg(cfg) -> list[Operator]:
    return [
        CollectRollouts(),
        PolicyGradient(),
        SteinDirection(cfg.alpha, cfg.bandwidth),
        AdamAscent(cfg.lr),
    ]


def _independent(cfg) -> list[Operator]:
    return [CollectRollouts(), PolicyGradient(), OwnGradient(), AdamAscent(cfg.lr)]


@dataclass(frozen=True)
class Mode:
    description: str
    build: Callable[..., list[Operator]]
    layout: Callable[..., Layout] = _as_configured


MODES: dict[str, Mode] = {
    "pure": Mode("exact SVPG (seed eq. 6): kernel-smoothed ∇J/α plus repulsion, Adam", _svpg),
    "independent": Mode("n independent policy-gradient workers, no kernel", _independent),
    "joint": Mode(
        "one worker with the whole budget (n × steps per iteration)",
        _independent,
        _one_worker_whole_budget,
    ),
}
