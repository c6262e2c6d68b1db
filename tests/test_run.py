"""End to end through the CLI and the engine: outputs, determinism, resume, failure handling."""

import csv
import json
import logging
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from evo_svpg.callbacks import Callback, Checkpointer, MetricsCSV
from evo_svpg.checkpoint import load_checkpoint
from evo_svpg.cli import check_run_flags, main
from evo_svpg.config import RunConfig
from evo_svpg.engine import build_run
from evo_svpg.loop import train
from evo_svpg.modes import MODES, mode_operators
from evo_svpg.plot import load_curves
from evo_svpg.sampler import NonFiniteError

TINY = [
    "--particles", "3", "--steps-per-particle", "200", "--envs-per-particle", "4",
    "--hidden-sizes", "16,16", "--iterations", "4", "--seed", "7",
]  # fmt: skip
# Settings of the evolutionary modes that act within TINY's 4 iterations of 3 particles.
TINY_EXTENSIONS = [
    "--select-every", "2", "--select-fraction", "0.34", "--evolution-every", "2",
    "--evolution-fraction", "0.34", "--erl-sync-every", "1", "--erl-population", "5",
    "--cem-candidates", "4", "--cem-elites", "2",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]


def _rows(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _run(*args: str) -> int:
    return main(["run", *args])


class CountingEnv:
    """Counts, at the env boundary, the transitions a run really uses.

    ``first_episode_only``: only transitions of each slot's first episode after a ``reset``
    count (what an evaluator of fresh episodes uses); otherwise every transition counts (the
    sampler uses every step of its never-reset envs).
    """

    def __init__(self, env, first_episode_only: bool, counter: list[int]) -> None:
        self.env, self.first_only, self.counter = env, first_episode_only, counter
        self.running = np.ones(env.num_envs, dtype=bool)

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, seed=None):
        self.running[:] = True
        return self.env.reset(seed=seed)

    def step(self, actions):
        res = self.env.step(actions)
        self.counter[0] += int(self.running.sum()) if self.first_only else self.env.num_envs
        if self.first_only:
            self.running &= ~(res.terminated | res.truncated)
        return res


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_runs_from_the_cli_and_counts_env_steps_honestly(mode, tmp_path, monkeypatch):
    import evo_svpg.engine
    import evo_svpg.evaluation

    used = [0]
    for module, first_only in ((evo_svpg.engine, False), (evo_svpg.evaluation, True)):
        make = module.make_batched_env
        monkeypatch.setattr(
            module,
            "make_batched_env",
            lambda *a, make=make, first_only=first_only, **k: CountingEnv(
                make(*a, **k), first_only, used
            ),
        )
    out = tmp_path / mode
    assert _run("--mode", mode, *TINY, *TINY_EXTENSIONS, "--out", str(out)) == 0
    rows = _rows(out)
    policies = 1 if mode == "joint" else 3
    assert len(rows) == 4 * policies
    steps = [int(r["env_steps"]) for r in rows]
    summary = json.loads((out / "summary.json").read_text())
    # Every transition taken by the sampler and every evaluated candidate's episode is counted;
    # the final fresh evaluation's episodes are measurement, counted apart.
    assert summary["fresh_env_steps"] > 0
    assert steps[-1] + summary["fresh_env_steps"] == used[0]
    assert len(summary["fresh_particle_returns"]) == policies
    assert ("fresh_erl_champion_return" in summary) == (mode == "erl")
    # Each diagnostic's value at the latest iteration that logged it, NaN as null.
    with (out / "scalars.csv").open() as fh:
        logged = sorted(csv.DictReader(fh), key=lambda r: int(r["iteration"]))
    latest = {f"last_{r['name']}": float(r["value"]) for r in logged}
    reported = {k: math.nan if v is None else v for k, v in summary.items() if k[:5] == "last_"}
    assert latest
    assert reported == pytest.approx(latest, nan_ok=True)
    for row in rows:  # the rollouts alone are 3 policies' worth × 200 steps per iteration
        assert int(row["env_steps"]) >= int(row["iteration"]) * 3 * 200
    uses_evaluation = mode in ("cem-per-particle", "cmaes-per-particle", "erl")
    assert (steps[-1] > 4 * 3 * 200) == uses_evaluation
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["mode"] == mode
    assert config["resolved"]["policies"] == policies
    if mode in ("select", "evolution"):  # the period actually run, not the default
        assert "Every(2, " in config["resolved"]["operators"]
    assert (out / "checkpoint.pt").exists()
    assert (out / "summary.json").exists()
    assert any((out / "tensorboard").iterdir())


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_resumes_to_the_same_metrics_and_diagnostics(mode, tmp_path):
    # A2C exercises the most state (critic, its Adam); modes that refuse it run REINFORCE.
    try:
        check_run_flags(["--mode", mode, *TINY, *TINY_EXTENSIONS, "--estimator", "a2c"])
        estimator = "a2c"
    except ValueError as exc:  # the modes whose operators set an episode-level signal
        estimator = "reinforce" if "episode-level signal" in str(exc) else str(exc)
    args = ["--mode", mode, *TINY, *TINY_EXTENSIONS, "--estimator", estimator]
    assert _run(*args, "--out", str(tmp_path / "full")) == 0
    part = tmp_path / "part"
    assert _run(*args, "--iterations", "3", "--out", str(part)) == 0
    assert _run("--resume", str(part), "--iterations", "4") == 0
    for name in ("metrics.csv", "scalars.csv"):
        assert (part / name).read_text() == (tmp_path / "full" / name).read_text(), name
    last = [
        {k: v for k, v in json.loads((d / "summary.json").read_text()).items() if k[:5] == "last_"}
        for d in (part, tmp_path / "full")
    ]
    assert last[0] == last[1]


