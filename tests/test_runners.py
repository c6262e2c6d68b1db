"""The comparison runners' statistics and curve alignment, and (slow) a tiny comparison run."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "runners"))

from _common import bootstrap_median_ci, curves_on_grid  # noqa: E402


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


def _metrics(run_dir: Path, rows: list[tuple[int, int, float, int]]) -> Path:
    run_dir.mkdir(parents=True)
    lines = ["iteration,particle,return_mean,env_steps"]
    lines += [f"{i},{p},{r},{s}" for i, p, r, s in rows]
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run_dir


def test_curves_on_a_common_env_step_grid_hold_the_last_value(tmp_path):
    a = _metrics(tmp_path / "a", [(1, 0, 10, 100), (1, 1, 20, 100), (2, 0, 30, 250),
                                  (2, 1, float("nan"), 250), (3, 0, float("nan"), 400),
                                  (3, 1, float("nan"), 400)])  # fmt: skip
    curves = curves_on_grid([a], np.array([50, 100, 200, 250, 1000]))
    np.testing.assert_array_equal(curves["best"][0], [np.nan, 20, 20, 30, 30])
    np.testing.assert_array_equal(curves["mean"][0], [np.nan, 15, 15, 30, 30])


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
    assert "| `pure` |" in table
    assert "ERL-population champion" in table
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    for seed in (0, 1):
        steps = np.genfromtxt(out / "pure" / f"seed{seed}" / "metrics.csv", delimiter=",",
                              names=True)["env_steps"]  # fmt: skip
        assert steps.max() >= 4000 > steps.max() - 2 * 400  # stopped by the budget


@pytest.mark.slow
def test_qd_mountaincar_writes_its_table_and_figures(tmp_path):
    out = tmp_path / "qd"
    cmd = [
        sys.executable, str(ROOT / "runners" / "qd_mountaincar.py"), "--seeds", "2",
        "--budget", "3000", "--out", str(out), "--modes", "pure", "novelty", "--",
        "--particles", "2", "--steps-per-particle", "400", "--hidden-sizes", "8",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = (out / "table.md").read_text()
    assert re.search(r"^\| `novelty` \| [012]/2 \|", table, flags=re.M)
    for name in ("curves.png", "visitation.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["pure"]) >= {"final_coverage", "first_success_env_steps"}
