"""Where each kind of array lives in the lake: one place, so producers and consumers cannot drift apart."""

from __future__ import annotations

import hashlib

import numpy as np


def split_partition_key(partition_key: str) -> tuple[str, str]:
    """'<release>|<shard>' -> (release, shard). Pure, so science code needs no Dagster import for it."""
    release, _, shard = partition_key.rpartition("|")
    if not release or not shard:
        raise ValueError(f"partition key {partition_key!r} is not of the form '<release>|<shard>'")
    return release, shard


def shard_dir(release: str, shard: str) -> tuple[str, str, str]:
    """The canonical cutout shard: rgb.npy, flux.npy (when the source has flux), objects.parquet."""
    return ("cutouts", release, shard)


def cutout_array_path(partition_key: str, input_kind: str) -> tuple[str, ...]:
    """A shard's canonical cutout array: "rgb" (uint8 [N,H,W,3]) or "flux" (float32 [N,C,H,W])."""
    return (*shard_dir(*split_partition_key(partition_key)), f"{input_kind}.npy")


def shard_objects_path(partition_key: str) -> tuple[str, ...]:
    return (*shard_dir(*split_partition_key(partition_key)), "objects.parquet")


def image_base_embeddings_path(encoder: str, partition_key: str) -> tuple[str, ...]:
    release, shard = split_partition_key(partition_key)
    return ("embeddings", "image_base", encoder, release, f"{shard}.npy")


def search_embeddings_path(partition_key: str) -> tuple[str, ...]:
    release, shard = split_partition_key(partition_key)
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
