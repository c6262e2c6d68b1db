"""sep-CEM math and the per-particle CEM / CMA-ES operators, on known fitness functions."""

import math
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from evo_svpg.cem import log_rank_weights, mirrored_samples, next_floor, sep_cem_update
from evo_svpg.checkpoint import load_checkpoint, save_checkpoint
from evo_svpg.operators import Context, PopulationState
from evo_svpg.operators.variation import CEMAroundParticles, CMAESAroundParticles
from evo_svpg.policy import PolicySpec


class QuadraticEvaluator:
    """Fitness −‖θ − target‖² of every row; each call is one batch and costs 10 steps per row."""

    def __init__(self, target: np.ndarray) -> None:
        self.target, self.calls, self.batch_sizes = target, 0, []

    def returns(self, theta: np.ndarray) -> tuple[np.ndarray, int]:
        self.calls += 1
        self.batch_sizes.append(theta.shape[0])
        return -((theta - self.target) ** 2).sum(axis=1).astype(np.float64), 10 * theta.shape[0]


class RecordingEvaluator(QuadraticEvaluator):
    """A :class:`QuadraticEvaluator` that keeps a copy of every batch it evaluates."""

    def __init__(self, target: np.ndarray) -> None:
        super().__init__(target)
        self.batches = []

    def returns(self, theta: np.ndarray) -> tuple[np.ndarray, int]:
        self.batches.append(theta.copy())
        return super().returns(theta)


def _ctx(evaluator) -> Context:
    return Context(PolicySpec(2, 2, True, (3,)), None, None, 0, evaluator)


