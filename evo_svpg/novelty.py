"""kNN novelty of behaviour descriptors and a bounded novelty archive, as in NS-ES.

Novelty of a descriptor ``b`` is the mean *Euclidean* (not squared) distance to its ``k``
nearest neighbours in a reference set (NS-ES, Conti et al. 2018; uber-research/
deep-neuroevolution ``compute_novelty_vs_archive``, ``k = 10``). Here the reference set is the
archive ∪ the current population's descriptors; a query that is itself a population member
skips its own entry (``exclude``). With fewer than ``k`` reference points the mean is over all
available ones, with none the novelty is 0.

Insertion rule: the archive stores exactly what the caller adds; the engine adds each particle's
mean descriptor once per iteration, as NS-ES adds the updated parent's mean behaviour. The archive
is a FIFO ring buffer of ``max_size`` entries: while it is not full, entries are appended; once it
is full, each new entry overwrites the oldest one. An ``add`` of more than ``max_size`` rows at
once keeps only its last ``max_size`` rows (as adding them one by one would).

Speed: the archive (up to ~1e5 entries of dimension 2-3) is searched with a ``cKDTree`` built
lazily and cached until the next ``add``; the population (a few hundred rows at most) by brute
force. The ``k`` nearest of each part are merged, which gives the exact ``k`` nearest of the union.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from evo_svpg.checks import check_int, check_rows

_CHUNK_ELEMENTS = 1 << 22  # bound on the [q, r, D] temporary of a brute-force block (32 MiB)
_MIN_CAPACITY = 1024  # first allocation of the ring buffer; it doubles up to max_size


def _check_exclude(exclude: np.ndarray | None, q: int, r: int, into: str) -> np.ndarray:
    """``[q]`` intp: each query's own index into ``into`` (of ``r`` rows), ``-1`` for none."""
    if exclude is None:
        return np.full(q, -1, dtype=np.intp)
    e = np.asarray(exclude)
    if e.shape != (q,):
        raise ValueError(f"exclude must have shape ({q},) (one entry per query), got {e.shape}")
    if q == 0:
        return np.full(0, -1, dtype=np.intp)
    if not np.issubdtype(e.dtype, np.integer):
        raise ValueError(f"exclude must hold integers, got dtype {e.dtype}")
    bad = (e < -1) | (e >= r)
    if bad.any():
        raise ValueError(
            f"exclude must be -1 (none) or an index into {into} in [0, {r - 1}], "
            f"got {e[bad][0]} at query {np.flatnonzero(bad)[0]}"
        )
    return e.astype(np.intp)


