"""The SVPG paper's Table 1 statistic: the peak of the seed-mean best-particle curve.

Liu et al. (2017) report, per method, the maximum over iterations of the average (over seeds)
of each iteration's best particle, and the first iteration at which that average comes within
5 % of its maximum. It is a statistic of the mean curve, not of any one run, so it is not a
``summary.json`` field: ``evo-svpg report`` computes it from the runs' per-iteration curves.
Pure functions over ``best [runs, iterations]`` arrays (NaN where a run ended no episode).

Only iterations where every run has a value enter the mean curve: a mean over the runs that
happened to end an episode would favour the runs whose episodes end early.
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 10_000


def mean_curve(best: np.ndarray) -> np.ndarray:
    """``best [runs, iterations]`` -> the run-mean curve ``[iterations]``, NaN at iterations
    where some run has no value."""
    complete = np.isfinite(best).all(axis=0)
    return np.where(complete, np.where(np.isfinite(best), best, 0.0).mean(axis=0), np.nan)


def peak_of_mean(best: np.ndarray) -> tuple[float, int]:
    """``best [runs, iterations]``: the maximum of the run-mean curve and the first (1-based)
    iteration at which that curve is within 5 % of it (the paper's two columns)."""
    curve = mean_curve(best)
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
    at_peak = best[:, int(np.nanargmax(mean_curve(best)))]
    rng = np.random.default_rng(seed)
    means = rng.choice(at_peak, size=(resamples, at_peak.size)).mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def peak_rows(best_by_setting: dict[str, list[np.ndarray]]) -> dict[str, dict]:
    """Per setting (its runs' best-particle curves, one array per run, cut to the shortest):
    the peak, its interval (None with one run), the iteration of the peak, the first within 5 %
    of it, and the lengths cut. A setting with no iteration where every run has a value gets
    ``{"runs": n, "peak": None}``."""
    rows = {}
    for name, curves in best_by_setting.items():
        length = min(len(c) for c in curves)
        best = np.array([c[:length] for c in curves], dtype=float)
        row = {"runs": len(curves), "iterations": length,
               "longest": max(len(c) for c in curves), "peak": None}  # fmt: skip
        if np.isfinite(mean_curve(best)).any():
            top, first = peak_of_mean(best)
            interval = list(peak_interval(best)) if len(curves) > 1 else None
            at = int(np.nanargmax(mean_curve(best))) + 1
            row.update(peak=top, peak_ci=interval, peak_iteration=at, iteration_95=first)
        rows[name] = row
    return rows


def peak_markdown(rows: dict[str, dict]) -> list[str]:
    """The report's section on the paper's statistic, as lines. A row's ``pooling_windows``
    (its runs', if given) say how many iterations a curve point pools (the paper's: 1)."""
    lines = [
        "", "Peak of the run-mean best-particle curve (the SVPG paper's Table 1 statistic): the "
        "maximum over iterations of the mean over runs of the best particle's training return "
        "(each curve point pooled over the run's window: one iteration with whole-episode "
        "sampling, as the paper), with the 95 % percentile bootstrap interval over runs of that "
        "mean at the peak's iteration, and the first iteration within 5 % of the peak. Only "
        "iterations where every run has a value count; runs are cut to the shortest.", "",
        "| setting | runs | iterations | pooled over | peak [95 % interval] | at iteration "
        "| first within 5 % |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, row in rows.items():
        windows = row.get("pooling_windows") or []
        pooled = ", ".join(sorted({str(w) for w in windows if w is not None})) or "?"
        length = str(row["iterations"])
        if row["longest"] != row["iterations"]:
            length += f" (cut from up to {row['longest']})"
        if row["peak"] is None:
            lines.append(f"| {name} | {row['runs']} | {length} | {pooled} | no iteration where "
                         "every run has a value | | |")  # fmt: skip
            continue
        ci = row["peak_ci"]
        interval = f"[{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "[n/a: 1 run]"
        lines.append(
            f"| {name} | {row['runs']} | {length} | {pooled} | {row['peak']:.1f} {interval} | "
            f"{row['peak_iteration']} | {row['iteration_95']} |"
        )
    return lines
