"""Partitioning shared by every per-cutout asset: one dynamic partition per release shard.

A key is ``<release>|<shard>`` with the shard zero-padded (``gz1-sdss|0003``); a shard holds at most
``AION_SHARD_SIZE`` objects (25k by default, at most 100k), so a 140M-object survey is a few thousand
partitions that
independent runs can take on many machines.
"""

from __future__ import annotations

import dagster as dg

__all__ = ["PARTITIONS_PER_BACKFILL_RUN", "release_shards", "shard_backfill_policy"]

release_shards = dg.DynamicPartitionsDefinition(name="release_shards")

# A backfill of the per-shard assets launches runs of at most this many partitions each: on the cluster each
# run is its own pods, so a 140M-object backfill (a few thousand shards) is a few hundred runs, not one giant
# run nor thousands of tiny ones.
PARTITIONS_PER_BACKFILL_RUN = 8
shard_backfill_policy = dg.BackfillPolicy.multi_run(PARTITIONS_PER_BACKFILL_RUN)
