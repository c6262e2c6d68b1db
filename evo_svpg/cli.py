"""``evo-svpg``: ``run`` a mode, ``plot`` learning curves, list ``modes``, ``sweep`` a grid,
``report`` its statistics, ``tune`` settings with Optuna.

Thin by design: parse, build the config, hand over to :func:`evo_svpg.loop.train`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import signal
import sys
from pathlib import Path

import threadpoolctl
import torch

from evo_svpg.callbacks import (
    CHECKPOINT,
    Checkpointer,
    MetricsCSV,
    OperatorArrays,
    Progress,
    ScalarsCSV,
    Summary,
    TensorBoardScalars,
)
from evo_svpg.checkpoint import load_checkpoint
from evo_svpg.cli_experiments import EXPERIMENT_COMMANDS, add_experiment_parsers
from evo_svpg.config import RunConfig, all_keys, flatten, load_toml, sections_for_help
from evo_svpg.engine import build_run, check_run_config
from evo_svpg.loop import Terminated, train
from evo_svpg.modes import describe_operators, mode_operators
from evo_svpg.registry import ESTIMATORS, MODES
from evo_svpg.run_state import RESUME_OVERRIDABLE, load_run_state
from evo_svpg.rundir import (
    RunLock,
    atomic_write_bytes,
    check_fresh_out,
    default_out,
    make_directory,
    remove_run_outputs,
)
from evo_svpg.sampler import NonFiniteError
from evo_svpg.workers import WorkerDied


def _flag_type(parse, default):
    """``--flag`` text → value: the setting's ``parse``, else the default's type."""
    convert = parse or {int: int, float: float}.get(type(default), str)

    def typed(text: str):
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    typed.__name__ = getattr(convert, "__name__", "value")
    return typed


class _RaisingParser(argparse.ArgumentParser):
    """An argument parser whose errors are ValueErrors (for :func:`check_run_flags`)."""

    def error(self, message: str):
        raise ValueError(message)


def _parser(
    cls: type[argparse.ArgumentParser] = argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    parser = cls(prog="evo-svpg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train a population (defaults: the seed's CartPole setting)")
    for title, section in sections_for_help():  # each component's settings, its own group
        group = run.add_argument_group(f"{title} [{section.section or 'run'}]")
        for key, doc, default, meta in section.field_help():
            choices = list(meta["choices"]()) if meta.get("choices") else None
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            group.add_argument(
                "--" + key.replace("_", "-"), dest=key, default=None, choices=choices,
                type=_flag_type(meta.get("parse"), default), help=f"{doc} (default: {shown})",
            )  # fmt: skip
    run.add_argument(
        "--config", type=Path, help="TOML (or .json) file of config keys; flags override it"
    )
    run.add_argument("--out", type=Path, help="results directory (default: runs/<name>)")
    run.add_argument("--resume", type=Path, metavar="DIR", help="continue the run saved in DIR")
    plot = sub.add_parser("plot", help="learning curves (best and mean particle) to PNG")
    plot.add_argument("dirs", type=Path, nargs="+", help="run directories with metrics.csv")
    plot.add_argument("--out", type=Path, help="PNG path (default: DIR/learning_curves.png)")
    sub.add_parser("modes", help="list the modes and the operators they compose")
    add_experiment_parsers(sub)
    return parser


def _resolve(args: argparse.Namespace) -> tuple[RunConfig, Path | None, bool]:
    """``(config, out, resuming)``; ``out`` is None for a new run without ``--out`` (a fresh
    directory is made for it once the run has been built)."""
    overrides = {k: getattr(args, k) for k in all_keys() if getattr(args, k) is not None}
    if args.resume is not None:
        out = args.resume
        fixed = sorted(set(overrides) - set(RESUME_OVERRIDABLE))
        if fixed or args.config is not None or args.out is not None:
            raise ValueError(
                f"--resume continues a run with its saved config; only {list(RESUME_OVERRIDABLE)}"
                f" may be changed, got {fixed or ['--config/--out']}"
            )
        saved = flatten(_saved_config(out))
        return (
            RunConfig.from_saved({**saved, **overrides}, source=str(out / "config.json")),
            out,
            True,
        )
    base = load_toml(args.config) if args.config is not None else {}
    cfg = RunConfig.from_dict({**base, **overrides}, source=str(args.config or "flags"))
    if args.out is not None:
        check_fresh_out(args.out)
    return cfg, args.out, False


def config_of_flags(flags: list[str]) -> RunConfig:
    """The config ``evo-svpg run FLAGS`` would train (flags, ``--config`` file, defaults),
    checked as values only; ValueError otherwise."""
    args = _parser(_RaisingParser).parse_args(["run", *flags])
    if args.resume is not None or args.out is not None:
        raise ValueError("--out and --resume are set by the runner")
    cfg, _, _ = _resolve(args)
    return cfg


def check_run_flags(flags: list[str]) -> RunConfig:
    """:func:`config_of_flags`, also checked for everything :func:`build_run` refuses (device,
    environment, observation bounds, memory). Runners call it for every mode first."""
    cfg = config_of_flags(flags)
    check_run_config(cfg)
    return cfg


def _saved_config(out: Path) -> dict:
    """The ``config`` of ``out/config.json``; ValueError if ``out`` is not a run directory."""
    path = out / "config.json"
    if not out.is_dir() or not path.is_file():
        raise ValueError(f"--resume {out}: no config.json there (not a run directory)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--resume {out}: config.json is unreadable ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ValueError(f"--resume {out}: config.json was not written by evo-svpg run")
    return data["config"]


def _describe(run) -> dict:
    return {
        "config": run.config.to_nested(),
        "resolved": {
            "policies": run.layout.policies,
            "steps_per_policy": run.layout.steps_per_policy,
            "envs_per_policy": run.layout.envs_per_policy,
            "max_episode_steps": run.env.max_episode_steps,
            "pooling_window": run.pooling_window,
            "n_params": run.spec.n_params,
            "env_fast_path": run.env.is_fast_path,
            "operators": describe_operators(run.operators),
            "workers": run.workers,
            "torch_threads": torch.get_num_threads(),
            "blas": _blas_info(),
            "torch_version": torch.__version__,
        },
    }


def _blas_info() -> list[str]:
    return [f"{d['internal_api']}:{d['num_threads']}" for d in threadpoolctl.threadpool_info()]


def _continue(run, out: Path) -> None:
    """Load ``out``'s checkpoint into ``run``, or refuse if that would lose results."""
    if (out / CHECKPOINT).exists():
        load_run_state(run, load_checkpoint(out / CHECKPOINT), source=str(out / CHECKPOINT))
        cfg, state = run.config, run.state
        if cfg.iterations < state.iteration:
            raise ValueError(
                f"iterations={cfg.iterations} is below the {state.iteration} iterations {out} has "
                "done; --resume can only continue or extend a run"
            )
        if 0 < cfg.budget < state.env_steps:
            raise ValueError(
                f"budget={cfg.budget} is below the {state.env_steps} env steps {out} has spent; "
                "--resume can only continue or extend a run"
            )
        print(f"resuming {out} after iteration {state.iteration}")
        return
    done = _iterations_in(out / "metrics.csv")
    if done:
        raise ValueError(
            f"{out} has {done} iteration(s) in metrics.csv but no {CHECKPOINT}: it cannot be "
            "continued, and restarting would overwrite them; start a new run with another --out"
        )
    print(f"no checkpoint in {out} yet: starting it from iteration 0")


