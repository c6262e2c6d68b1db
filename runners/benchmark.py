"""Speed benchmark, measured side by side in one process on this machine.

(a) naive sampler: 16 gymnasium CartPole-v1 envs stepped one at a time, one torch forward and a
    ``Categorical`` sample per step (the style of most public SVPG ports);
(b) this project's batched sampler: the same 16 policies, the same number of transitions;
(c) a full paper CartPole run: 16 particles × 10,000 steps × 50 iterations, REINFORCE, with the
    CLI's callbacks (metrics, TensorBoard, checkpoints);
(d) the SVGD update at n = 16, 64, 256 with d = 6,877 (the CartPole policy);
(e) one ``cem-per-particle`` iteration (K = 8) against a ``pure`` iteration that spends the same
    env steps (its steps per particle raised to match), on CartPole-v1 and Pendulum-v1;
(f) the time ``cmaes-per-particle`` spends in pycma (ask/tell/inject: everything of its operator
    except the evaluation's env stepping) as a share of the iteration;
(g) novelty kNN (k = 10) against a full ``NoveltyArchive`` of 100,000 3-D descriptors plus a
    population of 16: the KD-tree rebuild after an add, 16 particle queries (own entry excluded),
    160 and 800 episode queries;
(h) what gymnasium-exact squares cost: ``libm_square`` against ``np.power`` (what the fast paths
    used before; CPU-dependent on AVX-512) and ``x * x`` on 320 float64 elements, and one
    Acrobot-v1 / Pendulum-v1 step of 320 envs against one CartPole-v1 step;
(i) the paper's Box2D envs (rllab's swing-up, balancing cart-pole, double pendulum): the batched
    sampler with the seed policy (100-50-25) on each against CartPole-v1 at the same 16 particles
    × 20 envs, repeats interleaved, and one env step of 320 envs alone.

Targets (issue 3): (b) ≥ 2M transitions/s and ≥ 350× (a); (c) ≤ 15 s; (d) ≤ 0.5 ms at n = 16.
Targets (issue 4): (e) ratio ≤ 1.3; (f) < 10 %. (g): a population's queries < 50 ms.
Targets (issue 13): (i) ≥ 0.8× CartPole-v1's transitions/s for the cart-poles, ≥ 0.5× for the
double pendulum.
(j), (k), (l): worker processes and Ray actors (runners/_bench_workers.py). Targets (issue 14):
the sampler at 16 × 20 on 2 workers ≥ 1.7× one process; the full CartPole run ≥ 250× the naive
sampler's transitions/s; n = 64 and 256 within 1.2× of n = 16 per transition, SVGD < 10 % of an
iteration; Ray on one machine within 1.3× of local workers (needs the [ray] extra).
(m): the novelty + QD run of configs/sweeps/qd_mountaincar_discrete.toml on 1 and 2 workers (no
target).

    python runners/benchmark.py [--transitions 160000] [--repeats 3] [--out results/benchmark]
    python runners/benchmark.py --only e f     # just the extension timings
    python runners/benchmark.py --only g       # just the novelty kNN timings
    python runners/benchmark.py --only h       # just the portable-squares timings
    python runners/benchmark.py --only i       # just the paper envs' sampler speed
    python runners/benchmark.py --only a j k l m # workers and Ray (a: the naive reference)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from _bench_workers import (
    full_run_workers,
    population_scaling,
    qd_with_workers,
    ray_against_local,
    sampler_with_workers,
)
from torch import nn

from evo_svpg.callbacks import Callback, Checkpointer, MetricsCSV, Summary, TensorBoardScalars
from evo_svpg.config import RunConfig
from evo_svpg.engine import build_run, policy_spec_for, set_threads
from evo_svpg.envs import make_batched_env
from evo_svpg.envs.libm import libm_square
from evo_svpg.loop import train
from evo_svpg.novelty import NoveltyArchive
from evo_svpg.policy import PolicySpec
from evo_svpg.registry import FAST_PATHS
from evo_svpg.sampler import Sampler
from evo_svpg.svgd import svgd_direction

N_PARTICLES = 16


def _modules(spec: PolicySpec, theta: torch.Tensor) -> list[nn.Sequential]:
    """The same policies as ``nn.Sequential`` modules, for the naive sampler."""
    out = []
    for i in range(theta.shape[0]):
        layers: list[nn.Module] = []
        parts = spec.split(theta[i : i + 1])
        for k, (w, b) in enumerate(zip(parts[::2], parts[1::2], strict=True)):
            lin = nn.Linear(*w.shape[1:])
            lin.weight.data.copy_(w[0].T)
            lin.bias.data.copy_(b[0, 0])
            layers += [lin, nn.Tanh()] if k < len(spec.layer_sizes) - 1 else [lin]
        out.append(nn.Sequential(*layers))
    return out


def naive_sampler(spec: PolicySpec, theta: torch.Tensor, transitions: int) -> float:
    """Transitions/s of 16 envs stepped one at a time, one forward per step."""
    policies = _modules(spec, theta)
    envs = [gym.make("CartPole-v1") for _ in policies]
    obs = [env.reset(seed=i)[0] for i, env in enumerate(envs)]
    per_particle = transitions // len(policies)
    start = time.perf_counter()
    with torch.no_grad():
        for i, (env, policy) in enumerate(zip(envs, policies, strict=True)):
            for _ in range(per_particle):
                logits = policy(torch.as_tensor(obs[i]))
                action = torch.distributions.Categorical(logits=logits).sample().item()
                obs[i], _, term, trunc, _ = env.step(action)
                if term or trunc:
                    obs[i], _ = env.reset()
    return per_particle * len(policies) / (time.perf_counter() - start)


def batched_sampler(spec, theta, transitions: int, envs_per_particle: int, repeats: int):
    """Median transitions/s of :class:`Sampler` (one warm-up, then ``repeats`` timed runs)."""
    env = make_batched_env("CartPole-v1", N_PARTICLES * envs_per_particle, seed=0)
    sampler = Sampler(env, spec, N_PARTICLES, seed=0, random_streams="per-particle")
    steps_per_env = transitions // (N_PARTICLES * envs_per_particle)
    theta_np = theta.numpy()
    sampler.collect(theta_np, steps_per_env)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        sampler.collect(theta_np, steps_per_env)
        rates.append(
            steps_per_env * N_PARTICLES * envs_per_particle / (time.perf_counter() - start)
        )
    return statistics.median(rates), min(rates), max(rates)


def full_run(repeats: int, threads: int) -> list[float]:
    """Wall seconds of the paper's CartPole run (build + 50 iterations + outputs)."""
    walls = []
    for r in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            cfg = RunConfig(seed=r, threads=threads)
            run = build_run(cfg)
            out = Path(tmp)
            callbacks = [
                MetricsCSV(out),
                TensorBoardScalars(out),
                Checkpointer(out, 5),
                Summary(out),
            ]
            try:
                train(run, callbacks)
            finally:
                run.close()
            walls.append(time.perf_counter() - start)
            summary = json.loads((out / "summary.json").read_text())
            print(
                f"  (c) run {r}: {walls[-1]:.2f} s on {run.workers} worker(s) (the default), "
                f"final best particle return {summary['final_best_particle_return']:.1f}"
            )
    return walls


