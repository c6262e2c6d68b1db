"""The SVPG paper's "A2C": REINFORCE with rllab's ``LinearFeatureBaseline``, per particle.

rllab (``rllab/baselines/linear_feature_baseline.py``, ``rllab/sampler/base.py``) processes each
iteration's paths in this order, which is kept here, for every particle on its own paths:

1. predict the baseline ``b(s_t)`` of every step with the coefficients fitted on the *previous*
   iteration's paths (zero before the first fit);
2. advantages by GAE: ``δ_t = r_t + γ b(s_{t+1}) − b(s_t)`` with ``b = 0`` after a path's last
   step, ``A_t = Σ_k (γλ)^k δ_{t+k}`` within the path (``λ = 1``, the paper's setting, gives
   ``A_t = G_t − b(s_t)``), then standardised per particle (rllab's ``center_adv``);
3. fit the coefficients on this iteration's paths: features ``[clip(o, ±10), clip(o, ±10)²,
   t/100, (t/100)², (t/100)³, 1]`` (``t``: the step's index within its episode), targets the
   discounted returns-to-go, ridge least squares ``(XᵀX + c·I) w = Xᵀy`` with ``c = 1e-5``,
   multiplied by 10 (up to 5 tries) while the solution has a NaN.

A path ends where an episode ends or where the iteration boundary cuts it (continuing sampling);
with whole-episode sampling paths are whole episodes, as in rllab. All particles are fitted in
one batched solve ``[n, F, F]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from evo_svpg.estimators.base import Capabilities, register_estimator
from evo_svpg.estimators.pg import gae, particle_major, returns_to_go, score_gradient, standardize
from evo_svpg.parallel import ParticleShards
from evo_svpg.policy import PolicySpec
from evo_svpg.sampler import Rollout
from evo_svpg.settings import (
    Settings,
    closed_unit,
    finite_positive,
    register_settings,
    setting,
)

OBS_CLIP = 10.0
FIT_TRIES = 5


@register_settings
@dataclass(frozen=True)
class LinearBaselineSettings(Settings):
    section, title = "linear_baseline", "the linear-baseline estimator (the paper's 'A2C')"
    reg_coeff: float = setting(
        1e-5, "ridge coefficient of the baseline's least squares (rllab: 1e-5)",
        key="baseline_reg_coeff", check=finite_positive,
    )  # fmt: skip
    gae_lambda: float = setting(
        1.0, "GAE λ of the advantages (the paper: 1, i.e. G_t − b(s_t))",
        key="baseline_gae_lambda", check=closed_unit,
    )  # fmt: skip


def linear_features(obs: np.ndarray, step: np.ndarray) -> np.ndarray:
    """rllab's features of ``obs [..., od]`` at episode step ``step [...]``: ``[..., 2·od + 4]``."""
    o = np.clip(obs.astype(np.float64), -OBS_CLIP, OBS_CLIP)
    t = (step.astype(np.float64) / 100.0)[..., None]
    return np.concatenate([o, o * o, t, t * t, t * t * t, np.ones_like(t)], axis=-1)


def fit_linear_baseline(features: np.ndarray, targets: np.ndarray, reg_coeff: float) -> np.ndarray:
    """Ridge coefficients ``[n, F]`` of ``features [n, M, F]`` on ``targets [n, M]`` in one
    batched solve of ``(XᵀX + c·I) w = Xᵀy``; as rllab, ``c`` is multiplied by 10 for the
    particles whose solution has a NaN (or whose system is singular), up to 5 tries."""
    gram = np.einsum("nmf,nmg->nfg", features, features)
    rhs = np.einsum("nmf,nm->nf", features, targets)
    eye = np.eye(features.shape[-1])
    coeffs = np.full(rhs.shape, np.nan)
    todo = np.arange(features.shape[0])
    reg = reg_coeff
    for _ in range(FIT_TRIES):
        try:
            coeffs[todo] = np.linalg.solve(gram[todo] + reg * eye, rhs[todo][..., None])[..., 0]
        except np.linalg.LinAlgError:
            coeffs[todo] = np.nan
        todo = todo[np.isnan(coeffs[todo]).any(axis=1)]
        if todo.size == 0:
            break
        reg *= 10
    return coeffs


def baseline_advantages(
    rollout: Rollout, coeffs: np.ndarray | None, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(advantages [T, n, E], features [T, n, E, F], returns [T, n, E])`` of ``rollout`` with
    the baseline ``coeffs [n, F]`` (None: zero), before standardisation."""
    if rollout.step_in_episode is None:
        raise ValueError("the linear baseline needs the rollout's step_in_episode")
    dones = rollout.terminated | rollout.truncated
    features = linear_features(rollout.obs, rollout.step_in_episode)
    if coeffs is None:
        values = np.zeros(dones.shape)
    else:
        values = np.einsum("tnef,nf->tne", features, coeffs)
    next_values = np.zeros_like(values)
    next_values[:-1] = values[1:]  # b = 0 after a path's last step: masked by `dones` below
    advantages = gae(rollout.rewards, values, next_values, dones, dones, gamma, lam)
    returns = returns_to_go(rollout.rewards, dones, gamma)
    return advantages, features, returns


@dataclass
class LinearBaselineReinforce:
    """REINFORCE with a per-particle linear baseline (module docstring); ``coeffs [n, F]``."""

    spec: PolicySpec
    gamma: float = 0.99
    gae_lambda: float = 1.0
    reg_coeff: float = 1e-5
    device: str = "cpu"
    shards: ParticleShards | None = None
    coeffs: np.ndarray | None = None

    def gradient(self, theta: Tensor, rollout: Rollout) -> Tensor:
        """``∇J [n, d]`` at ``theta [n, d]`` from ``rollout``; then refits the baselines."""
        advantages, features, returns = baseline_advantages(
            rollout, self.coeffs, self.gamma, self.gae_lambda
        )
        valid = None if rollout.valid is None else particle_major(rollout.valid)
        weights = standardize(particle_major(advantages), valid)
        obs, actions = particle_major(rollout.obs), particle_major(rollout.actions)
        grad = score_gradient(
            self.spec, theta, obs, actions, rollout.activations, weights, self.device, self.shards
        )
        features, returns = particle_major(features), particle_major(returns)
        if valid is not None:  # idle steps of whole-episode sampling do not enter the fit
            features, returns = features * valid[..., None], returns * valid
        self.coeffs = fit_linear_baseline(features, returns, self.reg_coeff)
        return grad

    def state_dict(self) -> dict:
        return {"coeffs": self.coeffs}

    def load_state_dict(self, state: dict) -> None:
        coeffs = state["coeffs"]
        self.coeffs = None if coeffs is None else np.array(coeffs, dtype=np.float64)

    def reindex(self, parents: Tensor) -> None:
        """A clone continues with its parent's baseline."""
        if self.coeffs is not None:
            self.coeffs = self.coeffs[parents.numpy()]


def _build(b) -> LinearBaselineReinforce:
    s = b.cfg["linear_baseline"]
    return LinearBaselineReinforce(
        b.spec, b.cfg.gamma, s.gae_lambda, s.reg_coeff, b.cfg.device, b.shards
    )


register_estimator(
    "linear-baseline",
    _build,
    Capabilities(
        episode_signal=False,
        why_no_episode_signal="its baseline is fitted to the rewards' returns",
        whole_episodes=True,
    ),
    "REINFORCE with rllab's LinearFeatureBaseline per particle, GAE(γ, λ = 1): the paper's 'A2C'",
    ("linear_baseline",),
)
