"""Statistics over runs, with rliable (Agarwal et al., NeurIPS 2021): interval estimates of the
IQM, median and mean, probabilities of improvement, IQM curves, performance profiles.

Scores are ``[runs]`` per setting: one task, so rliable's stratified bootstrap resamples the
runs. Every interval is a 95 % percentile bootstrap with numpy's global generator seeded
(rliable's resampling ignores its ``random_state``), so a report is reproducible. The median
is the median of the runs' scores (rliable's ``aggregate_median`` is the median over tasks of
per-task means: with one task, the mean).
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from collections.abc import Callable

import numpy as np
import scipy.stats

LEVEL = 0.95
REPS = 5_000  # bootstrap resamples of an aggregate
CURVE_REPS = 2_000  # per IQM curve and probability of improvement (rliable recommends >= 2,000)


def rliable():
    """rliable's ``library`` and ``metrics`` modules; ValueError naming the extra if absent."""
    logging.getLogger("absl").setLevel(logging.WARNING)  # a line per setting and estimate
    try:
        from rliable import library, metrics
    except ImportError:
        raise ValueError(
            "evo-svpg report needs rliable: pip install 'evo-svpg[study]' (or pip install -e "
            "'.[study]' in a clone)"
        ) from None
    return library, metrics


@contextlib.contextmanager
def _global_seed(seed: int):
    """numpy's global generator seeded for a block, and put back after: rliable's stratified
    bootstrap draws its resamples from it (``np.random.choice``), whatever ``random_state``
    says, so that is what makes a report reproducible."""
    saved = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(saved)  # noqa: NPY002


def _data_seed(seed: int, data) -> int:
    """``seed`` mixed with the bytes of the scores: an interval is a function of its own
    data, not of which other settings the report holds or their order."""
    arrays = data if isinstance(data, tuple) else (data,)
    digest = zlib.crc32(
        b"".join(np.ascontiguousarray(a, dtype=np.float64).tobytes() for a in arrays)
    )
    return (seed * 1_000_003 + digest) % 2**32


def _estimates(
    scores: dict[str, np.ndarray | tuple], func: Callable, reps: int, seed: int
) -> tuple[dict, dict]:
    """rliable's point and interval estimates of ``func``, each key with its own seeding."""
    library, _ = rliable()
    point, ci = {}, {}
    for key, data in scores.items():
        with _global_seed(_data_seed(seed, data)):
            p, c = library.get_interval_estimates(
                {key: data}, func, reps=reps, confidence_interval_size=LEVEL
            )
        point[key], ci[key] = p[key], c[key]
    return point, ci


def iqm(values) -> float:
    """Interquartile mean of the finite ``values`` (rliable's: the 25 % trimmed mean); NaN if
    none is finite."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(scipy.stats.trim_mean(x, 0.25)) if x.size else float("nan")


def aggregates(scores: dict[str, np.ndarray], reps: int = REPS, seed: int = 0) -> dict:
    """Per setting ``{"runs", "iqm", "iqm_ci", "median", "median_ci", "mean", "mean_ci"}`` of
    its scores ``[runs]`` (finite values only)."""
    _, metrics = rliable()

    def three(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), np.median(x), np.mean(x)])

    columns = {name: np.asarray(v, dtype=np.float64)[:, None] for name, v in scores.items()}
    point, ci = _estimates(columns, three, reps, seed)
    out = {}
    for name, values in columns.items():
        row: dict = {"runs": int(values.shape[0])}
        for i, key in enumerate(("iqm", "median", "mean")):
            row[key] = float(point[name][i])
            row[f"{key}_ci"] = [float(ci[name][0, i]), float(ci[name][1, i])]
        out[name] = row
    return out


def improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) of scores ``[runs_x, 1]`` and ``[runs_y, 1]``: the share of (x, y) pairs with
    x above y, ties counting half. rliable's ``probability_of_improvement`` for one task (its
    Mann-Whitney U / (runs_x · runs_y)), without scipy's per-call cost: a report bootstraps
    it for every pair of settings."""
    a, b = x[:, 0][:, None], y[:, 0][None, :]
    return float(((a > b) + 0.5 * (a == b)).mean())


def improvement_probabilities(
    scores: dict[str, np.ndarray], reps: int = CURVE_REPS, seed: int = 0
) -> dict[tuple[str, str], dict]:
    """``P(X > Y)`` (a run of X scores above a run of Y; ties count half) for every ordered pair
    of settings, with its interval: ``{(x, y): {"p": ..., "ci": [lo, hi]}}``. Bootstrapped once
    per unordered pair: ``P(Y > X) = 1 − P(X > Y)`` in every resample, so its interval is
    ``[1 − hi, 1 − lo]``."""
    rliable()  # its absence named first
    names = list(scores)
    column = {name: np.asarray(v, dtype=np.float64)[:, None] for name, v in scores.items()}
    pairs = {
        f"{x}\t{y}": (column[x], column[y]) for i, x in enumerate(names) for y in names[i + 1 :]
    }
    if not pairs:
        return {}
    point, ci = _estimates(pairs, improvement, reps, seed)
    out = {}
    for key in pairs:
        x, y = key.split("\t")
        p, (lo, hi) = float(point[key]), (float(v) for v in ci[key].ravel())
        out[(x, y)] = {"p": p, "ci": [lo, hi]}
        out[(y, x)] = {"p": 1.0 - p, "ci": [1.0 - hi, 1.0 - lo]}
    return out


def iqm_curves(
    curves: dict[str, np.ndarray], reps: int = CURVE_REPS, seed: int = 0
) -> dict[str, np.ndarray]:
    """``[3, points]`` (IQM, low, high) per setting from its curves ``[runs, points]``: the runs
    are resampled together at every point (one bootstrap sample is a set of whole curves)."""

    def iqm(scores: np.ndarray) -> np.ndarray:  # [runs, 1, points]: rliable's IQM per point
        return scipy.stats.trim_mean(scores[:, 0, :], proportiontocut=0.25, axis=0)

    shaped = {name: np.asarray(c, dtype=np.float64)[:, None, :] for name, c in curves.items()}
    point, ci = _estimates(shaped, iqm, reps, seed)
    return {name: np.vstack([point[name], ci[name]]) for name in shaped}


def performance_profiles(
    scores: dict[str, np.ndarray], taus: np.ndarray, reps: int = CURVE_REPS, seed: int = 0
) -> tuple[dict, dict]:
    """Fraction of runs scoring above each ``tau`` per setting, and its interval (rliable's
    profile bootstraps with numpy's global generator: seeded here)."""
    library, _ = rliable()
    columns = {name: np.asarray(v, dtype=np.float64)[:, None] for name, v in scores.items()}
    with _global_seed(_data_seed(seed, tuple(columns.values()))):
        return library.create_performance_profile(
            columns, taus, reps=reps, confidence_interval_size=LEVEL
        )
