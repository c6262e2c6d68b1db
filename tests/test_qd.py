"""Grid archive metrics and the visitation histogram on hand-made points."""

import copy
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_svpg.qd import GridArchive, Visitation

BOUNDS = [(0.0, 1.0), (-2.0, 2.0)]  # 4 × 4 cells: 0.25 wide along x, 1.0 along y
POINTS = np.array(
    [
        [0.1, -1.5],  # cell (0, 0), objective 1
        [0.2, -1.9],  # cell (0, 0) again, better: 3
        [0.2, -1.1],  # cell (0, 0) again, worse: 2 (the cell keeps 3)
        [1.0, 2.0],  # on the upper bounds: edge cell (3, 3)
        [1.5, -3.0],  # outside: x beyond hi, y below lo -> (3, 0)
        [0.5, 0.0],  # on inner boundaries: the upper cell (2, 2)
        [-0.1, 0.999],  # x below lo -> 0; y just under the boundary 1.0 -> (0, 2)
    ]
)
OBJECTIVES = np.array([1.0, 3.0, 2.0, 5.0, -2.0, 4.0, 0.5])
CELLS = [(0, 0), (0, 0), (0, 0), (3, 3), (3, 0), (2, 2), (0, 2)]


def _hand_made(offset=0.0, batch=True):
    archive = GridArchive(BOUNDS, 4, offset=offset)
    if batch:
        archive.add(POINTS, OBJECTIVES)
    else:
        for x, f in zip(POINTS, OBJECTIVES, strict=True):
            archive.add(x[None], np.array([f]))
    return archive


@pytest.mark.parametrize("batch", [True, False])
def test_grid_archive_metrics_by_hand(batch):
    archive = _hand_made(batch=batch)
    assert archive.cell_index(POINTS).tolist() == [4 * i + j for i, j in CELLS]
    assert archive.total_cells == 16
    assert archive.filled == 5
    assert archive.coverage == 5 / 16
    assert archive.qd_score == 3.0 + 5.0 - 2.0 + 4.0 + 0.5
    assert archive.best == 5.0
    want = np.full((4, 4), np.nan)
    want[0, 0], want[3, 3], want[3, 0], want[2, 2], want[0, 2] = 3.0, 5.0, -2.0, 4.0, 0.5
    np.testing.assert_array_equal(archive.best_per_cell(), want)


def test_offset_shifts_each_filled_cell():
    assert _hand_made(offset=-10.0).qd_score == 10.5 + 5 * 10.0  # pyribs' qd_score_offset
    assert _hand_made(offset=1.0).qd_score == 10.5 - 5 * 1.0
    assert _hand_made(offset=1.0).best == 5.0  # best and coverage do not depend on it
    assert _hand_made(offset=1.0).coverage == 5 / 16


def test_empty_archive_and_empty_batch():
    archive = GridArchive([(0, 1)], 3)
    assert (archive.filled, archive.coverage, archive.qd_score) == (0, 0.0, 0.0)
    assert math.isnan(archive.best)
    assert np.isnan(archive.best_per_cell()).all()
    archive.add(np.empty((0, 1)), np.empty(0))
    archive.add([], [])
    assert archive.filled == 0


def test_per_dimension_cells_and_c_order():
    archive = GridArchive([(0, 2), (0, 3), (0, 5)], [2, 3, 5])
    x = np.array([[1.5, 2.5, 4.5], [0.0, 0.0, 0.0], [0.5, 1.5, 2.5]])
    assert archive.cell_index(x).tolist() == [29, 0, 7]  # (1,2,4), (0,0,0), (0,1,2) in C order
    assert archive.best_per_cell().shape == (2, 3, 5)


@given(
    n=st.integers(0, 60),
    cells=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=60, deadline=None)
def test_batched_add_matches_a_loop_over_rows(n, cells, seed):
    rng = np.random.default_rng(seed)
    bounds = [(-1.0, 2.0)] * len(cells)
    x = rng.uniform(-2, 3, size=(n, len(cells)))  # some outside the bounds
    f = rng.integers(-3, 4, size=n).astype(float)  # ties too
    archive = GridArchive(bounds, cells)
    archive.add(x, f)
    best: dict[tuple, float] = {}
    for row, value in zip(x, f, strict=True):
        cell = tuple(
            min(max(math.floor(c * (v + 1.0) / 3.0), 0), c - 1)
            for v, c in zip(row, cells, strict=True)
        )
        best[cell] = max(best.get(cell, -math.inf), value)
    assert archive.filled == len(best)
    assert archive.qd_score == pytest.approx(sum(best.values()))
    grid = archive.best_per_cell()
    for cell, value in best.items():
        assert grid[cell] == value


