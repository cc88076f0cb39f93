"""Scores for the stellar label emulator's posteriors and for the two baselines it is compared to.

The emulator returns, per test star and task, S posterior samples of a label; the Gaussian network returns a mean
and a standard deviation; the boosted trees return one number. Every figure here is defined for all three (where it
makes sense) so one table (task, method, metric, value, n) compares them on the same stars:

- accuracy: the robust scatter (MAD-std) and the bias (median) of the residual ``point estimate - truth``; the
  point estimate of a posterior is its median. Robust, because a few catastrophic stars would dominate an RMS.
- calibration: the coverage of the central 68% and 95% intervals (p16-p84, p2.5-p97.5 of the samples; mean +/- the
  Gaussian quantile for the network), the PIT histogram and a calibration curve. Whether an observed coverage is
  consistent with a calibrated model is a binomial question: :func:`coverage_interval` gives the acceptance band.
- both at once: the CRPS, a proper score in the label's units that rewards a sharp AND calibrated posterior; for a
  point forecast it reduces to the absolute error, so it ranks all three methods on one scale.
- shape: :func:`bimodality`, a stated test of whether a 1-D posterior has two modes (the red clump / red giant
  branch degeneracy of logg near 4850-5050 K), judged by BIC, both weights, Ashman's D and a density valley.

All inputs are numpy arrays in physical units; samples are [n stars, S samples], truths and point estimates [n].
Non-finite inputs are refused rather than silently dropped: a NaN sample means a broken model, not a missing star.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

# 1 / Phi^-1(3/4): makes the MAD a consistent estimator of a Gaussian's standard deviation
MAD_TO_STD = 1.4826

# Bimodality test (see :func:`bimodality`): two components must beat one by "very strong" evidence on the
# Kass & Raftery (1995) BIC scale, neither may be a small tail patch, and the two must be well separated.
BIMODAL_MIN_DELTA_BIC = 10.0
BIMODAL_MIN_WEIGHT = 0.1
BIMODAL_MIN_ASHMAN_D = 2.0
# ... and the samples themselves (a kernel density estimate) must dip between the two means to below this fraction
# of the lower peak: a flat-topped posterior is fitted by two well separated Gaussians but has no valley.
BIMODAL_MAX_DIP_RATIO = 0.8

# the central intervals reported by summarise / task_metrics
COVERAGE_LEVELS = (0.68, 0.95)


def _vector(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf")
    return array


def _samples(samples: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    array = np.asarray(samples, dtype=np.float64)
    if array.ndim == 1:  # one star's samples
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"samples must be [n stars, S samples], got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("samples contain NaN or inf")
    if truth is not None and len(truth) != len(array):
        raise ValueError(f"{len(array)} rows of samples but {len(truth)} truths")
    return array


def _central_bounds(level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return (1.0 - level) / 2.0, (1.0 + level) / 2.0


def summarise(samples: np.ndarray) -> dict[str, np.ndarray]:
    """Per-star median and the bounds of the central 68% (p16, p84) and 95% (p2_5, p97_5) intervals, each [n]."""
    array = _samples(samples)
    quantiles = np.quantile(array, [0.5, 0.16, 0.84, 0.025, 0.975], axis=1)
    return dict(zip(("median", "p16", "p84", "p2_5", "p97_5"), quantiles, strict=True))


def mad_std(x: np.ndarray) -> float:
    """1.4826 x median(|x - median(x)|): the standard deviation for Gaussian x, unmoved by a few outliers."""
    values = _vector(x, "x")
    if len(values) == 0:
        return math.nan
    return float(MAD_TO_STD * np.median(np.abs(values - np.median(values))))


def bias(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Median of ``estimate - truth`` (the median, for the same robustness as :func:`mad_std`)."""
    estimate, truth = _vector(estimate, "estimate"), _vector(truth, "truth")
    if estimate.shape != truth.shape:
        raise ValueError(f"estimate {estimate.shape} and truth {truth.shape} are not aligned")
    return float(np.median(estimate - truth)) if len(truth) else math.nan


