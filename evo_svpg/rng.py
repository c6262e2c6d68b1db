"""Private random streams for libraries that draw from process-global generators.

DEAP's selection operators call Python's ``random`` module; pycma's optional code paths call
``np.random``. A run must be reproducible from its seed and resumable bit for bit, and must not
disturb (or be disturbed by) anyone else's use of those globals, so each such call runs inside
:func:`private_python_random` / :func:`private_numpy_random`: the global state is swapped for the
caller's own, and swapped back afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


class PythonRandomState:
    """A checkpointable state for Python's ``random`` module, seeded independently."""

    def __init__(self, seed: int) -> None:
        self.state = random.Random(seed).getstate()


@contextmanager
def private_python_random(own: PythonRandomState) -> Iterator[None]:
    saved = random.getstate()
    random.setstate(own.state)
    try:
        yield
    finally:
        own.state = random.getstate()
        random.setstate(saved)


@contextmanager
def private_numpy_random(own: dict) -> Iterator[None]:
    """``own`` is a ``np.random.get_state(legacy=False)`` dict, updated in place."""
    saved = np.random.get_state()  # noqa: NPY002
    np.random.set_state(own)  # noqa: NPY002
    try:
        yield
    finally:
        own.clear()
        own.update(np.random.get_state(legacy=False))  # noqa: NPY002
        np.random.set_state(saved)  # noqa: NPY002


def numpy_random_state(seed: int) -> dict:
    """A fresh legacy-``np.random`` state seeded with ``seed``, for :func:`private_numpy_random`."""
    return np.random.RandomState(seed % 2**32).get_state(legacy=False)


class Randn:
    """``randn(*shape)`` from a private generator: pycma's ``randn`` option (picklable)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape)
