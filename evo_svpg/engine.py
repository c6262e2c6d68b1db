"""The one training loop: build a run from a config, then apply its mode's operators per iteration.

Logging, progress and checkpoints are callbacks (:mod:`evo_svpg.callbacks`); the loop itself
only advances the state and hands each iteration's :class:`IterationRecord` to them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import threadpoolctl
import torch

from evo_svpg.behaviour import Describer, bounded
from evo_svpg.config import RunConfig
from evo_svpg.envs import BatchedEnv, make_batched_env
from evo_svpg.evaluation import Evaluator
from evo_svpg.metrics import ReturnWindow, pooling_window
from evo_svpg.modes import Layout
from evo_svpg.operators import (
    Build,
    Context,
    Operator,
    ParticleStateHolder,
    PopulationState,
    component_name,
    contract_of,
)
from evo_svpg.parallel import ParticleShards
from evo_svpg.policy import PolicySpec
from evo_svpg.registry import ESTIMATORS, MODES, OPERATORS
from evo_svpg.sampler import Sampler


@dataclass
class IterationRecord:
    """Per-particle results of one iteration (arrays are ``[n]``; NaN where no episode ended)."""

    iteration: int  # 1-based
    env_steps: int  # whole run so far
    return_mean: np.ndarray
    return_min: np.ndarray
    return_max: np.ndarray
    episodes: np.ndarray
    episode_length_mean: np.ndarray
    grad_norm: np.ndarray
    scalars: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the iteration (not written to metrics.csv)
    iteration_env_steps: int = 0  # env steps of this iteration alone (rollouts + evaluations)
    # Best and mean over particles of each particle's return pooled over the pooling window
    # (evo_svpg.metrics): what progress lines and TensorBoard show.
    window_best: float = float("nan")
    window_mean: float = float("nan")


@dataclass
class Run:
    config: RunConfig
    layout: Layout
    spec: PolicySpec
    env: BatchedEnv
    ctx: Context
    operators: list[Operator]
    state: PopulationState
    returns: ReturnWindow
    # False while an iteration is half done: only a state at an iteration boundary is saved.
    at_boundary: bool = True

    def components(self) -> list[tuple[str, object]]:
        """``(key, component)`` of everything with per-run state, operators by position and
        name, then the estimator: how checkpoints key their state and clones are re-indexed."""
        keyed = [(f"{i}:{component_name(op)}", op) for i, op in enumerate(self.operators)]
        return [*keyed, (f"estimator:{component_name(self.ctx.estimator)}", self.ctx.estimator)]

    @property
    def pooling_window(self) -> int:
        """Iterations in which every env ends an episode (:func:`.metrics.pooling_window`)."""
        return pooling_window(self.env.max_episode_steps, self.ctx.steps_per_env)


def policy_spec_for(env: BatchedEnv, cfg: RunConfig) -> PolicySpec:
    """The seed architecture for ``env``'s spaces (categorical or Gaussian head)."""
    obs_space, act_space = env.single_observation_space, env.single_action_space
    scaling = _obs_scaling(obs_space, cfg)
    if hasattr(act_space, "n"):
        return PolicySpec(
            obs_space.shape[0], int(act_space.n), True, cfg.hidden_sizes, cfg.activation,
            **scaling,
        )  # fmt: skip
    return PolicySpec(
        obs_space.shape[0],
        act_space.shape[0],
        False,
        cfg.hidden_sizes,
        cfg.activation,
        tuple(float(x) for x in act_space.low),
        tuple(float(x) for x in act_space.high),
        **scaling,
    )


def _obs_scaling(obs_space, cfg: RunConfig) -> dict:
    """``obs_scaling="bounds"``: the observation box mapped to [−1, 1] for the network."""
    if cfg.obs_scaling == "none":
        return {}
    low, high = obs_space.low.astype(np.float64), obs_space.high.astype(np.float64)
    if not (bounded(low) and bounded(high)):
        raise ValueError(
            f"obs_scaling='bounds' needs finite observation bounds; {cfg.env} has low "
            f"{low.tolist()}, high {high.tolist()}: use obs_scaling='none'"
        )
    return {
        "obs_shift": tuple(float(x) for x in (low + high) / 2),
        "obs_scale": tuple(float(x) for x in 2 / (high - low)),
    }


