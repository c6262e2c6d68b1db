"""Naive SVGD / SVPG written straight from the equations, for tests only (float64 numpy).

SVPG eq. 6 (Liu et al. 2017), = SVGD eq. 8 (Liu & Wang 2016) with s_j = ∇J(θ_j)/α + ∇ log q0(θ_j):

    φ(θ_i) = 1/n Σ_{j=1..n} [ k(θ_j, θ_i) s_j + ∇_{θ_j} k(θ_j, θ_i) ],  k(x, y) = exp(-‖x - y‖² / h)

Deliberately slow and loop-based: no Gram trick, no matrix form, no shared code with
``evo_svpg.svgd``.
"""

from __future__ import annotations

import math

import numpy as np

CONVENTION_FACTOR = {"svgd": 1.0, "svpg_code": 2.0}


def kernel(x: np.ndarray, y: np.ndarray, h: float) -> float:
    """k(x, y) = exp(-‖x - y‖² / h)."""
    return math.exp(-float(np.sum((x - y) ** 2)) / h)


def grad_kernel_first(x: np.ndarray, y: np.ndarray, h: float) -> np.ndarray:
    """∇_x k(x, y) = -(2/h)(x - y) k(x, y) = (2/h)(y - x) k(x, y)."""
    return (2.0 / h) * (y - x) * kernel(x, y, h)


def squared_distance_matrix(theta: np.ndarray) -> np.ndarray:
    """D[i, j] = Σ_k (θ_ik - θ_jk)², by explicit differences."""
    n = theta.shape[0]
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            out[i, j] = float(np.sum((theta[i] - theta[j]) ** 2))
    return out


def median_bandwidth(theta: np.ndarray, convention: str = "svgd") -> float:
    """h = np.median(D) / (c log(n+1)), D the full matrix; the documented fallback if that is 0."""
    d = squared_distance_matrix(theta)
    med = float(np.median(d))
    if med == 0.0:
        positive = d[d > 0]
        if positive.size == 0:
            return 1.0
        med = float(np.median(positive))
    return med / (CONVENTION_FACTOR[convention] * math.log(theta.shape[0] + 1))


def svgd_phi(theta: np.ndarray, score: np.ndarray, h: float) -> np.ndarray:
    """φ(θ_i) = 1/n Σ_j [k(θ_j, θ_i) s_j + ∇_{θ_j} k(θ_j, θ_i)], all j including j = i."""
    n = theta.shape[0]
    phi = np.zeros_like(theta)
    for i in range(n):
        for j in range(n):
            phi[i] += kernel(theta[j], theta[i], h) * score[j]
            phi[i] += grad_kernel_first(theta[j], theta[i], h)
        phi[i] /= n
    return phi


def svpg_phi(
    theta: np.ndarray,
    policy_grad: np.ndarray,
    alpha: float,
    h: float,
    prior_score: np.ndarray | None = None,
) -> np.ndarray:
    """SVPG eq. 6: s_j = ∇J(θ_j)/α + ∇ log q0(θ_j) (prior None = flat, gradient 0)."""
    prior = np.zeros_like(theta) if prior_score is None else prior_score
    return svgd_phi(theta, policy_grad / alpha + prior, h)
