"""``evo-svpg tune SPEC.toml --trials N --out DIR``: an Optuna study over run settings.

``SPEC.toml``::

    seeds = [0, 1, 2]                      # every trial runs these seeds
    metric = "final_mean_particle_return"  # any numeric summary.json field (this default)
    stages = 5                             # learning-curve reports per trial (pruner steps)
    [base]                                 # run keys every trial gets
    env = "CartPole-v1"
    [search]                               # key -> {low, high[, log = true]} (float),
    alpha = {low = 0.1, high = 100.0, log = true}   # {low, high, int = true} or a list
    bandwidth = ["svgd", "svpg_code"]

A trial's value is the IQM over its seeds of ``metric``, maximised (TPE sampler). Its runs
train in ``stages`` steps (``evo-svpg run --resume --iterations M``: bit-identical to one
run); after each, the IQM of the metric so far is reported and a median pruner stops a trial
below the median of earlier trials at that stage. The study lives in ``DIR/study.db``
(SQLite), the runs in ``DIR/trials/<params>/seed<k>/``. ``--trials N`` is the study's total:
the same command with a larger N continues it; a trial cut by a kill is tried again with its
parameters, resuming its runs. Writes ``DIR/tune.md`` and ``DIR/history.png``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evo_svpg import stats
from evo_svpg.config import RunConfig, load_toml
from evo_svpg.engine import check_run_config
from evo_svpg.sweep import BACKENDS, SweepRun, check_backend, claim, run_defaults, start_ray
from evo_svpg.sweep_spec import Setting, check_base, check_run_keys, check_seeds, setting_name

TUNE_KEYS = ("seeds", "metric", "stages", "base", "search", "sampler_seed")
STUDY_NAME = "evo-svpg"


def optuna():
    try:
        import optuna as module
    except ImportError:
        raise ValueError(
            "evo-svpg tune needs Optuna: pip install 'evo-svpg[study]' (or pip install -e "
            "'.[study]' in a clone)"
        ) from None
    return module


def _search_entry(key: str, value: Any, source: str) -> dict | tuple:
    where = f"{source}: [search] {key}"
    if isinstance(value, list):
        if not value or len({json.dumps(v) for v in value}) != len(value):
            raise ValueError(f"{where} = {value!r} must list distinct choices")
        if not all(isinstance(v, str | int | float | bool) for v in value):
            raise ValueError(
                f"{where} = {value!r}: choices must be strings, numbers or booleans (Optuna "
                "stores no lists); tune such a key in a sweep's [grid] instead"
            )
        return tuple(value)
    if not isinstance(value, dict):
        raise ValueError(
            f"{where} = {value!r}: give {{low, high}} (optionally log or int) or a list"
        )
    extra = sorted(set(value) - {"low", "high", "log", "int"})
    if extra:
        raise ValueError(f"{where}: unknown field(s) {extra}; valid: low, high, log, int")
    low, high = value.get("low"), value.get("high")
    numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (low, high))
    if not numbers or not math.isfinite(low) or not math.isfinite(high) or not low < high:
        raise ValueError(f"{where}: low={low!r}, high={high!r} must be numbers with low < high")
    for flag in ("log", "int"):
        if not isinstance(value.get(flag, False), bool):
            raise ValueError(f"{where}: {flag}={value[flag]!r} must be true or false")
    if value.get("log") and low <= 0:
        raise ValueError(f"{where}: log = true needs low > 0, got low={low!r}")
    if value.get("int") and not (float(low).is_integer() and float(high).is_integer()):
        raise ValueError(f"{where}: int = true needs integer low and high")
    return {
        "low": low,
        "high": high,
        "log": value.get("log", False),
        "int": value.get("int", False),
    }


@dataclass(frozen=True)
class TuneSpec:
    seeds: tuple[int, ...]
    base: dict[str, Any]
    search: dict[str, dict | tuple]  # key -> range or choices
    metric: str = "final_mean_particle_return"
    stages: int = 5
    sampler_seed: int = 0

    @classmethod
    def load(cls, path: str | Path) -> TuneSpec:
        data, source = load_toml(path), str(path)
        unknown = sorted(set(data) - set(TUNE_KEYS))
        if unknown:
            raise ValueError(
                f"{source}: unknown key(s) {unknown}; a tune spec has {list(TUNE_KEYS)}"
            )
        seeds = check_seeds(data.get("seeds"), source)
        base = check_base(data.get("base", {}), source)
        search = data.get("search")
        if not isinstance(search, dict) or not search:
            raise ValueError(f"{source}: [search] is empty: give at least one run key to tune")
        check_run_keys(search, "search", base, source)
        entries = {k: _search_entry(k, v, source) for k, v in sorted(search.items())}
        metric = data.get("metric", cls.metric)
        stages, sampler_seed = data.get("stages", cls.stages), data.get("sampler_seed", 0)
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"{source}: metric={metric!r} must name a summary.json field")
        if type(stages) is not int or stages < 1:
            raise ValueError(f"{source}: stages={stages!r} must be an integer >= 1")
        if type(sampler_seed) is not int or sampler_seed < 0:
            raise ValueError(f"{source}: sampler_seed={sampler_seed!r} must be an integer >= 0")
        return cls(seeds, base, entries, metric, stages, sampler_seed)

    def to_dict(self) -> dict:
        search = {k: v if isinstance(v, dict) else list(v) for k, v in self.search.items()}
        return {"seeds": list(self.seeds), "base": self.base, "search": search,
                "metric": self.metric, "stages": self.stages,
                "sampler_seed": self.sampler_seed}  # fmt: skip

    def check(self, source: str) -> None:
        """The search space's ends and every choice, one key at a time, checked as
        ``evo-svpg run`` would check their configs, before the study starts."""
        first = {k: (v["low"] if isinstance(v, dict) else v[0]) for k, v in self.search.items()}
        points = [first]
        for key, v in self.search.items():
            for value in [v["high"]] if isinstance(v, dict) else v[1:]:
                points.append({**first, key: value})
        for point in points:
            try:
                check_run_config(RunConfig.from_dict({**self.base, **point}))
            except ValueError as exc:
                raise ValueError(f"{source}: [search] point {point}: {exc}") from None

    def suggest(self, trial) -> dict[str, Any]:
        """The trial's values of the searched keys."""
        values = {}
        for key, v in self.search.items():
            if isinstance(v, tuple):
                values[key] = trial.suggest_categorical(key, list(v))
            elif v["int"]:
                values[key] = trial.suggest_int(key, int(v["low"]), int(v["high"]), log=v["log"])
            else:
                values[key] = trial.suggest_float(key, v["low"], v["high"], log=v["log"])
        return values