def check_device(name: str) -> None:
    """ValueError unless ``name`` is a usable torch device here (``cpu``, or ``cuda[:N]``)."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device={name!r} is not a torch device name (e.g. 'cpu')") from exc
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r} is not supported; choose 'cpu' or 'cuda[:N]'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but torch sees no CUDA device here; use 'cpu'")


def _check_memory(cfg: RunConfig, layout: Layout) -> None:
    """Refuse a run whose rollout buffers alone exceed this machine's memory: every transition
    keeps each hidden layer's float32 output and its return and length (at least)."""
    per_step = 4 * sum(cfg.hidden_sizes) + 16
    need = layout.policies * layout.steps_per_policy * per_step
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise ValueError(
            f"particles={cfg.particles} × steps_per_particle={cfg.steps_per_particle} needs at "
            f"least {need / 2**30:,.1f} GiB of rollout buffers; this machine has "
            f"{have / 2**30:,.1f} GiB: lower them"
        )


def set_threads(threads: int = 1) -> None:
    """Cap numpy's BLAS and torch's intra-op pools at ``threads`` for this process.

    Runs keep them at 1 and get parallelism from particle shards instead (:mod:`.parallel`):
    on the 2-vCPU machines this was developed on, two BLAS/OpenMP threads made the gradient
    10-20x *slower* than one whenever another process was running (docs/results/speed.md).
    """
    threadpoolctl.threadpool_limits(threads)
    torch.set_num_threads(threads)


def build_run(
    cfg: RunConfig, extra_operators: Sequence[Operator | Callable[[Build], Operator]] = ()
) -> Run:
    """Envs, policies, estimator and operators of ``cfg``, at iteration 0.

    The operators are the registered ones of ``cfg`` (its mode's, then the measures it
    enables) with ``extra_operators`` (operators, or factories given the run's
    :class:`~evo_svpg.operators.Build`) inserted after the mode's own;
    :func:`check_composition` refuses a composition that reads a field before anything
    writes it.
    """
    check_device(cfg.device)
    set_threads(1)
    layout = MODES.get(cfg.mode).layout(cfg)
    _check_memory(cfg, layout)
    time_limit = cfg.max_episode_steps or None
    env = make_batched_env(
        cfg.env, layout.policies * layout.envs_per_policy, seed=None, max_episode_steps=time_limit
    )
    spec = policy_spec_for(env, cfg)
    params = spec.init_params(layout.policies, torch.Generator().manual_seed(cfg.subseed(0)))
    b = Build(cfg, spec, env, layout.policies, ParticleShards(layout.policies, cfg.threads))
    estimator_entry = ESTIMATORS.get(cfg.estimator)
    estimator = estimator_entry.build(b)
    names = cfg.operator_names
    n_mode = len(MODES.get(cfg.mode).operators)
    operators = [OPERATORS.get(name).build(b) for name in names]
    operators[n_mode:n_mode] = [
        op if hasattr(op, "state_dict") else op(b) for op in extra_operators
    ]
    needs = check_composition(cfg, spec, operators, estimator_entry.capabilities)
    describer = Describer.for_env(cfg["behaviour"].descriptor, spec, env) if (
        "behaviours" in needs
    ) else None  # fmt: skip
    sampler = Sampler(env, spec, layout.policies, seed=cfg.subseed(1), describer=describer)
    evaluator = Evaluator(
        cfg.env, spec, cfg["evaluation"].eval_episodes, cfg.subseed(3),
        descriptor=cfg["behaviour"].descriptor if "evaluation_log" in needs else None,
        max_episode_steps=time_limit,
    )  # fmt: skip
    if "evaluation_log" in needs:
        evaluator.log = []  # candidate evaluations are offered to the QD grid archive too
    steps_per_env = layout.steps_per_policy // layout.envs_per_policy
    ctx = Context(spec, sampler, estimator, steps_per_env, evaluator)
    window = ReturnWindow(pooling_window(env.max_episode_steps, steps_per_env), layout.policies)
    return Run(cfg, layout, spec, env, ctx, operators, PopulationState(params), window)


