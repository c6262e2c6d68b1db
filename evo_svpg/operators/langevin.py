"""The Langevin baseline of the released SVPG code's extra figure: n independent particles, each
sampling q(θ) ∝ exp(J(θ)/α) by preconditioned stochastic-gradient Langevin dynamics, no kernel.

The update is pSGLD (Li, Chen, Carlson, Carin, AAAI 2016) with the same step size ``lr`` and the
same second-moment estimate as the Adam that SVPG ascends with (no momentum: SGLD with momentum is
another sampler)::

    g = ∇J/α,   v ← β₂ v + (1 − β₂) g²,   G = 1 / (√(v / (1 − β₂ᵗ)) + ε)
    θ ← θ + lr · G ⊙ g  +  noise · √(2 · lr · G) ⊙ ξ,   ξ ~ N(0, I)

``noise = 1`` is SGLD's scaling: per coordinate, the noise variance is twice the preconditioned
step size ``lr · G`` (Li et al.'s ε/2 = lr). The released code does not show how its Langevin
curve was made, so ``langevin_noise`` scales the noise (0: deterministic RMSprop ascent on each
particle's own ∇J). Where a coordinate's gradient is ~0 for long, G grows to 1/ε and so does its
noise: a flat direction of exp(J/α) is explored freely (``langevin_noise_std_max`` shows it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from evo_svpg.operators.base import Context, PopulationState, register_operator, require_finite
from evo_svpg.settings import Settings, register_settings, setting


def _nonnegative_finite(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(f"{key}={value!r} must be a finite number >= 0")


@register_settings
@dataclass(frozen=True)
class LangevinSettings(Settings):
    section, title = "langevin", "Langevin baseline (pSGLD on exp(J/α); uses alpha and lr)"
    noise: float = setting(
        1.0, "scale of the Langevin noise: 1 = SGLD (variance 2 × the preconditioned step "
        "size), 0 = none", key="langevin_noise", check=_nonnegative_finite,
    )  # fmt: skip


def psgld_step(
    params: Tensor, grads: Tensor, v: Tensor, t: int, *, lr: float, alpha: float,
    noise: float, xi: Tensor, beta2: float = 0.999, eps: float = 1e-8,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """One pSGLD step of every particle: ``params, grads, v, xi [n, d]``, ``t`` ≥ 1 the step
    number. Returns ``(new params, new v, G)`` (``G [n, d]`` the preconditioner); pure."""
    g = grads / alpha
    v = beta2 * v + (1 - beta2) * g * g
    precond = 1.0 / ((v / (1 - beta2**t)).sqrt() + eps)
    step = lr * precond * g + noise * (2 * lr * precond).sqrt() * xi
    return params + step, v, precond


@dataclass
class LangevinAscent:
    """Each particle takes its own pSGLD step (:func:`psgld_step`) on ``grads``, in place."""

    lr: float
    alpha: float
    noise: float
    seed: int
    v: Tensor | None = None  # [n, d] second-moment estimate of ∇J/α
    t: int = 0
    generator: torch.Generator = field(init=False)
    reads, writes = frozenset({"params", "grads"}), frozenset({"params"})

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        grads = state.grads
        require_finite(grads, "policy gradient", state)
        if self.v is None:
            self.v = torch.zeros_like(grads)
        self.t += 1
        xi = torch.randn(grads.shape, generator=self.generator, dtype=grads.dtype)
        new, self.v, precond = psgld_step(
            state.params, grads, self.v, self.t, lr=self.lr, alpha=self.alpha,
            noise=self.noise, xi=xi,
        )  # fmt: skip
        # Diagnostics for "does the noise swamp the drift?": per coordinate of this step, the
        # noise std (mean and max over coordinates and particles) and the mean |drift|.
        noise_std = self.noise * (2 * self.lr * precond).sqrt()
        state.scalars["langevin_noise_std"] = float(noise_std.mean())
        state.scalars["langevin_noise_std_max"] = float(noise_std.max())
        state.scalars["langevin_drift"] = float(
            (self.lr * precond * grads / self.alpha).abs().mean()
        )
        state.params.copy_(new)
        return state

    def state_dict(self) -> dict:
        return {"v": self.v, "t": self.t, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.v, self.t = state["v"], state["t"]
        self.generator.set_state(state["generator"])

    def reindex(self, parents: Tensor) -> None:
        """A clone continues its parent's chain: it inherits the parent's second moment."""
        if self.v is not None:
            self.v = self.v[parents]


register_operator(
    "langevin",
    lambda b: LangevinAscent(
        b.cfg["adam"].lr, b.cfg["svgd"].alpha, b.cfg["langevin"].noise, b.subseed(15)
    ),
    "pSGLD step of each particle on its own ∇J/α (no kernel)",
    ("svgd", "adam", "langevin"),
)
