"""Quality-diversity bookkeeping: a MAP-Elites grid archive and a state-visitation histogram.

:class:`GridArchive` keeps the best objective per cell of a uniform grid over the descriptor
space and reports coverage, QD-score and best, with the definitions of pyribs' ``GridArchive``
(which we do not depend on: it pulls numba, pandas and scikit-learn). Only objectives are kept,
not solutions: the archive measures a run, it does not drive one.

Cell of a value ``x`` along a dimension with bounds ``[lo, hi]`` and ``c`` cells:
``floor(c · (x − lo) / (hi − lo))`` clipped to ``[0, c − 1]``, so values on the upper bound or
outside the bounds go to the edge cells, as in pyribs. (pyribs also adds ``ε = 1e-6`` to
``c · (x − lo)`` before dividing, moving values just below an inner cell boundary up; we do not.)
:class:`Visitation` bins 2-D states the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evo_svpg.checks import check_int, check_rows


def _check_bounds(low: Sequence[float], high: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``([D], [D])`` float64 bounds, finite with ``low < high`` in every dimension."""
    lo, hi = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    if lo.ndim != 1 or lo.shape != hi.shape or lo.size == 0:
        raise ValueError(
            f"bounds must give one (low, high) pair per dimension, got low shape {lo.shape}, "
            f"high shape {hi.shape}"
        )
    for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
        if not (np.isfinite(a) and np.isfinite(b) and a < b):
            raise ValueError(
                f"bounds of dimension {i} must be finite with low < high, got ({a}, {b})"
            )
    return lo, hi


def grid_coordinates(
    x: np.ndarray, low: np.ndarray, high: np.ndarray, cells: np.ndarray
) -> np.ndarray:
    """``[m, D]`` int64 cell of each row of ``x [m, D]`` per dimension, clipped to the edges."""
    scaled = np.floor(cells * (x - low) / (high - low))
    return np.clip(scaled, 0, cells - 1).astype(np.int64)