def stage_targets(cfg: RunConfig, stages: int) -> list[dict[str, int]]:
    """Where each stage of a trial's runs ends: a share of the budget if the runs have one,
    else of the iterations (the last is the run's own)."""
    key, total = ("budget", cfg.budget) if cfg.budget else ("iterations", cfg.iterations)
    ends = sorted({max(1, round(total * (j + 1) / stages)) for j in range(stages)})
    return [{key: end} for end in ends]


class RunsFailed(RuntimeError):
    """A trial's run ended with an error (its log says which): the trial fails."""


def _metric(run: SweepRun, metric: str) -> float:
    value = json.loads((run.path / "summary.json").read_text()).get(metric)
    return float(value) if isinstance(value, int | float) else math.nan


def _stage_file(run: SweepRun) -> Path:
    return run.path.with_name(f"seed{run.seed}.stages.json")


def _stage_key(until: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in until.items())


def _recorded_stages(run: SweepRun) -> dict[str, float | None]:
    path = _stage_file(run)
    return json.loads(path.read_text()) if path.exists() else {}


def stage_value(run: SweepRun, until: dict[str, int], metric: str) -> float:
    """The metric of ``run`` at the end of stage ``until``, as recorded when the stage ended
    (``seed<k>.stages.json``): a run that has gone further since (a cut trial retried, the
    same parameters tried again) still reports what it had there."""
    key = _stage_key(until)
    path = _stage_file(run)
    recorded = _recorded_stages(run)
    if key not in recorded:  # it ended this stage just now
        recorded[key] = _metric(run, metric)
        path.write_text(json.dumps(recorded, indent=2) + "\n")
    value = recorded[key]
    return float(value) if value is not None else math.nan


