"""`aion bench index`: what each index kind costs and finds at N vectors, on two kinds of vectors. No dagster.

Vectors: ``structured`` are unit vectors near a mixture of 1,024 centres in a 32-d subspace of the D dimensions
(real embeddings are far from isotropic: the sample's search embeddings put 90% of their variance in ~30
directions); ``isotropic`` are uniform on the sphere, the worst case for any quantizer. Queries are fresh draws
from the same distribution, answered one at a time (as a server answers them), each against exact search.

Kinds: ``flat`` (the exact scan: the truth, and the physical bound: every query reads every vector),
``ivfpq`` (OPQ + IVF-PQ at ``pq_bytes`` per vector, built as the deployment builds it: trained once on a sample,
added per partition, merged on disk, lists memory-mapped, candidates re-ranked with the exact vectors read from a
memory-mapped array) and ``hnsw`` (HNSW over the full vectors).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from aion_assets.search.index import default_nlist, exact_neighbours, recall_against_exact
from aion_assets.search.sharded_index import ReRankedIndex, add_partition, load_merged, merge_shards, train_ivfpq

IVFPQ_SETTINGS = ((16, 4), (32, 8), (64, 16))  # (nprobe, k_factor), cheapest first
PARTITION_SIZE = 250_000


def make_vectors(kind: str, n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "isotropic":
        vectors = rng.standard_normal((n, d), dtype=np.float32)
    elif kind == "structured":
        latent_d = min(32, d)
        basis = np.linalg.qr(np.random.default_rng(1234).normal(size=(d, latent_d)))[0].astype(np.float32)
        centres = np.random.default_rng(4321).normal(size=(1024, latent_d)).astype(np.float32)
        vectors = np.empty((n, d), dtype=np.float32)
        for start in range(0, n, 100_000):  # in blocks: no n x latent temporaries beside the output
            m = min(100_000, n - start)
            latent = centres[rng.integers(0, len(centres), m)] + 0.5 * rng.standard_normal((m, latent_d),
                                                                                            dtype=np.float32)
            vectors[start:start + m] = latent @ basis.T + 0.1 * rng.standard_normal((m, d), dtype=np.float32)
    else:
        raise ValueError(f"unknown vector kind {kind!r}: structured or isotropic")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _timed_queries(search, queries: np.ndarray, k: int) -> tuple[np.ndarray, dict[str, float]]:
    """Each query alone on one thread, as a server's request thread runs it (builds use every core)."""
    rows, seconds = [], []
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for query in queries:
            started = time.perf_counter()
            rows.append(search(query[None, :], k)[1][0])
            seconds.append(time.perf_counter() - started)
    finally:
        faiss.omp_set_num_threads(threads)
    ms = np.asarray(seconds) * 1000.0
    return np.asarray(rows), {"queries_per_s": float(len(ms) / (ms.sum() / 1000.0)),
                              "p50_ms": float(np.percentile(ms, 50)),
                              "p99_ms": float(np.percentile(ms, 99))}


def _build_ivfpq(vectors: np.ndarray, pq_bytes: int, scratch: Path, seed: int,
                 opq_iterations: int) -> tuple[faiss.Index, float]:
    n, _ = vectors.shape
    nlist = default_nlist(n)
    sample_size = min(n, max(100_000, 40 * max(nlist, 256)))
    sample = vectors[np.random.default_rng(seed).choice(n, sample_size, replace=False)]
    started = time.perf_counter()
    trained = train_ivfpq(sample, nlist=nlist, pq_bytes=pq_bytes, opq_iterations=opq_iterations, seed=seed)
    shards = []
    for first in range(0, n, PARTITION_SIZE):
        shards.append(scratch / f"shard{len(shards):04d}.index")
        add_partition(trained, vectors[first:first + PARTITION_SIZE], first, shards[-1])
    index = load_merged(merge_shards(trained, shards, scratch / "merged.index"))
    for shard in shards:
        shard.unlink()
    return index, time.perf_counter() - started


