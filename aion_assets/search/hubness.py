"""Hubness: objects that sit in the top k of many unrelated queries, measured and corrected. Pure: no dagster.

In high-dimensional joint spaces a few points ("hubs") lie close to almost every query, so unrelated queries
return the same handful of objects. The measure is the k-occurrence N_k(x), how many queries have x in their
top k: its skewness over the collection (0 for a symmetric distribution; hubby spaces show several), and the
largest N_k among the queries a user would type. Two corrections, both per-object offsets that leave the index
untouched:
- centring: subtract the collection's mean image vector (and the mean description vector from a query), then
  renormalise, which removes the shared direction every hub leans towards;
- CSLS (Conneau et al. 2018): rank by 2 cos(q, x) - r(x), where r(x) is x's mean similarity to its k nearest
  reference texts (the training descriptions): an object close to every text pays for it.
"""

from __future__ import annotations

import numpy as np

from aion_assets.search.vectors import l2_normalise


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """[Q, k] row indices of each query's k best objects (unordered within the k)."""
    k = min(k, scores.shape[1])
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def k_occurrence(scores: np.ndarray, k: int = 10) -> np.ndarray:
    """N_k: for each of the N objects, how many of the Q queries ([Q, N] scores) rank it in their top k."""
    counts = np.zeros(scores.shape[1], dtype=np.int64)
    np.add.at(counts, top_k_rows(scores, k).ravel(), 1)
    return counts


def skewness(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    spread = values.std()
    return float(((values - values.mean()) ** 3).mean() / spread ** 3) if spread > 0 else 0.0


def hubness_summary(scores: np.ndarray, k: int = 10) -> dict[str, float]:
    """Skewness of N_k, its maximum, and the share of all top-k slots taken by the 1 % most frequent objects."""
    counts = k_occurrence(scores, k)
    top = np.sort(counts)[::-1][: max(1, len(counts) // 100)]
    slots = max(1, int(counts.sum()))
    return {f"n{k}_skewness": skewness(counts), f"n{k}_max": float(counts.max(initial=0)),
            f"top1pct_share_of_top{k}": float(top.sum() / slots), "queries": float(scores.shape[0])}


def centring_offsets(image_vectors: np.ndarray) -> np.ndarray:
    """The mean image vector of a collection: the direction centring removes."""
    return np.asarray(image_vectors, dtype=np.float32).mean(axis=0)


def centre(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``vectors`` less ``mean``, renormalised to unit length."""
    return l2_normalise(np.asarray(vectors, dtype=np.float32) - mean[None, :])


def csls_penalty(image_vectors: np.ndarray, reference_texts: np.ndarray, k: int = 10,
                 batch: int = 4096) -> np.ndarray:
    """r(x) for every image: its mean cosine to its ``k`` nearest reference texts ([M, d], unit vectors)."""
    k = min(k, len(reference_texts))
    penalty = np.empty(len(image_vectors), dtype=np.float32)
    for start in range(0, len(image_vectors), batch):
        sims = image_vectors[start:start + batch] @ reference_texts.T
        penalty[start:start + batch] = np.sort(sims, axis=1)[:, -k:].mean(axis=1)
    return penalty


def csls_scores(cosines: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """CSLS ranking scores for one query (or [Q, N]): 2 cos - r(x); the query's own r term ranks nothing."""
    return 2.0 * np.asarray(cosines) - penalty
