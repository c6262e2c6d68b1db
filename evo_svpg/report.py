"""What a finished run reports in ``summary.json``.

Two kinds of "final" numbers, side by side:

* **training returns of the final window** (:mod:`evo_svpg.metrics`): each particle's episodes
  that ended in the last 10 % of the env steps (at least one pooling window), pooled. Their best
  over particles is the paper's "best particle" metric; it is a maximum over ``n`` noisy means.
* **a fresh evaluation**: every particle's current (stochastic) policy runs ``final_eval_episodes``
  new episodes from reset, on its own random stream, after training. ``fresh_mean_particle_return``
  is their mean over particles; ``fresh_selected_particle_return`` is the fresh return of the
  particle with the best *training* window return, an unbiased score of the particle a user would
  pick (the maximum of the fresh returns, ``fresh_best_particle_return``, is optimistic again).
  Operators holding other policies report them too (ERL's champion). These episodes are
  measurement: they are not charged to ``env_steps`` and are counted in ``fresh_env_steps``.

And the operators' diagnostics at the end: ``last_<name>`` is the last value ``scalars.csv``
holds of each (``last_qd_coverage``, ``last_success_fraction``, ``last_erl_champion``, ...), so
that a sweep report can take any of them as its metric. A diagnostic that was NaN at the end
(``first_success_env_steps`` of a run that never reached the goal) is ``null``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from evo_svpg.evaluation import Evaluator
from evo_svpg.metrics import EpisodeTotals
from evo_svpg.operators.base import ReportsPolicies

FRESH_STREAM = 5  # RunConfig.subseed stream of the final evaluation


def strict_json(value: Any) -> Any:
    """``value`` with non-finite floats as ``None``: ``json`` would write non-standard ``NaN``."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def final_training_returns(out: Path, window: int, budget: int = 0) -> dict[str, Any]:
    """The final window's pooled training returns of the run in ``out`` (its ``metrics.csv``):
    the last 10 % of its ``budget`` (if any, as the runners count it) or of its env steps."""
    final = EpisodeTotals.from_csv(out / "metrics.csv").final(window, end=budget or None)
    return {
        "final_best_particle_return": final["best"],
        "final_mean_particle_return": final["mean"],
        "final_episode_mean_return": final["episode_mean"],
        "final_particle_returns": final["particle_returns"],
        "final_window_iterations": [final["first_iteration"], final["last_iteration"]],
        "final_window_episodes": final["episodes"],
        "final_particles_without_episode": final["particles_without_episode"],
    }


def last_scalars(out: Path) -> dict[str, float]:
    """``{"last_<name>": value}``: each diagnostic's value in its last row of ``out/scalars.csv``
    (the whole run's, resumed sessions included)."""
    path = out / "scalars.csv"
    if not path.exists():
        return {}
    last: dict[str, float] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            last[f"last_{row['name']}"] = float(row["value"])
    return dict(sorted(last.items()))


def fresh_evaluation(run, training: list[float]) -> dict[str, Any]:
    """Fresh episodes of every particle (and of the operators' reported policies).

    ``training [n]``: the particles' final-window training returns, which choose the particle
    whose fresh return is ``fresh_selected_particle_return``.
    """
    cfg = run.config
    episodes = cfg.final_eval_episodes
    if episodes == 0:
        return {}
    evaluator = Evaluator(
        cfg.env, run.spec, episodes, cfg.subseed(FRESH_STREAM),
        max_episode_steps=cfg.max_episode_steps or None,
    )  # fmt: skip
    result = evaluator.episodes_of(run.state.params.numpy())
    returns = result.returns.mean(axis=1)
    steps = result.steps
    chosen = np.where(np.isnan(training), -np.inf, training)
    selected = int(np.argmax(chosen))
    report = {
        "fresh_episodes_per_policy": episodes,
        "fresh_mean_particle_return": float(returns.mean()),
        "fresh_best_particle_return": float(returns.max()),
        "fresh_selected_particle": selected,
        "fresh_selected_particle_return": float(returns[selected]),
        "fresh_particle_returns": returns.tolist(),
    }
    for op in run.operators:
        if isinstance(op, ReportsPolicies):
            for name, theta in op.reported_policies().items():
                other = evaluator.episodes_of(theta.detach().numpy())
                report[f"fresh_{name}_return"] = float(other.returns.mean())
                steps += other.steps
    report["fresh_env_steps"] = steps
    return report
