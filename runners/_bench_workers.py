"""Worker-process timings for ``runners/benchmark.py`` (parts j and k), side by side in one run.

(j) the batched sampler at 16 particles × 20 envs in one process against the same particles
    sharded over 2 worker processes (CartPole-v1 and the paper's Box2D envs), and the full paper
    CartPole run on 1 and 2 workers, with the time split per operator;
(k) iterations at n = 16, 64 and 256 particles (10,000 steps each; 3 timed after a warm-up
    one): seconds per million transitions, and the SVGD step's share of the iteration;
(l) the full paper CartPole run on 2 Ray actors (a local Ray) against 2 local workers;
(m) the QD comparison's novelty run on sparse MountainCar (the setting of
    configs/sweeps/qd_mountaincar_discrete.toml: 16 × 2,000 steps an iteration, 10 envs per
    particle, QD records every iteration) on 1 and 2 workers: behaviours, the novelty signal
    and the QD tests sharded.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict

import numpy as np
import torch

from evo_svpg.config import RunConfig
from evo_svpg.engine import build_run
from evo_svpg.loop import finished, run_iteration
from evo_svpg.operators import component_name


class PhaseTimer:
    """A :func:`run_iteration` hook summing wall seconds per operator."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._start = 0.0

    def before(self, op, state) -> None:
        self._start = time.perf_counter()

    def after(self, op, state) -> None:
        self.seconds[component_name(op)] += time.perf_counter() - self._start


def _sampler_rates(cfg: RunConfig, repeats: int) -> dict[int, list[float]]:
    """Transitions/s of one ``collect`` of the population, one process vs 2 workers,
    interleaved (both built first, one warm-up each)."""
    runs = {w: build_run(cfg.replace(workers=w)) for w in (1, 2)}
    theta = runs[1].state.params.numpy()
    rates: dict[int, list[float]] = {1: [], 2: []}
    try:
        for r in range(repeats + 1):
            for w, run in runs.items():
                start = time.perf_counter()
                rollout = run.ctx.sampler.collect(theta, run.ctx.steps_per_env)
                if r:  # the first is a warm-up
                    rates[w].append(rollout.steps_taken / (time.perf_counter() - start))
    finally:
        for run in runs.values():
            run.close()
    return rates


