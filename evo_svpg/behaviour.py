"""Behaviour descriptors: a few numbers per episode that say *what the policy did*.

Novelty search and the quality-diversity measures compare episodes by these numbers instead of
by their return. A descriptor is a set of per-step features, each reduced over the episode by
``min``, ``max``, ``sum`` or ``last``, then finalised into ``D`` numbers. Written that way it is
computed incrementally, batched over every env at once, both over the sampler's ``[T, n, E]``
buffers and inside the evaluator's step loop, and an episode that an iteration boundary cuts
simply carries its running reductions into the next iteration.

Features read ``x = observation[0]`` and ``v = observation[1]`` (MountainCar: position and
velocity) and the *effort* of an action: the continuous action clipped to its bounds and scaled
to [−1, 1], or for ``k`` discrete actions ``a − (k−1)/2`` scaled to [−1, 1] (MountainCar: push
left −1, none 0, right +1). A step's position features use both its start and end state, so the
episode's first and last states both count.

=============== ========================================== ====================================
name            descriptor (D)                             source
=============== ========================================== ====================================
``extremes``    (min x, max x)                             how far the car swung either way
``final_state`` (final x, final v)                         NS-ES (final position)
``gep``         (max x, max x − min x, Σ 0.1·effort²)      GEP-PG's ``CMCRepresenter``
=============== ========================================== ====================================

Bounds (for the grid archive and for scaling to [0, 1] before novelty distances) come from
the observation space and the time limit: a GEP-PG energy is at most ``0.1 × max_episode_steps``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from evo_svpg.policy import PolicySpec

Bounds = list[tuple[float, float]]
REDUCTIONS = ("min", "max", "sum", "last")
_START = {"min": np.inf, "max": -np.inf, "sum": 0.0, "last": np.nan}  # before any step


@dataclass(frozen=True)
class Descriptor:
    """``features(x0, x1, v1, effort) -> [..., F]`` reduced by ``reductions``, then ``finalize``.

    ``x0``/``x1`` are the positions at the start/end of a step, ``v1`` the velocity at its end,
    ``effort`` the scaled action (all ``[...]``). ``bounds(x_range, v_range, max_steps)``.
    """

    labels: tuple[str, ...]
    features: Callable[..., np.ndarray]
    reductions: tuple[str, ...]
    finalize: Callable[[np.ndarray], np.ndarray]
    bounds: Callable[[tuple[float, float], tuple[float, float], int], Bounds]

    @property
    def dim(self) -> int:
        return len(self.labels)


def _gep_finalize(acc: np.ndarray) -> np.ndarray:
    return np.stack([acc[:, 0], acc[:, 0] - acc[:, 1], acc[:, 2]], axis=1)


DESCRIPTORS: dict[str, Descriptor] = {
    "extremes": Descriptor(
        ("min x", "max x"),
        lambda x0, x1, v1, u: np.stack([np.minimum(x0, x1), np.maximum(x0, x1)], axis=-1),
        ("min", "max"),
        lambda acc: acc,
        lambda xr, vr, steps: [xr, xr],
    ),
    "final_state": Descriptor(
        ("final x", "final v"),
        lambda x0, x1, v1, u: np.stack([x1, v1], axis=-1),
        ("last", "last"),
        lambda acc: acc,
        lambda xr, vr, steps: [xr, vr],
    ),
    "gep": Descriptor(
        ("max x", "max x − min x", "energy"),
        lambda x0, x1, v1, u: np.stack(
            [np.maximum(x0, x1), np.minimum(x0, x1), 0.1 * u * u], axis=-1
        ),
        ("max", "min", "sum"),
        _gep_finalize,
        lambda xr, vr, steps: [xr, (0.0, xr[1] - xr[0]), (0.0, 0.1 * steps)],
    ),
}


def bounded(values) -> bool:
    """Finite and not a placeholder: gymnasium marks unbounded boxes with ±inf or ±float32 max."""
    values = np.asarray(values, dtype=np.float64)
    return bool((np.abs(values) < 1e30).all())


def get_descriptor(name: str) -> Descriptor:
    if name not in DESCRIPTORS:
        raise ValueError(f"descriptor={name!r} is not valid; choose one of {list(DESCRIPTORS)}")
    return DESCRIPTORS[name]


def effort(spec: PolicySpec, actions: np.ndarray) -> np.ndarray:
    """Actions ``[..., act_dim]`` or ``[...]`` (discrete) as a scaled effort ``[...]`` in [−1, 1]
    (continuous actions of several dimensions: root mean square of the scaled components)."""
    if spec.discrete:
        half = max(spec.act_dim - 1, 1) / 2
        return (actions.astype(np.float64) - (spec.act_dim - 1) / 2) / half
    low, high = np.asarray(spec.action_low), np.asarray(spec.action_high)
    scaled = (np.clip(actions, low, high) - (low + high) / 2) / ((high - low) / 2)
    return np.sqrt(np.mean(scaled * scaled, axis=-1))


def scale(descriptors: np.ndarray, bounds: Bounds) -> np.ndarray:
    """Descriptors ``[k, D]`` mapped to [0, 1] per dimension (novelty distances weigh each
    dimension alike, whatever its unit)."""
    lo, hi = np.array(bounds, dtype=np.float64).T
    return (descriptors - lo) / (hi - lo)


class Accumulator:
    """Running reductions ``[N, F]`` of the episodes going on in ``N`` envs."""

    def __init__(self, descriptor: Descriptor, n_envs: int) -> None:
        self.descriptor = descriptor
        red = np.array(descriptor.reductions)
        self._cols = {r: np.flatnonzero(red == r) for r in REDUCTIONS}
        self._init = np.array([_START[r] for r in descriptor.reductions])
        self.values = np.tile(self._init, (n_envs, 1))

    def update(self, feats: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Fold one step's features ``[N, F]`` (or ``[len(rows), F]`` for ``rows``) in."""
        acc = self.values if rows is None else self.values[rows]
        c = self._cols
        acc[:, c["min"]] = np.minimum(acc[:, c["min"]], feats[:, c["min"]])
        acc[:, c["max"]] = np.maximum(acc[:, c["max"]], feats[:, c["max"]])
        acc[:, c["sum"]] += feats[:, c["sum"]]
        acc[:, c["last"]] = feats[:, c["last"]]
        if rows is not None:
            self.values[rows] = acc

    def finish(self, rows: np.ndarray) -> np.ndarray:
        """Descriptors ``[len(rows), D]`` of the episodes ending in ``rows``; those rows restart."""
        out = self.descriptor.finalize(self.values[rows])
        self.values[rows] = self._init
        return out

    def peek(self) -> np.ndarray:
        """Descriptors ``[N, D]`` of the episodes so far (not restarted)."""
        return self.descriptor.finalize(self.values.copy())


