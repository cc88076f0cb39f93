"""FAISS vector indexes over unit-norm embeddings (inner product = cosine), with an id map back to objects.

Kinds, chosen by size unless forced:
- ``flat``:  exact ``IndexFlatIP`` below ``exact_threshold`` vectors (200k by default): an exact scan of 1M x 256
  runs at memory bandwidth, so below a few hundred thousand vectors approximation buys nothing.
- ``hnsw``:  ``IndexHNSWFlat`` up to ``hnsw_threshold`` (5M): graph search over the full vectors, high recall,
  efSearch tuned at build time to reach ``target_recall`` against exact search on a sample.
- ``ivfpq``: OPQ rotation + IVF + PQ (d/4 bytes per vector by default) wrapped in ``IndexRefineFlat``, which
  re-ranks ``k * k_factor`` PQ candidates with the exact stored vectors. Plain 32-byte IVF-PQ gave only ~0.5
  recall@100 on real embeddings here; the exact re-ranking is where the recall comes from. nprobe and k_factor
  are tuned like efSearch.

The CPU form is what is saved; a GPU copy is made for searching when faiss sees a GPU (``faiss-gpu``) and the
index type has a GPU implementation (flat and IVF do; HNSW stays on the CPU).

Built per partition and merged (the served search index, see ``sharded_index``): :func:`train_for_shards` makes the
trained, empty index from a sample, ``sharded_index.add_shard`` fills one partition's copy of it, and
:func:`index_from_merged_shards` turns the merged shards into the same ``VectorIndex`` that :func:`build_index`
returns. Only ``flat`` and ``ivfpq`` can be built that way (:func:`choose_sharded_kind`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import polars as pl

from aion_assets.search.metrics import recall_at_k
from aion_assets.search.sharded_index import MIN_POINTS_PER_CENTROID, OPQ_PQ_CENTROIDS, ivfpq_spec, train_ivfpq
from aion_assets.search.vectors import as_float32_matrix, l2_normalise

log = logging.getLogger(__name__)

IndexKind = Literal["auto", "flat", "hnsw", "ivfpq"]
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
META_FILE = "index.json"
FORMAT_VERSION = 1


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _resolve_use_gpu(use_gpu: bool | str) -> bool:
    if use_gpu == "auto":
        return gpu_available()
    if use_gpu and not gpu_available():
        raise RuntimeError("use_gpu=True but faiss sees no GPU (install the faiss-gpu extra on a CUDA machine)")
    return bool(use_gpu)


_GPU_RESOURCES: Any = None


def _to_gpu(cpu_index: faiss.Index) -> faiss.Index | None:
    """A GPU copy of ``cpu_index``, or None when this index type has no GPU implementation."""
    global _GPU_RESOURCES
    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = faiss.StandardGpuResources()
    try:
        return faiss.index_cpu_to_gpu(_GPU_RESOURCES, 0, cpu_index)
    except (RuntimeError, AttributeError) as error:  # faiss raises RuntimeError for unsupported types
        log.warning("index stays on the CPU: no GPU conversion for %s (%s)", type(cpu_index).__name__, error)
        return None


def _apply_search_params(index: faiss.Index, kind: str, params: dict[str, Any]) -> None:
    """Set efSearch / nprobe / k_factor on a (CPU) index: they are not all kept by write_index, so reapply."""
    if kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = int(params["ef_search"])
    elif kind == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
        faiss.downcast_index(index).k_factor = float(params["k_factor"])


@dataclass
class VectorIndex:
    """A FAISS index plus the row -> (release, object_id) map. Build with :func:`build_index`, or :meth:`load`."""

    cpu_index: faiss.Index
    ids: pl.DataFrame
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    normalise_queries: bool = True
    build_seconds: float | None = None
    gpu_index: faiss.Index | None = None
    _nbytes: int | None = field(default=None, repr=False)
    _release_masks: dict[frozenset[str], np.ndarray] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def releases(self) -> frozenset[str]:
        """The releases the index holds (read once: a request's release check must not scan the ids)."""
        return frozenset(self.ids["release"].unique().to_list())

    def rows_in_releases(self, releases: frozenset[str]) -> np.ndarray:
        """Boolean mask over the index's rows: those of ``releases``. Computed once per set (a server asks the
        same few sets for every request; the ids never change)."""
        mask = self._release_masks.get(releases)
        if mask is None:
            mask = self.ids["release"].is_in(sorted(releases)).to_numpy()
            if len(self._release_masks) > 64:
                self._release_masks.clear()
            self._release_masks[releases] = mask
        return mask

    def __post_init__(self) -> None:
        if self.ids.height != self.cpu_index.ntotal:
            raise ValueError(f"id map has {self.ids.height} rows, index {self.cpu_index.ntotal} vectors")

    @property
    def ntotal(self) -> int:
        return int(self.cpu_index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.cpu_index.d)

    @property
    def on_gpu(self) -> bool:
        return self.gpu_index is not None

    @property
    def nbytes(self) -> int:
        """Size of the serialized CPU index (what :meth:`save` writes for it)."""
        if self._nbytes is None:
            self._nbytes = int(faiss.serialize_index(self.cpu_index).nbytes)
        return self._nbytes

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: (scores float32 [Q, k], row indices int64 [Q, k]); -1 rows pad short lists.

        Queries are L2-normalised first when the index was built over normalised vectors, so scores are cosines.
        """
        queries = as_float32_matrix(queries, "queries")
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have width {queries.shape[1]}, index {self.dim}")
        if self.normalise_queries:
            queries = l2_normalise(queries)
        k = max(1, min(int(k), self.ntotal)) if self.ntotal else max(1, int(k))
        index = self.gpu_index if self.gpu_index is not None else self.cpu_index
        scores, rows = index.search(queries, k)
        return scores, rows.astype(np.int64, copy=False)

    def lookup(self, rows: np.ndarray) -> pl.DataFrame:
        """The id-map rows (release, object_id, ...) for row indices; -1 padding is dropped."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        return self.ids[rows[rows >= 0]]

    def search_ids(self, queries: np.ndarray, k: int) -> pl.DataFrame:
        """Search and join the id map: one row per hit with query (0-based), rank (1-based), score, row and ids."""
        scores, rows = self.search(queries, k)
        q_idx, rank_idx = np.nonzero(rows >= 0)
        hits = rows[q_idx, rank_idx]
        frame = pl.DataFrame({"query": q_idx.astype(np.int64), "rank": (rank_idx + 1).astype(np.int64),
                              "score": scores[q_idx, rank_idx].astype(np.float64), "row": hits})
        return pl.concat([frame, self.ids[hits]], how="horizontal")

    def set_search_params(self, **params: Any) -> None:
        """Change efSearch (``ef_search``) or ``nprobe`` / ``k_factor`` after building or loading."""
        self.params.update(params)
        _apply_search_params(self.cpu_index, self.kind, self.params)
        if self.gpu_index is not None:
            self.gpu_index = _to_gpu(self.cpu_index)

    def save(self, directory: str | Path) -> Path:
        """Write index.faiss (CPU form), ids.parquet and index.json (kind, search params, build figures)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / (INDEX_FILE + ".tmp")
        faiss.write_index(self.cpu_index, str(staging))
        staging.replace(directory / INDEX_FILE)
        self._nbytes = (directory / INDEX_FILE).stat().st_size
        self.ids.write_parquet(directory / IDS_FILE)
        meta = {"format_version": FORMAT_VERSION, "kind": self.kind, "params": self.params,
                "normalise_queries": self.normalise_queries, "ntotal": self.ntotal, "dim": self.dim,
                "build_seconds": self.build_seconds, "nbytes": self._nbytes, "faiss_version": faiss.__version__}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path, use_gpu: bool | str = "auto", mmap: bool = False) -> VectorIndex:
        """Read what :meth:`save` wrote; ``mmap`` maps the index file instead of reading it (flat/IVF only)."""
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        cpu_index = faiss.read_index(str(directory / INDEX_FILE), flags)
        _apply_search_params(cpu_index, meta["kind"], meta["params"])
        index = cls(cpu_index=cpu_index, ids=pl.read_parquet(directory / IDS_FILE), kind=meta["kind"],
                    params=meta["params"], normalise_queries=meta["normalise_queries"],
                    build_seconds=meta.get("build_seconds"), _nbytes=(directory / INDEX_FILE).stat().st_size)
        if _resolve_use_gpu(use_gpu):
            index.gpu_index = _to_gpu(cpu_index)
        return index


def choose_kind(n: int, exact_threshold: int = 200_000, hnsw_threshold: int = 5_000_000) -> str:
    if n < exact_threshold:
        return "flat"
    return "hnsw" if n < hnsw_threshold else "ivfpq"


SHARDED_KINDS = ("flat", "ivfpq")


def choose_sharded_kind(n: int, exact_threshold: int = 200_000) -> str:
    """The kind of an index built per partition and merged: exact below ``exact_threshold``, else IVF-PQ.

    HNSW is no choice here, though :func:`choose_kind` picks it between the thresholds: its graph links every
    vector to its neighbours among all the others, so it is built over all vectors at once and cannot be built per
    partition and merged. IVF-PQ with exact re-ranking reaches the same recall (docs/scale.md)."""
    return "flat" if n < exact_threshold else "ivfpq"


def default_nlist(n: int) -> int:
    """~4 sqrt(N) inverted lists, a power of two, with >= 39 training points per list (faiss's minimum)."""
    nlist = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    most = 2 ** int(math.log2(n // 39)) if n >= 39 else 1
    return int(max(1, min(nlist, most, 65536)))


def default_pq_bytes(d: int) -> int:
    """d/4 one-byte sub-quantizers (64 bytes for 256-d: twice the 32 that gave poor recall), dividing d."""
    target = max(1, d // 4)
    return max(m for m in range(1, target + 1) if d % m == 0)


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    # faiss.knn scans the matrix in place: no copy of the database into a temporary flat index
    return faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)[1]


def recall_against_exact(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean recall@k of approximate results against the exact neighbours, each exact neighbour being one
    relevant object of its query."""
    k = truth.shape[1]
    return float(np.mean([recall_at_k(np.isin(f[f >= 0], t), n_relevant=k, k=k)
                          for f, t in zip(found, truth, strict=True)]))


def _tune(index: faiss.Index, kind: str, params: dict[str, Any], vectors: np.ndarray, target_recall: float,
          k: int, n_queries: int, rng: np.random.Generator) -> dict[str, Any]:
    """Smallest search setting reaching ``target_recall`` at ``k`` on sampled database vectors (the last tried
    one otherwise). Recall is measured against exact search, on the same sample the metadata reports."""
    rows = rng.choice(len(vectors), size=min(n_queries, len(vectors)), replace=False)
    queries = vectors[rows]
    k = min(k, len(vectors))
    truth = exact_neighbours(vectors, queries, k)
    if kind == "hnsw":
        # faiss searches with max(efSearch, k): start at >= k so that smaller k at query time is as good
        ladder = [{"ef_search": ef} for ef in (32, 64, 128, 256, 512, 1024, 2048) if ef >= min(k, 1024)]
    else:
        nlist = faiss.extract_index_ivf(index).nlist
        ladder = [{"nprobe": min(p, nlist), "k_factor": kf}
                  for p, kf in ((8, 4), (16, 4), (32, 8), (64, 8), (128, 16), (256, 16), (512, 32))]
    chosen = dict(params)
    for setting in ladder:
        chosen = {**params, **setting}
        _apply_search_params(index, kind, chosen)
        recall = recall_against_exact(index.search(queries, k)[1], truth)
        chosen["tuned_recall"] = recall
        if recall >= target_recall:
            break
    chosen["tuned_at_k"] = k
    return chosen


def build_index(vectors: np.ndarray, ids: pl.DataFrame, kind: IndexKind = "auto",
                exact_threshold: int = 200_000, hnsw_threshold: int = 5_000_000, use_gpu: bool | str = "auto",
                normalise: bool = True, hnsw_m: int = 32, ef_construction: int = 80, ef_search: int | None = None,
                nlist: int | None = None, pq_bytes: int | None = None, pq_nbits: int = 8, opq: bool = True,
                opq_iterations: int = 20, nprobe: int | None = None,
                k_factor: float | None = None, train_size: int = 200_000, target_recall: float = 0.95,
                tune_k: int = 100, tune_queries: int = 200, seed: int = 0) -> VectorIndex:
    """Build an inner-product index over ``vectors`` [N, d] with ``ids`` (a polars frame, e.g. release,
    object_id) row-aligned with them.

    Args:
        kind: "auto" picks by N (see the module docstring); "flat", "hnsw" or "ivfpq" force a kind.
        use_gpu: "auto" (a GPU copy for searching when faiss sees one), True (require one) or False.
        normalise: L2-normalise the vectors (and later the queries), so scores are cosine similarities.
        ef_search / nprobe / k_factor: fixed search settings; None tunes them at build time to reach
            ``target_recall`` at ``tune_k`` against exact search on ``tune_queries`` sampled vectors.
        nlist, pq_bytes, pq_nbits, opq, opq_iterations, train_size: IVF-PQ shape (defaults: ~4 sqrt(N) lists,
            d/4 sub-quantizers of 8 bits, an OPQ rotation trained for 20 iterations, training on at most
            ``train_size`` sampled vectors; faiss wants >= 39 * 2**pq_nbits of them).
    """
    started = time.perf_counter()
    matrix = l2_normalise(vectors) if normalise else as_float32_matrix(vectors)
    n, d = matrix.shape
    if ids.height != n:
        raise ValueError(f"ids has {ids.height} rows for {n} vectors")
    if not np.isfinite(matrix).all():
        raise ValueError("vectors contain NaN or inf")
    kind = choose_kind(n, exact_threshold, hnsw_threshold) if kind == "auto" else kind
    rng = np.random.default_rng(seed)
    params: dict[str, Any] = {}

    if kind == "flat":
        index = faiss.IndexFlatIP(d)
        index.add(matrix)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(matrix)
        params = {"m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search or 64}
    elif kind == "ivfpq":
        index, params = _build_ivfpq(matrix, nlist, pq_bytes, pq_nbits, opq, opq_iterations, train_size, rng,
                                     seed)
        params.update({"nprobe": nprobe or 16, "k_factor": k_factor or 4.0})
    else:
        raise ValueError(f"unknown index kind {kind!r}: use auto, flat, hnsw or ivfpq")

    # tune only what the caller left open: a fixed nprobe or k_factor means fixed search settings
    tune = (kind == "hnsw" and ef_search is None) or (kind == "ivfpq" and nprobe is None and k_factor is None)
    return _finish(index, ids, kind, params, matrix, normalise, tune, target_recall, tune_k, tune_queries, rng,
                   use_gpu, started)


def _finish(index: faiss.Index, ids: pl.DataFrame, kind: str, params: dict[str, Any], matrix: np.ndarray,
            normalise: bool, tune: bool, target_recall: float, tune_k: int, tune_queries: int,
            rng: np.random.Generator, use_gpu: bool | str, started: float) -> VectorIndex:
    """A filled CPU index as a :class:`VectorIndex`: search settings tuned (when ``tune``) and applied, a GPU copy
    when asked for, the seconds since ``started``."""
    if tune:
        params = _tune(index, kind, params, matrix, target_recall, tune_k, tune_queries, rng)
    _apply_search_params(index, kind, params)
    result = VectorIndex(cpu_index=index, ids=ids, kind=kind, params=params, normalise_queries=normalise)
    if _resolve_use_gpu(use_gpu):
        result.gpu_index = _to_gpu(index)
    result.build_seconds = time.perf_counter() - started
    return result


def _ivfpq_params(d: int, nlist: int, pq_m: int, pq_nbits: int, opq: bool) -> dict[str, Any]:
    return {"spec": f"{ivfpq_spec(d, nlist, pq_m, pq_nbits, opq)},RFlat", "nlist": nlist, "pq_m": pq_m,
            "pq_nbits": pq_nbits, "opq": opq}


def _build_ivfpq(matrix: np.ndarray, nlist: int | None, pq_bytes: int | None, pq_nbits: int, opq: bool,
                 opq_iterations: int, train_size: int, rng: np.random.Generator,
                 seed: int) -> tuple[faiss.Index, dict[str, Any]]:
    """Trained as a sharded build trains (``sharded_index.train_ivfpq``), filled in one go, and wrapped in
    ``IndexRefineFlat``: its exact copy of the vectors re-ranks the PQ candidates."""
    n, d = matrix.shape
    nlist = nlist or default_nlist(n)
    m = pq_bytes or default_pq_bytes(d)
    train_rows = rng.choice(n, size=min(n, train_size), replace=False) if n > train_size else slice(None)
    trained = train_ivfpq(matrix[train_rows], nlist, m, opq=opq, opq_iterations=opq_iterations, seed=seed,
                          pq_nbits=pq_nbits)
    index = faiss.IndexRefineFlat(trained)  # empty: adding fills the IVF-PQ codes and the exact copy together
    index.add(matrix)
    return index, _ivfpq_params(d, nlist, m, pq_nbits, opq)


def train_for_shards(sample: np.ndarray, kind: str, n_vectors: int, opq_iterations: int = 20,
                     seed: int = 0) -> tuple[faiss.Index, dict[str, Any]]:
    """The trained, empty index that every partition's shard is a copy of, and its shape's parameters.

    ``sample`` is a (seeded) sample of the ``n_vectors`` the merged index will hold; it is L2-normalised as the
    shards' vectors are. ``flat`` needs no training. ``ivfpq`` is shaped by both counts: ~4 sqrt(n_vectors) lists
    (:func:`default_nlist`), d/4 sub-quantizers, 8-bit codes and an OPQ rotation, each cut down when the sample
    is too small for faiss to train it (tiny stacks: fewer lists and bits, no rotation; never at survey scale,
    where the sample is hundreds of thousands)."""
    sample = l2_normalise(sample)
    n, d = sample.shape
    if kind == "flat":
        return faiss.IndexFlatIP(d), {}
    if kind != "ivfpq":
        raise ValueError(f"an index built per partition is {' or '.join(SHARDED_KINDS)}, not {kind!r} "
                         "(an HNSW graph cannot be built per partition and merged)")
    per_centroid = n // MIN_POINTS_PER_CENTROID
    if per_centroid < 2:
        raise ValueError(f"{n} training vectors are too few for IVF-PQ (at least {2 * MIN_POINTS_PER_CENTROID})")
    most = int(math.log2(per_centroid))  # the most lists, or PQ bits, that the sample trains
    nlist = min(default_nlist(max(n_vectors, n)), 2 ** most)
    pq_nbits = min(8, most)
    opq = n >= MIN_POINTS_PER_CENTROID * OPQ_PQ_CENTROIDS
    m = default_pq_bytes(d)
    trained = train_ivfpq(sample, nlist, m, opq=opq, opq_iterations=opq_iterations, seed=seed, pq_nbits=pq_nbits)
    return trained, _ivfpq_params(d, nlist, m, pq_nbits, opq)


def index_from_merged_shards(merged: faiss.Index, ids: pl.DataFrame, kind: str, params: dict[str, Any],
                             vectors: np.ndarray, normalise: bool = True, target_recall: float = 0.95,
                             tune_k: int = 100, tune_queries: int = 200, seed: int = 0,
                             use_gpu: bool | str = "auto") -> VectorIndex:
    """The served form of shards merged by ``sharded_index.merge_local_shards``: ``vectors`` are the merged rows'
    vectors in row order (``ids`` names them). ``ivfpq`` gets the exact re-ranking copy of ``vectors`` that
    :func:`build_index` gives it and its nprobe / k_factor tuned to ``target_recall``, so the result answers as
    the trained index filled in one go would, and is saved and loaded like any :func:`build_index` result."""
    started = time.perf_counter()
    matrix = l2_normalise(vectors) if normalise else as_float32_matrix(vectors)
    if merged.ntotal != len(matrix):
        raise ValueError(f"the merged index holds {merged.ntotal} vectors, {len(matrix)} were given for its rows")
    if kind == "flat":
        index, tune = merged, False
    elif kind == "ivfpq":
        index, tune = faiss.IndexRefineFlat(merged, faiss.swig_ptr(matrix)), True  # copies the exact vectors
        params = {**params, "nprobe": 16, "k_factor": 4.0}
    else:
        raise ValueError(f"an index built from shards is {' or '.join(SHARDED_KINDS)}, not {kind!r}")
    return _finish(index, ids, kind, params, matrix, normalise, tune, target_recall, tune_k, tune_queries,
                   np.random.default_rng(seed), use_gpu, started)


def index_recall_at_k(index: VectorIndex, vectors: np.ndarray, sample_queries: int | np.ndarray = 1000, k: int = 100,
                seed: int = 0) -> float:
    """Mean overlap of ``index``'s top-k with the exact top-k, for a sample of the indexed vectors as queries.

    ``vectors`` are the vectors the index was built from (same row order). ``sample_queries`` is a count to draw
    (seeded) or an array of row indices. Exact search on a flat index gives 1.0.
    """
    matrix = l2_normalise(vectors) if index.normalise_queries else as_float32_matrix(vectors)
    if isinstance(sample_queries, (int, np.integer)):
        rng = np.random.default_rng(seed)
        rows = rng.choice(len(matrix), size=min(int(sample_queries), len(matrix)), replace=False)
    else:
        rows = np.asarray(sample_queries, dtype=np.int64)
    k = min(k, len(matrix))
    queries = matrix[rows]
    return recall_against_exact(index.search(queries, k)[1], exact_neighbours(matrix, queries, k))