def sampler_with_workers(env_ids: list[str], transitions: int, repeats: int) -> dict:
    out = {}
    for env_id in env_ids:
        cfg = RunConfig(env=env_id, steps_per_particle=transitions // 16, envs_per_particle=20)
        rates = _sampler_rates(cfg, repeats)
        one, two = statistics.median(rates[1]), statistics.median(rates[2])
        out[env_id] = {"one_process": one, "two_workers": two, "ratio": two / one}
        print(f"(j) sampler on {env_id}, 16 × 20 envs: one process {one:,.0f} transitions/s, "
              f"2 workers {two:,.0f} ({two / one:.2f}×; target ≥ 1.7×)", flush=True)  # fmt: skip
    return out


def _timed_run(cfg: RunConfig, warmup: int = 0) -> tuple[float, dict[str, float], float]:
    """Training wall seconds (no callbacks) of the iterations after ``warmup`` untimed ones,
    seconds per operator over them, final mean return."""
    run = build_run(cfg)
    timer = PhaseTimer()
    try:
        for _ in range(warmup):  # buffers allocated and paged in, workers warm
            run_iteration(run)
        start = time.perf_counter()
        record = None
        while not finished(run):
            record = run_iteration(run, timer)
        wall = time.perf_counter() - start
    finally:
        run.close()
    return wall, dict(timer.seconds), float(np.nanmean(record.return_mean))


def full_run_workers(repeats: int, naive_rate: float | None) -> dict:
    """The paper's CartPole run (16 × 10,000 × 50) on 1 and 2 workers, alternating."""
    walls: dict[int, list[float]] = {1: [], 2: []}
    phases: dict[int, dict[str, float]] = {}
    finals: dict[int, float] = {}
    for _ in range(repeats):
        for w in (1, 2):
            wall, phase, final = _timed_run(RunConfig(workers=w))
            walls[w].append(wall)
            phases[w], finals[w] = phase, final
    out = {"walls": walls, "phases_last_run": phases, "final_mean_return": finals}
    for w in (1, 2):
        med = statistics.median(walls[w])
        rate = 16 * 10_000 * 50 / med
        vs = f", {rate / naive_rate:,.0f}× the naive sampler (target ≥ 250×)" if naive_rate else ""
        split = ", ".join(f"{k} {v:.2f} s" for k, v in phases[w].items())
        print(f"(j) full paper CartPole run, {w} worker(s): median {med:.2f} s of training "
              f"({rate / 1e6:.2f}M transitions/s{vs}); last run: {split}; final mean return "
              f"{finals[w]:.1f}", flush=True)  # fmt: skip
    ratio = statistics.median(walls[1]) / statistics.median(walls[2])
    print(f"(j) full run: 2 workers {ratio:.2f}× one process; same final mean return: "
          f"{finals[1] == finals[2]}", flush=True)  # fmt: skip
    out["ratio"] = ratio
    return out


def population_scaling(sizes: tuple[int, ...] = (16, 64, 256), iterations: int = 3) -> dict:
    """Seconds per million transitions and SVGD's share of an iteration at each n (one
    process and 2 workers), over ``iterations`` iterations after one warm-up iteration."""
    out: dict = {}
    for workers in (1, 2):
        for n in sizes:
            cfg = RunConfig(particles=n, iterations=iterations + 1, workers=workers)
            torch.manual_seed(0)
            wall, phase, _ = _timed_run(cfg, warmup=1)
            per_million = wall / (n * 10_000 * iterations / 1e6)
            svgd = phase.get("SteinDirection", 0.0) / wall
            out[f"{workers}w_n{n}"] = {"s_per_M": per_million, "svgd_share": svgd}
            base = out[f"{workers}w_n{sizes[0]}"]["s_per_M"]
            print(f"(k) n = {n:3d}, {workers} worker(s): {per_million:.2f} s per million "
                  f"transitions ({per_million / base:.2f}× n = {sizes[0]}; target ≤ 1.2×), "
                  f"SVGD {100 * svgd:.1f} % of the iteration (target < 10 %)",
                  flush=True)  # fmt: skip
    return out


def ray_against_local(repeats: int) -> dict:
    """Training seconds of the paper's CartPole run on 2 local workers and on 2 Ray actors of a
    local Ray, alternating (Ray's start-up, ~5 s, is outside the timed training)."""
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    finals: dict[str, float] = {}
    for _ in range(repeats):
        for backend in ("local", "ray"):
            wall, _, final = _timed_run(RunConfig(workers=2, backend=backend))
            walls[backend].append(wall)
            finals[backend] = final
    local, ray = statistics.median(walls["local"]), statistics.median(walls["ray"])
    print(f"(l) full paper CartPole run, 2 workers: local {local:.2f} s, Ray {ray:.2f} s of "
          f"training ({ray / local:.2f}× local; target ≤ 1.3×); same final mean return: "
          f"{finals['local'] == finals['ray']}", flush=True)  # fmt: skip
    return {"walls": walls, "ratio": ray / local, "final_mean_return": finals}


def qd_with_workers(repeats: int, iterations: int = 10) -> dict:
    """Training seconds of ``iterations`` novelty iterations with QD records (after a warm-up
    one) on 1 and 2 workers, alternating; the same final mean return either way."""
    cfg = RunConfig(
        mode="novelty", env="evo_svpg/MountainCarSparse-v0", steps_per_particle=2000,
        envs_per_particle=10, qd_every=1, iterations=iterations + 1,
    )  # fmt: skip
    walls: dict[int, list[float]] = {1: [], 2: []}
    phases: dict[int, dict[str, float]] = {}
    finals: dict[int, float] = {}
    for _ in range(repeats):
        for w in (1, 2):
            walls[w].append(0.0)
            walls[w][-1], phases[w], finals[w] = _timed_run(cfg.replace(workers=w), warmup=1)
    one, two = statistics.median(walls[1]), statistics.median(walls[2])
    split = ", ".join(f"{k} {v:.2f} s" for k, v in phases[2].items())
    print(f"(m) novelty + QD on sparse MountainCar, {iterations} iterations of 32,000 steps: "
          f"one process {one:.2f} s, 2 workers {two:.2f} s ({one / two:.2f}×); 2 workers' "
          f"last run: {split}; same final mean return: {finals[1] == finals[2]}",
          flush=True)  # fmt: skip
    return {"walls": walls, "ratio": one / two, "phases_last_run": phases,
            "final_mean_return": finals}  # fmt: skip
