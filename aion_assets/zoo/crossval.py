"""Repeated stratified cross-validation with honest intervals, for transfer-learning tasks with few test images.

Some Galaxy Zoo downstream tasks are small (one has ~27 test images per fold), so a single split's error is mostly
noise and a claimed improvement needs repeated folds and an interval. The naive t interval over repeated-CV fold
values is too narrow, because the folds share most of their training data and their estimates are correlated;
``corrected_interval`` applies the Nadeau & Bengio (2003) correction instead. Reductions are computed per fold,
pairing baseline and candidate on the same folds, so fold difficulty cancels out of the comparison.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import stats
from sklearn.model_selection import RepeatedStratifiedKFold

AVERAGE_TASK = "average"


def _regression_bins(y: np.ndarray, n_splits: int, n_bins: int) -> np.ndarray:
    """Quantile-bin labels for a continuous ``y``, with as many bins (<= n_bins) as keep >= n_splits per bin.

    A bin smaller than n_splits cannot put a member in every test fold, so bins are reduced until none is; tied
    values can make quantile edges coincide, hence the unique edges and the recount after binning."""
    for bins in range(max(n_bins, 1), 0, -1):
        edges = np.unique(np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1]))
        labels = np.searchsorted(edges, y, side="right")
        counts = np.bincount(labels)
        if counts[counts > 0].min() >= n_splits:
            return labels
    return np.zeros(y.size, dtype=int)


def repeated_stratified_folds(y: np.ndarray, n_splits: int = 5, n_repeats: int = 2, seed: int = 0,
                              regression: bool = False, n_bins: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train_idx, test_idx)`` for ``n_repeats`` shuffled, stratified ``n_splits``-fold partitions of ``y``.

    Classification stratifies on the labels; ``regression=True`` stratifies on quantile bins of ``y`` (``n_bins``,
    fewer when a bin would have under ``n_splits`` members), so each test fold spans the range of the target.
    Deterministic for a given ``seed``. Raises ValueError when a class has fewer than ``n_splits`` members: it could
    not appear in every test fold, and sklearn would only warn."""
    y = np.asarray(y).ravel()
    if n_splits < 2:
        raise ValueError(f"n_splits must be at least 2, got {n_splits}")
    if y.size < n_splits:
        raise ValueError(f"{y.size} samples cannot make {n_splits} folds")
    if regression:
        y_float = y.astype(float)
        if not np.all(np.isfinite(y_float)):
            raise ValueError("a regression target must be finite (no NaN or inf)")
        strata = _regression_bins(y_float, n_splits, n_bins)
    else:
        classes, counts = np.unique(y, return_counts=True)
        small = counts < n_splits
        if small.any():
            # .item(): the message names the class as the caller wrote it, not as np.str_('...').
            cls, count = classes[small][0].item(), int(counts[small][0])
            raise ValueError(f"class {cls!r} has {count} member(s), fewer than n_splits={n_splits}; "
                             "merge or drop it, or use fewer folds")
        strata = y
    splitter = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    return [(train.astype(np.int64), test.astype(np.int64))
            for train, test in splitter.split(np.zeros((y.size, 1)), strata)]


def corrected_interval(fold_values: np.ndarray, n_train: float, n_test: float,
                       level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the Nadeau & Bengio (2003) corrected resampled t interval over J fold values.

    Why corrected: in repeated cross-validation every pair of folds shares most of its training data (and, across
    repeats, test data), so the J estimates are positively correlated and ``s^2 / J`` understates the variance of
    their mean; the naive t interval is then too narrow and "significant" improvements appear from noise. Nadeau &
    Bengio's correction replaces ``1/J`` by ``1/J + n_test/n_train``: ``var = (1/J + n_test/n_train) * s^2``, with a
    t quantile on J-1 degrees of freedom. The interval is wider than the naive one by ``sqrt(1 + J*n_test/n_train)``.

    A NaN fold value propagates to NaN bounds (e.g. a relative reduction over a zero baseline error). Raises
    ValueError for J < 2, since one value carries no estimate of its spread."""
    values = np.asarray(fold_values, dtype=float).ravel()
    if values.size < 2:
        raise ValueError(f"a corrected interval needs at least 2 fold values, got {values.size}")
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    j = values.size
    mean = float(values.mean())
    var = (1.0 / j + n_test / n_train) * float(values.var(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, df=j - 1)) * np.sqrt(var)
    return mean, mean - half, mean + half


def relative_reduction(baseline: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-fold ``(baseline - candidate) / baseline``: the fraction of the baseline's error the candidate removes.

    Paired by fold (index i of both must be the same fold), so the folds' own difficulty cancels. Positive means the
    candidate is better. A fold whose baseline error is 0 has no relative reduction and gives NaN (not inf or 0,
    which would silently move an average)."""
    base = np.asarray(baseline, dtype=float).ravel()
    cand = np.asarray(candidate, dtype=float).ravel()
    if base.shape != cand.shape:
        raise ValueError(f"baseline and candidate need one value per shared fold, got {base.size} and {cand.size}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base == 0, np.nan, (base - cand) / np.where(base == 0, 1.0, base))


def summarise_reduction(per_task: dict[str, tuple[np.ndarray, np.ndarray]], n_train: dict[str, int],
                        n_test: dict[str, int], level: float = 0.95) -> pl.DataFrame:
    """Relative error reduction per task with its corrected interval, plus an ``average`` row over the tasks.

    ``per_task`` maps a task to (baseline fold errors, candidate fold errors) on the same folds; ``n_train`` and
    ``n_test`` give each task's training and test-fold sizes for the correction. The ``average`` row averages the
    tasks' reductions fold by fold (fold i of every task; all tasks need the same number of folds) and takes the
    corrected interval of those J averages with the mean n_train and n_test, so the headline number keeps the
    fold-to-fold spread rather than pretending the tasks' means are exact.

    Columns: task, reduction, reduction_lo, reduction_hi; tasks in the given order, then ``average``."""
    if not per_task:
        raise ValueError("no tasks to summarise")
    if AVERAGE_TASK in per_task:
        raise ValueError(f"a task may not be called {AVERAGE_TASK!r}: that row is the average over tasks")
    lacking = [task for task in per_task if task not in n_train or task not in n_test]
    if lacking:
        raise ValueError(f"n_train / n_test missing for task(s) {lacking}")
    rows = []
    reductions = {}
    for task, (baseline, candidate) in per_task.items():
        reductions[task] = relative_reduction(baseline, candidate)
        mean, lo, hi = corrected_interval(reductions[task], n_train[task], n_test[task], level)
        rows.append((task, mean, lo, hi))
    fold_counts = {task: r.size for task, r in reductions.items()}
    if len(set(fold_counts.values())) != 1:
        raise ValueError(f"the average over tasks aligns folds by index and needs equal fold counts, got {fold_counts}")
    per_fold_mean = np.mean(np.stack(list(reductions.values())), axis=0)
    mean_train = float(np.mean([n_train[task] for task in per_task]))
    mean_test = float(np.mean([n_test[task] for task in per_task]))
    rows.append((AVERAGE_TASK, *corrected_interval(per_fold_mean, mean_train, mean_test, level)))
    return pl.DataFrame(rows, schema={"task": pl.String, "reduction": pl.Float64, "reduction_lo": pl.Float64,
                                      "reduction_hi": pl.Float64}, orient="row")
