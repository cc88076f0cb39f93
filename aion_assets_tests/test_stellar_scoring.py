"""Posterior scores of the stellar emulator and its baselines against hand-computed cases and their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from aion_assets.stellar.scoring import (
    ashman_d,
    bias,
    bimodality,
    calibration_curve,
    coverage,
    coverage_interval,
    coverage_passes,
    crps_from_samples,
    crps_gaussian,
    crps_point,
    gaussian_coverage,
    gaussian_task_metrics,
    mad_std,
    metric_rows,
    pit,
    pit_gaussian,
    pit_histogram,
    point_task_metrics,
    summarise,
    task_metrics,
)


def _gaussian_stars(n: int, n_samples: int, model_std_factor: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Truths drawn from N(mu_i, sigma_i); the model samples N(mu_i, factor * sigma_i) (1 = calibrated)."""
    rng = np.random.default_rng(seed)
    mu, sigma = rng.normal(0.0, 2.0, n), rng.uniform(0.1, 1.0, n)
    truth = mu + sigma * rng.standard_normal(n)
    samples = mu[:, None] + model_std_factor * sigma[:, None] * rng.standard_normal((n, n_samples))
    return samples, truth


def test_mad_std_by_hand() -> None:
    # median 3; |x - 3| = 2, 1, 0, 1, 97 -> median 1; the outlier 100 does not matter
    assert mad_std(np.array([1.0, 2.0, 3.0, 4.0, 100.0])) == pytest.approx(1.4826)
    # median (1 + 5)/2 = 3; |x - 3| = 3, 3, 2, 2, 3, 4 -> sorted 2, 2, 3, 3, 3, 4 -> median 3
    assert mad_std(np.array([0.0, 0.0, 1.0, 5.0, 6.0, 7.0])) == pytest.approx(3 * 1.4826)
    assert mad_std(np.full(7, 4.2)) == 0.0
    # consistent for a Gaussian: 1.4826 = 1 / Phi^-1(3/4)
    assert 1.4826 * stats.norm.ppf(0.75) == pytest.approx(1.0, abs=1e-4)
    assert mad_std(np.random.default_rng(0).normal(5.0, 0.3, 200_000)) == pytest.approx(0.3, rel=0.01)


def test_bias_is_the_median_residual() -> None:
    # residuals 0.5, -0.5, 1.0 -> median 0.5 (the mean would be 1/3)
    assert bias(np.array([1.0, 2.0, 3.0]), np.array([0.5, 2.5, 2.0])) == pytest.approx(0.5)
    assert bias(np.array([1.0, 2.0, 3.0, 50.0]), np.array([1.0, 2.0, 3.0, 0.0])) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        bias(np.array([1.0, 2.0]), np.array([1.0]))


def test_summarise_and_coverage_on_a_grid_of_samples() -> None:
    samples = np.tile(np.arange(101, dtype=np.float64), (4, 1))  # quantile q of 0..100 is 100 q exactly
    summary = summarise(samples)
    assert summary["median"] == pytest.approx([50.0] * 4)
    assert summary["p16"] == pytest.approx([16.0] * 4) and summary["p84"] == pytest.approx([84.0] * 4)
    assert summary["p2_5"] == pytest.approx([2.5] * 4) and summary["p97_5"] == pytest.approx([97.5] * 4)
    # 68%: [16, 84] holds 50 and 16 (bounds inclusive), not 15 or 85
    assert coverage(samples, np.array([50.0, 15.0, 85.0, 16.0]), 0.68) == pytest.approx(0.5)
    # 95%: [2.5, 97.5] holds 50, 15 and 85, not 98
    assert coverage(samples, np.array([50.0, 15.0, 85.0, 98.0]), 0.95) == pytest.approx(0.75)
    # explicit intervals
    low, high = np.zeros(4), np.ones(4)
    assert coverage((low, high), np.array([0.5, 1.0, 1.5, -0.1])) == pytest.approx(0.5)


def test_gaussian_coverage_uses_the_gaussian_quantile() -> None:
    # the 68% interval is mean +/- 0.9945 std, so a truth at exactly 1 std is outside it
    z68 = stats.norm.ppf(0.84)
    assert z68 == pytest.approx(0.9945, abs=1e-4)
    truth = np.array([0.99, 1.0, -0.5, 1.9, 2.0])
    assert gaussian_coverage(np.zeros(5), np.ones(5), truth, 0.68) == pytest.approx(2 / 5)
    assert gaussian_coverage(np.zeros(5), np.ones(5), truth, 0.95) == pytest.approx(4 / 5)  # 1.96 std


