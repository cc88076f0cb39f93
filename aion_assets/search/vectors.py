"""Gathering per-shard embedding arrays into one matrix with its id map (release, object_id)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from aion_assets.platform.lake import Lake
from aion_assets.platform.layout import ShardKey


def gather_vectors(
    lake: Lake, objects: pl.DataFrame, path_of: Callable[[str], tuple[str, ...]]
) -> tuple[pl.DataFrame, np.ndarray]:
    """Vectors for ``objects`` (columns release, shard, row, object_id, ...) in the frame's order.

    ``path_of(partition_key)`` names the shard's array in the lake; each shard's file is read once.
    """
    if objects.is_empty():
        return objects, np.zeros((0, 0), dtype=np.float32)
    objects = objects.with_row_index("_order")
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for (release, shard), group in objects.group_by(["release", "shard"], maintain_order=True):
        key = str(ShardKey(release, shard))
        array = lake.read_array(*path_of(key), mmap=True)
        rows = group["row"].to_numpy()
        if rows.max(initial=-1) >= len(array):
            raise ValueError(f"{key}: embeddings have {len(array)} rows, cutouts name row {rows.max()}; "
                             "re-materialize the embeddings of this partition")
        parts.append((group["_order"].to_numpy(), np.asarray(array[rows], dtype=np.float32)))
    order = np.concatenate([p[0] for p in parts])
    matrix = np.concatenate([p[1] for p in parts])[np.argsort(order)]
    return objects.drop("_order"), matrix


def partitions_in_order(objects: pl.DataFrame) -> list[str]:
    """The partition keys of ``objects`` (columns release, shard, ...) in the frame's order, each once. Over a frame
    whose partitions are contiguous (``cutout_rows``: ordered by release, shard, row), :func:`gather_vectors`'s
    rows of partition i follow every row of partitions 0..i-1."""
    if objects.is_empty():
        return []
    pairs = objects.select("release", "shard").unique(maintain_order=True)
    return [str(ShardKey(release, shard)) for release, shard in pairs.iter_rows()]


def as_float32_matrix(vectors: np.ndarray, name: str = "vectors") -> np.ndarray:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{name} must be [N, d], got shape {array.shape}")
    return array


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit-norm rows (zero rows stay zero), float32, a copy: the one L2 normaliser of the search chain."""
    array = as_float32_matrix(vectors).copy()
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    array /= np.maximum(norms, 1e-12)
    return array
