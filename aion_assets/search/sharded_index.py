"""An index built the way a large deployment builds it: train once, add per partition, merge.

1. ``train_ivfpq`` trains the coarse quantizer, the OPQ rotation and the product quantizer once, on a sample
   (``index.build_index`` trains its IVF-PQ indexes through it too).
2. Each partition's vectors go into a copy of the trained, empty index, in the partition's own step:
   ``add_shard`` under local rows 0..n-1 (a partition cannot know its global offset before every partition before
   it is counted), or ``add_partition`` under global rows known in advance, written to a shard file.
3. Merging: ``merge_local_shards`` moves local-row shards into one index in memory, shifting each shard's rows by
   the rows before it (``IndexIVF::merge_from(other, add_id)``; flat shards are appended, their rows sequential),
   which is what the served search index does at our sizes. ``merge_shards`` merges global-row shard files into one
   on-disk index (``faiss.contrib.ondisk``), which ``load_merged`` opens with its lists memory-mapped: the codes are
   paged in as lists are probed, so the index may exceed RAM (what `aion bench index` measures at survey scale).
4. ``ReRankedIndex`` re-ranks the IVF-PQ candidates with the exact vectors, read from memory-mapped arrays (the
   search embeddings the lake already holds): the codes in RAM stay ``pq_bytes`` per vector, and the recall comes
   from the exact scores of ``k_factor * k`` candidates.
No dagster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

# faiss's k-means wants this many training points per centroid (it warns below, and fails below one per centroid)
MIN_POINTS_PER_CENTROID = 39
# an OPQ rotation is trained with an 8-bit product quantizer of its own, whatever the index's PQ uses
OPQ_PQ_CENTROIDS = 256


def ivfpq_spec(d: int, nlist: int, pq_bytes: int, pq_nbits: int = 8, opq: bool = True) -> str:
    # "np": no polysemous training, which costs minutes and only helps Hamming pre-filtering we do not use
    return f"{f'OPQ{pq_bytes}_{d},' if opq else ''}IVF{nlist},PQ{pq_bytes}x{pq_nbits}np"


def train_ivfpq(sample: np.ndarray, nlist: int, pq_bytes: int, opq: bool = True, opq_iterations: int = 20,
                seed: int = 0, pq_nbits: int = 8) -> faiss.Index:
    """A trained, empty inner-product IVF-PQ index (with an OPQ rotation in front when ``opq``)."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    d = sample.shape[1]
    if d % pq_bytes:
        raise ValueError(f"pq_bytes={pq_bytes} must divide the dimension {d}")
    wanted = MIN_POINTS_PER_CENTROID * max(nlist, 2 ** pq_nbits)
    if len(sample) < wanted:
        raise ValueError(f"{len(sample)} training vectors are too few for {nlist} lists and {2 ** pq_nbits} PQ "
                         f"centroids (faiss wants >= {wanted})")
    if opq and len(sample) < OPQ_PQ_CENTROIDS:
        raise ValueError(f"{len(sample)} training vectors are too few for an OPQ rotation (at least "
                         f"{OPQ_PQ_CENTROIDS}): train without opq")
    index = faiss.index_factory(d, ivfpq_spec(d, nlist, pq_bytes, pq_nbits, opq), faiss.METRIC_INNER_PRODUCT)
    if opq:
        rotation = faiss.downcast_VectorTransform(faiss.downcast_index(index).chain.at(0))
        # faiss's default (50 rotations, 40 k-means rounds for the first PQ) costs minutes at 2 cores; the
        # rotation converges far earlier. Few iterations (tests) also get a cheaper first PQ.
        rotation.niter = opq_iterations
        rotation.niter_pq_0 = min(40, 10 * opq_iterations)
    faiss.extract_index_ivf(index).cp.seed = seed
    index.train(sample)
    return index


def _filled(trained: faiss.Index, vectors: np.ndarray, first_row: int | None) -> faiss.Index:
    """A copy of ``trained`` (left untouched) holding ``vectors``: under rows first_row, first_row + 1, ..., or,
    when ``first_row`` is None, under the index's own sequential rows 0..n-1."""
    shard = faiss.clone_index(trained)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, trained.d)
    if first_row is None:
        shard.add(vectors)
    else:
        shard.add_with_ids(vectors, np.arange(first_row, first_row + len(vectors), dtype=np.int64))
    return shard


def add_shard(trained: faiss.Index, vectors: np.ndarray) -> faiss.Index:
    """One partition's shard: ``trained`` plus ``vectors`` under local rows 0..n-1, for
    :func:`merge_local_shards` to place. Flat (exact) and IVF indexes alike."""
    return _filled(trained, vectors, first_row=None)


