"""The comparison runners' statistics, curve alignment and flag checks, and (slow) tiny runs."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "runners"))

import paper_table1  # noqa: E402
from _common import (  # noqa: E402
    RESERVED,
    bootstrap_median_ci,
    check_existing_runs,
    extra_flag_collision,
    launch,
)

from evo_svpg.cli import config_of_flags  # noqa: E402
from evo_svpg.plot import curves_on_grid, run_window  # noqa: E402
from evo_svpg.report import final_training_returns  # noqa: E402
from evo_svpg.rundir import RunLock  # noqa: E402


def test_a_run_killed_before_its_first_checkpoint_is_moved_aside_and_started_again(tmp_path):
    run = tmp_path / "pure" / "seed0"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"config": {}}')
    (run / "metrics.csv").write_text(
        "iteration,particle,return_mean,episodes,env_steps\n1,0,9,1,40\n"
    )
    flags = ["--particles", "2", "--steps-per-particle", "40", "--envs-per-particle", "2",
             "--hidden-sizes", "8", "--iterations", "2", "--final-eval-episodes", "1"]  # fmt: skip
    launch(run, flags)
    aside = [p for p in run.parent.iterdir() if p.name.startswith("seed0.unresumable-")]
    assert len(aside) == 1
    assert (aside[0] / "metrics.csv").read_text().endswith("1,0,9,1,40\n")  # kept as it was
    assert (run / "summary.json").exists()  # the new run finished


def test_a_run_killed_before_its_first_iteration_is_moved_aside_too(tmp_path):
    run = tmp_path / "pure" / "seed0"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"config": {}}')  # killed before metrics.csv was made
    flags = ["--particles", "2", "--steps-per-particle", "40", "--envs-per-particle", "2",
             "--hidden-sizes", "8", "--iterations", "1", "--final-eval-episodes", "1"]  # fmt: skip
    launch(run, flags)
    assert [p.name.split("-")[0] for p in run.parent.glob("seed0.unresumable-*")] == [
        "seed0.unresumable"
    ]
    assert (run / "summary.json").exists()


def _saved_run(out: Path, mode: str, seed: int, flags: list[str]) -> None:
    """A run directory's config.json as `evo-svpg run` writes it (no training needed)."""
    cfg = config_of_flags(["--mode", mode, "--seed", str(seed), *flags])
    (out / mode / f"seed{seed}").mkdir(parents=True)
    (out / mode / f"seed{seed}" / "config.json").write_text(json.dumps({"config": cfg.to_nested()}))


def test_runs_made_with_another_setting_are_refused_naming_what_differs(tmp_path):
    _saved_run(tmp_path, "pure", 0, ["--bandwidth", "svgd", "--threads", "2"])
    _saved_run(tmp_path, "independent", 0, ["--bandwidth", "svgd"])  # unused by independent
    both = ["pure", "independent"]
    check_existing_runs(tmp_path, both, 2, None, lambda m, s: ["--bandwidth", "svgd"])  # same
    check_existing_runs(tmp_path, ["independent"], 1, None, lambda m, s: [])  # unused differs
    with pytest.raises(SystemExit, match=r"pure/seed0: svgd.bandwidth = 'svgd' there, "
                                         r"'svpg_code' now"):  # fmt: skip
        check_existing_runs(tmp_path, both, 1, None, lambda m, s: [])  # the default changed
    alpha = ["--bandwidth", "svgd", "--alpha", "3"]
    with pytest.raises(SystemExit, match=r"seed0: svgd.alpha = 10.0 there, 3.0 now"):
        check_existing_runs(tmp_path, ["pure"], 1, None, lambda m, s: alpha)
    with pytest.raises(SystemExit, match=r"budget = 0 there, 1000 now"):
        check_existing_runs(tmp_path, ["independent"], 1, 1000, lambda m, s: [])


