"""Zero-shot retrieval evaluation over labelled pools. Pure: arrays in, figure rows out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from aion_assets.search.metrics import evaluate_ranking, image_similarity_baseline, random_expectation
from aion_assets.search.targets import TARGETS, Target

K_NDCG = 10
K_RECALL = 100
K_AP = 100
K_LIFT = 10
HEADLINE_METRICS = (f"ndcg@{K_NDCG}", f"recall@{K_RECALL}", f"ap@{K_AP}", f"lift@{K_LIFT}")

# Two pools per target. `release`: the release that publishes the label, so relevance is known for every object
# ranked (but a common class there is not rare: rings are half of gz-decals-rings). `survey`: every labelled
# release ingested, so the target's positives sit among all the other objects, at a base rate of a few percent,
# as in a real archive; objects of releases that do not publish the label count as non-relevant, so the survey
# figures are lower bounds.
POOLS = ("release", "survey")


def exclude_training_set(cutouts: pl.DataFrame, training_set: pl.DataFrame) -> pl.DataFrame:
    """Cutouts less every object that trained the heads, by (release, object_id) AND by image sha256: a byte-
    identical image under another id (surveys re-publish cutouts) is the same training image."""
    by_id = cutouts.join(training_set.select("release", "object_id"), on=["release", "object_id"], how="anti")
    return by_id.filter(~pl.col("sha256").is_in(training_set["sha256"].drop_nulls().implode()))


def labelled_releases(labels: pl.DataFrame) -> list[str]:
    return sorted(labels["release"].unique().to_list()) if labels.height else []


def target_pool(target: Target, pool: str, candidates: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """The target's pool among ``candidates`` (cutouts already less the training set), with a 0/1 relevance."""
    if pool not in POOLS:
        raise ValueError(f"pool {pool!r} is not one of {', '.join(POOLS)}")
    relevant = (
        labels.filter((pl.col("release") == target.release) & (pl.col("name") == target.label)
                      & pl.col("value").is_in(list(target.relevant_values)))
        .select("release", "object_id").unique().with_columns(pl.lit(1).alias("relevance"))
    )
    releases = [target.release] if pool == "release" else labelled_releases(labels)
    return (
        candidates.filter(pl.col("release").is_in(releases))
        .join(relevant, on=["release", "object_id"], how="left")
        .with_columns(pl.col("relevance").fill_null(0))
        .sort(["release", "object_id"])
    )


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
    pool: str,
    relevance: np.ndarray,
    search_vectors: np.ndarray,
    base_vectors: np.ndarray,
    query_vector: np.ndarray,
    reranked_scores: np.ndarray | None = None,
) -> list[dict]:
    """Rows (target, pool, method, metric, value, n_relevant, pool_size) for text search, the image-similarity
    baseline, random ranking and, when given, the VLM-re-ranked text search."""
    n_relevant = int(relevance.sum())
    ks = {"k_ndcg": K_NDCG, "k_recall": K_RECALL, "k_ap": K_AP, "k_lift": K_LIFT}
    figures = {
        "text_search": evaluate_ranking(search_vectors @ query_vector, relevance, **ks),
        "image_similarity": image_similarity_baseline(base_vectors, relevance, K_NDCG, K_RECALL),
        "random": random_expectation(relevance, **ks),
    }
    if reranked_scores is not None:
        figures["reranked"] = evaluate_ranking(reranked_scores, relevance, **ks)
    return [
        {"target": target.name, "pool": pool, "method": method, "metric": metric, "value": float(value),
         "n_relevant": n_relevant, "pool_size": int(len(relevance))}
        for method, scores in figures.items() for metric, value in scores.items()
        if metric in HEADLINE_METRICS  # the baselines also report counts and spreads
    ]


@dataclass
class Evaluation:
    figures: pl.DataFrame  # one row per target x pool x method x metric
    pools: pl.DataFrame  # (target, pool, release, object_id, sha256, relevance): every object ranked
    top_hits: pl.DataFrame  # (target, pool, rank, release, object_id, score, relevance): text search's top k


