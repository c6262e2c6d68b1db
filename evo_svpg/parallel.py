"""Particle shards computed in parallel threads.

The analytic policy gradient is independent across particles, and numpy releases the GIL
inside matmul and large ufuncs. Splitting the particles into contiguous shards and running
them in threads thus uses several cores with results bit-identical to a single shard, so a
run's ``metrics.csv`` does not depend on the thread count. BLAS itself stays single-threaded (see
:func:`evo_svpg.engine.set_threads`): its spinning worker threads were 10-20x slower whenever
another process shared the 2 vCPUs, whereas idle Python threads just wait. (The sampler's
per-step forward is too small for this: shard threads made it slower at 20 envs per particle.)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class ParticleShards:
    """``map(fn)`` calls ``fn(slice)`` for each contiguous shard of ``n`` particles."""

    def __init__(self, n: int, threads: int) -> None:
        count = max(1, min(threads, n))
        bounds = [round(k * n / count) for k in range(count + 1)]
        self.slices = [slice(a, b) for a, b in itertools.pairwise(bounds)]
        self.pool = ThreadPoolExecutor(count) if count > 1 else None

    def map(self, fn: Callable[[slice], T]) -> list[T]:
        if self.pool is None:
            return [fn(self.slices[0])]
        return list(self.pool.map(fn, self.slices))
