"""Interface of batched environments, and the shared machinery of the numpy fast paths.

A :class:`BatchedEnv` steps ``num_envs`` copies of one environment with a single call and
resets finished copies in that same call (*same-step* autoreset): every ``step`` is a real
transition of every copy, and the observation returned for a copy that just ended is already
the first observation of its next episode (the true last observation is in ``final_obs``).

:class:`NumpyBatchedEnv` implements the episode bookkeeping (time limit, autoreset, RNG,
snapshots) once; each fast-path environment only supplies its initial-state distribution and
its vectorised dynamics.
"""

from __future__ import annotations

import abc
import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium
import numpy as np

from evo_svpg.registry import FAST_PATHS, OBSERVATION_ROLES
from evo_svpg.streams import ResetDraws

__all__ = [
    "BatchedEnv",
    "NumpyBatchedEnv",
    "ObservationRoles",
    "StepResult",
    "check_num_envs",
    "register_fast_path",
]


@dataclass(frozen=True)
class ObservationRoles:
    """Which observation entries are a position ``x`` and a velocity ``v``: what behaviour
    descriptors and the QD visitation counts read. An env declares them in its own module
    (:func:`register_fast_path`, or ``OBSERVATION_ROLES.add(env_id, ...)`` for a gymnasium id);
    descriptors refuse an env that declares none."""

    position: int
    velocity: int

    @property
    def indices(self) -> list[int]:
        return [self.position, self.velocity]


def register_fast_path(
    cls: type[NumpyBatchedEnv], roles: ObservationRoles | None = None
) -> type[NumpyBatchedEnv]:
    """Make ``cls`` the batched implementation of ``cls.env_id`` (and declare its roles)."""
    FAST_PATHS.add(cls.env_id, cls)
    if roles is not None:
        OBSERVATION_ROLES.add(cls.env_id, roles)
    return cls


@dataclass
class StepResult:
    """Outcome of one :meth:`BatchedEnv.step` over all ``N`` environments.

    Every field is a fresh array owned by the caller (the environment keeps no reference).
    """

    obs: np.ndarray
    """``[N, obs_dim]`` float32: observation to act on next (the reset observation for envs
    that ended in this step)."""
    reward: np.ndarray
    """``[N]`` float64: reward of this transition."""
    terminated: np.ndarray
    """``[N]`` bool: the MDP reached a terminal state."""
    truncated: np.ndarray
    """``[N]`` bool: the time limit was reached (``elapsed >= max_episode_steps``, as in
    gymnasium's ``TimeLimit``; may be True together with ``terminated``)."""
    final_obs: np.ndarray
    """``[N, obs_dim]`` float32: true next observation of this transition, before any
    autoreset; equal to ``obs`` for envs that did not end."""


