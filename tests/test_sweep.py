"""``evo-svpg sweep`` and ``evo-svpg report``: spec errors, a killed sweep finishing
identically, failures reported, and the report's numbers against a direct computation."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_svpg.cli import main
from evo_svpg.plot import load_curves
from evo_svpg.rundir import RunLock
from evo_svpg.sweep_spec import SweepSpec, setting_name

BASE = """
[base]
particles = 3
steps_per_particle = 300
envs_per_particle = 3
hidden_sizes = [8]
iterations = 6
checkpoint_every = 2
final_eval_episodes = 2
"""
SPEC = "seeds = [0, 1]\n" + BASE + '[grid]\nmode = ["pure", "independent"]\n'


def _spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def _sweep(spec: Path, out: Path, *args: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "evo_svpg.cli", "sweep", str(spec), "--out", str(out), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _outputs(out: Path) -> dict[str, bytes]:
    """What a sweep computed: every run's metrics and scalars."""
    files = sorted(out.glob("*/seed*/metrics.csv")) + sorted(out.glob("*/seed*/scalars.csv"))
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seeds = [0]\nfoo = 1\n[grid]\nmode = ['pure']", r"unknown key\(s\) \['foo'\]"),
        ("seeds = []\n[grid]\nmode = ['pure']", r"seeds=\[\] must be a non-empty list"),
        ("seeds = [0, 0]\n[grid]\nmode = ['pure']", r"seeds=\[0, 0\] must be .* distinct"),
        ("seeds = [-1]\n[grid]\nmode = ['pure']", r"integers >= 0"),
        ("seeds = [0]\n[base]\nalpha = 1\n", r"\[grid\] is empty"),
        ("seeds = [0]\n[grid]\n", r"\[grid\] is empty"),
        ("seeds = [0]\n[[grid]]\nmode = ['pure']\n[[grid]]\n", r"\[\[grid\]\] 2 is empty"),
        (
            "seeds = [0]\n[[grid]]\nmode = ['pure']\n[[grid]]\nmode = ['joint', 'pure']",
            r"give the same setting name twice: \['mode=pure'\]",
        ),
        (
            "seeds = [0]\n[[grid]]\nmode = ['pure']\n[[grid]]\nalfa = [1]",
            r"\[grid #2\] key 'alfa' is not",
        ),
        ("seeds = [0]\n[grid]\nmode = []", r"mode = \[\] must be a non-empty list"),
        ("seeds = [0]\n[grid]\nmode = 'pure'", r"mode = 'pure' must be a non-empty list"),
        ("seeds = [0]\n[grid]\nmode = ['pure', 'pure']", r"lists a value twice"),
        ("seeds = [0]\n[grid]\nalfa = [1, 2]", r"\[grid\] key 'alfa' is not a run key"),
        ("seeds = [0]\n[base]\nalfa = 1\n[grid]\nmode = ['pure']", r"\[base\] key 'alfa'"),
        ("seeds = [0]\n[base]\nseed = 3\n[grid]\nmode = ['pure']", r"sets 'seed': list the"),
        ("seeds = [0]\n[base]\nmode = 'pure'\n[grid]\nmode = ['pure']", r"in both \[base\]"),
        ("seeds = [0]\n[grid]\nalpha = [1, -2]", r"setting alpha=-2: .*alpha"),
        (  # bandwidth = its default in the first grid: the second grid's run again
            "seeds = [0]\n[[grid]]\nmode = ['pure']\n[[grid]]\nbandwidth = ['svpg_code']",
            r"settings mode=pure and bandwidth=svpg_code give the same run config",
        ),
        ("seeds = [0]\n[grid]\nalpha = [10, 10.0]", r"alpha=10 and alpha=10.0 give the same"),
        ("seeds = [0]\n[grid]\nenv = ['Nope-v0']", r"setting env=Nope-v0: .*Nope-v0"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_problem_before_anything_is_written(
    tmp_path, capsys, text, message
):
    out = tmp_path / "out"
    assert main(["sweep", str(_spec(tmp_path, text)), "--out", str(out), "--jobs", "1"]) == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not out.exists()


def test_setting_names_sort_keys_and_escape_path_characters():
    assert setting_name({"mode": "pure", "alpha": 10}) == "alpha=10,mode=pure"
    assert setting_name({"env": "evo_svpg/CartpoleSwingup-v0"}) == (
        "env=evo_svpg%2FCartpoleSwingup-v0"
    )
    assert setting_name({"hidden_sizes": [64, 64], "alpha": 0.1}) == (
        "alpha=0.1,hidden_sizes=64-64"
    )
    spec = SweepSpec.from_dict({"seeds": [3], "grid": {"mode": ["pure"], "alpha": [1, 3]}})
    assert [s.name for s in spec.settings()] == ["alpha=1,mode=pure", "alpha=3,mode=pure"]


def test_several_grids_give_the_union_of_their_products_in_order(tmp_path):
    text = (
        "seeds = [0]\n[[grid]]\nmode = ['pure']\nbandwidth = ['svgd', 'svpg_code']\n"
        "[[grid]]\nmode = ['independent', 'joint']\n"
    )
    spec = SweepSpec.load(_spec(tmp_path, text))
    assert [(s.name, s.values) for s in spec.settings()] == [
        ("bandwidth=svgd,mode=pure", {"bandwidth": "svgd", "mode": "pure"}),
        ("bandwidth=svpg_code,mode=pure", {"bandwidth": "svpg_code", "mode": "pure"}),
        ("mode=independent", {"mode": "independent"}),
        ("mode=joint", {"mode": "joint"}),
    ]
    assert SweepSpec.from_dict(spec.to_dict()) == spec  # sweep.json keeps it
    assert isinstance(spec.to_dict()["grid"], list)
    one = SweepSpec.from_dict({"seeds": [0], "grid": {"mode": ["pure"]}})
    assert one.to_dict()["grid"] == {"mode": ["pure"]}  # as sweep.json held it before


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The sweep of SPEC run once, start to end."""
    tmp = tmp_path_factory.mktemp("whole")
    proc = _sweep(_spec(tmp), tmp / "out", "--jobs", "2")
    stdout, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout
    assert "all 4 runs finished" in stdout
    return tmp / "out"


def test_a_killed_sweep_finishes_with_what_an_uninterrupted_one_computes(tmp_path, uninterrupted):
    """SIGKILL of the sweep and its runs (a session ending) once a run has a checkpoint and is
    unfinished; the same command then resumes it, starts the rest and skips the finished."""
    spec, out = _spec(tmp_path), tmp_path / "out"
    proc = _sweep(spec, out, "--jobs", "1", start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        cut = [
            p for p in out.glob("*/seed*/checkpoint.pt") if not (p.parent / "summary.json").exists()
        ]
        finished = list(out.glob("*/seed*/summary.json"))
        if cut and finished:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    again = _sweep(spec, out, "--jobs", "1")
    stdout, _ = again.communicate(timeout=600)
    assert again.returncode == 0, stdout
    assert "(1 resumed)" in stdout  # the run cut after a checkpoint
    assert "all 4 runs finished" in stdout
    assert _outputs(out) == _outputs(uninterrupted)
    third = _sweep(spec, out)
    stdout, _ = third.communicate(timeout=120)
    assert "4 finished, 0 to run" in stdout


def test_another_spec_into_a_sweeps_directory_is_refused(tmp_path, uninterrupted, capsys):
    other = _spec(tmp_path, SPEC.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    assert main(["sweep", str(other), "--out", str(uninterrupted)]) == 2
    err = capsys.readouterr().err
    assert "holds a sweep of another spec (seeds differ" in err


def test_a_failed_run_is_reported_with_its_log_and_the_others_finish(tmp_path, capsys):
    spec, out = _spec(tmp_path), tmp_path / "out"
    held = out / "mode=pure" / "seed1"
    held.mkdir(parents=True)
    lock = RunLock(held)  # another process holds this run's directory: its run fails
    try:
        code = main(["sweep", str(spec), "--out", str(out), "--jobs", "2"])
    finally:
        lock.release()
    printed = capsys.readouterr().out
    assert code == 1
    assert "mode=pure seed 1: failed (exit 2); its log: " in printed
    assert "1 run(s) did not finish" in printed
    assert len(list(out.glob("*/seed*/summary.json"))) == 3


def test_report_numbers_are_a_direct_computation_on_the_same_runs(uninterrupted, tmp_path):
    assert main(["report", str(uninterrupted), "--out", str(tmp_path), "--reps", "500"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["metric"] == "final_mean_particle_return"
    scores = {}
    for name in ("mode=independent", "mode=pure"):
        values = [
            json.loads((uninterrupted / name / f"seed{s}" / "summary.json").read_text())[
                "final_mean_particle_return"
            ]
            for s in (0, 1)
        ]
        scores[name] = np.array(values)
        row = report["settings"][name]
        assert row["runs"] == 2
        assert row["seeds"] == [0, 1]
        assert row["iqm"] == pytest.approx(scipy.stats.trim_mean(values, 0.25), rel=1e-12)
        assert row["median"] == pytest.approx(np.median(values), rel=1e-12)
        assert row["mean"] == pytest.approx(np.mean(values), rel=1e-12)
        for key in ("iqm", "median", "mean"):
            lo, hi = row[f"{key}_ci"]
            assert min(values) <= lo <= row[key] <= hi <= max(values)
        assert row["wall_seconds"] > 0
        # the paper's statistic, by hand: the peak of the run-mean best-particle curve
        runs = [uninterrupted / name / f"seed{s}" for s in (0, 1)]
        best = np.array([load_curves(run)["best"].round(3) for run in runs])  # as records hold
        curve = best.mean(axis=0)
        peak = report["peak"][name]
        assert peak["peak"] == pytest.approx(curve.max(), abs=1e-9)
        assert peak["peak_iteration"] == int(np.argmax(curve)) + 1
        assert (
            peak["iteration_95"]
            == int(np.flatnonzero(curve >= curve.max() - 0.05 * abs(curve.max()))[0]) + 1
        )
        assert peak["peak_ci"][0] <= peak["peak"] <= peak["peak_ci"][1]
    a, b = scores["mode=pure"], scores["mode=independent"]
    direct = ((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])).mean()
    assert report["improvement"]["mode=pure > mode=independent"]["p"] == pytest.approx(direct)
    assert report["improvement"]["mode=independent > mode=pure"]["p"] == pytest.approx(1 - direct)
    lo, hi = report["improvement"]["mode=pure > mode=independent"]["ci"]
    assert report["improvement"]["mode=independent > mode=pure"]["ci"] == pytest.approx(
        [1 - hi, 1 - lo]
    )
    assert (tmp_path / "report.md").read_text().startswith("# final_mean_particle_return")
    for figure in ("iqm_curve.png", "performance_profile.png"):
        assert (tmp_path / figure).stat().st_size > 0
    again = tmp_path / "again"  # reproducible: the same report, intervals included
    assert main(["report", str(uninterrupted), "--out", str(again), "--reps", "500"]) == 0
    twice = json.loads((again / "report.json").read_text())
    assert {k: v for k, v in twice.items() if k != "written"} == {
        k: v for k, v in report.items() if k != "written"
    }


def test_report_refuses_an_unknown_metric_naming_the_fields(uninterrupted, tmp_path, capsys):
    assert main(["report", str(uninterrupted), "--metric", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--metric 'nope' is no number in any run's summary.json" in err
    assert "final_best_particle_return" in err
    args = ["report", str(uninterrupted), "--metric", "final_particle_returns"]  # a list
    assert main([*args, "--out", str(tmp_path)]) == 2
    assert "'final_particle_returns' is no number" in capsys.readouterr().err


CONFIGS = Path(__file__).parents[1] / "configs"
STUDIES = [  # sweep specs; tune_*.toml are Optuna studies (tests/test_tune.py)
    p
    for p in sorted([*CONFIGS.glob("studies/*.toml"), *CONFIGS.glob("sweeps/*.toml")])
    if not p.name.startswith("tune_")
]


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_the_shipped_study_specs_are_valid(path):
    from evo_svpg.sweep import check_spec

    spec = SweepSpec.load(path)
    check_spec(spec, str(path))  # every setting built as `evo-svpg run` would build it
    assert len(spec.settings()) >= 2


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=7),
    st.lists(st.integers(0, 5), min_size=1, max_size=7),
)
def test_the_fast_probability_of_improvement_is_rliables(x, y):
    """Ties are common in these small integer lists: both count them half."""
    from rliable import metrics

    from evo_svpg.stats import improvement

    a, b = np.array(x, float)[:, None], np.array(y, float)[:, None]
    assert improvement(a, b) == pytest.approx(metrics.probability_of_improvement(a, b), abs=1e-12)


def test_an_interval_depends_only_on_its_own_runs():
    """Seeded by its data: the same scores get the same interval whatever else is reported."""
    from evo_svpg import stats

    a, b, c = np.array([1.0, 4, 2, 8, 5]), np.array([3.0, 3, 9, 1, 7]), np.array([2.0, 6, 4])
    alone = stats.aggregates({"a": a}, reps=300)["a"]
    assert stats.aggregates({"b": b, "a": a}, reps=300)["a"] == alone
    assert stats.aggregates({"x": a, "c": c}, reps=300)["x"] == alone  # the name does not count
    pair = stats.improvement_probabilities({"a": a, "b": b}, reps=300)[("a", "b")]
    assert stats.improvement_probabilities({"c": c, "a": a, "b": b}, reps=300)[("a", "b")] == pair


def test_a_run_killed_before_its_first_checkpoint_starts_again_and_is_listed(tmp_path, capsys):
    spec, out = _spec(tmp_path), tmp_path / "out"
    stale = out / "mode=pure" / "seed0"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text('{"config": {}}')  # what a run killed that early leaves
    (stale / "metrics.csv").write_text("iteration\n1\n")
    (out / "mode=pure" / "seed0.config.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    code = main(["sweep", str(spec), "--out", str(out), "--jobs", "2"])
    assert code == 0, capsys.readouterr().out
    assert (stale / "checkpoint.pt").exists()
    assert json.loads((stale / "summary.json").read_text())["iterations"] == 6
    shutil.rmtree(out / "mode=independent" / "seed1")  # gone, and no record: listed, not counted
    (out / "mode=independent" / "seed1.record.json").unlink()
    assert main(["report", str(out), "--out", str(tmp_path / "r"), "--reps", "200"]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["settings"]["mode=independent"]["runs"] == 1
    (why,) = report["left_out"].values()
    assert why.startswith("no summary.json")


def _without_run_directories(sweep: Path, into: Path) -> Path:
    """What a commit of a sweep directory keeps (the .gitignore in docs/results: no seed*/,
    logs, started keys or seconds): the spec and the records."""
    shutil.copytree(
        sweep, into,
        ignore=shutil.ignore_patterns("seed?", "*.log", ".lock", "*.config.json", "*.seconds"),
    )  # fmt: skip
    assert not list(into.glob("*/seed?"))
    assert len(list(into.glob("*/seed?.record.json"))) == 4
    return into


def test_records_alone_give_the_report_and_a_finished_sweep(uninterrupted, tmp_path):
    """A fresh clone of committed records: the report of the run directories, and the same
    sweep command launches nothing."""
    from evo_svpg.sweep_records import make_record, read_record

    for path in uninterrupted.glob("*/seed?"):
        setting, seed = path.parent.name, int(path.name[4:])
        record = read_record(path.with_name(path.name + ".record.json"), setting, seed)
        keys = json.loads(path.with_name(path.name + ".config.json").read_text())
        assert record["keys"] == keys
        made = make_record(path, setting, seed, keys, record["seconds"])
        assert (
            record["summary"] == made["summary"] == json.loads((path / "summary.json").read_text())
        )
        assert np.array_equal(record["curves"]["mean"], made["curves"]["mean"], equal_nan=True)
    clone = _without_run_directories(uninterrupted, tmp_path / "clone")
    dirs = tmp_path / "dirs"  # the run directories alone, as before records
    shutil.copytree(uninterrupted, dirs, ignore=shutil.ignore_patterns("*.record.json", ".lock"))
    full, alone = tmp_path / "full", tmp_path / "alone"
    assert main(["report", str(dirs), "--out", str(full), "--reps", "300"]) == 0
    assert main(["report", str(clone), "--out", str(alone), "--reps", "300"]) == 0
    a, b = (json.loads((d / "report.json").read_text()) for d in (full, alone))
    for key in ("settings", "improvement", "profile", "left_out", "peak"):
        assert a[key] == b[key], key
    assert a["curve"] == b["curve"]
    assert a["curve"]["settings"]
    again = _sweep(_spec(tmp_path), clone, "--jobs", "1")
    stdout, _ = again.communicate(timeout=120)
    assert again.returncode == 0, stdout
    assert "4 finished, 0 to run" in stdout
    assert not list(clone.glob("*/seed?"))  # nothing launched


def test_a_sweep_writes_the_records_its_finished_runs_lack(uninterrupted, tmp_path):
    """Runs finished by a sweep before records existed (or killed before writing theirs)."""
    out = tmp_path / "out"
    shutil.copytree(uninterrupted, out, ignore=shutil.ignore_patterns(".lock"))
    wanted = {p.name: p.read_bytes() for p in out.glob("mode=pure/seed?.record.json")}
    for path in out.glob("mode=pure/seed?.record.json"):
        path.unlink()
    proc = _sweep(_spec(tmp_path), out, "--jobs", "1")
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, stdout
    assert "4 finished, 0 to run" in stdout
    assert {p.name: p.read_bytes() for p in out.glob("mode=pure/seed?.record.json")} == wanted


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("summary"), r"field 'summary' = None is missing or wrong"),
        (lambda r: r.update(version=99), r"record version 99; this evo_svpg reads 1"),
        (lambda r: r.update(seed=7), r"the record of seed 7, not 0"),
        (lambda r: r["curves"]["best"].pop(), r"curves must hold .* of one length"),
        (lambda r: r["curves"].pop("mean"), r"curves must hold"),
    ],
)
def test_a_broken_record_is_refused_naming_the_file_and_the_problem(
    uninterrupted, tmp_path, change, message
):
    from evo_svpg.sweep_records import read_record

    path = tmp_path / "seed0.record.json"
    record = json.loads((uninterrupted / "mode=pure" / "seed0.record.json").read_text())
    change(record)
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=message) as info:
        read_record(path, "mode=pure", 0)
    assert str(path) in str(info.value)


def test_further_metrics_get_a_column_of_iqms_from_the_runs_that_have_them(uninterrupted, tmp_path):
    """``last_bandwidth`` (the kernel's, in summary.json's operator diagnostics) only the SVPG
    runs have: the independent workers' cell says so, and does not count them as zeros."""
    args = ["report", str(uninterrupted), "--out", str(tmp_path), "--reps", "300"]
    extra = ["--metric", "fresh_mean_particle_return", "--metric", "last_bandwidth"]
    assert main([*args, "--metric", "final_mean_particle_return", *extra]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["metric"] == "final_mean_particle_return"
    more = report["more_metrics"]
    for metric in ("fresh_mean_particle_return", "last_bandwidth"):
        for name, row in more[metric].items():
            values = [
                json.loads((uninterrupted / name / f"seed{s}" / "summary.json").read_text())[metric]
                for s in (0, 1)
            ]
            assert row["scores"] == values
            assert row["iqm"] == pytest.approx(scipy.stats.trim_mean(values, 0.25), rel=1e-12)
            assert (row["runs"], row["finished"]) == (2, 2)
    assert set(more["last_bandwidth"]) == {"mode=pure"}
    text = (tmp_path / "report.md").read_text()
    assert "| mode=independent | " in text
    assert text.count("no run has it") == 1
    assert main([*args, "--metric", "last_bandwidth", "--metric", "last_bandwidth"]) == 2


def test_a_record_of_other_keys_is_refused_naming_them(uninterrupted, tmp_path, capsys):
    """A stale record (the spec changed after sweep.json was removed) is not taken as this
    run's: the sweep names the record and the keys, and runs nothing."""
    out = tmp_path / "out"
    shutil.copytree(uninterrupted, out, ignore=shutil.ignore_patterns(".lock"))
    (out / "sweep.json").unlink()
    longer = _spec(tmp_path, SPEC.replace("iterations = 6", "iterations = 8"))
    assert main(["sweep", str(longer), "--out", str(out), "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert "seed0.record.json was made with other keys (iterations: [6] there, [8] now)" in err
    assert json.loads((out / "mode=pure" / "seed0" / "summary.json").read_text())["iterations"] == 6


def test_run_cli_adds_its_seconds_whatever_the_exit(tmp_path):
    from evo_svpg.sweep import run_cli

    log, total = tmp_path / "x.log", tmp_path / "x.seconds"
    code, first = run_cli(["modes"], str(log), str(total))
    assert code == 0
    assert float(total.read_text()) == pytest.approx(first, abs=2e-3)
    code, second = run_cli(["run", "--particles", "0"], str(log), str(total))
    assert code == 2
    assert float(total.read_text()) == pytest.approx(first + second, abs=4e-3)


def test_a_sweep_stopped_by_ctrl_c_keeps_the_seconds_of_its_cut_runs(tmp_path):
    """The sweep stops waiting for its runs on Ctrl-C; their time is counted all the same."""
    spec, out = _spec(tmp_path), tmp_path / "out"
    proc = _sweep(spec, out, "--jobs", "1", start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(out.glob("*/seed*/checkpoint.pt")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout
    cut = [p for p in out.glob("*/seed?") if not p.with_name(p.name + ".record.json").exists()]
    assert cut, stdout
    for run in cut:
        assert float(run.with_name(run.name + ".seconds").read_text()) > 0
