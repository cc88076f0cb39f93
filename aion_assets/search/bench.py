"""Query latency and throughput of text search against a built index (``aion bench search``).

Start-up (loading the index, the text encoder and the heads) is the caller's and is not timed; a warm-up pass
over the queries runs before measuring so lazy initialisation (tokenizer caches, BLAS threads, first-touch of a
memory-mapped index) is excluded too. Each timed query is encode-and-search as ``aion search`` does it: encode
the text into the search space, then search the index (``p50_ms``, the figure compared across versions); the
ranking after it (the release filter, the artefact demotion's wider fetch and re-order, the result frame) is
timed on its own (``rank_p50_ms``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from aion_assets.search.artefacts import query_asks_for_artefacts
from aion_assets.search.index import VectorIndex
from aion_assets.search.service import ranked


def bench_search(index: VectorIndex, encode_query: Callable[[str], np.ndarray], queries: Sequence[str],
                 repeats: int = 5, k: int = 10, warmup: int = 1) -> dict[str, Any]:
    """Time ``repeats`` passes over ``queries``, one query at a time (as a user types them).

    ``encode_query(text)`` returns the query's search-space vector ([d] or [1, d]). Returns queries_per_s,
    p50_ms / p99_ms / mean_ms of encode-and-search, encode_p50_ms and search_p50_ms (the split), rank_p50_ms
    (:func:`~aion_assets.search.service.ranked` over the same query, demotion included), and n_queries (timed),
    k, index kind and ntotal.
    """
    if not queries:
        raise ValueError("at least one query is needed")
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    def rank(text: str, vector: np.ndarray) -> None:
        ranked(index, vector.reshape(-1), k, demote_artefacts=not query_asks_for_artefacts(text))

    for _ in range(warmup):
        for text in queries:
            vector = np.atleast_2d(encode_query(text))
            index.search(vector, k)
            rank(text, vector)

    encode_s, search_s, total_s, rank_s = [], [], [], []
    wall_start = time.perf_counter()
    for _ in range(repeats):
        for text in queries:
            t0 = time.perf_counter()
            vector = np.atleast_2d(encode_query(text))
            t1 = time.perf_counter()
            index.search(vector, k)
            t2 = time.perf_counter()
            encode_s.append(t1 - t0)
            search_s.append(t2 - t1)
            total_s.append(t2 - t0)
    wall = time.perf_counter() - wall_start
    # a pass of its own: interleaved, the ranking's work would evict what the next search has in cache
    vectors = {text: np.atleast_2d(encode_query(text)) for text in queries}
    for _ in range(repeats):
        for text in queries:
            t0 = time.perf_counter()
            rank(text, vectors[text])
            rank_s.append(time.perf_counter() - t0)
    total_ms = np.asarray(total_s) * 1e3
    return {
        "queries_per_s": len(total_s) / wall,
        "p50_ms": float(np.percentile(total_ms, 50)),
        "p99_ms": float(np.percentile(total_ms, 99)),
        "mean_ms": float(total_ms.mean()),
        "encode_p50_ms": float(np.percentile(np.asarray(encode_s) * 1e3, 50)),
        "search_p50_ms": float(np.percentile(np.asarray(search_s) * 1e3, 50)),
        "rank_p50_ms": float(np.percentile(np.asarray(rank_s) * 1e3, 50)),
        "n_queries": len(total_s),
        "k": k,
        "index_kind": index.kind,
        "ntotal": index.ntotal,
    }
