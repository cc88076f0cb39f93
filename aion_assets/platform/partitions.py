"""Partitioning shared by every per-cutout asset: one dynamic partition per release shard.

A key is ``<release>|<shard>`` with the shard zero-padded (``gz1-sdss|0003``); a shard holds at most
``AION_SHARD_SIZE`` objects (25k by default, at most 100k), so a 140M-object survey is a few thousand
partitions that
independent runs can take on many machines.
"""

from __future__ import annotations

import dagster as dg

__all__ = ["release_shards"]

release_shards = dg.DynamicPartitionsDefinition(name="release_shards")