class GridArchive:
    """Best objective per cell of a uniform grid over the descriptor space (MAP-Elites archive)."""

    def __init__(
        self,
        bounds: Sequence[tuple[float, float]],
        cells: int | Sequence[int],
        offset: float = 0.0,
    ) -> None:
        pairs = [tuple(b) for b in bounds]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise ValueError(f"bounds must be a non-empty sequence of (low, high), got {bounds!r}")
        self.low, self.high = _check_bounds([p[0] for p in pairs], [p[1] for p in pairs])
        dim = len(pairs)
        per_dim = [cells] * dim if isinstance(cells, int | np.integer) else list(cells)
        if len(per_dim) != dim:
            raise ValueError(
                f"cells must be an int or one int per dimension ({dim}), got {cells!r}"
            )
        self.cells = np.array([check_int(c, "cells", 1) for c in per_dim], dtype=np.int64)
        if not np.isfinite(offset):
            raise ValueError(f"offset must be finite, got {offset!r}")
        self.offset = float(offset)
        self._best = np.full(int(np.prod(self.cells)), -np.inf)  # flat, C order; -inf: empty

    @property
    def dim(self) -> int:
        return len(self.cells)

    def cell_index(self, descriptors: np.ndarray) -> np.ndarray:
        """``[m]`` flat (C-order) cell index of each descriptor ``[m, D]``."""
        x = check_rows(descriptors, "descriptors", self.dim)
        coords = grid_coordinates(x, self.low, self.high, self.cells)
        return np.ravel_multi_index(tuple(coords.T), tuple(self.cells))

    def add(self, descriptors: np.ndarray, objectives: np.ndarray) -> None:
        """Each cell keeps the max of its best and the ``objectives [m]`` of ``descriptors [m, D]``
        that fall in it (batched: ``np.maximum.at``)."""
        f = np.asarray(objectives, dtype=np.float64)
        x = np.asarray(descriptors, dtype=np.float64)
        if f.size == 0 and x.size == 0:
            return
        if f.ndim != 1:
            raise ValueError(f"objectives must have shape [m], got {f.shape}")
        if not np.isfinite(f).all():
            i = np.flatnonzero(~np.isfinite(f))[0]
            raise ValueError(f"objectives must be finite, got {f[i]} at row {i}")
        index = self.cell_index(x)
        if len(index) != len(f):
            raise ValueError(
                f"descriptors ({len(index)} rows) and objectives ({len(f)}) must be as long"
            )
        np.maximum.at(self._best, index, f)

    @property
    def filled(self) -> int:
        return int(np.count_nonzero(self._best > -np.inf))

    @property
    def total_cells(self) -> int:
        return self._best.size

    @property
    def coverage(self) -> float:
        """Filled cells / total cells."""
        return self.filled / self.total_cells

    @property
    def qd_score(self) -> float:
        """Σ over filled cells of (best objective − offset): pyribs' ``qd_score``."""
        full = self._best[self._best > -np.inf]
        return float((full - self.offset).sum())

    @property
    def best(self) -> float:
        """Max objective ever added; NaN if nothing was."""
        return float(self._best.max()) if self.filled else float("nan")

    def best_per_cell(self) -> np.ndarray:
        """Best objective per cell, shape ``cells``, NaN where empty (for heatmaps)."""
        out = np.where(self._best > -np.inf, self._best, np.nan)
        return out.reshape(tuple(self.cells))

    def state_dict(self) -> dict:
        """Per-cell bests and their grid (``offset`` only shapes the report: not kept)."""
        return {"low": self.low.copy(), "high": self.high.copy(), "cells": self.cells.copy(),
                "best": self._best.copy()}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        for key in ("low", "high", "cells"):
            if not np.array_equal(state[key], getattr(self, key)):
                raise ValueError(
                    f"state has {key}={state[key]}, this archive {key}={getattr(self, key)}"
                )
        best = np.asarray(state["best"], dtype=np.float64)
        if best.shape != self._best.shape:
            raise ValueError(f"state['best'] must have shape {self._best.shape}, got {best.shape}")
        self._best = best.copy()


class Visitation:
    """Counts of visited (x, v) states on a bins × bins grid over [low, high] (the seed deck's
    'visitation of states' figure)."""

    def __init__(self, low: Sequence[float], high: Sequence[float], bins: int = 50) -> None:
        self.low, self.high = _check_bounds(low, high)
        if self.low.size != 2:
            raise ValueError(f"Visitation is 2-D: low and high need 2 values, got {self.low.size}")
        self.bins = check_int(bins, "bins", 1)
        self.counts = np.zeros((self.bins, self.bins), dtype=np.int64)  # [x-bin, v-bin]

    def add(self, points: np.ndarray) -> None:
        """Count ``points [N, 2]``; values on or beyond the bounds go to the edge bins."""
        p = np.asarray(points, dtype=np.float64)
        if p.size == 0:
            return
        p = check_rows(p, "points", 2)
        coords = grid_coordinates(p, self.low, self.high, np.array([self.bins, self.bins]))
        flat = coords[:, 0] * self.bins + coords[:, 1]
        self.counts += np.bincount(flat, minlength=self.bins**2).reshape(self.bins, self.bins)

    def state_dict(self) -> dict:
        return {"low": self.low.copy(), "high": self.high.copy(), "counts": self.counts.copy()}

    def load_state_dict(self, state: dict) -> None:
        for key in ("low", "high"):
            if not np.array_equal(state[key], getattr(self, key)):
                raise ValueError(
                    f"state has {key}={state[key]}, this histogram {key}={getattr(self, key)}"
                )
        counts = np.asarray(state["counts"])
        if counts.shape != self.counts.shape:
            raise ValueError(
                f"state['counts'] must have shape {self.counts.shape}, got {counts.shape}"
            )
        self.counts = counts.astype(np.int64)
