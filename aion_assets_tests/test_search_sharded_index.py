"""Train once, add per partition, merge on disk, memory-map, re-rank exactly: a toy that must reach a recall bound
and answer exactly as one index built in one go."""

from __future__ import annotations

import faiss
import numpy as np

from aion_assets.search.sharded_index import ReRankedIndex, add_partition, load_merged, merge_shards, train_ivfpq


def _structured(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Unit vectors near a 64-centre mixture in an 8-d subspace: the shape real embeddings have."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(d, 8)))[0]
    centres = rng.normal(size=(64, 8))
    latent = centres[rng.integers(0, 64, n)] + 0.3 * rng.normal(size=(n, 8))
    vectors = latent @ basis.T + 0.05 * rng.normal(size=(n, d))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_merged_shards_answer_as_one_index_and_reranking_reaches_the_bound(tmp_path) -> None:
    vectors = _structured(24_000, 64)
    trained = train_ivfpq(vectors[:12_000], nlist=64, pq_bytes=8, opq_iterations=4)
    bounds = [0, 7_000, 15_000, 24_000]  # partitions of unequal size, as shards are
    shards = []
    for i, (start, stop) in enumerate(zip(bounds, bounds[1:])):
        shards.append(tmp_path / f"shard{i}.index")
        assert add_partition(trained, vectors[start:stop], start, shards[-1]) == stop - start
    assert trained.ntotal == 0  # the trained index is shared by every step, never filled
    merged = load_merged(merge_shards(trained, shards, tmp_path / "merged.index"))
    assert merged.ntotal == len(vectors)

    whole = faiss.clone_index(trained)
    whole.add(vectors)
    queries = vectors[np.random.default_rng(1).choice(len(vectors), 50, replace=False)]
    for index in (merged, whole):
        faiss.extract_index_ivf(index).nprobe = 16
    assert np.array_equal(merged.search(queries, 20)[1], whole.search(queries, 20)[1])

    exact = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
    on_disk = np.lib.format.open_memmap(tmp_path / "vectors.npy", mode="w+", dtype=np.float32, shape=vectors.shape)
    on_disk[:] = vectors
    reranked = ReRankedIndex(merged, np.load(tmp_path / "vectors.npy", mmap_mode="r"), nprobe=16, k_factor=16)
    scores, rows = reranked.search(queries, 10)
    recall = np.mean([len(set(r) & set(e)) / 10 for r, e in zip(rows, exact)])
    plain = np.mean([len(set(r) & set(e)) / 10 for r, e in zip(merged.search(queries, 10)[1], exact)])
    assert recall >= 0.95 and recall > plain  # the exact re-rank is where recall comes from
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    assert reranked.bytes_in_memory_per_vector == 8 + 8
