"""Run directories of the previous release resume, and keyed checkpoints name a mismatch."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from evo_svpg.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from evo_svpg.cli import main
from evo_svpg.config import RunConfig
from evo_svpg.engine import build_run
from evo_svpg.loop import run_iteration
from evo_svpg.run_state import load_run_state, run_state_dict

OLD_RUNS = Path(__file__).resolve().parent / "data" / "v0.1_runs"


@pytest.mark.parametrize("name", sorted(p.name for p in OLD_RUNS.iterdir() if p.is_dir()))
def test_a_run_directory_of_the_previous_release_resumes_to_its_metrics(name, tmp_path, capsys):
    run_dir = tmp_path / name
    shutil.copytree(OLD_RUNS / name, run_dir)
    assert load_checkpoint(run_dir / "checkpoint.pt")["format_version"] == 2
    assert main(["run", "--resume", str(run_dir), "--iterations", "4"]) == 0
    assert "resuming" in capsys.readouterr().out
    for file in ("metrics.csv", "scalars.csv"):
        expected = (OLD_RUNS / name / "expected" / file).read_text()
        assert (run_dir / file).read_text() == expected, file
    assert load_checkpoint(run_dir / "checkpoint.pt")["format_version"] == FORMAT_VERSION


def _small(**keys) -> RunConfig:
    return RunConfig(particles=2, steps_per_particle=40, envs_per_particle=2, hidden_sizes=(8,),
                     iterations=3, **keys)  # fmt: skip


def test_component_state_is_keyed_and_a_mismatch_names_both_sides(tmp_path):
    run = build_run(_small(mode="select", select_every=1, select_fraction=0.5))
    run_iteration(run)
    payload = run_state_dict(run)
    assert list(payload["components"]) == [
        "0:CollectRollouts", "1:PolicyGradient", "2:SteinDirection", "3:AdamAscent",
        "4:TournamentReplacement", "estimator:Reinforce",
    ]  # fmt: skip
    save_checkpoint(tmp_path / "c.pt", payload)
    other = build_run(_small(mode="select", select_every=1, select_fraction=0.5))
    loaded = load_checkpoint(tmp_path / "c.pt")
    loaded["components"]["5:Extra"] = loaded["components"].pop("4:TournamentReplacement")
    with pytest.raises(ValueError, match=r"holds the state of .*'5:Extra'.*components are .*"
                       r"'4:TournamentReplacement'"):  # fmt: skip
        load_run_state(other, loaded, source="c.pt")
    load_run_state(other, load_checkpoint(tmp_path / "c.pt"))
    assert other.state.iteration == 1


def test_a_setting_added_later_does_not_block_resuming(tmp_path):
    """A checkpoint lacking a key (a section registered since) compares it at its default."""
    run = build_run(_small())
    run_iteration(run)
    payload = run_state_dict(run)
    del payload["config"]["lr"]  # as if `lr` had not existed when it was saved
    save_checkpoint(tmp_path / "c.pt", payload)
    other = build_run(_small())
    load_run_state(other, load_checkpoint(tmp_path / "c.pt"))
    assert other.state.iteration == 1
    changed = load_checkpoint(tmp_path / "c.pt")
    changed["config"]["alpha"] = 3.0
    with pytest.raises(ValueError, match=r"other settings \(alpha: \[3.0\] there, \[10.0\] here"):
        load_run_state(build_run(_small()), changed, source="c.pt")


def test_a_resumed_run_shares_no_state_with_the_payload():
    first = build_run(_small())
    run_iteration(first)
    second = build_run(_small())
    load_run_state(second, run_state_dict(first))
    adam_first, adam_second = first.operators[3], second.operators[3]
    assert adam_first.m is not None
    assert adam_second.m is not adam_first.m
    assert second.state.params.data_ptr() != first.state.params.data_ptr()


def test_a_per_particle_qd_checkpoint_from_before_sharded_qd_tests_resumes_exactly():
    """Until 2026-12-01 the QD success tests drew from one shared stream whatever the run's
    streams. A per-particle run saved then resumes with such tests, as it would have gone on."""
    from dataclasses import replace

    from evo_svpg.operators.measure import MeasureQD

    keys = {"particles": 3, "steps_per_particle": 300, "envs_per_particle": 2, "iterations": 3,
            "hidden_sizes": (8,), "mode": "novelty", "env": "evo_svpg/MountainCarSparse-v0",
            "qd_every": 1, "max_episode_steps": 60}  # fmt: skip

    def old_style():  # the QD tester as that code built it
        run = build_run(RunConfig(**keys))
        measure = next(op for op in run.operators if isinstance(op, MeasureQD))
        measure.evaluator = replace(measure.tester, random_streams="shared").build()
        return run

    uninterrupted, saved = old_style(), old_style()
    run_iteration(uninterrupted)
    run_iteration(saved)
    payload = run_state_dict(saved)
    (tester,) = [v["evaluator"] for k, v in payload["components"].items() if "MeasureQD" in k]
    assert "calls" not in tester  # the old form: a shared generator
    resumed = build_run(RunConfig(**keys))  # today's: per-particle tests, until it loads that
    load_run_state(resumed, payload)
    a, b = run_iteration(uninterrupted), run_iteration(resumed)
    np.testing.assert_equal(a.scalars, b.scalars)
    assert any(k.startswith("det_return_") for k in a.scalars)