def _iterations_in(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, newline="") as fh:
        return len({row[0] for row in list(csv.reader(fh))[1:] if row})


def cmd_run(args: argparse.Namespace) -> int:
    cfg, out, resuming = _resolve(args)
    run = build_run(cfg)
    try:
        if out is None:
            out = default_out(cfg.mode, cfg.env, cfg.seed)
        else:
            make_directory(out)
        lock = RunLock(out)
        try:
            if not resuming:
                check_fresh_out(out)  # a run that got in between the first check and the lock
            return _train(run, cfg, out, resuming)
        finally:
            lock.release()
    finally:
        run.close()  # its workers, whatever happened


def _train(run, cfg: RunConfig, out: Path, resuming: bool) -> int:
    if resuming:
        _continue(run, out)
    text = json.dumps(_describe(run), indent=2) + "\n"
    atomic_write_bytes(out / "config.json", lambda fh: fh.write(text.encode()))
    unused = run.config.unused_changes()
    if unused:
        shown = ", ".join(f"{k}={v!r}" for k, v in unused.items())
        print(f"note: mode {cfg.mode!r} does not use {shown} (config.json lists them as unused)")
    checkpointer = Checkpointer(out, cfg.checkpoint_every)
    callbacks = [MetricsCSV(out), ScalarsCSV(out), checkpointer]
    callbacks += [OperatorArrays(out, cfg.checkpoint_every), Summary(out)]
    callbacks += [TensorBoardScalars(out), Progress()]
    try:
        train(run, callbacks)
    except BaseException as exc:
        done = checkpointer.saved_iteration  # the iteration the checkpoint on disk holds
        completed = run.state.iteration
        again = f"evo-svpg run --resume {out}"
        if completed == 0 and not resuming:  # nothing of this new run is worth keeping
            remove_run_outputs(out)
            again = "the same command starts it again"
        elif done == 0 and not resuming:  # recorded iterations, but no checkpoint yet
            again = (
                f"its {completed} recorded iteration(s) stay in {out} but cannot be resumed (no "
                f"checkpoint yet: one every {cfg.checkpoint_every}); start again with another "
                "--out"
            )
        if not isinstance(exc, KeyboardInterrupt | NonFiniteError | WorkerDied):
            raise  # an error of ours or of the machine: its own message
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        if isinstance(exc, NonFiniteError | WorkerDied):
            print(f"evo-svpg: stopped: {exc}", file=sys.stderr)
            what = "stopped"
        if completed == 0:
            print(f"\n{what} before the first iteration ended; nothing to save: {again}")
        elif done == completed:
            print(f"\n{what}; saved after iteration {done}; continue: {again}")
        elif done == 0:
            print(f"\n{what} during iteration {completed + 1}: {again}")
        else:
            print(f"\n{what} during iteration {completed + 1}; the checkpoint of "
                  f"iteration {done} is kept; continue: {again}")  # fmt: skip
        if isinstance(exc, NonFiniteError | WorkerDied):
            return 1
        return 143 if isinstance(exc, Terminated) else 130
    summary = json.loads((out / "summary.json").read_text())
    print(
        f"done: {run.state.iteration} iterations, {run.state.env_steps:,} env steps; "
        f"{_final_line(summary)}; {summary['training_seconds_this_session']:.1f} s"
    )
    qd = "qd.npz, " if (out / "qd.npz").exists() else ""
    print(
        f"results in {out}/ (metrics.csv, scalars.csv, {qd}config.json, summary.json, "
        f"tensorboard/, {CHECKPOINT})"
    )
    print(f"plot them: evo-svpg plot {out}")
    return 0


