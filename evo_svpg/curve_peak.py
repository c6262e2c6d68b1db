"""The SVPG paper's Table 1 statistic: the peak of the seed-mean best-particle curve.

Liu et al. (2017) report, per method, the maximum over iterations of the average (over seeds)
of each iteration's best particle, and the first iteration at which that average comes within
5 % of its maximum. It is a statistic of the mean curve, not of any one run, so it is not a
``summary.json`` field: ``evo-svpg report`` computes it from the runs' per-iteration curves.
Pure functions over ``best [runs, iterations]`` arrays (NaN where no episode ended).
"""

from __future__ import annotations

import warnings

import numpy as np

RESAMPLES = 10_000


def peak_of_mean(best: np.ndarray) -> tuple[float, int]:
    """``best [runs, iterations]``: the maximum of the run-mean curve and the first (1-based)
    iteration at which that curve is within 5 % of it (the paper's two columns)."""
    curve = np.nanmean(best, axis=0)
    top = float(np.nanmax(curve))
    within = np.flatnonzero(curve >= top - 0.05 * abs(top))
    return top, int(within[0]) + 1


def peak_interval(
    best: np.ndarray, level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval, over runs, of the run-mean best particle at the iteration
    where that mean peaks (``best [runs, iterations]``). The iteration is fixed, so this is the
    interval of a mean; the maximum over iterations itself is biased low against resampled runs
    and gets none."""
    peak = int(np.nanargmax(np.nanmean(best, axis=0)))
    at_peak = best[:, peak]
    rng = np.random.default_rng(seed)
    means = np.nanmean(rng.choice(at_peak, size=(resamples, at_peak.size)), axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def peak_rows(best_by_setting: dict[str, list[np.ndarray]]) -> dict[str, dict]:
    """Per setting (its runs' best-particle curves, one array per run, cut to the shortest):
    the peak, its interval, the iteration of the peak and the first within 5 % of it. A setting
    with no finite value is left out; iterations where no run ended an episode are skipped."""
    rows = {}
    for name, curves in best_by_setting.items():
        length = min(len(c) for c in curves)
        best = np.array([c[:length] for c in curves])
        if not np.isfinite(best).any():
            continue
        with warnings.catch_warnings():  # an all-NaN iteration's mean is NaN, and skipped
            warnings.simplefilter("ignore", RuntimeWarning)
            rows[name] = _row(best)
    return rows


def _row(best: np.ndarray) -> dict:
    top, first = peak_of_mean(best)
    low, high = peak_interval(best)
    at = int(np.nanargmax(np.nanmean(best, axis=0))) + 1
    return {
        "runs": best.shape[0], "iterations": best.shape[1], "peak": top, "peak_ci": [low, high],
        "peak_iteration": at, "iteration_95": first,
    }  # fmt: skip


def peak_markdown(rows: dict[str, dict]) -> list[str]:
    """The report's section on the paper's statistic, as lines."""
    lines = [
        "", "Peak of the run-mean best-particle curve (the SVPG paper's Table 1 statistic): the "
        "maximum over iterations of the mean over runs of each iteration's best particle "
        "(training return), with the 95 % percentile bootstrap interval over runs of that mean at "
        "the peak's iteration, and the first iteration within 5 % of the peak.", "",
        "| setting | runs | peak [95 % interval] | at iteration | first within 5 % |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for name, row in rows.items():
        lo, hi = row["peak_ci"]
        lines.append(
            f"| {name} | {row['runs']} | {row['peak']:.1f} [{lo:.1f}, {hi:.1f}] | "
            f"{row['peak_iteration']} | {row['iteration_95']} |"
        )
    return lines