def _weights_only_roundtrip(state: dict) -> dict:
    """Through the real checkpoint layer: saved, then read with ``weights_only=True``."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "checkpoint.pt"
        save_checkpoint(path, {"state": state})
        return load_checkpoint(path)["state"]


def test_log_rank_weights_by_hand():
    w = log_rank_weights(2)
    expected = torch.tensor([math.log(3), math.log(1.5)], dtype=torch.float64)
    torch.testing.assert_close(w, expected / expected.sum())
    assert torch.all(w[:-1] > w[1:])
    assert math.isclose(float(log_rank_weights(7).sum()), 1.0)


def test_mirrored_samples_come_in_pairs_around_the_mean():
    mean, var = torch.randn(3, 5), torch.rand(3, 5)
    z = mirrored_samples(mean, var, 6, torch.Generator().manual_seed(0))
    assert z.shape == (3, 6, 5)
    torch.testing.assert_close((z[:, :3] + z[:, 3:]) / 2, mean.unsqueeze(1).expand(3, 3, 5))
    with pytest.raises(ValueError, match="even"):
        mirrored_samples(mean, var, 5, torch.Generator())


def test_sep_cem_update_by_hand():
    mean = torch.zeros(1, 2, dtype=torch.float64)
    cand = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]], dtype=torch.float64)
    fitness = torch.tensor([[3.0, 2.0, 1.0]], dtype=torch.float64)  # elites: rows 0 then 1
    new_mean, new_var, elite_index = sep_cem_update(mean, cand, fitness, 2, floor=0.1)
    w0, w1 = math.log(3) / math.log(4.5), math.log(1.5) / math.log(4.5)
    torch.testing.assert_close(new_mean, torch.tensor([[w0, 2 * w1]], dtype=torch.float64))
    # CEM-RL's variance: (1/k) Σ w (z − μ_old)² + floor, with k = 2
    expected_var = torch.tensor([[w0 / 2 + 0.1, 4 * w1 / 2 + 0.1]], dtype=torch.float64)
    torch.testing.assert_close(new_var, expected_var)
    assert elite_index.tolist() == [[0, 1]]


def test_floor_decays_geometrically_to_its_limit():
    floor = 1e-3
    for _ in range(300):
        floor = next_floor(floor, 1e-5)
    assert math.isclose(floor, 1e-5, rel_tol=1e-4)


def test_cem_operator_climbs_a_quadratic_and_its_variance_shrinks_to_the_floor():
    n, d = 3, 6
    target = np.linspace(-1, 1, d).astype(np.float32)
    evaluator = QuadraticEvaluator(target)
    op = CEMAroundParticles(8, 4, init_var=0.1, floor=1e-3, floor_limit=1e-5, seed=0)
    state = PopulationState(torch.zeros(n, d))
    start = np.linalg.norm(state.params.numpy() - target, axis=1)
    for _ in range(150):
        state = op(state, _ctx(evaluator))
    end = np.linalg.norm(state.params.numpy() - target, axis=1)
    assert np.all(end < start / 20), (start, end)
    # all n·(K+1) candidates of an iteration are evaluated in ONE call, and every one is paid for
    assert evaluator.calls == 150
    assert set(evaluator.batch_sizes) == {n * 9}
    assert state.env_steps == 150 * n * 9 * 10
    assert op.floor == pytest.approx(1e-5, rel=0.1)
    var = op.var
    assert torch.all(var >= op.floor * 0.99), var
    assert torch.all(var < 3 * op.floor), var


def test_cem_operator_resumes_bit_identically():
    target = np.ones(4, dtype=np.float32)
    a = CEMAroundParticles(4, 2, 1e-2, 1e-3, 1e-5, seed=1)
    state_a = PopulationState(torch.zeros(2, 4))
    for _ in range(3):
        state_a = a(state_a, _ctx(QuadraticEvaluator(target)))
    b = CEMAroundParticles(4, 2, 1e-2, 1e-3, 1e-5, seed=99)
    b.load_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    state_b = PopulationState(state_a.params.clone())
    for _ in range(3):
        state_a = a(state_a, _ctx(QuadraticEvaluator(target)))
        state_b = b(state_b, _ctx(QuadraticEvaluator(target)))
    torch.testing.assert_close(state_a.params, state_b.params, rtol=0, atol=0)


def test_cmaes_operator_climbs_a_quadratic_without_touching_numpy_global_random():
    n, d = 2, 5
    target = np.full(d, 0.5, dtype=np.float32)
    evaluator = QuadraticEvaluator(target)
    op = CMAESAroundParticles(candidates=8, sigma0=0.3, seed=0)
    state = PopulationState(torch.zeros(n, d))
    np.random.seed(123)  # noqa: NPY002
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    for _ in range(60):
        state = op(state, _ctx(evaluator))
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    assert set(evaluator.batch_sizes) == {n * 9}
    end = np.linalg.norm(state.params.numpy() - target, axis=1)
    assert np.all(end < 0.05 * np.linalg.norm(target)), end


def test_cmaes_operator_is_seeded_and_resumes_identically():
    target = np.full(3, 0.2, dtype=np.float32)

    def run(op, state, k):
        for _ in range(k):
            state = op(state, _ctx(QuadraticEvaluator(target)))
        return state

    a = run(CMAESAroundParticles(4, 0.1, seed=5), PopulationState(torch.zeros(2, 3)), 4)
    b = run(CMAESAroundParticles(4, 0.1, seed=5), PopulationState(torch.zeros(2, 3)), 4)
    torch.testing.assert_close(a.params, b.params, rtol=0, atol=0)
    first = CMAESAroundParticles(4, 0.1, seed=5)
    s = run(first, PopulationState(torch.zeros(2, 3)), 2)
    second = CMAESAroundParticles(4, 0.1, seed=6)
    second.load_state_dict(_weights_only_roundtrip(first.state_dict()))
    resumed = run(second, PopulationState(s.params.clone()), 2)
    torch.testing.assert_close(resumed.params, a.params, rtol=0, atol=0)


def test_cmaes_clone_gets_a_copy_of_its_parents_strategy():
    op = CMAESAroundParticles(4, 0.1, seed=0)
    state = op(PopulationState(torch.randn(3, 4)), _ctx(QuadraticEvaluator(np.zeros(4))))
    op.reindex(torch.tensor([0, 0, 2]))
    assert op.strategies[1] is not op.strategies[0]
    assert np.array_equal(op.strategies[1].mean, op.strategies[0].mean)
    assert state.params.shape == (3, 4)


# d = 3 runs pycma's CSA step-size rule (with a selective mirror), d = 300 its TPA.
CMAES_DIMENSIONS = pytest.mark.parametrize("d", [3, 300], ids=["csa", "tpa"])


def _cmaes_after(d: int, iterations: int) -> tuple[CMAESAroundParticles, PopulationState]:
    op = CMAESAroundParticles(candidates=4, sigma0=0.1, seed=3)
    state = PopulationState(torch.linspace(-0.5, 0.5, 3 * d).reshape(3, d))
    for _ in range(iterations):
        state = op(state, _ctx(QuadraticEvaluator(np.full(d, 0.2, dtype=np.float32))))
    return op, state


def _assert_plain(value, path="state"):
    """Only tensors, numeric/bool arrays, exact int/float/bool/str/None and containers."""
    if isinstance(value, torch.Tensor):
        return
    if isinstance(value, np.ndarray):
        assert value.dtype.kind in "biuf", (path, value.dtype)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _assert_plain(k, f"{path} key {k!r}")
            _assert_plain(v, f"{path}[{k!r}]")
        return
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            _assert_plain(v, f"{path}[{i}]")
        return
    assert type(value) in (int, float, bool, str, type(None)), (path, type(value))


def _assert_same_data(a, b, path="state"):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), path
        assert a.dtype == b.dtype, path
        assert np.array_equal(a, b, equal_nan=True), path
    elif isinstance(a, dict):
        assert type(b) is dict, path
        assert list(a) == list(b), path
        for k in a:
            _assert_same_data(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b), path
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_data(x, y, f"{path}[{i}]")
    else:
        assert type(a) is type(b), path
        assert a == b or (a != a and b != b), path  # nan == nan here


@CMAES_DIMENSIONS
def test_cmaes_state_dict_holds_only_plain_data(d):
    op, _ = _cmaes_after(d, 3)
    state = op.state_dict()
    _assert_plain(state)
    assert len(state["strategies"]) == 3
    # It is the strategies' state, not an empty shell: e.g. the step size, the diagonal of the
    # covariance and the evolution path of each are in it.
    es, saved = op.strategies[1], state["strategies"][1]["attrs"]
    assert saved["sigma"]["value"][()] == es.sigma
    assert np.array_equal(saved["sigma_vec"]["attrs"]["scaling"], es.sigma_vec.scaling)
    assert np.array_equal(saved["pc"], es.pc)
    assert saved["countiter"] == es.countiter == 3
    # (the other state of the operator was already plain data)
    assert set(state["numpy_state"]) >= {"bit_generator", "state"}


@CMAES_DIMENSIONS
def test_cmaes_state_survives_torch_load_weights_only(d):
    op, _ = _cmaes_after(d, 3)
    state = op.state_dict()
    _assert_same_data(state, _weights_only_roundtrip(state))


@CMAES_DIMENSIONS
def test_cmaes_restored_from_weights_only_state_continues_identically(d):
    a, state = _cmaes_after(d, 3)
    a.reindex(torch.tensor([1, 1, 0]))  # a clone and a move before the checkpoint
    saved = _weights_only_roundtrip(a.state_dict())
    b = CMAESAroundParticles(candidates=4, sigma0=0.1, seed=77)  # the seed is restored too
    np.random.seed(5)  # noqa: NPY002
    global_before = np.random.get_state()[1].copy()  # noqa: NPY002
    b.load_state_dict(saved)
    assert np.array_equal(np.random.get_state()[1], global_before)  # noqa: NPY002
    assert all(x is not y for x, y in zip(a.strategies, b.strategies, strict=True))
    target = np.full(d, 0.2, dtype=np.float32)
    state_a, state_b = PopulationState(state.params.clone()), PopulationState(state.params.clone())
    for parents in (None, torch.tensor([2, 0, 0]), None):  # and a clone after the restore
        if parents is not None:
            a.reindex(parents)
            b.reindex(parents)
        eval_a, eval_b = RecordingEvaluator(target), RecordingEvaluator(target)
        state_a, state_b = a(state_a, _ctx(eval_a)), b(state_b, _ctx(eval_b))
        # the same asked candidates (the particles and their samples), the same new means
        assert np.array_equal(eval_a.batches[0], eval_b.batches[0])
        torch.testing.assert_close(state_a.params, state_b.params, rtol=0, atol=0)
        assert state_a.scalars == state_b.scalars
    # and the same state, but for pycma's wall-clock timer (which only reports elapsed time)
    final_a, final_b = a.state_dict(), b.state_dict()
    for final in (final_a, final_b):
        for es in final["strategies"]:
            del es["attrs"]["timer"]
    _assert_same_data(final_a, final_b)


def test_cmaes_state_of_an_unused_operator_round_trips():
    a = CMAESAroundParticles(candidates=4, sigma0=0.1, seed=3)
    b = CMAESAroundParticles(candidates=4, sigma0=0.1, seed=3)
    b.load_state_dict(_weights_only_roundtrip(a.state_dict()))
    assert b.strategies == []
    target = np.zeros(3, dtype=np.float32)
    state_a = a(PopulationState(torch.ones(2, 3)), _ctx(QuadraticEvaluator(target)))
    state_b = b(PopulationState(torch.ones(2, 3)), _ctx(QuadraticEvaluator(target)))
    torch.testing.assert_close(state_a.params, state_b.params, rtol=0, atol=0)


def _drop_scaling(state):
    del state["strategies"][0]["attrs"]["sigma_vec"]["attrs"]["scaling"]


def _foreign_class(state):
    state["strategies"][0]["attrs"]["adapt_sigma"]["class"] = "os.system"


def _renamed_code(state):
    state["strategies"][0]["attrs"]["integer_centering"]["name"] = "os.system"


def _pickled(state):
    state["strategies"] = pickle.dumps("anything")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_drop_scaling, "attribute 'sigma_vec.scaling' missing from the checkpoint"),
        (_foreign_class, "attribute 'adapt_sigma' is a os.system in the checkpoint"),
        (_renamed_code, "attribute 'integer_centering' is os.system in the checkpoint"),
        (_pickled, "pickled pycma objects"),
    ],
)
def test_cmaes_state_that_does_not_fit_this_pycma_is_refused(damage, message):
    op, _ = _cmaes_after(3, 2)
    state = op.state_dict()
    damage(state)
    fresh = CMAESAroundParticles(candidates=4, sigma0=0.1, seed=3)
    with pytest.raises(ValueError, match=f"^cmaes state: .*{message}"):
        fresh.load_state_dict(state)
    assert fresh.strategies == []  # nothing half-restored
