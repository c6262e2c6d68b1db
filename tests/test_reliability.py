"""What a run promises whatever goes wrong: no code from files, one writer, nothing lost, and one
clear line (exit code 2, no traceback, nothing left behind) for every bad input."""

from __future__ import annotations

import csv
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from evo_svpg.callbacks import Callback, Checkpointer, MetricsCSV
from evo_svpg.checkpoint import load_checkpoint, save_checkpoint
from evo_svpg.cli import main
from evo_svpg.config import RunConfig
from evo_svpg.engine import build_run
from evo_svpg.loop import train
from evo_svpg.rundir import RunLock, default_out

TINY = [
    "--particles", "2", "--steps-per-particle", "40", "--envs-per-particle", "2",
    "--hidden-sizes", "8", "--iterations", "3", "--final-eval-episodes", "2",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> int:
    return main(["run", *args])


def _error(capsys) -> str:
    """The run's stderr: exactly one line, no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _iterations(out: Path) -> list[int]:
    with open(out / "metrics.csv", newline="") as fh:
        return sorted({int(row["iteration"]) for row in csv.DictReader(fh)})


class _Boom:
    """Unpickling it runs a command: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- checkpoints carry data, not code --------------------------------------------------------


def test_a_crafted_checkpoint_is_refused_and_nothing_in_it_runs(tmp_path, capsys):
    out = tmp_path / "r"
    assert _run(*TINY, "--out", str(out)) == 0
    marker = tmp_path / "pwned"
    with open(out / "checkpoint.pt", "wb") as fh:
        torch.save({"format_version": 2, "iteration": _Boom(marker)}, fh)
    capsys.readouterr()
    assert _run("--resume", str(out), "--iterations", "4") == 2
    assert re.search(r"checkpoint .*checkpoint\.pt cannot be loaded.*nothing in it was executed",
                     _error(capsys))  # fmt: skip
    assert not marker.exists()
    assert _iterations(out) == [1, 2, 3]  # the finished results are kept


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"cannot be loaded"),
        (b"garbage, not a zip file" * 10, r"cannot be loaded"),
        ("truncate", r"cannot be loaded"),
        (pickle.dumps({"iteration": 3}), r"cannot be loaded"),
        ("old-format", r"format version None"),
    ],
)
def test_damaged_or_foreign_checkpoints_get_one_line_naming_the_file(
    tmp_path, capsys, content, message
):
    out = tmp_path / "r"
    assert _run(*TINY, "--out", str(out)) == 0
    path = out / "checkpoint.pt"
    if content == "truncate":
        path.write_bytes(path.read_bytes()[:2000])
    elif content == "old-format":
        torch.save({"iteration": 3, "params": torch.zeros(2, 3)}, path)
    else:
        path.write_bytes(content)
    capsys.readouterr()
    assert _run("--resume", str(out), "--iterations", "4") == 2
    line = _error(capsys)
    assert str(path) in line
    assert re.search(message, line), line


def test_a_checkpoint_of_another_run_is_refused_naming_the_setting(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run(*TINY, "--out", str(a)) == 0
    assert _run(*TINY, "--alpha", "3", "--out", str(b)) == 0
    (a / "checkpoint.pt").write_bytes((b / "checkpoint.pt").read_bytes())
    capsys.readouterr()
    assert _run("--resume", str(a), "--iterations", "4") == 2
    assert "alpha" in _error(capsys)


@pytest.mark.parametrize(
    "payload",
    [{"format_version": 2, "x": {"__ndarray__": 5}}, {"format_version": 2, "params": 1}],
    ids=["bad-array-tag", "no-iteration"],
)
def test_malformed_checkpoints_get_one_line(tmp_path, capsys, payload):
    out = tmp_path / "r"
    assert _run(*TINY, "--out", str(out)) == 0
    torch.save(payload, out / "checkpoint.pt")
    capsys.readouterr()
    assert _run("--resume", str(out), "--iterations", "4") == 2
    assert str(out / "checkpoint.pt") in _error(capsys)


def test_resume_ignores_blank_lines_in_metrics(tmp_path, capsys):
    out = tmp_path / "r"
    assert _run(*TINY, "--iterations", "2", "--out", str(out)) == 0
    with open(out / "metrics.csv", "a") as fh:
        fh.write("\n")
    assert _run("--resume", str(out), "--iterations", "3") == 0
    assert _iterations(out) == [1, 2, 3]


def test_checkpoint_round_trip_keeps_arrays_and_refuses_objects(tmp_path):
    import numpy as np

    payload = {"a": np.arange(3, dtype=np.uint32), "b": [np.float64(2.5), (1, "x", None)]}
    save_checkpoint(tmp_path / "c.pt", payload)
    loaded = load_checkpoint(tmp_path / "c.pt")
    np.testing.assert_array_equal(loaded["a"], payload["a"])
    assert loaded["a"].dtype == np.uint32
    assert loaded["b"] == [2.5, (1, "x", None)]
    with pytest.raises(TypeError, match="data only"):
        save_checkpoint(tmp_path / "d.pt", {"f": object()})


# -- one writer per run directory -------------------------------------------------------------


def test_a_second_run_into_a_directory_in_use_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    lock = RunLock(out)  # held as a running run holds it
    try:
        assert _run(*TINY, "--out", str(out)) == 2
        line = _error(capsys)
        assert re.search(rf"{re.escape(str(out))} is in use by another run \(pid {os.getpid()}",
                         line)  # fmt: skip
        assert not (out / "config.json").exists()
    finally:
        lock.release()


def test_the_lock_of_a_killed_run_is_stale_and_taken_over(tmp_path):
    out = tmp_path / "r"
    script = f"from evo_svpg.rundir import RunLock; RunLock({str(out)!r}); import os; os._exit(0)"
    out.mkdir()
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT)
    assert "pid" in (out / ".lock").read_text()  # left behind, but no process holds it
    assert _run(*TINY, "--out", str(out)) == 0