@dataclass
class Behaviours:
    """Descriptors of one rollout's episode segments.

    ``descriptors [k, D]`` are the episodes that ended in the rollout, in the order of
    ``np.nonzero(done [T, n·E])`` (time-major), with their ``step [k]``, ``particle [k]``,
    ``env [k]`` (env index within the particle) and undiscounted ``returns [k]``.
    ``partial [n, E, D]`` describes each env's episode *so far* where the iteration boundary
    cut it (``partial_valid [n, E]``), with ``partial_returns [n, E]``.
    """

    descriptors: np.ndarray
    step: np.ndarray
    particle: np.ndarray
    env: np.ndarray
    returns: np.ndarray
    partial: np.ndarray
    partial_valid: np.ndarray
    partial_returns: np.ndarray
    bounds: Bounds

    def particle_means(self) -> np.ndarray:
        """``[n, D]``: each particle's mean finished-episode descriptor; a particle with no
        finished episode in this rollout uses the mean of its cut episodes so far."""
        n, _, dim = self.partial.shape
        sums = np.zeros((n, dim))
        np.add.at(sums, self.particle, self.descriptors)
        counts = np.bincount(self.particle, minlength=n)
        mean = sums / np.maximum(counts, 1)[:, None]
        valid = self.partial_valid[..., None]
        cut_mean = (np.where(valid, self.partial, 0.0)).sum(1) / np.maximum(valid.sum(1), 1)
        return np.where(counts[:, None] > 0, mean, cut_mean)


