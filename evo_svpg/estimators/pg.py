"""Pure policy-gradient building blocks over ``[T, n, E]`` arrays and ``[n, d]`` tensors."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from evo_svpg.parallel import ParticleShards
from evo_svpg.policy import PolicySpec, log_prob

# Transitions per particle in one forward/backward chunk: keeps activations in cache and out of
# the allocator's mmap path (the whole-batch backward is ~2x slower on this machine).
CHUNK = 1000


def returns_to_go(rewards: np.ndarray, dones: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted return-to-go ``G_t = r_t + γ (1 − done_t) G_{t+1}``, ``G_T = 0``; ``[T, ...]``.

    ``dones`` marks the last step of an episode (terminated, truncated or cut by the iteration
    boundary): the return never looks past it, so there is no bootstrap (seed eq. 8).
    """
    out = np.empty(rewards.shape, dtype=np.float64)
    running = np.zeros(rewards.shape[1:], dtype=np.float64)
    keep = gamma * ~dones
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + keep[t] * running
        out[t] = running
    return out


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    dones: np.ndarray,
    gamma: float,
    lam: float,
) -> np.ndarray:
    """Generalised advantage estimation (Schulman et al. 2016); all arrays ``[T, ...]``.

    ``next_values`` are the critic's values of the true next observations; they bootstrap
    every step that is not a true terminal state (time limits and iteration cuts included).
    """
    delta = rewards + gamma * next_values * ~terminated - values
    out = np.empty(rewards.shape, dtype=np.float64)
    running = np.zeros(rewards.shape[1:], dtype=np.float64)
    keep = gamma * lam * ~dones
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = delta[t] + keep[t] * running
        out[t] = running
    return out


def particle_major(x: np.ndarray) -> np.ndarray:
    """``[T, n, E, ...] -> [n, T·E, ...]`` (contiguous), the layout the gradient code uses."""
    t, n, e = x.shape[:3]
    return np.ascontiguousarray(np.swapaxes(x, 0, 1)).reshape(n, t * e, *x.shape[3:])


