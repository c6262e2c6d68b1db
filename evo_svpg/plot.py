"""Learning curves from ``metrics.csv``: best and mean particle return against env steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evo_svpg.metrics import EpisodeTotals
from evo_svpg.rundir import make_directory


def run_window(run_dir: Path) -> int:
    """The run's pooling window (``config.json``; 1 for runs that did not record one)."""
    config = Path(run_dir) / "config.json"
    if not config.exists():
        return 1
    try:
        window = json.loads(config.read_text())["resolved"]["pooling_window"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            f"{config} is not a run's config.json (no resolved pooling_window)"
        ) from None
    if type(window) is not int or window < 1:
        raise ValueError(f"{config}: pooling_window={window!r} must be an integer >= 1")
    return window


def load_curves(run_dir: Path, window: int | None = None) -> dict[str, np.ndarray]:
    """Per iteration: ``env_steps``, ``best`` and ``mean`` over particles of each particle's
    return pooled over the last ``window`` iterations (default: the run's pooling window, in
    which every env ends an episode; :mod:`evo_svpg.metrics`), and ``episode_mean``, the mean
    return of all the window's episodes."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        raise ValueError(f"{run_dir}: no metrics.csv (is it a run directory?)")
    totals = EpisodeTotals.from_csv(path)
    return totals.curves(run_window(run_dir) if window is None else window)


def curves_on_grid(run_dirs: list[Path], grid: np.ndarray) -> dict[str, np.ndarray]:
    """Best/mean particle return and all-episode mean return of each run at the env-step
    ``grid``: ``[runs, len(grid)]``. Each particle's return is pooled over the run's window
    (:func:`evo_svpg.plot.load_curves`), so a point does not depend on which episodes happened
    to end in its iteration.

    Runs of different modes spend different env steps per iteration; each curve is held at
    its last value until the next iteration (a step function), NaN before its first value.
    """
    out: dict[str, list[np.ndarray]] = {"best": [], "mean": [], "episode_mean": []}
    for run_dir in run_dirs:
        curves = load_curves(run_dir)
        for key in out:
            out[key].append(steps_on_grid(curves, key, grid))
    return {key: np.array(rows) for key, rows in out.items()}


def steps_on_grid(curves: dict[str, np.ndarray], key: str, grid: np.ndarray) -> np.ndarray:
    """``curves[key]`` (per iteration) at the env-step ``grid``, as a step function over
    ``curves["env_steps"]``: NaN before the first iteration, gaps held at the last value."""
    index = np.searchsorted(curves["env_steps"], grid, side="right") - 1
    values = forward_fill(curves[key])
    return np.where(index >= 0, values[np.clip(index, 0, None)], np.nan)


def forward_fill(values: np.ndarray) -> np.ndarray:
    """Iterations where no episode ended (NaN) keep the previous value."""
    filled = values.copy()
    for i in range(1, filled.size):
        if np.isnan(filled[i]):
            filled[i] = filled[i - 1]
    return filled


FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def plot_runs(run_dirs: list[Path], target: Path) -> None:
    """One figure; each run gets a solid (best particle) and a dashed (mean particle) curve.
    ValueError (naming the run or the target) before anything is written."""
    target = Path(target)
    if target.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"--out {target} must end in one of {', '.join(FIGURE_SUFFIXES)}")
    if target.is_dir():
        raise ValueError(f"--out {target} is a directory; give a file name ending in .png")
    all_curves = [load_curves(run_dir) for run_dir in run_dirs]
    make_directory(target.parent, "--out's directory")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (run_dir, curves) in enumerate(zip(run_dirs, all_curves, strict=True)):
        color = f"C{i % 10}"
        label = Path(run_dir).name
        ax.plot(curves["env_steps"], curves["best"], color=color, label=f"{label}: best particle")
        ax.plot(curves["env_steps"], curves["mean"], color=color, ls="--", label=f"{label}: mean")
    ax.set_xlabel("env steps")
    ax.set_ylabel("training return, pooled per particle over the window")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(target, dpi=120)
    except OSError as exc:
        raise ValueError(f"--out {target}: cannot write it ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
