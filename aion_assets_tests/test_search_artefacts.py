"""The artefact score: weak labels from summaries, query detection, the calibrated model, ROC AUC and demotion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aion_assets.search.artefacts import (
    ArtefactModel,
    artefact_labels,
    demote_artefacts,
    fit_artefact_model,
    query_asks_for_artefacts,
    roc_auc,
)

torch.set_num_threads(1)

DIM = 16


def test_artefact_labels_from_summaries() -> None:
    summaries = [
        "Bright green satellite trail artefact crossing a sparse star field",  # no galaxy: 1
        "Sparse star field with a faint compact point-like source near the centre",  # no galaxy: 1
        "Smooth yellow elliptical galaxy crossed by a thin dark diagonal line artefact",  # galaxy + artefact: 1
        "Face-on spiral galaxy with two arms",  # a plain galaxy: 0
        "Two interacting galaxies with long tidal tails",  # a plain galaxy: 0
        None,  # no summary is no evidence: 0
        "",
    ]
    labels = artefact_labels(summaries)
    assert labels.tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert len(artefact_labels([])) == 0


@pytest.mark.parametrize("query", ["a satellite trail", "bright saturated stars", "diffraction spikes", "a star",
                                   "stars with diffraction spikes", "an image artefact", "empty sky"])
def test_queries_asking_for_artefacts_or_stars(query: str) -> None:
    assert query_asks_for_artefacts(query)
    assert query_asks_for_artefacts(query.upper())  # case does not matter


@pytest.mark.parametrize("query", ["a gravitational lens arc", "an edge-on galaxy with a dust lane",
                                   "a galaxy with a tidal stream", "merging galaxies with tidal tails",
                                   # "-" is a word boundary, so a bare \bstars?\b took these for a request for stars
                                   "a blue star-forming galaxy", "a galaxy with star formation",
                                   "a starburst galaxy", "a star-burst galaxy",
                                   # a satellite galaxy is a galaxy, not a satellite's trail
                                   "a spiral galaxy with a small satellite galaxy"])
def test_galaxy_queries_do_not_ask_for_artefacts(query: str) -> None:
    assert not query_asks_for_artefacts(query)


def make_embeddings(n: int, rng: np.random.Generator, rate: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Points around a shared direction (e_0), the artefacts shifted along another (e_1)."""
    labels = (rng.random(n) < rate).astype(np.int8)
    x = rng.normal(size=(n, DIM))
    x[:, 0] += 6.0
    x[:, 1] += 3.0 * labels
    return x.astype(np.float32), labels


@pytest.fixture(scope="module")
def model_and_data() -> tuple[ArtefactModel, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x, y = make_embeddings(400, rng)
    return fit_artefact_model(x, y, seed=0), x, y


def test_fitted_model_separates_and_reports_heldout_figures(model_and_data) -> None:
    model, x, y = model_and_data
    assert model.metrics["n"] == 400 and model.metrics["n_artefacts"] == y.sum()
    assert 20 <= y.sum() <= 60  # about 10 % positives
    assert model.metrics["heldout_auc"] > 0.9
    # a useful score beats predicting the base rate for everyone
    assert model.metrics["heldout_brier"] < model.metrics["base_rate_brier"]
    scores = model.score(x)
    assert scores.dtype == np.float32 and scores.shape == (400,)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert roc_auc(scores, y) > 0.9


def test_fitted_model_is_calibrated_on_new_data(model_and_data) -> None:
    model, _, _ = model_and_data
    rng = np.random.default_rng(1)
    x, y = make_embeddings(3000, rng)
    scores = model.score(x)
    # calibrated: the mean probability is the artefact rate of cutouts drawn like the training ones
    assert abs(float(scores.mean()) - float(y.mean())) < 0.05
    assert roc_auc(scores, y) > 0.9
    # and the scores are not just the base rate: artefacts score much higher than the rest on average
    assert scores[y == 1].mean() > 0.5 > scores[y == 0].mean() + 0.3


def test_fit_needs_enough_of_each_class() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, DIM)).astype(np.float32)
    few_positives = np.zeros(100, dtype=np.int8)
    few_positives[:4] = 1
    with pytest.raises(ValueError, match="at least 5 artefact"):
        fit_artefact_model(x, few_positives, folds=5)
    with pytest.raises(ValueError):
        fit_artefact_model(x, 1 - few_positives, folds=5)  # four non-artefacts
    fit_artefact_model(x, few_positives, folds=4)  # four of each per fold count is enough for 4 folds


def test_arrays_round_trip_gives_identical_scores(model_and_data) -> None:
    model, x, _ = model_and_data
    arrays = model.to_arrays()
    assert set(arrays) == {"mean", "weights", "bias_calibration"}
    again = ArtefactModel.from_arrays(arrays, model.metrics)
    assert np.array_equal(again.score(x), model.score(x))
    assert again.metrics == model.metrics
    assert ArtefactModel.from_arrays(arrays).metrics == {}


def test_roc_auc_by_hand() -> None:
    # pairs (positive, negative): 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes -> 3/4
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    # a tie between a positive and a negative counts half: (1 + 0.5 + 1 + 1) / 4
    assert roc_auc(np.array([0.2, 0.5, 0.5, 0.9]), np.array([0, 1, 0, 1])) == pytest.approx(0.875)
    assert roc_auc(np.array([0.5, 0.5, 0.5]), np.array([1, 0, 0])) == pytest.approx(0.5)
    assert roc_auc(np.array([0.9, 0.1]), np.array([1, 0])) == 1.0
    assert roc_auc(np.array([0.9, 0.1]), np.array([0, 1])) == 0.0
    assert math.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))
    assert math.isnan(roc_auc(np.array([0.1, 0.2]), np.array([0, 0])))


def test_demotion_puts_likely_artefacts_last_keeping_each_groups_order() -> None:
    scores = np.array([0.9, 0.2, 0.7, 0.5, 0.1, -0.3])
    artefact = np.array([0.8, 0.1, 0.5, 0.2, 0.9, 0.0])
    # demoted (>= 0.5): 0, 2, 4; kept: 1, 3, 5. Kept by score: 3, 1, 5; then demoted by score: 0, 2, 4
    demoted = demote_artefacts(scores, artefact, threshold=0.5)
    assert list(np.argsort(-demoted, kind="stable")) == [3, 1, 5, 0, 2, 4]
    flagged = artefact >= 0.5
    assert demoted[flagged].max() < demoted[~flagged].min()
    # within each group the scores only move together: their differences are unchanged
    assert np.allclose(np.diff(demoted[flagged]), np.diff(scores[flagged]))
    assert np.allclose(demoted[~flagged], scores[~flagged])


def test_demotion_changes_nothing_below_the_threshold() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=50)
    assert np.array_equal(demote_artefacts(scores, np.full(50, 0.49)), scores)
    # a higher threshold leaves a would-be artefact alone
    assert np.array_equal(demote_artefacts(scores, np.full(50, 0.8), threshold=0.9), scores)
