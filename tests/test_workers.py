"""Particle shards on worker processes: the same metrics for any N, checkpoints across N, faults."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_svpg.callbacks import Callback
from evo_svpg.cli import main
from evo_svpg.config import RunConfig
from evo_svpg.engine import AUTO_WORKERS_MIN_STEPS, build_run
from evo_svpg.evaluation import Evaluator
from evo_svpg.loop import train
from evo_svpg.shard_state import merge_states, reindex_state, shard_bounds, split_state
from evo_svpg.workers import WorkerError

SMALL = {"particles": 4, "steps_per_particle": 400, "envs_per_particle": 4, "hidden_sizes": (16,)}


def _trajectory(workers: int, **keys) -> list[tuple]:
    """Per iteration: each particle's returns, ∇J norms, the parameters, the scalars, the env
    steps and the operators' arrays (the QD records)."""
    run = build_run(RunConfig(**{**SMALL, "iterations": 3, **keys, "workers": workers}))
    assert run.workers == workers
    seen = []

    class Keep(Callback):
        def on_iteration(self, run, record):
            params = run.state.params.clone()
            arrays = {k: v for op in run.operators if hasattr(op, "arrays")
                      for k, v in op.arrays().items()}  # QD: grids, visitation  # fmt: skip
            seen.append((record.return_mean, record.episodes, record.grad_norm, params,
                         dict(record.scalars), record.env_steps, arrays))  # fmt: skip

    try:
        train(run, [Keep()])
    finally:
        run.close()
    return seen


def _assert_same(a: list[tuple], b: list[tuple]) -> None:
    for it, (x, y) in enumerate(zip(a, b, strict=True), start=1):
        np.testing.assert_array_equal(x[0], y[0], err_msg=f"returns, iteration {it}")
        np.testing.assert_array_equal(x[1], y[1], err_msg=f"episodes, iteration {it}")
        np.testing.assert_array_equal(x[2], y[2], err_msg=f"grad norms, iteration {it}")
        assert torch.equal(x[3], y[3]), f"params, iteration {it}"
        np.testing.assert_equal(x[4], y[4], err_msg=f"scalars, iteration {it}")  # NaN == NaN
        assert x[5] == y[5], f"env steps, iteration {it}"
        np.testing.assert_equal(x[6], y[6], err_msg=f"operator arrays, iteration {it}")


@pytest.mark.parametrize(
    ("keys", "workers"),
    [
        ({}, 2),  # pure SVPG, REINFORCE, CartPole
        ({"estimator": "a2c", "env": "Pendulum-v1"}, 3),  # shards of 1, 2, 1: critics
        ({"mode": "independent", "estimator": "linear-baseline", "sampling": "whole-episodes"}, 2),
        ({"mode": "select", "select_every": 1, "estimator": "a2c"}, 3),  # clones across workers
        ({"mode": "cem-per-particle"}, 2),  # candidates evaluated on the workers
        ({"mode": "erl", "env": "Pendulum-v1"}, 3),  # ERL's actors too, 3 shares
        # Behaviours described on the workers, novelty's episode signal sent back to them:
        ({"mode": "novelty", "env": "evo_svpg/MountainCarSparse-v0", "max_episode_steps": 150}, 3),
        ({"mode": "select-novelty", "select_every": 1, "env": "MountainCar-v0"}, 2),
        # Episodes ending at different steps: the merged behaviours' order matters here
        ({"mode": "novelty-reward", "env": "CartPole-v1"}, 3),
        # QD records: grid, visitation, the training and CEM candidates' descriptors and the
        # deterministic success tests, all gathered from the workers:
        ({"mode": "cem-per-particle", "env": "evo_svpg/MountainCarSparse-v0", "qd_every": 1}, 3),
        (
            {
                "mode": "novelty-reward",
                "env": "MountainCarContinuous-v0",
                "qd_every": 2,
                "max_episode_steps": 120,
            },
            2,
        ),
    ],
    ids=[
        "pure",
        "a2c-pendulum",
        "whole-episodes",
        "select-a2c",
        "cem",
        "erl",
        "novelty",
        "select-novelty",
        "novelty-reward-cartpole",
        "cem-qd",
        "novelty-reward-qd",
    ],
)
def test_a_run_computes_the_same_with_any_number_of_workers(keys, workers):
    _assert_same(_trajectory(1, **keys), _trajectory(workers, **keys))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "CartPole-v0"])