PAPER_ENVS = (
    "evo_svpg/CartpoleSwingup-v0",
    "evo_svpg/RllabCartpole-v0",
    "evo_svpg/DoublePendulum-v0",
)


def paper_env_sampling(transitions: int, repeats: int, envs_per_particle: int = 20) -> dict:
    """(i): median transitions/s of the sampler on each paper env and on CartPole-v1 (repeats
    interleaved so machine noise hits all alike), and µs per batched env step of 320 envs."""
    ids = ["CartPole-v1", *(env_id for env_id in PAPER_ENVS if env_id in FAST_PATHS)]
    samplers, thetas = {}, {}
    for env_id in ids:
        env = make_batched_env(env_id, N_PARTICLES * envs_per_particle, seed=0)
        spec = policy_spec_for(env, RunConfig(env=env_id))
        thetas[env_id] = spec.init_params(N_PARTICLES, torch.Generator().manual_seed(0)).numpy()
        samplers[env_id] = Sampler(env, spec, N_PARTICLES, seed=0, random_streams="per-particle")
    steps_per_env = transitions // (N_PARTICLES * envs_per_particle)
    rates: dict[str, list[float]] = {env_id: [] for env_id in ids}
    for r in range(repeats + 1):
        for env_id in ids:
            start = time.perf_counter()
            samplers[env_id].collect(thetas[env_id], steps_per_env)
            if r:  # the first round warms up
                rates[env_id].append(steps_per_env * N_PARTICLES * envs_per_particle
                                     / (time.perf_counter() - start))  # fmt: skip
    out = {env_id: {"sampler_steps_per_s": statistics.median(v)} for env_id, v in rates.items()}
    for env_id in ids:
        env = make_batched_env(env_id, 320, seed=0)
        env.reset()
        space = env.single_action_space
        act = (np.zeros(320, dtype=np.int64) if hasattr(space, "n")
               else np.zeros((320, *space.shape), dtype=np.float32))  # fmt: skip
        for _ in range(20):
            env.step(act)
        start = time.perf_counter()
        for _ in range(200):
            env.step(act)
        out[env_id]["step_320_us"] = (time.perf_counter() - start) / 200 * 1e6
    return out