def _nearest_brute(queries: np.ndarray, points: np.ndarray, exclude: np.ndarray, m: int):
    """``[q, m]`` distances from each query to its ``m`` nearest points (unordered).

    ``exclude [q]``: each query's own row of ``points`` is set to ``inf`` before selecting, so it
    is among the ``m`` only if fewer than ``m`` other points exist. Blocks of queries bound the
    ``[q, r, D]`` temporary.
    """
    q, r = len(queries), len(points)
    out = np.empty((q, m))
    if m == 0 or q == 0:
        return out
    step = max(1, _CHUNK_ELEMENTS // max(1, r * points.shape[1]))
    for start in range(0, q, step):
        rows = slice(start, start + step)
        d = np.sqrt(np.square(queries[rows, None, :] - points[None, :, :]).sum(axis=-1))
        own = np.flatnonzero(exclude[rows] >= 0)
        d[own, exclude[rows][own]] = np.inf
        out[rows] = d if m == r else np.partition(d, m - 1, axis=1)[:, :m]
    return out


def _mean_smallest(dist: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``[q]`` mean of the ``count[i]`` smallest entries of row ``i`` of ``dist [q, c]``; 0 if none.

    Rows are sorted first so the sum runs in ascending order however the candidates were
    gathered (tree + brute force or brute force alone agree up to distance rounding).
    """
    if dist.shape[1] == 0:
        return np.zeros(len(dist))
    ordered = np.sort(dist, axis=1)
    take = np.arange(dist.shape[1]) < count[:, None]
    total = np.where(take, ordered, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def knn_novelty(
    queries: np.ndarray, points: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> np.ndarray:
    """``[q]`` float64 mean Euclidean distance of each query ``[q, D]`` to its ``k`` nearest points.

    ``points [r, D]`` is the reference set; ``exclude [q]`` int gives each query's own row in
    ``points`` (skipped; ``-1``: skip none). With fewer than ``k`` available points the mean is over
    all of them, with none it is 0. Brute force: meant for small reference sets and as the
    definition :class:`NoveltyArchive` is tested against.
    """
    k = check_int(k, "k", 1)
    queries = check_rows(queries, "queries")
    points = check_rows(points, "points", queries.shape[1])
    exclude = _check_exclude(exclude, len(queries), len(points), "points")
    dist = _nearest_brute(queries, points, exclude, min(k, len(points)))
    return _mean_smallest(dist, np.minimum(k, len(points) - (exclude >= 0)))


class NoveltyArchive:
    """FIFO ring buffer of past descriptors; novelty against it ∪ the current population."""

    def __init__(self, dim: int, k: int = 10, max_size: int = 100_000) -> None:
        self.dim = check_int(dim, "dim", 1)
        self.k = check_int(k, "k", 1)
        self.max_size = check_int(max_size, "max_size", 1)
        self._buf = np.empty((0, self.dim))  # storage order; grows (doubling) up to max_size rows
        self._pos = 0  # next slot to write; equals _count until the buffer is full
        self._count = 0
        self._tree: cKDTree | None = None

    def __len__(self) -> int:
        return self._count

    @property
    def descriptors(self) -> np.ndarray:
        """``[len, D]`` copy of the contents, oldest first."""
        if self._count < self.max_size:
            return self._buf[: self._count].copy()
        return np.concatenate([self._buf[self._pos :], self._buf[: self._pos]])

    def index(self) -> cKDTree:
        """The archive's KD-tree, built on first use after an ``add`` (novelty() calls it)."""
        # Sliding-midpoint, non-compact nodes: about half the build time of the defaults at 1e5 × 3
        # for the same query time. The tree views _buf, which only add() changes (dropping it).
        if self._tree is None:
            self._tree = cKDTree(self._buf[: self._count], balanced_tree=False, compact_nodes=False)
        return self._tree

    def novelty(
        self, queries: np.ndarray, population: np.ndarray, exclude: np.ndarray | None = None
    ) -> np.ndarray:
        """``[q]`` kNN novelty of ``queries [q, D]`` against the archive ∪ ``population [p, D]``.

        ``exclude [q]`` int: index into ``population`` of each query's own entry, skipped
        (``-1``: none), so a particle is not its own nearest neighbour.
        """
        queries = check_rows(queries, "queries", self.dim)
        population = check_rows(population, "population", self.dim)
        exclude = _check_exclude(exclude, len(queries), len(population), "population")
        if len(queries) == 0:
            return np.zeros(0)
        parts = [_nearest_brute(queries, population, exclude, min(self.k, len(population)))]
        if self._count:
            m = min(self.k, self._count)
            dist, _ = self.index().query(queries, k=m)
            parts.append(dist.reshape(len(queries), m))
        available = self._count + len(population) - (exclude >= 0)
        return _mean_smallest(np.concatenate(parts, axis=1), np.minimum(self.k, available))

    def _reserve(self, rows: int) -> None:
        if rows <= len(self._buf):
            return
        capacity = min(self.max_size, max(rows, 2 * len(self._buf), _MIN_CAPACITY))
        grown = np.empty((capacity, self.dim))
        grown[: self._count] = self._buf[: self._count]
        self._buf = grown

    def add(self, descriptors: np.ndarray) -> None:
        """Append ``descriptors [m, D]``; once ``max_size`` is reached, overwrite the oldest."""
        x = check_rows(descriptors, "descriptors", self.dim)
        m = len(x)
        if m == 0:
            return
        start = self._pos
        if m > self.max_size:  # the dropped rows would have taken the slots before the kept ones
            start, x = (self._pos + m - self.max_size) % self.max_size, x[-self.max_size :]
        new_count = min(self._count + m, self.max_size)
        self._reserve(new_count)
        self._buf[(start + np.arange(len(x))) % self.max_size] = x
        self._pos = (self._pos + m) % self.max_size
        self._count = new_count
        self._tree = None

    def state_dict(self) -> dict:
        """Contents in storage order with the write position: a resumed run continues exactly."""
        return {
            "dim": self.dim,
            "max_size": self.max_size,
            "descriptors": self._buf[: self._count].copy(),
            "position": self._pos,
            "count": self._count,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("dim", "max_size"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"state has {key}={state[key]}, this archive {key}={getattr(self, key)}"
                )
        data = check_rows(state["descriptors"], "state['descriptors']", self.dim)
        count, pos = int(state["count"]), int(state["position"])
        full = count == self.max_size
        if len(data) != count or not 0 <= pos < self.max_size or (not full and pos != count):
            raise ValueError(
                f"inconsistent archive state: {len(data)} rows, count={count}, position={pos}, "
                f"max_size={self.max_size}"
            )
        self._buf, self._count, self._pos = data.copy(), count, pos
        self._tree = None
