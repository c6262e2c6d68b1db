"""Checkpointable state of particle shards, merged into the whole population's and split back.

A worker owns rows ``a … b − 1`` of the population (particles, or env slots). Its components'
``state_dict()`` hold per-row arrays (critics, baselines, env physics) beside values that every
shard shares (a step count, a generator all shards advance alike). :func:`merge_states`
concatenates the per-row leaves and checks that the shared ones agree, giving exactly the state
one process holding every row has; :func:`split_state` cuts a shard's rows out of it. So a
checkpoint does not depend on the number of workers, and resumes with any other.

The rule: an array leaf is per-row when its leading dimension is the row count (each shard's
when merging, the population's when splitting). A shared array whose length happened to equal
the row count would be taken for a per-row one; none of the shipped components has one (the
tests resume a2c's and the sampler's state across worker counts, and run every estimator on
several). Cloning (:func:`reindex_state`) gathers every per-row leaf by the parents, which is
what every shipped estimator's own ``reindex`` does; an estimator whose clones must inherit
something else cannot be cloned across workers.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch


def shard_bounds(n: int, workers: int) -> list[slice]:
    """``workers`` contiguous row ranges covering ``0 … n − 1``, sizes differing by at most 1."""
    edges = [round(k * n / workers) for k in range(workers + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray | torch.Tensor)


def _has_rows(x: Any, rows: int) -> bool:
    return _is_array(x) and x.ndim >= 1 and x.shape[0] == rows


def _equal(a: Any, b: Any) -> bool:
    if _is_array(a) or _is_array(b):
        if type(a) is not type(b) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        return bool((a == b).all()) if isinstance(a, np.ndarray) else bool(torch.equal(a, b))
    return a == b


def merge_states(states: list[Any], rows: list[int], path: str = "state") -> Any:
    """The population's state from the shards' ``states`` (shard ``k`` holds ``rows[k]`` rows,
    in population order); ValueError naming the path where shards disagree."""
    first = states[0]
    if isinstance(first, dict):
        keys = list(first)
        for k, s in enumerate(states):
            if not isinstance(s, dict) or list(s) != keys:
                got = list(s) if isinstance(s, dict) else type(s).__name__
                raise ValueError(f"{path}: shard {k} holds {got}, shard 0 {keys}")
        return {key: merge_states([s[key] for s in states], rows, f"{path}.{key}") for key in keys}
    if isinstance(first, list | tuple):
        if any(not isinstance(s, type(first)) or len(s) != len(first) for s in states):
            raise ValueError(f"{path}: the shards hold sequences of different lengths")
        return type(first)(
            merge_states([s[i] for s in states], rows, f"{path}[{i}]") for i in range(len(first))
        )
    if all(_has_rows(x, r) for x, r in zip(states, rows, strict=True)):
        return np.concatenate(states) if isinstance(first, np.ndarray) else torch.cat(states)
    for k, s in enumerate(states[1:], start=1):
        if not _equal(first, s):
            raise ValueError(f"{path}: shard {k} holds {s!r}, shard 0 {first!r}")
    return first


def split_state(state: Any, total: int, rows: slice) -> Any:
    """Rows ``rows`` of the population's ``state`` (``total`` rows), shared leaves copied."""
    if isinstance(state, dict):
        return {key: split_state(value, total, rows) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(split_state(v, total, rows) for v in state)
    if _has_rows(state, total):
        state = state[rows]
    if _is_array(state):  # every shard gets arrays of its own (a loaded tensor may be kept)
        return state.copy() if isinstance(state, np.ndarray) else state.clone()
    return state


def reindex_state(state: Any, total: int, parents: np.ndarray) -> Any:
    """``state`` with every per-row leaf's row ``i`` replaced by row ``parents[i]`` (clones
    inherit their parent's per-particle state); shared leaves as they are."""
    if isinstance(state, dict):
        return {key: reindex_state(value, total, parents) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(reindex_state(v, total, parents) for v in state)
    if _has_rows(state, total):
        return state[parents] if isinstance(state, np.ndarray) else state[torch.from_numpy(parents)]
    return state
