"""The Ray backend on a local Ray: the metrics of local workers, and a lost actor named."""

from __future__ import annotations

import os
import signal

import pytest
from test_workers import SMALL, _assert_same, _trajectory

from evo_svpg.config import RunConfig
from evo_svpg.engine import build_run
from evo_svpg.loop import run_iteration
from evo_svpg.workers import WorkerDied

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")


@pytest.mark.parametrize(
    "keys",
    [
        {"estimator": "a2c", "mode": "select", "select_every": 1},
        {
            "mode": "novelty-reward",
            "env": "evo_svpg/MountainCarSparse-v0",
            "qd_every": 1,
            "max_episode_steps": 150,
        },  # behaviours, the episode signal and the QD tests on Ray
    ],
    ids=["select-a2c", "novelty-qd"],
)
def test_ray_actors_compute_what_local_workers_compute(keys):
    _assert_same(_trajectory(2, **keys), _trajectory(2, backend="ray", **keys))
    assert not ray.is_initialized()  # the run stopped the local Ray it started


def test_a_lost_ray_actor_stops_the_run_naming_it():
    run = build_run(RunConfig(**SMALL, iterations=3, workers=2, backend="ray"))
    try:
        run_iteration(run)
        pids = run.pool.call("ready")
        os.kill(pids[1], signal.SIGKILL)
        with pytest.raises(WorkerDied, match=r"ray worker 1 \(particles 2-3\) died"):
            run_iteration(run)
    finally:
        run.close()
    assert not ray.is_initialized()


def test_a_sweep_on_a_local_ray_computes_what_a_local_sweep_does(tmp_path):
    from test_sweep import BASE, _outputs, _spec, _sweep

    spec = _spec(tmp_path, "seeds = [0, 1]\n" + BASE + '[grid]\nmode = ["pure"]\n')
    for backend in ("local", "ray"):
        proc = _sweep(spec, tmp_path / backend, "--jobs", "2", "--backend", backend)
        stdout, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, stdout
        assert f"{backend} backend" in stdout
    assert _outputs(tmp_path / "ray") == _outputs(tmp_path / "local")
    assert len(_outputs(tmp_path / "ray")) == 4  # 2 runs × metrics and scalars


def test_a_tune_study_on_a_local_ray_computes_what_a_local_one_does(tmp_path):
    from test_sweep import _spec
    from test_tune import SPEC, _trials

    from evo_svpg.cli import main

    spec = _spec(tmp_path, SPEC)
    for backend in ("local", "ray"):
        out = tmp_path / backend
        assert main(["tune", str(spec), "--trials", "1", "--out", str(out), "--jobs", "2",
                     "--backend", backend]) == 0  # fmt: skip
    local, on_ray = _trials(tmp_path / "local")[0], _trials(tmp_path / "ray")[0]
    assert on_ray.params == local.params
    assert on_ray.value == local.value
    assert on_ray.intermediate_values == local.intermediate_values
    assert not ray.is_initialized()  # the study stopped the Ray it started