def _final_line(summary: dict) -> str:
    def num(key: str) -> str:
        value = summary.get(key)
        return "n/a" if value is None else f"{value:.1f}"

    first, last = summary["final_window_iterations"]
    line = (
        f"training return of iterations {first}-{last}: best particle "
        f"{num('final_best_particle_return')}, mean {num('final_mean_particle_return')}"
    )
    if "fresh_mean_particle_return" in summary:
        line += (
            f"; fresh evaluation ({summary['fresh_episodes_per_policy']} episodes each): mean "
            f"particle {num('fresh_mean_particle_return')}, particle chosen on training "
            f"{num('fresh_selected_particle_return')}"
        )
    return line


def cmd_plot(args: argparse.Namespace) -> int:
    from evo_svpg.plot import plot_runs

    target = args.out or args.dirs[0] / "learning_curves.png"
    plot_runs(args.dirs, target)
    print(f"wrote {target}")
    return 0


def cmd_modes(args: argparse.Namespace) -> int:
    for name, mode in MODES.items():
        print(f"{name:18s} {mode.description}\n{'':18s} [{mode_operators(name)}]")
    print(f"estimators: {', '.join(ESTIMATORS.names())}; config.json records a run's operators")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``evo-svpg`` command (``argv``: its arguments; None: the process's, as a script)."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args = _parser().parse_args(argv)
    commands = {"run": cmd_run, "plot": cmd_plot, "modes": cmd_modes, **EXPERIMENT_COMMANDS}
    command = commands[args.command]
    try:
        code = command(args)
    except ValueError as exc:
        print(f"evo-svpg: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("evo-svpg: error: out of memory: lower particles, envs_per_particle or "
              "steps_per_particle", file=sys.stderr)  # fmt: skip
        return 2
    except OSError as exc:  # a file the run reads or writes (disk full, permissions, ...)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"evo-svpg: error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if argv is None and code in (130, 143):  # stopped by a signal, now exiting: more Ctrl-C
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # would only add tracebacks at exit
    return code


if __name__ == "__main__":
    sys.exit(main())
