"""Argument checks shared by the array containers (novelty archive, grid archive, visitation)."""

from __future__ import annotations

import numpy as np


def check_int(value: object, name: str, minimum: int) -> int:
    """``value`` as a Python int ``>= minimum``; bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_rows(x: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    """``x`` as finite float64 ``[n, D]`` (``D = dim`` if given); ValueError naming ``name``."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim):
        want = f"[n, {dim}]" if dim is not None else "[n, D]"
        raise ValueError(f"{name} must be a 2-D array of shape {want}, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        row, col = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} must be finite, got {arr[row, col]} at row {row}, column {col}")
    return arr
