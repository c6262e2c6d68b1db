"""``evo-svpg tune``: spec errors, a study continued from its SQLite file, a killed trial
tried again with its parameters and resumed runs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sweep import BASE
from test_sweep import _spec as write_spec

from evo_svpg.cli import main
from evo_svpg.config import RunConfig
from evo_svpg.tune import TuneSpec, stage_targets

optuna = pytest.importorskip("optuna", reason="the [study] extra is not installed")

SPEC = (
    "seeds = [0, 1]\nstages = 2\n"
    + BASE  # the sweep tests' tiny runs
    + '[search]\nalpha = {low = 0.1, high = 100.0, log = true}\nbandwidth = ["svgd", "svpg_code"]\n'
)


def _spec(tmp_path, text: str = SPEC):
    return write_spec(tmp_path, text)


def _trials(out):
    return optuna.load_study(study_name="evo-svpg", storage=f"sqlite:///{out / 'study.db'}").trials


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ("", r"\[search\] is empty"),
        ("alfa = [1, 2]", r"\[search\] key 'alfa' is not a run key"),
        ("alpha = {low = 3.0, high = 1.0}", r"low=3.0, high=1.0 must be numbers with low < high"),
        ("alpha = {low = 0.0, high = 1.0, log = true}", r"log = true needs low > 0"),
        ("critic_epochs = {low = 2.5, high = 8, int = true}", r"int = true needs integer"),
        ("alpha = {low = 1.0, high = 2.0, step = 1}", r"unknown field\(s\) \['step'\]"),
        ("alpha = []", r"must list distinct choices"),
        ("alpha = {low = -1.0, high = 2.0}", r"point \{'alpha': -1.0\}: .*alpha"),
    ],
)
def test_a_bad_tune_spec_is_refused_naming_the_problem(tmp_path, capsys, search, message):
    text = SPEC[: SPEC.index("[search]")] + "[search]\n" + search + "\n"
    out = tmp_path / "out"
    assert main(["tune", str(_spec(tmp_path, text)), "--trials", "1", "--out", str(out)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_stages_split_the_iterations_or_the_budget():
    assert stage_targets(RunConfig(iterations=50), 5) == [
        {"iterations": i} for i in (10, 20, 30, 40, 50)
    ]
    assert stage_targets(RunConfig(iterations=3), 5) == [{"iterations": i} for i in (1, 2, 3)]
    assert stage_targets(RunConfig(budget=1000, iterations=10**6), 2) == [
        {"budget": 500},
        {"budget": 1000},
    ]


def test_a_study_continues_from_its_sqlite_file(tmp_path, capsys):
    spec, out = _spec(tmp_path), tmp_path / "out"
    assert main(["tune", str(spec), "--trials", "2", "--out", str(out), "--jobs", "2"]) == 0
    first = [(t.params, t.value) for t in _trials(out)]
    assert main(["tune", str(spec), "--trials", "3", "--out", str(out), "--jobs", "2"]) == 0
    trials = _trials(out)
    assert [(t.params, t.value) for t in trials[:2]] == first
    assert len(trials) == 3
    assert trials[2].params != trials[0].params  # the continued sampler does not start over
    assert all(len(t.intermediate_values) == 2 for t in trials)  # one report per stage
    text = (out / "tune.md").read_text()
    assert "3 trials (3 complete, 0 pruned, 0 failed)" in text
    assert (out / "history.png").stat().st_size > 0
    other = _spec(tmp_path, SPEC.replace("stages = 2", "stages = 3"))
    assert main(["tune", str(other), "--trials", "4", "--out", str(out)]) == 2
    assert "holds a study of another spec (stages differ:" in capsys.readouterr().err


def test_a_killed_trial_is_tried_again_with_its_runs_resumed(tmp_path):
    spec = _spec(tmp_path)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["tune", str(spec), "--trials", "1", "--out", str(whole), "--jobs", "1"]) == 0
    cmd = [sys.executable, "-m", "evo_svpg.cli", "tune", str(spec), "--trials", "1", "--out",
           str(cut), "--jobs", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(cut.glob("trials/*/seed1/checkpoint.pt")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(["tune", str(spec), "--trials", "1", "--out", str(cut), "--jobs", "1"]) == 0
    trials = _trials(cut)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[0].user_attrs["cut"]
    assert trials[1].params == trials[0].params == _trials(whole)[0].params
    assert trials[1].value == _trials(whole)[0].value
    # its stages report what an uncut trial's do, though its runs had gone on (recorded values)
    assert trials[1].intermediate_values == _trials(whole)[0].intermediate_values
    assert "(1 complete, 0 pruned, 0 failed)" in (cut / "tune.md").read_text()


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).parents[1] / "configs" / "studies").glob("tune_*.toml")),
    ids=lambda p: p.name,
)
def test_the_shipped_tune_specs_are_valid(path):
    TuneSpec.load(path).check(str(path))


@pytest.mark.filterwarnings("ignore:Target and region quantiles:UserWarning")  # 2 equal trials
def test_a_committed_study_tries_known_parameters_again_without_running(tmp_path):
    """A fresh clone holds study.db, tune.json and the stage values, not the run directories:
    parameters tried before take their recorded stage values, and nothing is trained."""
    spec, out = _spec(tmp_path), tmp_path / "out"
    assert main(["tune", str(spec), "--trials", "1", "--out", str(out), "--jobs", "2"]) == 0
    for run in out.glob("trials/*/seed*"):
        if run.is_dir():
            shutil.rmtree(run)  # what .gitignore leaves out of a commit
    first = _trials(out)[0]
    study = optuna.load_study(study_name="evo-svpg", storage=f"sqlite:///{out / 'study.db'}")
    study.enqueue_trial(first.params)
    assert main(["tune", str(spec), "--trials", "2", "--out", str(out), "--jobs", "2"]) == 0
    again = _trials(out)[1]
    assert again.params == first.params
    assert again.value == first.value
    assert again.intermediate_values == first.intermediate_values
    assert not [p for p in out.glob("trials/*/seed*") if p.is_dir()]  # nothing was run
