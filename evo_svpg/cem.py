"""Separable CEM as in CEM-RL (Pourchot & Sigaud 2019, ``ES.py: sepCEM``), batched over particles.

Every particle ``i`` is the mean of its own diagonal Gaussian ``N(μ_i, diag(var_i))``; all
functions act on ``[n, ...]`` tensors at once, so ``n`` searches cost one tensor op.

* mirrored sampling: ``z = μ ± √var ⊙ ε`` for ``K/2`` draws ``ε ~ N(0, I)``;
* log-rank elite weights ``w_r ∝ log((k+1)/r)``, ``r = 1..k``, normalised to sum 1;
* ``μ' = Σ_r w_r z_(r)`` over the ``k`` best candidates;
* ``var' = (1/k) Σ_r w_r (z_(r) − μ)² + ε_t``: CEM-RL's update, *including* its extra ``1/k``
  on top of the normalised weights (it shrinks the variance fast, toward the floor ``ε_t``);
* ``ε_t = 0.95 ε_{t−1} + 0.05 · limit`` (ε_0 = 1e-3, limit = 1e-5 in CEM-RL), decayed *before*
  it is added, as in CEM-RL's ``tell`` (the first update adds ε_1 = 9.505e-4).
"""

from __future__ import annotations

import torch
from torch import Tensor

FLOOR_DECAY = 0.95  # CEM-RL's damping factor τ


def log_rank_weights(k: int) -> Tensor:
    """``[k]`` weights ``log((k+1)/r)`` for ranks ``r = 1..k``, normalised to sum 1."""
    ranks = torch.arange(1, k + 1, dtype=torch.float64)
    w = torch.log(torch.tensor(k + 1.0, dtype=torch.float64) / ranks)
    return w / w.sum()


def mirrored_samples(mean: Tensor, var: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``[n, k, d]`` candidates ``μ ± √var ⊙ ε``: the first ``k/2`` are ``+ε``, the rest ``−ε``."""
    if k % 2:
        raise ValueError(f"mirrored sampling needs an even number of candidates, got {k}")
    n, d = mean.shape
    eps = torch.randn(n, k // 2, d, generator=generator, dtype=mean.dtype)
    step = var.sqrt().unsqueeze(1) * eps
    return mean.unsqueeze(1) + torch.cat([step, -step], dim=1)


def sep_cem_update(
    mean: Tensor, candidates: Tensor, fitness: Tensor, n_elites: int, floor: float
) -> tuple[Tensor, Tensor, Tensor]:
    """New ``(mean [n, d], var [n, d], elite_index [n, k])`` from evaluated candidates.

    ``candidates [n, m, d]`` with ``fitness [n, m]`` (higher is better) were drawn around
    ``mean [n, d]``; the ``n_elites`` best of each row define the new distribution.
    """
    n, m, d = candidates.shape
    if not 1 <= n_elites <= m:
        raise ValueError(f"n_elites={n_elites} must be in [1, {m}] (the number of candidates)")
    elite_index = torch.argsort(fitness, dim=1, descending=True, stable=True)[:, :n_elites]
    elites = torch.gather(candidates, 1, elite_index.unsqueeze(-1).expand(n, n_elites, d))
    w = log_rank_weights(n_elites).to(candidates.dtype).view(1, n_elites, 1)
    new_mean = (w * elites).sum(dim=1)
    new_var = (w * (elites - mean.unsqueeze(1)).square()).sum(dim=1) / n_elites + floor
    return new_mean, new_var, elite_index


def next_floor(floor: float, limit: float) -> float:
    """``ε_{t+1} = 0.95 ε_t + 0.05 · limit``: the floor decays geometrically to ``limit``."""
    return FLOOR_DECAY * floor + (1 - FLOOR_DECAY) * limit