def test_concurrent_runs_into_one_out_one_wins_the_other_is_refused(tmp_path):
    out = tmp_path / "r"
    args = [sys.executable, "-m", "evo_svpg.cli", "run", *TINY, "--iterations", "40",
            "--steps-per-particle", "400", "--out", str(out)]  # fmt: skip
    first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(600):  # until the first holds the lock
            if (out / ".lock").exists() and "pid" in (out / ".lock").read_text():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
        assert second.returncode == 2
        assert "in use by another run" in second.stderr or "already holds a run" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=120)
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["iterations"] == 40  # the first run's, untouched by the second


def test_out_never_replaces_files_the_project_did_not_write(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "checkpoint.pt").write_text("my own file")
    (out / "notes.txt").write_text("kept")
    assert _run(*TINY, "--out", str(out)) == 2
    assert "checkpoint.pt" in _error(capsys)
    assert (out / "checkpoint.pt").read_text() == "my own file"
    (out / "checkpoint.pt").unlink()
    (out / "config.json").write_text('{"something": "else"}')
    assert _run(*TINY, "--out", str(out)) == 2
    assert "config.json" in _error(capsys)
    (out / "config.json").unlink()
    assert _run(*TINY, "--out", str(out)) == 0  # other files do not clash
    assert (out / "notes.txt").read_text() == "kept"


def test_default_out_names_never_collide(tmp_path):
    made = {default_out("pure", "evo_svpg/MountainCarSparse-v0", 0, tmp_path) for _ in range(5)}
    assert len(made) == 5
    assert all(p.is_dir() and p.parent == tmp_path for p in made)  # "/" in the id: no subdir


# -- nothing lost ------------------------------------------------------------------------------


def test_resume_without_a_checkpoint_refuses_and_keeps_the_metrics(tmp_path, capsys):
    out = tmp_path / "r"
    assert _run(*TINY, "--out", str(out)) == 0
    before = (out / "metrics.csv").read_text()
    (out / "checkpoint.pt").unlink()
    capsys.readouterr()
    assert _run("--resume", str(out), "--iterations", "5") == 2
    assert "no checkpoint.pt" in _error(capsys)
    assert (out / "metrics.csv").read_text() == before


def test_resume_refuses_fewer_iterations_than_done_and_keeps_the_config(tmp_path, capsys):
    out = tmp_path / "r"
    assert _run(*TINY, "--out", str(out)) == 0
    before = (out / "config.json").read_text()
    capsys.readouterr()
    assert _run("--resume", str(out), "--iterations", "2") == 2
    assert re.search(r"iterations=2 is below the 3 iterations", _error(capsys))
    assert (out / "config.json").read_text() == before


def test_resume_refuses_a_budget_below_the_steps_spent(tmp_path, capsys):
    out = tmp_path / "r"
    assert _run(*TINY, "--out", str(out)) == 0
    before = (out / "config.json").read_text()
    capsys.readouterr()
    assert _run("--resume", str(out), "--budget", "10") == 2
    assert re.search(r"budget=10 is below the 240 env steps", _error(capsys))
    assert (out / "config.json").read_text() == before


