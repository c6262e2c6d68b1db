"""The comparison runners' statistics, curve alignment and flag checks, and (slow) tiny runs."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "runners"))

import cartpole_baselines  # noqa: E402
import compare_modes  # noqa: E402
import qd_mountaincar  # noqa: E402
from _common import (  # noqa: E402
    RESERVED,
    bootstrap_median_ci,
    check_existing_runs,
    extra_flag_collision,
    final_returns,
    launch,
)

from evo_svpg.cli import config_of_flags  # noqa: E402
from evo_svpg.plot import curves_on_grid  # noqa: E402
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


def test_final_returns_pool_each_particles_episodes_over_the_final_window(tmp_path):
    # Budget 1000: the last 10 % are iterations 37-40 (env steps 925 to 1000).
    final = final_returns(_sawtooth(tmp_path / "w2", window=2), 1000)
    p0 = (37 + 38 + 39 + 40) / 4  # 2 episodes each iteration
    p1 = (-50 - 30) / 2  # its episodes ended in iterations 38 and 40
    assert final["window_iterations"] == [37, 40]
    assert final["particle_returns"] == [p0, p1]
    assert final["best"] == p0 == 38.5
    assert final["mean"] == (p0 + p1) / 2 == -0.75
    assert final["episode_mean"] == pytest.approx((2 * (37 + 38 + 39 + 40) - 80) / 10)
    assert (final["iterations"], final["env_steps"], final["episodes"]) == (40, 1000, 10)
    # The old statistic, the per-iteration mean particle averaged over the iterations, counts
    # particle 1 only in the even ones: (37 + (38 - 50) / 2 + 39 + (40 - 30) / 2) / 4 = 18.75.
    assert final["mean"] != 18.75
    # Without a budget: the last 10 % of the env steps the run spent (here the same).
    assert final_returns(tmp_path / "w2")["mean"] == -0.75


def test_final_returns_cover_at_least_the_runs_pooling_window(tmp_path):
    final = final_returns(_sawtooth(tmp_path / "w6", window=6), 1000)
    assert final["window_iterations"] == [35, 40]
    p0, p1 = (35 + 36 + 37 + 38 + 39 + 40) / 6, (-30 - 50 - 30) / 3
    assert final["particle_returns"] == pytest.approx([p0, p1])
    assert final["mean"] == pytest.approx((p0 + p1) / 2)


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


COMPARE = ["--budget", "4000", "--modes", "pure"]
CASES = [  # runner, flags (besides --out), what stderr says
    (compare_modes, [*COMPARE, "--seeds", "0"], "--seeds 0: must be >= 1 (runs seeds 0..N-1)"),
    (compare_modes, [*COMPARE, "--jobs", "0"], "--jobs 0: must be >= 1 (runs at a time)"),
    (compare_modes, ["--budget", "0"], "--budget 0: must be >= 1 (env steps per run)"),
    (compare_modes, ["--budget", "9", "--modes"], "--modes (none given): name at least one mode"),
    (compare_modes, [*COMPARE, "pure"], "--modes pure pure: each mode once"),
    (compare_modes, [*COMPARE, "--", "--seed=7"], "--seed=7 collides with the runner's own --seed"),
    (compare_modes, [*COMPARE, "--", "--seed", "7"], "own --seed: --seeds N runs seeds 0..N-1"),
    (compare_modes, [*COMPARE, "--", "--mode", "erl"], "own --mode: --modes M"),
    (compare_modes, [*COMPARE, "--", "--budget", "9"], "own --budget: the runner's --budget"),
    (compare_modes, [*COMPARE, "--", "--out", "x"], "own --out: the runner's --out holds"),
    (compare_modes, [*COMPARE, "--", "--resume=x"], "own --resume: re-run the runner"),
    (compare_modes, [*COMPARE, "--", "--config", "a.toml"], "own --config"),
    (compare_modes, [*COMPARE, "--", "--iterations", "3"], "own --iterations"),
    (compare_modes, [*COMPARE, "--", "--threads", "1"], "own --threads"),
    (compare_modes, [*COMPARE, "--", "--env", "Acrobot-v1"], "own --env: the runner's --env"),
    (qd_mountaincar, [*COMPARE, "--seeds", "-1"], "--seeds -1: must be >= 1"),
    (qd_mountaincar, [*COMPARE, "--jobs", "0"], "--jobs 0: must be >= 1"),
    (qd_mountaincar, ["--budget", "0"], "--budget 0: must be >= 1"),
    (qd_mountaincar, ["--budget", "9", "--modes"], "--modes (none given)"),
    (qd_mountaincar, [*COMPARE, "--", "--seed", "1"], "own --seed: --seeds N"),
    (qd_mountaincar, [*COMPARE, "--", "--env=x"], "own --env: the runner runs the discrete task"),
    (qd_mountaincar, [*COMPARE, "--", "--steps-per-particle", "400"], "own --steps-per-particle"),
    (qd_mountaincar, [*COMPARE, "--", "--envs-per-particle=4"], "own --envs-per-particle"),
    (qd_mountaincar, [*COMPARE, "--", "--alpha", "1"], "own --alpha: the runner's --alpha A"),
    (qd_mountaincar, [*COMPARE, "--", "--qd-every", "2"], "own --qd-every"),
    (qd_mountaincar, [*COMPARE, "--alpha", "0"], "alpha=0.0 must be a finite number > 0"),
    (cartpole_baselines, ["--seeds", "0"], "--seeds 0: must be >= 1"),
    (cartpole_baselines, ["--jobs", "-2"], "--jobs -2: must be >= 1"),
    (cartpole_baselines, ["--modes"], "--modes (none given)"),
    (cartpole_baselines, ["--", "--seed=7"], "own --seed: --seeds N"),
    (cartpole_baselines, ["--", "--iterations", "5"], "own --iterations: runs last the seed's 50"),
    (cartpole_baselines, ["--", "--budget", "5"], "own --budget: runs last the seed's 50"),
    (cartpole_baselines, ["--", "--env", "Acrobot-v1"], "own --env: this runner is CartPole-v1's"),
    # Flags the runs would refuse are refused by the runner first (no runner.json, no runs).
    (compare_modes, [*COMPARE, "--", "--device", "meta"], "the pure runs' flags: device='meta'"),
    (compare_modes, [*COMPARE, "--", "--bogus-flag", "1"], "unrecognized arguments: --bogus-flag"),
    (compare_modes, ["--budget", "9", "--env", "Nope-v0"], "unknown environment id 'Nope-v0'"),
    (cartpole_baselines, ["--", "--particles", "0"], "particles=0 must be a positive integer"),
    (
        qd_mountaincar,
        [*COMPARE, "--modes", "novelty", "--", "--estimator", "a2c"],
        "the novelty runs' flags: estimator='a2c' is not supported by mode='novelty'",
    ),
]


@pytest.mark.parametrize(
    ("runner", "argv", "message"), CASES, ids=[f"{r.__name__}:{' '.join(a)}" for r, a, _ in CASES]
)
def test_runner_flags_are_checked_before_anything_is_written(
    runner, argv, message, tmp_path, capsys
):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        runner.main(["--out", str(out), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert err.startswith(f"{runner.__name__}.py: error: "), err
    assert message in err, err
    assert not out.exists()


def test_a_second_runner_into_the_same_out_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = RunLock(out, "runner")
    try:
        with pytest.raises(SystemExit) as exc:
            compare_modes.main([*COMPARE, "--out", str(out)])
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
    saved = {"env": "CartPole-v1", "seeds": 5, "budget": 8000, "flags": []}
    (out / "runner.json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit) as exc:  # a bad flag: its message, not the settings'
        compare_modes.main(["--budget", "0", "--out", str(out)])
    assert exc.value.code == 2
    assert "--budget 0: must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # good flags, other settings: refused, nothing run
        compare_modes.main([*COMPARE, "--seeds", "5", "--out", str(out)])
    assert "holds runs made with other settings (budget: [8000] there, [4000] now)" in str(
        exc.value.code
    )
    assert json.loads((out / "runner.json").read_text()) == saved
    assert sorted(p.name for p in out.iterdir()) == [".lock", "runner.json"]
    # The lock was released: the runner can take the directory again.
    RunLock(out, "runner").release()


def _table_header(table: str) -> str:
    return next(line for line in table.splitlines() if line.startswith("| mode |"))


@pytest.mark.slow
def test_compare_modes_writes_its_table_and_figure(tmp_path):
    out = tmp_path / "cmp"
    cmd = [
        sys.executable, str(ROOT / "runners" / "compare_modes.py"), "--seeds", "2",
        "--budget", "4000", "--out", str(out), "--modes", "pure", "erl", "--",
        "--particles", "2", "--steps-per-particle", "400", "--envs-per-particle", "4",
        "--hidden-sizes", "8", "--erl-sync-every", "1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = (out / "table.md").read_text()
    assert _table_header(table) == (
        "| mode | final best particle (training) | final mean particle (training) "
        "| fresh: mean particle | fresh: best particle chosen on training "
        "| iterations (median) | wall s per run (median) |"
    )
    assert "10 new episodes per particle from reset (not charged to the budget)" in table
    assert re.search(r"^\| `pure` \| (-?[\d.]+ \[-?[\d.]+, -?[\d.]+\] \| ){4}5 \|", table, re.M)
    assert "ERL-population champion" in table
    assert "fresh evaluation of that champion after training (10 episodes)" in table
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    columns = {"final_best", "final_mean", "fresh_mean", "fresh_selected", "iterations"}
    for mode in ("pure", "erl"):
        assert set(summary[mode]) >= columns | {"wall_seconds"}
        assert all(len(summary[mode][key]) == 2 for key in columns)
    assert all(np.isfinite(e["fresh_erl_champion"]) for e in summary["erl"]["erl"])
    for seed in (0, 1):
        run = out / "pure" / f"seed{seed}"
        steps = np.genfromtxt(run / "metrics.csv", delimiter=",", names=True)["env_steps"]
        assert steps.max() >= 4000 > steps.max() - 2 * 400  # stopped by the budget
        # The run stopped at the budget: its own final window is the runner's.
        own = json.loads((run / "summary.json").read_text())
        assert summary["pure"]["final_best"][seed] == own["final_best_particle_return"]
        assert summary["pure"]["final_mean"][seed] == own["final_mean_particle_return"]
        assert summary["pure"]["fresh_selected"][seed] == own["fresh_selected_particle_return"]
    # Re-running with the same settings re-tabulates the finished runs.
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " seed 0: " not in proc.stdout  # no run launched again
    assert (
        json.loads((out / "summary.json").read_text())["pure"]["final_best"]
        == (summary["pure"]["final_best"])
    )


@pytest.mark.slow
def test_qd_mountaincar_writes_its_table_and_figures(tmp_path):
    out = tmp_path / "qd"
    cmd = [
        sys.executable, str(ROOT / "runners" / "qd_mountaincar.py"), "--seeds", "2",
        "--budget", "8000", "--out", str(out), "--modes", "pure", "novelty", "--",
        "--particles", "2", "--hidden-sizes", "8",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = (out / "table.md").read_text()
    test_grid = "qd_test_coverage" in (out / "pure" / "seed0" / "scalars.csv").read_text()
    assert _table_header(table) == (
        "| mode | seeds with a success | env steps to first success (median) "
        "| particles succeeding at the end (median) | coverage | QD-score "
        + ("| test-grid coverage " if test_grid else "")
        + "| first training episode at the goal (median) | training success, mean particle, last "
        "10 % of the budget (median) | fresh success, mean particle (median) |"
    )
    assert re.search(r"^\| `novelty` \| [012]/2 \|", table, flags=re.M)
    assert re.search(r"\| [\d.]+% \| [\d.]+% \|$", table, flags=re.M)  # the two success rates
    for name in ("curves.png", "visitation.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["pure"]) >= {
        "final_coverage", "first_success_env_steps", "final_training_success", "fresh_success",
        "final_test_coverage", "wall_seconds",
    }  # fmt: skip
    assert all(0 <= v <= 1 for v in summary["pure"]["fresh_success"])


@pytest.mark.slow
def test_cartpole_baselines_writes_its_table(tmp_path):
    out = tmp_path / "cp"
    cmd = [
        sys.executable, str(ROOT / "runners" / "cartpole_baselines.py"), "--seeds", "1",
        "--out", str(out), "--modes", "pure", "independent", "--",
        "--particles", "2", "--steps-per-particle", "40", "--envs-per-particle", "4",
        "--hidden-sizes", "8",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = (out / "table.md").read_text()
    assert "CartPole-v1, 1 seed, 2 × 40 steps × 50 iterations per run" in table
    assert _table_header(table) == (
        "| mode | final best particle (training): median [range] "
        "| final mean particle (training): median [range] "
        "| fresh: mean particle | fresh: best particle chosen on training "
        "| seeds reaching 475 (first iteration) | wall s per run (median) |"
    )
    assert re.search(
        r"^\| `independent` \| ( *[\d.]+ \[[\d.]+ – [\d.]+\] \| ){4}[01]/1", table, re.M
    )
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["pure"]) >= {
        "final_best", "final_mean", "fresh_mean", "fresh_selected", "first_iteration_at_475",
        "wall_seconds",
    }  # fmt: skip
    assert json.loads((out / "runner.json").read_text())["flags"] == cmd[cmd.index("--") + 1 :]