def _objective(spec: TuneSpec, out: Path, jobs: int, backend: str, address: str):
    optuna_ = optuna()

    def objective(trial) -> float:
        values = spec.suggest(trial)
        setting = Setting(setting_name(values), values)
        keys = {**run_defaults(jobs), **spec.base, **values}
        runs = [
            SweepRun(setting, seed, out / "trials" / setting.name / f"seed{seed}",
                     {**keys, "seed": seed})
            for seed in spec.seeds
        ]  # fmt: skip
        trial.set_user_attr("setting", setting.name)
        value = math.nan
        stages = stage_targets(RunConfig.from_dict(runs[0].keys), spec.stages)
        try:
            for step, until in enumerate(stages):
                todo = [  # a recorded stage needs no run (its directory may be gone: a clone)
                    (r, r.arguments(until)) for r in runs
                    if not r.finished(until) and _stage_key(until) not in _recorded_stages(r)
                ]  # fmt: skip
                for run, code, _ in BACKENDS[backend](todo, jobs, address):
                    if code != 0:
                        raise RunsFailed(f"{run.label}: exit {code}, see {run.log}")
                value = stats.iqm([stage_value(r, until, spec.metric) for r in runs])
                trial.report(value, step)
                last = step == len(stages) - 1  # a trial whose runs are done is not pruned
                if not last and trial.should_prune():
                    raise optuna_.TrialPruned(f"stage {step + 1}: IQM {value:.4g}")
        except KeyboardInterrupt:
            trial.set_user_attr("cut", True)  # tried again, resuming its runs, next time
            raise
        if not math.isfinite(value):
            raise RunsFailed(f"no run of {setting.name} has a finite {spec.metric}")
        return value

    return objective


TUNE_FILE = "tune.json"


def _retry_cut_trials(study) -> None:
    """Trials a kill cut (still RUNNING in the database, or failed by Ctrl-C) end as failed,
    marked ``cut``, and their parameters are queued again: the new trial resumes their runs."""
    states = optuna().trial.TrialState
    storage = study._storage
    retried = set(study.user_attrs.get("retried", []))  # trial numbers queued again already
    for t in study.get_trials(deepcopy=False):
        cut = t.state == states.RUNNING or (t.state == states.FAIL and t.user_attrs.get("cut"))
        if cut and t.number not in retried:
            if t.state == states.RUNNING:  # attributes first: a finished trial is read-only
                storage.set_trial_user_attr(t._trial_id, "cut", True)
                storage.set_trial_state_values(t._trial_id, states.FAIL)
            study.enqueue_trial(t.params)
            retried.add(t.number)
    study.set_user_attr("retried", sorted(retried))


def counted(study) -> list:
    """The trials that count towards ``--trials``: ended, not cut by a kill."""
    states = optuna().trial.TrialState
    ended = (states.COMPLETE, states.PRUNED, states.FAIL)
    return [t for t in study.trials if t.state in ended and not t.user_attrs.get("cut")]


