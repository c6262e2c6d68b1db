"""Novelty operators: SVPG driven by how *new* a particle's behaviour is, not (only) its return.

Behaviours are the rollout's episode descriptors (:mod:`evo_svpg.behaviour`), scaled to [0, 1] per
dimension. Novelty is the NS-ES one (:mod:`evo_svpg.novelty`): mean distance to the k nearest
neighbours among the archive and this iteration's behaviours of the *other* particles (a particle's
behaviour is its mean episode descriptor). After novelty is computed the particles' behaviours join
the archive, one entry per particle per iteration (NS-ES adds its updated parent's mean behaviour).

* :class:`NoveltySignal` sets the rollout's ``episode_signal``: every step of an episode segment
  carries that segment's signal, which REINFORCE uses as the step's weight in place of the
  discounted return-to-go (an episode-level signal credited to the whole episode, as NS-ES /
  NSR-ES score whole episodes; paying it on the last step alone and discounting would leave the
  first step of a 200-step episode 0.13× of it). A2C is refused (its ``Capabilities`` declare
  no episode-level signals, which ``build_run`` checks): its critic would bootstrap past a cut
  segment that was already paid its partial novelty.
  ``weight = 1`` is pure novelty (``novelty``); ``0 < weight < 1`` mixes
  ``weight · z(novelty) + (1 − weight) · z(return)``, both standardised over the population's
  segments of the iteration (``novelty-reward``, NSR-style). Segments the iteration boundary cut
  are scored on their trajectory so far. Returns in ``metrics.csv`` stay the env's returns.
* :class:`NoveltyFitness` sets ``state.fitness`` to each particle's novelty (its own entry
  excluded), for selection operators (``select-novelty``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from evo_svpg.behaviour import Behaviours, scale
from evo_svpg.novelty import NoveltyArchive
from evo_svpg.operators.base import Build, Context, PopulationState, register_operator
from evo_svpg.settings import Settings, is_number, positive_int, register_settings, setting


def spread_over_segments(
    shape: tuple[int, int, int],
    steps: np.ndarray,
    particles: np.ndarray,
    envs: np.ndarray,
    signal: np.ndarray,
) -> np.ndarray:
    """``[T, n, E]``: every step carries the signal of the segment it belongs to.

    Segment ``k`` ends at step ``steps[k]`` in env ``(particles[k], envs[k])`` and covers the
    steps after that env's previous segment end. Every env must have a segment ending at
    ``T − 1`` (an episode end or the iteration cut).
    """
    t_max = shape[0]
    at_end = np.full(shape, np.nan)
    at_end[steps, particles, envs] = signal
    end = np.where(np.isnan(at_end), t_max, np.arange(t_max)[:, None, None])
    next_end = np.minimum.accumulate(end[::-1], axis=0)[::-1]  # first end at or after t
    if (next_end == t_max).any():
        raise ValueError("every env needs a segment ending at its last step")
    return np.take_along_axis(at_end, next_end, axis=0)


def _standardize(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-8)


def _behaviours(state: PopulationState) -> Behaviours:
    behaviours = state.rollout.behaviours
    if behaviours is None:
        raise RuntimeError("novelty operators need a sampler built with a describer")
    return behaviours


@dataclass
class _ArchiveHolder:
    k: int
    archive_size: int
    archive: NoveltyArchive | None = field(default=None, init=False)
    needs = frozenset({"behaviours"})
    reads = frozenset({"rollout"})

    def _archive(self, dim: int) -> NoveltyArchive:
        if self.archive is None:
            self.archive = NoveltyArchive(dim, self.k, self.archive_size)
        return self.archive

    def _population(self, b: Behaviours) -> tuple[np.ndarray, NoveltyArchive]:
        """This iteration's particle behaviours ``[n, D]`` scaled to [0, 1], and the archive."""
        population = scale(b.particle_means(), b.bounds)
        return population, self._archive(population.shape[1])

    def state_dict(self) -> dict:
        if self.archive is None:
            return {"dim": None}
        return {"dim": self.archive.dim, "archive": self.archive.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.archive = None
        if state["dim"] is not None:
            self._archive(state["dim"]).load_state_dict(state["archive"])


@dataclass
class NoveltySignal(_ArchiveHolder):
    """Rewards of the rollout ← per-segment novelty (or its mix with the return)."""

    weight: float = 1.0
    writes = frozenset({"episode_signal"})

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        b = _behaviours(state)
        rollout = state.rollout
        population, archive = self._population(b)
        cut_p, cut_e = np.nonzero(b.partial_valid)
        queries = scale(np.concatenate([b.descriptors, b.partial[cut_p, cut_e]]), b.bounds)
        # A segment is compared with the archive and the *other* particles' behaviours: its own
        # particle's mean would reward a particle for inconsistent episodes.
        novelty = archive.novelty(queries, population, exclude=np.concatenate([b.particle, cut_p]))
        returns = np.concatenate([b.returns, b.partial_returns[cut_p, cut_e]])
        if self.weight < 1:
            signal = self.weight * _standardize(novelty) + (1 - self.weight) * _standardize(returns)
        else:
            signal = novelty
        last = rollout.shape[0] - 1
        steps = np.concatenate([b.step, np.full(cut_p.size, last)])
        particles = np.concatenate([b.particle, cut_p])
        envs = np.concatenate([b.env, cut_e])
        rollout.episode_signal = spread_over_segments(rollout.shape, steps, particles, envs, signal)
        archive.add(population)
        state.scalars["novelty_mean"] = float(novelty.mean()) if novelty.size else float("nan")
        state.scalars["archive_size"] = float(len(archive))
        return state


@dataclass
class NoveltyFitness(_ArchiveHolder):
    """``state.fitness [n]`` ← novelty of each particle's behaviour (own entry excluded)."""

    writes = frozenset({"fitness"})

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        b = _behaviours(state)
        population, archive = self._population(b)
        n = population.shape[0]
        state.fitness = archive.novelty(population, population, exclude=np.arange(n))
        archive.add(population)
        state.scalars["novelty_fitness_mean"] = float(state.fitness.mean())
        state.scalars["archive_size"] = float(len(archive))
        return state


def _novelty_weight(key: str, value: float) -> None:
    if not is_number(value) or not 0 < value < 1:
        raise ValueError(
            f"{key}={value!r} must be a number in (0, 1) (the mode `novelty` is weight 1, "
            "`pure` is weight 0)"
        )


@register_settings
@dataclass(frozen=True)
class NoveltySettings(Settings):
    section, title = "novelty", "novelty search (NS-ES's kNN novelty over an archive)"
    k: int = setting(
        10, "nearest neighbours averaged by novelty (NS-ES: 10)", key="novelty_k",
        check=positive_int,
    )  # fmt: skip
    archive_size: int = setting(
        100_000, "novelty archive bound; the oldest entry goes first", key="archive_size",
        check=positive_int,
    )  # fmt: skip
    weight: float = setting(
        0.5, "weight of z(novelty) vs z(return) (novelty-reward)", key="novelty_weight",
        check=_novelty_weight,
    )  # fmt: skip


def _register(name: str, build: Callable[[Build], object], doc: str) -> None:
    register_operator(name, build, doc, ("novelty", "behaviour"))


_register(
    "novelty-signal",
    lambda b: NoveltySignal(b.cfg["novelty"].k, b.cfg["novelty"].archive_size, weight=1.0),
    "each episode's signal ← its novelty",
)
_register(
    "novelty-reward-signal",
    lambda b: NoveltySignal(
        b.cfg["novelty"].k, b.cfg["novelty"].archive_size, weight=b.cfg["novelty"].weight
    ),
    "each episode's signal ← w·z(novelty) + (1 − w)·z(return)",
)
_register(
    "novelty-fitness",
    lambda b: NoveltyFitness(b.cfg["novelty"].k, b.cfg["novelty"].archive_size),
    "fitness ← each particle's novelty",
)