@pytest.mark.filterwarnings("ignore:.*CartPole-v0 is out of date")
def test_an_evaluation_split_over_workers_is_the_evaluation_in_one_batch(env_id):
    """Candidates 0-1 and 2-4 evaluated apart (and an empty share) get the episodes all five
    get together, call after call (CartPole-v0: the generic gymnasium path)."""
    run = build_run(RunConfig(**SMALL, env=env_id, workers=1))
    theta = run.spec.init_params(5, torch.Generator().manual_seed(1)).numpy()
    keys = {"episodes": 2, "seed": 9, "random_streams": "per-particle", "max_episode_steps": 60}
    whole = Evaluator(env_id, run.spec, **keys)
    workers = [Evaluator(env_id, run.spec, **keys) for _ in range(3)]  # one per worker
    bounds = [(0, 2), (2, 5), (5, 5)]
    for _ in range(3):
        one = whole.episodes_of(theta)
        pairs = zip(workers, bounds, strict=True)
        shares = [w.episodes_of(theta[a:b], first=a) for w, (a, b) in pairs]
        np.testing.assert_array_equal(one.returns, np.concatenate([r.returns for r in shares]))
        np.testing.assert_array_equal(
            one.terminated, np.concatenate([r.terminated for r in shares])
        )
        assert one.steps == sum(r.steps for r in shares)
    assert [w.state_dict() for w in workers] == [whole.state_dict()] * 3 == [{"calls": 3}] * 3


@pytest.mark.parametrize(
    "mode_flags",
    [
        ["--estimator", "a2c"],
        # the describers' running episodes, the novelty archive and the QD records and tester
        ["--mode", "novelty", "--env", "evo_svpg/MountainCarSparse-v0", "--qd-every", "1",
         "--max-episode-steps", "150"],
    ],
    ids=["a2c", "novelty-qd"],
)  # fmt: skip
def test_checkpoints_resume_with_another_number_of_workers(tmp_path, mode_flags):
    """Two iterations on 2 workers, resumed on 3, then on 1: metrics.csv and scalars.csv (and
    qd.npz) are those of an uninterrupted one-process run."""
    flags = ["--particles", "4", "--steps-per-particle", "400", "--envs-per-particle", "4",
             "--hidden-sizes", "16", "--checkpoint-every", "1", *mode_flags]  # fmt: skip
    one, split = tmp_path / "one", tmp_path / "split"
    run = lambda *args: main(["run", *map(str, args)])  # noqa: E731
    assert run(*flags, "--iterations", "4", "--workers", "1", "--out", one) == 0
    assert run(*flags, "--iterations", "2", "--workers", "2", "--out", split) == 0
    assert run("--resume", split, "--iterations", "3", "--workers", "3") == 0
    assert run("--resume", split, "--iterations", "4", "--workers", "1") == 0
    for name in ("metrics.csv", "scalars.csv"):
        assert (one / name).read_bytes() == (split / name).read_bytes(), name
    if "--qd-every" in mode_flags:
        with np.load(one / "qd.npz") as a, np.load(split / "qd.npz") as b:
            np.testing.assert_equal(dict(a), dict(b))


def _cli(*args, check: bool = True, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "evo_svpg.cli", "run", *map(str, args)]
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"mode": "joint", "workers": 2}, r"workers=2 but mode='joint' has 1 policy"),
        ({"workers": 5}, r"workers=5 .* use workers <= 4"),
        ({"workers": 2, "random_streams": "shared"}, r"needs random_streams='per-particle'"),
    ],
)
def test_a_run_that_cannot_be_sharded_so_is_refused_with_the_reason(keys, message):
    with pytest.raises(ValueError, match=message):
        build_run(RunConfig(**{**SMALL, **keys}))