def test_bootstrap_interval_of_the_median():
    assert bootstrap_median_ci(np.full(5, 3.0)) == (3.0, 3.0, 3.0)
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    median, low, high = bootstrap_median_ci(values)
    assert median == 3.0
    # The median of 5 resampled values is the outlier when >= 3 draws are: P = 0.058 > 2.5 %,
    # so with 5 seeds the 95 % interval reaches the extremes; with 21 values it does not.
    assert (low, high) == (1.0, 100.0)
    median, low, high = bootstrap_median_ci(np.arange(21.0))
    assert median == 10.0
    assert 5.0 <= low < 10.0 < high <= 15.0
    nan_ignored = bootstrap_median_ci(np.array([np.nan, 2.0, 2.0]))
    assert nan_ignored == (2.0, 2.0, 2.0)
    assert all(np.isnan(bootstrap_median_ci(np.array([np.nan]))))


def _metrics(run_dir: Path, rows: list[tuple], window: int | None = None) -> Path:
    """A hand-made run: ``metrics.csv`` rows ``(iteration, particle, return_mean, episodes,
    env_steps)``, and a ``config.json`` with the pooling window if one is given."""
    run_dir.mkdir(parents=True)
    lines = ["iteration,particle,return_mean,episodes,env_steps"]
    lines += [",".join(str(v) for v in row) for row in rows]
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    if window is not None:
        config = {"config": {}, "resolved": {"pooling_window": window}}
        (run_dir / "config.json").write_text(json.dumps(config))
    return run_dir


NAN = float("nan")
ROWS = [(1, 0, 10, 1, 100), (1, 1, 20, 1, 100), (2, 0, 30, 1, 250), (2, 1, NAN, 0, 250),
        (3, 0, NAN, 0, 400), (3, 1, NAN, 0, 400)]  # fmt: skip


def test_curves_on_a_common_env_step_grid_hold_the_last_value(tmp_path):
    grid = np.array([50, 100, 200, 250, 1000])
    curves = curves_on_grid([_metrics(tmp_path / "a", ROWS)], grid)  # window 1: no config.json
    np.testing.assert_array_equal(curves["best"][0], [NAN, 20, 20, 30, 30])
    np.testing.assert_array_equal(curves["mean"][0], [NAN, 15, 15, 30, 30])
    np.testing.assert_array_equal(curves["episode_mean"][0], [NAN, 15, 15, 30, 30])


def test_curves_on_the_grid_pool_each_particle_over_the_runs_window(tmp_path):
    curves = curves_on_grid([_metrics(tmp_path / "b", ROWS, window=2)], np.array([100, 250, 400]))
    # Iteration 2 pools 1-2: particle 0 (10 + 30) / 2, particle 1 its one episode, 20;
    # iteration 3 pools 2-3: only particle 0's episode of iteration 2 (30).
    np.testing.assert_array_equal(curves["best"][0], [20, 20, 30])
    np.testing.assert_array_equal(curves["mean"][0], [15, 20, 30])
    np.testing.assert_array_equal(curves["episode_mean"][0], [15, 20, 30])


def _sawtooth(run_dir: Path, window: int) -> Path:
    """40 iterations of 25 env steps. Particle 0 ends 2 short episodes every iteration (mean
    return = the iteration); particle 1's long failing episodes end only in even iterations
    (-30 at multiples of 4, else -50), so in odd iterations its value is missing."""
    rows = []
    for i in range(1, 41):
        rows.append((i, 0, float(i), 2, 25 * i))
        rows.append((i, 1, (-30.0 if i % 4 == 0 else -50.0) if i % 2 == 0 else NAN, 1 - i % 2,
                     25 * i))  # fmt: skip
    return _metrics(run_dir, rows, window=window)


def _final(run: Path, budget: int = 0) -> dict:
    """summary.json's final-window numbers (evo_svpg.report) of the run in ``run``."""
    return final_training_returns(run, run_window(run), budget)


