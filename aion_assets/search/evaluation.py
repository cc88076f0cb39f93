"""Zero-shot retrieval evaluation over labelled pools. Pure: arrays in, figure rows out."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from aion_assets.search.metrics import evaluate_ranking, image_similarity_baseline, random_expectation
from aion_assets.search.targets import TARGETS, Target

K_NDCG = 10
K_RECALL = 100


def target_pool(target: Target, cutouts: pl.DataFrame, labels: pl.DataFrame,
                excluded: pl.DataFrame) -> pl.DataFrame:
    """The target's release, less the objects whose descriptions trained the heads, with a 0/1 relevance."""
    relevant = (
        labels.filter((pl.col("release") == target.release) & (pl.col("name") == target.label)
                      & pl.col("value").is_in(list(target.relevant_values)))
        .select("object_id").unique().with_columns(pl.lit(1).alias("relevance"))
    )
    pool = (
        cutouts.filter(pl.col("release") == target.release)
        .join(excluded.select("release", "object_id"), on=["release", "object_id"], how="anti")
        .join(relevant, on="object_id", how="left")
        .with_columns(pl.col("relevance").fill_null(0))
        .sort("object_id")
    )
    return pool


Reranker = Callable[[Target, pl.DataFrame, np.ndarray], np.ndarray]


def reranked_order_scores(text_scores: np.ndarray, reranked_rows: list[int]) -> np.ndarray:
    """Scores whose descending order is the re-ranked list: the judged candidates first, in the VLM's order,
    then every other pool member in text-search order (the re-ranker only sees the top candidates)."""
    judged = np.asarray(reranked_rows, dtype=np.int64)
    rest = np.argsort(-text_scores, kind="stable")
    rest = rest[~np.isin(rest, judged)]
    order = np.concatenate([judged, rest])
    scores = np.empty(len(text_scores), dtype=np.float64)
    scores[order] = -np.arange(len(order), dtype=np.float64)
    return scores


def evaluate_target(
    target: Target,
    relevance: np.ndarray,
    search_vectors: np.ndarray,
    base_vectors: np.ndarray,
    query_vector: np.ndarray,
    reranked_scores: np.ndarray | None = None,
) -> list[dict]:
    """Rows (target, method, metric, value, n_relevant, pool_size) for text search, the image-similarity
    baseline, random ranking and, when given, the VLM-re-ranked text search."""
    n_relevant = int(relevance.sum())
    figures = {
        "text_search": evaluate_ranking(search_vectors @ query_vector, relevance, K_NDCG, K_RECALL),
        "image_similarity": image_similarity_baseline(base_vectors, relevance, K_NDCG, K_RECALL),
        "random": random_expectation(relevance, K_NDCG, K_RECALL),
    }
    if reranked_scores is not None:
        figures["reranked"] = evaluate_ranking(reranked_scores, relevance, K_NDCG, K_RECALL)
    return [
        {"target": target.name, "method": method, "metric": metric, "value": float(value),
         "n_relevant": n_relevant, "pool_size": int(len(relevance))}
        for method, scores in figures.items() for metric, value in scores.items()
        if metric in (f"ndcg@{K_NDCG}", f"recall@{K_RECALL}")  # the baselines also report counts
    ]


def evaluate_all(
    cutouts: pl.DataFrame,
    labels: pl.DataFrame,
    excluded: pl.DataFrame,
    vectors_for: Callable[[pl.DataFrame], tuple[np.ndarray, np.ndarray]],
    query_vectors: Callable[[list[str]], np.ndarray],
    targets: tuple[Target, ...] = TARGETS,
    rerank: Reranker | None = None,
) -> pl.DataFrame:
    """Every target whose release is ingested and has at least one relevant object outside the sample."""
    rows: list[dict] = []
    available = [t for t in targets if cutouts.filter(pl.col("release") == t.release).height]
    queries = query_vectors([t.query for t in available]) if available else np.zeros((0, 0))
    for target, query in zip(available, queries):
        pool = target_pool(target, cutouts, labels, excluded)
        relevance = pool["relevance"].to_numpy()
        if relevance.sum() == 0:
            continue
        search_vectors, base_vectors = vectors_for(pool)
        reranked = rerank(target, pool, search_vectors @ query) if rerank else None
        rows.extend(evaluate_target(target, relevance, search_vectors, base_vectors, query, reranked))
    return pl.DataFrame(rows)


def targets_below_baseline(figures: pl.DataFrame, metric: str = f"ndcg@{K_NDCG}") -> tuple[pl.DataFrame, list[str]]:
    """(targets x methods table of ``metric``, targets where text search scores below image similarity)."""
    table = figures.filter(pl.col("metric") == metric).pivot(on="method", index="target", values="value")
    losing = table.filter(pl.col("text_search") < pl.col("image_similarity"))["target"].to_list()
    return table, losing