class Describer:
    """Computes :class:`Behaviours` from a sampler's buffers, carrying cut episodes over."""

    def __init__(
        self,
        name: str,
        spec: PolicySpec,
        x_range: tuple[float, float],
        v_range: tuple[float, float],
        max_steps: int,
        n_envs: int,
    ) -> None:
        if spec.obs_dim < 2:
            raise ValueError(
                f"descriptor={name!r} reads observation[0] and [1] (x, v), but the observation "
                f"has {spec.obs_dim} dimension(s)"
            )
        self.name, self.spec = name, spec
        self.descriptor = get_descriptor(name)
        self.bounds = self.descriptor.bounds(x_range, v_range, max_steps)
        if not bounded(self.bounds):
            raise ValueError(
                f"descriptor={name!r} needs finite observation bounds for x and v; this env's "
                f"are x {x_range}, v {v_range}"
            )
        self.acc = Accumulator(self.descriptor, n_envs)

    @classmethod
    def for_env(cls, name: str, spec: PolicySpec, env, n_envs: int | None = None) -> Describer:
        low, high = env.single_observation_space.low, env.single_observation_space.high
        return cls(
            name, spec, (float(low[0]), float(high[0])), (float(low[1]), float(high[1])),
            env.max_episode_steps, env.num_envs if n_envs is None else n_envs,
        )  # fmt: skip

    def step_features(self, obs: np.ndarray, next_obs: np.ndarray, actions: np.ndarray):
        """Features ``[..., F]`` of transitions ``obs -> next_obs`` under ``actions``."""
        return self.descriptor.features(
            obs[..., 0].astype(np.float64),
            next_obs[..., 0].astype(np.float64),
            next_obs[..., 1].astype(np.float64),
            effort(self.spec, actions),
        )

    def describe(
        self,
        obs: np.ndarray,
        final_obs: np.ndarray,
        actions: np.ndarray,
        done: np.ndarray,
        running_returns: np.ndarray,
    ) -> Behaviours:
        """Buffers ``[T, n, E, ...]``; ``done [T, n, E]`` marks true episode ends (not the
        iteration cut); ``running_returns [T, n·E]`` the return so far after each step."""
        t_max, n, e = done.shape
        feats = self.step_features(obs, final_obs, actions).reshape(t_max, n * e, -1)
        done_flat = done.reshape(t_max, n * e)
        t_idx, slot = np.nonzero(done_flat)
        out = np.empty((t_idx.size, self.descriptor.dim))
        pos = 0
        for t in range(t_max):  # vectorised over all n·E envs; T numpy calls per iteration
            self.acc.update(feats[t])
            rows = slot[pos : pos + np.count_nonzero(done_flat[t])]
            if rows.size:
                out[pos : pos + rows.size] = self.acc.finish(rows)
                pos += rows.size
        cut_valid = ~done_flat[-1]
        return Behaviours(
            descriptors=out,
            step=t_idx,
            particle=slot // e,
            env=slot % e,
            returns=running_returns[t_idx, slot],
            partial=self.acc.peek().reshape(n, e, -1),
            partial_valid=cut_valid.reshape(n, e),
            partial_returns=running_returns[-1].reshape(n, e),
            bounds=self.bounds,
        )

    def reset(self) -> None:
        """Forget the running episodes (their envs were restarted)."""
        self.acc.values[:] = self.acc._init

    def state_dict(self) -> dict:
        return {"values": self.acc.values.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.acc.values = state["values"].copy()
