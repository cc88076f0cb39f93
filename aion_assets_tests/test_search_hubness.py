"""Hubness measures (k-occurrence, skewness, summary) and the two corrections (centring, CSLS) by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aion_assets.search.hubness import (
    centre,
    centring_offsets,
    csls_penalty,
    csls_scores,
    hubness_summary,
    k_occurrence,
    skewness,
    top_k_rows,
)

SCORES = np.array([
    [0.9, 0.1, 0.8, 0.2, 0.0],  # top 2: objects 0, 2
    [0.3, 0.7, 0.6, 0.1, 0.2],  # top 2: objects 1, 2
    [0.5, 0.4, 0.0, 0.9, 0.1],  # top 2: objects 3, 0
])


def test_k_occurrence_by_hand() -> None:
    assert [sorted(row) for row in top_k_rows(SCORES, 2).tolist()] == [[0, 2], [1, 2], [0, 3]]
    counts = k_occurrence(SCORES, k=2)
    assert counts.tolist() == [2, 1, 2, 1, 0]
    assert counts.sum() == 3 * 2  # every query fills k slots
    assert k_occurrence(SCORES, k=1).tolist() == [1, 1, 0, 1, 0]
    # k beyond the collection: every query holds every object
    assert k_occurrence(SCORES, k=10).tolist() == [3] * 5


def test_skewness_by_hand() -> None:
    assert skewness(np.array([-2.0, -1.0, 0.0, 1.0, 2.0])) == pytest.approx(0.0, abs=1e-12)
    # mean 2, deviations -2 (x4) and 8: second moment 16 (std 4), third moment (4 * -8 + 512) / 5 = 96
    assert skewness(np.array([0, 0, 0, 0, 10])) == pytest.approx(96 / 4 ** 3)
    assert skewness(np.array([0, 0, 0, 0, 10])) > 0
    assert skewness(np.array([0, 10, 10, 10, 10])) == pytest.approx(-1.5)
    assert skewness(np.full(6, 3.0)) == 0.0


def test_hubness_summary_by_hand() -> None:
    summary = hubness_summary(SCORES, k=2)
    assert set(summary) == {"n2_skewness", "n2_max", "top1pct_share_of_top2", "queries"}
    # N_2 = [2, 1, 2, 1, 0]: mean 1.2, deviations .8 -.2 .8 -.2 -1.2; m2 = 2.8 / 5, m3 = -0.72 / 5
    assert summary["n2_skewness"] == pytest.approx((-0.72 / 5) / (2.8 / 5) ** 1.5)
    assert summary["n2_max"] == 2.0
    # the top 1 % of 5 objects is at least one object: it holds 2 of the 6 top-2 slots
    assert summary["top1pct_share_of_top2"] == pytest.approx(2 / 6)
    assert summary["queries"] == 3.0


def test_csls_penalty_is_the_mean_of_the_top_k_similarities() -> None:
    images = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    texts = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    # similarities: image 0 -> 1, 0, 0.6; image 1 -> 0.6, 0.8, 1
    assert csls_penalty(images, texts, k=2) == pytest.approx([(1 + 0.6) / 2, (1 + 0.8) / 2])
    assert csls_penalty(images, texts, k=1) == pytest.approx([1.0, 1.0])
    # k beyond the references: all of them
    assert csls_penalty(images, texts, k=10) == pytest.approx([1.6 / 3, 2.4 / 3])
    assert csls_penalty(images, texts, k=2, batch=1) == pytest.approx(csls_penalty(images, texts, k=2))
    cos = np.array([[0.5, 0.2], [0.1, 0.9]])
    assert csls_scores(cos, np.array([0.8, 0.9])) == pytest.approx(np.array([[0.2, -0.5], [-0.6, 0.9]]))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_csls_unseats_a_hub_that_cosine_ranks_first() -> None:
    # reference texts e_0..e_3; objects x_j = e_j and a hub h = (1, 1, 1, 1) / 2, at cosine 0.5 to every text.
    refs = np.eye(4, dtype=np.float32)
    hub = np.full(4, 0.5, dtype=np.float32)
    objects = np.vstack([refs, hub])  # rows 0-3: x_j, row 4: the hub
    # query j = unit(e_j + 1.2 h), |e_j + 1.2 h|^2 = 1 + 1.2 + 1.44 = 3.64:
    #   cos(q_j, h) = 1.7 / 1.908 = 0.891 > cos(q_j, x_j) = 1.6 / 1.908 = 0.839 > cos(q_j, x_i) = 0.6 / 1.908
    # and a fifth query at e_0 itself, which cosine answers right (1 against 0.5)
    queries = np.vstack([_unit(refs + 1.2 * hub), refs[:1]])
    cosines = queries @ objects.T
    assert cosines[0, 4] == pytest.approx(1.7 / math.sqrt(3.64), rel=1e-6)
    assert cosines[0, 0] == pytest.approx(1.6 / math.sqrt(3.64), rel=1e-6)
    assert np.argmax(cosines, axis=1).tolist() == [4, 4, 4, 4, 0]
    assert hubness_summary(cosines, k=1)["n1_max"] == 4.0

    # over all four texts: r(h) = 0.5, r(x_j) = (1 + 0 + 0 + 0) / 4 = 0.25;
    # CSLS: hub 2 * 0.891 - 0.5 = 1.282 < x_j 2 * 0.839 - 0.25 = 1.427
    penalty = csls_penalty(objects, refs, k=4)
    assert penalty == pytest.approx([0.25, 0.25, 0.25, 0.25, 0.5])
    corrected = csls_scores(cosines, penalty[None, :])
    assert corrected[0, 4] == pytest.approx(2 * 1.7 / math.sqrt(3.64) - 0.5, rel=1e-6)
    assert np.argmax(corrected, axis=1).tolist() == [0, 1, 2, 3, 0]
    assert hubness_summary(corrected, k=1)["n1_max"] == 2.0  # x_0 for its two queries, nothing holds more

    # with k = 2 the hub and the x_j pay the same (0.5 each: 1 and 0 against 0.5 and 0.5): cosine's order stays
    same = csls_penalty(objects, refs, k=2)
    assert same == pytest.approx([0.5] * 5)
    assert np.argmax(csls_scores(cosines, same[None, :]), axis=1).tolist() == [4, 4, 4, 4, 0]


def test_centre_removes_the_mean_and_renormalises() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 6)).astype(np.float32) + np.array([5, 0, 0, 0, 0, 0], dtype=np.float32)
    mean = centring_offsets(vectors)
    assert mean == pytest.approx(vectors.mean(axis=0), abs=1e-6)
    centred = centre(vectors, mean)
    assert centred.shape == vectors.shape and centred.dtype == np.float32
    assert np.allclose(np.linalg.norm(centred, axis=1), 1.0, atol=1e-5)
    # each row points along (x - mean)
    shifted = vectors - mean
    assert np.allclose(centred * np.linalg.norm(shifted, axis=1, keepdims=True), shifted, atol=1e-5)
    # the shared direction is gone: before, every pair of vectors was close; after, they are spread out
    assert (_unit(vectors) @ _unit(vectors).T).min() > 0.3
    assert abs(float((centred @ centred.T).mean())) < 0.1
    # by hand: (3, 4) less (0, 1) is (3, 3), unit (1, 1) / sqrt 2
    assert centre(np.array([[3.0, 4.0]]), np.array([0.0, 1.0])) == pytest.approx(np.array([[2 ** -0.5, 2 ** -0.5]]))
