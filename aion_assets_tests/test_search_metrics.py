"""nDCG@k, recall@k and the reference methods against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aion_assets.search.metrics import (
    dcg_at_k,
    evaluate_ranking,
    image_similarity_baseline,
    ndcg_at_k,
    random_baseline,
    random_expectation,
    recall_at_k,
)


def test_ndcg_textbook_case_by_hand() -> None:
    ranked = [3, 2, 3, 0, 1, 2]
    # gains 2^rel - 1 = 7, 3, 7, 0, 1, 3 over log2(rank + 1), ranks 1..6
    dcg = 7 / 1 + 3 / math.log2(3) + 7 / 2 + 0 / math.log2(5) + 1 / math.log2(6) + 3 / math.log2(7)
    assert dcg == pytest.approx(13.848, abs=1e-3)
    ideal = 7 / 1 + 7 / math.log2(3) + 3 / 2 + 3 / math.log2(5) + 1 / math.log2(6) + 0
    assert ideal == pytest.approx(14.595, abs=1e-3)
    assert dcg_at_k(ranked, k=6) == pytest.approx(dcg, rel=1e-12)
    assert ndcg_at_k(ranked, k=6) == pytest.approx(dcg / ideal, rel=1e-12)
    assert ndcg_at_k(ranked, k=6) == pytest.approx(0.9488, abs=1e-4)


def test_ndcg_ideal_comes_from_the_whole_pool() -> None:
    ranked = [3, 2, 3, 0, 1, 2]
    pool = ranked + [3, 2, 0, 0]  # two relevant objects the ranking never reached
    dcg3 = 7 + 3 / math.log2(3) + 7 / 2
    ideal3 = 7 + 7 / math.log2(3) + 7 / 2
    assert ndcg_at_k(ranked, k=3, all_relevances=pool) == pytest.approx(dcg3 / ideal3, rel=1e-12)
    assert ndcg_at_k(ranked, k=6, all_relevances=pool) < ndcg_at_k(ranked, k=6)


def test_ndcg_edge_cases() -> None:
    assert ndcg_at_k([3, 3, 2, 1, 0], k=10) == pytest.approx(1.0)
    assert ndcg_at_k([1, 1, 0, 0], k=2) == pytest.approx(1.0)
    assert ndcg_at_k([0, 0, 0], k=10) == 0.0
    assert ndcg_at_k([], k=10) == 0.0
    # binary relevance, one hit at rank 2 out of one relevant: 1/log2(3)
    assert ndcg_at_k([0, 1, 0], k=10) == pytest.approx(1 / math.log2(3))
    # beyond k nothing counts
    assert ndcg_at_k([0, 0, 1], k=2) == 0.0


def test_recall_hand_cases() -> None:
    flags = [True, False, True, False, True]
    assert recall_at_k(flags, n_relevant=4, k=2) == pytest.approx(1 / 4)
    assert recall_at_k(flags, n_relevant=4, k=5) == pytest.approx(3 / 4)
    assert recall_at_k(flags, n_relevant=3, k=100) == 1.0
    assert recall_at_k([False, False], n_relevant=0, k=10) == 0.0
    with pytest.raises(ValueError):
        recall_at_k(flags, n_relevant=2, k=5)


def test_evaluate_ranking_orders_by_score_and_breaks_ties_by_pool_order() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.5, 0.3])
    relevance = np.array([1, 0, 0, 2, 1])
    # order: 1 (0.9, rel 0), 2 (0.5, rel 0), 3 (0.5, rel 2), 4 (0.3, rel 1), 0 (0.1, rel 1)
    expected_ndcg = ndcg_at_k([0, 0, 2, 1, 1], k=3)
    figures = evaluate_ranking(scores, relevance, k_ndcg=3, k_recall=2)
    assert figures["ndcg@3"] == pytest.approx(expected_ndcg)
    assert figures["ndcg@3"] == pytest.approx((3 / 2) / (3 + 1 / math.log2(3) + 1 / 2))
    assert figures["recall@2"] == 0.0
    assert figures["n_relevant"] == 3 and figures["pool_size"] == 5


def test_evaluate_ranking_partial_sort_equals_full_sort() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(5000), 2)  # many ties
    relevance = rng.integers(0, 4, 5000) * (rng.random(5000) < 0.05)
    order = np.argsort(-scores, kind="stable")
    figures = evaluate_ranking(scores, relevance, k_ndcg=10, k_recall=100)
    n_relevant = int(np.count_nonzero(relevance))
    assert figures["ndcg@10"] == pytest.approx(ndcg_at_k(relevance[order], 10, all_relevances=relevance))
    assert figures["recall@100"] == pytest.approx(recall_at_k(relevance[order] > 0, n_relevant, 100))


def _at(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def test_image_similarity_baseline_by_hand() -> None:
    # relevant objects at 0, 10 and 60 degrees; irrelevant at 35, 90 and 130 (no ties in angle)
    angles = [0, 10, 60, 35, 90, 130]
    relevance = np.array([1, 1, 1, 0, 0, 0])
    embeddings = np.array([_at(a) for a in angles], dtype=np.float32) * np.array([[1.0], [2.0], [3.0], [1], [1], [1]])
    # each query ranks the other five by angle distance, itself excluded (2 relevant left in the pool):
    #   0:  10(R) 35 60(R) 90 130  -> [1, 0, 1, 0, 0]
    #   10: 0(R) 35 60(R) 90 130   -> [1, 0, 1, 0, 0]
    #   60: 35 90 10(R) 0(R) 130   -> [0, 0, 1, 1, 0]
    ideal = 1 + 1 / math.log2(3)
    per_query = [(1 + 1 / 2) / ideal, (1 + 1 / 2) / ideal, (1 / 2 + 1 / math.log2(5)) / ideal]
    figures = image_similarity_baseline(embeddings, relevance, k_ndcg=10, k_recall=2)
    assert figures["n_queries"] == 3
    assert figures["ndcg@10"] == pytest.approx(np.mean(per_query), rel=1e-6)
    assert figures["recall@2"] == pytest.approx(np.mean([1 / 2, 1 / 2, 0]), rel=1e-6)
    assert figures["ndcg@10_std"] == pytest.approx(np.std(per_query), rel=1e-5)
    # an explicit query set: only object 2
    only = image_similarity_baseline(embeddings, relevance, k_ndcg=10, k_recall=2, query_rows=np.array([2]))
    assert only["ndcg@10"] == pytest.approx(per_query[2], rel=1e-6) and only["n_queries"] == 1
    sampled = image_similarity_baseline(embeddings, relevance, k_ndcg=10, k_recall=2, max_queries=2, seed=4)
    assert sampled["n_queries"] == 2
    assert any(sampled["ndcg@10"] == pytest.approx(np.mean(pair)) for pair in
               ([per_query[0], per_query[1]], [per_query[0], per_query[2]], [per_query[1], per_query[2]]))


def test_random_expectation_by_hand_and_random_baseline_converges() -> None:
    relevance = np.zeros(200)
    relevance[:10] = 1
    relevance[10:14] = 2
    expected = random_expectation(relevance, k_ndcg=10, k_recall=100)
    assert expected["recall@100"] == pytest.approx(0.5)
    mean_gain = (10 * 1 + 4 * 3) / 200
    ideal = sum((3 if r < 4 else 1) / math.log2(r + 2) for r in range(10))
    assert expected["ndcg@10"] == pytest.approx(mean_gain * sum(1 / math.log2(r + 2) for r in range(10)) / ideal)

    sampled = random_baseline(relevance, seed=1, n_trials=2000, k_ndcg=10, k_recall=100)
    for key in ("ndcg@10", "recall@100"):
        standard_error = sampled[f"{key}_std"] / math.sqrt(2000)
        assert abs(sampled[key] - expected[key]) < 4 * standard_error, key
    assert random_baseline(relevance, seed=1, n_trials=5) == random_baseline(relevance, seed=1, n_trials=5)
    assert random_expectation(np.zeros(20))["ndcg@10"] == 0.0


def test_reranked_order_puts_judged_candidates_first_in_vlm_order() -> None:
    from aion_assets.search.evaluation import reranked_order_scores

    text_scores = np.array([0.9, 0.1, 0.8, 0.5, 0.7])  # text order: 0, 2, 4, 3, 1
    scores = reranked_order_scores(text_scores, [4, 0])  # the VLM judged the top candidates 0 and 4: 4 first
    assert list(np.argsort(-scores, kind="stable")) == [4, 0, 2, 3, 1]


def test_check_flags_exactly_the_targets_where_text_search_loses() -> None:
    import polars as pl

    from aion_assets.search.evaluation import targets_below_baseline

    rows = [("rings", "text_search", 0.9), ("rings", "image_similarity", 0.6),
            ("lenses", "text_search", 0.4), ("lenses", "image_similarity", 0.7),
            ("mergers", "text_search", 0.5), ("mergers", "image_similarity", 0.5)]
    figures = pl.DataFrame(
        [{"target": t, "pool": pool, "method": m, "metric": metric,
          "value": (v if metric == "ndcg@10" else 1.0 - v) * (1.0 if pool == "release" else 0.5)}
         for t, m, v in rows for metric in ("ndcg@10", "recall@100") for pool in ("release", "survey")])
    # Survey figures are all halved: each pool is compared with itself, never with the other pool's baseline.
    table, losing = targets_below_baseline(figures)
    assert sorted(losing) == ["lenses/release", "lenses/survey"]
    assert table.height == 6


def test_a_changed_query_changes_the_evaluation_code_version() -> None:
    import dataclasses

    from aion_assets.search.targets import TARGETS, targets_version

    reworded = (dataclasses.replace(TARGETS[0], query=TARGETS[0].query + " seen face-on"),) + TARGETS[1:]
    assert targets_version(reworded) != targets_version(TARGETS) == targets_version(tuple(TARGETS))
