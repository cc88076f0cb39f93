"""The data-scaling fit: it recovers a known law, its interval covers the truth, and a flat curve is not forced up.

Bootstraps are kept to a few hundred resamples so the file stays well under ten seconds.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from aion_assets.zoo.scaling import (
    TABLE_COLUMNS,
    PowerLawFit,
    fit_power_law,
    fit_scaling_table,
    fit_with_interval,
    parameters_help,
)

A, ALPHA, C = 5.0, 0.4, 0.3
SIZES = 300 * 2 ** np.arange(5)
SEEDS = 3


def law_points(a: float = A, alpha: float = ALPHA, c: float = C, noise: float = 0.0,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    n = np.repeat(SIZES, SEEDS)
    loss = a * n.astype(float) ** -alpha + c
    return n, loss + np.random.default_rng(seed).normal(0.0, noise, n.size)


def test_noise_free_law_is_recovered_exactly() -> None:
    a, alpha, c = fit_power_law(*law_points())
    assert alpha == pytest.approx(ALPHA, abs=1e-3)
    assert a == pytest.approx(A, rel=1e-2)
    assert c == pytest.approx(C, abs=1e-3)


def test_noisy_law_interval_covers_truth_and_is_narrow() -> None:
    n, loss = law_points(noise=0.003, seed=1)
    fit = fit_with_interval(n, loss, n_bootstrap=300, seed=0)
    assert isinstance(fit, PowerLawFit)
    assert fit.n_points == n.size and fit.n_bootstrap == 300
    assert fit.alpha_lo <= fit.alpha <= fit.alpha_hi
    assert fit.alpha_lo <= ALPHA <= fit.alpha_hi
    assert fit.alpha_hi - fit.alpha_lo < 0.5
    # The fitted curve goes through the points to within the noise.
    assert np.abs(fit.predict(n) - loss).max() < 0.02


def test_flat_curve_is_not_forced_to_a_positive_exponent() -> None:
    n = np.repeat(SIZES, SEEDS)
    loss = 1.0 + np.random.default_rng(100).normal(0.0, 0.01, n.size)
    fit = fit_with_interval(n, loss, n_bootstrap=300, seed=0)
    assert fit.alpha_lo <= 0.0 <= fit.alpha_hi or abs(fit.alpha) < 0.05


def test_constant_curve_reports_zero_exponent() -> None:
    n = np.repeat(SIZES, 2)
    a, alpha, c = fit_power_law(n, np.full(n.size, 0.7))
    assert np.allclose(a * n.astype(float) ** -alpha + c, 0.7)
    assert alpha == 0.0 and a == 0.0 and c == pytest.approx(0.7)


def test_too_few_sizes_raise() -> None:
    with pytest.raises(ValueError, match="3 distinct"):
        fit_power_law(np.array([100, 100, 200, 200]), np.array([1.0, 1.1, 0.9, 0.95]))


def test_one_point_per_size_has_no_interval() -> None:
    fit = fit_with_interval(SIZES, A * SIZES.astype(float) ** -ALPHA + C, n_bootstrap=50)
    assert fit.alpha == pytest.approx(ALPHA, abs=1e-3)
    assert np.isnan(fit.alpha_lo) and np.isnan(fit.alpha_hi) and fit.n_bootstrap == 0


def scaling_points() -> pl.DataFrame:
    rows = []
    rng = np.random.default_rng(7)
    # (model, params, c): "big" sits well below "small"; "twin" is "small" again, within seed noise of it.
    for model, params, c in [("small", 1_000_000, 0.3), ("big", 10_000_000, 0.2), ("twin", 2_000_000, 0.3)]:
        for n in SIZES:
            for seed in range(SEEDS):
                loss = A * n ** -ALPHA + c + rng.normal(0.0, 0.003)
                rows.append((model, params, int(n), seed, loss, loss / 3))
    # A model with only two training-set sizes: it keeps its points but gets no fit.
    for n in SIZES[:2]:
        for seed in range(SEEDS):
            rows.append(("short", 500_000, int(n), seed, 0.9, 0.3))
    return pl.DataFrame(rows, schema=["model", "params", "n_train", "seed", "test_loss", "test_error"], orient="row")


def test_scaling_table_keeps_points_and_repeats_fits() -> None:
    points = scaling_points()
    table = fit_scaling_table(points, n_bootstrap=100, seed=0)
    assert table.columns == TABLE_COLUMNS
    assert table.height == points.height
    assert table.equals(table.sort(["params", "n_train", "seed"]))
    per_model = table.group_by("model").agg(pl.col("alpha").n_unique().alias("fits"), pl.col("alpha").first())
    assert per_model.get_column("fits").to_list() == [1] * 4
    short = table.filter(pl.col("model") == "short")
    assert short.height == 2 * SEEDS
    assert short.select(TABLE_COLUMNS[6:]).null_count().row(0) == (short.height,) * 5
    big = table.filter(pl.col("model") == "big")
    assert big.get_column("alpha")[0] == pytest.approx(ALPHA, abs=0.1)
    assert (big.get_column("alpha_lo") <= big.get_column("alpha")).all()


def test_parameters_help_flags_only_a_clear_improvement() -> None:
    points = scaling_points().filter(pl.col("model") != "short")
    helped = parameters_help(points)
    assert helped.get_column("model").to_list() == ["small", "twin", "big"]
    assert set(helped.get_column("n_train").to_list()) == {int(SIZES[-1])}
    assert helped.get_column("n_seeds").to_list() == [SEEDS] * 3
    flags = dict(zip(helped.get_column("model").to_list(), helped.get_column("better_than_smallest").to_list()))
    assert flags == {"small": False, "twin": False, "big": True}
    for col in ("test_loss_mean", "test_loss_std", "test_error_mean", "test_error_std"):
        assert col in helped.columns