def evaluate_all(
    cutouts: pl.DataFrame,
    labels: pl.DataFrame,
    training_set: pl.DataFrame,
    vectors_for: Callable[[pl.DataFrame], tuple[np.ndarray, np.ndarray]],
    query_vectors: Callable[[list[str]], np.ndarray],
    targets: tuple[Target, ...] = TARGETS,
    rerank: Reranker | None = None,
    pools: tuple[str, ...] = POOLS,
    gallery_k: int = 10,
) -> Evaluation:
    """Every target whose release is ingested, in each pool where it has a relevant object outside the training
    set. ``cutouts`` needs release, shard, row, object_id and sha256; the re-ranker (paid) runs on the release
    pool only."""
    candidates = exclude_training_set(cutouts, training_set)
    rows: list[dict] = []
    ranked: list[pl.DataFrame] = []
    top_hits: list[pl.DataFrame] = []
    available = [t for t in targets if cutouts.filter(pl.col("release") == t.release).height]
    queries = query_vectors([t.query for t in available]) if available else np.zeros((0, 0))
    for target, query in zip(available, queries):
        for pool_name in pools:
            pool = target_pool(target, pool_name, candidates, labels)
            relevance = pool["relevance"].to_numpy()
            if relevance.sum() == 0:
                continue
            search_vectors, base_vectors = vectors_for(pool)
            scores = search_vectors @ query
            reranked = rerank(target, pool, scores) if rerank and pool_name == "release" else None
            rows.extend(evaluate_target(target, pool_name, relevance, search_vectors, base_vectors, query, reranked))
            labelled = pool.with_columns(pl.lit(target.name).alias("target"), pl.lit(pool_name).alias("pool"))
            ranked.append(labelled.select(list(POOL_SCHEMA)))
            top = np.argsort(-scores, kind="stable")[:gallery_k]
            top_hits.append(labelled[top.tolist()].with_columns(
                pl.Series("score", scores[top].astype(np.float64)), pl.int_range(1, len(top) + 1).alias("rank"))
                .select("target", "pool", "rank", "release", "object_id", "score", "relevance"))
    pools_frame = pl.concat(ranked).cast(POOL_SCHEMA) if ranked else pl.DataFrame(schema=POOL_SCHEMA)
    return Evaluation(pl.DataFrame(rows), pools_frame, pl.concat(top_hits) if top_hits else pl.DataFrame())


POOL_SCHEMA = {"target": pl.String, "pool": pl.String, "release": pl.String, "object_id": pl.String,
               "sha256": pl.String, "relevance": pl.Int32}


def training_overlap(pools: pl.DataFrame, training_set: pl.DataFrame) -> pl.DataFrame:
    """Pooled objects that are in the training set, by id or by image sha256: must be empty."""
    by_id = pools.join(training_set.select("release", "object_id"), on=["release", "object_id"], how="semi")
    by_image = pools.filter(pl.col("sha256").is_in(training_set["sha256"].drop_nulls().implode()))
    return pl.concat([by_id, by_image]).unique()


def targets_below_baseline(figures: pl.DataFrame, metric: str = f"ndcg@{K_NDCG}") -> tuple[pl.DataFrame, list[str]]:
    """(target x pool rows of ``metric`` per method, "target/pool" where text search scores below image
    similarity)."""
    table = figures.filter(pl.col("metric") == metric).pivot(on="method", index=["target", "pool"], values="value")
    losing = table.filter(pl.col("text_search") < pl.col("image_similarity"))
    return table, [f"{t}/{p}" for t, p in losing.select("target", "pool").iter_rows()]


def encoder_comparison(eval_results: pl.DataFrame, metric: str = f"ndcg@{K_NDCG}") -> pl.DataFrame:
    """The latest ``metric`` of text search and image similarity per image encoder, target and pool, restricted
    to pools that left out the same objects (``excluded_by``), so encoders are compared on identical pools."""
    if "image_encoder" not in eval_results.columns or eval_results.is_empty():
        return pl.DataFrame()
    rows = eval_results.filter(pl.col("image_encoder").is_not_null() & (pl.col("metric") == metric)
                               & pl.col("method").is_in(["text_search", "image_similarity"]))
    latest = (rows.sort("created_at").unique(subset=["image_encoder", "excluded_by", "target", "pool", "method"],
                                              keep="last")
              .with_columns(column=pl.concat_str("image_encoder", pl.lit(" "), "method")))
    return (latest.pivot(on="column", index=["excluded_by", "target", "pool"], values="value",
                         aggregate_function="first").sort("excluded_by", "target", "pool"))
