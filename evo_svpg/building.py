"""What every process of a run builds the same way: the policy spec, thread limits, a shard.

:func:`build_shard` is a worker's part of a run (:mod:`evo_svpg.workers`); the learner's whole
run is :func:`evo_svpg.engine.build_run`. Both start from the same config, so a shard draws
and starts as the same rows of one process would.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

import numpy as np
import threadpoolctl
import torch

from evo_svpg.behaviour import Describer, bounded
from evo_svpg.config import RunConfig
from evo_svpg.envs import BatchedEnv, make_batched_env
from evo_svpg.evaluation import EvaluatorSpec
from evo_svpg.operators import Build
from evo_svpg.parallel import ParticleShards
from evo_svpg.policy import PolicySpec
from evo_svpg.registry import ESTIMATORS, MODES
from evo_svpg.sampler import Sampler


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


def set_threads(threads: int = 1) -> None:
    """Cap numpy's BLAS and torch's intra-op pools at ``threads`` for this process.

    Runs keep them at 1 and get parallelism from particle shards instead (:mod:`.parallel`):
    on the 2-vCPU machines this was developed on, two BLAS/OpenMP threads made the gradient
    10-20x *slower* than one whenever another process was running (docs/results/speed.md).
    """
    threadpoolctl.threadpool_limits(threads)
    torch.set_num_threads(threads)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the OS.

    Every iteration the sampler's forward, the gradient's backprop and the SVGD kernel allocate
    and free arrays of 1-32 MB. By default glibc serves many of those with fresh ``mmap``s (or
    trims the heap after a free), so each iteration pays page faults to zero the same memory
    again: measured, a shard's gradient took 0.092 s instead of 0.056 s. Fixing the mmap
    threshold at its maximum (32 MB), not trimming below 1 GB and growing the heap 64 MB at a
    time keeps that memory: the process (the learner, every worker, and any process that calls
    ``build_run``) then holds on to its peak heap until it exits. Arithmetic is untouched.
    Only later allocations are affected. False (and nothing done) where the C library is not
    glibc (macOS, musl)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**30)
    ok &= mallopt(_M_TOP_PAD, 64 * 2**20)
    return bool(ok)


@dataclass
class Shard:
    """What a worker owns: its particles' sampler and estimator."""

    sampler: Sampler
    estimator: object


def build_shard(cfg_data: dict, rows: slice, population: int, describe: bool = False) -> Shard:
    """A worker's part of the run of ``cfg_data`` (:meth:`RunConfig.to_dict`): the sampler and
    estimator of population rows ``rows``, drawing and starting as one process would;
    ``describe``: the sampler also describes its episodes' behaviours (novelty, QD)."""
    cfg = RunConfig(**cfg_data)
    layout = MODES.get(cfg.mode).layout(cfg)
    count = rows.stop - rows.start
    check_memory(cfg, count * layout.steps_per_policy)
    env = make_batched_env(
        cfg.env, count * layout.envs_per_policy, seed=None,
        max_episode_steps=cfg.max_episode_steps or None,
    )  # fmt: skip
    spec = policy_spec_for(env, cfg)
    b = Build(cfg, spec, env, count, ParticleShards(count, 1), rows.start, population)
    estimator = ESTIMATORS.get(cfg.estimator).build(b)
    describer = None
    if describe:
        behaviour = cfg["behaviour"]
        describer = Describer.for_env(behaviour.descriptor, spec, env, roles=behaviour.roles)
    return Shard(make_sampler(cfg, env, spec, rows, describer), estimator)


def candidate_evaluator(cfg: RunConfig, spec: PolicySpec, described: bool = False) -> EvaluatorSpec:
    """The candidate evaluator (CEM/CMA-ES candidates, ERL actors): the one place its seed and
    streams are chosen. ``described``: every episode is also described and logged (the QD grid
    archive reads them)."""
    behaviour = cfg["behaviour"]
    return EvaluatorSpec(
        cfg.env, spec, cfg["evaluation"].eval_episodes, cfg.subseed(3),
        descriptor=behaviour.descriptor if described else None, roles=behaviour.roles,
        max_episode_steps=cfg.max_episode_steps or None,
        random_streams=cfg["sampling"].random_streams, log=described,
    )  # fmt: skip


def make_sampler(
    cfg: RunConfig, env: BatchedEnv, spec: PolicySpec, rows: slice, describer=None
) -> Sampler:
    """The sampler of population rows ``rows`` on ``env``: the one place its seed and streams
    are chosen, for a whole population and a worker's shard alike."""
    return Sampler(
        env, spec, rows.stop - rows.start, seed=cfg.subseed(1), describer=describer,
        whole_episodes=cfg["sampling"].whole_episodes,
        random_streams=cfg["sampling"].random_streams, first_particle=rows.start,
    )  # fmt: skip


def check_memory(cfg: RunConfig, steps: int) -> None:
    """Refuse a run whose rollout buffers alone exceed this machine's memory: every transition
    keeps each hidden layer's float32 output and its return and length (at least)."""
    per_step = 4 * sum(cfg.hidden_sizes) + 16
    need = steps * per_step
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise ValueError(
            f"particles={cfg.particles} × steps_per_particle={cfg.steps_per_particle} needs at "
            f"least {need / 2**30:,.1f} GiB of rollout buffers; this machine has "
            f"{have / 2**30:,.1f} GiB: lower them"
        )