def check_composition(cfg: RunConfig, spec: PolicySpec, operators: list, capabilities) -> set:
    """The union of the operators' ``needs``; ValueError if an operator reads a state field that
    no operator before it writes in the iteration, if the estimator lacks a capability the
    run uses, or if nothing writes the rollout the metrics are made of."""
    written = {"params"}
    needs: set[str] = set()
    action_space = "discrete" if spec.discrete else "continuous"
    if action_space not in capabilities.action_spaces:
        raise ValueError(
            f"estimator={cfg.estimator!r} handles {sorted(capabilities.action_spaces)} actions; "
            f"{cfg.env} has {action_space} actions"
        )
    for i, op in enumerate(operators):
        contract = contract_of(op)
        missing = sorted(contract.reads - written)
        if missing:
            raise ValueError(
                f"mode={cfg.mode!r}: operator {i} ({component_name(op)}) reads {missing}, which "
                f"no operator before it writes (written by then: {sorted(written)})"
            )
        if (
            "estimator" in contract.needs
            and "episode_signal" in written
            and not (capabilities.episode_signal)
        ):
            raise ValueError(
                f"estimator={cfg.estimator!r} is not supported by mode={cfg.mode!r}, whose "
                f"operators set an episode-level signal; choose one of "
                f"{[n for n, e in ESTIMATORS.items() if e.capabilities.episode_signal]} "
                f"({capabilities.why_no_episode_signal})"
            )
        written |= contract.writes
        needs |= contract.needs
    if "rollout" not in written:
        raise ValueError(f"mode={cfg.mode!r} has no operator that writes the rollout")
    return needs


def _record(state: PopulationState, seconds: float, steps_before: int) -> IterationRecord:
    rollout = state.rollout
    n = rollout.n_particles

    def per_particle(values: list[np.ndarray], fn) -> np.ndarray:
        return np.array([fn(v) if v.size else np.nan for v in values], dtype=np.float64)

    grads = state.grads
    grad_norm = grads.norm(dim=1).numpy() if grads is not None else np.full(n, np.nan)
    return IterationRecord(
        iteration=state.iteration,
        env_steps=state.env_steps,
        return_mean=per_particle(rollout.episode_returns, np.mean),
        return_min=per_particle(rollout.episode_returns, np.min),
        return_max=per_particle(rollout.episode_returns, np.max),
        episodes=np.array([v.size for v in rollout.episode_returns]),
        episode_length_mean=per_particle(rollout.episode_lengths, np.mean),
        grad_norm=grad_norm.astype(np.float64),
        scalars=dict(state.scalars),
        seconds=seconds,
        iteration_env_steps=state.env_steps - steps_before,
    )


def finished(run: Run) -> bool:
    """``iterations`` done, or the env-step ``budget`` (if any) spent."""
    cfg, state = run.config, run.state
    return state.iteration >= cfg.iterations or 0 < cfg.budget <= state.env_steps


class Hook(Protocol):
    """Sees every operator call of :func:`run_iteration` (``evo_svpg.testing.check_operator``)."""

    def before(self, op: object, state: PopulationState) -> None: ...
    def after(self, op: object, state: PopulationState) -> None: ...