def standardize(x: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Zero mean, unit std per particle over its batch (rllab ``center_adv``); ``x [n, M]``.

    With ``valid [n, M]`` (whole-episode sampling) the statistics are over the valid steps, the
    invalid ones get weight 0, and the weights are scaled by ``M / valid count`` so that the
    score gradient's mean over all ``M`` steps is the mean over the particle's valid steps.
    """
    if valid is None:
        mean = x.mean(axis=1, keepdims=True)
        std = x.std(axis=1, keepdims=True)
        return (x - mean) / (std + 1e-8)
    count = valid.sum(axis=1, keepdims=True)
    mean = np.where(valid, x, 0.0).sum(axis=1, keepdims=True) / count
    std = np.sqrt(np.where(valid, (x - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / count)
    return np.where(valid, (x - mean) / (std + 1e-8), 0.0) * (x.shape[1] / count)


def analytic_score_gradient(
    spec: PolicySpec,
    theta: np.ndarray,
    obs: np.ndarray,
    actions: np.ndarray,
    activations: list[np.ndarray],
    weights: np.ndarray,
    shards: ParticleShards | None = None,
) -> np.ndarray:
    """∇J_i ≈ (1/M) Σ_t ∇ log π_θi(a_t|s_t) · w_t by hand-written backprop: ``[n, d]``.

    Same quantity as :func:`score_function_gradient`, without a second forward pass: the
    sampler kept every layer's output (``activations``, ``[n, M, width]``, last = logits or
    means). Two stacked matmuls per layer, all particles of a shard at once; ~3x faster on CPU
    than autograd, and ``shards`` spreads particle shards over threads.
    """
    if shards is not None and shards.pool is not None:
        parts = shards.map(
            lambda p: analytic_score_gradient(
                spec, theta[p], obs[p], actions[p], [a[p] for a in activations], weights[p]
            )
        )
        return np.concatenate(parts)
    n, m = weights.shape
    parts = spec.split(theta)
    grad = np.zeros((n, spec.n_params), dtype=np.float32)
    chunk_grad = np.empty_like(grad)
    scaled = (weights / m).astype(np.float32)
    scratch: dict[tuple[int, int, str], np.ndarray] = {}
    for s in range(0, m, CHUNK):
        c = slice(s, s + CHUNK)
        chunk_acts = [a[:, c] for a in activations]
        _backprop(
            spec, parts, obs[:, c], actions[:, c], chunk_acts, scaled[:, c], chunk_grad, scratch
        )
        grad += chunk_grad
    return grad


def _scratch(scratch: dict, n: int, rows: int, width: int, role: str) -> np.ndarray:
    """A ``[n, rows, width]`` float32 array reused across chunks. A hidden layer's dL/dh and
    its ``1 - h^2`` are up to ``n x 1000 x 100`` floats each, which fresh allocations would
    page in again for every chunk; the arithmetic is the same either way."""
    key = (rows, width, role)
    if key not in scratch or scratch[key].shape[0] != n:
        scratch[key] = np.empty((n, rows, width), dtype=np.float32)
    return scratch[key]


def _backprop(spec, parts, obs, actions, activations, w, grad: np.ndarray, scratch: dict) -> None:
    """Writes ``Σ_t w_t ∇ log π(a_t|s_t)`` of one chunk into ``grad [n, d]``."""
    grad_parts = spec.split(grad)
    w = w[..., None]  # [n, M, 1]
    out = activations[-1]
    if spec.discrete:
        z = out - out.max(axis=-1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=-1, keepdims=True)  # softmax probabilities
        picked = np.take_along_axis(z, actions[..., None], axis=-1)
        np.put_along_axis(z, actions[..., None], picked - 1.0, axis=-1)
        dz = z * -w  # ∂/∂logits of w·log softmax(logits)[a] = w (onehot(a) − p)
    else:
        inv_std = np.exp(-parts[-1])[:, None, :]  # [n, 1, act_dim]
        z = (actions - out) * inv_std
        grad_parts[-1][:] = (w * (z * z - 1.0)).sum(axis=1)  # ∂/∂log σ
        dz = w * z * inv_std  # ∂/∂mean
    inputs = [spec.network_input(obs), *activations[:-1]]
    for layer in range(len(spec.layer_sizes) - 1, -1, -1):
        h = inputs[layer]
        np.matmul(h.transpose(0, 2, 1), dz, out=grad_parts[2 * layer])
        grad_parts[2 * layer + 1][:] = dz.sum(axis=1, keepdims=True)
        if layer:
            n, rows, width = h.shape  # dL/dh into a reused array; two alternate (reads dz)
            target = _scratch(scratch, n, rows, width, f"dh{layer % 2}")
            dz = np.matmul(dz, parts[2 * layer].transpose(0, 2, 1), out=target)  # ∂/∂h
            if spec.activation == "tanh":
                slope = np.multiply(h, h, out=_scratch(scratch, n, rows, width, "slope"))
                dz *= np.subtract(1.0, slope, out=slope)  # 1 - h*h, as `1.0 - h * h` did
            else:
                dz *= h > 0


def score_gradient(
    spec: PolicySpec,
    theta: Tensor,
    obs: np.ndarray,
    actions: np.ndarray,
    activations: list[np.ndarray] | None,
    weights: np.ndarray,
    device: str = "cpu",
    shards: ParticleShards | None = None,
) -> Tensor:
    """The estimators' entry point: analytic backprop on CPU, torch autograd elsewhere."""
    if device == "cpu" and activations is not None:
        grad = analytic_score_gradient(
            spec, theta.numpy(), obs, actions, activations, weights, shards
        )
        return torch.from_numpy(grad)
    return score_function_gradient(spec, theta, obs, actions, weights, device)


def score_function_gradient(
    spec: PolicySpec,
    theta: Tensor,
    obs: np.ndarray,
    actions: np.ndarray,
    weights: np.ndarray,
    device: str = "cpu",
) -> Tensor:
    """∇J_i ≈ (1/M) Σ_t ∇ log π_θi(a_t|s_t) · w_t for every particle at once: ``[n, d]``.

    ``obs [n, M, obs_dim]``, ``actions [n, M(, act_dim)]``, ``weights [n, M]`` (advantages).
    Particles do not share parameters, so one backward of the summed objective yields each
    particle's own gradient in its row.
    """
    # One contiguous leaf per layer: gradients accumulate in place across chunks, instead of
    # every chunk's backward scattering each layer's slice into a fresh zero [n, d] tensor.
    parts = [p.detach().to(device).contiguous().requires_grad_(True) for p in spec.split(theta)]
    m = obs.shape[1]
    for s in range(0, m, CHUNK):
        o = torch.from_numpy(obs[:, s : s + CHUNK]).to(device)
        a = torch.from_numpy(actions[:, s : s + CHUNK]).to(device)
        w = torch.from_numpy(weights[:, s : s + CHUNK]).to(device, torch.float32)
        objective = (log_prob(spec, parts, o, a) * w).sum() / m
        objective.backward()
    n = theta.shape[0]
    return torch.cat([p.grad.reshape(n, -1) for p in parts], dim=1).to(theta.device)
