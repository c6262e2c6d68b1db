"""``evo-svpg report DIR... [--metric NAME] [--out PATH]``: rliable statistics of sweep runs.

Reads every ``<setting>/seed<k>`` run under the given directories (what ``evo-svpg sweep``
makes): from its record (``seed<k>.record.json``, :mod:`evo_svpg.sweep_records`) when it has
one, else from its run directory; and writes ``report.md``, ``report.json``, ``iqm_curve.png`` and
``performance_profile.png``: per setting the runs, IQM, median and mean of the metric (any
numeric ``summary.json`` field) with 95 % stratified bootstrap intervals
(:mod:`evo_svpg.stats`), the probability of improvement of every pair, the IQM of the training
curve against env steps with its band, the SVPG paper's Table 1 statistic
(:mod:`evo_svpg.curve_peak`), and the compute the runs took. Only finished runs count; the
others are listed.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evo_svpg import stats
from evo_svpg.config import RunConfig
from evo_svpg.curve_peak import peak_markdown, peak_rows
from evo_svpg.loop import reached
from evo_svpg.plot import steps_on_grid
from evo_svpg.report import strict_json
from evo_svpg.rundir import make_directory
from evo_svpg.sweep_records import as_arrays, read_record, read_seconds, record_path, run_curves
from evo_svpg.sweep_spec import SweepSpec

DEFAULT_METRIC = "final_mean_particle_return"
CURVE_POINTS = 50
_SEED_DIR = re.compile(r"seed(\d+)")


@dataclass(frozen=True)
class RunRecord:
    path: Path
    setting: str
    seed: int
    summary: dict  # {} when the run has none yet
    state: str  # "finished", or why the run is not counted
    seconds: float | None  # its processes' wall seconds, all sessions (sweeps record them)
    record: dict | None  # its record, if it has one

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    def value(self, metric: str) -> float:
        value = self.summary.get(metric)
        return float(value) if isinstance(value, int | float) else math.nan

    def curves(self) -> dict[str, np.ndarray]:
        """``env_steps``, ``best`` and ``mean`` per iteration (pooled over the run's window)."""
        return self.record["curves"] if self.record else as_arrays(run_curves(self.path))


def _target(path: Path) -> RunConfig:
    """What the run is to do: the keys a sweep started it with (``seed<k>.config.json``: a tune
    trial's runs advance by stages, their own config.json says the stage), else its config."""
    started = path.with_name(path.name + ".config.json")
    if started.is_file():
        return RunConfig.from_dict(json.loads(started.read_text()), source=str(started))
    config = json.loads((path / "config.json").read_text())["config"]
    return RunConfig.from_saved(config, source=str(path / "config.json"))


def _state(path: Path, summary: dict) -> str:
    if not summary:
        return "no summary.json: not started, running, or killed"
    if reached(_target(path), summary["iterations"], summary["env_steps"]):
        return "finished"
    log = path.with_name(path.name + ".log")
    stops = (
        [ln for ln in log.read_text().splitlines() if "evo-svpg: stopped:" in ln]
        if log.is_file()
        else []
    )
    if stops:  # a NaN or a dead worker: the same command stops it again
        return f"stopped after iteration {summary['iterations']} ({stops[-1].strip()})"
    return f"unfinished: {summary['iterations']} iterations, {summary['env_steps']:,} env steps"


def _record(path: Path) -> RunRecord:
    seed = int(_SEED_DIR.fullmatch(path.name).group(1))
    if record_path(path).is_file():
        record = read_record(record_path(path), path.parent.name, seed)
        summary, seconds = record["summary"], record["seconds"]
        return RunRecord(path, path.parent.name, seed, summary, "finished", seconds, record)
    summary_path = path / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    seconds = read_seconds(path.with_name(path.name + ".seconds"))
    return RunRecord(path, path.parent.name, seed, summary, _state(path, summary), seconds, None)


def find_runs(dirs: list[Path]) -> dict[str, list[RunRecord]]:
    """Every run under ``dirs`` (``<setting>/seed<k>/`` with a ``summary.json``, or that a sweep
    started or recorded: ``<setting>/seed<k>.config.json``, ``.record.json``), by setting;
    ValueError if a directory has none or two directories hold the same setting."""
    settings: dict[str, list[RunRecord]] = {}
    home: dict[str, Path] = {}
    for directory in dirs:
        if not directory.is_dir():
            raise ValueError(f"{directory} is not a directory")
        started = [p.with_name(p.name.removesuffix(suffix))
                   for suffix in (".config.json", ".record.json")
                   for p in directory.glob(f"*/seed*{suffix}")]  # fmt: skip
        summarised = [p.parent for p in directory.glob("*/seed*/summary.json")]
        found = sorted({p for p in started + summarised if _SEED_DIR.fullmatch(p.name)})
        if not found:
            raise ValueError(
                f"{directory} holds no runs (<setting>/seed<k>/, as evo-svpg sweep writes them)"
            )
        for path in found:
            setting = path.parent.name
            if home.setdefault(setting, directory) != directory:
                raise ValueError(
                    f"setting {setting} is in both {home[setting]} and {directory}: report them "
                    "apart"
                )
            settings.setdefault(setting, []).append(_record(path))
    order = [name for d in dirs for name in _spec_order(d)]
    rank = {name: i for i, name in enumerate(order)}
    names = sorted(settings, key=lambda name: (rank.get(name, len(rank)), name))
    return {name: sorted(settings[name], key=lambda r: r.seed) for name in names}


def _spec_order(directory: Path) -> list[str]:
    """The settings of the sweep in ``directory`` in its spec's order (grid values as listed:
    ``particles=2`` before ``particles=16``), or none if it has no ``sweep.json``."""
    path = directory / "sweep.json"
    if not path.is_file():
        return []
    spec = SweepSpec.from_dict(json.loads(path.read_text())["spec"], source=str(path))
    return [s.name for s in spec.settings()]


def _check_metric(metric: str, runs: dict[str, list[RunRecord]]) -> None:
    summaries = [r.summary for rs in runs.values() for r in rs]
    if not any(isinstance(s.get(metric), int | float) for s in summaries):
        numeric = sorted({k for s in summaries for k, v in s.items() if isinstance(v, int | float)})
        raise ValueError(
            f"--metric {metric!r} is no number in any run's summary.json; numeric fields: {numeric}"
        )


def _curve_grid(records: list[RunRecord]) -> np.ndarray | None:
    """Env steps from the last run's first iteration to the first run's last one."""
    steps = [r.curves()["env_steps"] for r in records]
    lo, hi = max(s.min() for s in steps), min(s.max() for s in steps)
    return np.linspace(lo, hi, CURVE_POINTS) if hi > lo else None


def build_report(
    dirs: list[Path], metric: str = DEFAULT_METRIC, reps: int = stats.REPS, more: tuple = ()
) -> dict:
    """``report.json``'s content (the statistics of :mod:`evo_svpg.stats` on finished runs);
    ``more``: further metrics, whose per-setting aggregates go under ``"more_metrics"``."""
    stats.rliable()  # its absence is named before any work
    runs = find_runs(dirs)
    for name in (metric, *more):
        _check_metric(name, runs)
    counted = _counted(runs, metric)
    left_out = {
        str(r.path): r.state if not r.finished else f"no {metric} in its summary.json"
        for rs in runs.values()
        for r in rs
        if not (r.finished and math.isfinite(r.value(metric)))
    }
    if not counted:
        raise ValueError(f"no finished run with a {metric} under {', '.join(map(str, dirs))}")
    scores = {name: np.array([r.value(metric) for r in rs]) for name, rs in counted.items()}
    small = min(reps, stats.CURVE_REPS)
    report = {
        "metric": metric,
        "dirs": [str(d) for d in dirs],
        "settings": stats.aggregates(scores, reps),
        "improvement": {
            f"{x} > {y}": v for (x, y), v in stats.improvement_probabilities(scores, small).items()
        },
        "bootstrap": {"level": stats.LEVEL, "reps": reps, "curve_reps": small, "seed": 0},
        "left_out": left_out,
        "more_metrics": {m: _more_metric(runs, m, reps) for m in more},
        "written": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    for name, rs in counted.items():
        seconds = [r.seconds for r in rs]
        report["settings"][name]["env_steps"] = int(sum(r.summary["env_steps"] for r in rs))
        report["settings"][name]["wall_seconds"] = (
            None if None in seconds else round(float(sum(seconds)), 1)
        )
        report["settings"][name]["seeds"] = [r.seed for r in rs]
        report["settings"][name]["scores"] = [r.value(metric) for r in rs]  # by seed
    all_runs = [r for rs in counted.values() for r in rs]
    grid = _curve_grid(all_runs)
    curve = "best" if "best_particle" in metric else "mean"
    report["curve"] = {"training_return": curve, "env_steps": None, "settings": {}}
    if grid is not None:
        curves = {
            name: np.array([steps_on_grid(r.curves(), curve, grid) for r in rs])
            for name, rs in counted.items()
        }
        bands = stats.iqm_curves(curves, small)
        report["curve"]["env_steps"] = grid.tolist()
        report["curve"]["settings"] = {n: b.tolist() for n, b in bands.items()}
    done = {n: [r for r in rs if r.finished] for n, rs in runs.items()}  # whatever the metric
    done = {n: rs for n, rs in done.items() if rs}
    report["peak"] = peak_rows({n: [r.curves()["best"] for r in rs] for n, rs in done.items()})
    for name, rs in done.items():
        report["peak"][name]["pooling_windows"] = [r.summary.get("pooling_window") for r in rs]
    taus = np.linspace(
        min(s.min() for s in scores.values()), max(s.max() for s in scores.values()), 41
    )
    profiles, profile_cis = stats.performance_profiles(scores, taus, small)
    report["profile"] = {
        "taus": taus.tolist(),
        "settings": {n: [p.tolist(), profile_cis[n].tolist()] for n, p in profiles.items()},
    }
    return report


def _more_metric(runs: dict[str, list[RunRecord]], metric: str, reps: int) -> dict:
    """Per setting the aggregates of ``metric`` over its finished runs that have it (a run
    without it, such as a time to a goal never reached, is not counted: ``runs`` says how many
    were), with the scores by seed."""
    counted = _counted(runs, metric)
    scores = {name: np.array([r.value(metric) for r in rs]) for name, rs in counted.items()}
    rows = stats.aggregates(scores, reps)
    for name, rs in counted.items():
        rows[name]["finished"] = sum(r.finished for r in runs[name])
        rows[name]["seeds"] = [r.seed for r in rs]
        rows[name]["scores"] = scores[name].tolist()
    return rows


def _counted(runs: dict[str, list[RunRecord]], metric: str) -> dict[str, list[RunRecord]]:
    """Per setting its finished runs with a finite ``metric``; settings without one left out."""
    counted = {
        name: [r for r in rs if r.finished and math.isfinite(r.value(metric))]
        for name, rs in runs.items()
    }
    return {name: rs for name, rs in counted.items() if rs}


def _ci(value: float, ci: list[float], digits: int) -> str:
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def markdown(report: dict, digits: int = 1) -> str:
    """``report.md``: the settings' table, the probabilities of improvement, what was left out."""
    settings = report["settings"]
    boot = report["bootstrap"]
    lines = [
        f"# {report['metric']}",
        "",
        f"Runs under {', '.join(report['dirs'])}; `evo-svpg report` of {report['written']}. "
        f"Intervals: {boot['level']:.0%} stratified bootstrap (rliable; {boot['reps']:,} "
        f"resamples, {boot['curve_reps']:,} for curves and probabilities; seed {boot['seed']}). "
        "The median is over runs; the IQM is the mean of the middle 50 % of runs."
        + (
            f" **{len(report['left_out'])} run(s) not counted** (listed at the end)."
            if report["left_out"]
            else " Every run found is counted."
        ),
        "",
        "| setting | runs | IQM | median | mean | env steps (all runs) | wall time (all runs) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in settings.items():
        wall = _duration(row["wall_seconds"])
        d = _digits(row["iqm"], digits)
        lines.append(
            f"| {name} | {row['runs']} | {_ci(row['iqm'], row['iqm_ci'], d)} | "
            f"{_ci(row['median'], row['median_ci'], d)} | "
            f"{_ci(row['mean'], row['mean_ci'], d)} | {row['env_steps']:,} | {wall} |"
        )
    names = list(settings)
    if len(names) > 1:
        lines += ["", "Probability of improvement P(row > column): a run of the row's setting "
                  "scores above one of the column's (ties count half), with its interval.", "",
                  "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]  # fmt: skip
        for x in names:
            cells = [
                "—" if x == y else _ci(report["improvement"][f"{x} > {y}"]["p"],
                                       report["improvement"][f"{x} > {y}"]["ci"], 2)
                for y in names
            ]  # fmt: skip
            lines.append(f"| {x} | " + " | ".join(cells) + " |")
    more = report.get("more_metrics") or {}
    if more:
        metrics = [report["metric"], *more]
        header = "| setting | " + " | ".join(metrics) + " |"
        lines += ["", "IQM [95 % interval] of every metric; (k/n): k of the n finished runs "
                  "have the metric (the others are not counted).", "",
                  header, "|---" * (len(metrics) + 1) + "|"]  # fmt: skip
        names = [*settings, *{n: 0 for m in more.values() for n in m if n not in settings}]
        for name in names:
            first = settings.get(name)
            cells = [_more_cell(first and {**first, "finished": first["runs"]}, digits)]
            cells += [_more_cell(more[m].get(name), digits) for m in more]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += peak_markdown(report.get("peak") or {})
    if report["left_out"]:
        lines += ["", f"Not counted ({len(report['left_out'])}):"]
        lines += [f"- {path}: {why}" for path, why in report["left_out"].items()]
    lines += ["", "Figures: `iqm_curve.png` (IQM over runs of the "
              f"{report['curve']['training_return']} particle's pooled training return against "
              "env steps, with its interval band), `performance_profile.png` (fraction of runs "
              f"whose {report['metric']} exceeds τ)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _digits(value: float, digits: int) -> int:
    """``digits`` decimals, 3 for values below 1 (coverages, success fractions)."""
    return digits if abs(value) >= 1 else 3


def _more_cell(row: dict | None, digits: int) -> str:
    if row is None:
        return "no run has it"
    cell = _ci(row["iqm"], row["iqm_ci"], _digits(row["iqm"], digits))
    return cell if row["runs"] == row["finished"] else f"{cell} ({row['runs']}/{row['finished']})"


def _colors(n: int) -> list:
    """``n`` distinct colours: matplotlib's cycle up to 10, tab20 up to 20, then a colormap."""
    import matplotlib

    if n <= 10:
        return [f"C{i}" for i in range(n)]
    cmap = matplotlib.colormaps["tab20" if n <= 20 else "viridis"]
    return [cmap(i / max(n - 1, 1)) if n > 20 else cmap(i) for i in range(n)]


def _figures(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = _colors(len(report["settings"]))
    fig, ax = plt.subplots(figsize=(9, 4.8))
    steps = report["curve"]["env_steps"]
    for i, (name, (iqm, lo, hi)) in enumerate(report["curve"]["settings"].items()):
        ax.plot(steps, iqm, color=colors[i], label=name)
        ax.fill_between(steps, lo, hi, color=colors[i], alpha=0.15)
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"IQM of the {report['curve']['training_return']} particle's return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out / "iqm_curve.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4.8))
    taus = report["profile"]["taus"]
    for i, (name, (profile, ci)) in enumerate(report["profile"]["settings"].items()):
        ax.plot(taus, profile, color=colors[i], label=name)
        ax.fill_between(taus, ci[0], ci[1], color=colors[i], alpha=0.15)
    ax.set_xlabel(f"τ ({report['metric']})")
    ax.set_ylabel("fraction of runs scoring above τ")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out / "performance_profile.png", dpi=120)
    plt.close(fig)


def write_report(
    dirs: list[Path], metrics: list[str] | str, out: Path, reps: int = stats.REPS
) -> Path:
    """Compute the report of ``dirs`` on ``metrics`` (the first one in full, the others' IQMs)
    and write it into ``out``; the path of ``report.md``."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"--metric {metrics}: each metric once")
    report = build_report(dirs, metrics[0], reps, tuple(metrics[1:]))
    make_directory(out)
    text = json.dumps(strict_json(report), indent=2, allow_nan=False)
    (out / "report.json").write_text(text + "\n")
    (out / "report.md").write_text(markdown(report))
    _figures(report, out)
    return out / "report.md"