def run_iteration(run: Run, hook: Hook | None = None) -> IterationRecord:
    """One iteration: every operator in order on the state the previous one returned; clones
    made by selection inherit their parent's per-particle state (every component's
    ``reindex``). ``hook`` sees each operator call before and after it."""
    run.at_boundary = False
    start = time.perf_counter()
    state = run.state
    state.clear_iteration()
    steps_before = state.env_steps
    for op in run.operators:
        if hook is not None:
            hook.before(op, state)
        state = op(state, run.ctx)
        if not isinstance(state, PopulationState):
            raise TypeError(
                f"operator {component_name(op)} returned {type(state).__name__}, not a "
                "PopulationState: an operator returns the state it was given, or a new one"
            )
        if hook is not None:
            hook.after(op, state)
        if state.parents is not None:
            for _, component in run.components():
                if isinstance(component, ParticleStateHolder):
                    component.reindex(state.parents)
            state.parents = None
    state.iteration += 1
    run.state = state
    record = _record(state, time.perf_counter() - start, steps_before)
    record.window_best, record.window_mean = run.returns.add(record.return_mean, record.episodes)
    state.rollout = None  # free the buffers before the callbacks run
    run.at_boundary = True
    return record


class Terminated(KeyboardInterrupt):
    """SIGTERM during training, handled like Ctrl-C: the run stops at an iteration's end."""


class _StopSignals:
    """SIGINT/SIGTERM handlers for the length of :func:`train`, in the main thread.

    The first signal asks the run to stop once the current iteration has completed (so what
    is saved is a whole iteration and nothing has to be copied in advance); a second one stops
    it at once, keeping the checkpoint already on disk; any later one only takes note until the
    callbacks' saves are done, so it cannot cut a save short. Python runs handlers in the main
    thread whichever thread the OS picked, so this also holds while particle-shard threads
    compute.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None  # the first signal, honoured at the iteration's end
        self.stopping = False
        self.pending: list[int] = []
        self.active = threading.current_thread() is threading.main_thread()
        self.previous = {}
        if self.active:
            previous = {s: signal.getsignal(s) for s in self.SIGNALS}
            # A signal the process ignores (a background job's SIGINT) stays ignored.
            self.previous = {s: h for s, h in previous.items() if h is not signal.SIG_IGN}
            for s in self.previous:
                signal.signal(s, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.stopping:
            self.pending.append(signum)
            return
        if self.requested is None:
            self.requested = signum
            # A handler may interrupt a write to stderr: then the note is dropped.
            with contextlib.suppress(RuntimeError, OSError, ValueError):
                print("\nstopping after this iteration (Ctrl-C again: stop now, losing it)",
                      file=sys.stderr, flush=True)  # fmt: skip
            return
        self.stopping = True
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    def honour(self) -> None:
        """At an iteration boundary: stop now if a signal asked for it."""
        if self.requested is not None:
            self.stopping = True
            raise Terminated if self.requested == signal.SIGTERM else KeyboardInterrupt

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def train(run: Run, callbacks: list | tuple = ()) -> Run:
    """Run iterations until :func:`finished`; callbacks see every completed iteration.

    A first Ctrl-C or SIGTERM stops the run when the current iteration has completed. On any
    exception (that stop, a second Ctrl-C, a non-finite gradient), in an iteration or in the
    callbacks, callbacks get ``on_interrupt`` while further signals wait (main thread only),
    then the exception propagates. ``run.at_boundary`` tells them whether the state is a
    completed iteration's (saved) or a half-done one's (never saved). Every callback's
    ``on_close`` runs last, whatever happened.
    """
    signals = _StopSignals()
    try:
        for cb in callbacks:
            cb.on_start(run)
        try:
            while not finished(run):
                signals.honour()
                record = run_iteration(run)
                for cb in callbacks:
                    cb.on_iteration(run, record)
            for cb in callbacks:
                cb.on_end(run)
        except BaseException as exc:
            signals.stopping = True
            for cb in callbacks:
                cb.on_interrupt(run, exc)
            if signals.pending and not isinstance(exc, KeyboardInterrupt):
                raise KeyboardInterrupt from exc  # a Ctrl-C arrived while saving
            raise
    finally:
        signals.restore()
        for cb in callbacks:
            cb.on_close(run)
    return run
