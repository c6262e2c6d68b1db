"""The one training loop: build a run from a config, then apply its mode's operators per iteration.

Logging, progress and checkpoints are callbacks (:mod:`evo_svpg.callbacks`); the loop itself
only advances the state and hands each iteration's :class:`IterationRecord` to them.
"""

from __future__ import annotations

import copy
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import threadpoolctl
import torch

from evo_svpg.behaviour import Describer, bounded
from evo_svpg.config import RunConfig
from evo_svpg.envs import BatchedEnv, make_batched_env
from evo_svpg.estimators import A2C, Reinforce
from evo_svpg.evaluation import Evaluator
from evo_svpg.metrics import ReturnWindow, pooling_window
from evo_svpg.modes import MODES, Layout
from evo_svpg.operators import Context, Operator, ParticleStateHolder, PopulationState
from evo_svpg.operators.measure import MeasureQD
from evo_svpg.parallel import ParticleShards
from evo_svpg.policy import PolicySpec
from evo_svpg.qd import GridArchive, Visitation
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
    10-20x *slower* than one whenever another process was running (README "Speed").
    """
    threadpoolctl.threadpool_limits(threads)
    torch.set_num_threads(threads)


def build_run(cfg: RunConfig) -> Run:
    """Envs, policies, estimator and operators of ``cfg``, at iteration 0."""
    check_device(cfg.device)
    set_threads(1)
    mode = MODES[cfg.mode]
    layout = mode.layout(cfg)
    _check_memory(cfg, layout)
    time_limit = cfg.max_episode_steps or None
    env = make_batched_env(
        cfg.env, layout.policies * layout.envs_per_policy, seed=None, max_episode_steps=time_limit
    )
    spec = policy_spec_for(env, cfg)
    params = spec.init_params(layout.policies, torch.Generator().manual_seed(cfg.subseed(0)))
    shards = ParticleShards(layout.policies, cfg.threads)
    operators = mode.build(cfg, spec)
    describer = None
    if cfg.qd_every or any(getattr(op, "needs_behaviours", False) for op in operators):
        describer = Describer.for_env(cfg.descriptor, spec, env)
    sampler = Sampler(env, spec, layout.policies, seed=cfg.subseed(1), describer=describer)
    if cfg.estimator == "reinforce":
        estimator = Reinforce(spec, cfg.gamma, cfg.device, shards)
    else:
        estimator = A2C(
            spec, layout.policies, cfg.subseed(2), cfg.gamma, cfg.gae_lambda,
            cfg.critic_hidden_sizes, cfg.critic_lr, cfg.critic_epochs, cfg.device, shards,
        )  # fmt: skip
    steps_per_env = layout.steps_per_policy // layout.envs_per_policy
    evaluator = Evaluator(
        cfg.env, spec, cfg.eval_episodes, cfg.subseed(3),
        descriptor=cfg.descriptor if cfg.qd_every else None, max_episode_steps=time_limit,
    )  # fmt: skip
    if cfg.qd_every:
        evaluator.log = []  # candidate evaluations are offered to the QD grid archive too
        operators.append(_measure_qd(cfg, spec, env, describer, time_limit))
    ctx = Context(spec, sampler, estimator, steps_per_env, evaluator)
    window = ReturnWindow(pooling_window(env.max_episode_steps, steps_per_env), layout.policies)
    return Run(cfg, layout, spec, env, ctx, operators, PopulationState(params), window)


def _measure_qd(
    cfg: RunConfig, spec: PolicySpec, env: BatchedEnv, describer, time_limit: int | None
) -> MeasureQD:
    """The QD records of a run (README "Novelty and quality diversity"). Appended last: it
    drains the evaluator's log of the iteration's evaluations (which is not checkpointed)."""
    tester = Evaluator(
        cfg.env, spec, cfg.qd_eval_episodes, cfg.subseed(4), deterministic=True,
        descriptor=cfg.descriptor, max_episode_steps=time_limit,
    )  # fmt: skip
    space = env.single_observation_space
    if not (bounded(space.low[:2]) and bounded(space.high[:2])):
        raise ValueError(
            f"qd_every={cfg.qd_every} records the (x, v) = observation[0:2] visitation, which "
            f"needs bounded observations; {cfg.env} has low {space.low[:2].tolist()}, high "
            f"{space.high[:2].tolist()} (use qd_every=0)"
        )
    return MeasureQD(
        tester,
        cfg.qd_every,
        GridArchive(describer.bounds, cfg.qd_cells, cfg.qd_offset),
        GridArchive(describer.bounds, cfg.qd_cells, cfg.qd_offset),
        Visitation(space.low[:2], space.high[:2]),
    )


def run_state_dict(run: Run) -> dict:
    """A deep copy of everything a resumed run needs to continue bit-identically."""
    state = run.state
    return copy.deepcopy(
        {
            "config": run.config.to_dict(),
            "returns": run.returns.state_dict(),
            "iteration": state.iteration,
            "env_steps": state.env_steps,
            "params": state.params,
            "operators": [op.state_dict() for op in run.operators],
            "estimator": run.ctx.estimator.state_dict(),
            "sampler": run.ctx.sampler.state_dict(),
            "evaluator": run.ctx.evaluator.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
    )


RESUME_OVERRIDABLE = ("iterations", "budget", "device", "threads", "checkpoint_every")


def load_run_state(run: Run, payload: dict, source: str = "checkpoint") -> None:
    """Continue ``run`` from ``payload`` (:func:`run_state_dict`); ValueError naming ``source``
    if the checkpoint belongs to a run with other settings or does not fit this one."""
    saved = payload.get("config")
    if not isinstance(saved, dict):
        raise ValueError(f"{source} has no run config: it is not a checkpoint of evo_svpg")
    current = run.config.to_dict()
    differ = sorted(
        k for k in set(saved) | set(current)
        if k not in RESUME_OVERRIDABLE and saved.get(k) != current.get(k)
    )  # fmt: skip
    if differ:
        raise ValueError(
            f"{source} belongs to a run with other settings ({', '.join(differ)}: "
            f"{[saved.get(k) for k in differ]} there, {[current.get(k) for k in differ]} here)"
        )
    try:
        run.state.params.copy_(payload["params"])  # in place: the sampler's view stays valid
        for op, op_state in zip(run.operators, payload["operators"], strict=True):
            op.load_state_dict(op_state)
        run.ctx.estimator.load_state_dict(payload["estimator"])
        run.ctx.sampler.load_state_dict(payload["sampler"])
        run.ctx.evaluator.load_state_dict(payload["evaluator"])
        run.returns.load_state_dict(payload["returns"])
        torch.set_rng_state(payload["torch_rng"])
        iteration, env_steps = payload["iteration"], payload["env_steps"]
        if type(iteration) is not int or type(env_steps) is not int or iteration < 0:
            raise TypeError(f"iteration={iteration!r}, env_steps={env_steps!r}")
    except (KeyError, IndexError, TypeError, RuntimeError, AttributeError) as exc:
        raise ValueError(f"{source} does not fit this run ({type(exc).__name__}: {exc})") from None
    run.state.iteration, run.state.env_steps = iteration, env_steps


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


def _apply(run: Run, state: PopulationState) -> PopulationState:
    """One iteration: every operator in order; clones made by selection inherit particle state."""
    for op in run.operators:
        state = op(state, run.ctx)
        if state.parents is not None:
            for holder in (*run.operators, run.ctx.estimator):
                if isinstance(holder, ParticleStateHolder):
                    holder.reindex(state.parents)
            state.parents = None
    return state


class Terminated(KeyboardInterrupt):
    """SIGTERM during training, handled like Ctrl-C: the last completed iteration is saved."""


class _StopSignals:
    """SIGINT/SIGTERM handlers for the length of :func:`train`, in the main thread.

    The first signal raises (``KeyboardInterrupt`` or :class:`Terminated`) wherever training is;
    any later one only takes note until the callbacks' saves are done, so a second Ctrl-C
    cannot cut a save short. Python runs handlers in the main thread whichever thread the OS
    picked, so this also holds while particle-shard threads compute.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
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
        self.stopping = True
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def train(run: Run, callbacks: list | tuple = ()) -> Run:
    """Run iterations until :func:`finished`; callbacks see every completed iteration.

    On any exception (Ctrl-C, SIGTERM, a non-finite gradient), in an iteration or in the
    callbacks' ``on_end``, callbacks get ``on_interrupt`` while further signals wait
    (:class:`_StopSignals`, main thread only), then the exception propagates; the
    state of a half-done iteration is never reported as completed. Every callback's
    ``on_close`` runs last, whatever happened.
    """
    signals = _StopSignals()
    try:
        for cb in callbacks:
            cb.on_start(run)
        try:
            while not finished(run):
                start = time.perf_counter()
                state = run.state
                state.scalars = {}
                steps_before = state.env_steps
                state = _apply(run, state)
                state.iteration += 1
                record = _record(state, time.perf_counter() - start, steps_before)
                record.window_best, record.window_mean = run.returns.add(
                    record.return_mean, record.episodes
                )
                state.rollout = None  # free the buffers before the callbacks run
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
