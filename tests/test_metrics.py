"""Pooled training returns (evo_svpg.metrics) against hand computations."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_svpg.metrics import EpisodeTotals, ReturnWindow, pooling_window


def _totals(means: np.ndarray, counts: np.ndarray, steps_per_iteration: int) -> EpisodeTotals:
    """``means``/``counts`` ``[I, P]`` as metrics.csv holds them (NaN mean where no episode)."""
    sums = np.where(counts > 0, np.nan_to_num(means) * counts, 0.0)
    iterations = np.arange(1, len(means) + 1)
    return EpisodeTotals(iterations, iterations * steps_per_iteration, sums, counts)


def test_pooling_window_covers_the_longest_episode():
    assert pooling_window(500, 500) == 1  # CartPole default: every env ends one per iteration
    assert pooling_window(999, 500) == 2  # MountainCarContinuous
    assert pooling_window(200, 50) == 4
    assert pooling_window(None, 50) == 1


def test_a_sawtooth_of_long_failures_does_not_bias_the_pooled_mean():
    """Particle 0 fails in 999-step episodes (−50) that end only in even iterations; particle 1
    succeeds in short ones (+90) every iteration. Per-iteration means over the particles with an
    episode alternate 20, 90, 20, ...; pooling each particle over the window does not."""
    means = np.array([[np.nan, 90.0], [-50.0, 90.0]] * 5)
    counts = np.array([[0, 4], [1, 4]] * 5)
    totals = _totals(means, counts, 1000)
    per_iteration = np.nanmean(means, axis=1)
    assert set(per_iteration.round(6)) == {90.0, 20.0}  # the sawtooth the old curves showed
    curves = totals.curves(window=2)
    np.testing.assert_allclose(curves["mean"][1:], (-50.0 + 90.0) / 2)  # every particle counts
    np.testing.assert_allclose(curves["best"][1:], 90.0)
    final = totals.final(window=2)  # the last 10 % of 10,000 steps is iteration 10: widened to 2
    assert (final["first_iteration"], final["last_iteration"]) == (9, 10)
    assert final["particle_returns"] == [-50.0, 90.0]
    assert final["mean"] == 20.0
    assert final["episode_mean"] == (-50.0 + 8 * 90.0) / 9  # all episodes pooled: short ones win
    assert final["particles_without_episode"] == 0


def test_the_final_window_can_end_at_a_budget():
    counts = np.ones((10, 2), dtype=np.int64)
    means = np.arange(20.0).reshape(10, 2)
    totals = _totals(means, counts, 1100)  # 11,000 steps spent for a budget of 10,000
    assert totals.final_mask(1).tolist() == [False] * 9 + [True]  # > 9,900: iteration 10 only
    assert totals.final_mask(1, end=10_000).tolist() == [False] * 8 + [True, True]  # > 9,000


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 4),
    st.lists(
        st.lists(st.tuples(st.integers(0, 3), st.floats(-100, 100)), min_size=3, max_size=3),
        min_size=1,
        max_size=12,
    ),
)
def test_the_running_window_equals_the_curves_of_the_csv(window, iterations):
    """What progress lines and TensorBoard show equals what plots and runners compute."""
    counts = np.array([[c for c, _ in it] for it in iterations], dtype=np.int64)
    means = np.array([[m if c else np.nan for c, m in it] for it in iterations])
    curves = _totals(means, counts, 100).curves(window)
    running = ReturnWindow(window, 3)
    for t in range(len(iterations)):
        best, mean = running.add(means[t], counts[t])
        for got, want in ((best, curves["best"][t]), (mean, curves["mean"][t])):
            assert (np.isnan(got) and np.isnan(want)) or np.isclose(got, want)
