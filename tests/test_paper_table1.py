"""runners/paper_table1.py: the paper's metric, the flags it refuses, and (slow) a tiny grid."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from evo_svpg.config import RunConfig, load_toml
from evo_svpg.plot import load_curves

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "runners"))

import _common  # noqa: E402
import paper_table1  # noqa: E402
from _common import run_setting  # noqa: E402
from _records import read_record, record_path  # noqa: E402

from evo_svpg.cli import config_of_flags  # noqa: E402

CELLS = {  # what each variant's config must say, written out independently of the files
    "joint": {"mode": "joint"},
    "independent": {"mode": "independent"},
    "svpg-svgd": {"mode": "pure", "bandwidth": "svgd", "alpha": 10.0},
    "svpg-svpg_code": {"mode": "pure", "bandwidth": "svpg_code", "alpha": 10.0},
    "langevin": {"mode": "langevin", "alpha": 10.0, "langevin_noise": 1.0},
}
LINEAR_BASELINE = {"baseline_reg_coeff": 1e-5, "baseline_gae_lambda": 1.0}  # rllab's
ENV_IDS = {
    "swing-up": "evo_svpg/CartpoleSwingup-v0",
    "double-pendulum": "evo_svpg/DoublePendulum-v0",
}


def test_every_cell_has_a_config_with_the_papers_setting():
    files = {p.name for p in paper_table1.CONFIGS.glob("*.toml")}
    expected = set()
    for estimator in paper_table1.ESTIMATORS:
        for env in paper_table1.ENVS:
            for variant in paper_table1.VARIANTS:
                path = paper_table1.cell_config(estimator, env, variant)
                expected.add(path.name)
                RunConfig.from_toml(path)  # valid
                pinned = load_toml(path)  # the file itself, not defaults filled in
                want = {
                    **CELLS[variant], "env": ENV_IDS[env], "estimator": estimator,
                    "sampling": "whole-episodes", "particles": 16, "steps_per_particle": 10_000,
                    "iterations": 1000, "lr": 0.005, "gamma": 0.99, "hidden_sizes": [100, 50, 25],
                    "random_streams": "shared",  # the records were drawn so
                    **(LINEAR_BASELINE if estimator == "linear-baseline" else {}),
                }  # fmt: skip
                assert {k: pinned.get(k) for k in want} == want, path.name
    assert files == expected  # no stray cell


def test_cells_from_their_files_compute_what_the_flag_launched_cells_of_before_did():
    """results/table1 holds runs launched with flags before the cells had files: the runner's
    check of existing runs lets both into one table only if they compute the same thing."""
    old = {
        "joint": ["--mode", "joint"], "independent": ["--mode", "independent"],
        "svpg-svgd": ["--mode", "pure", "--bandwidth", "svgd"],
        "svpg-svpg_code": ["--mode", "pure", "--bandwidth", "svpg_code"],
    }  # fmt: skip
    args = paper_table1._parser().parse_args(["--out", "x"])
    for estimator in paper_table1.ESTIMATORS:
        for env, env_id in ENV_IDS.items():
            for variant, flags in old.items():
                before = [
                    *flags,
                    "--env",
                    env_id,
                    "--estimator",
                    estimator,
                    "--sampling",
                    "whole-episodes",
                    "--particles",
                    "16",
                    "--steps-per-particle",
                    "10000",
                    "--iterations",
                    "1000",
                    "--random-streams",
                    "shared",
                ]  # fmt: skip  (as they were then)
                now = paper_table1.run_flags(args, estimator, env, variant)
                assert run_setting(config_of_flags(before)) == run_setting(config_of_flags(now))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--", "--sampling", "continuing"], r"--sampling collides .* whole episodes"),
        (["--", "--bandwidth", "5"], r"--bandwidth collides .* --variants"),
        (["--seeds", "0"], r"--seeds 0: must be >= 1"),
        (["--", "--estimator", "a2c"], r"--estimator collides"),
        (["--", "--config", "x.toml"], r"--config collides .* configs/paper_table1"),
        (["--", "--mode", "pure"], r"--mode collides .* --variants"),
    ],
)
def test_flags_that_would_change_a_cell_are_refused(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        paper_table1.main(["--out", str(tmp_path / "t"), *args])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "t").exists()


SMALL = ["--seeds", "2", "--estimators", "reinforce", "--envs", "swing-up", "--variants", "joint"]
LABEL = "reinforce/swing-up/joint"


def _write_record(out: Path, seed: int, best, mean, wall: float, **config_changes) -> Path:
    """A record as a finished run leaves it: the config the runner's flags give (changed by
    ``config_changes``, top-level keys; a value None removes the key)."""
    args = paper_table1._parser().parse_args(["--out", str(out), *SMALL])
    flags = paper_table1.run_flags(args, "reinforce", "swing-up", "joint")
    config = config_of_flags(_common._full_flags(LABEL, seed, None, 1, flags, False)).to_dict()
    config.update(config_changes)
    config = {k: v for k, v in config.items() if v is not None}
    record = {
        "version": 1, "label": LABEL, "seed": seed, "config": config, "wall_seconds": wall,
        "fresh": {"fresh_mean_particle_return": 10.0 * seed,
                  "fresh_selected_particle_return": 20.0 * seed},
        "iterations": len(best), "best_particle": best, "mean_particle": mean,
        "final_particle_returns": [mean[-1], None],
    }  # fmt: skip
    path = record_path(out, LABEL, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def test_records_alone_rebuild_the_table_and_launch_nothing(tmp_path, monkeypatch, capsys):
    """A new machine with the committed records: the same command tabulates, runs nothing."""
    out = tmp_path / "t"
    _write_record(out, 0, [0.0, 50.0, 96.0, 100.0, 90.0], [0.0, None, 2.0, 3.0, 4.0], 3600.0)
    _write_record(out, 1, [0.0, 70.0, 100.0, 100.0, 110.0], [0.0, 1.0, 2.0, 5.0, 7.0], 1800.0)

    def no_launch(*_):
        raise AssertionError("a recorded run was launched")

    monkeypatch.setattr(_common, "launch", no_launch)
    paper_table1.main(["--out", str(out), *SMALL, "--jobs", "1"])
    assert "2 recorded, 0 finished, 0 to run" in capsys.readouterr().out
    table = (out / "table.md").read_text()
    # seed mean 0, 60, 98, 100, 100: max 100 first within 5 % at iteration 3; at the peak
    # (iteration 4) both seeds hold 100, so the interval has no width
    assert "| reinforce | swing-up | joint | 100.0 [100.0, 100.0] (3) | 232.96 (253) |" in table
    assert "1.5 h (5,400 s) of wall time" in table
    assert "- reinforce, swing-up, `joint` (seeds 0, 1): maxima 100.0, 110.0; final mean " in table
    cell = json.loads((out / "summary.json").read_text())[LABEL]
    assert cell["seed_ids"] == [0, 1]
    assert cell["final_mean_particle"] == [4.0, 7.0]  # the last 10 % of 5 iterations: one
    assert cell["fresh_chosen_particle"] == [0.0, 20.0]
    assert np.isnan(read_record(record_path(out, LABEL, 0))["mean_particle"][1])
    # One seed fewer: the other record is named and left out; one seed gives no interval.
    paper_table1.main(["--out", str(out), *SMALL[2:], "--seeds", "1", "--tabulate-only"])
    assert "1 record(s) under" in capsys.readouterr().out
    assert "| 100.0 [n/a: 1 seed] (3) |" in (out / "table.md").read_text()


def test_a_record_made_with_another_setting_is_refused(tmp_path):
    out = tmp_path / "t"
    path = _write_record(out, 1, [1.0], [1.0], 1.0, gamma=0.9)
    message = rf"{re.escape(str(path))}: gamma = 0.9 there, 0.99 now.* delete the records"
    with pytest.raises(SystemExit, match=message):
        paper_table1.main(["--out", str(out), *SMALL, "--tabulate-only"])


def test_a_record_made_before_a_key_was_added_counts_it_as_its_default(tmp_path):
    """A config key added since the record (here: absent) must not lock committed records out."""
    out = tmp_path / "t"
    _write_record(out, 0, [1.0], [1.0], 1.0, max_episode_steps=None, final_eval_episodes=None)
    paper_table1.main(["--out", str(out), *SMALL, "--tabulate-only"])
    assert (
        "| reinforce | swing-up | joint | 1.0 [n/a: 1 seed] (1) |" in (out / "table.md").read_text()
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 7}, r"version 7, this code reads 1"),
        ({"wall_seconds": "long"}, r"wall_seconds is 'long', not a float"),
        ({"iterations": 3}, r"curves of another length than its 3 iterations"),
        (
            {"seed": 4},
            r"it is reinforce/swing-up/joint seed 4, not reinforce/swing-up/joint seed 0",
        ),
        ({"config": {"mode": "pure", "alpha": "hot"}}, r"alpha"),
    ],
)
def test_a_broken_record_is_refused_naming_the_file_and_the_problem(tmp_path, change, message):
    path = _write_record(tmp_path / "t", 0, [1.0], [1.0], 1.0)
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(path))}: not a run record \(.*{message}"
    ):
        read_record(path, LABEL, 0)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"a JSON list, not an object"):
        read_record(path)


def _not_committed(out: Path) -> Callable[[str, list[str]], list[str]]:
    """``copytree``'s ignore: what the repository's .gitignore drops under docs/results/."""

    def ignored(folder: str, names: list[str]) -> list[str]:
        inside = [  # (a trailing / tells git a directory)
            f"docs/results/x/{(Path(folder) / n).relative_to(out)}"
            + ("/" if (Path(folder) / n).is_dir() else "")
            for n in names
        ]
        result = subprocess.run(
            ["git", "-C", str(ROOT), "check-ignore", "--no-index", "--stdin"],
            input="\n".join(inside), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode not in (0, 1):  # 0: some ignored, 1: none; else no repository
            pytest.skip(f"git check-ignore needs the repository: {result.stderr.strip()}")
        dropped = set(result.stdout.split())
        return [n for n, path in zip(names, inside, strict=True) if path in dropped]

    return ignored


@pytest.mark.slow
def test_a_tiny_grid_runs_tabulates_and_resumes(tmp_path, capsys):
    argv = ["--out", str(tmp_path / "t"), "--iterations", "2", "--steps-per-particle", "200",
            "--particles", "2", "--seeds", "2", "--estimators", "reinforce", "--envs",
            "swing-up", "--variants", "joint", "svpg-svgd", "langevin", "--jobs", "2", "--",
            "--hidden-sizes", "8", "--envs-per-particle", "4",
            "--final-eval-episodes", "1"]  # fmt: skip
    paper_table1.main(argv)
    table = (tmp_path / "t" / "table.md").read_text()
    assert "| reinforce | swing-up | joint |" in table
    assert "426.69 (238)" in table  # the paper's SVPG cell beside ours
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["reinforce/swing-up/svpg-svgd"]["seeds"] == 2
    cell = r"\| reinforce \| swing-up \| langevin \| [-\d.]+ \[[-\d.]+, [-\d.]+\] \(\d+\) \| — \|"
    assert re.search(cell, table)
    assert summary["reinforce/swing-up/langevin"]["paper"] is None  # not in Table 1
    record = read_record(record_path(tmp_path / "t", LABEL, 1), LABEL, 1)
    assert (record["iterations"], record["seed"]) == (2, 1)
    run = load_curves(tmp_path / "t" / LABEL / "seed1", window=1)
    assert record["best_particle"] == pytest.approx(run["best"], abs=5e-4)  # rounded to 1e-3
    assert record["mean_particle"] == pytest.approx(run["mean"], abs=5e-4)
    wall = float((tmp_path / "t" / LABEL / "seed1.wall").read_text())
    assert record["wall_seconds"] == wall > 0
    # A record edited by hand is rewritten from its finished run directory, saying so.
    edited = record_path(tmp_path / "t", LABEL, 1)
    edited.write_text(edited.read_text().replace(f'"wall_seconds": {wall}', '"wall_seconds": 1.0'))
    capsys.readouterr()
    paper_table1.main(argv)  # everything finished: re-tabulates only
    assert f"{edited}: rewritten from its run directory" in capsys.readouterr().out
    assert read_record(edited)["wall_seconds"] == wall
    table = (tmp_path / "t" / "table.md").read_text()
    # Another machine: only what is committed (records, runner.json), no run directories. The
    # same command rebuilds the same table; a run whose record is gone is run again, alone.
    committed = tmp_path / "committed"
    shutil.copytree(tmp_path / "t", committed, ignore=_not_committed(tmp_path / "t"))
    assert not list(committed.glob("reinforce/swing-up/*/seed*"))
    assert len(list(committed.glob("records/**/seed*.json"))) == 6
    argv_there = ["--out", str(committed), *argv[2:]]
    paper_table1.main([*argv_there[: argv.index("--")], "--tabulate-only",
                       *argv_there[argv.index("--") :]])  # fmt: skip
    assert (committed / "table.md").read_text() == table
    record_path(committed, "reinforce/swing-up/langevin", 0).unlink()
    paper_table1.main(argv_there)
    assert list(committed.glob("reinforce/swing-up/*/seed*/")) == [
        committed / "reinforce/swing-up/langevin/seed0"
    ]
    assert record_path(committed, "reinforce/swing-up/langevin", 0).is_file()


@pytest.mark.parametrize(
    ("spec", "env"), [("swingup", "swing-up"), ("double_pendulum", "double-pendulum")]
)
def test_the_table1_sweep_specs_run_the_runners_cells_with_per_particle_streams(spec, env):
    """configs/sweeps/paper_table1_<env>.toml: every cell of the runner's Table 1 grid once, each
    setting's config equal to its cell's file but for the random streams (the sweep's default)."""
    from evo_svpg.sweep_spec import SweepSpec

    sweep = SweepSpec.load(ROOT / "configs" / "sweeps" / f"paper_table1_{spec}.toml")
    variant = {("joint", None): "joint", ("independent", None): "independent",
               ("pure", "svgd"): "svpg-svgd", ("pure", "svpg_code"): "svpg-svpg_code"}  # fmt: skip
    cells = set()
    for setting, cfg in zip(sweep.settings(), sweep.check_configs(), strict=True):
        values = setting.values
        cell = (values["estimator"], variant[(values["mode"], values.get("bandwidth"))])
        keys = load_toml(paper_table1.cell_config(cell[0], env, cell[1]))
        assert keys.pop("random_streams") == "shared"
        expected = RunConfig.from_dict({**keys, "seed": sweep.seeds[0]}).to_dict()
        assert cfg.to_dict() == {**expected, "random_streams": "per-particle"}, setting.name
        cells.add(cell)
    table1 = {(e, v) for e in ("reinforce", "linear-baseline") for v in paper_table1.TABLE1}
    assert cells == table1
    assert sweep.seeds == (0, 1, 2, 3, 4)
