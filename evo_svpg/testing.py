"""Checks of components against the contracts a run relies on (cf. gymnasium's ``check_env``),
for users' own components as much as for the shipped ones: :func:`check_operator`,
:func:`check_estimator` and :func:`check_fast_path`::

    from evo_svpg.testing import check_operator
    check_operator(MyOperator(...))                      # an instance, or
    check_operator(lambda b: MyOperator(b.spec, ...))    # a factory of the run's Build

The operator runs after the SVPG operators (``pure``'s) in a small real run. A broken rule
raises ``AssertionError`` naming it:

1. ``composition``: it reads only state fields that the operators before it write;
2. ``params``: they keep their shape and dtype and stay finite;
3. ``declared writes``: it changes (or replaces, or changes in place) only the state fields it
   declares in ``writes``; ``declared reads``: it works with the fields it does not declare in
   ``reads`` set to None (if it raises then, the error is reported under this rule);
4. ``env steps``: ``env_steps`` never decreases and grows by exactly the env steps the run's
   sampler and evaluator took during the call;
5. ``checkpoint``: ``state_dict`` → checkpoint file → ``load_state_dict`` into a fresh instance
   (of a freshly built run) continues exactly as the uninterrupted run;
6. ``reindex``: under a permutation with a clone (``parents``), every per-particle entry of its
   ``state_dict`` (a top-level entry with leading dimension ``n``, or a list of ``n`` items)
   moves with its particle; an operator with such state must have ``reindex``. (Nested entries
   belong to the operator's helpers, e.g. an evaluator's envs or an optimiser, and are not
   checked.)
   The run's estimator is held to the same rule.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch

from evo_svpg.checkpoint import from_storable, load_checkpoint, save_checkpoint, to_storable
from evo_svpg.config import RunConfig
from evo_svpg.engine import Run, build_run
from evo_svpg.envs import make_batched_env
from evo_svpg.loop import run_iteration
from evo_svpg.operators.base import (
    STATE_FIELDS,
    Build,
    Operator,
    ParticleStateHolder,
    PopulationState,
    component_name,
    contract_of,
)
from evo_svpg.operators.gradient import PolicyGradient
from evo_svpg.registry import MODES
from evo_svpg.run_state import load_run_state, run_state_dict

OperatorOrFactory = Operator | Callable[[Build], Operator]


def check_operator(
    op: OperatorOrFactory,
    *,
    env: str = "CartPole-v1",
    particles: int = 4,
    iterations: int = 3,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
) -> None:
    """Check ``op`` (an operator, or a factory ``Build -> operator``) in a small run of ``env``
    with ``particles`` policies for ``iterations`` (>= 2) iterations; ``settings``: other run
    config keys (e.g. ``{"select_every": 1}``). Raises ``AssertionError`` naming the rule."""
    if iterations < 2:
        raise ValueError(f"iterations={iterations} must be >= 2 (a checkpoint in between)")
    cfg = RunConfig(
        **{
            "mode": "pure",
            "env": env,
            "particles": particles,
            "iterations": iterations,
            "steps_per_particle": 200,
            "envs_per_particle": 4,
            "hidden_sizes": (16,),
            "seed": seed,
            "threads": 1,
            "final_eval_episodes": 0,
            **(settings or {}),
        }
    )
    fresh = _fresh_instances(op)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        full, target = _build(cfg, fresh())
        probe = _Probe(full, target)
        records = [_iteration(full, probe) for _ in range(iterations)]
        _check_resume(cfg, fresh, records, full, seed)
    _check_reindex(target, particles)
    _check_reindex(full.ctx.estimator, particles)


def check_estimator(name: str, **kwargs: Any) -> None:
    """:func:`check_operator` on the policy-gradient step of a run with estimator ``name``
    (registered): its state checkpoints and resumes exactly, its per-particle state moves with
    ``reindex``. ``kwargs`` as for :func:`check_operator`."""
    settings = {**kwargs.pop("settings", {}), "estimator": name}
    check_operator(lambda b: PolicyGradient(), settings=settings, **kwargs)


def check_fast_path(env_id: str, *, steps: int = 2000, seed: int = 0) -> None:
    """The registered batched env of ``env_id`` equals ``gymnasium.make(env_id)`` step for step:
    one env of each from the same seed, the same random actions, across resets (the batched env
    resets itself, gymnasium's is reset unseeded, continuing its generator). AssertionError at
    the first difference in an observation, reward or flag."""
    batched = make_batched_env(env_id, 1, seed=seed)
    if not batched.is_fast_path:
        raise AssertionError(f"{env_id!r} has no registered fast path (register_fast_path)")
    twin = gymnasium.make(env_id)
    actions = np.random.default_rng(seed + 1)
    space = batched.single_action_space
    obs_b, (obs_g, _) = batched.reset(), twin.reset(seed=seed)
    _same_step(obs_b[0], obs_g, "reset observation", 0)
    for t in range(1, steps + 1):
        if hasattr(space, "n"):
            action = np.array([actions.integers(space.n)])
        else:
            action = actions.uniform(space.low, space.high)[None].astype(space.dtype)
        res = batched.step(action)
        obs_g, reward, terminated, truncated, _ = twin.step(action[0])
        _same_step(res.final_obs[0], obs_g, "observation", t)
        _same_step(res.reward[0], reward, "reward", t)
        _same_step(res.terminated[0], terminated, "terminated", t)
        _same_step(res.truncated[0], truncated, "truncated", t)
        if terminated or truncated:
            obs_g, _ = twin.reset()
            _same_step(res.obs[0], obs_g, "reset observation", t)


def _same_step(batched: Any, gym_value: Any, what: str, t: int) -> None:
    if not np.array_equal(np.asarray(batched), np.asarray(gym_value)):
        raise AssertionError(
            f"check_fast_path: step {t}: {what} {np.asarray(batched).tolist()} (batched) != "
            f"{np.asarray(gym_value).tolist()} (gymnasium)"
        )


def _iteration(run: Run, probe: _Probe | None = None):
    """:func:`run_iteration`; an error of the operator under test names the rule it breaks."""
    try:
        return run_iteration(run, probe)
    except Exception as exc:
        if isinstance(exc, TypeError) and "not a PopulationState" in str(exc):
            _fail("returns a state", str(exc))
        if probe is None or not probe.in_call:
            raise
        hidden = sorted(probe.hidden)
        _fail(
            "declared reads",
            f"{probe.name} raised {type(exc).__name__}: {exc} with the fields it does not "
            f"declare in reads ({hidden}) set to None",
        )


def _fresh_instances(op: OperatorOrFactory) -> Callable[[], OperatorOrFactory]:
    if hasattr(op, "state_dict") and not isinstance(op, type):  # an instance: deep copies
        pristine = copy.deepcopy(op)
        return lambda: copy.deepcopy(pristine)
    return lambda: op


def _build(cfg: RunConfig, op: OperatorOrFactory) -> tuple[Run, Operator]:
    """A run of ``cfg`` with ``op`` right after the mode's operators, and the built ``op``."""
    try:
        run = build_run(cfg, extra_operators=[op])
    except ValueError as exc:
        raise AssertionError(f"check_operator rule 'composition': {exc}") from None
    return run, run.operators[len(MODES.get(cfg.mode).operators)]


class _Probe:
    """The per-call rules (2-4), checked around every call of the operator under test."""

    def __init__(self, run: Run, target: Operator) -> None:
        self.run, self.target = run, target
        self.name = component_name(target)
        self.writes = contract_of(target).writes
        self.taken = 0
        self.in_call = False  # an error before the target runs is not the target's
        ctx = run.ctx
        collect, episodes_of = ctx.sampler.collect, ctx.evaluator.episodes_of

        def counted_collect(theta, steps_per_env):
            rollout = collect(theta, steps_per_env)
            self.taken += rollout.steps_taken if rollout.valid is None else int(rollout.valid.sum())
            return rollout

        def counted_episodes_of(theta):
            result = episodes_of(theta)
            self.taken += result.steps
            return result

        ctx.sampler.collect = counted_collect
        ctx.evaluator.episodes_of = counted_episodes_of

    def before(self, op: object, state: PopulationState) -> None:
        if op is not self.target:
            return
        self.taken = 0
        self.steps = state.env_steps
        self.params = state.params.clone()
        self.fields = copy.deepcopy(_fields(state))
        reads = contract_of(self.target).reads
        self.hidden = {name: getattr(state, name) for name in HIDEABLE if name not in reads}
        for name in self.hidden:
            setattr(state, name, None)
        self.in_call = True

    def after(self, op: object, state: PopulationState) -> None:
        if op is not self.target:
            return
        self.in_call = False
        for name, value in self.hidden.items():  # not read, not written: as it was
            if getattr(state, name) is None:
                setattr(state, name, value)
        it, params = state.current_iteration, state.params
        where = f"{self.name} at iteration {it}"
        if params.shape != self.params.shape or params.dtype != self.params.dtype:
            _fail("params", f"{where} changed params from {tuple(self.params.shape)} "
                  f"{self.params.dtype} to {tuple(params.shape)} {params.dtype}")  # fmt: skip
        if not torch.isfinite(params).all():
            _fail("params", f"{where} left non-finite params")
        changed = [
            name for name, value in _fields(state).items()
            if not _same_object_or_value(value, self.fields[name])
        ]  # fmt: skip
        if not torch.equal(params, self.params):
            changed.append("params")
        undeclared = sorted(set(changed) - self.writes)
        if undeclared:
            _fail("declared writes", f"{where} changed {undeclared} but declares "
                  f"writes={sorted(self.writes)}")  # fmt: skip
        if state.env_steps < self.steps:
            _fail("env steps", f"{where} decreased env_steps {self.steps} → {state.env_steps}")
        if state.env_steps - self.steps != self.taken:
            _fail("env steps", f"{where} added {state.env_steps - self.steps} to env_steps "
                  f"but the run's sampler and evaluator took {self.taken} steps")  # fmt: skip


HIDEABLE = ("rollout", "grads", "direction", "fitness", "parents")


def _fields(state: PopulationState) -> dict[str, Any]:
    out = {name: getattr(state, name) for name in STATE_FIELDS if name != "episode_signal"}
    del out["params"]
    rollout = state.rollout
    out["episode_signal"] = None if rollout is None else rollout.episode_signal
    if rollout is not None:  # the rest of the rollout (its signal is a field of its own)
        out["rollout"] = dataclasses.replace(rollout, episode_signal=None)
    return out


def _same_object_or_value(a: Any, b: Any) -> bool:
    if a is b:
        return True
    return _equal(a, b)


def _check_resume(cfg: RunConfig, fresh, records: list, full: Run, seed: int) -> None:
    """Rule 5: one iteration, a checkpoint file, a fresh run loaded from it, the rest."""
    torch.manual_seed(seed)
    first, _ = _build(cfg, fresh())
    _iteration(first)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        try:
            save_checkpoint(path, run_state_dict(first))
        except TypeError as exc:
            _fail("checkpoint", f"state_dict must hold data only: {exc}")
        payload = load_checkpoint(path)
    resumed, _ = _build(cfg, fresh())
    try:
        load_run_state(resumed, payload)
    except ValueError as exc:
        _fail("checkpoint", f"load_state_dict of a fresh instance failed: {exc}")
    for expected in records[1:]:
        got = _iteration(resumed)
        for name in ("env_steps", "return_mean", "episodes", "grad_norm", "scalars"):
            if not _equal(getattr(got, name), getattr(expected, name)):
                _fail("checkpoint", f"resumed after iteration 1, iteration {got.iteration}'s "
                      f"{name} differs from the uninterrupted run's")  # fmt: skip
    if not torch.equal(resumed.state.params, full.state.params):
        _fail("checkpoint", "resumed after iteration 1, the final params differ from the "
              "uninterrupted run's")  # fmt: skip


def _check_reindex(op: Operator, n: int) -> None:
    """Rule 6 on the operator's state after the run."""
    parents = torch.tensor([(i + 1) % n for i in range(n)])
    parents[-1] = parents[0]  # a permutation, and one particle cloned
    before = from_storable(to_storable(op.state_dict()))
    per_particle = _per_particle_paths(before, n)
    if not isinstance(op, ParticleStateHolder):
        if per_particle:
            _fail(
                "reindex",
                f"{component_name(op)} holds per-particle state ({per_particle[0]}: leading "
                f"size n={n}) but has no reindex(parents)",
            )
        return
    op.reindex(parents)
    after = from_storable(to_storable(op.state_dict()))
    expected = _permuted(before, parents.numpy(), n)
    for path in per_particle:
        key = path[len("state[") : -1]
        key = next(k for k in before if repr(k) == key)
        if not _equal(after[key], expected[key]):
            _fail(
                "reindex",
                f"{component_name(op)}.reindex({parents.tolist()}) did not move {path} with "
                "its particles",
            )


def _per_particle_paths(state: Any, n: int) -> list[str]:
    """The top-level entries of ``state`` with leading size ``n``."""
    if not isinstance(state, dict):
        return []
    return [f"state[{k!r}]" for k, v in state.items() if _leading(v) == n]


def _leading(value: Any) -> int | None:
    if isinstance(value, torch.Tensor | np.ndarray) and value.ndim >= 1:
        return int(value.shape[0])
    if isinstance(value, list):
        return len(value)
    return None


def _permuted(state: Any, parents: np.ndarray, n: int) -> Any:
    if not isinstance(state, dict):
        return state
    out = {}
    for key, value in state.items():
        if _leading(value) != n:
            out[key] = value
        elif isinstance(value, list):
            out[key] = [value[int(p)] for p in parents]
        else:
            index = torch.from_numpy(parents) if isinstance(value, torch.Tensor) else parents
            out[key] = value[index]
    return out


def _equal(a: Any, b: Any) -> bool:
    """Exact equality of nested data (NaN equals NaN)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        return (
            a.shape == b.shape
            and a.dtype == b.dtype
            and bool(torch.equal(a, b) or torch.allclose(a, b, rtol=0, atol=0, equal_nan=True))
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        nan = a.dtype.kind in "fc" and b.dtype.kind in "fc"
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=nan))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            _equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):
        return a is b


def _fail(rule: str, message: str) -> None:
    raise AssertionError(f"check_operator rule {rule!r}: {message}")
