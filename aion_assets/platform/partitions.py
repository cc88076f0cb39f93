"""Partitioning shared by every per-cutout asset: one dynamic partition per release shard.

A key is ``<release>|<shard>`` with the shard zero-padded (``gz1-sdss|0003``); a shard holds at most
``AION_SHARD_SIZE`` objects (100k by default), so a 140M-object survey is a few thousand partitions that
independent runs can take on many machines.
"""

from __future__ import annotations

import dagster as dg

release_shards = dg.DynamicPartitionsDefinition(name="release_shards")


def split_partition_key(key: str) -> tuple[str, str]:
    release, _, shard = key.rpartition("|")
    if not release or not shard:
        raise ValueError(f"partition key {key!r} is not of the form '<release>|<shard>'")
    return release, shard
