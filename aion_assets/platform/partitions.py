"""Partitioning shared by every per-cutout asset: one dynamic partition per release shard.

A key is ``<release>|<shard>`` with the shard zero-padded (``gz1-sdss|0003``); a shard holds at most
``AION_SHARD_SIZE`` objects (100k by default), so a 140M-object survey is a few thousand partitions that
independent runs can take on many machines.
"""

from __future__ import annotations

import dagster as dg

from aion_assets.platform.layout import split_partition_key

__all__ = ["release_shards", "split_partition_key"]

release_shards = dg.DynamicPartitionsDefinition(name="release_shards")
