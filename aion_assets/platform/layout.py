"""Where each kind of array lives in the lake: one place, so producers and consumers cannot drift apart."""

from __future__ import annotations

import hashlib

import numpy as np


def _release_shard(partition_key: str) -> tuple[str, str]:
    release, _, shard = partition_key.rpartition("|")
    return release, shard


def image_base_embeddings_path(encoder: str, partition_key: str) -> tuple[str, ...]:
    release, shard = _release_shard(partition_key)
    return ("embeddings", "image_base", encoder, release, f"{shard}.npy")


def search_embeddings_path(partition_key: str) -> tuple[str, ...]:
    release, shard = _release_shard(partition_key)
    return ("embeddings", "search", release, f"{shard}.npy")


def text_embeddings_dir(encoder: str) -> tuple[str, ...]:
    return ("embeddings", "text", encoder)


DESCRIPTION_SAMPLE = ("samples", "description_sample.parquet")
CURRENT_DESCRIPTIONS = ("descriptions", "current.parquet")
ALIGNMENT_CHECKPOINT = ("models", "alignment", "heads.safetensors")
SEARCH_INDEX_DIR = ("indexes", "search")
IMAGE_SIMILARITY_INDEX_DIR = ("indexes", "image_similarity")


def array_fingerprint(*arrays: np.ndarray) -> str:
    """A short content hash: the data version of an array asset."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]
