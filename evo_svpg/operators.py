"""Operators: the steps an iteration is composed of, ``op(state, ctx) -> state``.

A mode (see :mod:`evo_svpg.modes`) is a sequence of operators; the engine runs that sequence once
per iteration. Operators that keep state across iterations (Adam moments) expose
``state_dict``/``load_state_dict`` so checkpoints capture them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from evo_svpg.policy import PolicySpec
from evo_svpg.sampler import NonFiniteError, Rollout, Sampler
from evo_svpg.svgd import svgd_direction, svpg_direction_and_bandwidth


class Estimator(Protocol):
    def gradient(self, theta: Tensor, rollout: Rollout) -> Tensor: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class PopulationState:
    """What flows through an iteration. ``params`` is shared with the numpy sampler."""

    params: Tensor  # [n, d] float32 on CPU
    iteration: int = 0  # completed iterations
    env_steps: int = 0  # env steps of the whole run so far
    rollout: Rollout | None = None  # this iteration's transitions
    grads: Tensor | None = None  # [n, d] ∇J estimates at params
    direction: Tensor | None = None  # [n, d] ascent direction handed to the optimiser
    scalars: dict[str, float] = field(default_factory=dict)  # per-iteration diagnostics


@dataclass
class Context:
    """What operators may use besides the state."""

    spec: PolicySpec
    sampler: Sampler
    estimator: Estimator
    steps_per_env: int


class Operator(Protocol):
    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState: ...


class Stateless:
    """Mixin for operators with nothing to checkpoint."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _require_finite(x: Tensor, what: str, state: PopulationState) -> None:
    if not torch.isfinite(x).all():
        raise NonFiniteError(
            f"non-finite {what} at iteration {state.iteration + 1}; the run stops here and the "
            "last checkpoint is left as it was"
        )


class CollectRollouts(Stateless):
    """Every particle takes ``steps_per_particle`` env steps with its current policy."""

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        rollout = ctx.sampler.collect(state.params.numpy(), ctx.steps_per_env)
        state.rollout = rollout
        state.env_steps += rollout.n_particles * rollout.steps_per_particle
        return state


class PolicyGradient(Stateless):
    """``grads [n, d]`` = the estimator's ∇J of every particle from this iteration's rollout."""

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        state.grads = ctx.estimator.gradient(state.params, state.rollout)
        _require_finite(state.grads, "policy gradient", state)
        state.scalars["grad_norm_mean"] = float(state.grads.norm(dim=1).mean())
        return state


@dataclass
class SteinDirection(Stateless):
    """SVPG (seed eq. 6): ``direction = svpg_direction(params, grads, α)`` with the RBF kernel."""

    alpha: float
    bandwidth: str | float

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        state.direction, h = svpg_direction_and_bandwidth(
            state.params, state.grads, self.alpha, bandwidth=self.bandwidth
        )
        # Diagnostics for "does the repulsion dominate?": the kernel-gradient term alone (zero
        # score, same h) and the kernel-smoothed ∇J/α term, mean L2 norm over particles.
        repulsion = svgd_direction(state.params, torch.zeros_like(state.grads), bandwidth=h)
        state.scalars["bandwidth"] = h
        state.scalars["repulsion_norm"] = float(repulsion.norm(dim=1).mean())
        state.scalars["drive_norm"] = float((state.direction - repulsion).norm(dim=1).mean())
        return state


class OwnGradient(Stateless):
    """Each particle blindly follows its own gradient (independent workers, joint worker)."""

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        state.direction = state.grads
        return state


@dataclass
class AdamAscent:
    """Adam *ascent* on the whole ``[n, d]`` tensor, in place (the sampler shares its memory).

    Elementwise, so one (m, v) state over the matrix is per-particle Adam, as in the original
    code (β1 0.9, β2 0.999, ε 1e-8, bias-corrected).
    """

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    m: Tensor | None = None
    v: Tensor | None = None
    t: int = 0

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        g = state.direction
        _require_finite(g, "update direction", state)
        if self.m is None:
            self.m, self.v = torch.zeros_like(g), torch.zeros_like(g)
        self.t += 1
        self.m.mul_(self.beta1).add_(g, alpha=1 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        m_hat = self.m / (1 - self.beta1**self.t)
        v_hat = self.v / (1 - self.beta2**self.t)
        state.params.add_(self.lr * m_hat / (v_hat.sqrt() + self.eps))
        return state

    def state_dict(self) -> dict:
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.m, self.v, self.t = state["m"], state["v"], state["t"]
