"""What a checkpoint holds of a run, keyed by component, and how a run continues from it.

``run_state_dict(run)`` is called only when a checkpoint is written, at an iteration boundary:
nothing is copied in advance, whatever the size of an operator's state (archives, buffers).
Component state is keyed ``"<position>:<name>"`` for operators and ``"estimator:<name>"`` for
the estimator (:meth:`evo_svpg.engine.Run.components`); a checkpoint whose keys differ from the
run's is refused naming the difference. Checkpoints of format 2 (evo_svpg before keyed
state: operators as a list, the estimator apart) are read by position.
"""

from __future__ import annotations

from typing import Any

import torch

from evo_svpg.checkpoint import from_storable, to_storable

RESUME_OVERRIDABLE = (
    "iterations", "budget", "device", "threads", "workers", "backend", "address",
    "checkpoint_every",
)  # fmt: skip


def run_state_dict(run: Any) -> dict:
    """Everything a resumed run needs to continue bit-identically (references, not copies:
    :func:`evo_svpg.checkpoint.save_checkpoint` copies as it writes)."""
    state = run.state
    return {
        "config": run.config.to_dict(),
        "returns": run.returns.state_dict(),
        "iteration": state.iteration,
        "env_steps": state.env_steps,
        "params": state.params,
        "components": {key: c.state_dict() for key, c in run.components()},
        "sampler": run.ctx.sampler.state_dict(),
        "evaluator": run.ctx.evaluator.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }


def _components_of(payload: dict, keys: list[str]) -> dict:
    """The keyed component state of ``payload`` (a format-2 one keyed by position)."""
    if payload.get("format_version") == 2:
        operators, estimator = payload["operators"], payload["estimator"]
        if len(operators) != len(keys) - 1:
            raise ValueError(
                f"it holds {len(operators)} operators' state, this run has {len(keys) - 1}"
            )
        return {**dict(zip(keys[:-1], operators, strict=True)), keys[-1]: estimator}
    return payload["components"]


def load_run_state(run: Any, payload: dict, source: str = "checkpoint") -> None:
    """Continue ``run`` from ``payload`` (:func:`run_state_dict`); ValueError naming ``source``
    if the checkpoint belongs to a run with other settings or does not fit this one."""
    saved = payload.get("config")
    if not isinstance(saved, dict):
        raise ValueError(f"{source} has no run config: it is not a checkpoint of evo_svpg")
    # The settings that shape this run: its own and those of the sections it uses. A key the
    # checkpoint lacks (a setting added since) counts as its default, or as the value runs had
    # before it existed where that differs (``setting(absent=...)``).
    cfg = run.config
    current = cfg.run.to_flat()
    defaults = {**cfg.run.defaults(), **cfg.run.absent_values()}
    for name in cfg.used_sections:
        current.update(cfg[name].to_flat())
        defaults.update({**cfg[name].defaults(), **cfg[name].absent_values()})
    differ = sorted(
        k for k in current
        if k not in RESUME_OVERRIDABLE and saved.get(k, defaults[k]) != current[k]
    )  # fmt: skip
    if differ:
        raise ValueError(
            f"{source} belongs to a run with other settings ({', '.join(differ)}: "
            f"{[saved.get(k, defaults[k]) for k in differ]} there, {[current[k] for k in differ]} "
            "here)"
        )
    payload = from_storable(to_storable(payload))  # the run owns its state: never shared
    components = run.components()
    keys = [key for key, _ in components]
    try:
        stored = _components_of(payload, keys)
        if not isinstance(stored, dict) or list(stored) != keys:
            got = list(stored) if isinstance(stored, dict) else stored
            raise ValueError(f"it holds the state of {got}, this run's components are {keys}")
        run.state.params = payload["params"].clone()
        for key, component in components:
            component.load_state_dict(stored[key])
        run.ctx.sampler.load_state_dict(payload["sampler"])
        run.ctx.evaluator.load_state_dict(payload["evaluator"])
        run.returns.load_state_dict(payload["returns"])
        torch.set_rng_state(payload["torch_rng"])
        iteration, env_steps = payload["iteration"], payload["env_steps"]
        if type(iteration) is not int or type(env_steps) is not int or iteration < 0:
            raise TypeError(f"iteration={iteration!r}, env_steps={env_steps!r}")
    except ValueError as exc:
        raise ValueError(f"{source} does not fit this run: {exc}") from None
    except (KeyError, IndexError, TypeError, RuntimeError, AttributeError) as exc:
        raise ValueError(f"{source} does not fit this run ({type(exc).__name__}: {exc})") from None
    run.state.iteration, run.state.env_steps = iteration, env_steps