def svgd_timing(n: int, d: int, reps: int = 200) -> float:
    """Median milliseconds of one ``svgd_direction`` call on float32 ``[n, d]``."""
    gen = torch.Generator().manual_seed(0)
    theta, score = torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen)
    for _ in range(10):
        svgd_direction(theta, score)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        svgd_direction(theta, score)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


class _Timed:
    """Wraps an operator or the evaluator and accumulates the seconds spent in it."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds = inner, 0.0

    def _timed(self, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - start

    def __call__(self, *args):
        return self._timed(self.inner, *args)

    def returns(self, theta):
        return self._timed(self.inner.returns, theta)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class _Keep(Callback):
    """Collects ``(seconds, env steps)`` of every iteration."""

    def __init__(self) -> None:
        self.records: list[tuple[float, int]] = []

    def on_iteration(self, run, record):
        self.records.append((record.seconds, record.iteration_env_steps))


def _side_by_side(cfgs: list[RunConfig], iterations: int, warmup: int = 1) -> list[list]:
    """Iterations of several runs interleaved one by one (so machine noise hits all alike)."""
    runs = [build_run(cfg) for cfg in cfgs]
    keeps = [_Keep() for _ in cfgs]
    for i in range(warmup + iterations):
        for run, keep in zip(runs, keeps, strict=True):
            run.config = run.config.replace(iterations=i + 1)
            train(run, [keep])
    return [keep.records[warmup:] for keep in keeps]


def cem_against_pure(env_id: str, iterations: int) -> dict:
    """(e): median seconds per cem iteration / per pure iteration of equal env steps.

    The pure run's steps per particle are set from the cem run's first iteration's env steps.
    """
    cem = RunConfig(mode="cem-per-particle", env=env_id, cem_candidates=8)
    (probe,) = _side_by_side([cem], 1, warmup=0)
    per_particle = max(20, round(probe[0][1] / cem.particles / 20) * 20)
    pure = RunConfig(mode="pure", env=env_id, steps_per_particle=per_particle)
    cem_its, pure_its = _side_by_side([cem, pure], iterations)
    cem_s = statistics.median(t for t, _ in cem_its)
    pure_s = statistics.median(t for t, _ in pure_its)
    return {
        "env": env_id, "cem_seconds": cem_s,
        "cem_env_steps": int(statistics.median(s for _, s in cem_its)),
        "pure_seconds": pure_s, "pure_env_steps": pure.particles * per_particle,
        "ratio": cem_s / pure_s,
    }  # fmt: skip


def cmaes_overhead(env_id: str, iterations: int) -> dict:
    """(f): share of a cmaes iteration spent in pycma, outside the evaluation's env stepping."""
    run = build_run(RunConfig(mode="cmaes-per-particle", env=env_id, iterations=iterations + 1))
    run.operators[-1] = op = _Timed(run.operators[-1])
    run.ctx.evaluator = evaluator = _Timed(run.ctx.evaluator)
    shares, walls = [], []

    class Share(Callback):
        def on_iteration(self, run, record):
            shares.append((op.seconds - evaluator.seconds) / record.seconds)
            walls.append(record.seconds)
            op.seconds = evaluator.seconds = 0.0

    train(run, [Share()])
    return {"env": env_id, "pycma_share": statistics.median(shares[1:]),
            "iteration_seconds": statistics.median(walls[1:])}  # fmt: skip


