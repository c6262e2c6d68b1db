"""A worker's shard of the run, serving the learner: the same object in a local worker process
(:mod:`evo_svpg.workers`) and as a Ray actor (:mod:`evo_svpg.ray_workers`)."""

from __future__ import annotations

import os

import numpy as np
import torch

from evo_svpg.building import build_shard, keep_freed_memory, set_threads
from evo_svpg.evaluation import EvaluatorSpec
from evo_svpg.sharded import RolloutSummary


class ShardServer:
    """Particles ``rows`` of a population of ``population``: their envs, rollout buffers and
    estimator state, and a worker's copy of every evaluator the run's operators opened
    (``evaluators``, keyed by position). Methods take the whole ``θ [n, d]`` and use their own
    rows of it. ``needs``: what the run's operators need (:func:`.engine.check_composition`):
    ``behaviours`` describes every episode, ``final_obs`` ships the final observations."""

    # Besides collect and gradient (whose θ and ∇J travel as the backend chooses):
    CALLS = (
        "ready", "sampler_state", "estimator_state", "evaluator_state", "load_sampler",
        "load_estimator", "load_evaluator", "evaluate", "episode_signal",
    )  # fmt: skip

    def __init__(
        self,
        cfg_data: dict,
        rows: slice,
        population: int,
        needs: frozenset[str] = frozenset(),
        evaluators: tuple[EvaluatorSpec, ...] = (),
    ) -> None:
        set_threads(1)
        keep_freed_memory()
        self.rows, self.needs = rows, needs
        self.shard = build_shard(cfg_data, rows, population, describe="behaviours" in needs)
        # The learner keeps the QD log of what the workers evaluate (ShardedEvaluator).
        self.evaluators = [spec.build() for spec in evaluators]
        for evaluator in self.evaluators:
            evaluator.log = None
        self.rollout = None

    def ready(self, _: object = None) -> int:
        """This server's process id, once it is built (the pool waits for every one)."""
        return os.getpid()

    def collect(self, theta: np.ndarray, steps_per_env: int) -> RolloutSummary:
        """Sample this shard's rollout (the transitions stay here for :meth:`gradient`); what
        the learner sees of it, with particles numbered from 0 within the shard."""
        rollout = self.rollout = self.shard.sampler.collect(theta[self.rows].copy(), steps_per_env)
        final_obs = rollout.final_obs.copy() if "final_obs" in self.needs else None
        return RolloutSummary(
            [r.copy() for r in rollout.episode_returns],
            [x.copy() for x in rollout.episode_lengths],
            rollout.steps_taken, rollout.shape, behaviours=rollout.behaviours,
            final_obs=final_obs,
        )  # fmt: skip

    def episode_signal(self, signal: np.ndarray) -> None:
        """This shard's ``[T, rows, E]`` of an episode-level signal an operator set (novelty)."""
        self.rollout.episode_signal = signal

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        """``∇J [rows, d]`` from the last rollout, at this shard's rows of ``theta``."""
        own = torch.from_numpy(theta[self.rows].copy())
        return self.shard.estimator.gradient(own, self.rollout).numpy()

    def sampler_state(self, _: object = None) -> dict:
        return self.shard.sampler.state_dict()

    def estimator_state(self, _: object = None) -> dict:
        return self.shard.estimator.state_dict()

    def load_sampler(self, state: dict) -> None:
        self.shard.sampler.load_state_dict(state)

    def load_estimator(self, state: dict) -> None:
        self.shard.estimator.load_state_dict(state)

    def evaluate(self, job: tuple[int, int, np.ndarray]) -> tuple:
        """Fresh episodes of candidates ``first …`` of an evaluation by evaluator ``key``
        (``job = (key, first, theta_rows)``); every worker is called for every evaluation,
        with or without rows."""
        key, first, theta = job
        result = self.evaluators[key].episodes_of(theta, first=first)
        return result.returns, result.terminated, result.steps, result.descriptors

    def evaluator_state(self, key: int) -> dict:
        return self.evaluators[key].state_dict()

    def load_evaluator(self, job: tuple[int, dict]) -> None:
        key, state = job
        self.evaluators[key].load_state_dict(state)