def test_auto_workers_shard_only_large_iterations():
    small = build_run(RunConfig(**SMALL))  # 1,600 steps an iteration: one process
    assert small.workers == 1
    assert small.pool is None
    big = RunConfig(particles=2, steps_per_particle=AUTO_WORKERS_MIN_STEPS // 2, hidden_sizes=(4,))
    run = build_run(big)
    try:
        assert run.workers == min(2, len(os.sched_getaffinity(0)))
        assert (run.pool is not None) == (run.workers > 1)
    finally:
        run.close()
    shared = build_run(big.replace(random_streams="shared"))
    assert shared.workers == 1


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), workers=st.integers(1, 8))
def test_shard_bounds_cover_the_population_in_near_equal_parts(n, workers):
    workers = min(workers, n)
    bounds = shard_bounds(n, workers)
    assert [b.start for b in bounds[1:]] == [b.stop for b in bounds[:-1]]
    assert bounds[0].start == 0
    assert bounds[-1].stop == n
    sizes = [b.stop - b.start for b in bounds]
    assert max(sizes) - min(sizes) <= 1
    assert min(sizes) >= 1


def test_an_address_needs_the_ray_backend_and_a_host_and_port():
    with pytest.raises(ValueError, match=r"address='10.0.0.1:6379' .* needs backend='ray'"):
        RunConfig(address="10.0.0.1:6379")
    with pytest.raises(ValueError, match=r"address='head' is not a Ray address: give HOST:PORT"):
        RunConfig(backend="ray", address="head")


def test_a_worker_error_names_the_worker_and_leaves_the_pool_in_step():
    run = build_run(RunConfig(**SMALL, workers=2, estimator="a2c"))
    try:
        good = run.pool.call("estimator_state")
        with pytest.raises(WorkerError, match=r"worker 0 \(particles 0-1\) raised"):
            run.pool.call("load_estimator", [{"no such key": 1}, good[1]])
        assert run.pool.call("ready") == [p.pid for p in run.pool.processes]
    finally:
        run.close()


def test_states_merge_split_and_reindex_by_rows():
    state = {
        "critic": torch.arange(12.0).reshape(4, 3),
        "coeffs": np.arange(8.0).reshape(4, 2),
        "step": torch.tensor(5.0),
        "generator": torch.zeros(7, dtype=torch.uint8),
        "groups": [{"lr": 0.1, "params": [0]}],
    }
    bounds = [slice(0, 1), slice(1, 4)]
    parts = [split_state(state, 4, b) for b in bounds]
    assert parts[1]["critic"].shape == (3, 3)
    assert parts[1]["step"] is not state["step"]
    merged = merge_states(parts, [1, 3])
    assert torch.equal(merged["critic"], state["critic"])
    assert merged["groups"] == state["groups"]
    np.testing.assert_array_equal(merged["coeffs"], state["coeffs"])
    cloned = reindex_state(merged, 4, np.array([2, 2, 0, 3]))
    assert torch.equal(cloned["critic"], state["critic"][[2, 2, 0, 3]])
    assert torch.equal(cloned["step"], state["step"])
    parts[1]["step"] = torch.tensor(6.0)
    with pytest.raises(ValueError, match=r"state\.step: shard 1 holds"):
        merge_states(parts, [1, 3])


# -- faults --------------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out |= {int(c) for c in (task / "children").read_text().split()}
    return out


def _workers_of(pid: int) -> set[int]:
    found = set()
    for child in _children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            found.add(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("psm_*")}


