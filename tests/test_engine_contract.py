"""The loop's side of the operator contract: returned states are used, state is taken only when
a checkpoint is written, and a first Ctrl-C lets the iteration finish."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest
import torch

from evo_svpg.callbacks import Checkpointer
from evo_svpg.checkpoint import load_checkpoint
from evo_svpg.config import RunConfig
from evo_svpg.engine import build_run
from evo_svpg.loop import train
from evo_svpg.operators import Stateless


def _small(**keys) -> RunConfig:
    base = {"particles": 2, "steps_per_particle": 40, "envs_per_particle": 2, "iterations": 4}
    return RunConfig(**{**base, "hidden_sizes": (8,), **keys})


class Halve(Stateless):
    """Returns a new state whose params are half the old ones."""

    def __call__(self, state, ctx):
        return dataclasses.replace(state, params=state.params / 2)


def test_train_continues_with_the_state_an_operator_returns():
    plain, halved = build_run(_small()), build_run(_small(), extra_operators=[Halve()])
    start = halved.state.params.clone()
    train(halved)
    assert halved.state.iteration == 4  # not stuck at iteration 0
    # After the last Adam step the params were halved: far below one Adam step's reach.
    assert halved.state.params.abs().max() < 0.5 * start.abs().max() + 4 * 5e-3
    train(plain)
    assert not torch.equal(plain.state.params, halved.state.params)


class CountsStateDicts(Stateless):
    calls = 0

    def __call__(self, state, ctx):
        return state

    def state_dict(self):
        CountsStateDicts.calls += 1
        return {}


def test_operator_state_is_taken_only_when_a_checkpoint_is_written(tmp_path):
    CountsStateDicts.calls = 0
    run = build_run(_small(iterations=6), extra_operators=[CountsStateDicts()])
    train(run, [Checkpointer(tmp_path, 3)])
    assert CountsStateDicts.calls == 2  # iterations 3 and 6: never a copy per iteration


class SignalDuringIteration(Stateless):
    """Sends ``count`` SIGINTs to this process during iteration ``at``."""

    def __init__(self, at: int, count: int) -> None:
        self.at, self.count = at, count

    def __call__(self, state, ctx):
        if state.current_iteration == self.at:
            for _ in range(self.count):
                os.kill(os.getpid(), signal.SIGINT)
        return state


def test_a_first_ctrl_c_lets_the_iteration_finish_and_saves_it(tmp_path, capsys):
    run = build_run(_small(), extra_operators=[SignalDuringIteration(at=2, count=1)])
    with pytest.raises(KeyboardInterrupt):
        train(run, [Checkpointer(tmp_path, 10)])
    assert run.state.iteration == 2
    assert load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 2
    assert "stopping after this iteration" in capsys.readouterr().err


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_checkpoint_on_disk(tmp_path):
    run = build_run(_small(), extra_operators=[SignalDuringIteration(at=2, count=2)])
    with pytest.raises(KeyboardInterrupt):
        train(run, [Checkpointer(tmp_path, 1)])
    assert not run.at_boundary  # stopped inside iteration 2
    assert load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 1


class RaisesAt(Stateless):
    """A callback stand-in: raises ``exc`` in ``on_iteration`` of iteration ``at``."""

    def __init__(self, at: int, exc: type[BaseException] | None = None, signals: int = 0) -> None:
        self.at, self.exc, self.signals = at, exc, signals

    def on_start(self, run): ...
    def on_end(self, run): ...
    def on_interrupt(self, run, exc): ...
    def on_close(self, run): ...

    def on_iteration(self, run, record):
        if record.iteration == self.at:
            for _ in range(self.signals):
                os.kill(os.getpid(), signal.SIGINT)
            if self.exc is not None:
                raise self.exc


def test_a_checkpoint_is_never_ahead_of_the_callbacks_before_it(tmp_path):
    """A failure while an earlier callback records iteration 2 (a full disk under metrics.csv)
    must not leave a checkpoint of iteration 2 that the metrics lack."""
    run = build_run(_small())
    with pytest.raises(OSError, match="disk full"):
        train(run, [RaisesAt(2, OSError("disk full")), Checkpointer(tmp_path, 10)])
    assert run.at_boundary
    assert not (tmp_path / "checkpoint.pt").exists()


def test_signals_while_callbacks_record_wait_for_the_record(tmp_path):
    run = build_run(_small())
    recorder = RaisesAt(2, signals=2)  # two Ctrl-C while recording iteration 2
    with pytest.raises(KeyboardInterrupt):
        train(run, [recorder, Checkpointer(tmp_path, 10)])
    assert load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 2