def interval_coverage(low: np.ndarray, high: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of truths with low <= truth <= high (bounds inclusive)."""
    low, high, truth = _vector(low, "low"), _vector(high, "high"), _vector(truth, "truth")
    if not low.shape == high.shape == truth.shape:
        raise ValueError("low, high and truth are not aligned")
    return float(np.mean((truth >= low) & (truth <= high))) if len(truth) else math.nan


def coverage(samples: np.ndarray | tuple[np.ndarray, np.ndarray], truth: np.ndarray, level: float = 0.68) -> float:
    """Fraction of truths inside the central ``level`` interval of each star's samples.

    ``samples`` is either [n, S] samples (the interval is their (1 - level)/2 and (1 + level)/2 quantiles) or an
    already computed ``(low, high)`` pair of [n] bounds, in which case ``level`` only names what they are.
    """
    truth = _vector(truth, "truth")
    if isinstance(samples, tuple):
        return interval_coverage(samples[0], samples[1], truth)
    lo, hi = _central_bounds(level)
    low, high = np.quantile(_samples(samples, truth), [lo, hi], axis=1)
    return interval_coverage(low, high, truth)


def gaussian_coverage(mean: np.ndarray, std: np.ndarray, truth: np.ndarray, level: float = 0.68) -> float:
    """Coverage of the central ``level`` interval of N(mean, std): mean +/- Phi^-1((1 + level)/2) std."""
    mean, std = _vector(mean, "mean"), _vector(std, "std")
    half_width = stats.norm.ppf(_central_bounds(level)[1]) * std
    return interval_coverage(mean - half_width, mean + half_width, truth)


def crps_from_samples(samples: np.ndarray, truth: np.ndarray, fair: bool = False) -> np.ndarray:
    """Per-star CRPS of the samples' empirical distribution: E|X - y| - 1/2 E|X - X'|, [n].

    The pair term is O(S log S) via the sorted samples x_(1) <= ... <= x_(S):
    sum_{i,j} |x_i - x_j| = 2 sum_i (2i - S - 1) x_(i), so 1/2 E|X - X'| = sum_i (2i - S - 1) x_(i) / S^2.
    That is exactly the integral of (F_S(x) - 1{x >= y})^2 for the empirical CDF F_S. ``fair=True`` divides the
    pair sum by S (S - 1) instead (the unbiased estimate of the CRPS of the distribution the samples come from,
    Ferro 2014), which matters only for small S.
    """
    truth = _vector(truth, "truth")
    array = _samples(samples, truth)
    n_samples = array.shape[1]
    spread_to_truth = np.mean(np.abs(array - truth[:, None]), axis=1)
    weights = 2.0 * np.arange(1, n_samples + 1, dtype=np.float64) - n_samples - 1.0
    pair_sum_half = np.sort(array, axis=1) @ weights  # 1/2 sum_{i,j} |x_i - x_j|
    if fair:
        if n_samples < 2:
            raise ValueError("the fair CRPS needs at least 2 samples")
        return spread_to_truth - pair_sum_half / (n_samples * (n_samples - 1))
    return spread_to_truth - pair_sum_half / n_samples**2


def crps_gaussian(mean: np.ndarray, std: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Closed-form CRPS of N(mean, std) at truth, [n] (Gneiting et al. 2005):

    std [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)] with z = (truth - mean) / std.
    """
    mean, std, truth = _vector(mean, "mean"), _vector(std, "std"), _vector(truth, "truth")
    if (std <= 0).any():
        raise ValueError("std must be > 0")
    z = (truth - mean) / std
    return std * (z * (2.0 * stats.norm.cdf(z) - 1.0) + 2.0 * stats.norm.pdf(z) - 1.0 / math.sqrt(math.pi))


def crps_point(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """CRPS of a point forecast (a step CDF): |prediction - truth|, [n]."""
    prediction, truth = _vector(prediction, "prediction"), _vector(truth, "truth")
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} are not aligned")
    return np.abs(prediction - truth)


def pit(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Probability integral transform: the fraction of each star's samples below its truth, [n] in [0, 1].

    Uniform for a calibrated posterior; U-shaped when overconfident, peaked at 1/2 when underconfident, tilted when
    biased. Ties are not randomised: the posterior samples are continuous.
    """
    truth = _vector(truth, "truth")
    return np.mean(_samples(samples, truth) < truth[:, None], axis=1)


def pit_gaussian(mean: np.ndarray, std: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """PIT of N(mean, std) at truth: Phi((truth - mean) / std), [n]."""
    mean, std, truth = _vector(mean, "mean"), _vector(std, "std"), _vector(truth, "truth")
    return stats.norm.cdf((truth - mean) / std)


def pit_histogram(pit_values: np.ndarray, bins: int = 10) -> np.ndarray:
    """Counts of PIT values in ``bins`` equal bins over [0, 1] (a PIT of exactly 1 falls in the last bin)."""
    counts, _ = np.histogram(_vector(pit_values, "pit_values"), bins=bins, range=(0.0, 1.0))
    return counts


def calibration_curve(samples: np.ndarray, truth: np.ndarray,
                      levels: np.ndarray | None = None) -> np.ndarray:
    """Observed coverage of the central interval at each nominal level (default 0.05, 0.10, ..., 0.95).

    On the diagonal for a calibrated posterior; below it when overconfident. Same intervals as :func:`coverage`.
    """
    truth = _vector(truth, "truth")
    array = _samples(samples, truth)
    levels = np.arange(1, 20) / 20.0 if levels is None else _vector(levels, "levels")
    bounds = np.array([_central_bounds(level) for level in levels])  # [L, 2]
    quantiles = np.quantile(array, bounds.ravel(), axis=1).reshape(len(levels), 2, len(truth))
    inside = (truth >= quantiles[:, 0]) & (truth <= quantiles[:, 1])
    return inside.mean(axis=1)


def coverage_interval(n: int, level: float, confidence: float = 0.999) -> tuple[float, float]:
    """The band of observed coverage fractions a calibrated model lands in with probability >= ``confidence``.

    For a calibrated model the number of n test stars inside their ``level`` interval is Binomial(n, level)
    (stars independent); the band is its (1 - confidence)/2 and (1 + confidence)/2 quantiles over n. This is the
    acceptance region of a two-sided test of "calibrated" (not a Clopper-Pearson interval for the model's true
    coverage). A wide confidence keeps false alarms rare when many tasks and levels are checked at once.
    """
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    _central_bounds(level)
    tail = (1.0 - confidence) / 2.0
    low, high = stats.binom.ppf([tail, 1.0 - tail], n, level)
    return float(low) / n, float(high) / n


def coverage_passes(observed: float, n: int, level: float, confidence: float = 0.999) -> bool:
    """Whether an observed coverage over n stars is consistent with a calibrated model (see coverage_interval)."""
    low, high = coverage_interval(n, level, confidence)
    # observed is a count over n held as a float: a rounding error must not flip a boundary count
    slack = 0.5 / n
    return bool(low - slack < observed < high + slack)


def ashman_d(mean_1: float, std_1: float, mean_2: float, std_2: float) -> float:
    """Ashman, Bird & Zepf (1994) D = sqrt(2) |mu1 - mu2| / sqrt(sigma1^2 + sigma2^2).

    For an equal-weight, equal-width pair D > 2 is exactly the condition for the mixture density to have two peaks
    (|mu1 - mu2| > 2 sigma); D > 2 is the usual threshold for a clean separation.
    """
    return float(math.sqrt(2.0) * abs(mean_1 - mean_2) / math.sqrt(std_1**2 + std_2**2))


def dip_ratio(samples_1d: np.ndarray, low: float, high: float, n_grid: int = 201) -> float:
    """Depth of the valley of the samples' density between ``low`` and ``high``: the minimum of a Gaussian kernel
    density estimate (Scott's bandwidth) over [low, high] over the lower of the highest points on either side of
    it. 1 when the density is monotone or peaked in between (no valley), small for a deep valley.

    Scott's bandwidth comes from the overall spread, so it oversmooths a two-mode sample: that errs towards
    "no valley".
    """
    from scipy.stats import gaussian_kde

    x = _vector(samples_1d, "samples_1d")
    density = gaussian_kde(x)(np.linspace(low, high, n_grid))
    valley = int(np.argmin(density))
    lower_peak = min(density[:valley + 1].max(), density[valley:].max())
    return float(density[valley] / lower_peak) if lower_peak > 0 else 1.0


def bimodality(samples_1d: np.ndarray, rng_seed: int = 0, n_init: int = 5) -> dict[str, float | bool]:
    """Fit 1- and 2-component Gaussian mixtures to one posterior and test for two modes.

    ``bimodal`` is True when all four hold:
    - delta_bic = bic_1 - bic_2 > 10: two components are "very strongly" preferred (Kass & Raftery 1995). BIC alone
      is not enough: with thousands of samples any skewed or heavy-tailed shape prefers two components;
    - both weights >= 0.1: the second component is a mode, not a patch of tail;
    - Ashman's D > 2 (:func:`ashman_d`): the components are separated by more than their widths. A skewed or
      heavy-tailed unimodal distribution is fitted by a narrow and a wide component with close means, D < 2;
    - dip_ratio < 0.8 (:func:`dip_ratio`): the samples' own density has a valley between the two means at least
      20% below the lower peak. This rejects a flat-topped posterior (a uniform passes the three mixture tests).

    The samples are standardised before fitting (BIC differences are unchanged by an affine map; the mixture's
    covariance regularisation then means the same for logg and Teff); means and stds come back in input units,
    component 1 being the lower mean. Fewer than 10 distinct values are never bimodal.
    """
    from sklearn.mixture import GaussianMixture  # import here: only this function needs sklearn

    x = _vector(samples_1d, "samples_1d")
    result: dict[str, float | bool] = {"bic_1": math.nan, "bic_2": math.nan, "delta_bic": math.nan,
                                       "mean_1": math.nan, "mean_2": math.nan, "std_1": math.nan,
                                       "std_2": math.nan, "weight_1": math.nan, "weight_2": math.nan,
                                       "ashman_d": math.nan, "dip_ratio": math.nan, "bimodal": False}
    if len(np.unique(x)) < 10:
        return result
    centre, scale = float(np.mean(x)), float(np.std(x))
    z = (x - centre) / scale
    fits = [GaussianMixture(n_components=k, n_init=n_init, random_state=rng_seed).fit(z[:, None]) for k in (1, 2)]
    two = fits[1]
    order = np.argsort(two.means_.ravel())
    z_means = two.means_.ravel()[order]
    means = z_means * scale + centre
    stds = np.sqrt(two.covariances_.ravel()[order]) * scale
    weights = two.weights_[order]
    bic_1, bic_2 = float(fits[0].bic(z[:, None])), float(two.bic(z[:, None]))
    d = ashman_d(means[0], stds[0], means[1], stds[1])
    dip = dip_ratio(z, z_means[0], z_means[1])
    result.update({"bic_1": bic_1, "bic_2": bic_2, "delta_bic": bic_1 - bic_2,
                   "mean_1": float(means[0]), "mean_2": float(means[1]), "std_1": float(stds[0]),
                   "std_2": float(stds[1]), "weight_1": float(weights[0]), "weight_2": float(weights[1]),
                   "ashman_d": d, "dip_ratio": dip})
    result["bimodal"] = bool(bic_1 - bic_2 > BIMODAL_MIN_DELTA_BIC and weights.min() >= BIMODAL_MIN_WEIGHT
                             and d > BIMODAL_MIN_ASHMAN_D and dip < BIMODAL_MAX_DIP_RATIO)
    return result


def _level_key(level: float) -> str:
    return f"coverage_{round(level * 100):d}"


def task_metrics(samples: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """One task's figures for a sampled posterior: mad_std and bias of (median - truth), coverage_68,
    coverage_95, crps (mean over stars) and n."""
    truth = _vector(truth, "truth")
    array = _samples(samples, truth)
    median = np.median(array, axis=1)
    result = {"mad_std": mad_std(median - truth), "bias": bias(median, truth)}
    for level in COVERAGE_LEVELS:
        result[_level_key(level)] = coverage(array, truth, level)
    result["crps"] = float(np.mean(crps_from_samples(array, truth)))
    result["n"] = len(truth)
    return result


def gaussian_task_metrics(mean: np.ndarray, std: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The same figures as :func:`task_metrics` for a Gaussian posterior N(mean, std) (its median is the mean)."""
    mean, truth = _vector(mean, "mean"), _vector(truth, "truth")
    result = {"mad_std": mad_std(mean - truth), "bias": bias(mean, truth)}
    for level in COVERAGE_LEVELS:
        result[_level_key(level)] = gaussian_coverage(mean, std, truth, level)
    result["crps"] = float(np.mean(crps_gaussian(mean, std, truth)))
    result["n"] = len(truth)
    return result


def point_task_metrics(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """mad_std, bias, crps (= mean absolute error) and n of a point forecast; it has no interval to cover."""
    prediction, truth = _vector(prediction, "prediction"), _vector(truth, "truth")
    return {"mad_std": mad_std(prediction - truth), "bias": bias(prediction, truth),
            "crps": float(np.mean(crps_point(prediction, truth))), "n": len(truth)}


def metric_rows(task: str, method: str, metrics: dict[str, float]) -> list[dict[str, object]]:
    """Long-format rows {task, method, metric, value, n} of one metrics dict, for the comparison table."""
    n = int(metrics["n"])
    return [{"task": task, "method": method, "metric": name, "value": float(value), "n": n}
            for name, value in metrics.items() if name != "n"]