def merge_local_shards(trained: faiss.Index, shards: Iterable[faiss.Index]) -> faiss.Index:
    """One index over ``shards`` (each with local rows 0..n-1, as :func:`add_shard` makes them), in order: shard i's
    rows follow every row of shards 0..i-1, so the result answers as ``trained`` filled with the shards' vectors in
    one go; ``trained`` is left untouched.

    IVF (with or without a transform in front): each shard's inverted lists are moved (not copied: the shard is
    left empty) with ``merge_from(shard, add_id)``, which shifts the moved ids by ``add_id``, the rows merged so
    far. Flat: the vectors are appended, a flat index's rows being positions."""
    merged = faiss.clone_index(trained)
    ivf = faiss.try_extract_index_ivf(merged)
    for shard in shards:
        if shard.d != merged.d:
            raise ValueError(f"a shard of width {shard.d} cannot join an index of width {merged.d}")
        if ivf is None:
            flat = faiss.downcast_index(shard)
            if flat.ntotal:
                merged.add(flat.reconstruct_n(0, flat.ntotal))
            continue
        shard_ivf = faiss.extract_index_ivf(shard)
        rows = np.concatenate([faiss.rev_swig_ptr(shard_ivf.invlists.get_ids(i), shard_ivf.invlists.list_size(i))
                               for i in range(shard_ivf.nlist)])
        if len(rows) and (rows.min() < 0 or rows.max() >= shard_ivf.ntotal):
            raise ValueError("a shard's rows must be its local rows 0..n-1 (made with add_shard)")
        ivf.merge_from(shard_ivf, ivf.ntotal)
        shard.ntotal = 0
    if ivf is not None:
        merged.ntotal = ivf.ntotal  # a transform in front (OPQ) keeps its own count of what its inner index holds
    return merged


def index_to_bytes(index: faiss.Index) -> bytes:
    """The faiss file's bytes: what a lake (local or an object store) stores."""
    return faiss.serialize_index(index).tobytes()


def index_from_bytes(data: bytes) -> faiss.Index:
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def index_fingerprint(data: bytes) -> str:
    """A short content hash of a serialized index: what a shard records of the trained index it was filled from."""
    return hashlib.sha256(data).hexdigest()[:16]


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """``min(size, n)`` distinct rows of ``n``, seeded, ascending (a memory map reads them in order)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(int(size), n), replace=False)) if n else np.zeros(0, dtype=np.int64)


def add_partition(trained: faiss.Index, vectors: np.ndarray, first_row: int, shard_path: Path) -> int:
    """Write a shard: ``trained`` (left untouched) plus ``vectors`` under rows first_row, first_row + 1, ...;
    returns how many were added. Each partition's step can run anywhere that has the trained index."""
    faiss.write_index(_filled(trained, vectors, first_row), str(shard_path))
    return len(vectors)


def merge_shards(trained: faiss.Index, shard_paths: Sequence[Path], index_path: Path) -> Path:
    """One index over every shard: its inverted lists in ``<index_path>.ivfdata`` beside it."""
    from faiss.contrib.ondisk import merge_ondisk

    merged = faiss.clone_index(trained)
    lists_path = index_path.with_suffix(".ivfdata")
    merge_ondisk(merged, [str(p) for p in shard_paths], str(lists_path))
    faiss.write_index(merged, str(index_path))
    return index_path


def load_merged(index_path: Path) -> faiss.Index:
    """The merged index; its on-disk lists are memory-mapped by faiss (read as they are probed), found beside
    the index file wherever the folder was moved. (IO_FLAG_MMAP on top of on-disk lists crashes faiss 1.15.)"""
    return faiss.read_index(str(index_path), faiss.IO_FLAG_ONDISK_SAME_DIR)


@dataclass
class ReRankedIndex:
    """IVF-PQ candidates re-scored with exact inner products; ``vectors`` may be a memory map."""

    index: faiss.Index
    vectors: np.ndarray
    nprobe: int = 32
    k_factor: int = 8

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        faiss.extract_index_ivf(self.index).nprobe = self.nprobe
        _, candidates = self.index.search(queries, k * self.k_factor)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        for i, found in enumerate(candidates):
            found = np.sort(found[found >= 0])  # ascending rows: a memory map reads them in order
            exact = self.vectors[found] @ queries[i]
            best = np.argsort(-exact)[:k]
            scores[i, :len(best)], rows[i, :len(best)] = exact[best], found[best]
        return scores, rows

    @property
    def bytes_in_memory_per_vector(self) -> float:
        """Codes and ids the lists hold per vector (what must be paged in to probe everything)."""
        ivf = faiss.extract_index_ivf(self.index)
        return float(ivf.code_size + 8)
