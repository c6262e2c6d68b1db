"""SVGD / SVPG update directions over a population of flat parameter vectors.

Particles are the rows of ``theta [n, d]``. With the RBF kernel k(x, y) = exp(-‖x - y‖² / h),
SVGD (Liu & Wang 2016, eq. 8) and SVPG (Liu et al. 2017, eq. 6) move particle i along

    φ(θ_i) = 1/n Σ_j [ k(θ_j, θ_i) s_j + ∇_{θ_j} k(θ_j, θ_i) ],   ∇_{θ_j} k = (2/h)(θ_i - θ_j) k,

summed over all j including j = i: s_j = ∇ log p(θ_j) (SVGD), ∇J(θ_j)/α + ∇ log q0(θ_j) (SVPG).
Matrix form: φ = (K s + (2/h)(θ ⊙ K1 - K θ)) / n, O(n² d) time, O(n² + n d) memory. The tiny
n×n block (distances, median, kernel) runs in float64 numpy, whose per-call overhead is a
fraction of torch's: that matters at n = 16, where a call must stay well under 0.5 ms.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

_CONVENTION_FACTOR = {"svgd": 1.0, "svpg_code": 2.0}  # c in h = med_sq / (c · log(n+1))
BANDWIDTH_CONVENTIONS = tuple(_CONVENTION_FACTOR)
FALLBACK_BANDWIDTH = 1.0  # only when all particles coincide; φ does not depend on h then
# A Gram in theta's dtype is kept if every ‖θ_i-θ_j‖² >= _FAST_MIN_RATIO (‖c_i‖² + ‖c_j‖²): its
# float32 rounding is then <= ~3e-5 relative (measured, d = 6877); else it is redone in float64.
_FAST_MIN_RATIO = 1e-2
_CLONE_TOL = 4.0 * float(np.finfo(np.float64).eps)  # × d × (‖c_i‖² + ‖c_j‖²): Gram rounding bound


def _sq_from_gram(gram: Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """(‖c_i - c_j‖² by the Gram formula, diagonal +inf; ‖c_i‖² + ‖c_j‖²) in float64, or None if
    a squared norm is not finite."""
    g = gram.cpu().numpy().astype(np.float64)
    norms = g.diagonal()
    if not np.isfinite(norms).all():
        return None
    both = np.add.outer(norms, norms)
    sq = both - 2.0 * g
    np.fill_diagonal(sq, np.inf)  # out of the tests below; set to exactly 0 at the end
    return sq, both


def _shift_and_sq(theta: Tensor) -> tuple[Tensor, np.ndarray]:
    """(c = θ - θ_0 ``[n, d]`` in theta's dtype, squared distances ``[n, n]`` float64 numpy)."""
    if theta.dim() != 2 or theta.shape[0] < 1 or theta.shape[1] < 1:
        raise ValueError(f"theta must have shape [n, d] with n, d >= 1, got {tuple(theta.shape)}")
    if not theta.is_floating_point():
        raise ValueError(f"theta must be a floating-point tensor, got {theta.dtype}")
    theta = theta.detach()
    c = theta - theta[0]  # distances are shift-invariant; this keeps the Gram at population scale
    res = _sq_from_gram(c @ c.T)
    if c.dtype != torch.float64 and (res is None or not (res[0] >= _FAST_MIN_RATIO * res[1]).all()):
        c64 = theta.double()  # close pairs: redo in float64 (this shift is exact for float32 θ)
        c64 -= c64[0].clone()
        res = _sq_from_gram(c64 @ c64.T)
    if res is None:
        raise ValueError("theta contains non-finite values (or its squared norms overflow)")
    sq, both = res
    sq[sq <= (_CLONE_TOL * c.shape[1]) * both] = 0.0  # clones -> exactly 0; never negative
    np.fill_diagonal(sq, 0.0)
    return c, sq


def squared_distances(theta: Tensor) -> Tensor:
    """Squared distances ``[n, n]`` (float64, CPU) between the rows of ``theta [n, d]``.

    ‖x‖² + ‖y‖² - 2 x·yᵀ on rows shifted by θ_0 (no [n, n, d] tensor). Entries within the float64
    Gram rounding bound 4·d·eps·(‖x‖² + ‖y‖²) become exactly 0 (clones; never negative): such
    pairs are closer than the formula can resolve, and treating them as clones keeps h sane.
    """
    return torch.from_numpy(_shift_and_sq(theta)[1])


def _median(sorted_v: np.ndarray) -> float:
    """``numpy.median`` of a sorted 1-D array: the middle value, or the mean of the two middle."""
    m = sorted_v.size
    return float(sorted_v[m // 2] if m % 2 else (sorted_v[m // 2 - 1] + sorted_v[m // 2]) / 2.0)


def _bandwidth_from_sq(sq: np.ndarray, convention: str) -> float:
    """Median-heuristic h from squared distances ``[n, n]``; see ``median_bandwidth``."""
    if convention not in _CONVENTION_FACTOR:
        raise ValueError(f"unknown bandwidth {convention!r}; valid: {BANDWIDTH_CONVENTIONS}")
    flat = np.sort(sq, axis=None)
    med_sq = _median(flat)
    if med_sq <= 0.0:  # more than half of the n² entries are 0: clones, or n = 1
        positive = flat[flat > 0.0]
        if positive.size == 0:
            return FALLBACK_BANDWIDTH
        med_sq = _median(positive)
    h = med_sq / (_CONVENTION_FACTOR[convention] * math.log(sq.shape[0] + 1))
    return h if 0.0 < h < math.inf else FALLBACK_BANDWIDTH


def median_bandwidth(theta: Tensor, convention: str = "svgd") -> float:
    """Median-heuristic bandwidth h of k(x, y) = exp(-‖x - y‖² / h) for ``theta [n, d]``.

    med_sq = ``numpy.median`` of the FULL n×n squared-distance matrix, zero diagonal included,
    as in the reference SVGD code and the original SVPG code. ``"svgd"``: h = med_sq / log(n+1)
    (SVGD code, SVPG paper text); ``"svpg_code"``: h = med_sq / (2 log(n+1)) (released SVPG code).

    Fallback if med_sq = 0 (over half the entries are 0, e.g. selection cloned elites): use the
    median of the positive entries instead, i.e. the scale of the distinct particles, so h scales
    with θ and distinct particles still repel with the heuristic's strength (clones stay at k = 1).
    If all particles coincide (or n = 1), k = 1 and ∇k = 0 for every h, so φ (= mean score) does
    not depend on h; ``FALLBACK_BANDWIDTH`` = 1.0 is returned so logs never show 0 or NaN.
    """
    return _bandwidth_from_sq(_shift_and_sq(theta)[1], convention)


def svgd_direction_and_bandwidth(
    theta: Tensor, score: Tensor, bandwidth: float | str = "svgd"
) -> tuple[Tensor, float]:
    """SVGD ascent direction φ ``[n, d]`` (SVGD eq. 8 / SVPG eq. 6) and the bandwidth h used.

    ``theta``, ``score`` ``[n, d]`` (score rows s_j, e.g. ∇ log p(θ_j)); ``bandwidth`` a positive
    float h or a name in ``BANDWIDTH_CONVENTIONS``. φ keeps theta's dtype and device; no autograd
    graph is built. n = 1 gives φ = score exactly. ValueError on mismatched shapes, dtypes or
    devices, on h <= 0, non-finite h or h so small that 2/h overflows theta's dtype.
    """
    if score.shape != theta.shape:
        raise ValueError(f"score shape {tuple(score.shape)} != theta shape {tuple(theta.shape)}")
    if score.dtype != theta.dtype or score.device != theta.device:
        raise ValueError(f"score ({score.dtype}, {score.device}) must match theta's dtype/device")
    if not isinstance(bandwidth, str) and not 0.0 < float(bandwidth) < math.inf:
        raise ValueError(f"bandwidth h must be a positive finite float, got {bandwidth!r}")
    c, sq = _shift_and_sq(theta)  # c = θ - θ_0 (φ is shift-invariant; keeps K θ's terms small)
    h = _bandwidth_from_sq(sq, bandwidth) if isinstance(bandwidth, str) else float(bandwidth)
    if 2.0 / h > torch.finfo(theta.dtype).max:  # the repulsion (2/h)(θ_i - θ_j) k would overflow
        raise ValueError(f"bandwidth h = {h!r} is too small for {theta.dtype}")
    n, k = theta.shape[0], torch.from_numpy(np.exp(sq / -h)).to(theta.device, theta.dtype)
    # (K s + (2/h)(c ⊙ K1 - K c)) / n = c ⊙ (2/(hn)) K1 + (1/n) K (s - (2/h) c): one [n, d] matmul.
    phi = c * k.sum(1, keepdim=True).mul_(2.0 / (h * n))
    phi.addmm_(k, torch.add(score.detach(), c, alpha=-2.0 / h, out=c), alpha=1.0 / n)  # c dead
    return phi, h


def svgd_direction(theta: Tensor, score: Tensor, bandwidth: float | str = "svgd") -> Tensor:
    """SVGD ascent direction φ ``[n, d]``; see ``svgd_direction_and_bandwidth``."""
    return svgd_direction_and_bandwidth(theta, score, bandwidth)[0]


def svpg_direction_and_bandwidth(
    theta: Tensor,
    policy_grad: Tensor,
    alpha: float,
    prior_score: Tensor | None = None,
    bandwidth: float | str = "svpg_code",
) -> tuple[Tensor, float]:
    """SVPG direction (SVPG eq. 6) and h: SVGD with s_j = ∇J(θ_j)/α + ∇ log q0(θ_j).

    ``policy_grad [n, d]`` = ∇J (ascent); ``prior_score [n, d]`` = ∇ log q0, ``None`` for the flat
    prior of the paper. 1/α scales ∇J only, not the prior nor the repulsion (paper and code).
    """
    if not 0.0 < float(alpha) < math.inf:
        raise ValueError(f"alpha (temperature) must be a positive finite float, got {alpha!r}")
    score = policy_grad.detach() / float(alpha)
    if prior_score is not None and prior_score.shape != policy_grad.shape:
        raise ValueError(f"prior_score shape {tuple(prior_score.shape)} != {tuple(score.shape)}")
    if prior_score is not None:
        score = score + prior_score.detach()
    return svgd_direction_and_bandwidth(theta, score, bandwidth)


def svpg_direction(
    theta: Tensor,
    policy_grad: Tensor,
    alpha: float,
    prior_score: Tensor | None = None,
    bandwidth: float | str = "svpg_code",
) -> Tensor:
    """SVPG ascent direction φ ``[n, d]``; see ``svpg_direction_and_bandwidth``."""
    return svpg_direction_and_bandwidth(theta, policy_grad, alpha, prior_score, bandwidth)[0]
