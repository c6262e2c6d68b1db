"""MLP policies for a whole population stored as one flat parameter tensor ``[n, d]``.

Each particle's parameter vector is laid out layer by layer: ``W_0`` (``[in, out]``, row-major),
``b_0``, ``W_1``, ``b_1``, ... and, for continuous actions, a state-independent ``log_std``
vector last (so the log-std is part of the SVPG particle, as in the original code). Stacked
layer *views* ``[n, in, out]`` of the flat tensor let one matmul evaluate all particles at once:
numpy for sampling (fastest on CPU, see docs/results/speed.md), torch for the differentiable
log-prob.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

ACTIVATIONS = ("tanh", "relu")
OBS_SCALINGS = ("none", "bounds")
LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class PolicySpec:
    """Shape of one policy; the same for every particle.

    ``act_dim`` is the number of logits for discrete actions and the action dimension for
    continuous ones. ``action_low``/``action_high`` are only used to clip what is sent to the env.
    """

    obs_dim: int
    act_dim: int
    discrete: bool
    hidden_sizes: tuple[int, ...] = (100, 50, 25)
    activation: str = "tanh"
    action_low: tuple[float, ...] | None = None
    action_high: tuple[float, ...] | None = None
    # The network sees (obs − obs_shift) · obs_scale (docs/design.md, "Observation scaling");
    # None: raw.
    obs_shift: tuple[float, ...] | None = None
    obs_scale: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation={self.activation!r} is not supported; valid choices: {ACTIVATIONS}"
            )
        if any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes={self.hidden_sizes} must all be positive")
        if (self.obs_shift is None) != (self.obs_scale is None):
            raise ValueError("obs_shift and obs_scale are given together or not at all")
        if self.obs_scale is not None:
            shift, scale = np.asarray(self.obs_shift), np.asarray(self.obs_scale)
            if shift.shape != (self.obs_dim,) or scale.shape != (self.obs_dim,):
                raise ValueError(
                    f"obs_shift and obs_scale need obs_dim={self.obs_dim} values each, got "
                    f"{shift.shape} and {scale.shape}"
                )
            if not (np.isfinite(shift).all() and np.isfinite(scale).all() and (scale > 0).all()):
                raise ValueError(
                    f"obs_shift={self.obs_shift}, obs_scale={self.obs_scale} must be "
                    "finite with obs_scale > 0"
                )

    def network_input(self, obs):
        """What the first layer sees: ``obs`` or ``(obs − obs_shift) · obs_scale`` (numpy/torch).

        MountainCar's velocity lives in ±0.07: unscaled, its first-layer weights would need
        to grow ~15× before the policy could depend on it.
        """
        if self.obs_scale is None:
            return obs
        if isinstance(obs, Tensor):
            shift = torch.tensor(self.obs_shift, dtype=obs.dtype, device=obs.device)
            return (obs - shift) * torch.tensor(self.obs_scale, dtype=obs.dtype, device=obs.device)
        shift = np.asarray(self.obs_shift, dtype=np.float32)
        return (obs - shift) * np.asarray(self.obs_scale, dtype=np.float32)

    @property
    def layer_sizes(self) -> list[tuple[int, int]]:
        """``(fan_in, fan_out)`` of every linear layer, input to output."""
        sizes = [self.obs_dim, *self.hidden_sizes, self.act_dim]
        return list(itertools.pairwise(sizes))

    @property
    def n_params(self) -> int:
        n = sum(i * o + o for i, o in self.layer_sizes)
        return n + (0 if self.discrete else self.act_dim)

    def _offsets(self) -> list[tuple[int, int, int, int]]:
        """``(w_start, b_start, fan_in, fan_out)`` of every layer in the flat vector."""
        out, pos = [], 0
        for fan_in, fan_out in self.layer_sizes:
            out.append((pos, pos + fan_in * fan_out, fan_in, fan_out))
            pos += fan_in * fan_out + fan_out
        return out

    def init_params(self, n: int, generator: torch.Generator) -> Tensor:
        """Glorot-uniform weights, zero biases, log-std 0 (std 1): the rllab/seed defaults.

        Returns ``[n, d]`` float32; every particle gets an independent draw.
        """
        theta = torch.zeros(n, self.n_params, dtype=torch.float32)
        for w0, _, fan_in, fan_out in self._offsets():
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            w = torch.rand(n, fan_in * fan_out, generator=generator) * (2 * limit) - limit
            theta[:, w0 : w0 + fan_in * fan_out] = w
        return theta

    # ---- stacked layer views ---------------------------------------------------------------
    def split(self, theta):
        """Views ``[W_0 [n, in, out], b_0 [n, 1, out], W_1, b_1, ..., (log_std [n, act_dim])]``.

        Works for numpy arrays and torch tensors alike; no copy is made, so an in-place update
        of ``theta [n, d]`` is seen by every view.
        """
        n = theta.shape[0]
        parts = []
        for w0, b0, fan_in, fan_out in self._offsets():
            parts.append(theta[:, w0:b0].reshape(n, fan_in, fan_out))
            parts.append(theta[:, b0 : b0 + fan_out].reshape(n, 1, fan_out))
        if not self.discrete:
            parts.append(theta[:, self.n_params - self.act_dim :])
        return parts

    def log_std(self, theta):
        """``[n, act_dim]`` view of the log-std block of ``theta [n, d]`` (continuous only)."""
        if self.discrete:
            raise ValueError("a discrete policy has no log_std")
        return theta[:, self.n_params - self.act_dim :]


def forward_numpy(
    spec: PolicySpec, parts: list, obs: np.ndarray, out: list[np.ndarray] | None = None
) -> np.ndarray:
    """Logits or Gaussian means ``[n, E, act_dim]`` for observations ``[n, E, obs_dim]``.

    ``parts`` is ``spec.split(theta_numpy)``; one stacked matmul per layer for all particles.
    With ``out`` (one ``[n, E, width]`` array per layer), every layer's output (after its
    activation) is written there: the analytic gradient reuses them instead of a second forward.
    """
    x = spec.network_input(obs)
    last = len(spec.layer_sizes) - 1
    for i in range(last + 1):
        x = np.matmul(x, parts[2 * i], out=None if out is None else out[i])
        x += parts[2 * i + 1]
        if i < last:
            if spec.activation == "tanh":
                np.tanh(x, out=x)
            else:
                np.maximum(x, 0.0, out=x)
    return x


def _tanh(x: Tensor) -> Tensor:
    # torch.tanh is ~6x slower than sigmoid on this CPU build; 2σ(2x)−1 is tanh to ~2e-7 (fp32).
    return 2.0 * torch.sigmoid(2.0 * x) - 1.0


def forward_torch(spec: PolicySpec, parts: list[Tensor], obs: Tensor) -> Tensor:
    """Differentiable twin of :func:`forward_numpy`: ``obs [n, M, obs_dim] -> [n, M, act_dim]``."""
    x = spec.network_input(obs)
    last = len(spec.layer_sizes) - 1
    for i in range(last + 1):
        w, b = parts[2 * i], parts[2 * i + 1]
        if x.shape[0] == 1 and w.shape[-1] == 1:
            # One particle, one unit (a critic's value): baddbmm would take another kernel
            # (gemv), so a worker's one-particle shard would differ in the last bit from the
            # same particle in a larger batch. A batch of two (the second a copy, dropped)
            # takes the batched kernel.
            x = torch.baddbmm(b.expand(2, -1, -1), x.expand(2, -1, -1), w.expand(2, -1, -1))[:1]
        else:
            x = torch.baddbmm(b, x, w)
        if i < last:
            x = _tanh(x) if spec.activation == "tanh" else torch.relu(x)
    return x


def log_prob(spec: PolicySpec, parts: list[Tensor], obs: Tensor, actions: Tensor) -> Tensor:
    """``log π_θi(a|s)`` for every particle's own transitions: ``[n, M]``.

    ``parts = spec.split(theta)``; ``obs [n, M, obs_dim]``; ``actions [n, M]`` (int64) or
    ``[n, M, act_dim]`` (float).
    """
    out = forward_torch(spec, parts, obs)
    if spec.discrete:
        logp = torch.log_softmax(out, dim=-1)
        return logp.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    log_std = parts[-1].unsqueeze(1)  # [n, 1, act_dim]
    z = (actions - out) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - 0.5 * LOG_2PI).sum(-1)


def sample_actions(
    spec: PolicySpec, out: np.ndarray, log_std: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """Draw actions from logits (Gumbel-max) or Gaussian means; ``out [n, E, act_dim]``.

    Returns ``[n, E]`` int64 or ``[n, E, act_dim]`` float32 (unclipped: the buffer keeps what
    the policy sampled, the env receives the clipped action).
    """
    return actions_from_noise(spec, out, log_std, action_noise(spec, out.shape, rng))


def action_noise(spec: PolicySpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """The random part of :func:`sample_actions`: Gumbel or standard normal noise of ``shape``."""
    if spec.discrete:
        # Gumbel noise −log(Exp(1)); an exponential draw of exactly 0 gives +inf: that action.
        with np.errstate(divide="ignore"):
            return -np.log(rng.standard_exponential(shape, dtype=np.float32))
    return rng.standard_normal(shape, dtype=np.float32)


def keyed_action_noise(spec: PolicySpec, streams, t: int, step_shape: tuple[int, ...]):
    """:func:`action_noise` of step ``t`` from per-particle streams
    (:class:`evo_svpg.streams.ParticleStreams`): ``[n, *step_shape]``."""
    return streams.at("action", t, step_shape, lambda g, block: action_noise(spec, block, g))


def actions_from_noise(
    spec: PolicySpec, out: np.ndarray, log_std: np.ndarray | None, noise: np.ndarray
) -> np.ndarray:
    """Actions for ``out [n, E, act_dim]`` given :func:`action_noise` of the same shape."""
    if spec.discrete:
        return np.argmax(out + noise, axis=-1)
    return out + np.exp(log_std)[:, None, :] * noise
