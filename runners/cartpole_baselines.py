"""SVPG against independent and joint workers on CartPole-v1 at the seed's budget.

Runs ``pure``, ``independent`` and ``joint`` for several seeds (16 particles × 10,000 steps × 50
iterations each, REINFORCE), as separate ``evo-svpg run`` processes in parallel on the available
cores, then prints per mode the final best- and mean-particle return (median and range over
seeds), how many seeds' best particle reached 475 (and at which iteration), and the wall time.

    python runners/cartpole_baselines.py [--seeds 5] [--jobs 2] [--out results/cartpole_baselines]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import launch, write_outputs

from evo_svpg.plot import load_curves

MODES = ("pure", "independent", "joint")
SOLVED = 475.0


def _launch(mode: str, seed: int, out: Path, extra: list[str]) -> float:
    return launch(out / mode / f"seed{seed}", ["--mode", mode, "--seed", str(seed), *extra])


def _fmt(values: np.ndarray) -> str:
    return f"{np.median(values):7.1f} [{values.min():.1f} – {values.max():.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (see README Speed)")
    parser.add_argument("--out", type=Path, default=Path("results/cartpole_baselines"))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("extra", nargs="*", help="extra `evo-svpg run` flags after --")
    args = parser.parse_args()

    jobs = [(m, s) for m in args.modes for s in range(args.seeds)]
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        walls = list(pool.map(lambda j: _launch(*j, args.out, args.extra), jobs))
    total = time.perf_counter() - start

    lines = [
        f"CartPole-v1, {args.seeds} seeds, 16 × 10,000 steps × 50 iterations per run "
        f"({args.jobs} run(s) at a time; extra flags: {' '.join(args.extra) or 'none'})",
        "",
        "| mode | final best particle: median [range] | final mean particle: median [range] "
        f"| seeds reaching {SOLVED:.0f} (first iteration) | wall s per run (median) |",
        "|---|---|---|---|---|",
    ]
    summary = {}
    for mode in args.modes:
        curves = [load_curves(args.out / mode / f"seed{s}") for s in range(args.seeds)]
        best = np.array([c["best"][-1] for c in curves])
        mean = np.array([c["mean"][-1] for c in curves])
        firsts = []
        for c in curves:
            hit = np.nonzero(c["best"] >= SOLVED)[0]
            firsts.append(int(c["iteration"][hit[0]]) if hit.size else None)
        mode_walls = [w for (m, _), w in zip(jobs, walls, strict=True) if m == mode]
        reached = [f for f in firsts if f is not None]
        lines.append(
            f"| `{mode}` | {_fmt(best)} | {_fmt(mean)} | {len(reached)}/{args.seeds} "
            f"({', '.join(str(f) if f else '–' for f in firsts)}) | {np.median(mode_walls):.1f} |"
        )
        summary[mode] = {"final_best": best.tolist(), "final_mean": mean.tolist(),
                         "first_iteration_at_475": firsts, "wall_seconds": mode_walls}  # fmt: skip
    lines += ["", f"total wall time: {total:.1f} s"]
    write_outputs(args.out, "\n".join(lines), summary, lambda target: _plot(args, target))


def _plot(args, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for k, mode in enumerate(args.modes):
        curves = [load_curves(args.out / mode / f"seed{s}") for s in range(args.seeds)]
        steps = curves[0]["env_steps"]
        for ax, key in zip(axes, ("best", "mean"), strict=True):
            values = np.array([c[key] for c in curves])
            ax.plot(steps, np.median(values, axis=0), color=f"C{k}", label=mode)
            ax.fill_between(steps, values.min(0), values.max(0), color=f"C{k}", alpha=0.2)
            ax.set_title(f"{key} particle (median, range over seeds)")
            ax.set_xlabel("env steps")
    axes[0].set_ylabel("episode return")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(target, dpi=120)


if __name__ == "__main__":
    main()
