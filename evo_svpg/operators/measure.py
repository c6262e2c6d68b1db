"""Quality-diversity measurements of a run: observed, never fed back into learning.

:class:`MeasureQD` runs after a mode's operators (the engine appends it when ``qd_every > 0``)
and keeps three records over the whole run:

* a grid archive over the descriptor space (:class:`~evo_svpg.qd.GridArchive`) offered every
  episode the run pays for: training episodes and candidate/population evaluations (CEM, CMA-ES,
  ERL). Its coverage, QD-score and best return go to ``scalars.csv`` every iteration. The free
  deterministic tests below fill a grid of their own (``qd_test_coverage``, ``qd_test_score``),
  so comparisons at equal env steps count only what each mode paid for;
* the (x, v) visitation counts of every training step's end state
  (:class:`~evo_svpg.qd.Visitation`);
* every ``qd_every`` iterations, each particle's *deterministic* policy (argmax / mean action) runs
  ``qd_eval_episodes`` fresh episodes: ``success_fraction`` is the fraction of particles that reach
  a terminal state (MountainCar: the goal) in any of them, ``success_any`` whether one does,
  ``det_return_<i>`` particle i's mean return. (On tasks whose terminal states are failures, e.g.
  CartPole, "success" would mean failure: these records are for goal tasks.)
  ``first_success_env_steps`` is the run's ``env_steps`` at the first test that any particle passed.

The deterministic tests' env steps are *not* charged to ``env_steps`` (they are measurement,
like a held-out test set; modes are compared at equal learning budgets) and are reported as
``measure_env_steps``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from evo_svpg.behaviour import Describer, bounded
from evo_svpg.evaluation import EvalEpisodes, Evaluator, EvaluatorSpec
from evo_svpg.operators.base import Build, Context, PopulationState, register_operator
from evo_svpg.qd import GridArchive, Visitation
from evo_svpg.settings import (
    Settings,
    finite,
    nonnegative_int,
    positive_int,
    register_settings,
    setting,
)

logger = logging.getLogger("evo_svpg")


@register_settings
@dataclass(frozen=True)
class QDSettings(Settings):
    section, title = "qd", "quality-diversity records (observed, never fed back)"
    every: int = setting(
        0, "iterations between deterministic success tests; 0: no QD records",
        check=nonnegative_int("0: off/default"),
    )  # fmt: skip
    eval_episodes: int = setting(
        1, "episodes per particle in a deterministic success test", check=positive_int
    )
    cells: int = setting(32, "grid-archive cells per descriptor dimension", check=positive_int)
    offset: float = setting(0.0, "QD-score offset: Σ over filled cells of (best − offset)",
                            check=finite)  # fmt: skip


@dataclass
class MeasureQD:
    evaluator: Evaluator  # deterministic, with a descriptor, its own random streams
    every: int
    grid: GridArchive  # over the descriptor's bounds: charged episodes only
    test_grid: GridArchive  # same bounds: the deterministic test episodes
    visitation: Visitation  # over the observation bounds of (x, v)
    position_velocity: list[int] = field(default_factory=lambda: [0, 1])  # observation indices
    tester: EvaluatorSpec | None = None  # what ``evaluator`` was built from
    first_success_env_steps: int = field(default=-1, init=False)
    measure_env_steps: int = field(default=0, init=False)
    needs = frozenset({"behaviours", "evaluation_log", "final_obs"})
    reads, writes = frozenset({"params", "rollout"}), frozenset()
    arrays_file = "qd.npz"  # written by the OperatorArrays callback with each checkpoint

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        behaviours = state.rollout.behaviours
        self.grid.add(behaviours.descriptors, behaviours.returns)
        for episodes in ctx.evaluator.take_log():
            self._offer(self.grid, episodes)
        # Each step's end state: terminal (goal) states are in final_obs only.
        self.visitation.add(state.rollout.final_obs[..., self.position_velocity].reshape(-1, 2))
        if state.current_iteration % self.every == 0:
            self._test(state)
        s = state.scalars
        s["qd_coverage"] = self.grid.coverage
        s["qd_score"] = self.grid.qd_score
        s["qd_best_return"] = self.grid.best
        s["qd_test_coverage"] = self.test_grid.coverage
        s["qd_test_score"] = self.test_grid.qd_score
        if self.first_success_env_steps >= 0:
            s["first_success_env_steps"] = float(self.first_success_env_steps)
        s["measure_env_steps"] = float(self.measure_env_steps)
        return state

    @staticmethod
    def _offer(grid: GridArchive, episodes: EvalEpisodes) -> None:
        dim = episodes.descriptors.shape[-1]
        grid.add(episodes.descriptors.reshape(-1, dim), episodes.returns.reshape(-1))

    def _test(self, state: PopulationState) -> None:
        episodes = self.evaluator.episodes_of(state.params.numpy())
        self.measure_env_steps += episodes.steps
        self._offer(self.test_grid, episodes)
        success = episodes.terminated.any(axis=1)
        if success.any() and self.first_success_env_steps < 0:
            self.first_success_env_steps = state.env_steps
        s = state.scalars
        s["success_fraction"] = float(success.mean())
        s["success_any"] = float(success.any())
        for i, value in enumerate(episodes.returns.mean(axis=1)):
            s[f"det_return_{i}"] = float(value)

    def arrays(self) -> dict[str, np.ndarray]:
        """What the run leaves on disk in ``qd.npz`` (for figures across runs)."""
        return {  # copies: a snapshot of this iteration
            "grid_best": self.grid.best_per_cell(),
            "test_grid_best": self.test_grid.best_per_cell(),
            "grid_bounds": np.stack([self.grid.low, self.grid.high], axis=1),
            "visitation": self.visitation.counts.copy(),
            # One (low, high) row per dimension, as grid_bounds: [[x_lo, x_hi], [v_lo, v_hi]].
            "visitation_range": np.array([self.visitation.low, self.visitation.high]).T,
        }

    def state_dict(self) -> dict:
        return {
            "evaluator": self.evaluator.state_dict(),
            "grid": self.grid.state_dict(),
            "test_grid": self.test_grid.state_dict(),
            "visitation": self.visitation.state_dict(),
            "first_success_env_steps": self.first_success_env_steps,
            "measure_env_steps": self.measure_env_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        tester = state["evaluator"]
        if "calls" not in tester and self.tester and self.tester.random_streams == "per-particle":
            # Saved before 2026-12-01, when the tests drew from one shared stream whatever the
            # run's streams: they go on doing so (in this process), so the run resumes exactly.
            logger.info("the checkpoint's QD tests draw from one shared stream: resumed so")
            self.evaluator = replace(self.tester, random_streams="shared").build()
        self.evaluator.load_state_dict(tester)
        self.first_success_env_steps = state["first_success_env_steps"]
        self.measure_env_steps = state["measure_env_steps"]
        self.grid.load_state_dict(state["grid"])
        self.test_grid.load_state_dict(state["test_grid"])
        self.visitation.load_state_dict(state["visitation"])


def _measure_qd(b: Build) -> MeasureQD:
    """The QD records of a run (docs/design.md, "Novelty and quality diversity"). Appended after the
    mode's operators: it drains the evaluator's log of the iteration's evaluations."""
    cfg, qd = b.cfg, b.cfg["qd"]
    descriptor, roles = cfg["behaviour"].descriptor, cfg["behaviour"].roles
    describer = Describer.for_env(descriptor, b.spec, b.env, roles=roles)
    tester = EvaluatorSpec(
        cfg.env, b.spec, qd.eval_episodes, b.subseed(4), deterministic=True,
        descriptor=descriptor, roles=roles, max_episode_steps=cfg.max_episode_steps or None,
        random_streams=cfg["sampling"].random_streams,
    )  # fmt: skip
    space = b.env.single_observation_space
    xv = describer.roles.indices
    if not (bounded(space.low[xv]) and bounded(space.high[xv])):
        raise ValueError(
            f"qd_every={qd.every} records the (x, v) = observation{xv} visitation, which "
            f"needs bounded observations; {cfg.env} has low {space.low[xv].tolist()}, high "
            f"{space.high[xv].tolist()} (use qd_every=0)"
        )
    return MeasureQD(
        b.evaluator(tester),  # on the workers, in a sharded run
        qd.every,
        GridArchive(describer.bounds, qd.cells, qd.offset),
        GridArchive(describer.bounds, qd.cells, qd.offset),
        Visitation(space.low[xv], space.high[xv]),
        xv,
        tester,
    )


register_operator(
    "measure-qd",
    _measure_qd,
    "grid archive, visitation and success tests",
    ("qd", "behaviour"),
    appended_when=lambda cfg: cfg["qd"].every > 0,
)