def test_a_new_run_that_completes_no_iteration_leaves_its_out_free(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    assert _run(*TINY, "--alpha", "1e-320", "--out", str(out)) == 1  # ∇J/α overflows at once
    assert "non-finite update direction at iteration 1" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing that blocks --out
    import evo_svpg.cli as cli

    class CtrlCInFirstIteration(Callback):
        def on_start(self, run):
            raise KeyboardInterrupt

    monkeypatch.setattr(cli, "Progress", CtrlCInFirstIteration)
    assert _run(*TINY, "--out", str(out)) == 130
    assert "nothing to save: the same command starts it again" in capsys.readouterr().out

    class BugInFirstIteration(Callback):  # an unexpected error: raised, and no stub left
        def on_start(self, run):
            raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "Progress", BugInFirstIteration)
    with pytest.raises(RuntimeError, match="a bug"):
        _run(*TINY, "--out", str(out))
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    monkeypatch.undo()
    assert _run(*TINY, "--out", str(out)) == 0


def test_a_second_ctrl_c_while_saving_cannot_cut_the_save_short(tmp_path):
    cfg = RunConfig(particles=2, steps_per_particle=40, envs_per_particle=2, hidden_sizes=(8,),
                    iterations=5, checkpoint_every=10)  # fmt: skip

    class CtrlC(Callback):
        def on_iteration(self, run, record):
            if record.iteration == 2:
                raise KeyboardInterrupt

    class SecondCtrlC(Callback):  # the user presses Ctrl-C again as the saving starts
        def on_interrupt(self, run, exc):
            os.kill(os.getpid(), signal.SIGINT)

    closed = []

    class Closer(Callback):
        def on_close(self, run):
            closed.append(True)

    with pytest.raises(KeyboardInterrupt):
        train(build_run(cfg), [SecondCtrlC(), Checkpointer(tmp_path, 10), Closer(), CtrlC()])
    assert load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 2
    assert closed == [True]


def test_ctrl_c_reports_what_was_saved(tmp_path, capsys, monkeypatch):
    import evo_svpg.cli as cli

    class CtrlCAt2(Callback):
        def on_iteration(self, run, record):
            if record.iteration == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(cli, "Progress", CtrlCAt2)
    out = tmp_path / "r"
    assert _run(*TINY, "--checkpoint-every", "10", "--out", str(out)) == 130
    assert "interrupted; saved after iteration 2" in capsys.readouterr().out
    assert _run("--resume", str(out)) == 0  # iteration 3 only: CtrlCAt2 fires at 2
    assert _iterations(out) == [1, 2, 3]


def test_metrics_of_a_run_starting_at_zero_are_never_overwritten(tmp_path):
    cfg = RunConfig(particles=2, steps_per_particle=40, envs_per_particle=2, hidden_sizes=(8,),
                    iterations=1)  # fmt: skip
    (tmp_path / "metrics.csv").write_text("iteration,particle\n1,0\n")
    with pytest.raises(ValueError, match="already has 1 rows"):
        train(build_run(cfg), [MetricsCSV(tmp_path)])
    assert (tmp_path / "metrics.csv").read_text() == "iteration,particle\n1,0\n"


# -- every bad input: one line, exit code 2, nothing left behind -------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("seed = 1.5", r"seed=1.5 must be an integer >= 0"),
        ("seed = true", r"seed=True must be an integer >= 0"),
        ("seed = -1", r"seed=-1 must be an integer >= 0"),
        ("env = 5", r"env=5 must be a gymnasium id"),
        ('particles = "many"', r"particles='many' must be a positive integer"),
        ("alpha = nan", r"alpha=nan must be a finite number > 0"),
        ('hidden_sizes = "a"', r"hidden_sizes='a' must be a non-empty list"),
        ('device = "meta"', r"device='meta' is not supported; choose 'cpu' or 'cuda"),
        ("final_eval_episodes = -2", r"final_eval_episodes=-2 must be an integer >= 0"),
        ("hidden_sizes = [true]", r"hidden_sizes=\[True\] must be a non-empty list"),
        ("hidden_sizes = 8", r"hidden_sizes=8 must be a non-empty list"),
        ("particles = 100000000", r"particles=100000000 × steps_per_particle=10000 needs at least"),
        ("particles = 9223372036854775807", r"particles=9223372036854775807 × .* needs at least"),
    ],
)
def test_bad_config_values_get_one_line_and_leave_nothing(tmp_path, capsys, toml, message):
    config = tmp_path / "c.toml"
    config.write_text(toml + "\n")
    out = tmp_path / "never"
    assert _run("--config", str(config), "--out", str(out)) == 2  # refused before any run
    assert re.search(message, _error(capsys))
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "meta"], r"device='meta' is not supported"),
        (["--seed", "-3"], r"seed=-3 must be an integer >= 0"),
        (["--env", "LunarLander-v3"], r"LunarLander-v3 needs a package that is not installed"),
        (["--env", "NoSuchEnv-v0"], r"unknown environment id 'NoSuchEnv-v0'"),
    ],
)
def test_bad_flags_get_one_line_and_leave_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert _run(*TINY, *args, "--out", str(out)) == 2
    assert re.search(message, _error(capsys))
    assert not out.exists()


