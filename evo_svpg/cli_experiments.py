"""``evo-svpg sweep``, ``report`` and ``tune``: their flags and handlers (the work is in
:mod:`evo_svpg.sweep`, :mod:`evo_svpg.sweep_report` and :mod:`evo_svpg.tune`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_experiment_parsers(sub) -> None:
    """The three subcommands on ``sub`` (the CLI's subparsers)."""
    sweep = sub.add_parser(
        "sweep", help="every run of SPEC.toml (seeds × a grid of settings); again: finish it"
    )
    sweep.add_argument("spec", type=Path, help="TOML: seeds = [...], [base] keys, [grid] lists")
    sweep.add_argument("--out", type=Path, required=True, help="the sweep's directory")
    sweep.add_argument(
        "--jobs", type=int, help="runs at once (default: local, one per usable core; ray, one "
        "per CPU of the cluster)",
    )  # fmt: skip
    sweep.add_argument("--backend", default="local", choices=["local", "ray"])
    sweep.add_argument("--address", default="", help="the Ray cluster (HEAD:6379); '': local")
    report = sub.add_parser("report", help="rliable statistics and figures of sweep runs")
    report.add_argument("dirs", type=Path, nargs="+", help="sweep directories")
    report.add_argument(
        "--metric", action="append", help="a summary.json field (default: "
        "final_mean_particle_return); again for more: the first gets the pairs and figures, "
        "every one a column of IQMs",
    )  # fmt: skip
    report.add_argument("--out", type=Path, help="where report.md etc. go (default: DIR)")
    report.add_argument(
        "--reps", type=int, default=5000, help="bootstrap resamples per aggregate (default 5000)"
    )
    tune = sub.add_parser("tune", help="an Optuna study over run settings (SQLite, resumable)")
    tune.add_argument("spec", type=Path, help="TOML: seeds, [base], [search] ranges and lists")
    tune.add_argument("--trials", type=int, required=True, help="the study's total trials")
    tune.add_argument("--out", type=Path, required=True, help="the study's directory")
    tune.add_argument("--jobs", type=int, help="a trial's runs at once (default: usable cores)")
    tune.add_argument("--backend", default="local", choices=["local", "ray"])
    tune.add_argument("--address", default="", help="the Ray cluster (HEAD:6379); '': local")


def cmd_sweep(args: argparse.Namespace) -> int:
    from evo_svpg.sweep import run_sweep

    jobs = args.jobs
    if jobs is None:
        jobs = len(os.sched_getaffinity(0)) if args.backend == "local" else 0
    return run_sweep(args.spec, args.out, jobs, args.backend, args.address)


def cmd_report(args: argparse.Namespace) -> int:
    from evo_svpg.sweep_report import write_report

    if args.reps < 100:
        raise ValueError(f"--reps {args.reps}: must be >= 100 (bootstrap resamples)")
    metrics = args.metric or ["final_mean_particle_return"]
    path = write_report(args.dirs, metrics, args.out or args.dirs[0], args.reps)
    print(path.read_text())
    print(f"wrote {path.parent}/report.md, report.json, iqm_curve.png, performance_profile.png")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from evo_svpg.tune import run_tune

    jobs = len(os.sched_getaffinity(0)) if args.jobs is None else args.jobs
    return run_tune(args.spec, args.trials, args.out, jobs, args.backend, args.address)


EXPERIMENT_COMMANDS = {"sweep": cmd_sweep, "report": cmd_report, "tune": cmd_tune}
