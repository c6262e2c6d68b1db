"""Gradient operators: sample, estimate ∇J, form the SVPG (or independent) direction, ascend."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from evo_svpg.operators.base import (
    Context,
    PopulationState,
    Stateless,
    register_operator,
    require_finite,
)
from evo_svpg.settings import Settings, finite_positive, is_number, register_settings, setting
from evo_svpg.svgd import BANDWIDTH_CONVENTIONS, svgd_direction, svpg_direction_and_bandwidth


def _bandwidth(key: str, value: Any) -> None:
    if isinstance(value, str):
        if value not in BANDWIDTH_CONVENTIONS:
            raise ValueError(
                f"{key}={value!r} is not valid; choose one of {list(BANDWIDTH_CONVENTIONS)} or "
                "a positive number"
            )
    elif not is_number(value) or not 0 < value < math.inf:
        raise ValueError(
            f"{key}={value!r} must be a positive number or one of {BANDWIDTH_CONVENTIONS}"
        )


def _parse_bandwidth(text: str) -> str | float:
    try:
        return float(text)
    except ValueError:
        return text


@register_settings
@dataclass(frozen=True)
class SVGDSettings(Settings):
    section, title = "svgd", "SVPG's Stein direction (seed eq. 6)"
    alpha: float = setting(
        10.0, "SVPG temperature α: ∇J is divided by α (seed: 10)", key="alpha",
        check=finite_positive,
    )  # fmt: skip
    bandwidth: str | float = setting(
        "svpg_code", "kernel bandwidth: svpg_code (the released code's, with which SVPG reproduces "
        "the paper), svgd (the paper text's) or a positive h", key="bandwidth",
        check=_bandwidth, parse=_parse_bandwidth,
    )  # fmt: skip


@register_settings
@dataclass(frozen=True)
class AdamSettings(Settings):
    section, title = "adam", "Adam ascent on the particles"
    lr: float = setting(
        5e-3, "Adam learning rate on the [n, d] particles (original code: 5e-3)", key="lr",
        check=finite_positive,
    )  # fmt: skip


class CollectRollouts(Stateless):
    """Every particle takes ``steps_per_particle`` env steps with its current policy (with
    whole-episode sampling: at least that many, completing every episode it starts).

    Also sets ``fitness [n]``: each particle's mean return over the episodes that ended in this
    rollout (NaN if none did), the free fitness that selection operators rank by.
    """

    needs = frozenset({"sampler"})
    reads, writes = frozenset({"params"}), frozenset({"rollout", "fitness"})

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        rollout = ctx.sampler.collect(state.params.numpy(), ctx.steps_per_env)
        state.rollout = rollout
        state.env_steps += rollout.steps_taken
        state.fitness = np.array(
            [r.mean() if r.size else np.nan for r in rollout.episode_returns], dtype=np.float64
        )
        return state


class PolicyGradient(Stateless):
    """``grads [n, d]`` = the estimator's ∇J of every particle from this iteration's rollout."""

    needs = frozenset({"estimator"})
    reads, writes = frozenset({"params", "rollout"}), frozenset({"grads"})

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        state.grads = ctx.estimator.gradient(state.params, state.rollout)
        require_finite(state.grads, "policy gradient", state)
        state.scalars["grad_norm_mean"] = float(state.grads.norm(dim=1).mean())
        return state


@dataclass
class SteinDirection(Stateless):
    """SVPG (seed eq. 6): ``direction = svpg_direction(params, grads, α)`` with the RBF kernel."""

    alpha: float
    bandwidth: str | float
    reads, writes = frozenset({"params", "grads"}), frozenset({"direction"})

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

    reads, writes = frozenset({"grads"}), frozenset({"direction"})

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        state.direction = state.grads
        return state


@dataclass
class AdamAscent:
    """Adam *ascent* on the whole ``[n, d]`` tensor ``params``, in place.

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
    reads, writes = frozenset({"direction"}), frozenset({"params"})

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        g = state.direction
        require_finite(g, "update direction", state)
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

    def reindex(self, parents: Tensor) -> None:
        """A clone continues its parent's optimisation: it inherits the parent's (m, v).

        Zeroed moments would be wrong here: with the shared step count t the bias correction
        is already ≈ 1, so a fresh clone's first steps would be ~3× the normal Adam step.
        """
        if self.m is not None:
            self.m, self.v = self.m[parents], self.v[parents]

    def load_state_dict(self, state: dict) -> None:
        self.m, self.v, self.t = state["m"], state["v"], state["t"]


register_operator(
    "collect", lambda b: CollectRollouts(), "every particle samples its env steps", ("sampling",)
)
register_operator(
    "policy-gradient", lambda b: PolicyGradient(), "the estimator's ∇J of every particle"
)
register_operator(
    "stein",
    lambda b: SteinDirection(b.cfg["svgd"].alpha, b.cfg["svgd"].bandwidth),
    "SVPG direction: kernel-smoothed ∇J/α plus repulsion",
    ("svgd",),
)
register_operator("own-gradient", lambda b: OwnGradient(), "each particle follows its own ∇J")
register_operator("adam", lambda b: AdamAscent(b.cfg["adam"].lr), "Adam ascent", ("adam",))
