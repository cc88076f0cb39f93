"""Scoring the emulator against its two baselines on identical stars. Pure: numpy, polars, scikit-learn, torch.

Every figure is a row (task, variant, method, metric, value, n, spread). The baselines are fitted per task and
variant on the same train/validation stars the emulator saw and scored on the same test stars it was asked
about. ``spread`` is set where the test set is small (the DR10 task): the baselines' standard deviation over
re-drawn splits, the emulator's over bootstrap resamples of its test stars (it is one trained model; re-drawing
its split would mean training it again per draw).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from aion_assets.stellar import scoring
from aion_assets.stellar.baselines import fit_boosted, fit_gaussian_network
from aion_assets.stellar.tasks import Task

EMULATOR, BOOSTED, GAUSSIAN = "emulator", "boosted", "gaussian"
# The red clump (logg ~2.6-2.7) and the red giant branch (~2.9-3.3) overlap in this Teff range.
RED_CLUMP_TEFF = (4850.0, 5050.0)
# A test star's neighbourhood in the training stars, and how many neighbours it takes to judge the data's shape.
NEIGHBOUR_TEFF, NEIGHBOUR_M_H, MIN_NEIGHBOURS = 60.0, 0.1, 40


@dataclass(frozen=True)
class Baselines:
    """The Gaussian network's (mean, std) on the test stars: the plots draw it against the emulator's."""

    gaussian_mean: np.ndarray
    gaussian_std: np.ndarray


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """The baselines are small models: one thread each is faster than two fighting over shared cores (see
    baselines.py for the figures). Restores torch's and the BLAS/OpenMP pools' thread counts afterwards."""
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(previous)


def metric_rows(task: str, variant: str, method: str, metrics: dict[str, float],
                spread: dict[str, float] | None = None) -> list[dict]:
    n = int(metrics["n"])
    return [{"task": task, "variant": variant, "method": method, "metric": name, "value": float(value), "n": n,
             "spread": None if spread is None or name not in spread else float(spread[name])}
            for name, value in metrics.items() if name != "n"]


def evaluate_variant(task: Task, variant: str, inputs: tuple[str, ...], test: pl.DataFrame, samples: np.ndarray,
                     train: pl.DataFrame, validation: pl.DataFrame, seed: int, gaussian_epochs: int,
                     ) -> tuple[list[dict], Baselines]:
    """The three methods' figures on one variant. ``test``/``train``/``validation``: task tables in physical
    units (columns star_id, the target, the inputs); ``samples`` [n_test, S] in physical units."""
    truth = test[task.target].to_numpy()
    rows = metric_rows(task.name, variant, EMULATOR, scoring.task_metrics(samples, truth))
    boosted, gaussian, baselines = _score_baselines(train, validation, test, task.target, inputs, seed,
                                                    gaussian_epochs)
    rows += metric_rows(task.name, variant, BOOSTED, boosted)
    rows += metric_rows(task.name, variant, GAUSSIAN, gaussian)
    return rows, baselines


def _score_baselines(train: pl.DataFrame, validation: pl.DataFrame, test: pl.DataFrame, target: str,
                     inputs: tuple[str, ...], seed: int, gaussian_epochs: int,
                     ) -> tuple[dict[str, float], dict[str, float], Baselines]:
    """Both baselines fitted on train (early-stopped on validation) and scored on test: their figures, and the
    Gaussian network's (mean, std) on the test stars."""
    x_train, y_train = _xy(train, target, inputs)
    x_val, y_val = _xy(validation, target, inputs)
    x_test, truth = _xy(test, target, inputs)
    with one_thread():
        boosted = fit_boosted(x_train, y_train, x_val, y_val, seed=seed)
        network = fit_gaussian_network(x_train, y_train, x_val, y_val, seed=seed, epochs=gaussian_epochs)
        mean, std = network.predict(x_test)
        prediction = boosted.predict(x_test)
    return (scoring.point_task_metrics(prediction, truth), scoring.gaussian_task_metrics(mean, std, truth),
            Baselines(mean, std))