def run_tune(
    spec_path: Path, trials: int, out: Path, jobs: int, backend: str, address: str = ""
) -> int:
    """``evo-svpg tune``: run the study of ``spec_path`` in ``out`` up to ``trials`` trials."""
    optuna_ = optuna()
    if trials < 1:
        raise ValueError(f"--trials {trials}: must be >= 1 (the study's total)")
    check_backend(backend, jobs, address)
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: must be >= 1 (a trial's runs at once)")
    spec = TuneSpec.load(spec_path)
    spec.check(str(spec_path))
    out = out.resolve()
    lock = claim(out, spec.to_dict(), TUNE_FILE, "study")
    ray, own_ray = None, False
    optuna_.logging.set_verbosity(optuna_.logging.WARNING)
    try:
        storage = f"sqlite:///{out / 'study.db'}"
        before = optuna_.create_study(
            study_name=STUDY_NAME, storage=storage, direction="maximize", load_if_exists=True
        )
        # A continued study must not draw its first trials again: the sampler's seed moves on
        # with the trials already in it (so a continued study is reproducible too).
        study = optuna_.load_study(
            study_name=STUDY_NAME, storage=storage,
            sampler=optuna_.samplers.TPESampler(seed=spec.sampler_seed + len(before.trials)),
            pruner=optuna_.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        )  # fmt: skip
        _retry_cut_trials(study)
        left = trials - len(counted(study))
        print(
            f"study {out / 'study.db'}: {len(counted(study))} trial(s) done, {max(left, 0)} to "
            f"run ({len(spec.seeds)} seed(s) each, {spec.stages} stage(s))", flush=True,
        )  # fmt: skip

        def report(study, trial) -> None:
            value = "n/a" if trial.value is None else f"{trial.value:.4g}"
            print(f"[trial {trial.number}] {trial.state.name.lower()}: {value} "
                  f"({trial.user_attrs.get('setting', '')})", flush=True)  # fmt: skip

        if left > 0 and backend == "ray":  # one Ray for the whole study, not one per stage
            ray, own_ray = start_ray(address)
        if left > 0:
            study.optimize(
                _objective(spec, out, jobs, backend, address), n_trials=left,
                catch=(RunsFailed,), callbacks=[report],
            )  # fmt: skip
    except KeyboardInterrupt:
        print("\ninterrupted; the runs save at their iteration's end. Continue: the same command")
        return 130
    finally:
        lock.release()
        if own_ray:
            ray.shutdown()
    path = write_tune_report(study, spec, out)
    print(f"wrote {path} and {out / 'history.png'}")
    return 0


def write_tune_report(study, spec: TuneSpec, out: Path) -> Path:
    """``tune.md``: the best trial, parameter importances, every trial; ``history.png``."""
    optuna_ = optuna()
    states = optuna_.trial.TrialState
    complete = [t for t in counted(study) if t.state == states.COMPLETE]
    lines = [f"# Tuning: IQM of {spec.metric} over seeds {list(spec.seeds)}", ""]
    lines.append(
        f"Study `study.db` (beside this file): {len(counted(study))} trials "
        f"({len(complete)} complete, "
        f"{sum(t.state == states.PRUNED for t in counted(study))} pruned, "
        f"{sum(t.state == states.FAIL for t in counted(study))} failed); TPE sampler (seed "
        f"{spec.sampler_seed}), median pruner over {spec.stages} stages."
    )
    if complete:
        best = max(complete, key=lambda t: t.value)
        lines += ["", f"**Best:** trial {best.number}, {best.value:.4g}: "
                  + ", ".join(f"`{k} = {v!r}`" for k, v in best.params.items())]  # fmt: skip
    if len(complete) >= 2 and len(spec.search) >= 2:
        importance = optuna_.importance.get_param_importances(
            study, evaluator=optuna_.importance.PedAnovaImportanceEvaluator()
        )
        lines += ["", "Parameter importances (Optuna's PED-ANOVA over the complete trials): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in importance.items())]  # fmt: skip
    lines += ["", "| trial | state | value | " + " | ".join(spec.search) + " |",
              "|---" * (3 + len(spec.search)) + "|"]  # fmt: skip
    for t in counted(study):
        value = "" if t.value is None else f"{t.value:.4g}"
        if t.state == states.PRUNED and t.intermediate_values:
            step = max(t.intermediate_values)
            value = f"{t.intermediate_values[step]:.4g} at stage {step + 1}"
        cells = [_shown(t.params.get(k)) for k in spec.search]
        lines.append(
            f"| {t.number} | {t.state.name.lower()} | {value} | " + " | ".join(cells) + " |"
        )
    path = out / "tune.md"
    path.write_text("\n".join(lines) + "\n")
    _history(study, out / "history.png")
    return path


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _history(study, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    states = optuna().trial.TrialState
    done = [t for t in counted(study) if t.state == states.COMPLETE]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if done:
        numbers = [t.number for t in done]
        values = np.array([t.value for t in done])
        ax.plot(numbers, values, "o", label="trial")
        ax.plot(numbers, np.maximum.accumulate(values), "-", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("IQM over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)