def extensions(results: dict, iterations: int) -> None:
    for env_id in ("CartPole-v1", "Pendulum-v1"):
        r = cem_against_pure(env_id, iterations)
        results.setdefault("cem_vs_pure", []).append(r)
        print(
            f"(e) {env_id}: cem-per-particle K=8 {r['cem_seconds']:.3f} s for "
            f"{r['cem_env_steps']:,} env steps; pure {r['pure_seconds']:.3f} s for "
            f"{r['pure_env_steps']:,}: ratio {r['ratio']:.2f} (target ≤ 1.3)", flush=True
        )  # fmt: skip
    for env_id in ("CartPole-v1", "Pendulum-v1"):
        r = cmaes_overhead(env_id, iterations)
        results.setdefault("cmaes_overhead", []).append(r)
        print(
            f"(f) {env_id}: pycma takes {r['pycma_share']:.1%} of a "
            f"{r['iteration_seconds']:.3f} s cmaes-per-particle iteration (target < 10 %)",
            flush=True,
        )


def novelty_timing(size: int = 100_000, dim: int = 3, reps: int = 15) -> dict:
    """(g): median milliseconds of the novelty archive's per-iteration work at ``size × dim``.

    Each repeat adds the population's 16 descriptors (the full ring overwrites its oldest, as in a
    long run), then times the KD-tree rebuild, the particle queries and the episode queries.
    """
    rng = np.random.default_rng(0)
    archive = NoveltyArchive(dim, k=10, max_size=size)
    archive.add(rng.random((size, dim)))
    names = ("build", "particles", "episodes_160", "episodes_800")
    times: dict[str, list[float]] = {name: [] for name in names}
    own = np.arange(N_PARTICLES)
    for r in range(reps + 1):  # the first repeat is a warm-up
        population = rng.random((N_PARTICLES, dim))
        archive.add(population)
        queries = {"particles": (population, own)}
        queries |= {f"episodes_{m}": (rng.random((m, dim)), None) for m in (160, 800)}
        start = time.perf_counter()
        archive.index()  # what the first novelty() after an add builds
        elapsed = {"build": time.perf_counter() - start}
        for name, (q, exclude) in queries.items():
            start = time.perf_counter()
            archive.novelty(q, population, exclude)
            elapsed[name] = time.perf_counter() - start
        if r:
            for name, seconds in elapsed.items():
                times[name].append(seconds)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def square_timing(n: int = 320, reps: int = 2000) -> dict:
    """(h): median microseconds of three ways to square ``n`` float64, and of env steps."""
    x = np.random.default_rng(0).uniform(-5, 5, n)
    two = np.full(n, 2.0)
    ways = {
        "libm_square": lambda: libm_square(x),
        "np_power": lambda: np.power(x, two),
        "x_times_x": lambda: x * x,
    }
    out = {name: 1e6 * _median_time(fn, reps) for name, fn in ways.items()}
    for env_id, discrete in (("CartPole-v1", True), ("Acrobot-v1", True), ("Pendulum-v1", False)):
        env = make_batched_env(env_id, n, seed=0)
        env.reset()
        rng = np.random.default_rng(1)
        n_actions = env.single_action_space.n if discrete else 0
        actions = (
            rng.integers(0, n_actions, n) if discrete else rng.uniform(-2, 2, (n, 1)).astype("f4")
        )
        out[f"step_{env_id}"] = 1e6 * _median_time(lambda env=env, a=actions: env.step(a), 300)
    return out