def _xy(table: pl.DataFrame, target: str, inputs: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    return table.select(inputs).to_numpy().astype(np.float64), table[target].to_numpy().astype(np.float64)


def bootstrap_spread(samples: np.ndarray, truth: np.ndarray, resamples: int, seed: int) -> dict[str, float]:
    """Standard deviation of each emulator figure over bootstrap resamples of the test stars."""
    rng = np.random.default_rng(seed)
    draws = [scoring.task_metrics(samples[idx], truth[idx])
             for idx in (rng.integers(0, len(truth), len(truth)) for _ in range(resamples))]
    return {name: float(np.std([draw[name] for draw in draws], ddof=1)) for name in draws[0] if name != "n"}


def repeated_split_spread(pool: pl.DataFrame, task: Task, inputs: tuple[str, ...], repeats: int, seed: int,
                          gaussian_epochs: int, fractions: tuple[float, float] = (0.7, 0.1),
                          ) -> dict[str, dict[str, float]]:
    """Each baseline's figures on ``repeats`` re-drawn splits of ``pool`` (every star of the task's catalogue
    with the target and inputs): {method: {metric: std over the splits}}."""
    per_method: dict[str, list[dict[str, float]]] = {BOOSTED: [], GAUSSIAN: []}
    for repeat in range(repeats):
        order = np.random.default_rng(seed + 1000 + repeat).permutation(pool.height)
        n_train, n_val = int(fractions[0] * pool.height), int(fractions[1] * pool.height)
        train, val, test = (pool[order[:n_train]], pool[order[n_train:n_train + n_val]],
                            pool[order[n_train + n_val:]])
        boosted, gaussian, _ = _score_baselines(train, val, test, task.target, inputs, seed + repeat,
                                                gaussian_epochs)
        per_method[BOOSTED].append(boosted)
        per_method[GAUSSIAN].append(gaussian)
    return {method: {name: float(np.std([draw[name] for draw in draws], ddof=1)) for name in draws[0]
                     if name != "n"} for method, draws in per_method.items()}


@dataclass(frozen=True)
class RedClumpResult:
    n_region: int              # test stars in the overlap's Teff range
    n_data_bimodal: int        # ... whose training-star neighbourhood has a bimodal logg
    emulator_bimodal: float    # fraction of those whose emulator posterior is bimodal
    gaussian_bimodal: float    # the same for samples of the Gaussian baseline
    example: int | None        # row (in ``test``) of the posterior closest to two modes, for the plot


def red_clump_bimodality(test: pl.DataFrame, samples: np.ndarray, train: pl.DataFrame,
                         gaussian: Baselines, seed: int) -> RedClumpResult:
    """Where the red clump and the red giant branch overlap, is the posterior of logg bimodal for the stars
    whose data are? A star's data are bimodal when the logg of training stars alike in Teff and [M/H] pass
    :func:`scoring.bimodality`; its posterior is judged by the same test on its samples."""
    teff, m_h = test["teff"].to_numpy(), test["m_h"].to_numpy()
    in_region = np.flatnonzero((teff >= RED_CLUMP_TEFF[0]) & (teff <= RED_CLUMP_TEFF[1]))
    train_teff, train_m_h, train_logg = (train[name].to_numpy() for name in ("teff", "m_h", "logg"))
    rng = np.random.default_rng(seed)
    judged, emulator_votes, gaussian_votes, strength = [], [], [], []
    for row in in_region:
        near = (np.abs(train_teff - teff[row]) <= NEIGHBOUR_TEFF) & (np.abs(train_m_h - m_h[row]) <= NEIGHBOUR_M_H)
        if near.sum() < MIN_NEIGHBOURS or not scoring.bimodality(train_logg[near], rng_seed=seed)["bimodal"]:
            continue
        posterior = scoring.bimodality(samples[row], rng_seed=seed)
        gaussian_draws = rng.normal(gaussian.gaussian_mean[row], gaussian.gaussian_std[row], samples.shape[1])
        judged.append(row)
        emulator_votes.append(posterior["bimodal"])
        gaussian_votes.append(scoring.bimodality(gaussian_draws, rng_seed=seed)["bimodal"])
        strength.append(posterior["delta_bic"])
    # the plot's star: the posterior closest to two modes (the clearest bimodal one when any is)
    example = int(judged[int(np.argmax(np.nan_to_num(strength, nan=-np.inf)))]) if judged else None
    return RedClumpResult(len(in_region), len(judged), float(np.mean(emulator_votes)) if judged else 0.0,
                          float(np.mean(gaussian_votes)) if judged else 0.0, example)
