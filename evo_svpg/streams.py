"""Random streams keyed by particle: results that do not depend on how particles are sharded.

With ``random_streams = "shared"`` (v0.1) one generator draws the action noise of every
particle and one draws the reset states of every env, in slot order: a particle's numbers
depend on how many particles share the sampler. With ``"per-particle"`` everything random
that particle ``p`` meets in its ``c``-th rollout (its action noise, the reset states of its
envs) comes from generators keyed ``(seed, family, p, c)``, indexed by the step. A worker that
samples particles 8–15 thus draws exactly what one process sampling all 16 draws for them, which
is what makes ``--workers N`` give the same ``metrics.csv`` for every N. A checkpoint needs
only the number of rollouts so far, so it resumes with any number of workers.

Draws come in blocks of ``chunk`` steps per particle (``[chunk, *step_shape]`` from each
generator), so their cost per step stays that of one shared draw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

RANDOM_STREAMS = ("per-particle", "shared")
_FAMILY_TAG = 1_000_003  # keeps these keys apart from cfg.subseed's [seed, stream]
_GENERIC_RESET_TAG = 103  # the generic envs' reset seeds

Draw = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]


def keyed_generator(*key: int) -> np.random.Generator:
    """A PCG64 generator seeded by the integer tuple ``key`` (``np.random.SeedSequence``)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


class _Family:
    """One kind of draw (``step_shape`` per particle per step) for the current rollout."""

    def __init__(self, key: int, step_shape: tuple[int, ...], draw: Draw) -> None:
        self.key, self.step_shape, self.draw = key, step_shape, draw
        self.generators: list[np.random.Generator] = []
        self.block: np.ndarray | None = None  # [n, chunk, *step_shape]
        self.block_start = 0
        self.next_start = 0  # first step of the next block the generators will draw


class ParticleStreams:
    """Per-particle random draws of particles ``first … first + n − 1``, step by step.

    :meth:`start` begins a rollout (the ``c``-th, ``c`` = 0, 1, ...); :meth:`at` returns a
    family's draws at step ``t`` of it, ``[n, *step_shape]``. Steps of a family must be asked
    for in increasing order (steps may be skipped).
    """

    def __init__(self, seed: int, first: int, n: int, chunk: int = 64) -> None:
        self.seed, self.first, self.n, self.chunk = seed, first, n, chunk
        self.rollouts = 0  # rollouts started: the key of the next one
        self._families: dict[str, _Family] = {}

    def start(self) -> None:
        """Begin the next rollout: every family draws from fresh generators keyed by it."""
        self._families = {}
        self.rollouts += 1

    def at(self, name: str, t: int, step_shape: tuple[int, ...], draw: Draw) -> np.ndarray:
        """``draw``'s values of family ``name`` at step ``t``: ``[n, *step_shape]`` (a view,
        valid until the family's next block)."""
        family = self._families.get(name)
        if family is None:
            key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
            family = self._families[name] = _Family(key, tuple(step_shape), draw)
            c = self.rollouts - 1
            family.generators = [
                keyed_generator(self.seed, _FAMILY_TAG, family.key, self.first + p, c)
                for p in range(self.n)
            ]
        if family.step_shape != tuple(step_shape):
            raise ValueError(
                f"draws {name!r} of shape {tuple(step_shape)} per particle; this rollout drew "
                f"them with shape {family.step_shape}"
            )
        if t < family.block_start:
            raise RuntimeError(f"{name!r} draws asked for step {t} after a later step")
        while t >= family.next_start:  # skipped blocks are drawn too: the stream stays keyed
            shape = (self.chunk, *family.step_shape)
            family.block = np.stack([family.draw(g, shape) for g in family.generators])
            family.block_start = family.next_start
            family.next_start += self.chunk
        return family.block[:, t - family.block_start]

    def generic_reset_seed(self, envs_per_particle: int) -> int:
        """The ``reset(seed=...)`` for a gymnasium (generic) env of these particles in the
        current rollout: gymnasium seeds copy ``i`` with ``seed + i``, so slot ``s`` of the
        population gets the same seed however the rows are split."""
        restart = keyed_generator(self.seed, _GENERIC_RESET_TAG, self.rollouts)
        return int(restart.integers(2**30)) + self.first * envs_per_particle

    def state_dict(self) -> dict:
        return {"rollouts": self.rollouts}

    def load_state_dict(self, state: dict) -> None:
        self.rollouts = int(state["rollouts"])
        self._families = {}


def _uniform01(g: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return g.random(shape)


def _standard_normal(g: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return g.standard_normal(shape)


class ResetDraws:
    """Stands in for a :class:`~.envs.base.NumpyBatchedEnv`'s generator: a reset of env slot
    ``i·E + e`` at step ``t`` draws particle ``i``'s ``reset`` family at row ``t``.

    The env calls :meth:`begin` with the slots it resets and the sampler sets :attr:`step`
    before each reset; ``random``, ``uniform`` and ``standard_normal`` of size ``len(rows)`` or
    ``(len(rows), m)`` then return one row per reset slot.
    """

    def __init__(self, streams: ParticleStreams, envs_per_particle: int) -> None:
        self.streams, self.envs_per_particle = streams, envs_per_particle
        self.rows = np.arange(streams.n * envs_per_particle)
        self.step = 0
        self._drawn: set[str] = set()  # families drawn for the current rows

    def begin(self, rows: np.ndarray) -> None:
        """The env resets ``rows`` (increasing slot indices) now: one call of its
        ``_reset_rows``, which may draw each family once."""
        self.rows = rows
        self._drawn = set()

    def random(self, size: int | tuple[int, ...]) -> np.ndarray:
        return self._draw("random", _uniform01, size)

    def uniform(self, low=0.0, high=1.0, size: int | tuple[int, ...] = 1) -> np.ndarray:
        """``low + (high − low) · random()``: numpy's own formula for ``uniform``."""
        return low + (np.asarray(high) - low) * self._draw("random", _uniform01, size)

    def standard_normal(self, size: int | tuple[int, ...]) -> np.ndarray:
        return self._draw("normal", _standard_normal, size)

    def _draw(self, kind: str, draw: Draw, size: int | tuple[int, ...]) -> np.ndarray:
        shape = (size,) if isinstance(size, int | np.integer) else tuple(size)
        if shape[0] != self.rows.size or len(shape) > 2:
            raise ValueError(f"reset draws take one row per reset env: size {shape}, rows "
                             f"{self.rows.size}")  # fmt: skip
        m = shape[1] if len(shape) == 2 else 1
        name = f"reset:{kind}:{m}"
        if name in self._drawn:  # a slot's row at a step is one draw: a second would repeat it
            raise RuntimeError(
                f"{name} drawn twice at step {self.step}: an env's _reset_rows must make one "
                "draw of each kind and width per call"
            )
        self._drawn.add(name)
        values = self.streams.at(name, self.step, (self.envs_per_particle, m), draw)  # [n, E, m]
        return values.reshape(-1, m)[self.rows].reshape(shape)
