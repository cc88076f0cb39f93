"""Ranking metrics of the zero-shot evaluation: nDCG@k, recall@k, AP@k, lift@k, and the two reference methods.

Conventions (AION-Search, Koblischke et al. 2025):
- nDCG@k: gain 2^rel - 1, discount log2(rank + 1) with ranks from 1; the ideal DCG is that of the best possible
  ordering of ALL relevances in the pool (not just of the retrieved list). A pool with nothing relevant scores 0.
- recall@k: relevant objects in the top k over all relevant objects in the pool (0 when nothing is relevant).
- AP@k (average precision over the top k): the sum over relevant ranks r <= k of precision@r, over min(R, k)
  where R is the pool's relevant count, so a ranking that puts min(R, k) relevant objects first scores 1.
- lift@k: precision@k over the pool's base rate R / N: how many times more relevant objects the top k holds than
  a random draw of k would (1 for random ranking, N / R at most). Rare targets are where it matters.
- relevance is graded (>= 0); an object is "relevant" when its relevance is > 0.
- Ties in scores are broken by pool order (a stable sort), so results are deterministic.

Metric names in the returned dicts are ``ndcg@{k}`` and ``recall@{k}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aion_assets.search.vectors import l2_normalise


def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))


def dcg_at_k(relevances_in_ranked_order: Sequence[float] | np.ndarray, k: int = 10) -> float:
    """sum over the first k ranks of (2^rel - 1) / log2(rank + 1)."""
    rel = np.asarray(relevances_in_ranked_order, dtype=np.float64)[:k]
    return float(np.sum((np.exp2(rel) - 1.0) * _discounts(len(rel))))


def ndcg_at_k(relevances_in_ranked_order: Sequence[float] | np.ndarray, k: int = 10,
              all_relevances: Sequence[float] | np.ndarray | None = None) -> float:
    """DCG@k of the ranking over the ideal DCG@k.

    ``all_relevances`` is every relevance in the pool (ranked or not); the ideal ordering sorts it. When omitted
    the ranked list is taken to be the whole pool. Returns 0.0 when the pool has no relevant object.
    """
    pool = relevances_in_ranked_order if all_relevances is None else all_relevances
    ideal = dcg_at_k(np.sort(np.asarray(pool, dtype=np.float64))[::-1], k)
    if ideal <= 0.0:
        return 0.0
    return dcg_at_k(relevances_in_ranked_order, k) / ideal


def recall_at_k(ranked_relevant_flags: Sequence[bool] | np.ndarray, n_relevant: int, k: int = 100) -> float:
    """Relevant objects among the first k ranks over ``n_relevant`` (the pool's total); 0.0 when it is 0."""
    if n_relevant <= 0:
        return 0.0
    hits = int(np.count_nonzero(np.asarray(ranked_relevant_flags, dtype=bool)[:k]))
    if hits > n_relevant:
        raise ValueError(f"{hits} relevant hits in the top {k} but n_relevant={n_relevant}")
    return hits / n_relevant


def average_precision_at_k(ranked_relevant_flags: Sequence[bool] | np.ndarray, n_relevant: int,
                           k: int = 100) -> float:
    """AP@k: mean of precision@r over the relevant ranks r <= k, normalised by min(n_relevant, k)."""
    if n_relevant <= 0:
        return 0.0
    flags = np.asarray(ranked_relevant_flags, dtype=bool)[:k]
    hits = np.cumsum(flags)
    precisions = hits / np.arange(1, len(flags) + 1)
    return float(np.sum(precisions[flags]) / min(n_relevant, k))


def lift_at_k(ranked_relevant_flags: Sequence[bool] | np.ndarray, n_relevant: int, pool_size: int,
              k: int = 10) -> float:
    """precision@k over the base rate n_relevant / pool_size (0 when nothing is relevant)."""
    if n_relevant <= 0 or pool_size <= 0:
        return 0.0
    top = np.asarray(ranked_relevant_flags, dtype=bool)[:k]
    precision = np.count_nonzero(top) / min(k, pool_size)
    return float(precision / (n_relevant / pool_size))


def evaluate_ranking(scores: np.ndarray, relevance: np.ndarray, k_ndcg: int = 10,
                     k_recall: int = 100, k_ap: int = 100, k_lift: int = 10) -> dict[str, float]:
    """Rank a pool by descending ``scores`` and score it against graded ``relevance`` (both [N], pool-aligned).

    Returns {"ndcg@K": ..., "recall@K": ..., "ap@K": ..., "lift@K": ..., "n_relevant": ..., "pool_size": ...}.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    relevance = np.asarray(relevance, dtype=np.float64).ravel()
    if scores.shape != relevance.shape:
        raise ValueError(f"scores {scores.shape} and relevance {relevance.shape} are not pool-aligned")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    if (relevance < 0).any():
        raise ValueError("relevance must be >= 0")
    top = max(k_ndcg, k_recall, k_ap, k_lift)
    if top < len(scores):
        # only the top ranks matter: partition first, then sort those (stable on pool order for equal scores)
        candidates = np.argpartition(-scores, top - 1)[:top]
        cutoff = scores[candidates].min()
        candidates = np.flatnonzero(scores >= cutoff)
        order = candidates[np.argsort(-scores[candidates], kind="stable")][:top]
    else:
        order = np.argsort(-scores, kind="stable")
    ranked = relevance[order]
    n_relevant = int(np.count_nonzero(relevance > 0))
    return {f"ndcg@{k_ndcg}": ndcg_at_k(ranked, k_ndcg, all_relevances=relevance),
            f"recall@{k_recall}": recall_at_k(ranked > 0, n_relevant, k_recall),
            f"ap@{k_ap}": average_precision_at_k(ranked > 0, n_relevant, k_ap),
            f"lift@{k_lift}": lift_at_k(ranked > 0, n_relevant, len(scores), k_lift),
            "n_relevant": n_relevant, "pool_size": len(scores)}


def image_similarity_baseline(base_embeddings: np.ndarray, relevance: np.ndarray, k_ndcg: int = 10,
                              k_recall: int = 100, query_rows: np.ndarray | None = None,
                              normalise: bool = True, max_queries: int | None = None, seed: int = 0,
                              batch: int = 256) -> dict[str, float]:
    """The paper's image-similarity baseline: every relevant object in turn is the query (cosine similarity of
    base embeddings), ranked against the rest of the pool without itself; the metrics are averaged over queries.

    Args:
        base_embeddings: [N, d] pool embeddings (e.g. the frozen image encoder's), pool-aligned with ``relevance``.
        relevance: [N] graded relevance of the pool.
        query_rows: which pool rows act as queries (default: every relevant row).
        max_queries: average over a seeded random subset of at most this many queries (large classes).
    Returns:
        The mean of :func:`evaluate_ranking`'s figures over queries, plus "n_queries" and their std
        ("ndcg@K_std", "recall@K_std"); "n_relevant" is the pool's count including the query itself.
    """
    relevance = np.asarray(relevance, dtype=np.float64).ravel()
    vectors = l2_normalise(base_embeddings) if normalise else np.asarray(base_embeddings, dtype=np.float32)
    if len(vectors) != len(relevance):
        raise ValueError("base_embeddings and relevance are not pool-aligned")
    queries = np.flatnonzero(relevance > 0) if query_rows is None else np.asarray(query_rows, dtype=np.int64)
    if max_queries is not None and len(queries) > max_queries:
        queries = np.sort(np.random.default_rng(seed).choice(queries, size=max_queries, replace=False))
    per_query: dict[str, list[float]] = {key: [] for key in (f"ndcg@{k_ndcg}", f"recall@{k_recall}", "ap@100",
                                                              "lift@10")}
    for start in range(0, len(queries), batch):
        rows = queries[start:start + batch]
        sims = vectors[rows] @ vectors.T
        for row, row_sims in zip(rows, sims, strict=True):
            keep = np.ones(len(relevance), dtype=bool)
            keep[row] = False  # the query must not find itself
            figures = evaluate_ranking(row_sims[keep], relevance[keep], k_ndcg, k_recall)
            for key, value in figures.items():
                if key in per_query:
                    per_query[key].append(value)
    result: dict[str, float] = {"n_queries": len(queries), "n_relevant": int(np.count_nonzero(relevance > 0)),
                                "pool_size": len(relevance)}
    for key, values in per_query.items():
        result[key] = float(np.mean(values)) if values else 0.0
        result[f"{key}_std"] = float(np.std(values)) if values else 0.0
    return result


def random_expectation(relevance: np.ndarray, k_ndcg: int = 10, k_recall: int = 100, k_ap: int = 100,
                       k_lift: int = 10) -> dict[str, float]:
    """Exact expected nDCG@k, recall@k, AP@k and lift@k of a uniformly random ordering of the pool.

    Every rank holds a uniformly drawn pool member, so the expected gain at each rank is the pool's mean gain;
    the ideal DCG does not depend on the ordering. Expected recall@k is min(k, N) / N and expected lift is 1.
    AP@k: E[rel_r * hits_r / r] = (p + (r - 1) q) / r with p = R / N and q = R (R - 1) / (N (N - 1)), the chance
    that rank r and one given earlier rank are both relevant; summed over r <= k and divided by min(R, k).
    """
    relevance = np.asarray(relevance, dtype=np.float64).ravel()
    n = len(relevance)
    ideal = dcg_at_k(np.sort(relevance)[::-1], k_ndcg)
    mean_gain = float(np.mean(np.exp2(relevance) - 1.0)) if n else 0.0
    expected_dcg = mean_gain * float(np.sum(_discounts(min(k_ndcg, n))))
    has_relevant = bool(np.any(relevance > 0))
    return {f"ndcg@{k_ndcg}": expected_dcg / ideal if ideal > 0 else 0.0,
            f"recall@{k_recall}": min(k_recall, n) / n if has_relevant else 0.0,
            f"ap@{k_ap}": expected_average_precision(int(np.count_nonzero(relevance > 0)), n, k_ap),
            f"lift@{k_lift}": 1.0 if has_relevant else 0.0,
            "n_relevant": int(np.count_nonzero(relevance > 0)), "pool_size": n}


def expected_average_precision(n_relevant: int, pool_size: int, k: int = 100) -> float:
    """E[AP@k] of a uniformly random ordering of a pool with ``n_relevant`` of ``pool_size`` relevant."""
    if n_relevant <= 0 or pool_size <= 0:
        return 0.0
    p = n_relevant / pool_size
    q = n_relevant * (n_relevant - 1) / (pool_size * (pool_size - 1)) if pool_size > 1 else 0.0
    ranks = np.arange(1, min(k, pool_size) + 1, dtype=np.float64)
    return float(np.sum((p + (ranks - 1) * q) / ranks) / min(n_relevant, k))


def random_baseline(relevance: np.ndarray, seed: int = 0, n_trials: int = 100, k_ndcg: int = 10,
                    k_recall: int = 100) -> dict[str, float]:
    """Mean figures over ``n_trials`` seeded random orderings of the pool (the "random" method of the eval table).

    Converges to :func:`random_expectation`; the sampled version is what a user of random search would see.
    """
    relevance = np.asarray(relevance, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    ndcg_key, recall_key = f"ndcg@{k_ndcg}", f"recall@{k_recall}"
    trials = [evaluate_ranking(rng.random(len(relevance)), relevance, k_ndcg, k_recall) for _ in range(n_trials)]
    return {ndcg_key: float(np.mean([t[ndcg_key] for t in trials])),
            recall_key: float(np.mean([t[recall_key] for t in trials])),
            f"{ndcg_key}_std": float(np.std([t[ndcg_key] for t in trials])),
            f"{recall_key}_std": float(np.std([t[recall_key] for t in trials])),
            "n_trials": n_trials, "n_relevant": int(np.count_nonzero(relevance > 0)), "pool_size": len(relevance)}
