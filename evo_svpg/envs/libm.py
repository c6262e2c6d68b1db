"""``x ** 2`` exactly as gymnasium's scalar code computes it, on any x86-64 CPU.

gymnasium squares numpy *scalars* (``th ** 2`` with ``th`` a ``np.float64``, ``u ** 2`` with ``u``
a ``np.float32``): numpy's scalar power calls the C library's ``pow``/``powf``, which is not
correctly rounded and differs from ``x * x`` in the last bit for about 0.1 % of inputs. numpy's
*array* power cannot stand in for it: on AVX-512 CPUs ``np.power`` takes a SIMD path that differs
from libm for about 3 % of float64 and 10 % of float32 inputs, so a fast path built on it matches
gymnasium on one machine and not on another.

:func:`libm_square` is portable instead. ``x * x`` is IEEE-exact everywhere, and its rounding error
``x² − fl(x * x)`` is computed exactly (Dekker's product for float64; in float64 for float32, where
``x²`` is exact). A libm ``pow`` whose error is below 0.55 ulp (glibc's bound is 0.52–0.54) can only
round differently from ``x * x`` where ``x²`` lies within 0.05 ulp of a rounding midpoint, i.e.
where that error exceeds 0.45 ulp (measured: every disagreement is above 0.49). Those elements
(about 10 %), plus the edge cases where the error bound does not apply (powers of two, tiny,
huge and non-finite values), are recomputed with numpy's scalar power itself, so every element is
what gymnasium gets. At 320 elements it costs about what ``np.power`` does (15–21 µs against
16–18 µs, idle and loaded machine).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["libm_square"]

_SPLIT = 134217729.0  # 2**27 + 1: Veltkamp's split of a float64 into two 26-bit halves
_MIDPOINT_MARGIN = 0.45  # |x² − fl(x²)| above this many ulp: recompute with the scalar pow
# Per dtype: the normal range in which the error bound holds, and the significand bits (a power
# of two has none set: the ulp below it is half as wide, so it is always recomputed).
_SAFE = {
    np.dtype(np.float64): (1e-290, 1e290, np.int64, (1 << 52) - 1),
    np.dtype(np.float32): (1e-36, 1e36, np.int32, (1 << 23) - 1),
}


def _rounding_error(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``x² − p`` exactly (float64), where ``p = fl(x * x)`` in ``x``'s dtype."""
    if x.dtype == np.float32:
        exact = x.astype(np.float64) * x.astype(np.float64)  # 48 significant bits: exact
        return exact - p.astype(np.float64)
    c = _SPLIT * x
    hi = c - (c - x)
    lo = x - hi
    return ((hi * hi - p) + 2.0 * hi * lo) + lo * lo  # Dekker's TwoProduct without FMA


def libm_square(x: np.ndarray) -> np.ndarray:
    """``x ** 2`` elementwise as numpy's scalar power (C ``pow``/``powf``) gives it; float32 or
    float64 array of any shape, returned as a new array of the same dtype."""
    x = np.asarray(x)
    if x.dtype not in _SAFE:
        raise TypeError(f"libm_square needs a float32 or float64 array, got {x.dtype}")
    tiny, huge, bits, significand = _SAFE[x.dtype]
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        p = np.multiply(x, x, out=np.empty_like(x))  # an array even for 0-d x; p >= 0 or nan
        edge = ~((p > tiny) & (p < huge))  # tiny, huge, inf, nan: outside the error bound
        near = np.abs(_rounding_error(x, p)) > _MIDPOINT_MARGIN * np.spacing(p)
        near |= (p.view(bits) & significand) == 0  # a power of two
        near &= ~edge
        flat, flat_x = p.reshape(-1), x.reshape(-1)
        index = np.flatnonzero(near)
        if index.size and x.dtype == np.float64:  # math.pow: the C pow numpy's scalar calls
            flat[index] = [math.pow(v, 2.0) for v in flat_x[index].tolist()]
        elif index.size:  # numpy's float32 scalar power: C powf
            flat[index] = [v**2 for v in flat_x[index]]
        index = np.flatnonzero(edge)
        if index.size:  # numpy's scalar power (math.pow would raise on overflow)
            flat[index] = [v**2 for v in flat_x[index]]
    return p