def test_bad_out_and_resume_directories_get_one_line(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert _run(*TINY, "--out", str(a_file)) == 2
    assert "is a file, not a directory" in _error(capsys)
    assert _run(*TINY, "--out", str(a_file / "sub")) == 2
    assert str(a_file / "sub") in _error(capsys)
    assert _run("--resume", str(tmp_path / "missing")) == 2
    assert "not a run directory" in _error(capsys)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    assert _run("--resume", str(tmp_path / "bad")) == 2
    assert "config.json is unreadable" in _error(capsys)


def test_plot_refuses_foreign_files_and_unwritable_targets(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "metrics.csv").write_text("a,b\n1,2\n")
    assert main(["plot", str(foreign)]) == 2
    assert "is not a run's metrics.csv (no column 'iteration')" in _error(capsys)
    run = tmp_path / "r"
    assert _run(*TINY, "--out", str(run)) == 0
    capsys.readouterr()
    assert main(["plot", str(run), "--out", str(tmp_path / "curves")]) == 2
    assert "must end in one of .png, .pdf, .svg" in _error(capsys)
    assert not (tmp_path / "curves.png").exists()
    (tmp_path / "afile").write_text("x")
    assert main(["plot", str(run), "--out", str(tmp_path / "afile" / "x.png")]) == 2
    assert "afile is a file, not a directory" in _error(capsys)
    assert main(["plot", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert f"wrote {tmp_path / 'c.png'}" in capsys.readouterr().out
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_of_a_run_with_a_foreign_config_is_an_error(tmp_path, capsys):
    run = tmp_path / "r"
    assert _run(*TINY, "--out", str(run)) == 0
    (run / "config.json").write_text("[1, 2]")
    capsys.readouterr()
    assert main(["plot", str(run)]) == 2
    assert "is not a run's config.json" in _error(capsys)


def test_plot_of_an_empty_or_missing_run_is_an_error_not_a_figure(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.csv").write_text("iteration,particle,return_mean,episodes,env_steps\n")
    assert main(["plot", str(empty)]) == 2
    assert "no iterations yet" in _error(capsys)
    assert not (empty / "learning_curves.png").exists()
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "no metrics.csv" in _error(capsys)


def test_summary_is_strict_json_even_when_no_episode_ended(tmp_path):
    out = tmp_path / "r"  # MountainCar's 200-step episodes never end in 3 × 20 steps per env
    assert _run(*TINY, "--env", "MountainCar-v0", "--out", str(out)) == 0
    text = (out / "summary.json").read_text()
    assert "NaN" not in text
    summary = json.loads(text)
    assert summary["final_best_particle_return"] is None
    assert summary["fresh_mean_particle_return"] == -200.0  # fresh episodes do end


def test_sigterm_saves_like_ctrl_c(tmp_path):
    out = tmp_path / "r"
    script = textwrap.dedent(
        """
        import os, signal, sys
        import evo_svpg.cli as cli
        from evo_svpg.callbacks import Callback

        class TermAt2(Callback):
            def on_iteration(self, run, record):
                if record.iteration == 2:
                    os.kill(os.getpid(), signal.SIGTERM)

        cli.Progress = TermAt2
        sys.exit(cli.main(sys.argv[1:]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "run", *TINY, "--checkpoint-every", "10", "--out",
         str(out)], capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 143, proc.stderr
    assert "terminated; saved after iteration 2" in proc.stdout
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 2


def test_a_stop_before_the_first_checkpoint_keeps_the_recorded_iterations(tmp_path, capsys):
    """A NaN in iteration 3 of a new run whose first checkpoint would come at 5: the two
    recorded iterations (which show the divergence) stay, and the message says they cannot be
    resumed; a NaN in iteration 1 leaves nothing."""
    import evo_svpg.operators.gradient as gradient

    out = tmp_path / "r"
    real = gradient.PolicyGradient.__call__

    def poisoned(self, state, ctx):
        state = real(self, state, ctx)
        if state.current_iteration == 3:
            state.grads = state.grads * float("nan")
        return state

    gradient.PolicyGradient.__call__ = poisoned
    try:
        assert _run(*TINY, "--checkpoint-every", "5", "--out", str(out)) == 1
    finally:
        gradient.PolicyGradient.__call__ = real
    captured = capsys.readouterr()
    assert "non-finite" in captured.err
    assert "2 recorded iteration(s) stay" in captured.out
    assert _iterations(out) == [1, 2]
    assert not (out / "checkpoint.pt").exists()
