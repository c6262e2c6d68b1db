"""``evo-svpg``: ``run`` a mode, ``plot`` learning curves, list ``modes``.

Thin by design: parse, build the config, hand over to :func:`evo_svpg.engine.train`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import fields
from pathlib import Path

import threadpoolctl
import torch

from evo_svpg.behaviour import DESCRIPTORS
from evo_svpg.callbacks import (
    CHECKPOINT,
    Checkpointer,
    MetricsCSV,
    Progress,
    QDArrays,
    ScalarsCSV,
    Summary,
    TensorBoardScalars,
)
from evo_svpg.config import RunConfig, field_docs, load_toml
from evo_svpg.engine import build_run, load_run_state, train
from evo_svpg.estimators import ESTIMATORS
from evo_svpg.modes import MODES, describe_operators, operator_names
from evo_svpg.policy import ACTIVATIONS, OBS_SCALINGS
from evo_svpg.sampler import NonFiniteError

RESUME_OVERRIDABLE = ("iterations", "budget", "device", "threads", "checkpoint_every")
CHOICES = {
    "mode": tuple(MODES),
    "estimator": ESTIMATORS,
    "activation": ACTIVATIONS,
    "descriptor": tuple(DESCRIPTORS),
    "obs_scaling": OBS_SCALINGS,
}


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ints") from exc


def _bandwidth(text: str) -> str | float:
    try:
        return float(text)
    except ValueError:
        return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evo-svpg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train a population (defaults: the seed's CartPole setting)")
    docs = field_docs()
    defaults = RunConfig()
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        kind = {int: int, float: float}.get(type(default), str)
        if f.name.endswith("hidden_sizes"):
            kind = _sizes
        elif f.name == "bandwidth":
            kind = _bandwidth
        run.add_argument(
            flag, type=kind, default=None, choices=CHOICES.get(f.name),
            help=f"{docs[f.name]} (default: {default})",
        )  # fmt: skip
    run.add_argument("--config", type=Path, help="TOML file of config keys; flags override it")
    run.add_argument("--out", type=Path, help="results directory (default: runs/<name>)")
    run.add_argument("--resume", type=Path, metavar="DIR", help="continue the run saved in DIR")
    plot = sub.add_parser("plot", help="learning curves (best and mean particle) to PNG")
    plot.add_argument("dirs", type=Path, nargs="+", help="run directories with metrics.csv")
    plot.add_argument("--out", type=Path, help="PNG path (default: DIR/learning_curves.png)")
    sub.add_parser("modes", help="list the modes and the operators they compose")
    return parser


def _resolve(args: argparse.Namespace) -> tuple[RunConfig, Path, bool]:
    names = [f.name for f in fields(RunConfig)]
    overrides = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if args.resume is not None:
        out = args.resume
        saved = out / "config.json"
        if not saved.exists():
            raise ValueError(f"--resume {out}: no config.json there (not a run directory)")
        fixed = sorted(set(overrides) - set(RESUME_OVERRIDABLE))
        if fixed or args.config is not None or args.out is not None:
            raise ValueError(
                f"--resume continues a run with its saved config; only {list(RESUME_OVERRIDABLE)}"
                f" may be changed, got {fixed or ['--config/--out']}"
            )
        data = json.loads(saved.read_text())["config"]
        return RunConfig.from_dict({**data, **overrides}, source=str(saved)), out, True
    base = load_toml(args.config) if args.config is not None else {}
    cfg = RunConfig.from_dict({**base, **overrides}, source=str(args.config or "flags"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("runs") / f"{cfg.mode}-{cfg.env}-seed{cfg.seed}-{stamp}"
    if (out / "metrics.csv").exists():
        raise ValueError(
            f"--out {out} already holds a run; continue it with --resume {out} "
            "or pick another --out"
        )
    return cfg, out, False


def _describe(run) -> dict:
    return {
        "config": run.config.to_dict(),
        "resolved": {
            "policies": run.layout.policies,
            "steps_per_policy": run.layout.steps_per_policy,
            "envs_per_policy": run.layout.envs_per_policy,
            "n_params": run.spec.n_params,
            "env_fast_path": run.env.is_fast_path,
            "operators": describe_operators(run.operators),
            "torch_threads": torch.get_num_threads(),
            "blas": _blas_info(),
            "torch_version": torch.__version__,
        },
    }


def _blas_info() -> list[str]:
    return [f"{d['internal_api']}:{d['num_threads']}" for d in threadpoolctl.threadpool_info()]


def cmd_run(args: argparse.Namespace) -> int:
    cfg, out, resuming = _resolve(args)
    run = build_run(cfg)
    out.mkdir(parents=True, exist_ok=True)
    if resuming:
        if (out / CHECKPOINT).exists():
            load_run_state(run, torch.load(out / CHECKPOINT, weights_only=False))
            print(f"resuming {out} after iteration {run.state.iteration}")
        else:
            print(f"no checkpoint in {out} yet: starting it from iteration 0")
    (out / "config.json").write_text(json.dumps(_describe(run), indent=2) + "\n")
    checkpointer = Checkpointer(out, cfg.checkpoint_every)
    callbacks = [
        MetricsCSV(out), ScalarsCSV(out), TensorBoardScalars(out), checkpointer, Summary(out),
        Progress(),
    ]  # fmt: skip
    if cfg.qd_every:
        callbacks.insert(-1, QDArrays(out, cfg.checkpoint_every))
    try:
        train(run, callbacks)
    except KeyboardInterrupt:
        done = checkpointer.saved_iteration
        if done == 0:
            print(
                f"\ninterrupted before the first iteration ended; nothing saved yet: "
                f"evo-svpg run --resume {out} starts it again"
            )
        else:
            print(
                f"\ninterrupted; saved after iteration {done}; continue: "
                f"evo-svpg run --resume {out}"
            )
        return 130
    except NonFiniteError as exc:
        print(f"evo-svpg: stopped: {exc}", file=sys.stderr)
        return 1
    summary = json.loads((out / "summary.json").read_text())
    print(
        f"done: {run.state.iteration} iterations, {run.state.env_steps:,} env steps, final best "
        f"particle return {summary['final_best_particle_return']:.1f}, mean "
        f"{summary['final_mean_particle_return']:.1f}, "
        f"{summary['training_seconds_this_session']:.1f} s"
    )
    qd = "qd.npz, " if cfg.qd_every else ""
    print(
        f"results in {out}/ (metrics.csv, scalars.csv, {qd}config.json, summary.json, "
        f"tensorboard/, {CHECKPOINT})"
    )
    print(f"plot them: evo-svpg plot {out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from evo_svpg.plot import plot_runs

    target = args.out or args.dirs[0] / "learning_curves.png"
    plot_runs(args.dirs, target)
    print(f"wrote {target}")
    return 0


def cmd_modes(args: argparse.Namespace) -> int:
    for name, mode in MODES.items():
        print(f"{name:18s} {mode.description}\n{'':18s} [{operator_names(name)}]")
    print("(Every(k, ...) shows the default period; config.json records the one a run used)")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args = _parser().parse_args(argv)
    command = {"run": cmd_run, "plot": cmd_plot, "modes": cmd_modes}[args.command]
    try:
        return command(args)
    except ValueError as exc:
        print(f"evo-svpg: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
