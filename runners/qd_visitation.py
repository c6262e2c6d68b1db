"""Where did each setting's training go? The (x, v) visitation maps of a MountainCar QD sweep.

Reads ``qd.npz`` of every finished run under a sweep directory (``evo-svpg sweep`` of a spec with
``qd_every``: ``configs/sweeps/qd_mountaincar_*.toml``), sums each setting's seeds and draws one
panel per setting: log(1 + visits) of the training steps' states, the goal dashed. The run
directories are needed (the visitation is not in the runs' records).

    python runners/qd_visitation.py docs/results/sweeps/qd_mountaincar_discrete \\
        [--out docs/results/sweeps/qd_mountaincar_discrete/visitation.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from evo_svpg.sweep_spec import SweepSpec

GOAL_X = {  # the goal's position, by environment
    "evo_svpg/MountainCarSparse-v0": 0.5,
    "evo_svpg/MountainCarContinuousSparse-v0": 0.45,
    "MountainCar-v0": 0.5,
    "MountainCarContinuous-v0": 0.45,
}


def visitation(sweep: Path) -> tuple[dict[str, np.ndarray], tuple, str, int]:
    """Per setting (the sweep's order) the visits summed over its runs ``[x bins, v bins]``; the
    maps' extent (x_lo, x_hi, v_lo, v_hi), the environment and the number of runs read."""
    if not (sweep / "sweep.json").is_file():
        raise ValueError(f"{sweep}: not a sweep directory (no sweep.json)")
    spec = SweepSpec.from_dict(json.loads((sweep / "sweep.json").read_text())["spec"])
    maps: dict[str, np.ndarray] = {}
    extent, env, shape, runs = None, "", None, 0
    for path in sorted(sweep.glob("*/seed*/qd.npz")):
        run = path.parent
        record = run.with_name(run.name + ".record.json")
        if not record.is_file():  # not finished
            continue
        run_env = json.loads(record.read_text())["keys"]["env"]
        with np.load(path) as data:
            counts = data["visitation"].astype(np.float64)
            (x_lo, x_hi), (v_lo, v_hi) = data["visitation_range"]
        run_extent = (float(x_lo), float(x_hi), float(v_lo), float(v_hi))
        if runs and (run_env, run_extent, counts.shape) != (env, extent, shape):
            raise ValueError(
                f"{run}: env {run_env}, map {run_extent} {counts.shape}, but {env}, {extent} "
                f"{shape} before: draw one environment's sweep at a time"
            )
        env, extent, shape = run_env, run_extent, counts.shape
        maps[run.parent.name] = maps.get(run.parent.name, 0) + counts
        runs += 1
    if not maps:
        raise ValueError(f"{sweep}: no finished run with a qd.npz (run the sweep first)")
    ordered = {s.name: maps[s.name] for s in spec.settings() if s.name in maps}
    return ordered, extent, env, runs


def plot(sweep: Path, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps, extent, env, runs = visitation(sweep)
    cols = min(4, len(maps))
    rows = -(-len(maps) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, counts) in zip(axes.flat, maps.items(), strict=False):
        ax.imshow(np.log1p(counts).T, origin="lower", extent=extent, aspect="auto", cmap="magma")
        if env in GOAL_X:
            ax.axvline(GOAL_X[env], color="w", ls="--", lw=0.8)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("x (goal: dashed)")
        ax.set_ylabel("v")
    for ax in axes.flat[len(maps) :]:
        ax.axis("off")
    fig.suptitle(f"{env}: log(1 + visits) of training states, {runs} runs, seeds summed")
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qd_visitation.py", description=__doc__.split("\n")[0])
    parser.add_argument("sweep", type=Path, help="a sweep directory with qd_every runs")
    parser.add_argument("--out", type=Path, help="the figure (default: SWEEP/visitation.png)")
    args = parser.parse_args(argv)
    target = args.out or args.sweep / "visitation.png"
    try:
        plot(args.sweep, target)
    except (ValueError, FileNotFoundError) as exc:
        print(f"qd_visitation.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
