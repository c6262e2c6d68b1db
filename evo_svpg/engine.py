"""A run built from a config and the registries: envs, policies, estimator, operators.

:func:`build_run` composes the run; :mod:`evo_svpg.loop` trains it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch

from evo_svpg.behaviour import Describer
from evo_svpg.building import (
    candidate_evaluator,
    check_memory,
    keep_freed_memory,
    make_sampler,
    policy_spec_for,
    set_threads,
)
from evo_svpg.config import RunConfig
from evo_svpg.envs import BatchedEnv, make_batched_env
from evo_svpg.metrics import ReturnWindow, pooling_window
from evo_svpg.modes import Layout
from evo_svpg.operators import (
    Build,
    Context,
    Every,
    Operator,
    PopulationState,
    component_name,
    contract_of,
)
from evo_svpg.parallel import ParticleShards
from evo_svpg.policy import PolicySpec
from evo_svpg.ray_workers import RayWorkerPool
from evo_svpg.registry import ESTIMATORS, MODES, OPERATORS
from evo_svpg.sharded import ShardedEstimator, ShardedEvaluator, ShardedSampler
from evo_svpg.workers import WorkerPool

# ``workers = 0`` shards only iterations at least this large: below it, starting processes
# costs more than they save (a worker takes ~2 s to start).
AUTO_WORKERS_MIN_STEPS = 50_000


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
    pool: WorkerPool | RayWorkerPool | None = None  # workers holding particle shards, if any

    def close(self) -> None:
        """Stop the run's workers (processes or Ray actors), if any (idempotent)."""
        if self.pool is not None:
            self.pool.close()

    @property
    def workers(self) -> int:
        return 1 if self.pool is None else self.pool.workers

    def components(self) -> list[tuple[str, object]]:
        """``(key, component)`` of everything with per-run state, operators by position and
        name, then the estimator: how checkpoints key their state and clones are re-indexed."""
        keyed = [(f"{i}:{component_name(op)}", op) for i, op in enumerate(self.operators)]
        return [*keyed, (f"estimator:{component_name(self.ctx.estimator)}", self.ctx.estimator)]

    @property
    def pooling_window(self) -> int:
        """Iterations in which every env ends an episode (:func:`.metrics.pooling_window`); 1
        with whole-episode sampling, where every env ends its episodes in each iteration."""
        if self.ctx.sampler.whole_episodes:
            return 1
        return pooling_window(self.env.max_episode_steps, self.ctx.steps_per_env)


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
    keep_freed_memory()
    layout = MODES.get(cfg.mode).layout(cfg)
    iteration_steps = layout.policies * layout.steps_per_policy
    check_budget(cfg, iteration_steps)
    if cfg.backend == "local":  # on Ray, each worker checks its own machine (build_shard)
        check_memory(cfg, iteration_steps)
    time_limit = cfg.max_episode_steps or None
    env = make_batched_env(
        cfg.env, layout.policies * layout.envs_per_policy, seed=None, max_episode_steps=time_limit
    )
    spec = policy_spec_for(env, cfg)
    params = spec.init_params(layout.policies, torch.Generator().manual_seed(cfg.subseed(0)))
    pool = _plan_pool(cfg, layout, spec, resolve_workers(cfg, layout))
    b = Build(
        cfg, spec, env, layout.policies, ParticleShards(layout.policies, cfg.threads),
        evaluators=None if pool is None else partial(ShardedEvaluator, pool),
    )  # fmt: skip
    estimator_entry = ESTIMATORS.get(cfg.estimator)
    estimator = estimator_entry.build(b)
    names = cfg.operator_names
    n_mode = len(MODES.get(cfg.mode).operators)
    operators = [OPERATORS.get(name).build(b) for name in names]
    operators[n_mode:n_mode] = [
        op if hasattr(op, "state_dict") and not isinstance(op, type) else op(b)
        for op in extra_operators
    ]
    needs = check_composition(cfg, spec, operators, estimator_entry.capabilities)
    behaviour = cfg["behaviour"]
    describer = None  # in a sharded run only built to check the descriptor: workers describe
    if "behaviours" in needs:
        describer = Describer.for_env(behaviour.descriptor, spec, env, roles=behaviour.roles)
    whole = cfg["sampling"].whole_episodes
    if whole and "behaviours" in needs:
        raise ValueError(
            f"sampling='whole-episodes' cannot describe behaviours, which mode={cfg.mode!r}"
            f"{' with qd_every' if cfg['qd'].every else ''} needs; use sampling='continuing'"
        )
    if whole and not estimator_entry.capabilities.whole_episodes:
        raise ValueError(
            f"estimator={cfg.estimator!r} does not support sampling='whole-episodes'; choose one "
            f"of {[n for n, e in ESTIMATORS.items() if e.capabilities.whole_episodes]}"
        )
    evaluator = b.evaluator(candidate_evaluator(cfg, spec, described="evaluation_log" in needs))
    if pool is not None:
        pool.start(frozenset(needs))
        sampler = ShardedSampler(pool, whole, layout.envs_per_policy)
        estimator = ShardedEstimator(pool, component_name(estimator))
    else:
        sampler = make_sampler(cfg, env, spec, slice(0, layout.policies), describer)
    steps_per_env = layout.steps_per_policy // layout.envs_per_policy
    ctx = Context(spec, sampler, estimator, steps_per_env, evaluator)
    window = 1 if whole else pooling_window(env.max_episode_steps, steps_per_env)
    returns = ReturnWindow(window, layout.policies)
    return Run(cfg, layout, spec, env, ctx, operators, PopulationState(params), returns, pool=pool)


