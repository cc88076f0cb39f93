"""Train once, add per partition, merge (on disk, or in memory from local-row shards), memory-map, re-rank exactly:
a toy that must reach a recall bound and answer exactly as one index built in one go."""

from __future__ import annotations

import faiss
import numpy as np
import polars as pl
import pytest

from aion_assets.search.index import (
    choose_sharded_kind,
    exact_neighbours,
    index_from_merged_shards,
    recall_against_exact,
    train_for_shards,
)
from aion_assets.search.sharded_index import (
    ReRankedIndex,
    add_partition,
    add_shard,
    index_from_bytes,
    index_to_bytes,
    load_merged,
    merge_local_shards,
    merge_shards,
    train_ivfpq,
)

faiss.omp_set_num_threads(1)


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


@pytest.fixture(scope="module")
def vectors_32() -> np.ndarray:
    return _structured(12_000, 32, seed=2)


@pytest.fixture(scope="module")
def trained_ivfpq(vectors_32) -> faiss.Index:
    # with an OPQ rotation in front: the merge must reach the IVF inside the transform and keep both counts
    return train_ivfpq(vectors_32[:10_000], nlist=32, pq_bytes=8, opq_iterations=2)


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_local_row_shards_merged_with_offsets_answer_as_one_index(kind: str, vectors_32, trained_ivfpq) -> None:
    vectors = vectors_32
    trained = faiss.IndexFlatIP(vectors.shape[1]) if kind == "flat" else trained_ivfpq
    bounds = [0, 5_000, 5_000, 9_000, 12_000]  # unequal partitions, one of them empty
    shards = []
    for start, stop in zip(bounds, bounds[1:]):
        shard = add_shard(trained, vectors[start:stop])
        assert shard.ntotal == stop - start
        shards.append(index_from_bytes(index_to_bytes(shard)))  # through the bytes a lake stores
    if kind == "ivfpq":  # each shard knows only its own rows
        ivf = faiss.extract_index_ivf(shards[-1])
        rows = np.concatenate([faiss.rev_swig_ptr(ivf.invlists.get_ids(i), ivf.invlists.list_size(i))
                               for i in range(ivf.nlist)])
        assert sorted(rows.tolist()) == list(range(3_000))
    merged = merge_local_shards(trained, shards)
    assert merged.ntotal == len(vectors) and trained.ntotal == 0

    whole = faiss.clone_index(trained)
    whole.add(vectors)
    queries = vectors[np.random.default_rng(3).choice(len(vectors), 60, replace=False)]
    if kind == "ivfpq":
        for index in (merged, whole):
            faiss.extract_index_ivf(index).nprobe = 8
    merged_scores, merged_rows = merged.search(queries, 25)
    whole_scores, whole_rows = whole.search(queries, 25)
    assert np.array_equal(merged_rows, whole_rows) and np.array_equal(merged_scores, whole_scores)

    # served: the same VectorIndex (ids, tuned settings, re-ranking) as the one-go index given the same rows
    ids = pl.DataFrame({"release": ["r"] * len(vectors), "object_id": [f"o{i}" for i in range(len(vectors))]})
    served, one_go = (index_from_merged_shards(index, ids, kind, {}, vectors, tune_k=10, tune_queries=50,
                                               use_gpu=False) for index in (merged, whole))
    assert served.kind == one_go.kind == kind and served.params == one_go.params
    assert served.search_ids(queries, 10).equals(one_go.search_ids(queries, 10))
    assert recall_against_exact(served.search(queries, 10)[1], exact_neighbours(vectors, queries, 10)) >= 0.95


def test_a_shard_under_global_rows_is_not_merged_as_a_local_one(vectors_32, trained_ivfpq) -> None:
    vectors, trained = vectors_32, trained_ivfpq
    global_rows = faiss.clone_index(trained)
    global_rows.add_with_ids(vectors[:100], np.arange(500, 600, dtype=np.int64))
    with pytest.raises(ValueError, match="local rows"):
        merge_local_shards(trained, [add_shard(trained, vectors[:500]), global_rows])


def test_trained_for_shards_fits_its_shape_to_the_sample() -> None:
    assert choose_sharded_kind(199_999) == "flat" and choose_sharded_kind(200_000) == "ivfpq"
    assert choose_sharded_kind(6_000_000) == "ivfpq"  # no HNSW: a graph cannot be merged from shards
    vectors = _structured(10_000, 32, seed=5)
    flat, params = train_for_shards(vectors[:1], "flat", 12_000)
    assert isinstance(flat, faiss.IndexFlatIP) and flat.d == 32 and params == {}
    # 10k vectors train 256 lists and 8-bit codes at faiss's 39 per centroid, and a rotation
    trained, params = train_for_shards(vectors, "ivfpq", 1_000_000, opq_iterations=1)
    assert params["spec"] == "OPQ8_32,IVF256,PQ8x8np,RFlat" and trained.is_trained and trained.ntotal == 0
    # a tiny stack's sample: fewer lists and bits, and no rotation, rather than a faiss error
    _, tiny = train_for_shards(vectors[:200], "ivfpq", 200)
    assert tiny["spec"] == "IVF4,PQ8x2np,RFlat" and not tiny["opq"]
    with pytest.raises(ValueError, match="HNSW"):
        train_for_shards(vectors, "hnsw", 10_000)
    with pytest.raises(ValueError, match="too few"):
        train_for_shards(vectors[:50], "ivfpq", 50)
