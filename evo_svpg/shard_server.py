"""A worker's shard of the run, serving the learner: the same object in a local worker process
(:mod:`evo_svpg.workers`) and as a Ray actor (:mod:`evo_svpg.ray_workers`)."""

from __future__ import annotations

import os

import numpy as np
import torch

from evo_svpg.building import build_shard, keep_freed_memory, set_threads


class ShardServer:
    """Particles ``rows`` of a population of ``population``: their envs, rollout buffers and
    estimator state. Methods take the whole ``θ [n, d]`` and use their own rows of it."""

    # Besides collect and gradient (whose θ and ∇J travel as the backend chooses):
    CALLS = (
        "ready", "sampler_state", "estimator_state", "evaluator_state", "load_sampler",
        "load_estimator", "load_evaluator", "evaluate",
    )  # fmt: skip

    def __init__(self, cfg_data: dict, rows: slice, population: int) -> None:
        set_threads(1)
        keep_freed_memory()
        self.rows = rows
        self.shard = build_shard(cfg_data, rows, population)
        self.rollout = None

    def ready(self, _: object = None) -> int:
        """This server's process id, once it is built (the pool waits for every one)."""
        return os.getpid()

    def collect(self, theta: np.ndarray, steps_per_env: int) -> tuple[list, list, int]:
        """Sample this shard's rollout; each particle's ended episodes' returns and lengths,
        and the steps taken (the transitions stay here for :meth:`gradient`)."""
        self.rollout = self.shard.sampler.collect(theta[self.rows].copy(), steps_per_env)
        return (
            [r.copy() for r in self.rollout.episode_returns],
            [x.copy() for x in self.rollout.episode_lengths],
            self.rollout.steps_taken,
        )

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

    def evaluate(self, job: tuple[int, np.ndarray]) -> tuple:
        """Fresh episodes of candidates ``first …`` of an evaluation (``job = (first,
        theta_rows)``); every worker is called for every evaluation, with or without rows."""
        first, theta = job
        result = self.shard.evaluator.episodes_of(theta, first=first)
        return result.returns, result.terminated, result.steps

    def evaluator_state(self, _: object = None) -> dict:
        return self.shard.evaluator.state_dict()

    def load_evaluator(self, state: dict) -> None:
        self.shard.evaluator.load_state_dict(state)