def test_same_seed_same_metrics_whatever_the_threads_and_another_seed_differs(tmp_path):
    runs = (("a", "7", "2"), ("b", "7", "1"), ("c", "7", "3"), ("d", "8", "2"))
    for name, seed, threads in runs:
        args = ("--seed", seed, "--threads", threads, "--estimator", "a2c")
        assert _run(*TINY, *args, "--out", str(tmp_path / name)) == 0
    a, b, c, d = ((tmp_path / x / "metrics.csv").read_text() for x in "abcd")
    assert a == b == c
    assert a != d
    scalars = {(tmp_path / x / "scalars.csv").read_text() for x in "abc"}
    assert len(scalars) == 1

    def numbers(run: str) -> dict:
        summary = json.loads((tmp_path / run / "summary.json").read_text())
        return {k: v for k, v in summary.items() if "seconds" not in k}

    assert numbers("a") == numbers("b") == numbers("c")
    assert numbers("a")["fresh_mean_particle_return"] is not None


def test_metrics_have_the_documented_columns(tmp_path):
    assert _run(*TINY, "--out", str(tmp_path / "r")) == 0
    rows = _rows(tmp_path / "r")
    for column in ("iteration", "particle", "return_mean", "episodes", "env_steps"):
        assert column in rows[0]
    assert {int(r["particle"]) for r in rows} == {0, 1, 2}
    assert all(float(r["bandwidth"]) > 0 for r in rows)  # pure mode logs its kernel bandwidth


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from evo_svpg.callbacks import Callback
    from evo_svpg.cli import check_run_flags, main

    class KillAt(Callback):
        def on_iteration(self, run, record):
            if record.iteration == 5:
                os.kill(os.getpid(), signal.SIGKILL)

    import evo_svpg.cli as cli
    cli.Progress = lambda: KillAt()  # the last callback: rows and checkpoints are written first
    sys.exit(main(sys.argv[1:]))
    """
)


def test_resume_after_a_hard_kill_equals_an_uninterrupted_run(tmp_path):
    args = [*TINY, "--iterations", "7", "--checkpoint-every", "2", "--estimator", "a2c"]
    assert _run(*args, "--out", str(tmp_path / "full")) == 0
    killed = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, "run", *args, "--out", str(killed)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    assert max(int(r["iteration"]) for r in _rows(killed)) == 5  # row 5 written, then killed
    assert load_checkpoint(killed / "checkpoint.pt")["iteration"] == 4
    assert _run("--resume", str(killed)) == 0
    full = (tmp_path / "full" / "metrics.csv").read_text()
    assert (killed / "metrics.csv").read_text() == full


def test_ctrl_c_saves_the_last_completed_iteration_and_resume_matches(tmp_path):
    cfg = RunConfig(
        particles=3, steps_per_particle=200, envs_per_particle=4, hidden_sizes=(16, 16),
        iterations=6, seed=3, checkpoint_every=10,
    )  # fmt: skip
    assert _run(*TINY, "--seed", "3", "--iterations", "6", "--out", str(tmp_path / "full")) == 0

    class CtrlC(Callback):
        def on_iteration(self, run, record):
            if record.iteration == 4:
                raise KeyboardInterrupt

    out = tmp_path / "interrupted"
    out.mkdir()
    run = build_run(cfg)
    (out / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
    with pytest.raises(KeyboardInterrupt):
        train(run, [MetricsCSV(out), Checkpointer(out, cfg.checkpoint_every), CtrlC()])
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 4
    assert _run("--resume", str(out)) == 0
    assert (out / "metrics.csv").read_text() == (tmp_path / "full" / "metrics.csv").read_text()


def test_non_finite_gradient_stops_with_the_iteration_and_keeps_the_last_checkpoint(tmp_path):
    cfg = RunConfig(
        particles=2, steps_per_particle=100, envs_per_particle=2, hidden_sizes=(8,),
        iterations=5, checkpoint_every=1,
    )  # fmt: skip
    run = build_run(cfg)
    real = run.ctx.estimator.gradient
    calls = {"n": 0}

    def poisoned(theta, rollout):
        calls["n"] += 1
        grad = real(theta, rollout)
        return grad * float("nan") if calls["n"] == 3 else grad

    run.ctx.estimator.gradient = poisoned
    with pytest.raises(NonFiniteError, match=r"iteration 3"):
        train(run, [Checkpointer(tmp_path, 1)])
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["iteration"] == 2
    assert torch.isfinite(saved["params"]).all()


def test_short_pure_run_clearly_improves_over_its_first_iteration(tmp_path):
    out = tmp_path / "learn"
    args = ["--particles", "4", "--steps-per-particle", "2000", "--envs-per-particle", "10"]
    assert _run(*args, "--iterations", "10", "--seed", "1", "--out", str(out)) == 0
    curves = load_curves(out)
    assert curves["mean"][-1] > 2 * curves["mean"][0], curves["mean"]
    assert curves["best"][-1] > 60


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "nope"], r"invalid choice: 'nope' \(choose from .*pure.*cem-per-particle.*erl"),
        (["--mode", "cem-per-particle", "--cem-candidates", "7"], r"cem_candidates=7 must be even"),
        (
            ["--mode", "cmaes-per-particle", "--cem-elites", "12"],
            r"cem_elites=12 must be <= cem_candidates \+ 1 = 9",
        ),
        (["--cem-candidates", "-2"], r"cem_candidates=-2 must be a positive integer"),  # any mode
        (["--mode", "select", "--select-fraction", "0.01"], r"select_fraction=0.01 replaces .* 0"),
        (
            ["--mode", "erl", "--erl-migrants", "9"],
            r"erl_migrants=9 must be <= erl_population - elites = 8",
        ),
        (
            ["--mode", "erl", "--particles", "3", "--erl-migrants", "5"],
            r"erl_migrants=5 must be <= particles=3",
        ),
        (["--budget", "-1"], r"budget=-1 must be an integer >= 0"),
        (
            ["--budget", "8000001"],
            r"budget=8,000,001 may never be reached: iterations=50 of "
            r"160,000 rollout steps each stop the run at 8,000,000 env steps",
        ),
        (["--estimator", "ppo"], r"choose from .*'a2c', 'linear-baseline', 'reinforce'"),
        (["--env", "NoSuchEnv-v9"], r"CartPole-v1.*Pendulum-v1|Pendulum-v1.*CartPole-v1"),
        (["--bandwidth", "wide"], r"bandwidth='wide'.*'svgd', 'svpg_code'"),
        (["--bandwidth", "-1"], r"bandwidth=-1.0 must be a positive number"),
        (["--alpha", "0"], r"alpha=0.0 must be a finite number > 0"),
        (["--particles", "0"], r"particles=0 must be a positive integer"),
        (["--steps-per-particle", "-5"], r"steps_per_particle=-5 must be a positive integer"),
        (["--steps-per-particle", "101"], r"must be a multiple of envs_per_particle=20"),
        (["--device", "cuda"], r"device='cuda'"),
    ],
)
def test_bad_input_gets_a_clear_error_naming_the_valid_choices(args, message, capsys, tmp_path):
    try:
        code = _run(*args, "--out", str(tmp_path / "x"))
    except SystemExit as exc:  # argparse's own choice errors
        code = exc.code
    assert code == 2
    assert re.search(message, capsys.readouterr().err), args


def test_config_file_is_loaded_flags_override_and_errors_name_the_problem(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text('particles = 2\nsteps_per_particle = 100\nenvs_per_particle = 2\n'
                    'iterations = 1\nhidden_sizes = [8]\nalpha = 3.0\n')  # fmt: skip
    assert _run("--config", str(good), "--alpha", "5", "--out", str(tmp_path / "r")) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert (saved["particles"], saved["svgd"]["alpha"], saved["hidden_sizes"]) == (2, 5.0, [8])

    bad_key = tmp_path / "bad.toml"
    bad_key.write_text("particle = 3\n")
    assert _run("--config", str(bad_key)) == 2
    assert re.search(r"unknown key\(s\) \['particle'\].*'particles'", capsys.readouterr().err)

    assert _run("--config", str(tmp_path / "missing.toml")) == 2
    assert "cannot read config" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("particles = [\n")
    assert _run("--config", str(broken)) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_seed_config_file_is_the_default_setting():
    assert RunConfig.from_toml(ROOT / "configs" / "cartpole_seed.toml") == RunConfig()


RUN_CONFIGS = [  # configs/studies/ and configs/sweeps/ hold sweep specs: tests/test_sweep.py
    p
    for p in sorted((ROOT / "configs").rglob("*.toml"))
    if p.parent.name not in ("studies", "sweeps")
]


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_run_config_is_valid(path):
    from evo_svpg.engine import check_run_config

    check_run_config(RunConfig.from_toml(path))  # keys, values, and what building refuses


def test_out_dir_of_an_existing_run_is_refused_and_resume_refuses_config_changes(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert _run(*TINY, "--iterations", "1", "--out", out) == 0
    assert _run(*TINY, "--out", out) == 2
    assert "--resume" in capsys.readouterr().err
    assert _run("--resume", out, "--alpha", "3") == 2
    assert "only ['iterations'" in capsys.readouterr().err
    assert _run("--resume", out, "--iterations", "2") == 0  # extending a finished run is fine
    assert max(int(r["iteration"]) for r in _rows(tmp_path / "r")) == 2


@pytest.mark.filterwarnings("ignore:.*CartPole-v0 is out of date")
def test_generic_gymnasium_env_runs_and_resumes_with_a_warning(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="evo_svpg")
    out = str(tmp_path / "g")
    small = ["--particles", "2", "--steps-per-particle", "100", "--envs-per-particle", "2"]
    assert _run("--env", "CartPole-v0", *small, "--iterations", "2", "--out", out) == 0
    assert "generic" in caplog.text
    assert _run("--resume", out, "--iterations", "3") == 0
    assert "not bit-identical" in caplog.text
    assert max(int(r["iteration"]) for r in _rows(tmp_path / "g")) == 3


def test_plot_writes_a_png_with_best_and_mean_curves(tmp_path):
    out = tmp_path / "r"
    assert _run(*TINY, "--out", str(out)) == 0
    assert main(["plot", str(out)]) == 0
    png = out / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = load_curves(out)
    returns = np.array([float(r["return_mean"]) for r in _rows(out)]).reshape(4, 3)
    episodes = np.array([int(r["episodes"]) for r in _rows(out)]).reshape(4, 3)
    # Each particle's episodes pooled over the pooling window: CartPole's 500-step limit spans
    # 10 iterations of 50 steps per env, so here every curve point pools iterations 1..t.
    assert json.loads((out / "config.json").read_text())["resolved"]["pooling_window"] == 10
    totals = np.cumsum(np.nan_to_num(returns) * episodes, axis=0)
    pooled = totals / np.cumsum(episodes, axis=0)
    np.testing.assert_allclose(curves["best"], pooled.max(axis=1))
    np.testing.assert_allclose(curves["mean"], pooled.mean(axis=1))


def test_readme_mode_table_lists_exactly_the_registered_modes():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("| mode | what it is | operators |")
    table = readme[start : readme.index("\n\n", start)]
    rows = re.findall(r"^\| `([a-z-]+)` \|.*\| ([^|]+) \|$", table, flags=re.M)
    assert [name for name, _ in rows] == list(MODES)
    for name, operators in rows:  # the operators column is what the registry builds
        assert operators == mode_operators(name), name


def test_ci_installs_exactly_as_the_readme_says():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for step in ("pip install -q torch==2.13.0", 'pip install -q -e ".[test,ray,study]"'):
        assert step in ci
        assert step.replace(" -q", "") in readme
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
