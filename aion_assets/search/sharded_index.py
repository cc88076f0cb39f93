"""An IVF-PQ index built the way a large deployment builds it: train once, add per partition, merge on disk.

1. ``train_ivfpq`` trains the coarse quantizer, the OPQ rotation and the product quantizer once, on a sample.
2. ``add_partition`` adds one partition's vectors to a copy of the trained, empty index (its own step, its own
   machine): a shard file holding only that partition's codes, under global row ids.
3. ``merge_shards`` merges the shards' inverted lists into one on-disk index (``faiss.contrib.ondisk``), which
   ``load_merged`` opens with its lists memory-mapped: the codes are paged in as lists are probed, so the index may exceed RAM.
4. ``ReRankedIndex`` re-ranks the IVF-PQ candidates with the exact vectors, read from memory-mapped arrays (the
   search embeddings the lake already holds): the codes in RAM stay ``pq_bytes`` per vector, and the recall comes
   from the exact scores of ``k_factor * k`` candidates.
No dagster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np


def train_ivfpq(sample: np.ndarray, nlist: int, pq_bytes: int, opq: bool = True, opq_iterations: int = 20,
                seed: int = 0) -> faiss.Index:
    """A trained, empty inner-product IVF-PQ index (with an OPQ rotation in front when ``opq``)."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    d = sample.shape[1]
    if d % pq_bytes:
        raise ValueError(f"pq_bytes={pq_bytes} must divide the dimension {d}")
    if len(sample) < 39 * max(nlist, 256):
        raise ValueError(f"{len(sample)} training vectors are too few for {nlist} lists and 256 PQ centroids "
                         f"(faiss wants >= {39 * max(nlist, 256)})")
    spec = f"{f'OPQ{pq_bytes}_{d},' if opq else ''}IVF{nlist},PQ{pq_bytes}x8np"
    index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    if opq:
        rotation = faiss.downcast_VectorTransform(faiss.downcast_index(index).chain.at(0))
        rotation.niter = opq_iterations  # converges long before faiss's default of 50 (minutes at 2 cores)
    faiss.extract_index_ivf(index).cp.seed = seed
    index.train(sample)
    return index


def add_partition(trained: faiss.Index, vectors: np.ndarray, first_row: int, shard_path: Path) -> int:
    """Write a shard: ``trained`` (left untouched) plus ``vectors`` under rows first_row, first_row + 1, ...;
    returns how many were added. Each partition's step can run anywhere that has the trained index."""
    shard = faiss.clone_index(trained)
    rows = np.arange(first_row, first_row + len(vectors), dtype=np.int64)
    shard.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), rows)
    faiss.write_index(shard, str(shard_path))
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
