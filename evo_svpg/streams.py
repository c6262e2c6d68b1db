"""Random streams keyed by particle and env slot: results that do not depend on the sharding.

With ``random_streams = "shared"`` (v0.1) one generator draws the action noise of every
particle and one draws the reset states of every env, in slot order: a particle's numbers
depend on how many particles share the sampler. With ``"per-particle"`` each particle's action
noise and each env slot's reset states come from generators of their own, keyed by the run's
seed and the particle's (slot's) *global* index, so a worker that samples particles 8–15 draws
exactly what one process sampling all 16 draws for them. That is what makes ``--workers N``
give the same ``metrics.csv`` for every N.

Both draw in blocks so that their cost per step stays that of one shared draw:

* :class:`ParticleNoise`: particle ``p``'s noise in its ``c``-th rollout comes from a generator
  keyed ``(seed, p, c)``, ``chunk`` steps at a time (``[chunk, E, k]`` per particle per draw);
* :class:`SlotStreams`: env slot ``s``'s ``b``-th block of ``block`` reset rows comes from a
  generator keyed ``(seed, s, b)``. It stands in for a :class:`~.envs.base.NumpyBatchedEnv`'s
  generator: the env names the rows it resets, then draws as it always does.

Their state is a few counters per particle or slot (arrays in slot order), so a checkpoint can
be split over any number of workers and merged back.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

RANDOM_STREAMS = ("per-particle", "shared")
_ACTION_STREAM, _RESET_STREAM = 101, 102  # tags keeping the two keyed families apart
_KINDS = {"random": 0, "normal": 1}

Draw = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]


def keyed_generator(*key: int) -> np.random.Generator:
    """A PCG64 generator seeded by the integer tuple ``key`` (``np.random.SeedSequence``)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


class ParticleNoise:
    """Action noise ``[n, E, k]`` per step for the particles ``first … first + n − 1``.

    :meth:`start` begins a rollout (the ``c``-th of the run); :meth:`at` (``t`` = 0, 1, ...)
    returns step ``t``'s noise. ``draw(generator, shape)`` makes the noise (Gumbel or normal,
    :func:`evo_svpg.policy.action_noise`).
    """

    def __init__(
        self, seed: int, first: int, n: int, step_shape: tuple[int, ...], draw: Draw,
        chunk: int = 64,
    ) -> None:  # fmt: skip
        self.seed, self.first, self.n, self.draw, self.chunk = seed, first, n, draw, chunk
        self.step_shape = step_shape
        self.rollouts = 0  # rollouts started: the key of the next one
        self._generators: list[np.random.Generator] = []
        self._block: np.ndarray | None = None  # [n, chunk, *step_shape]
        self._block_start = -1

    def start(self) -> None:
        """Begin the next rollout: fresh generators keyed by its number."""
        self._generators = [
            keyed_generator(self.seed, _ACTION_STREAM, self.first + p, self.rollouts)
            for p in range(self.n)
        ]
        self.rollouts += 1
        self._block_start = -self.chunk

    def at(self, t: int) -> np.ndarray:
        """Noise of step ``t`` of the current rollout, ``[n, *step_shape]`` (a view, valid until
        the next call). Steps must be asked for in order, each once."""
        start = t - t % self.chunk
        if start != self._block_start:
            if start != self._block_start + self.chunk:
                raise RuntimeError(f"noise asked for step {t} out of order (block {start})")
            shape = (self.chunk, *self.step_shape)
            parts = [self.draw(g, shape) for g in self._generators]
            self._block = np.stack(parts)
            self._block_start = start
        return self._block[:, t - start]

    def state_dict(self) -> dict:
        return {"rollouts": self.rollouts}

    def load_state_dict(self, state: dict) -> None:
        self.rollouts = int(state["rollouts"])
        self._generators = []