def test_state_round_trip():
    archive = _hand_made(offset=-1.0)
    state = copy.deepcopy(archive.state_dict())
    resumed = GridArchive(BOUNDS, 4, offset=-1.0)
    resumed.load_state_dict(state)
    more_x, more_f = np.array([[0.9, 1.9], [0.1, -1.9]]), np.array([7.0, 9.0])
    for a in (archive, resumed):
        a.add(more_x, more_f)
    assert (resumed.filled, resumed.qd_score, resumed.best) == (
        archive.filled, archive.qd_score, archive.best,
    )  # fmt: skip
    np.testing.assert_array_equal(resumed.best_per_cell(), archive.best_per_cell())
    with pytest.raises(ValueError, match="state has cells="):
        GridArchive(BOUNDS, 5).load_state_dict(state)
    with pytest.raises(ValueError, match="state has high="):
        GridArchive([(0.0, 1.0), (-2.0, 3.0)], 4).load_state_dict(state)


@pytest.mark.parametrize(
    ("bounds", "cells", "message"),
    [
        ([(0, 1), (2, 2)], 4, r"dimension 1 must be finite with low < high, got \(2.0, 2.0\)"),
        ([(1, 0)], 4, r"bounds of dimension 0 must be finite with low < high, got \(1.0, 0.0\)"),
        ([(0, np.inf)], 4, "bounds of dimension 0 must be finite"),
        ([(np.nan, 1)], 4, "bounds of dimension 0 must be finite"),
        ([], 4, "bounds must be a non-empty sequence of"),
        ([(0, 1, 2)], 4, "bounds must be a non-empty sequence of"),
        ([(0, 1)], 0, "cells must be an int >= 1, got 0"),
        ([(0, 1), (0, 1)], [3], r"cells must be an int or one int per dimension \(2\)"),
        ([(0, 1)], [2.5], "cells must be an int >= 1, got 2.5"),
    ],
)  # fmt: skip
def test_bad_grid_arguments(bounds, cells, message):
    with pytest.raises(ValueError, match=message):
        GridArchive(bounds, cells)


def test_bad_batches():
    archive = GridArchive(BOUNDS, 4)
    with pytest.raises(ValueError, match="objectives must be finite, got nan at row 1"):
        archive.add(np.zeros((2, 2)), np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="descriptors must be finite, got inf at row 0, column 1"):
        archive.add(np.array([[0.0, np.inf]]), np.array([1.0]))
    with pytest.raises(
        ValueError, match=r"descriptors must be a 2-D array of shape \[n, 2\], got shape \(3, 3"
    ):
        archive.add(np.zeros((3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"descriptors \(2 rows\) and objectives \(3\)"):
        archive.add(np.zeros((2, 2)), np.zeros(3))
    with pytest.raises(ValueError, match=r"objectives must have shape \[m\], got \(2, 1\)"):
        archive.add(np.zeros((2, 2)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="offset must be finite"):
        GridArchive(BOUNDS, 4, offset=np.nan)
    assert archive.filled == 0  # nothing half-added


def test_visitation_counts_by_hand():
    vis = Visitation([0.0, 0.0], [4.0, 2.0], bins=4)  # x bins 1.0 wide, v bins 0.5 wide
    vis.add(
        np.array(
            [
                [0.0, 0.0],  # (0, 0): the lower corner
                [4.0, 2.0],  # (3, 3): on the upper bounds
                [3.99, 1.99],  # (3, 3)
                [1.0, 0.5],  # (1, 1): on inner boundaries, the upper bin
                [1.0, 0.5],  # (1, 1) again
                [5.0, -1.0],  # (3, 0): out of range, clipped
                [-1.0, 3.0],  # (0, 3)
                [2.5, 0.75],  # (2, 1)
            ]
        )
    )
    want = np.zeros((4, 4), dtype=np.int64)
    want[0, 0], want[3, 3], want[1, 1], want[3, 0], want[0, 3], want[2, 1] = 1, 2, 2, 1, 1, 1
    np.testing.assert_array_equal(vis.counts, want)
    assert vis.counts.dtype == np.int64
    vis.add(np.empty((0, 2)))
    vis.add(np.array([[0.1, 0.1]]))
    assert vis.counts[0, 0] == 2
    assert vis.counts.sum() == 9


def test_visitation_state_and_errors():
    vis = Visitation([-1.2, -0.07], [0.6, 0.07], bins=10)
    vis.add(np.random.default_rng(0).uniform([-1.2, -0.07], [0.6, 0.07], size=(100, 2)))
    resumed = Visitation([-1.2, -0.07], [0.6, 0.07], bins=10)
    resumed.load_state_dict(copy.deepcopy(vis.state_dict()))
    np.testing.assert_array_equal(resumed.counts, vis.counts)
    with pytest.raises(ValueError, match=r"state\['counts'\] must have shape \(5, 5\)"):
        Visitation([-1.2, -0.07], [0.6, 0.07], bins=5).load_state_dict(vis.state_dict())
    with pytest.raises(ValueError, match="Visitation is 2-D"):
        Visitation([0, 0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="bins must be an int >= 1, got 0"):
        Visitation([0, 0], [1, 1], bins=0)
    with pytest.raises(ValueError, match=r"bounds of dimension 1 must be finite with low < high"):
        Visitation([0, 1], [1, 1])
    with pytest.raises(
        ValueError, match=r"points must be a 2-D array of shape \[n, 2\], got shape \(3,\)"
    ):
        vis.add(np.zeros(3))
    with pytest.raises(ValueError, match="points must be finite, got nan"):
        vis.add(np.array([[np.nan, 0.0]]))