def test_crps_from_samples_by_hand() -> None:
    # samples {0, 1}, truth 0.5: E|X - y| = 0.5, E|X - X'| = (0 + 1 + 1 + 0) / 4 = 0.5 -> 0.5 - 0.25 = 0.25;
    # the integral of (F_S(x) - 1{x >= 0.5})^2 agrees: F_S = 1/2 on [0, 1), so 0.25 * 0.5 + 0.25 * 0.5
    assert crps_from_samples(np.array([[0.0, 1.0]]), np.array([0.5])) == pytest.approx([0.25])
    # one sample is a point forecast: the CRPS is the absolute error
    assert crps_from_samples(np.array([[2.0], [-1.0]]), np.array([0.5, 1.0])) == pytest.approx([1.5, 2.0])
    assert crps_point(np.array([2.0, -1.0]), np.array([0.5, 1.0])) == pytest.approx([1.5, 2.0])


def test_crps_from_samples_equals_the_brute_force_definition() -> None:
    rng = np.random.default_rng(7)
    samples = rng.standard_t(3, size=(25, 57)) * rng.uniform(0.1, 3.0, (25, 1)) + rng.normal(0, 5, (25, 1))
    truth = rng.normal(0, 5, 25)
    pairs = np.abs(samples[:, :, None] - samples[:, None, :]).sum(axis=(1, 2))  # O(S^2)
    to_truth = np.abs(samples - truth[:, None]).mean(axis=1)
    n_samples = samples.shape[1]
    np.testing.assert_allclose(crps_from_samples(samples, truth), to_truth - pairs / (2 * n_samples**2),
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(crps_from_samples(samples, truth, fair=True),
                               to_truth - pairs / (2 * n_samples * (n_samples - 1)), rtol=0, atol=1e-9)


def test_crps_gaussian_closed_form() -> None:
    # z = 0: std [0 + 2 phi(0) - 1/sqrt(pi)] = std (2 / sqrt(2 pi) - 1 / sqrt(pi)) = std (sqrt(2) - 1) / sqrt(pi)
    expected = (math.sqrt(2.0) - 1.0) / math.sqrt(math.pi)
    assert expected == pytest.approx(0.233695, abs=1e-6)
    assert crps_gaussian(np.array([0.0]), np.array([1.0]), np.array([0.0])) == pytest.approx([expected])
    assert crps_gaussian(np.array([3.0]), np.array([2.0]), np.array([3.0])) == pytest.approx([2 * expected])
    # against the definition: the integral of (F(x) - 1{x >= y})^2
    for mean, std, y in ((0.0, 1.0, 0.0), (1.0, 0.5, 2.3), (-4.0, 3.0, -1.0), (2.65, 0.05, 3.1)):
        below, _ = integrate.quad(lambda x: stats.norm.cdf(x, mean, std) ** 2, -np.inf, y)
        above, _ = integrate.quad(lambda x: stats.norm.sf(x, mean, std) ** 2, y, np.inf)
        closed = crps_gaussian(np.array([mean]), np.array([std]), np.array([y]))[0]
        assert closed == pytest.approx(below + above, rel=1e-7)


def test_crps_from_many_gaussian_samples_approaches_the_closed_form() -> None:
    rng = np.random.default_rng(1)
    mean, std, truth = np.array([0.0, 1.0, -2.0]), np.array([1.0, 0.3, 2.0]), np.array([0.0, 1.8, 1.0])
    samples = mean[:, None] + std[:, None] * rng.standard_normal((3, 100_000))
    np.testing.assert_allclose(crps_from_samples(samples, truth), crps_gaussian(mean, std, truth), rtol=5e-3)
    # at a perfect mean the CRPS grows with the spread (std (sqrt(2) - 1) / sqrt(pi)): sharpness is rewarded
    wide = crps_gaussian(np.array([0.0]), np.array([3.0]), np.array([0.0]))[0]
    assert wide > crps_gaussian(np.array([0.0]), np.array([1.0]), np.array([0.0]))[0]


def test_pit_by_hand_and_histogram() -> None:
    samples = np.tile(np.arange(10, dtype=np.float64), (3, 1))
    assert pit(samples, np.array([-1.0, 4.5, 100.0])) == pytest.approx([0.0, 0.5, 1.0])
    assert pit(samples, np.array([3.0, 0.0, 9.0])) == pytest.approx([0.3, 0.0, 0.9])  # strictly below
    counts = pit_histogram(np.array([0.0, 0.05, 0.15, 0.95, 1.0]), bins=10)
    assert counts.tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert pit_gaussian(np.array([0.0]), np.array([2.0]), np.array([2.0])) == pytest.approx([stats.norm.cdf(1.0)])


def test_pit_is_uniform_when_calibrated_and_u_shaped_when_overconfident() -> None:
    samples, truth = _gaussian_stars(5000, 1000, 1.0, seed=11)
    counts = pit_histogram(pit(samples, truth), bins=10)
    assert stats.chisquare(counts).pvalue > 0.001
    overconfident, truth = _gaussian_stars(5000, 1000, 0.5, seed=11)
    counts = pit_histogram(pit(overconfident, truth), bins=10)
    assert stats.chisquare(counts).pvalue < 1e-10
    # U: the two outer bins each hold more than twice a middle bin
    assert min(counts[0], counts[-1]) > 2 * max(counts[4], counts[5])
    # underconfident: peaked in the middle instead
    underconfident, truth = _gaussian_stars(5000, 1000, 2.0, seed=11)
    counts = pit_histogram(pit(underconfident, truth), bins=10)
    assert max(counts[0], counts[-1]) < 0.5 * min(counts[4], counts[5])


def test_calibration_curve() -> None:
    levels = np.array([0.1, 0.5, 0.68, 0.9, 0.95])
    samples, truth = _gaussian_stars(5000, 1000, 1.0, seed=5)
    curve = calibration_curve(samples, truth, levels)
    np.testing.assert_allclose(curve, levels, atol=0.025)
    assert curve[2] == pytest.approx(coverage(samples, truth, 0.68))
    overconfident, truth = _gaussian_stars(5000, 1000, 0.5, seed=5)
    assert (calibration_curve(overconfident, truth, levels) < levels - 0.03).all()
    assert len(calibration_curve(samples, truth)) == 19  # default 0.05 ... 0.95


def test_coverage_interval_is_the_binomial_acceptance_band() -> None:
    low, high = coverage_interval(100, 0.68)
    assert low < 0.68 < high
    # normal approximation: 0.68 +/- Phi^-1(0.9995) sqrt(0.68 * 0.32 / 100) = 0.68 +/- 3.29 * 0.0466
    assert low == pytest.approx(0.68 - 0.153, abs=0.02) and high == pytest.approx(0.68 + 0.153, abs=0.02)
    low_big, high_big = coverage_interval(10_000, 0.68)
    assert low < low_big < 0.68 < high_big < high
    assert high_big - low_big == pytest.approx(2 * 3.29 * math.sqrt(0.68 * 0.32 / 10_000), rel=0.05)
    # a calibrated model's observed coverage leaves the band at most 0.1% of the time
    counts = np.random.default_rng(0).binomial(100, 0.68, 200_000) / 100
    assert np.mean((counts < low) | (counts > high)) < 0.001
    assert coverage_passes(0.68, 100, 0.68) and coverage_passes(low, 100, 0.68) and coverage_passes(high, 100, 0.68)
    assert not coverage_passes(low - 0.01, 100, 0.68) and not coverage_passes(0.5, 100, 0.68)
    assert coverage_passes(0.60, 100, 0.68) and not coverage_passes(0.60, 10_000, 0.68)
    assert coverage_passes(0.95, 1000, 0.95) and not coverage_passes(0.90, 1000, 0.95)


def test_ashman_d_by_hand() -> None:
    # sqrt(2) * 0.45 / sqrt(0.05^2 + 0.1^2) = 0.6364 / 0.1118
    assert ashman_d(2.65, 0.05, 3.1, 0.1) == pytest.approx(5.692, abs=1e-3)
    assert ashman_d(0.0, 1.0, 2.0, 1.0) == pytest.approx(2.0)  # the threshold: two peaks just appear


def test_bimodality_red_clump_and_giant_branch() -> None:
    rng = np.random.default_rng(0)
    logg = np.concatenate([rng.normal(2.65, 0.05, 1000), rng.normal(3.1, 0.1, 1000)])
    result = bimodality(logg)
    assert result["bimodal"] is True
    assert result["mean_1"] == pytest.approx(2.65, abs=0.01) and result["mean_2"] == pytest.approx(3.1, abs=0.02)
    assert result["std_1"] == pytest.approx(0.05, abs=0.01) and result["std_2"] == pytest.approx(0.1, abs=0.02)
    assert result["weight_1"] == pytest.approx(0.5, abs=0.05)
    assert result["delta_bic"] == pytest.approx(result["bic_1"] - result["bic_2"]) and result["delta_bic"] > 10
    assert result["ashman_d"] > 2 and result["dip_ratio"] < 0.8
    assert bimodality(logg) == result  # fixed seed
    # an unequal 70/30 split with fewer samples is still found
    uneven = np.concatenate([rng.normal(2.65, 0.04, 350), rng.normal(3.05, 0.12, 150)])
    assert bimodality(uneven)["bimodal"] is True


@pytest.mark.parametrize("name", ["gaussian", "lognormal", "student_t", "uniform", "small_second_mode", "few"])
def test_unimodal_shapes_are_not_bimodal(name: str) -> None:
    rng = np.random.default_rng(3)
    samples = {"gaussian": rng.normal(3.0, 0.2, 2000),
               "lognormal": rng.lognormal(0.0, 0.5, 2000),  # skewed: BIC alone prefers two components
               "student_t": rng.standard_t(3, 2000),  # heavy tails: a narrow and a wide component, same mean
               "uniform": rng.uniform(2.5, 3.3, 2000),  # flat: two separated components but no valley
               "small_second_mode": np.concatenate([rng.normal(2.65, 0.05, 1950), rng.normal(3.1, 0.1, 50)]),
               "few": np.repeat([2.6, 3.1], 500)}[name]
    result = bimodality(samples)
    assert result["bimodal"] is False
    if name == "lognormal":
        assert result["delta_bic"] > 10 and result["ashman_d"] < 2  # it is the separation that rejects it
    if name == "uniform":
        assert result["ashman_d"] > 2 and result["dip_ratio"] > 0.8  # it is the valley that rejects it


def test_task_metrics_tie_together() -> None:
    # each star's samples are mu_i + sigma * (evenly spaced Gaussian quantiles): the median is exactly mu_i
    n_samples, sigma = 2001, 0.5
    grid = stats.norm.ppf((np.arange(n_samples) + 0.5) / n_samples)
    truth = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    offsets = np.array([0.1, -0.3, 0.2, 0.9, 0.0])  # median 0.1; |o - 0.1| = 0, .4, .1, .8, .1 -> median 0.1
    mu = truth + offsets
    samples = mu[:, None] + sigma * grid[None, :]
    figures = task_metrics(samples, truth)
    assert figures["bias"] == pytest.approx(0.1)
    assert figures["mad_std"] == pytest.approx(1.4826 * 0.1)
    # 68% interval mu +/- 0.497: offsets 0.1, -0.3, 0.2, 0.0 inside, 0.9 out; 95% (+/- 0.98) holds all five
    assert figures["coverage_68"] == pytest.approx(0.8) and figures["coverage_95"] == pytest.approx(1.0)
    assert figures["n"] == 5
    gaussian = gaussian_task_metrics(mu, np.full(5, sigma), truth)
    assert gaussian["crps"] == pytest.approx(figures["crps"], rel=2e-3)
    for key in ("bias", "mad_std", "coverage_68", "coverage_95", "n"):
        assert gaussian[key] == pytest.approx(figures[key])
    point = point_task_metrics(mu, truth)
    assert set(point) == {"mad_std", "bias", "crps", "n"}  # no interval, no coverage
    assert point["crps"] == pytest.approx(np.mean(np.abs(offsets))) and point["bias"] == pytest.approx(0.1)
    rows = metric_rows("logg", "gaussian_network", gaussian)
    assert {row["metric"] for row in rows} == {"bias", "mad_std", "coverage_68", "coverage_95", "crps"}
    assert all(row["task"] == "logg" and row["method"] == "gaussian_network" and row["n"] == 5 for row in rows)


def test_broken_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        task_metrics(np.array([[1.0, np.nan]]), np.array([1.0]))
    with pytest.raises(ValueError, match="truths"):
        crps_from_samples(np.ones((3, 4)), np.ones(2))
    with pytest.raises(ValueError):
        crps_gaussian(np.zeros(2), np.array([1.0, 0.0]), np.zeros(2))
    with pytest.raises(ValueError):
        coverage(np.ones((2, 3)), np.ones(2), level=1.5)