def bench_kind(kind: str, vectors: np.ndarray, vectors_path: Path, queries: np.ndarray, truth: np.ndarray,
               k: int, pq_bytes: int, scratch: Path, seed: int, opq_iterations: int = 20) -> list[dict[str, Any]]:
    n, d = vectors.shape
    if kind == "flat":
        started = time.perf_counter()
        flat = faiss.IndexFlatIP(d)
        flat.add(vectors)
        build = time.perf_counter() - started
        found, timing = _timed_queries(flat.search, queries, k)
        return [{"kind": "flat", "setting": "exact", "build_s": build, "bytes_per_vector": 4.0 * d,
                 "recall_at_k": recall_against_exact(found, truth), **timing}]
    if kind == "hnsw":
        started = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 80
        hnsw.add(vectors)
        build = time.perf_counter() - started
        rows = []
        for ef in (128, 256):
            hnsw.hnsw.efSearch = ef
            found, timing = _timed_queries(hnsw.search, queries, k)
            rows.append({"kind": "hnsw", "setting": f"M32 ef{ef}", "build_s": build,
                         "bytes_per_vector": 4.0 * d + 2 * 32 * 4, "recall_at_k": recall_against_exact(found, truth), **timing})
        return rows
    if kind == "ivfpq":
        index, build = _build_ivfpq(vectors, pq_bytes, scratch, seed, opq_iterations)
        exact_vectors = np.load(vectors_path, mmap_mode="r")
        rows = []
        for nprobe, k_factor in IVFPQ_SETTINGS:
            reranked = ReRankedIndex(index, exact_vectors, nprobe=nprobe, k_factor=k_factor)
            found, timing = _timed_queries(reranked.search, queries, k)
            rows.append({"kind": "ivfpq", "setting": f"PQ{pq_bytes} nlist{faiss.extract_index_ivf(index).nlist} "
                         f"nprobe{nprobe} rerank{k_factor}x", "build_s": build,
                         "bytes_per_vector": float(pq_bytes), "recall_at_k": recall_against_exact(found, truth), **timing})
        return rows
    raise ValueError(f"unknown index kind {kind!r}: flat, ivfpq or hnsw")


def bench_index(n: int, d: int, vector_kinds: Sequence[str] = ("structured", "isotropic"),
                kinds: Sequence[str] = ("flat", "ivfpq", "hnsw"), n_queries: int = 200, k: int = 100,
                pq_bytes: int = 64, hnsw_max_n: int = 1_000_000, opq_iterations: int = 20,
                seed: int = 0) -> list[dict[str, Any]]:
    """One row per (vector kind, index kind, search setting): build_s, bytes_per_vector, recall_at_k,
    queries_per_s, p50_ms, p99_ms, plus n, d, k. HNSW is skipped above ``hnsw_max_n`` (its build is hours
    at 2 cores; the document extrapolates it)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="aion-bench-index-") as folder:
        scratch = Path(folder)
        for vector_kind in vector_kinds:
            vectors = make_vectors(vector_kind, n, d, seed)
            queries = make_vectors(vector_kind, n_queries, d, seed + 1)
            vectors_path = scratch / "vectors.npy"
            np.save(vectors_path, vectors)
            truth = exact_neighbours(vectors, queries, k)
            for kind in kinds:
                if kind == "hnsw" and n > hnsw_max_n:
                    continue
                for row in bench_kind(kind, vectors, vectors_path, queries, truth, k, pq_bytes, scratch, seed,
                                      opq_iterations):
                    rows.append({"vectors": vector_kind, "n": n, "d": d, "k": k, **row})
            del vectors
    return rows


def largest_n(d: int, memory_bytes: int, copies: float = 3.0) -> int:
    """The largest N whose float32 vectors fit ``copies`` times in ``memory_bytes`` (the array, its file in the
    page cache, the index), rounded down to a power of ten times 1, 2 or 5."""
    raw = memory_bytes / (copies * 4 * d)
    magnitude = 10 ** int(math.log10(raw))
    return max(m * magnitude for m in (1, 2, 5) if m * magnitude <= raw)
