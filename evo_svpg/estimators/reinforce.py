"""REINFORCE as in the seed (eq. 8) and the original SVPG code."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from evo_svpg.estimators.base import Capabilities, register_estimator
from evo_svpg.estimators.pg import (
    particle_major,
    returns_to_go,
    score_gradient,
    standardize,
)
from evo_svpg.parallel import ParticleShards
from evo_svpg.policy import PolicySpec
from evo_svpg.sampler import Rollout


@dataclass
class Reinforce:
    """Discounted return-to-go, standardised over each particle's batch, no baseline.

    Standardising makes ‖∇J‖ independent of the reward scale, which is what α = 10 was
    calibrated against in the original code. A rollout with an ``episode_signal`` (novelty) is
    weighted by that per-episode signal at every step instead, standardised the same way.
    """

    spec: PolicySpec
    gamma: float = 0.99
    device: str = "cpu"
    shards: ParticleShards | None = None

    def gradient(self, theta: Tensor, rollout: Rollout) -> Tensor:
        """``∇J [n, d]`` at ``theta [n, d]`` from ``rollout`` (sampled with ``theta``)."""
        valid = None if rollout.valid is None else particle_major(rollout.valid)
        if rollout.episode_signal is not None:
            weights = standardize(particle_major(rollout.episode_signal), valid)
        else:
            dones = rollout.terminated | rollout.truncated
            returns = returns_to_go(rollout.rewards, dones, self.gamma)
            weights = standardize(particle_major(returns), valid)
        obs, actions = particle_major(rollout.obs), particle_major(rollout.actions)
        return score_gradient(
            self.spec, theta, obs, actions, rollout.activations, weights, self.device, self.shards
        )

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


register_estimator(
    "reinforce",
    lambda b: Reinforce(b.spec, b.cfg.gamma, b.cfg.device, b.shards),
    Capabilities(episode_signal=True, whole_episodes=True),
    "REINFORCE, standardised discounted returns-to-go (seed eq. 8)",
)