class BatchedEnv(abc.ABC):
    """``num_envs`` copies of one environment, stepped together with same-step autoreset."""

    env_id: str
    num_envs: int
    max_episode_steps: int
    single_observation_space: gymnasium.spaces.Box
    single_action_space: gymnasium.spaces.Discrete | gymnasium.spaces.Box

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every env; return the ``[N, obs_dim]`` float32 initial observations.

        With a seed the environment's generator is re-created from it first; without one the
        current random stream continues (as with gymnasium's ``reset()``).
        """

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> StepResult:
        """Advance every env by one transition.

        ``actions`` is ``[N]`` of ints for a Discrete action space, ``[N, act_dim]`` of floats
        for a Box action space. Action values are not validated (for speed); invalid values
        give unspecified results.
        """

    @abc.abstractmethod
    def get_state(self) -> dict[str, Any]:
        """Picklable snapshot (arrays copied) from which :meth:`set_state` continues
        bit-identically: physics state, elapsed steps and the generator state."""

    @abc.abstractmethod
    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot taken by :meth:`get_state` of an env with the same id and
        ``num_envs``."""

    @property
    @abc.abstractmethod
    def is_fast_path(self) -> bool:
        """True for the vectorised numpy implementations, False for the gymnasium wrapper."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release resources (no-op unless overridden)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env_id!r}, num_envs={self.num_envs})"


def check_num_envs(num_envs: Any) -> int:
    """Validate ``num_envs`` (an int ≥ 1) and return it as a Python int."""
    if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer):
        raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got num_envs={num_envs}")
    return int(num_envs)


class NumpyBatchedEnv(BatchedEnv):
    """Episode bookkeeping shared by the numpy fast paths.

    Subclasses set ``env_id``, ``max_episode_steps`` and the spaces, keep their physics state in
    the preallocated arrays named by ``_STATE_FIELDS`` (updated in place; snapshots copy them
    back with ``np.copyto`` so views stay valid) and implement:

    * ``_reset_rows(idx)``: draw the initial states of envs ``idx`` (an increasing index
      array) with ONE call to ``self.rng`` using gymnasium's per-env draw layout (rows in env
      order), store them and return their ``[k, obs_dim]`` float32 observations;
    * ``_advance(actions)``: one transition of every env, returning ``(next_obs float32
      [N, obs_dim], reward float64 [N], terminated bool [N])`` as fresh arrays.
    """

    _STATE_FIELDS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, num_envs: int, seed: int | None = None) -> None:
        self.num_envs = check_num_envs(num_envs)
        # np.random.default_rng(seed) is exactly gymnasium.utils.seeding.np_random(seed).
        self.rng = np.random.default_rng(seed)
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self._all_rows = np.arange(self.num_envs)
        self._needs_reset = True
        self._reset_draws: ResetDraws | None = None

    def use_reset_draws(self, draws: ResetDraws) -> None:
        """Draw each slot's reset states from its particle's own streams
        (:mod:`evo_svpg.streams`) instead of one generator in slot order: what a sharded
        population needs. The sampler keys them (``draws.step``); snapshots then hold none."""
        if draws.rows.size != self.num_envs:
            raise ValueError(
                f"{self!r}: reset draws made for {draws.rows.size} slots, this env has "
                f"{self.num_envs}"
            )
        self.rng = self._reset_draws = draws

    def _draw_initial(self, idx: np.ndarray) -> np.ndarray:
        if self._reset_draws is not None:
            self._reset_draws.begin(idx)
        return self._reset_rows(idx)

    @property
    def is_fast_path(self) -> bool:
        return True

    # -- to implement -------------------------------------------------------------------
    @abc.abstractmethod
    def _reset_rows(self, idx: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    # -- BatchedEnv -----------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            if self._reset_draws is not None:
                raise ValueError(f"{self!r} draws from per-particle streams: reset() takes no seed")
            self.rng = np.random.default_rng(seed)
        obs = self._draw_initial(self._all_rows)
        self._elapsed[:] = 0
        self._needs_reset = False
        return obs

    def step(self, actions: np.ndarray) -> StepResult:
        if self._needs_reset:
            raise RuntimeError(f"{self!r}: call reset() before step()")
        final_obs, reward, terminated = self._advance(actions)
        elapsed = self._elapsed
        elapsed += 1
        truncated = elapsed >= self.max_episode_steps
        done = terminated | truncated
        obs = final_obs.copy()
        if done.any():
            idx = np.flatnonzero(done)
            obs[idx] = self._draw_initial(idx)
            elapsed[idx] = 0
        return StepResult(obs, reward, terminated, truncated, final_obs)

    def get_state(self) -> dict[str, Any]:
        return {
            "env_id": self.env_id,
            "num_envs": self.num_envs,
            "physics": {name: getattr(self, name).copy() for name in self._STATE_FIELDS},
            "elapsed": self._elapsed.copy(),
            "needs_reset": self._needs_reset,
            # Per-particle reset draws are keyed by the sampler's rollout count: nothing here.
            "rng": (
                {"per_particle": True}
                if self._reset_draws is not None
                else copy.deepcopy(self.rng.bit_generator.state)
            ),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("env_id") != self.env_id or state.get("num_envs") != self.num_envs:
            raise ValueError(
                f"{self!r}: cannot restore a snapshot of env_id={state.get('env_id')!r}, "
                f"num_envs={state.get('num_envs')!r}"
            )
        physics = state["physics"]
        if set(physics) != set(self._STATE_FIELDS):
            raise ValueError(
                f"{self!r}: snapshot physics fields {sorted(physics)} do not match "
                f"{sorted(self._STATE_FIELDS)}"
            )
        arrays = [(getattr(self, name), np.asarray(physics[name])) for name in self._STATE_FIELDS]
        elapsed = np.asarray(state["elapsed"])
        for dst, src in [*arrays, (self._elapsed, elapsed)]:
            if src.shape != dst.shape:
                raise ValueError(f"{self!r}: snapshot array of shape {src.shape}, need {dst.shape}")
        per_particle = "per_particle" in state["rng"]
        if per_particle != (self._reset_draws is not None):
            kinds = ("one stream", "per particle")
            raise ValueError(
                f"{self!r}: the snapshot's reset draws are {kinds[per_particle]}, this env's "
                f"are {kinds[self._reset_draws is not None]}"
            )
        if not per_particle:
            rng = np.random.default_rng()
            rng.bit_generator.state = copy.deepcopy(state["rng"])
        for dst, src in arrays:
            np.copyto(dst, src, casting="same_kind")
        np.copyto(self._elapsed, elapsed, casting="same_kind")
        if not per_particle:
            self.rng = rng
        self._needs_reset = bool(state["needs_reset"])
