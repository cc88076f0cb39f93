"""Where each kind of array lives in the lake: one place, so producers and consumers cannot drift apart."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np


# A release name becomes part of partition keys, lake paths and SQL values: keep it to a safe alphabet.
RELEASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RELEASE_NAME_RULE = "a release name may hold only letters, digits, '.', '_' and '-' (it becomes a partition key)"


def is_valid_release_name(name: str) -> bool:
    """The one release-name rule, for release discovery and for releases built from coordinates alike."""
    return bool(RELEASE_NAME.match(name))


@dataclass(frozen=True, order=True)
class ShardKey:
    """One shard of one release: the partition key ``<release>|<shard>`` (``gz1-sdss|0003``) as a type.

    Build it with :meth:`parse` from a partition key and turn it back with ``str(key)``; nothing else splits or
    joins the key's text.
    """

    release: str
    shard: str

    SEPARATOR = "|"

    @classmethod
    def parse(cls, partition_key: "str | ShardKey") -> "ShardKey":
        if isinstance(partition_key, ShardKey):
            return partition_key
        release, _, shard = str(partition_key).rpartition(cls.SEPARATOR)
        if not release or not shard:
            raise ValueError(f"partition key {partition_key!r} is not of the form '<release>|<shard>'")
        return cls(release, shard)

    def __str__(self) -> str:
        return f"{self.release}{self.SEPARATOR}{self.shard}"


def split_partition_key(partition_key: "str | ShardKey") -> tuple[str, str]:
    """'<release>|<shard>' -> (release, shard)."""
    key = ShardKey.parse(partition_key)
    return key.release, key.shard


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
