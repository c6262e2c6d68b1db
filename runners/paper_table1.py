"""The SVPG paper's Table 1: joint, independent and SVPG workers on rllab's swing-up and double
pendulum, with REINFORCE and the paper's "A2C" (``linear-baseline``).

Each cell is a config, ``configs/paper_table1/<estimator>-<env>-<variant>.toml`` (whole-episode
sampling as rllab); the runner runs it for each seed with its ``--iterations`` iterations of
``--particles`` × ``--steps-per-particle`` env steps. SVPG runs once per kernel
bandwidth convention (``svpg-svgd``: the paper text's, ``svpg-svpg_code``: the released code's);
``langevin`` is the released code's extra baseline (``--mode langevin``), not in Table 1.
Writes ``table.md`` in the paper's format: per cell the maximum over iterations of the
seed-mean best-particle curve (each iteration's best particle, its training return), the first
iteration at which that curve comes within 5 % of its maximum, and the paper's number beside it;
then the final mean particle and a fresh evaluation after training of every particle and of the
one chosen on training (medians over seeds, 95 % bootstrap intervals); ``summary.json`` (every
value per seed) and ``curves.png`` (seed-mean best particle with a band of ±1 standard error).

Each finished run leaves a compact record, ``records/<estimator>/<env>/<variant>/seed<k>.json``
(config, wall time, fresh evaluation, best and mean particle per iteration, each particle's
final training return; :mod:`_records`), written as it finishes, and the table is made from
records only. Commit ``OUT`` without its run directories (the repository's ``.gitignore`` drops
them under ``docs/results/``): the same command on another machine then rebuilds the table
and runs only what the records lack. Re-running it resumes unfinished runs and re-tabulates;
records or runs made with other settings are refused; more or fewer ``--seeds`` may be given;
one runner per ``--out``; ``--tabulate-only`` launches nothing (it only rebuilds the table).

    python runners/paper_table1.py --out docs/results/table1 [--seeds 5] [--iterations 1000] \\
        [--steps-per-particle 10000] [--particles 16] [--estimators reinforce linear-baseline] \\
        [--envs swing-up double-pendulum] [--variants joint independent svpg-svgd \\
        svpg-svpg_code langevin] [--jobs 2] [--tabulate-only] [-- extra run flags]
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from _common import (
    RESERVED,
    RunnerParser,
    bootstrap_median_ci,
    check_existing_runs,
    extra_flag_collision,
    finished,
    fmt_ci,
    fresh_episodes,
    run_all,
    run_dir,
    runner_out,
    write_outputs,
)
from _records import check_records, collect_records, recorded, write_record

from evo_svpg.cli import check_run_flags
from evo_svpg.curve_peak import peak_interval, peak_of_mean

# Each cell is a config file, configs/paper_table1/<estimator>-<env>-<variant>.toml, runnable on
# its own with `evo-svpg run --config`; the runner only overrides the three counts.
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "paper_table1"
ENVS = ("swing-up", "double-pendulum")
TABLE1 = ("joint", "independent", "svpg-svgd", "svpg-svpg_code")  # the default grid
VARIANTS = (*TABLE1, "langevin")  # langevin: the released code's extra figure, on request
ESTIMATORS = ("reinforce", "linear-baseline")
# Table 1 of Liu et al. 2017: best return (seed-mean of the best-agent curve) and the iterations
# to reach 95 % of it. The paper's "A2C" is this project's linear-baseline estimator.
PAPER = {
    ("linear-baseline", "swing-up"): {"joint": (308.71, 189), "independent": (419.62, 474),
                                      "svpg": (436.84, 171)},
    ("linear-baseline", "double-pendulum"): {"joint": (-938.73, 46), "independent": (-256.64, 638),
                                             "svpg": (-244.85, 199)},
    ("reinforce", "swing-up"): {"joint": (232.96, 253), "independent": (391.46, 594),
                                "svpg": (426.69, 238)},
    ("reinforce", "double-pendulum"): {"joint": (-892.31, 446), "independent": (-797.45, 443),
                                       "svpg": (-319.66, 327)},
}  # fmt: skip
OWN_FLAGS = {
    **RESERVED,
    "--config": "every cell runs its own configs/paper_table1/ file",
    "--mode": "--variants chooses the workers",
    "--env": "--envs chooses the environments",
    "--estimator": "--estimators chooses the estimators",
    "--sampling": "the paper's runs sample whole episodes",
    "--bandwidth": "--variants svpg-svgd / svpg-svpg_code choose the kernel",
    "--particles": "the runner's --particles",
    "--steps-per-particle": "the runner's --steps-per-particle",
    "--iterations": "the runner's --iterations",
}


def _parser() -> RunnerParser:
    parser = RunnerParser(prog="paper_table1.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=5, help="runs seeds 0..N-1 of every cell")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--steps-per-particle", type=int, default=10_000,
                        help="the paper: 10,000; the released code: 5,000")  # fmt: skip
    parser.add_argument("--particles", type=int, default=16)
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS)
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=ENVS)
    parser.add_argument(
        "--variants", nargs="+", default=list(TABLE1), choices=VARIANTS,
        help="default: the workers of Table 1; add langevin for the released code's baseline",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at a time")
    parser.add_argument(
        "--tabulate-only", action="store_true",
        help="launch nothing: tabulate the records (written first for finished run directories)",
    )  # fmt: skip
    parser.add_argument("extra", nargs="*", help="extra `evo-svpg run` flags, after --")
    return parser


def cell_config(estimator: str, env: str, variant: str) -> Path:
    return CONFIGS / f"{estimator}-{env}-{variant}.toml"


def run_flags(args, estimator: str, env: str, variant: str) -> list[str]:
    """The `evo-svpg run` flags of one cell (without seed, threads and --out)."""
    return [
        "--config", str(cell_config(estimator, env, variant)),
        "--particles", str(args.particles), "--steps-per-particle", str(args.steps_per_particle),
        "--iterations", str(args.iterations), *args.extra,
    ]  # fmt: skip


def cell_dir(out: Path, estimator: str, env: str, variant: str, seed: int) -> Path:
    return run_dir(out, f"{estimator}/{env}/{variant}", seed)  # as run_all places it


def _check(parser: RunnerParser, args) -> None:
    for flag, value in (("--seeds", args.seeds), ("--iterations", args.iterations),
                        ("--particles", args.particles), ("--jobs", args.jobs),
                        ("--steps-per-particle", args.steps_per_particle)):  # fmt: skip
        if value < 1:
            parser.exit(2, f"{parser.prog}: error: {flag} {value}: must be >= 1\n")
    problem = extra_flag_collision(args.extra, OWN_FLAGS)
    if problem:
        parser.exit(2, f"{parser.prog}: error: {problem}\n")
    for estimator in args.estimators:
        for env in args.envs:
            for variant in args.variants:
                try:
                    check_run_flags(run_flags(args, estimator, env, variant))
                except ValueError as exc:
                    parser.exit(2, f"{parser.prog}: error: {estimator} {env} {variant}: {exc}\n")


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    settings = {  # (the seeds are not a setting: more or fewer may be tabulated)
        key: getattr(args, key)
        for key in ("iterations", "steps_per_particle", "particles", "extra")
    }
    with runner_out(parser, args.out, settings):
        _run_and_tabulate(args)


def _run_and_tabulate(args) -> None:
    cells = [(e, v, w) for e in args.estimators for v in args.envs for w in args.variants]
    labels = {"/".join(cell): cell for cell in cells}  # run directories OUT/<e>/<env>/<w>/seed<k>

    def flags(label: str, seed: int) -> list[str]:
        return run_flags(args, *labels[label])

    check_records(args.out, list(labels), args.seeds, flags)
    if args.tabulate_only:  # (run_all checks the runs it finds itself)
        check_existing_runs(args.out, list(labels), args.seeds, None, flags, mode_flag=False)
    else:
        known = recorded(args.out, list(labels), args.seeds)
        done = {(lb, s) for lb in labels for s in range(args.seeds)
                if finished(cell_dir(args.out, *labels[lb], s), None)} - known  # fmt: skip
        todo = len(cells) * args.seeds - len(known | done)
        print(f"{len(cells) * args.seeds} runs ({len(cells)} cells × {args.seeds} seeds): "
              f"{len(known)} recorded, {len(done)} finished, {todo} to run, "
              f"{args.jobs} at a time")  # fmt: skip
        run_all(
            args.out, list(labels), args.seeds, None, args.jobs, flags, mode_flag=False,
            seed_major=True,  # an interrupted grid has the first seeds of every cell
            skip=known,  # recorded here or on another machine: not run again
            on_finished=lambda label, seed: write_record(args.out, label, seed),
        )  # fmt: skip
    records = collect_records(args.out, list(labels), args.seeds, lambda p: finished(p, None))
    tabulate(args, cells, records)


def tabulate(args, cells, records: dict[tuple[str, int], dict]) -> None:
    head = ("| estimator | env | workers | best return [95 % interval at its iteration] "
            "(iteration at 95 %) | paper "
            "| final mean particle | fresh mean particle | fresh particle chosen on training "
            "| seeds |")  # fmt: skip
    rows, summary, per_seed = [head, "|---|---|---|---|---|---|---|---|---|"], {}, []
    figures, seconds, episodes = {}, 0.0, []
    for estimator, env, variant in cells:
        label = f"{estimator}/{env}/{variant}"
        done = [records[(label, s)] for s in range(args.seeds) if (label, s) in records]
        if not done:
            continue
        seconds += sum(r["wall_seconds"] for r in done)
        episodes += [r["fresh"].get("fresh_episodes_per_policy", np.nan) for r in done]
        length = min(r["iterations"] for r in done)
        best = np.array([r["best_particle"][:length] for r in done])
        mean = np.array([r["mean_particle"][:length] for r in done])
        top, first = peak_of_mean(best)
        low, high = peak_interval(best)
        interval = f"[{low:.1f}, {high:.1f}]" if len(done) > 1 else "[n/a: 1 seed]"
        final_mean = np.nanmean(mean[:, -max(1, length // 10) :], axis=1)
        fresh = np.array([r["fresh"]["fresh_mean_particle_return"] for r in done])
        chosen = np.array([r["fresh"]["fresh_selected_particle_return"] for r in done])
        ref = PAPER[(estimator, env)].get("svpg" if variant.startswith("svpg") else variant)
        rows.append(
            f"| {estimator} | {env} | {variant} | {top:.1f} {interval} ({first}) | "
            f"{f'{ref[0]} ({ref[1]})' if ref else '—'} | "
            f"{fmt_ci(bootstrap_median_ci(final_mean))} | {fmt_ci(bootstrap_median_ci(fresh))} "
            f"| {fmt_ci(bootstrap_median_ci(chosen))} | {len(done)} |"
        )
        summary[label] = {
            "best_return": top, "best_return_interval_at_peak": [low, high],
            "iteration_at_95": first,
            "paper": list(ref) if ref else None,
            "seed_ids": [r["seed"] for r in done],
            "best_curve_max_per_seed": np.nanmax(best, axis=1).tolist(),
            "final_mean_particle": final_mean.tolist(), "fresh_mean_particle": fresh.tolist(),
            "fresh_chosen_particle": chosen.tolist(), "seeds": len(done), "iterations": length,
            "wall_seconds": [r["wall_seconds"] for r in done],
        }  # fmt: skip
        figures[(estimator, env, variant)] = best
        per_seed.append(
            f"- {estimator}, {env}, `{variant}` (seeds {', '.join(str(r['seed']) for r in done)}):"
            f" maxima {_listed(np.nanmax(best, axis=1))}; final mean particle "
            f"{_listed(final_mean)}; fresh chosen particle {_listed(chosen)}"
        )
    table = (
        f"Table 1 setting: {args.particles} particles × {args.steps_per_particle:,} env steps "
        f"per iteration, {args.iterations} iterations, whole-episode sampling; "
        f"{' '.join(args.extra) or 'no extra flags'}. Best return: max over iterations of the "
        "seed-mean of each iteration's best particle (training return), with the 95 % "
        "percentile bootstrap interval over seeds of that seed mean at the iteration of the "
        "maximum; final mean particle: the last 10 % of iterations; fresh: "
        f"{fresh_episodes(episodes)} new episodes per particle after training, of every "
        "particle (mean) and of the one with the best final training return (an unbiased "
        "score of the particle one would pick); these three are "
        "medians over seeds [95 % bootstrap interval]. Compute: "
        f"{seconds / 3600:.1f} h ({seconds:,.0f} s) of wall time, summed over the runs of this "
        "table (each run's sessions, as its record says).\n\n"
        + "\n".join(rows)
        + "\n\nPer seed (maxima of the best-particle curve, each at its own iteration: their mean "
        "is not the best return above, the maximum of the seed-mean curve; final mean particle; "
        "fresh return of the particle chosen on training):\n" + "\n".join(per_seed)
    )
    write_outputs(args.out, table, summary, lambda target: _plot(figures, target))


def _listed(values: np.ndarray) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def _plot(figures: dict, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(e, v) for e, v, _ in figures})
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4))
    axes = np.atleast_1d(axes)
    for ax, (estimator, env) in zip(axes, panels, strict=False):
        for (e, v, variant), best in figures.items():
            if (e, v) != (estimator, env):
                continue
            mean = np.nanmean(best, axis=0)
            se = np.nanstd(best, axis=0) / np.sqrt(best.shape[0])
            x = np.arange(1, mean.size + 1)
            ax.plot(x, mean, label=variant)
            ax.fill_between(x, mean - se, mean + se, alpha=0.2)
        ax.set_title(f"{estimator}, {env}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("best particle (training return)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(target)
    plt.close(fig)


if __name__ == "__main__":
    main()
