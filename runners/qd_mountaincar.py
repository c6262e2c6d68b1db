"""Sparse-reward MountainCar: does SVPG's kernel repulsion explore like a novelty archive?

Runs independent workers, pure SVPG (α = 10, ``--alpha``), SVPG on novelty, on novelty + return,
selection with novelty fitness, cem-per-particle and erl on ``evo_svpg/MountainCarSparse-v0``
(reward 1 at the goal, 0 otherwise; ``--continuous``: ``evo_svpg/MountainCarContinuousSparse-v0``),
several seeds each, every run stopped at ``--budget`` env steps, with the QD records on (README
"Novelty and quality diversity"). Writes ``table.md``, ``summary.json`` (every column per seed),
``curves.png`` (coverage, successes and the training success rate against env steps) and
``visitation.png`` ((x, v) visitation of the training steps per mode, all seeds). Re-running
resumes unfinished runs; one runner at a time per ``--out``.

    python runners/qd_mountaincar.py --seeds 5 --budget 2000000 --out results/qd/discrete \\
        [--continuous] [--alpha 1] [--jobs 2] [--modes pure novelty] [-- extra run flags]
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
from evo_svpg.plot import curves_on_grid, load_curves

COMPARED = (
    "independent", "pure", "novelty", "novelty-reward", "select-novelty", "cem-per-particle", "erl",
)  # fmt: skip
# One 200-step episode per env per iteration on the discrete task (16 × 2,000 = 32,000 steps an
# iteration, 62 iterations in 2M); half a 999-step episode per env and iteration on the continuous
# one (cut episodes carry on, and are described as a whole when they end).
TASKS = {
    False: ("evo_svpg/MountainCarSparse-v0", ["--steps-per-particle", "2000"]),
    True: ("evo_svpg/MountainCarContinuousSparse-v0", ["--steps-per-particle", "5000"]),
}
COMMON = ["--envs-per-particle", "10", "--qd-every", "1"]
ALPHA = "10"  # the runner's default --alpha
# Flags the runner sets in every run: refused after --.
OWN_FLAGS = {
    **RESERVED,
    "--env": "the runner runs the discrete task, --continuous the continuous one",
    "--alpha": "the runner's --alpha A sets the SVPG temperature (default 10)",
    **{
        flag: "the runner sets it for the task (TASKS and COMMON in qd_mountaincar.py); "
        "use `evo-svpg run` or compare_modes.py for other settings"
        for flag in [*TASKS[False][1], *TASKS[True][1], *COMMON]
        if flag.startswith("--")
    },
}


def _last(path: Path, name: str) -> float:
    _, values = scalar_series(path, name)
    return float(values[-1]) if values.size else float("nan")


def _first_rewarded_training_episode(path: Path) -> float:
    """Env steps at the end of the first iteration in which a training episode reached the goal
    (sparse reward: a particle's pooled return > 0)."""
    curves = load_curves(path)
    reached = np.flatnonzero(np.nan_to_num(curves["best"]) > 0)
    return float(curves["env_steps"][reached[0]]) if reached.size else float("inf")


def _run_stats(path: Path, budget: int) -> dict[str, float]:
    first = _last(path, "first_success_env_steps")
    fresh = fresh_returns(path)
    return {
        "first_success_env_steps": first if np.isfinite(first) else float("inf"),
        "final_success_fraction": _last(path, "success_fraction"),
        "final_coverage": _last(path, "qd_coverage"),
        "final_qd_score": _last(path, "qd_score"),
        # The free deterministic tests' own grid (NaN for runs that did not log it).
        "final_test_coverage": _last(path, "qd_test_coverage"),
        "final_test_qd_score": _last(path, "qd_test_score"),
        "first_rewarded_training_env_steps": _first_rewarded_training_episode(path),
        # Sparse reward: a particle's pooled return is the fraction of its training episodes
        # (ended in the final window) that reached the goal; their mean over particles. Pooling
        # all particles' episodes instead would over-weight the particles whose short,
        # successful episodes end most often.
        "final_training_success": final_returns(path, budget)["mean"],
        # ... and the fresh mean particle return, the fraction of fresh episodes at the goal.
        "fresh_success": fresh["fresh_mean_particle_return"],
        "fresh_episodes_per_policy": fresh["fresh_episodes_per_policy"],
    }


def _steps(values: np.ndarray) -> str:
    """Median of env-step counts over seeds; a seed that never got there counts as +inf."""
    median = np.median(values)
    return "never" if not np.isfinite(median) else f"{median / 1e6:.2f}M"


def _share(values: np.ndarray, digits: int = 1) -> str:
    """Median over seeds of a fraction, as a percentage (``n/a`` if no seed has one)."""
    values = values[np.isfinite(values)]
    return f"{np.median(values):.{digits}%}" if values.size else "n/a"


def _parser() -> RunnerParser:
    parser = RunnerParser(prog="qd_mountaincar.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="runs seeds 0..N-1 of every mode")
    parser.add_argument("--budget", type=int, required=True, help="env steps per run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--continuous", action="store_true", help="the continuous-action task")
    parser.add_argument("--alpha", default=ALPHA, help="SVPG temperature α (default: 10)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at a time")
    parser.add_argument("--modes", nargs="*", default=list(COMPARED), choices=list(MODES))
    parser.add_argument("extra", nargs="*", help="extra `evo-svpg run` flags, after --")
    return parser


def _run_flags(args) -> list[str]:
    """What every run of this comparison gets besides its mode, seed and budget."""
    return [
        "--env",
        args.env,
        *args.task_flags,
        *COMMON,
        *SHARED_STREAMS,
        "--alpha",
        args.alpha,
        *args.extra,
    ]


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    args.env, args.task_flags = TASKS[args.continuous]
    validate(
        parser,
        counts=[
            ("--seeds", args.seeds, "runs seeds 0..N-1"),
            ("--jobs", args.jobs, "runs at a time"),
            ("--budget", args.budget, "env steps per run"),
        ],
        modes=args.modes, extra=args.extra, reserved=OWN_FLAGS,
        run_flags=lambda mode: _run_flags(args),
    )  # fmt: skip
    # A non-default α is recorded as the extra flag it used to be (`-- --alpha 1`), so that an
    # --out made that way keeps its settings.
    alpha_flags = [] if args.alpha == ALPHA else ["--alpha", args.alpha]
    settings = {
        "env": args.env, "seeds": args.seeds, "budget": args.budget,
        "flags": [*alpha_flags, *args.extra],
    }  # fmt: skip
    with runner_out(parser, args.out, settings):
        _compare(args)


def _compare(args) -> None:
    env = args.env
    runs = len(args.modes) * args.seeds
    print(f"{runs} runs of {args.budget:,} env steps on {env}, {args.jobs} at a time")
    start = time.perf_counter()
    walls = run_all(
        args.out, args.modes, args.seeds, args.budget, args.jobs,
        lambda mode, seed: _run_flags(args),
    )  # fmt: skip
    total = time.perf_counter() - start

    stats = {
        mode: [_run_stats(run_dir(args.out, mode, s), args.budget) for s in range(args.seeds)]
        for mode in args.modes
    }
    columns = {
        mode: {key: np.array([st[key] for st in seeds]) for key in seeds[0]}
        for mode, seeds in stats.items()
    }
    test_grid = any(np.isfinite(col["final_test_coverage"]).any() for col in columns.values())
    episodes = fresh_episodes([e for c in columns.values() for e in c["fresh_episodes_per_policy"]])
    lines = [
        f"{env}, {_seeds(args.seeds)}, α = {args.alpha}, budget {args.budget:,} env steps per run "
        f"(extra flags: {' '.join(args.extra) or 'none'}). Success: a particle's deterministic "
        "policy reaches the goal in a test episode after an iteration (free tests, not charged "
        "to the budget). Coverage and QD-score: the grid archive, at the end of the run, of "
        "the episodes charged to the budget (training episodes and candidate evaluations), "
        "median over seeds [95 % bootstrap interval of the median]"
        + ("; test-grid coverage: the grid of the deterministic test episodes" if test_grid else "")
        + ". Training success: each particle's fraction of its training episodes that reached "
        "the goal, among those that ended in the last 10 % of the budget (at least one pooling "
        "window), averaged over particles (the final mean particle return). Fresh success: "
        f"after training, {episodes} new episodes of every particle's stochastic policy (not "
        "charged to the budget); each particle's fraction at the goal, averaged over particles "
        "(the fresh mean particle return).",
        "",
        "| mode | seeds with a success | env steps to first success (median) "
        "| particles succeeding at the end (median) | coverage | QD-score "
        + ("| test-grid coverage " if test_grid else "")
        + "| first training episode at the goal (median) | training success, mean particle, last "
        "10 % of the budget (median) | fresh success, mean particle (median) |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if test_grid else ""),
    ]
    summary = {}
    for mode in args.modes:
        col = columns[mode]
        successes = int(np.isfinite(col["first_success_env_steps"]).sum())
        lines.append(
            f"| `{mode}` | {successes}/{args.seeds} | {_steps(col['first_success_env_steps'])} | "
            f"{_share(col['final_success_fraction'], 0)} | "
            f"{_ci(col['final_coverage'], 3)} | {_ci(col['final_qd_score'], 0)} | "
            + (f"{_ci(col['final_test_coverage'], 3)} | " if test_grid else "")
            + f"{_steps(col['first_rewarded_training_env_steps'])} | "
            f"{_share(col['final_training_success'])} | {_share(col['fresh_success'])} |"
        )
        summary[mode] = {key: values.tolist() for key, values in col.items()}
        summary[mode]["wall_seconds"] = [walls[(mode, s)] for s in range(args.seeds)]
    spent = sum(walls.values())
    lines += ["", f"runs' wall time: {spent:.0f} s in all ({args.jobs} at a time; this "
              f"invocation {total:.0f} s)"]  # fmt: skip
    write_outputs(args.out, "\n".join(lines), summary, lambda target: _plot(args, target))


def _seeds(n: int) -> str:
    return f"{n} seed" + ("s" if n != 1 else "")


def _ci(values: np.ndarray, digits: int) -> str:
    return fmt_ci(bootstrap_median_ci(values), digits)


def _plot(args, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, args.budget, 200)
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN grid points before iteration 1
    for k, mode in enumerate(args.modes):
        runs = [run_dir(args.out, mode, s) for s in range(args.seeds)]
        color = f"C{k % 10}"
        coverage = scalar_on_grid(runs, "qd_coverage", grid)
        axes[0].plot(grid, np.nanmedian(coverage, axis=0), color=color, label=mode)
        lo, hi = np.nanquantile(coverage, [0.25, 0.75], axis=0)
        axes[0].fill_between(grid, lo, hi, color=color, alpha=0.12)
        first = np.array([_run_stats(r, args.budget)["first_success_env_steps"] for r in runs])
        axes[1].plot(grid, (first[:, None] <= grid).mean(axis=0), color=color, label=mode)
        training = curves_on_grid(runs, grid)["mean"]
        axes[2].plot(grid, np.nanmedian(training, axis=0), color=color, label=mode)
    titles = (
        "grid-archive coverage (median, quartile band)",
        f"fraction of the {_seeds(args.seeds)} with a deterministic success",
        "training success of the mean particle, pooled window (median)",
    )
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("env steps (rollouts + candidate evaluations)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(args.env)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)
    _plot_visitation(args, target.with_name("visitation.png"))


def _plot_visitation(args, target: Path) -> None:
    import matplotlib.pyplot as plt

    cols = min(4, len(args.modes))
    rows = -(-len(args.modes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.4 * rows), squeeze=False)
    for ax, mode in zip(axes.flat, args.modes, strict=False):
        counts, extent = 0, None
        for s in range(args.seeds):
            with np.load(run_dir(args.out, mode, s) / "qd.npz") as data:
                counts = counts + data["visitation"]
                (x_lo, x_hi), (v_lo, v_hi) = data["visitation_range"]
                extent = (x_lo, x_hi, v_lo, v_hi)
        ax.imshow(np.log1p(counts).T, origin="lower", extent=extent, aspect="auto", cmap="magma")
        ax.axvline(0.45 if args.continuous else 0.5, color="w", ls="--", lw=0.8)
        ax.set_title(f"{mode}", fontsize=10)
        ax.set_xlabel("x (goal: dashed)")
        ax.set_ylabel("v")
    for ax in axes.flat[len(args.modes) :]:
        ax.axis("off")
    fig.suptitle(f"{args.env}: log(1 + visits) of training states, {_seeds(args.seeds)} summed")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
