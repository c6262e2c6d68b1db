"""A2C: a value network per particle, advantages by GAE(γ, λ).

The critics form their own ``[n, d_v]`` tensor with their own Adam: they are *not* SVGD
particles (the kernel sees only policy parameters), unlike the ADR port that mixed them in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from evo_svpg.estimators.base import Capabilities, register_estimator
from evo_svpg.estimators.pg import CHUNK, gae, particle_major, score_gradient, standardize
from evo_svpg.parallel import ParticleShards
from evo_svpg.policy import PolicySpec, forward_torch
from evo_svpg.sampler import Rollout
from evo_svpg.settings import (
    Settings,
    closed_unit,
    finite_positive,
    parse_sizes,
    positive_int,
    positive_sizes,
    register_settings,
    setting,
)


@register_settings
@dataclass(frozen=True)
class A2CSettings(Settings):
    section, title = "a2c", "the a2c estimator's critics"
    gae_lambda: float = setting(0.95, "GAE λ (a2c only)", key="gae_lambda", check=closed_unit)
    critic_hidden_sizes: tuple[int, ...] = setting(
        (64, 64), "critic MLP hidden sizes (a2c only)", key="critic_hidden_sizes",
        check=positive_sizes, parse=parse_sizes,
    )  # fmt: skip
    critic_lr: float = setting(
        1e-3, "critic Adam learning rate (a2c only)", key="critic_lr", check=finite_positive
    )
    critic_epochs: int = setting(
        2, "critic passes over each iteration's data (a2c only)", key="critic_epochs",
        check=positive_int,
    )  # fmt: skip


@dataclass
class A2C:
    """Policy gradient with a learned per-particle critic ``V_i(s)``.

    Each iteration: values of all observed and next observations, GAE advantages (standardised
    per particle, as REINFORCE's returns are, so α keeps its meaning), the policy gradient, then
    ``critic_epochs`` passes of minibatch Adam on ``(V_i(s_t) − (A_t + V_i(s_t)))²``.

    Value targets are normalised per particle, PopArt-style (van Hasselt et al. 2016): the
    network predicts ``(V − μ_i)/σ_i``, and when ``μ_i, σ_i`` are refreshed from a new batch the
    output layer is rescaled so its predictions do not jump. Without it a critic starting at 0
    needs thousands of Adam steps just to reach CartPole's returns of ~50-100.
    """

    spec: PolicySpec
    n_particles: int
    seed: int
    gamma: float = 0.99
    gae_lambda: float = 0.95
    critic_hidden_sizes: tuple[int, ...] = (64, 64)
    critic_lr: float = 1e-3
    critic_epochs: int = 2
    device: str = "cpu"
    shards: ParticleShards | None = None
    rows: slice | None = None  # a worker's rows of the population (None: all n_particles)
    population: int | None = None  # the population's size when ``rows`` is a worker's shard
    critic_spec: PolicySpec = field(init=False)

    def __post_init__(self) -> None:
        # A one-output MLP: "discrete" only means "no log-std block" here.
        self.critic_spec = PolicySpec(
            self.spec.obs_dim, 1, True, self.critic_hidden_sizes, self.spec.activation,
            obs_shift=self.spec.obs_shift, obs_scale=self.spec.obs_scale,
        )  # fmt: skip
        self.generator = torch.Generator().manual_seed(self.seed)
        rows = self.rows or slice(0, self.n_particles)
        everyone = self.critic_spec.init_params(self.population or self.n_particles, self.generator)
        self.critic = everyone[rows].clone()  # a worker's rows of what one process would draw
        self.critic = self.critic.to(self.device).requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.critic], lr=self.critic_lr)
        self.target_mean = torch.zeros(self.n_particles, device=self.device)  # μ_i
        self.target_std = torch.ones(self.n_particles, device=self.device)  # σ_i

    @torch.no_grad()
    def _values(self, obs: np.ndarray) -> np.ndarray:
        """``V_i`` of ``obs [n, M, obs_dim]`` -> ``[n, M]``, chunked."""
        out = [
            forward_torch(
                self.critic_spec,
                self.critic_spec.split(self.critic),
                torch.from_numpy(obs[:, s : s + CHUNK]).to(self.device),
            )
            for s in range(0, obs.shape[1], CHUNK)
        ]
        raw = torch.cat(out, dim=1).squeeze(-1)
        values = self.target_mean[:, None] + self.target_std[:, None] * raw
        return values.cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def _renormalise(self, targets: Tensor) -> None:
        """Refresh ``μ_i, σ_i`` from ``targets [n, M]``, keeping every prediction unchanged."""
        mean, std = targets.mean(dim=1), targets.std(dim=1).clamp_min(1e-3)
        parts = self.critic_spec.split(self.critic)
        w_out, b_out = parts[-2], parts[-1]  # [n, h, 1], [n, 1, 1]
        ratio = (self.target_std / std)[:, None, None]
        w_out.mul_(ratio)
        b_out.mul_(ratio).add_(((self.target_mean - mean) / std)[:, None, None])
        self.target_mean, self.target_std = mean, std

    def gradient(self, theta: Tensor, rollout: Rollout) -> Tensor:
        """``∇J [n, d]`` at ``theta [n, d]``; also fits the critics to this rollout."""
        if rollout.episode_signal is not None:
            raise ValueError(
                "a2c cannot learn from an episode-level signal (its critic would bootstrap past "
                "segments already scored); use estimator='reinforce'"
            )
        t, n, e = rollout.rewards.shape
        obs, final_obs = particle_major(rollout.obs), particle_major(rollout.final_obs)
        values = self._values(obs).reshape(n, t, e).swapaxes(0, 1)
        next_values = self._values(final_obs).reshape(n, t, e).swapaxes(0, 1)
        dones = rollout.terminated | rollout.truncated
        adv = gae(
            rollout.rewards, values, next_values, rollout.terminated, dones,
            self.gamma, self.gae_lambda,
        )  # fmt: skip
        targets = particle_major(adv + values)
        grad = score_gradient(
            self.spec, theta, obs, particle_major(rollout.actions), rollout.activations,
            standardize(particle_major(adv)), self.device, self.shards,
        )  # fmt: skip
        self._fit_critic(obs, targets)
        return grad

    def _fit_critic(self, obs: np.ndarray, targets: np.ndarray) -> None:
        m = obs.shape[1]
        obs_t = torch.from_numpy(obs).to(self.device)
        tgt_t = torch.from_numpy(targets).to(self.device, torch.float32)
        self._renormalise(tgt_t)
        tgt_t = (tgt_t - self.target_mean[:, None]) / self.target_std[:, None]
        for _ in range(self.critic_epochs):
            perm = torch.randperm(m, generator=self.generator).to(self.device)
            for s in range(0, m, CHUNK):
                idx = perm[s : s + CHUNK]
                parts = self.critic_spec.split(self.critic)
                pred = forward_torch(self.critic_spec, parts, obs_t[:, idx]).squeeze(-1)
                # Sum over particles of each particle's MSE: particle i's loss only moves row i.
                loss = (pred - tgt_t[:, idx]).square().mean(dim=1).sum()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()

    @torch.no_grad()
    def reindex(self, parents: Tensor) -> None:
        """A cloned particle inherits its parent's critic, its Adam moments and normaliser."""
        idx = parents.to(self.device)
        self.critic.copy_(self.critic[idx])
        for moments in self.optimizer.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                if key in moments:
                    moments[key].copy_(moments[key][idx])
        self.target_mean, self.target_std = self.target_mean[idx], self.target_std[idx]

    def state_dict(self) -> dict:
        return {
            "critic": self.critic.detach().cpu().clone(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "target_mean": self.target_mean.clone(),
            "target_std": self.target_std.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.critic.copy_(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.target_mean = state["target_mean"].clone()
        self.target_std = state["target_std"].clone()


def _build(b) -> A2C:
    s = b.cfg["a2c"]
    return A2C(
        b.spec, b.policies, b.subseed(2), b.cfg.gamma, s.gae_lambda, s.critic_hidden_sizes,
        s.critic_lr, s.critic_epochs, b.cfg.device, b.shards, b.rows, b.population,
    )  # fmt: skip


register_estimator(
    "a2c",
    _build,
    Capabilities(
        episode_signal=False,
        why_no_episode_signal=(
            "an episode-level signal is cut at the iteration boundary, which a2c's critic "
            "would bootstrap past"
        ),
    ),
    "a value network per particle, GAE(γ, λ) advantages",
    ("a2c",),
)
