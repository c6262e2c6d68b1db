"""kNN novelty and the novelty archive against a brute force written independently here."""

import copy
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_svpg.novelty import NoveltyArchive, knn_novelty


def brute_novelty(queries, points, k, exclude=None):
    """Per query: sort the distances to every point but its own, average the first k (0 if none)."""
    out = []
    for i, query in enumerate(queries):
        own = -1 if exclude is None else exclude[i]
        dists = sorted(math.dist(query, p) for j, p in enumerate(points) if j != own)[:k]
        out.append(sum(dists) / len(dists) if dists else 0.0)
    return np.array(out)


def _cloud(rng, n, d, kind):
    """Continuous points, or points on a coarse integer lattice (many duplicates and ties)."""
    if kind == "lattice":
        return rng.integers(0, 3, size=(n, d)).astype(float)
    return rng.normal(size=(n, d))


def _exclusion(rng, q, r):
    return rng.integers(-1, r, size=q) if r else np.full(q, -1)


@given(
    q=st.integers(0, 12),
    r=st.integers(0, 30),
    d=st.integers(1, 4),
    k=st.integers(1, 15),
    kind=st.sampled_from(["normal", "lattice"]),
    exclude=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=150, deadline=None)
def test_knn_novelty_matches_brute_force(q, r, d, k, kind, exclude, seed):
    rng = np.random.default_rng(seed)
    points = _cloud(rng, r, d, kind)
    # Queries drawn from the points themselves too, so exclusion and zero distances are exercised.
    queries = np.concatenate([_cloud(rng, q, d, kind), points[: q // 2]])
    ex = _exclusion(rng, len(queries), r) if exclude else None
    got = knn_novelty(queries, points, k, ex)
    assert got.shape == (len(queries),)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, brute_novelty(queries, points, k, ex), rtol=1e-12, atol=1e-12)


def test_knn_novelty_hand_made():
    points = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    query = np.array([[0.0, 0.0]])
    assert knn_novelty(query, points, 1).tolist() == [0.0]
    assert knn_novelty(query, points, 2).tolist() == [2.5]  # (0 + 5) / 2: plain, not squared
    assert knn_novelty(query, points, 2, np.array([0])).tolist() == [7.5]  # (5 + 10) / 2
    assert knn_novelty(query, points, 10, np.array([0])).tolist() == [7.5]  # fewer than k
    assert knn_novelty(query, points[:1], 3, np.array([0])).tolist() == [0.0]  # none left
    assert knn_novelty(query, np.empty((0, 2)), 3).tolist() == [0.0]


def test_knn_novelty_splits_large_problems_into_blocks(monkeypatch):
    import evo_svpg.novelty as novelty

    rng = np.random.default_rng(0)
    queries, points = rng.normal(size=(37, 3)), rng.normal(size=(50, 3))
    ex = rng.integers(-1, 50, size=37)
    whole = knn_novelty(queries, points, 4, ex)
    monkeypatch.setattr(novelty, "_CHUNK_ELEMENTS", 3 * 50 * 5)  # 5 queries per block
    np.testing.assert_array_equal(knn_novelty(queries, points, 4, ex), whole)


def _check_archive(archive, queries, population, exclude):
    union = np.concatenate([archive.descriptors, population])
    shifted = None if exclude is None else np.where(exclude >= 0, exclude + len(archive), -1)
    want = brute_novelty(queries, union, archive.k, shifted)
    got = archive.novelty(queries, population, exclude)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@given(
    d=st.integers(1, 3),
    k=st.integers(1, 12),
    max_size=st.integers(1, 40),
    adds=st.lists(st.integers(0, 50), min_size=1, max_size=5),
    p=st.integers(0, 20),
    kind=st.sampled_from(["normal", "lattice"]),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=100, deadline=None)
def test_archive_novelty_is_brute_force_over_archive_and_population(
    d, k, max_size, adds, p, kind, seed
):
    rng = np.random.default_rng(seed)
    archive = NoveltyArchive(d, k=k, max_size=max_size)
    added = 0
    for m in [0, *adds]:  # before any add, then after each one (the ring wraps for most draws)
        archive.add(_cloud(rng, m, d, kind))
        added += m
        assert len(archive) == min(added, max_size)
        population = _cloud(rng, p, d, kind)
        episodes = _cloud(rng, 7, d, kind)
        _check_archive(archive, population, population, np.arange(p))  # particles skip themselves
        _check_archive(archive, population, population, None)
        _check_archive(archive, episodes, population, None)
        _check_archive(archive, episodes, population, _exclusion(rng, 7, p))


def test_archive_tree_is_rebuilt_after_add():
    rng = np.random.default_rng(1)
    archive = NoveltyArchive(2, k=3)
    archive.add(rng.normal(size=(500, 2)))
    queries, population = rng.normal(size=(5, 2)), rng.normal(size=(4, 2))
    first = archive.novelty(queries, population)
    np.testing.assert_array_equal(archive.novelty(queries, population), first)  # cached tree
    archive.add(queries)  # the queries are now in the archive: distance 0 to themselves
    _check_archive(archive, queries, population, None)
    assert (archive.novelty(queries, population) < first).all()


def test_ring_buffer_overwrites_the_oldest_and_stays_bounded():
    archive = NoveltyArchive(1, k=1, max_size=4)
    assert len(archive) == 0
    assert archive.descriptors.shape == (0, 1)
    archive.add(np.array([[0.0], [1.0], [2.0]]))
    assert archive.descriptors.ravel().tolist() == [0, 1, 2]
    archive.add(np.array([[3.0], [4.0]]))
    assert len(archive) == 4
    assert archive.descriptors.ravel().tolist() == [1, 2, 3, 4]  # 0, the oldest, overwritten
    for v in range(5, 12):
        archive.add(np.array([[float(v)]]))
        assert len(archive) == 4
        assert archive.descriptors.ravel().tolist() == [v - 3, v - 2, v - 1, v]
    archive.add(np.empty((0, 1)))
    assert archive.descriptors.ravel().tolist() == [8, 9, 10, 11]


def test_adding_more_than_max_size_keeps_the_last_rows_as_one_by_one_adds_would():
    rows = np.arange(11, dtype=float)[:, None]
    at_once, one_by_one = NoveltyArchive(1, max_size=4), NoveltyArchive(1, max_size=4)
    at_once.add(rows[:2])
    one_by_one.add(rows[:2])
    at_once.add(rows[2:])
    for row in rows[2:]:
        one_by_one.add(row[None])
    assert at_once.descriptors.ravel().tolist() == [7, 8, 9, 10]
    for key, value in one_by_one.state_dict().items():  # same slots, same write position
        np.testing.assert_array_equal(at_once.state_dict()[key], value)


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(2)
    original = NoveltyArchive(3, k=5, max_size=50)
    original.add(rng.normal(size=(70, 3)))  # wrapped
    state = copy.deepcopy(original.state_dict())
    assert isinstance(state["descriptors"], np.ndarray)
    resumed = NoveltyArchive(3, k=5, max_size=50)
    resumed.load_state_dict(state)
    for _ in range(4):
        batch, population = rng.normal(size=(16, 3)), rng.normal(size=(16, 3))
        for archive in (original, resumed):
            archive.add(batch)
        np.testing.assert_array_equal(resumed.descriptors, original.descriptors)
        np.testing.assert_array_equal(
            resumed.novelty(population, population, np.arange(16)),
            original.novelty(population, population, np.arange(16)),
        )
    # A partly filled archive resumes too (write position = count).
    partial = NoveltyArchive(3, max_size=50)
    partial.add(rng.normal(size=(10, 3)))
    again = NoveltyArchive(3, max_size=50)
    again.load_state_dict(partial.state_dict())
    batch = rng.normal(size=(45, 3))
    partial.add(batch)
    again.add(batch)
    np.testing.assert_array_equal(
        again.state_dict()["descriptors"], partial.state_dict()["descriptors"]
    )


def test_load_state_dict_refuses_another_layout():
    state = NoveltyArchive(2, max_size=10).state_dict()
    with pytest.raises(ValueError, match="max_size=10, this archive max_size=20"):
        NoveltyArchive(2, max_size=20).load_state_dict(state)
    with pytest.raises(ValueError, match="dim=2, this archive dim=3"):
        NoveltyArchive(3, max_size=10).load_state_dict(state)
    bad = {**state, "descriptors": np.zeros((3, 2)), "count": 3, "position": 1}
    with pytest.raises(ValueError, match="inconsistent archive state"):
        NoveltyArchive(2, max_size=10).load_state_dict(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be an int >= 1, got 0"),
        ({"k": 2.5}, "k must be an int >= 1, got 2.5"),
        ({"k": True}, "k must be an int >= 1, got True"),
        ({"max_size": 0}, "max_size must be an int >= 1, got 0"),
        ({"max_size": -5}, "max_size must be an int >= 1, got -5"),
        ({"dim": 0}, "dim must be an int >= 1, got 0"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NoveltyArchive(**{"dim": 2, **kwargs})


def test_bad_arrays_are_named():
    archive = NoveltyArchive(2, k=3)
    pop = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"descriptors must be a 2-D array of shape \[n, 2\], got"):
        archive.add(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"descriptors must be a 2-D array .* got shape \(2,\)"):
        archive.add(np.zeros(2))
    with pytest.raises(ValueError, match="descriptors must be finite, got nan at row 1, column 0"):
        archive.add(np.array([[0.0, 0.0], [np.nan, 1.0]]))
    with pytest.raises(ValueError, match="queries must be finite, got inf at row 0, column 1"):
        archive.novelty(np.array([[0.0, np.inf]]), pop)
    with pytest.raises(ValueError, match="population must be finite, got -inf"):
        archive.novelty(pop, np.array([[0.0, -np.inf]]))
    with pytest.raises(ValueError, match=r"population must be a 2-D array of shape \[n, 2\]"):
        archive.novelty(pop, np.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"exclude must have shape \(4,\)"):
        archive.novelty(pop, pop, np.arange(3))
    with pytest.raises(ValueError, match=r"index into population in \[0, 3\], got 4 at query 2"):
        archive.novelty(pop, pop, np.array([0, 1, 4, -1]))
    with pytest.raises(ValueError, match="exclude must hold integers, got dtype float64"):
        archive.novelty(pop, pop, np.zeros(4))
    with pytest.raises(ValueError, match=r"points must be a 2-D array of shape \[n, 2\]"):
        knn_novelty(pop, np.zeros((3, 3)), 2)
    with pytest.raises(ValueError, match="k must be an int >= 1, got 0"):
        knn_novelty(pop, pop, 0)
    with pytest.raises(ValueError, match=r"exclude must be -1 \(none\) or an index into points"):
        knn_novelty(pop, pop, 1, np.array([-2, 0, 0, 0]))


def test_empty_queries():
    archive = NoveltyArchive(2)
    archive.add(np.ones((5, 2)))
    assert archive.novelty(np.empty((0, 2)), np.ones((3, 2))).shape == (0,)
    assert knn_novelty(np.empty((0, 2)), np.ones((3, 2)), 2).shape == (0,)
