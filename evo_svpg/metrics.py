"""Training-return statistics that do not depend on which episodes happen to end in an iteration.

``metrics.csv`` has, per iteration and particle, the mean return of the episodes that *ended* in
that iteration. Taken one iteration at a time that is biased: when an episode can outlast an
iteration (MountainCarContinuous: 999-step episodes, 500 steps per env and iteration), a failing
episode ends only every other iteration, and in the iterations between, the "best" and "mean
particle" are taken over the few particles whose short, successful episodes ended.

Here each particle's episodes are **pooled over a window** of iterations: its window return is
the total return of its episodes that ended in the window divided by their number. The window of
a curve point is the last :func:`pooling_window` iterations, the fewest in which every env is
sure to end an episode (``ceil(time limit / steps per env)``), so every particle has a value;
the "final" numbers pool the last 10 % of the run's env steps (at least one pooling window).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FINAL_SHARE = 0.1  # the final window: the iterations in the last 10 % of the env steps
_COLUMNS = ("iteration", "particle", "return_mean", "episodes", "env_steps")


def pooling_window(max_episode_steps: int | None, steps_per_env: int) -> int:
    """Iterations in which every env ends at least one episode (1 without a time limit)."""
    if not max_episode_steps:
        return 1
    return max(1, math.ceil(max_episode_steps / steps_per_env))


@dataclass
class EpisodeTotals:
    """Per iteration and particle: the summed return and the number of episodes that ended.

    ``sums``/``counts`` are ``[I, P]``; ``iteration`` and ``env_steps`` are ``[I]``.
    """

    iteration: np.ndarray
    env_steps: np.ndarray
    sums: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_csv(cls, path: Path) -> EpisodeTotals:
        """Read a run's ``metrics.csv``; ValueError naming the file if it has no rows or is not
        one a run wrote."""
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} is not a run's metrics.csv (no column {missing[0]!r})")
        if not rows:
            raise ValueError(f"{path} has no iterations yet")
        try:
            iteration = np.array([int(r["iteration"]) for r in rows])
            particle = np.array([int(r["particle"]) for r in rows])
            mean = np.array([float(r["return_mean"]) for r in rows])
            count = np.array([int(r["episodes"]) for r in rows])
            steps = np.array([int(r["env_steps"]) for r in rows])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path} has a malformed row ({exc})") from None
        if (iteration < 1).any() or (particle < 0).any() or (count < 0).any():
            raise ValueError(f"{path} has a negative iteration, particle or episode count")
        iterations, row = np.unique(iteration, return_inverse=True)
        sums = np.zeros((iterations.size, particle.max() + 1))
        counts = np.zeros_like(sums, dtype=np.int64)
        sums[row, particle] = np.where(count > 0, mean * count, 0.0)
        counts[row, particle] = count
        env_steps = np.zeros(iterations.size, dtype=np.int64)
        env_steps[row] = steps
        return cls(iterations, env_steps, sums, counts)

    def window_sums(self, window: int) -> tuple[np.ndarray, np.ndarray]:
        """``(sums, counts)`` ``[I, P]`` of the episodes ended in iterations ``(t − window, t]``."""
        zero = np.zeros((1, self.sums.shape[1]))
        cum_s = np.concatenate([zero, np.cumsum(self.sums, axis=0)])
        cum_c = np.concatenate([zero, np.cumsum(self.counts, axis=0)])
        start = np.maximum(np.arange(1, len(self.sums) + 1) - window, 0)
        return cum_s[1:] - cum_s[start], cum_c[1:] - cum_c[start]

    def curves(self, window: int) -> dict[str, np.ndarray]:
        """Per iteration ``[I]``: ``best`` and ``mean`` over particles of their window returns,
        and ``episode_mean``, the mean return of all the window's episodes (NaN where none)."""
        sums, counts = self.window_sums(window)
        return {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            **_pooled(sums, counts, axis=1),
        }

    def final_mask(
        self, window: int, share: float = FINAL_SHARE, end: int | None = None
    ) -> np.ndarray:
        """``[I]`` bool: iterations after ``(1 − share) · end`` env steps (``end``: a budget;
        default the run's last env steps), and at least the last ``window``."""
        end = self.env_steps[-1] if end is None else end
        late = self.env_steps > (1 - share) * end
        late[-window:] = True
        return late

    def final(
        self, window: int, share: float = FINAL_SHARE, end: int | None = None
    ) -> dict[str, float | int | list]:
        """Pooled returns over :meth:`final_mask`: each particle's episodes of the final window
        together (``particle_returns``), their best and mean, and the all-episode mean."""
        late = self.final_mask(window, share, end)
        sums, counts = self.sums[late].sum(axis=0), self.counts[late].sum(axis=0)
        pooled = _pooled(sums[None], counts[None], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_particle = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        return {
            "best": float(pooled["best"][0]),
            "mean": float(pooled["mean"][0]),
            "episode_mean": float(pooled["episode_mean"][0]),
            "particle_returns": per_particle.tolist(),
            "particles_without_episode": int((counts == 0).sum()),
            "first_iteration": int(self.iteration[late][0]),
            "last_iteration": int(self.iteration[-1]),
            "episodes": int(counts.sum()),
        }


class ReturnWindow:
    """Each particle's episode-return sums and counts over the last ``window`` iterations, kept
    by a running training loop (checkpointed) for its progress line and TensorBoard."""

    def __init__(self, window: int, n: int) -> None:
        self.sums = np.zeros((window, n))
        self.counts = np.zeros((window, n), dtype=np.int64)

    def add(self, return_mean: np.ndarray, episodes: np.ndarray) -> tuple[float, float]:
        """Shift in one iteration's ``[n]`` mean returns and episode counts; returns the window's
        ``(best, mean)`` over particles of their pooled returns (NaN if no episode ended)."""
        self.sums = np.roll(self.sums, 1, axis=0)
        self.counts = np.roll(self.counts, 1, axis=0)
        self.sums[0] = np.where(episodes > 0, return_mean * episodes, 0.0)
        self.counts[0] = episodes
        pooled = _pooled(self.sums.sum(axis=0)[None], self.counts.sum(axis=0)[None], axis=1)
        return float(pooled["best"][0]), float(pooled["mean"][0])

    def state_dict(self) -> dict:
        return {"sums": self.sums.copy(), "counts": self.counts.copy()}

    def load_state_dict(self, state: dict) -> None:
        if state["sums"].shape != self.sums.shape:
            shape = state["sums"].shape
            raise ValueError(f"return window of shape {shape}, need {self.sums.shape}")
        self.sums, self.counts = state["sums"].copy(), state["counts"].copy()


def _pooled(sums: np.ndarray, counts: np.ndarray, axis: int) -> dict[str, np.ndarray]:
    has = counts > 0
    per_particle = np.where(has, sums / np.maximum(counts, 1), -np.inf)
    any_ = has.any(axis=axis)
    best = np.where(any_, per_particle.max(axis=axis), np.nan)
    n = np.maximum(has.sum(axis=axis), 1)
    mean = np.where(any_, np.where(has, per_particle, 0.0).sum(axis=axis) / n, np.nan)
    total = counts.sum(axis=axis)
    episode_mean = np.where(total > 0, sums.sum(axis=axis) / np.maximum(total, 1), np.nan)
    return {"best": best, "mean": mean, "episode_mean": episode_mean}
