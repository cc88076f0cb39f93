"""Repeated stratified folds and the corrected intervals on small transfer-learning tasks, hand-checked."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats

from aion_assets.zoo.crossval import (
    corrected_interval,
    relative_reduction,
    repeated_stratified_folds,
    summarise_reduction,
)

LABELS = np.array([0] * 30 + [1] * 15 + [2] * 10)


def test_folds_partition_every_repeat() -> None:
    folds = repeated_stratified_folds(LABELS, n_splits=5, n_repeats=3, seed=0)
    assert len(folds) == 15
    for train, test in folds:
        assert np.intersect1d(train, test).size == 0
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(LABELS.size))
    for repeat in range(3):
        tests = np.concatenate([test for _, test in folds[repeat * 5:(repeat + 1) * 5]])
        assert np.array_equal(np.sort(tests), np.arange(LABELS.size))


def test_folds_are_stratified() -> None:
    shares = np.bincount(LABELS) / LABELS.size
    for _, test in repeated_stratified_folds(LABELS, n_splits=5, n_repeats=2, seed=3):
        counts = np.bincount(LABELS[test], minlength=3)
        assert np.all(np.abs(counts - shares * test.size) <= 1)


def test_folds_are_deterministic_per_seed() -> None:
    def tests(seed: int) -> list[list[int]]:
        return [test.tolist() for _, test in repeated_stratified_folds(LABELS, seed=seed)]

    assert tests(1) == tests(1)
    assert tests(1) != tests(2)


def test_regression_bins_the_target() -> None:
    y = np.random.default_rng(0).lognormal(size=40)
    quartile = np.searchsorted(np.quantile(y, [0.25, 0.5, 0.75]), y, side="right")
    for _, test in repeated_stratified_folds(y, n_splits=5, n_repeats=2, seed=0, regression=True):
        # 10 per quartile over 5 folds: every test fold holds exactly two of each.
        assert np.bincount(quartile[test], minlength=4).tolist() == [2, 2, 2, 2]
    # 12 values cannot fill 4 bins of >= 5: the bins are reduced instead of failing.
    small = repeated_stratified_folds(np.arange(12.0), n_splits=5, n_repeats=1, regression=True)
    assert sorted(np.concatenate([test for _, test in small]).tolist()) == list(range(12))


def test_too_small_class_raises() -> None:
    y = np.array(["spiral"] * 10 + ["merger"] * 3)
    with pytest.raises(ValueError, match=r"'merger' has 3 member"):
        repeated_stratified_folds(y, n_splits=5)


def test_corrected_interval_by_hand() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0])
    mean, lo, hi = corrected_interval(values, n_train=80, n_test=20)
    # s^2 = 5/3, (1/J + n_test/n_train) = 1/4 + 1/4: var = 5/6; t(0.975, 3) = 3.182446.
    assert mean == 2.5
    assert hi - mean == pytest.approx(3.182446 * np.sqrt(5 / 6), rel=1e-6)
    assert mean - lo == pytest.approx(hi - mean)
    naive_half = stats.t.ppf(0.975, 3) * values.std(ddof=1) / np.sqrt(values.size)
    assert (hi - mean) / naive_half == pytest.approx(np.sqrt(1 + 4 * 20 / 80))  # = sqrt(2)
    with pytest.raises(ValueError, match="at least 2"):
        corrected_interval(np.array([1.0]), n_train=80, n_test=20)


def test_relative_reduction_by_hand() -> None:
    got = relative_reduction(np.array([0.2, 0.1, 0.0]), np.array([0.1, 0.1, 0.05]))
    assert got[:2] == pytest.approx([0.5, 0.0])
    assert np.isnan(got[2])
    with pytest.raises(ValueError):
        relative_reduction(np.array([0.2, 0.1]), np.array([0.1]))


def test_summarise_reduction_average_row() -> None:
    per_task = {
        "rings": (np.array([0.4, 0.4, 0.2]), np.array([0.2, 0.3, 0.2])),  # reductions 0.5, 0.25, 0.0
        "bars": (np.array([1.0, 1.0, 1.0]), np.array([0.9, 0.8, 0.7])),  # reductions 0.1, 0.2, 0.3
    }
    table = summarise_reduction(per_task, n_train={"rings": 80, "bars": 120}, n_test={"rings": 20, "bars": 30})
    assert table.columns == ["task", "reduction", "reduction_lo", "reduction_hi"]
    assert table.get_column("task").to_list() == ["rings", "bars", "average"]
    rings = table.row(0)
    assert rings[1:] == pytest.approx(corrected_interval(np.array([0.5, 0.25, 0.0]), 80, 20))
    average = table.filter(pl.col("task") == "average").row(0)
    per_fold = np.array([0.3, 0.225, 0.15])
    assert average[1] == pytest.approx(0.225)
    assert average[1:] == pytest.approx(corrected_interval(per_fold, 100, 25))
    per_task["bars"] = (np.array([1.0, 1.0]), np.array([0.9, 0.8]))
    with pytest.raises(ValueError, match="equal fold counts"):
        summarise_reduction(per_task, n_train={"rings": 80, "bars": 120}, n_test={"rings": 20, "bars": 30})
