"""Every mode at one env-step budget: does variation and selection help SVPG?

Runs pure, independent, joint, cem-per-particle, cmaes-per-particle, select, evolution and erl
on one environment for several seeds, each run stopped once it has spent ``--budget`` env steps
(rollouts and candidate evaluations alike), as separate ``evo-svpg run`` processes in parallel.
Writes ``table.md`` (per mode: the final window's training return of the best and of the mean
particle, and a fresh evaluation after training of the mean particle and of the particle chosen
on training; median over seeds and 95 % bootstrap interval of the median), ``summary.json``
(every column per seed) and ``curves.png`` (median over seeds against env steps). Re-running with
the same ``--out`` resumes unfinished runs; one runner at a time per ``--out``.

    python runners/compare_modes.py --env CartPole-v1 --seeds 5 --budget 8000000 \\
        --out results/compare/CartPole-v1 [--jobs 2] [--modes pure erl] [-- extra run flags]
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
from _common import (
    RESERVED,
    SHARED_STREAMS,
    RunnerParser,
    bootstrap_median_ci,
    final_returns,
    fmt_ci,
    fresh_episodes,
    fresh_returns,
    run_all,
    run_dir,
    runner_out,
    scalar_on_grid,
    scalar_series,
    validate,
    write_outputs,
)

from evo_svpg.modes import MODES
from evo_svpg.plot import curves_on_grid

COMPARED = (
    "pure", "independent", "joint", "cem-per-particle", "cmaes-per-particle", "select",
    "evolution", "erl",
)  # fmt: skip
# Flags the runner sets in every run (beyond the shared ones): refused after --.
OWN_FLAGS = {**RESERVED, "--env": "the runner's --env sets every run's environment"}


def _erl_extras(path: Path) -> dict[str, float]:
    extras = {}
    for name in ("erl_champion", "erl_rl_elite_rate", "erl_rl_selected_rate"):
        _, values = scalar_series(path, name)
        extras[name] = float(values[-1]) if values.size else float("nan")
    extras["fresh_erl_champion"] = fresh_returns(path).get("fresh_erl_champion_return", np.nan)
    return extras


def _parser() -> RunnerParser:
    parser = RunnerParser(prog="compare_modes.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, default=5, help="runs seeds 0..N-1 of every mode")
    parser.add_argument("--budget", type=int, required=True, help="env steps per run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at a time")
    parser.add_argument("--modes", nargs="*", default=list(COMPARED), choices=list(MODES))
    parser.add_argument("extra", nargs="*", help="extra `evo-svpg run` flags, after --")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    validate(
        parser,
        counts=[
            ("--seeds", args.seeds, "runs seeds 0..N-1"),
            ("--jobs", args.jobs, "runs at a time"),
            ("--budget", args.budget, "env steps per run"),
        ],
        modes=args.modes, extra=args.extra, reserved=OWN_FLAGS,
        run_flags=lambda mode: ["--env", args.env, *args.extra],
    )  # fmt: skip
    settings = {"env": args.env, "seeds": args.seeds, "budget": args.budget, "flags": args.extra}
    with runner_out(parser, args.out, settings):
        _compare(args)


def _compare(args) -> None:
    runs = len(args.modes) * args.seeds
    print(f"{runs} runs of {args.budget:,} env steps on {args.env}, {args.jobs} at a time")
    start = time.perf_counter()
    walls = run_all(
        args.out, args.modes, args.seeds, args.budget, args.jobs,
        lambda mode, seed: ["--env", args.env, *SHARED_STREAMS, *args.extra],
    )  # fmt: skip
    total = time.perf_counter() - start

    summary, rows, notes, episodes = {}, [], [], []
    for mode in args.modes:
        paths = [run_dir(args.out, mode, s) for s in range(args.seeds)]
        finals = [final_returns(path, args.budget) for path in paths]
        fresh = [fresh_returns(path) for path in paths]
        episodes += [f["fresh_episodes_per_policy"] for f in fresh]
        col = {
            "final_best": np.array([f["best"] for f in finals]),
            "final_mean": np.array([f["mean"] for f in finals]),
            "fresh_mean": np.array([f["fresh_mean_particle_return"] for f in fresh]),
            "fresh_selected": np.array([f["fresh_selected_particle_return"] for f in fresh]),
        }
        iterations = [f["iterations"] for f in finals]
        mode_walls = [walls[(mode, s)] for s in range(args.seeds)]
        rows.append(
            f"| `{mode}` | "
            + " | ".join(fmt_ci(bootstrap_median_ci(values)) for values in col.values())
            + f" | {int(np.median(iterations))} | {np.median(mode_walls):.0f} |"
        )
        summary[mode] = {
            **{key: values.tolist() for key, values in col.items()},
            "final_episode_mean": [f["episode_mean"] for f in finals],
            "final_window_iterations": [f["window_iterations"] for f in finals],
            "fresh_best_optimistic": [f["fresh_best_particle_return"] for f in fresh],
            "fresh_episodes_per_policy": [f["fresh_episodes_per_policy"] for f in fresh],
            "iterations": iterations,
            "wall_seconds": mode_walls,
        }
        if mode == "erl":
            extras = [_erl_extras(path) for path in paths]
            summary[mode]["erl"] = extras
            champion = np.array([e["erl_champion"] for e in extras])
            fresh_champion = np.array([e["fresh_erl_champion"] for e in extras])
            elite = np.median([e["erl_rl_elite_rate"] for e in extras])
            selected = np.median([e["erl_rl_selected_rate"] for e in extras])
            notes.append(
                "`erl`: its output is the ERL-population champion: at the last evaluation (one "
                f"episode, so optimistic) {fmt_ci(bootstrap_median_ci(champion))}; fresh "
                f"evaluation of that champion after training "
                f"({fresh_episodes([f['fresh_episodes_per_policy'] for f in fresh])} episodes) "
                f"{fmt_ci(bootstrap_median_ci(fresh_champion))}; migrated particles became "
                f"elites {elite:.0%} and were selected {selected:.0%} of the time (median over "
                "seeds)"
            )
    lines = [
        f"{args.env}, {args.seeds} seeds, budget {args.budget:,} env steps per run "
        f"(extra flags: {' '.join(args.extra) or 'none'}). Each cell: median over seeds "
        "[95 % bootstrap interval of the median]. Final best / mean particle: training return "
        "of the stochastic policies, each particle's episodes that ended in the last 10 % of "
        "the budget (at least one pooling window) pooled, then the best (the paper's metric, a "
        "max over n noisy means) or the mean over particles. Fresh evaluation: after training, "
        f"{fresh_episodes(episodes)} new episodes per particle from reset (not charged to the "
        "budget): the mean over particles, and the fresh return of the particle with the best "
        "final training return (an unbiased score of the particle one would pick).",
        "",
        "| mode | final best particle (training) | final mean particle (training) "
        "| fresh: mean particle | fresh: best particle chosen on training "
        "| iterations (median) | wall s per run (median) |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    lines += [f"\n{note}" for note in notes]
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
    axes[0].set_ylabel(f"{args.env} training return, pooled per particle over its window")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