def _median_time(fn, reps: int, blocks: int = 7) -> float:
    """Median over ``blocks`` of the mean seconds per call over ``reps`` calls."""
    fn()
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - start) / reps)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transitions", type=int, default=160_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/benchmark"))
    parser.add_argument(
        "--threads", type=int, default=RunConfig().threads, help="gradient shard threads (c)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list("abcdefghijklm"),
        default=list("abcdefghijklm"),
        help="parts to run",
    )
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations in (e), (f)")
    args = parser.parse_args()
    set_threads(1)

    spec = PolicySpec(4, 2, True)
    theta = spec.init_params(N_PARTICLES, torch.Generator().manual_seed(0))
    results: dict = {"threads": args.threads, "transitions": args.transitions}

    if "a" in args.only or "b" in args.only:
        print(f"(a) naive sampler, {args.transitions:,} transitions ...", flush=True)
        naive = naive_sampler(spec, theta, args.transitions)
        results["naive_steps_per_s"] = naive
        print(f"  {naive:,.0f} transitions/s")
        for e in (20, 64):
            med, lo, hi = batched_sampler(spec, theta, args.transitions, e, args.repeats)
            results[f"batched_E{e}_steps_per_s"] = [med, lo, hi]
            print(
                f"(b) batched sampler, 16 particles × {e} envs: {med:,.0f} transitions/s "
                f"[{lo:,.0f} – {hi:,.0f}], {med / naive:,.0f}× naive"
            )
    if "c" in args.only:
        print("(c) full paper CartPole run (16 × 10,000 × 50, REINFORCE) ...", flush=True)
        walls = full_run(args.full_runs, args.threads)
        results["full_run_seconds"] = walls
        print(f"  median {statistics.median(walls):.2f} s over {len(walls)} runs")
    if "d" in args.only:
        results["svgd_ms"] = {}
        for n in (16, 64, 256):
            ms = svgd_timing(n, spec.n_params, reps=200 if n < 256 else 30)
            results["svgd_ms"][n] = ms
            print(f"(d) SVGD update n={n:3d}, d={spec.n_params}: {ms:.3f} ms (median)")
    if "e" in args.only or "f" in args.only:
        extensions(results, args.iterations)
    if "g" in args.only:
        ms = novelty_timing()
        results["novelty_ms"] = ms
        print(
            f"(g) novelty kNN: archive 100,000 × 3: build {ms['build']:.1f} ms; "
            f"{N_PARTICLES} particle queries {ms['particles']:.2f} ms; "
            f"160 episode queries {ms['episodes_160']:.2f} ms; "
            f"800 episode queries {ms['episodes_800']:.2f} ms; an iteration's build + 16 + 800 "
            f"{ms['build'] + ms['particles'] + ms['episodes_800']:.1f} ms "
            "(target: a population's queries < 50 ms)",
            flush=True,
        )

    if "h" in args.only:
        us = square_timing()
        results["squares_us"] = us
        print(
            f"(h) squares of 320 float64: libm_square {us['libm_square']:.1f} µs, np.power "
            f"{us['np_power']:.1f} µs, x*x {us['x_times_x']:.2f} µs; a step of 320 envs: "
            f"CartPole-v1 {us['step_CartPole-v1']:.0f} µs, Acrobot-v1 "
            f"{us['step_Acrobot-v1']:.0f} µs, Pendulum-v1 {us['step_Pendulum-v1']:.0f} µs",
            flush=True,
        )

    if "i" in args.only:
        paper = paper_env_sampling(args.transitions, args.repeats)
        results["paper_envs"] = paper
        base = paper["CartPole-v1"]["sampler_steps_per_s"]
        for env_id, r in paper.items():
            target = 0.5 if "DoublePendulum" in env_id else 0.8
            ratio = r["sampler_steps_per_s"] / base
            verdict = "" if env_id == "CartPole-v1" else (
                f", {ratio:.2f}× CartPole-v1 (target ≥ {target}×: "
                f"{'met' if ratio >= target else 'missed'})"
            )  # fmt: skip
            print(f"(i) sampler on {env_id}, 16 × 20 envs: {r['sampler_steps_per_s']:,.0f} "
                  f"transitions/s{verdict}; one step of 320 envs {r['step_320_us']:.0f} µs",
                  flush=True)  # fmt: skip

    if "j" in args.only:
        envs = ["CartPole-v1", *PAPER_ENVS]
        results["workers_sampler"] = sampler_with_workers(envs, args.transitions, args.repeats)
        naive = results.get("naive_steps_per_s")
        results["workers_full_run"] = full_run_workers(args.full_runs, naive)
    if "k" in args.only:
        results["population_scaling"] = population_scaling()
    if "l" in args.only:
        results["ray_against_local"] = ray_against_local(args.full_runs)
    if "m" in args.only:
        results["qd_with_workers"] = qd_with_workers(args.full_runs)

    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
