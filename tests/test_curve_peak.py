"""evo_svpg.curve_peak: the SVPG paper's Table 1 statistic, by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evo_svpg.curve_peak import peak_interval, peak_markdown, peak_of_mean, peak_rows


def test_the_paper_metric_is_the_max_of_the_seed_mean_and_the_first_iteration_within_5_percent():
    best = np.array([[0.0, 50.0, 96.0, 100.0, 90.0], [0.0, 70.0, 100.0, 100.0, 110.0]])
    # seed mean: 0, 60, 98, 100, 100 -> max 100, first within 5 % at iteration 3
    assert peak_of_mean(best) == (100.0, 3)
    negative = np.array([[-900.0, -400.0, -330.0, -320.0]])
    assert peak_of_mean(negative) == (-320.0, 3)  # within 16 of -320


def test_the_interval_is_a_bootstrap_of_the_seed_mean_at_the_peak_iteration():
    # seed means 0, 20, 30, 25: peak at iteration 3, where the seeds hold 20 and 40
    best = np.array([[0.0, 10.0, 20.0, 30.0], [0.0, 30.0, 40.0, 20.0]])
    low, high = peak_interval(best)
    # resampled means at iteration 3: 20 (p 1/4), 30 (1/2), 40 (1/4) -> 2.5 % and 97.5 %
    assert (low, high) == (20.0, 40.0)
    assert peak_interval(best[:1]) == (30.0, 30.0)  # one seed: its own peak, no spread
    many = np.random.default_rng(1).normal(100.0, 10.0, size=(400, 3))
    low, high = peak_interval(many)  # ≈ mean ± 1.96 · 10 / √400 around the peak's mean
    peak_mean = many[:, np.argmax(many.mean(0))].mean()
    assert low == pytest.approx(peak_mean - 0.98, abs=0.15)
    assert high == pytest.approx(peak_mean + 0.98, abs=0.15)


def test_rows_cut_runs_to_the_shortest_and_name_the_peak_iteration():
    rows = peak_rows({"a": [np.array([0.0, 10.0, 20.0, 5.0]), np.array([0.0, 30.0, 40.0])]})
    # cut to 3 iterations: means 0, 20, 30 -> peak 30 at iteration 3, first within 5 % at 3
    assert rows["a"]["iterations"] == 3
    assert rows["a"]["runs"] == 2
    row = rows["a"]
    assert (row["peak"], row["peak_iteration"], row["iteration_95"]) == (30.0, 3, 3)
    assert rows["a"]["peak_ci"] == [20.0, 40.0]


def test_only_iterations_where_every_run_has_a_value_make_the_curve():
    # iteration 2: only run 0 ended an episode, with 500; a mean over it alone would peak there
    best = np.array([[10.0, 500.0, 40.0], [20.0, np.nan, 60.0]])
    assert peak_of_mean(best) == (50.0, 3)
    assert peak_interval(best) == (40.0, 60.0)


def test_a_setting_without_a_complete_iteration_has_no_peak_and_one_run_no_interval():
    rows = peak_rows(
        {
            "none": [np.array([1.0, np.nan]), np.array([np.nan, 2.0])],
            "one": [np.array([3.0, 7.0, 5.0])],
        }
    )
    assert rows["none"]["peak"] is None
    assert rows["one"]["peak"] == 7.0
    assert rows["one"]["peak_ci"] is None
    text = "\n".join(peak_markdown(json.loads(json.dumps(rows))))  # as report.json holds them
    assert "| none | 2 | 2 | ? | no iteration where every run has a value | | |" in text
    assert "| one | 1 | 3 | ? | 7.0 [n/a: 1 run] | 2 | 2 |" in text


def test_the_section_names_cut_runs_and_their_pooling_window():
    rows = peak_rows({"a": [np.array([0.0, 10.0, 20.0, 5.0]), np.array([0.0, 30.0, 40.0])]})
    rows["a"]["pooling_windows"] = [1, 1]
    text = "\n".join(peak_markdown(rows))
    assert "| a | 2 | 3 (cut from up to 4) | 1 | 30.0 [20.0, 40.0] | 3 | 3 |" in text