def _start(out: Path, iterations: int = 400) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "evo_svpg.cli", "run", "--particles", "4",
           "--steps-per-particle", "800", "--envs-per-particle", "4", "--hidden-sizes", "16",
           "--checkpoint-every", "1", "--workers", "2", "--iterations", str(iterations),
           "--out", str(out)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def _wait_for_checkpoint(proc: subprocess.Popen, out: Path) -> set[int]:
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.1)
    workers = _workers_of(proc.pid)
    assert len(workers) == 2, workers
    return workers


def _gone(pids: set[int], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_killed_worker_stops_the_run_naming_it_and_resume_continues(tmp_path):
    before = _segments()
    out = tmp_path / "run"
    proc = _start(out, iterations=400)
    workers = _wait_for_checkpoint(proc, out)
    victim = max(workers)
    os.kill(victim, signal.SIGKILL)
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f"(pid {victim}, particles" in err, err
    assert "killed by signal SIGKILL" in err, err
    assert f"continue: evo-svpg run --resume {out}" in stdout, (stdout, err)
    assert _gone(workers)
    assert _segments() <= before
    kept = int(re.findall(r"iteration (\d+)", stdout)[-1])  # the checkpoint's iteration
    resumed = _cli("--resume", out, "--iterations", kept + 2, "--workers", "1")
    assert f"done: {kept + 2} iterations" in resumed.stdout


def test_killing_the_learner_leaves_no_worker_and_no_shared_memory(tmp_path):
    before = _segments()
    proc = _start(tmp_path / "run")
    workers = _wait_for_checkpoint(proc, tmp_path / "run")
    proc.kill()  # SIGKILL: no cleanup code of the learner runs
    proc.communicate(timeout=30)
    assert _gone(workers), "workers outlived their learner"
    deadline = time.monotonic() + 20  # the resource tracker unlinks what the learner left
    while not _segments() <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _segments() <= before


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_to_the_group_stops_at_an_iteration_end_and_cleans_up(tmp_path, stop, code):
    """A terminal's Ctrl-C and a batch system's SIGTERM reach every process of the group: the
    workers must leave the stop to the learner, which saves the iteration and stops them."""
    before = _segments()
    out = tmp_path / "run"
    proc = _start(out)
    workers = _wait_for_checkpoint(proc, out)
    os.killpg(proc.pid, stop)
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "saved after iteration" in stdout, stdout
    assert "continue: evo-svpg run --resume" in stdout, stdout
    assert _gone(workers)
    assert _segments() <= before


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_merged_shard_behaviours_are_one_process_behaviours(data):
    """Episodes that end at random steps in random envs, described by shards of particles and
    merged: the one-process behaviours, in np.nonzero(done [T, n·E]) order."""
    from evo_svpg.behaviour import Behaviours
    from evo_svpg.sharded import merge_behaviours

    t_max, n, e = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 5)), 2
    seed = data.draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    done = rng.random((t_max, n * e)) < 0.4
    t_idx, slot = np.nonzero(done)
    k = t_idx.size

    def behaviours(keep: np.ndarray, rows: slice) -> Behaviours:
        shift = rows.start
        return Behaviours(
            descriptors=desc[keep], step=t_idx[keep], particle=slot[keep] // e - shift,
            env=slot[keep] % e, returns=ret[keep], partial=partial[rows],
            partial_valid=valid[rows], partial_returns=partial_ret[rows], bounds=[(0.0, 1.0)],
        )  # fmt: skip

    desc, ret = rng.random((k, 1)), rng.random(k)
    partial, valid, partial_ret = (
        rng.random((n, e, 1)),
        rng.random((n, e)) < 0.5,
        rng.random((n, e)),
    )
    whole = behaviours(np.ones(k, dtype=bool), slice(0, n))
    bounds = shard_bounds(n, data.draw(st.integers(1, n)))
    parts = [behaviours((slot // e >= b.start) & (slot // e < b.stop), b) for b in bounds]
    merged = merge_behaviours(parts, [b.start for b in bounds])
    for name in ("descriptors", "step", "particle", "env", "returns", "partial",
                 "partial_valid", "partial_returns"):  # fmt: skip
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name), err_msg=name)
