"""SVPG against independent and joint workers on CartPole-v1 at the seed's budget.

Runs ``pure``, ``independent`` and ``joint`` for several seeds (16 particles × 10,000 steps × 50
iterations each, REINFORCE), as separate ``evo-svpg run`` processes in parallel on the available
cores, then prints per mode the final window's training return of the best and of the mean
particle, a fresh evaluation after training (mean particle, particle chosen on training), each
as median and range over seeds, how many seeds' best particle reached 475 (and at which
iteration), and the wall time. Re-running with the same ``--out`` resumes unfinished runs; one
runner at a time per ``--out``.

    python runners/cartpole_baselines.py [--seeds 5] [--jobs 2] [--out results/cartpole_baselines]
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from _common import (
    RESERVED,
    SHARED_STREAMS,
    RunnerParser,
    final_returns,
    fresh_episodes,
    fresh_returns,
    run_all,
    run_dir,
    runner_out,
    validate,
    write_outputs,
)

from evo_svpg.plot import load_curves

MODES = ("pure", "independent", "joint")
SOLVED = 475.0
OTHERS = "compare_modes.py compares modes at an env-step budget"
# Flags the runner sets in every run, or that would change the seed's setting it stands for.
OWN_FLAGS = {
    **RESERVED,
    "--budget": f"runs last the seed's 50 iterations; {OTHERS}",
    "--iterations": f"runs last the seed's 50 iterations; {OTHERS}",
    "--env": "this runner is CartPole-v1's; compare_modes.py --env ENV for other environments",
}


def _fmt(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    if not values.size:
        return "n/a"
    return f"{np.median(values):7.1f} [{values.min():.1f} – {values.max():.1f}]"


def _parser() -> RunnerParser:
    parser = RunnerParser(prog="cartpole_baselines.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="runs seeds 0..N-1 of every mode")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at a time (see docs/results/speed.md)"
    )
    parser.add_argument("--out", type=Path, default=Path("results/cartpole_baselines"))
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("extra", nargs="*", help="extra `evo-svpg run` flags after --")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    validate(
        parser,
        counts=[
            ("--seeds", args.seeds, "runs seeds 0..N-1"), ("--jobs", args.jobs, "runs at a time")
        ],
        modes=args.modes, extra=args.extra, reserved=OWN_FLAGS,
        run_flags=lambda mode: list(args.extra),
    )  # fmt: skip
    settings = {"runner": "cartpole_baselines", "seeds": args.seeds, "flags": args.extra}
    with runner_out(parser, args.out, settings):
        _compare(args)


def _setting(path: Path) -> str:
    """``particles × steps × iterations`` of the run in ``path`` (its ``config.json``)."""
    config = json.loads((path / "config.json").read_text())["config"]
    return (
        f"{config['particles']} × {config['steps_per_particle']:,} steps × "
        f"{config['iterations']} iterations per run"
    )


def _first_solved(path: Path) -> int | None:
    """The first iteration whose best particle (pooled over the run's window) reached 475."""
    curves = load_curves(path)
    hit = np.flatnonzero(np.nan_to_num(curves["best"], nan=-math.inf) >= SOLVED)
    return int(curves["iteration"][hit[0]]) if hit.size else None


def _compare(args) -> None:
    start = time.perf_counter()
    walls = run_all(
        args.out,
        args.modes,
        args.seeds,
        None,
        args.jobs,
        lambda mode, seed: [*SHARED_STREAMS, *args.extra],
    )
    total = time.perf_counter() - start

    rows, episodes, summary = [], [], {}
    for mode in args.modes:
        paths = [run_dir(args.out, mode, s) for s in range(args.seeds)]
        finals = [final_returns(path) for path in paths]
        fresh = [fresh_returns(path) for path in paths]
        episodes += [f["fresh_episodes_per_policy"] for f in fresh]
        col = {
            "final_best": np.array([f["best"] for f in finals]),
            "final_mean": np.array([f["mean"] for f in finals]),
            "fresh_mean": np.array([f["fresh_mean_particle_return"] for f in fresh]),
            "fresh_selected": np.array([f["fresh_selected_particle_return"] for f in fresh]),
        }
        firsts = [_first_solved(path) for path in paths]
        mode_walls = [walls[(mode, s)] for s in range(args.seeds)]
        reached = [f for f in firsts if f is not None]
        rows.append(
            f"| `{mode}` | "
            + " | ".join(_fmt(values) for values in col.values())
            + f" | {len(reached)}/{args.seeds} "
            f"({', '.join(str(f) if f else '–' for f in firsts)}) | {np.median(mode_walls):.1f} |"
        )
        summary[mode] = {
            **{key: values.tolist() for key, values in col.items()},
            "final_window_iterations": [f["window_iterations"] for f in finals],
            "fresh_best_optimistic": [f["fresh_best_particle_return"] for f in fresh],
            "fresh_episodes_per_policy": [f["fresh_episodes_per_policy"] for f in fresh],
            "first_iteration_at_475": firsts,
            "wall_seconds": mode_walls,
        }
    seeds = f"{args.seeds} seed" + ("s" if args.seeds != 1 else "")
    lines = [
        f"CartPole-v1, {seeds}, {_setting(run_dir(args.out, args.modes[0], 0))} "
        f"({args.jobs} run(s) at a time; extra flags: {' '.join(args.extra) or 'none'}). Each "
        "cell: median [range] over seeds. Final best / mean particle: training return of the "
        "stochastic policies, each particle's episodes that ended in the last 10 % of the env "
        "steps (at least one pooling window) pooled, then the best (the paper's metric, a max "
        "over n noisy means) or the mean over particles. Fresh evaluation: after training, "
        f"{fresh_episodes(episodes)} new episodes per particle from reset (not charged to the "
        "env steps): the mean over particles, and the fresh return of the particle with the best "
        f"final training return. Seeds reaching {SOLVED:.0f}: the first iteration at which the "
        "best particle's return, pooled over the run's window, reached it.",
        "",
        "| mode | final best particle (training): median [range] "
        "| final mean particle (training): median [range] "
        "| fresh: mean particle | fresh: best particle chosen on training "
        f"| seeds reaching {SOLVED:.0f} (first iteration) | wall s per run (median) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"runs' wall time: {sum(walls.values()):.0f} s in all ({args.jobs} at a time; this "
        f"invocation {total:.0f} s)",
    ]
    write_outputs(args.out, "\n".join(lines), summary, lambda target: _plot(args, target))


def _plot(args, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for k, mode in enumerate(args.modes):
        curves = [load_curves(run_dir(args.out, mode, s)) for s in range(args.seeds)]
        steps = curves[0]["env_steps"]
        for ax, key in zip(axes, ("best", "mean"), strict=True):
            values = np.array([c[key] for c in curves])
            ax.plot(steps, np.median(values, axis=0), color=f"C{k}", label=mode)
            ax.fill_between(steps, values.min(0), values.max(0), color=f"C{k}", alpha=0.2)
            ax.set_title(f"{key} particle (median, range over seeds)")
            ax.set_xlabel("env steps")
    axes[0].set_ylabel("training return, pooled per particle over the run's window")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
