"""What an estimator declares about itself, and how it registers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from evo_svpg.registry import ESTIMATORS, ComponentEntry


@dataclass(frozen=True)
class Capabilities:
    """``action_spaces``: the policy heads it can differentiate (``discrete``, ``continuous``);
    ``episode_signal``: whether it can weight steps by a rollout's per-episode signal
    (novelty) instead of the rewards; ``whole_episodes``: whether it honours a rollout's
    ``valid`` mask (whole-episode sampling). ``build_run`` refuses a run that needs what it
    lacks."""

    action_spaces: frozenset[str] = frozenset({"discrete", "continuous"})
    episode_signal: bool = False
    why_no_episode_signal: str = ""
    whole_episodes: bool = False


def register_estimator(
    name: str,
    build: Callable,
    capabilities: Capabilities,
    doc: str,
    sections: tuple[str, ...] = (),
) -> None:
    """``build(b)`` (``b``: :class:`evo_svpg.operators.base.Build`) returns the estimator."""
    ESTIMATORS.add(name, ComponentEntry(name, build, sections, doc, capabilities))
