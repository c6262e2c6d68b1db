"""Learning curves from ``metrics.csv``: best and mean particle return against env steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_curves(run_dir: Path) -> dict[str, np.ndarray]:
    """Per iteration: ``env_steps``, ``best`` and ``mean`` particle return (NaN-aware), and
    ``episode_mean``: the mean return over all episodes that ended in it, each episode weighted
    once (a particle's mean counts as often as it had episodes; NaN if none ended)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        raise ValueError(f"{run_dir}: no metrics.csv (is it a run directory?)")
    data = np.genfromtxt(path, delimiter=",", names=True)
    data = np.atleast_1d(data)
    iterations = np.unique(data["iteration"])
    best, mean, episode_mean, steps = [], [], [], []
    for it in iterations:
        rows = data[data["iteration"] == it]
        finite = np.isfinite(rows["return_mean"])
        returns = rows["return_mean"][finite]
        best.append(returns.max() if returns.size else np.nan)
        mean.append(returns.mean() if returns.size else np.nan)
        if "episodes" in data.dtype.names and rows["episodes"][finite].sum() > 0:
            episodes = rows["episodes"][finite]
            episode_mean.append(float((returns * episodes).sum() / episodes.sum()))
        else:
            episode_mean.append(np.nan)
        steps.append(rows["env_steps"][0])
    return {
        "iteration": iterations,
        "env_steps": np.array(steps),
        "best": np.array(best),
        "mean": np.array(mean),
        "episode_mean": np.array(episode_mean),
    }


def plot_runs(run_dirs: list[Path], target: Path) -> None:
    """One PNG; each run gets a solid (best particle) and a dashed (mean particle) curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, run_dir in enumerate(run_dirs):
        curves = load_curves(run_dir)
        color = f"C{i % 10}"
        label = Path(run_dir).name
        ax.plot(curves["env_steps"], curves["best"], color=color, label=f"{label}: best particle")
        ax.plot(curves["env_steps"], curves["mean"], color=color, ls="--", label=f"{label}: mean")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return (stochastic policy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=120)
    plt.close(fig)