class SlotStreams:
    """A stand-in for an env's ``numpy.random.Generator`` with one stream per env slot.

    The env sets :attr:`rows` (local slot indices, increasing) before each reset, then draws
    ``random``, ``uniform`` or ``standard_normal`` of size ``len(rows)`` or
    ``(len(rows), m)``: row ``j`` of the result is the next draw of slot
    ``first + rows[j]``'s own stream. Slots of this env are ``first … first + num_slots − 1``.
    """

    def __init__(self, seed: int, first: int, num_slots: int, block: int = 32) -> None:
        self.seed, self.first, self.num_slots, self.block = seed, first, num_slots, block
        self.rows = np.arange(num_slots)
        self.epoch = 0  # part of the key: restart() begins fresh streams
        self.drawn: dict[str, np.ndarray] = {}  # "<kind>:<m>" -> rows drawn per slot [N]
        self._blocks: dict[str, np.ndarray] = {}  # [N, block, m]
        self._loaded: dict[str, np.ndarray] = {}  # block index held per slot, −1 none

    # -- the Generator methods the fast-path envs use ------------------------------------
    def random(self, size: int | tuple[int, ...]) -> np.ndarray:
        return self._draw("random", size)

    def uniform(self, low=0.0, high=1.0, size: int | tuple[int, ...] = 1) -> np.ndarray:
        """``low + (high − low) · random()``: numpy's own formula for ``uniform``."""
        return low + (np.asarray(high) - low) * self._draw("random", size)

    def standard_normal(self, size: int | tuple[int, ...]) -> np.ndarray:
        return self._draw("normal", size)

    def restart(self, epoch: int) -> None:
        """Fresh streams keyed by ``epoch`` as well. Whole-episode sampling restarts them with
        every rollout: an env idling after its particle has enough steps is stepped (and
        reset) for as long as the slowest env *of its process* runs, which depends on the
        sharding, so what it drew must not carry over into the next rollout."""
        self.epoch = epoch
        self.drawn, self._blocks, self._loaded = {}, {}, {}

    # -- machinery -------------------------------------------------------------------------
    def _draw(self, kind: str, size: int | tuple[int, ...]) -> np.ndarray:
        shape = (size,) if isinstance(size, int | np.integer) else tuple(size)
        if shape[0] != self.rows.size or len(shape) > 2:
            raise ValueError(
                f"slot streams draw one row per reset env: size {shape} for {self.rows.size} rows"
            )
        m = shape[1] if len(shape) == 2 else 1
        key = f"{kind}:{m}"
        if key not in self.drawn:
            self.drawn[key] = np.zeros(self.num_slots, dtype=np.int64)
        if key not in self._blocks:
            self._blocks[key] = np.empty((self.num_slots, self.block, m), dtype=np.float64)
            self._loaded[key] = np.full(self.num_slots, -1, dtype=np.int64)
        rows, drawn = self.rows, self.drawn[key]
        index, offset = np.divmod(drawn[rows], self.block)
        stale = rows[self._loaded[key][rows] != index]
        for slot in stale:  # a slot starting a new block: rare (every `block` resets)
            self._fill(key, kind, m, int(slot))
        values = self._blocks[key][rows, offset]
        drawn[rows] += 1
        return values.reshape(shape)

    def _fill(self, key: str, kind: str, m: int, slot: int) -> None:
        b = int(self.drawn[key][slot] // self.block)
        g = keyed_generator(
            self.seed, _RESET_STREAM, _KINDS[kind], m, self.epoch, self.first + slot, b
        )
        shape = (self.block, m)
        self._blocks[key][slot] = g.random(shape) if kind == "random" else g.standard_normal(shape)
        self._loaded[key][slot] = b

    def state_dict(self) -> dict:
        """Rows drawn per slot and kind: arrays ``[N]`` in slot order (shards concatenate)."""
        drawn = {key: counts.copy() for key, counts in self.drawn.items()}
        return {"slot_streams": drawn, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        drawn = state["slot_streams"]
        for key, counts in drawn.items():
            if np.shape(counts) != (self.num_slots,):
                raise ValueError(
                    f"slot-stream state {key!r} has shape {np.shape(counts)}, need "
                    f"({self.num_slots},)"
                )
        self.drawn = {key: np.array(counts, dtype=np.int64) for key, counts in drawn.items()}
        self.epoch = int(state["epoch"])
        self._blocks, self._loaded = {}, {}