def test_final_returns_pool_each_particles_episodes_over_the_final_window(tmp_path):
    # Budget 1000: the last 10 % are iterations 37-40 (env steps 925 to 1000).
    final = _final(_sawtooth(tmp_path / "w2", window=2), 1000)
    p0 = (37 + 38 + 39 + 40) / 4  # 2 episodes each iteration
    p1 = (-50 - 30) / 2  # its episodes ended in iterations 38 and 40
    assert final["final_window_iterations"] == [37, 40]
    assert final["final_particle_returns"] == [p0, p1]
    assert final["final_best_particle_return"] == p0 == 38.5
    assert final["final_mean_particle_return"] == (p0 + p1) / 2 == -0.75
    assert final["final_episode_mean_return"] == pytest.approx((2 * (37 + 38 + 39 + 40) - 80) / 10)
    assert final["final_window_episodes"] == 10
    # The old statistic, the per-iteration mean particle averaged over the iterations, counts
    # particle 1 only in the even ones: (37 + (38 - 50) / 2 + 39 + (40 - 30) / 2) / 4 = 18.75.
    assert final["final_mean_particle_return"] != 18.75
    # Without a budget: the last 10 % of the env steps the run spent (here the same).
    assert _final(tmp_path / "w2")["final_mean_particle_return"] == -0.75


def test_final_returns_cover_at_least_the_runs_pooling_window(tmp_path):
    final = _final(_sawtooth(tmp_path / "w6", window=6), 1000)
    assert final["final_window_iterations"] == [35, 40]
    p0, p1 = (35 + 36 + 37 + 38 + 39 + 40) / 6, (-30 - 50 - 30) / 3
    assert final["final_particle_returns"] == pytest.approx([p0, p1])
    assert final["final_mean_particle_return"] == pytest.approx((p0 + p1) / 2)


def test_extra_flags_that_collide_with_the_runners_own_are_named():
    for extra, token, flag in [
        (["--seed=7"], "--seed=7", "--seed"),
        (["--particles", "2", "--seed", "7"], "--seed", "--seed"),
        (["--iter=3"], "--iter=3", "--iterations"),  # `evo-svpg run` expands abbreviations
        (["--budg", "5"], "--budg", "--budget"),
        (["--threads", "1"], "--threads", "--threads"),
        (["--out=x"], "--out=x", "--out"),
    ]:
        problem = extra_flag_collision(extra, RESERVED)
        assert (
            problem
            == f"extra run flag {token} collides with the runner's own {flag}: " + (RESERVED[flag])
        )
    assert "--seeds N runs seeds 0..N-1" in extra_flag_collision(["--seed=7"], RESERVED)
    # Other flags, their values, and ambiguous prefixes (which `evo-svpg run` refuses) pass.
    other = ["--particles", "2", "--env", "Pendulum-v1", "--s", "--bandwidth=svpg_code", "-5"]
    assert extra_flag_collision(other, RESERVED) is None


TINY_TABLE1 = ["--seeds", "1", "--iterations", "5", "--estimators", "reinforce", "--envs",
               "swing-up", "--tabulate-only"]  # fmt: skip


def test_a_second_runner_into_the_same_out_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = RunLock(out, "runner")
    try:
        with pytest.raises(SystemExit) as exc:
            paper_table1.main([*TINY_TABLE1, "--out", str(out)])
    finally:
        holder.release()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"{out} is in use by another runner (pid " in err, err
    assert err.count("\n") == 1, err
    assert not (out / "runner.json").exists()


def test_an_out_made_with_other_settings_is_refused_after_the_flags_are_checked(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    saved = {"iterations": 1000, "steps_per_particle": 10000, "particles": 16, "extra": []}
    (out / "runner.json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit) as exc:  # a bad flag: its message, not the settings'
        paper_table1.main(["--iterations", "0", "--out", str(out)])
    assert exc.value.code == 2
    assert "--iterations 0: must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # good flags, other settings: refused, nothing run
        paper_table1.main([*TINY_TABLE1, "--out", str(out)])
    assert "holds runs made with other settings (iterations: [1000] there, [5] now)" in str(
        exc.value.code
    )
    assert json.loads((out / "runner.json").read_text()) == saved
    assert sorted(p.name for p in out.iterdir()) == [".lock", "runner.json"]
    # The lock was released: the runner can take the directory again.
    RunLock(out, "runner").release()
