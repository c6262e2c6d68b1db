"""The one training loop: iterations of a built run's operators, handed to callbacks.

Logging, progress and checkpoints are callbacks (:mod:`evo_svpg.callbacks`); the loop itself
only advances the state and hands each iteration's :class:`IterationRecord` to them.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from evo_svpg.config import RunConfig
from evo_svpg.engine import Run
from evo_svpg.operators import ParticleStateHolder, PopulationState, component_name


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
    return reached(run.config, run.state.iteration, run.state.env_steps)


def reached(cfg: RunConfig, iterations: int, env_steps: int) -> bool:
    """Whether a run of ``cfg`` that has done ``iterations`` and ``env_steps`` is finished
    (also read off a ``summary.json`` by sweeps and reports)."""
    return iterations >= cfg.iterations or 0 < cfg.budget <= env_steps


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

    The first signal asks the run to stop once the current iteration has completed and been
    recorded (so what is saved is a whole iteration and nothing has to be copied in advance); a
    second one during the operators stops it at once, keeping the checkpoint already on disk.
    While the callbacks record an iteration (``deferring``) and while they save (``stopping``)
    signals only take note, so they cannot cut a record or a save short. Python runs handlers
    in the main thread whichever thread the OS picked, so this also holds while particle-shard
    threads compute.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None  # the first signal, honoured at the iteration's end
        self.deferring = False  # the callbacks are recording an iteration
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
        if self.requested is None or self.deferring:
            if self.requested is not None:
                return
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
    completed iteration's or a half-done one's (never saved); callbacks get ``on_iteration`` in
    list order, so one that saved sees that every callback before it recorded the iteration.
    Every callback's ``on_close`` runs last, whatever happened.
    """
    signals = _StopSignals()
    try:
        for cb in callbacks:
            cb.on_start(run)
        try:
            while not finished(run):
                signals.honour()
                record = run_iteration(run)
                signals.deferring = True
                for cb in callbacks:
                    cb.on_iteration(run, record)
                signals.deferring = False
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