def _plan_pool(
    cfg: RunConfig, layout: Layout, spec: PolicySpec, workers: int
) -> WorkerPool | RayWorkerPool | None:
    """The pool of ``workers`` shards the run will start once its operators are built (they
    open their evaluators on it first), or None: everything in this process."""
    if cfg.backend == "ray":
        return RayWorkerPool(cfg, layout.policies, workers, cfg.address)
    if workers > 1:
        return WorkerPool(cfg, layout.policies, spec.n_params, workers)
    return None


def check_budget(cfg: RunConfig, iteration_steps: int) -> None:
    """ValueError for a ``budget`` the run may never reach: ``iterations`` iterations of at
    least ``iteration_steps`` rollout steps each end it first when they spend less. The run
    would stop short of the budget, and its final window (the last 10 % of the budget) would
    hold its last iteration alone."""
    least = cfg.iterations * iteration_steps
    if cfg.budget and least < cfg.budget:
        raise ValueError(
            f"budget={cfg.budget:,} may never be reached: iterations={cfg.iterations} of "
            f"{iteration_steps:,} rollout steps each stop the run at {least:,} env steps (more "
            "with candidate evaluations); raise iterations (iterations = 1000000 lets the "
            "budget stop every run) or lower the budget"
        )


def check_run_config(cfg: RunConfig) -> None:
    """ValueError for anything :func:`build_run` would refuse of ``cfg`` (device,
    environment, observation bounds, memory, sharding), found without starting processes."""
    run = build_run(cfg.replace(workers=1, backend="local", address=""))  # no processes
    resolve_workers(cfg, run.layout)  # what a sharded run refuses
    run.env.close()


def resolve_workers(cfg: RunConfig, layout: Layout) -> int:
    """The number of workers ``cfg.workers`` asks for (0: auto, see its doc; with the Ray
    backend 0 stays 0: one per CPU of the cluster); ValueError for a run that cannot be
    sharded so, naming why."""
    streams = cfg["sampling"].random_streams
    ray = cfg.backend == "ray"
    if cfg.workers == 0 and not ray:
        steps = layout.policies * layout.steps_per_policy
        if streams != "per-particle" or steps < AUTO_WORKERS_MIN_STEPS:
            return 1
        return max(1, min(len(os.sched_getaffinity(0)), layout.policies))
    if cfg.workers > 1 or ray:
        asked = f"workers={cfg.workers}" + (", backend='ray'" if ray else "")
        if cfg.workers > layout.policies:
            raise ValueError(
                f"{asked} but mode={cfg.mode!r} has {layout.policies} "
                f"polic{'y' if layout.policies == 1 else 'ies'} to shard: use workers <= "
                f"{layout.policies}"
            )
        if streams != "per-particle":
            raise ValueError(
                f"{asked} needs random_streams='per-particle' (random_streams={streams!r} "
                "draws one stream for all particles, which a shard cannot reproduce); use "
                "workers=1 and backend='local' for it"
            )
    return cfg.workers


def check_composition(cfg: RunConfig, spec: PolicySpec, operators: list, capabilities) -> set:
    """The union of the operators' ``needs``; ValueError if an operator reads a state field that
    no operator before it writes in every iteration (an ``Every``'s writes do not count), if the
    estimator lacks a capability the run uses, or if nothing writes the rollout the metrics are
    made of."""
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
        if not isinstance(op, Every):  # a periodic operator's writes are missing in between
            written |= contract.writes
        needs |= contract.needs
    if "rollout" not in written:
        raise ValueError(f"mode={cfg.mode!r} has no operator that writes the rollout")
    return needs
