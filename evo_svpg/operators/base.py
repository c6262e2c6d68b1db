"""What every operator sees: the population state, the context, and the small shared protocols.

An operator is ``op(state, ctx) -> state``; the engine continues with the state it returns
(the same object, changed in place, or a new one). A mode (see :mod:`evo_svpg.modes`) is a
sequence of operators that the engine runs once per iteration. Operators that keep state across
iterations (Adam moments, CEM variances, an evolutionary population) expose ``state_dict`` /
``load_state_dict`` so checkpoints capture them; ``state_dict`` is called only when a
checkpoint is written, so it may return references to the operator's own arrays.

The contract (:class:`Contract`) is declared with class attributes, each with a default:
``needs`` (what the run must build for it: ``sampler``, ``estimator``, ``evaluator``,
``behaviours``, ``evaluation_log``, ``final_obs``: the rollout's final observations, which
workers otherwise keep), ``reads`` and ``writes`` (fields of
:class:`PopulationState`; ``episode_signal`` is the rollout's). ``build_run`` refuses a
composition in which an operator reads a field that nothing before it in the iteration wrote;
:func:`evo_svpg.testing.check_operator` checks an operator against the rest of the contract.

Selection replaces particles by copies of others. Such an operator sets ``state.parents``
(``[n]`` int64: row ``i`` now descends from row ``parents[i]``); the engine then calls
``reindex(parents)`` on every operator and estimator that keeps per-particle state, so a clone
inherits its parent's optimiser moments and critic (see docs/design.md "Cloned particles").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from evo_svpg.evaluation import EvaluatorSpec
from evo_svpg.parallel import ParticleShards
from evo_svpg.policy import PolicySpec
from evo_svpg.registry import OPERATORS, ComponentEntry
from evo_svpg.sampler import NonFiniteError, Rollout, Sampler

STATE_FIELDS = ("params", "rollout", "episode_signal", "grads", "direction", "fitness", "parents")
RESOURCES = ("sampler", "estimator", "evaluator", "behaviours", "evaluation_log", "final_obs")


class Estimator(Protocol):
    def gradient(self, theta: Tensor, rollout: Rollout) -> Tensor: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class Evaluator(Protocol):
    def returns(self, theta: np.ndarray) -> tuple[np.ndarray, int]: ...


@dataclass
class PopulationState:
    """What flows through an iteration. Only ``params`` (and the counters) carry over from one
    iteration to the next: the engine clears the per-iteration fields before each iteration."""

    params: Tensor  # [n, d] float32 on CPU
    iteration: int = 0  # completed iterations
    env_steps: int = 0  # env steps of the whole run so far (rollouts AND candidate evaluations)
    rollout: Rollout | None = None  # this iteration's transitions
    grads: Tensor | None = None  # [n, d] ∇J estimates at params
    direction: Tensor | None = None  # [n, d] ascent direction handed to the optimiser
    fitness: np.ndarray | None = None  # [n] float64, higher is better; NaN = not measured
    parents: Tensor | None = None  # [n] int64 lineage set by a selection operator, see above
    scalars: dict[str, float] = field(default_factory=dict)  # per-iteration diagnostics

    @property
    def current_iteration(self) -> int:
        """1-based number of the iteration being computed (``iteration`` counts finished ones)."""
        return self.iteration + 1

    def clear_iteration(self) -> None:
        """Forget the per-iteration fields (what an operator may read must be written anew)."""
        self.rollout = self.grads = self.direction = self.fitness = self.parents = None
        self.scalars = {}


@dataclass
class Context:
    """What operators may use besides the state."""

    spec: PolicySpec
    sampler: Sampler
    estimator: Estimator
    steps_per_env: int
    evaluator: Evaluator | None = None  # fresh-episode returns of any [m, d] batch of policies


@dataclass(frozen=True)
class Build:
    """What a component's factory may read when a run is built (see ``registry.OPERATORS``).

    ``cfg`` is the run's :class:`~evo_svpg.config.RunConfig` (``cfg["cem"]`` is a section);
    ``env`` the sampler's batched env (spaces, time limit); ``policies`` the number of
    particles the component serves (the population, or a worker's shard of it).
    """

    cfg: Any
    spec: PolicySpec
    env: Any
    policies: int
    shards: ParticleShards | None = None
    # A worker's build serves rows first … first + policies − 1 of a population of
    # ``population`` (None: the whole population). Per-particle state is made for the whole
    # population and cut to these rows, so that a shard starts as its rows of one process.
    first: int = 0
    population: int | None = None
    # Builds an operator's evaluator from its spec: in this process (None), or on every worker
    # of a sharded run (:class:`~evo_svpg.sharded.ShardedEvaluator`).
    evaluators: Callable[[EvaluatorSpec], Any] | None = None

    @property
    def rows(self) -> slice:
        return slice(self.first, self.first + self.policies)

    def evaluator(self, spec: EvaluatorSpec) -> Any:
        """An evaluator built from ``spec`` where the run evaluates: use this, not
        ``spec.build()``, so a sharded run shares its evaluations out over the workers."""
        return spec.build() if self.evaluators is None else self.evaluators(spec)

    def subseed(self, stream: int) -> int:
        return self.cfg.subseed(stream)


class Operator(Protocol):
    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass(frozen=True)
class Contract:
    """What an operator needs from the run and which state fields it reads and writes."""

    needs: frozenset[str] = frozenset()
    reads: frozenset[str] = frozenset({"params"})
    writes: frozenset[str] = frozenset({"params"})


def register_operator(
    name: str,
    build: Callable[[Build], Operator],
    doc: str,
    sections: tuple[str, ...] = (),
    appended_when: Callable[[Any], bool] | None = None,
) -> None:
    """Register the operator ``build(b)`` makes under ``name`` (modes name it); ``sections``:
    the settings sections it reads; ``appended_when(cfg)``: a measure every run whose config
    says so gets after its mode's operators."""
    OPERATORS.add(name, ComponentEntry(name, build, sections, doc, appended_when=appended_when))


def contract_of(op: object) -> Contract:
    """``op``'s declared contract; undeclared parts take :class:`Contract`'s defaults."""
    default = Contract()
    parts = {
        name: frozenset(getattr(op, name, getattr(default, name)))
        for name in ("needs", "reads", "writes")
    }
    for name, valid in (("needs", RESOURCES), ("reads", STATE_FIELDS), ("writes", STATE_FIELDS)):
        unknown = sorted(parts[name] - set(valid))
        if unknown:
            raise ValueError(
                f"{type(op).__name__} declares {name}={sorted(parts[name])}: {unknown} not in "
                f"{list(valid)}"
            )
    return Contract(**parts)


def component_name(op: object) -> str:
    """The name a component's state is checkpointed under (its class; ``Every`` is see-through,
    and a stand-in for components on workers gives theirs as ``checkpoint_name``)."""
    inner = getattr(op, "op", None) if isinstance(op, Every) else None
    if inner is not None:
        return component_name(inner)
    return getattr(op, "checkpoint_name", None) or type(op).__name__  # a worker pool's stand-in


@runtime_checkable
class ParticleStateHolder(Protocol):
    """Keeps something per particle (optimiser moments, a critic) that clones must inherit."""

    def reindex(self, parents: Tensor) -> None: ...


@runtime_checkable
class ReportsPolicies(Protocol):
    """Holds policies of its own (ERL's population) that the final evaluation should score."""

    def reported_policies(self) -> dict[str, Tensor]:
        """``{name: theta [m, d]}``; each is evaluated afresh at the end of a run."""
        ...


class Stateless:
    """Mixin for operators with nothing to checkpoint."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class Every:
    """Run ``op`` only in iterations ``period, 2·period, ...`` (1-based)."""

    period: int
    op: Operator

    def __call__(self, state: PopulationState, ctx: Context) -> PopulationState:
        if state.current_iteration % self.period:
            return state
        return self.op(state, ctx)

    def state_dict(self) -> dict:
        return self.op.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.op.load_state_dict(state)

    def reindex(self, parents: Tensor) -> None:
        if isinstance(self.op, ParticleStateHolder):
            self.op.reindex(parents)

    # The wrapped operator's contract, whole.
    @property
    def needs(self) -> frozenset[str]:
        return contract_of(self.op).needs

    @property
    def reads(self) -> frozenset[str]:
        return contract_of(self.op).reads

    @property
    def writes(self) -> frozenset[str]:
        return contract_of(self.op).writes


def require_finite(x: Tensor, what: str, state: PopulationState) -> None:
    if not torch.isfinite(x).all():
        raise NonFiniteError(
            f"non-finite {what} at iteration {state.current_iteration}; the run stops here and "
            "the last checkpoint is left as it was"
        )


def ranking_key(fitness: np.ndarray) -> np.ndarray:
    """Fitness for sorting: an unmeasured particle (NaN) ranks below every measured one."""
    return np.where(np.isnan(fitness), -np.inf, fitness)


def evaluate(state: PopulationState, ctx: Context, theta: Tensor) -> np.ndarray:
    """Mean fresh-episode return of every row of ``theta [m, d]``, in one batched call.

    The env steps spent are added to ``state.env_steps``: modes compare at equal budgets.
    """
    if ctx.evaluator is None:
        raise RuntimeError("this run was built without an evaluator")
    returns, steps = ctx.evaluator.returns(theta.detach().cpu().numpy())
    state.env_steps += steps
    state.scalars["eval_env_steps"] = state.scalars.get("eval_env_steps", 0.0) + steps
    if not np.isfinite(returns).all():
        raise NonFiniteError(f"non-finite evaluation return at iteration {state.current_iteration}")
    return returns
