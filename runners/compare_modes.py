"""Every mode at one env-step budget: does variation and selection help SVPG?

Runs pure, independent, joint, cem-per-particle, cmaes-per-particle, select, evolution and erl
on one environment for several seeds, each run stopped once it has spent ``--budget`` env steps
(rollouts and candidate evaluations alike), as separate ``evo-svpg run`` processes in parallel.
Writes ``table.md`` (final best- and mean-particle training return per mode: median over seeds
and 95 % bootstrap interval of the median), ``summary.json`` and ``curves.png`` (median over
seeds against env steps). Re-running with the same ``--out`` resumes unfinished runs.

    python runners/compare_modes.py --env CartPole-v1 --seeds 5 --budget 8000000 \\
        --out results/compare/CartPole-v1 [--jobs 2] [--modes pure erl] [-- extra run flags]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
from _common import (
    bootstrap_median_ci,
    check_settings,
    curves_on_grid,
    final_returns,
    fmt_ci,
    run_all,
    run_dir,
    scalar_on_grid,
    scalar_series,
    write_outputs,
)

from evo_svpg.modes import MODES

COMPARED = (
    "pure", "independent", "joint", "cem-per-particle", "cmaes-per-particle", "select",
    "evolution", "erl",
)  # fmt: skip


def _erl_extras(path: Path) -> dict[str, float]:
    extras = {}
    for name in ("erl_champion", "erl_rl_elite_rate", "erl_rl_selected_rate"):
        _, values = scalar_series(path, name)
        extras[name] = float(values[-1]) if values.size else float("nan")
    return extras


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, required=True, help="env steps per run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at a time")
    parser.add_argument("--modes", nargs="+", default=list(COMPARED), choices=list(MODES))
    parser.add_argument("extra", nargs="*", help="extra `evo-svpg run` flags, after --")
    args = parser.parse_args()

    check_settings(
        args.out,
        {"env": args.env, "seeds": args.seeds, "budget": args.budget, "flags": args.extra},
    )
    runs = len(args.modes) * args.seeds
    print(f"{runs} runs of {args.budget:,} env steps on {args.env}, {args.jobs} at a time")
    start = time.perf_counter()
    walls = run_all(
        args.out, args.modes, args.seeds, args.budget, args.jobs,
        lambda mode, seed: ["--env", args.env, *args.extra],
    )  # fmt: skip
    total = time.perf_counter() - start

    summary, lines = (
        {},
        [
            f"{args.env}, {args.seeds} seeds, budget {args.budget:,} env steps per run "
            f"(extra flags: {' '.join(args.extra) or 'none'}); final training return of the best "
            "and of the mean particle: median over seeds [95 % bootstrap interval of the median]",
            "",
            "| mode | final best particle | final mean particle | iterations (median) "
            "| wall s per run (median) |",
            "|---|---|---|---|---|",
        ],
    )
    for mode in args.modes:
        finals = [final_returns(run_dir(args.out, mode, s), args.budget) for s in range(args.seeds)]
        best = np.array([f["best"] for f in finals])
        mean = np.array([f["mean"] for f in finals])
        iterations = int(np.median([f["iterations"] for f in finals]))
        mode_walls = [walls[(mode, s)] for s in range(args.seeds)]
        lines.append(
            f"| `{mode}` | {fmt_ci(bootstrap_median_ci(best))} | "
            f"{fmt_ci(bootstrap_median_ci(mean))} | {iterations} | {np.median(mode_walls):.0f} |"
        )
        summary[mode] = {"final_best": best.tolist(), "final_mean": mean.tolist(),
                         "iterations": [f["iterations"] for f in finals],
                         "wall_seconds": mode_walls}  # fmt: skip
        if mode == "erl":
            extras = [_erl_extras(run_dir(args.out, mode, s)) for s in range(args.seeds)]
            summary[mode]["erl"] = extras
            champion = np.array([e["erl_champion"] for e in extras])
            elite = np.median([e["erl_rl_elite_rate"] for e in extras])
            selected = np.median([e["erl_rl_selected_rate"] for e in extras])
            lines.append(
                f"\n`erl`: final ERL-population champion (one evaluation episode, so optimistic) "
                f"{fmt_ci(bootstrap_median_ci(champion))}; migrated particles became elites "
                f"{elite:.0%} and were selected {selected:.0%} of the time (median over seeds)"
            )
    spent = sum(walls.values())
    lines += ["", f"runs' wall time: {spent:.0f} s in all ({args.jobs} at a time; this "
              f"invocation {total:.0f} s)"]  # fmt: skip
    write_outputs(args.out, "\n".join(lines), summary, lambda target: _plot(args, target))


def _plot(args, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, args.budget, 200)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN grid points before iteration 1
    for k, mode in enumerate(args.modes):
        runs = [run_dir(args.out, mode, s) for s in range(args.seeds)]
        curves = curves_on_grid(runs, grid)
        for ax, key in zip(axes, ("best", "mean"), strict=True):
            values = curves[key]
            if np.isnan(values).all():
                continue
            ax.plot(grid, np.nanmedian(values, axis=0), color=f"C{k % 10}", label=mode)
            lo, hi = np.nanquantile(values, [0.25, 0.75], axis=0)
            ax.fill_between(grid, lo, hi, color=f"C{k % 10}", alpha=0.12)
        if mode == "erl":  # its particles are pure's; its own output is the population champion
            champion = np.nanmedian(scalar_on_grid(runs, "erl_champion", grid), axis=0)
            axes[0].plot(grid, champion, color=f"C{k % 10}", ls=":", label="erl: champion")
    for ax, key in zip(axes, ("best", "mean"), strict=True):
        ax.set_title(f"{key} particle: median over {args.seeds} seeds (band: quartiles)")
        ax.set_xlabel("env steps (rollouts + candidate evaluations)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{args.env} training return")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
